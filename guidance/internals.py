"""Perturbing a network's self-attention layers or blocks on chosen rows of one forward pass.

Perturbed-Attention Guidance, Smoothed Energy Guidance and Skip-Layer Guidance guide with an extra
conditional pass through a deliberately damaged version of the model. The damage applies to a slice
of the batch (`rows`), so that pass runs in the same batched forward as the conditional and
unconditional rows (one forward of 3B rows for CFG + PAG, as CFG batches its two): the other rows go
through the untouched layers, and one large forward is faster than a second small one on every
device. A perturbation is installed for the duration of a `with perturbed(net, spec, rows):` block
and removed afterwards, also on error.

Two kinds of network are supported, found by duck typing (nothing here imports a model library):

- the zoo's `AttentionBlock` (guidance.zoo.nn), which exposes a `perturbation` hook point;
- diffusers models: self-attention `Attention` modules get a wrapping processor (`set_processor`,
  restored afterwards); blocks for skipping are the `*TransformerBlock` modules, skipped through a
  forward hook that hands the block's input rows back as its output.

Normalized Attention Guidance (`NormalizedAttention`) mixes, on the same hooks, the attention output of
the positive rows with that of the negative rows in every layer that attends to the text; Self-Attention
Guidance reads one layer's attention map (`AttentionProbe`) without changing the forward.

Layers are numbered in module order (the forward order of the zoo's UNet: down, middle, up); by
default the first one in the middle block (the zoo's `middle`, diffusers' `mid_block`), else the
middle of the list (a DiT's stack of blocks).
"""

from __future__ import annotations

import inspect
import math
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Kind = Literal["identity-attention", "smoothed-query", "skip"]
PerturbedPass = AbstractContextManager[None]  # what `perturbed(...)` returns: the perturbation lasts for its block
KINDS: tuple[str, ...] = ("identity-attention", "smoothed-query", "skip")


@dataclass(frozen=True)
class Perturbation:
    """What to damage: `kind` on the self-attention layers (or blocks, for "skip") numbered `layers`
    (None: the middle block's first). identity-attention: the attention map is the identity, so each token's
    output is its own value (PAG); smoothed-query: queries blurred by a 2D Gaussian of `blur_sigma`
    tokens over the image grid, inf meaning the mean query (SEG); skip: the layer's residual branch
    (zoo) or the whole block (diffusers) is dropped (SLG)."""

    kind: Kind
    layers: tuple[int, ...] | None = None  # None: the first layer in the middle block, else the list's middle
    blur_sigma: float = math.inf

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown perturbation {self.kind!r}; valid: {', '.join(KINDS)}")
        if not self.blur_sigma > 0:
            raise ValueError(f"blur_sigma must be > 0 (inf: the mean query), got {self.blur_sigma}")

    def chosen(self, names: list[str], what: str) -> list[int]:
        """The indices this spec names among layers with qualified `names`, checked."""
        count = len(names)
        if count == 0:
            raise ValueError(f"perturbation {self.kind!r} needs a network with {what}; this one has none "
                             f"(the zoo's UNet and diffusers models with attention processors have them)")
        if self.layers is None:
            # the zoo's `middle`, diffusers' `mid_block`, also inside an adapter (`network.mid_block...`)
            middle = [i for i, name in enumerate(names) if any(part.startswith("mid") for part in name.split("."))]
            return [middle[0] if middle else count // 2]
        layers = list(self.layers)
        bad = [i for i in layers if not -count <= i < count]
        if bad:
            raise ValueError(f"perturbation layers {bad} out of range: the network has {count} {what} "
                             f"(0..{count - 1})")
        return sorted({i % count for i in layers})


@dataclass(frozen=True)
class NormalizedAttention:
    """NAG's attention-space guidance (Chen et al. 2025, arXiv:2505.21179) on the layers that attend to the
    condition: the rows `rows` (positive prompt) get alpha Z^ + (1 - alpha) Z+, with Z~ = Z+ + scale (Z+ - Z-),
    Z^ = Z~ min(r, tau) / r and r = |Z~|_1 / |Z+|_1 per token (L1 over channels); Z- is the same layer's output
    on the rows `negative` (the negative prompt, in the same batched forward)."""

    scale: float
    tau: float
    alpha: float
    negative: slice

    def __post_init__(self) -> None:
        if not self.tau >= 1:
            raise ValueError(f"NAG tau must be >= 1 (the largest L1 growth it keeps), got {self.tau}")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"NAG alpha must be in [0, 1] (the blend towards the normalised features), got {self.alpha}")

    def apply(self, z: Tensor, rows: slice) -> Tensor:
        """`z` [B, N, C] with its `rows` replaced by NAG's mix of them and the `negative` rows."""
        return _replace_rows(z, rows, nag_mix(z[rows], z[self.negative], self.scale, self.tau, self.alpha))


@dataclass(frozen=True)
class AttentionProbe:
    """Record the self-attention map of one layer (`layers`, None: the middle block's first) on chosen rows,
    without changing the forward: `maps` receives [rows, heads, N, N] (softmax over the image's keys) and
    `sizes` the token grid (h, w). Self-Attention Guidance reads it."""

    layers: tuple[int, ...] | None = None
    maps: list = field(default_factory=list, compare=False)
    sizes: list = field(default_factory=list, compare=False)

    def chosen(self, names: list[str], what: str) -> list[int]:
        return Perturbation("identity-attention", self.layers).chosen(names, what)[:1]


def nag_mix(positive: Tensor, negative: Tensor, scale: float, tau: float, alpha: float) -> Tensor:
    """NAG's guided attention features from Z+ and Z- ([..., C]; the L1 norm runs over the last axis).

    Computed in at least fp32; a token whose Z+ is all zeros keeps Z+ (its ratio is undefined)."""
    dtype = torch.promote_types(positive.dtype, torch.float32)
    pos, neg = positive.to(dtype), negative.to(dtype)
    extrapolated = pos + scale * (pos - neg)
    norm_pos = pos.abs().sum(-1, keepdim=True)
    ratio = extrapolated.abs().sum(-1, keepdim=True) / norm_pos.clamp_min(torch.finfo(pos.dtype).tiny)
    factor = torch.where(ratio > tau, tau / ratio, torch.ones_like(ratio))
    mixed = alpha * extrapolated * factor + (1 - alpha) * pos
    return torch.where(norm_pos > 0, mixed, pos).to(positive.dtype)


def gaussian_blur_2d(q: Tensor, size: tuple[int, int], sigma: float) -> Tensor:
    """Blur token features over their image grid: q [..., N, D] with N = h * w tokens in raster order.

    sigma = inf gives every token the mean query (the infinite-blur limit). A finite sigma uses SEG's
    kernel (odd size ceil(6 sigma) + 1, at most the grid side) with reflect padding."""
    h, w = size
    if q.shape[-2] != h * w:
        raise ValueError(f"smoothed-query perturbation: {q.shape[-2]} tokens do not form a {h}x{w} grid")
    if math.isinf(sigma):
        return q.mean(dim=-2, keepdim=True).expand_as(q)
    lead, d = q.shape[:-2], q.shape[-1]
    grid = q.reshape(-1, h, w, d).permute(0, 3, 1, 2)  # [M, D, h, w]
    k = math.ceil(6 * sigma) + 1 - math.ceil(6 * sigma) % 2
    k = max(1, min(k, h - (1 - h % 2), w - (1 - w % 2)))
    half = (k - 1) / 2
    x = torch.linspace(-half, half, k, dtype=torch.promote_types(q.dtype, torch.float32), device=q.device)
    pdf = torch.exp(-0.5 * (x / sigma) ** 2)
    k1 = (pdf / pdf.sum()).to(q.dtype)
    kernel = (k1[:, None] * k1[None, :]).expand(d, 1, k, k)
    pad = k // 2
    padded = F.pad(grid, [pad, pad, pad, pad], mode="reflect") if pad else grid
    blurred = F.conv2d(padded, kernel, groups=d)
    return blurred.permute(0, 2, 3, 1).reshape(*lead, h * w, d)


def _replace_rows(full: Tensor, rows: slice, part: Tensor) -> Tensor:
    """`full` with its batch rows `rows` replaced by `part` (out of place, autograd-safe)."""
    start, stop, _ = rows.indices(full.shape[0])
    return torch.cat([full[:start], part.to(full.dtype), full[stop:]])


class ZooAttentionPerturbation:
    """Installed on a zoo AttentionBlock (its `perturbation` hook point) for one pass."""

    def __init__(self, spec: Perturbation, rows: slice) -> None:
        self.spec, self.rows = spec, rows

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, size: tuple[int, int]) -> Tensor:
        """Attention output [B, H, N, D] with the perturbed rows' replaced; keys end with the N pixels."""
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        r = self.rows
        if self.spec.kind == "identity-attention":
            return _replace_rows(out, r, v[r][..., -q.shape[-2]:, :])
        if self.spec.kind == "smoothed-query":
            qs = gaussian_blur_2d(q[r], size, self.spec.blur_sigma)
            return _replace_rows(out, r, F.scaled_dot_product_attention(qs, k[r], v[r], attn_mask=None if mask is None else mask[r]))
        return out

    def branch(self, out: Tensor) -> Tensor:
        """The block's residual branch, dropped on the perturbed rows for "skip"."""
        if self.spec.kind != "skip":
            return out
        return _replace_rows(out, self.rows, torch.zeros_like(out[self.rows]))


class ZooNormalizedAttention:
    """NAG on a zoo AttentionBlock whose keys include the text (its `perturbation` hook point)."""

    def __init__(self, spec: NormalizedAttention, rows: slice) -> None:
        self.spec, self.rows = spec, rows

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, size: tuple[int, int]) -> Tensor:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, N, D]
        b, heads, n, d = out.shape
        merged = self.spec.apply(out.transpose(1, 2).reshape(b, n, heads * d), self.rows)  # channels as to_out sees them
        return merged.view(b, n, heads, d).transpose(1, 2)

    def branch(self, out: Tensor) -> Tensor:
        return out


def _is_zoo_text_attention(m: nn.Module) -> bool:
    return _is_zoo_attention(m) and getattr(m, "context_kv", None) is not None


def _is_diffusers_text_attention(m: nn.Module) -> bool:
    """Attention that mixes the condition into the image tokens and projects them with to_out: a UNet's
    cross-attention, SD3's and FLUX's joint attention (FLUX's single-stream blocks have no to_out)."""
    if not (hasattr(m, "set_processor") and hasattr(m, "processor")):
        return False
    to_out = getattr(m, "to_out", None)
    text = getattr(m, "is_cross_attention", False) or getattr(m, "added_kv_proj_dim", None) is not None
    return bool(text) and isinstance(to_out, nn.ModuleList) and len(to_out) > 0


@contextmanager
def _normalized_attention(net: nn.Module, spec: NormalizedAttention, rows: slice) -> Iterator[None]:
    """NAG on every attention layer of `net` that attends to the condition (zoo blocks with text keys; diffusers'
    cross and joint attention, on the image tokens' attention output before the output projection)."""
    zoo = _named(net, _is_zoo_text_attention)[1]
    if zoo:
        for layer in zoo:
            layer.perturbation = ZooNormalizedAttention(spec, rows)
        try:
            yield
        finally:
            for layer in zoo:
                layer.perturbation = None
        return
    layers = _named(net, _is_diffusers_text_attention)[1]
    if not layers:
        raise ValueError("NAG needs attention layers that attend to the text (the zoo's text UNet, diffusers' "
                         "cross-attention or joint attention); this network has none")
    hook = lambda _m, args: (spec.apply(args[0], rows), *args[1:])  # noqa: E731
    handles = [layer.to_out[0].register_forward_pre_hook(hook) for layer in layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class ZooAttentionProbe:
    """Records a zoo AttentionBlock's map over its pixel keys (its text keys dropped, the rest renormalised)."""

    def __init__(self, spec: AttentionProbe, rows: slice) -> None:
        self.spec, self.rows = spec, rows

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, size: tuple[int, int]) -> Tensor:
        n = q.shape[-2]
        qr, kr = q[self.rows], k[self.rows][..., -n:, :]
        self.spec.maps.append(torch.softmax(qr @ kr.transpose(-1, -2) * qr.shape[-1] ** -0.5, dim=-1))
        self.spec.sizes.append(size)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    def branch(self, out: Tensor) -> Tensor:
        return out


class DiffusersAttentionProbe:
    """Runs the original processor and records the map on the rows as diffusers' SAG pipeline does
    (`attn.get_attention_scores` of to_q and to_k of the layer's input, heads as [rows, heads, N, N])."""

    def __init__(self, original: Any, spec: AttentionProbe, rows: slice) -> None:
        self.original, self.spec, self.rows = original, spec, rows

    def __call__(self, attn: nn.Module, hidden_states: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        x = hidden_states[self.rows]
        if x.ndim == 4:
            x = x.flatten(2).transpose(1, 2)
        query, key = attn.head_to_batch_dim(attn.to_q(x)), attn.head_to_batch_dim(attn.to_k(x))
        probs = attn.get_attention_scores(query, key, None)
        self.spec.maps.append(probs.reshape(x.shape[0], attn.heads, *probs.shape[1:]))
        side = math.isqrt(x.shape[1])
        self.spec.sizes.append((side, x.shape[1] // side))
        return self.original(attn, hidden_states, *args, **kwargs)


@contextmanager
def _probed(net: nn.Module, spec: AttentionProbe, rows: slice) -> Iterator[None]:
    names, zoo = _named(net, _is_zoo_attention)
    if zoo:
        layer = zoo[spec.chosen(names, "attention blocks")[0]]
        layer.perturbation = ZooAttentionProbe(spec, rows)
        try:
            yield
        finally:
            layer.perturbation = None
        return
    names, layers = _named(net, _is_diffusers_self_attention)
    layer = layers[spec.chosen(names, "self-attention layers")[0]]
    original = layer.processor
    probe = DiffusersAttentionProbe(original, spec, rows)
    call = lambda self, attn, *args, **kwargs: DiffusersAttentionProbe.__call__(self, attn, *args, **kwargs)  # noqa: E731
    call.__signature__ = inspect.signature(type(original).__call__)  # type: ignore[attr-defined]
    probe.__class__ = type(f"Probed{type(original).__name__}", (DiffusersAttentionProbe,), {"__call__": call})
    layer.set_processor(probe)
    try:
        yield
    finally:
        layer.set_processor(original)


class DiffusersProcessorPerturbation:
    """A diffusers attention processor that runs the original one and replaces the perturbed rows."""

    def __init__(self, original: Any, spec: Perturbation, rows: slice) -> None:
        self.original, self.spec, self.rows = original, spec, rows

    def __call__(self, attn: nn.Module, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, temb: Tensor | None = None, *args: Any, **kwargs: Any) -> Tensor:
        out = self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        if not isinstance(out, Tensor):
            raise ValueError(f"perturbation {self.spec.kind!r} supports self-attention that returns hidden states "
                             f"(UNet, DiT); {type(self.original).__name__} returns {type(out).__name__} (joint "
                             f"attention, e.g. SD3 / Flux): use the 'skip' perturbation (slg) on such models")
        r = self.rows
        if self.spec.kind == "identity-attention":
            return _replace_rows(out, r, _identity_attention(attn, hidden_states[r]))
        if self.spec.kind == "smoothed-query":
            handle = attn.to_q.register_forward_hook(lambda _m, _i, q: _blur_tokens(q, self.spec.blur_sigma))
            try:
                part = self.original(attn, hidden_states[r], None if encoder_hidden_states is None else encoder_hidden_states[r],
                                     None if attention_mask is None else attention_mask[r],
                                     None if temb is None else temb[r], *args, **kwargs)
            finally:
                handle.remove()
            return _replace_rows(out, r, part)
        return _replace_rows(out, r, torch.zeros_like(out[r]))


def _wrap_processor(original: Any, spec: Perturbation, rows: slice) -> DiffusersProcessorPerturbation:
    """A DiffusersProcessorPerturbation whose `__call__` shows the original's signature: diffusers'
    `Attention.forward` passes a processor only the keyword arguments its signature names, so the
    wrapper must name the same ones (LoRA scale, rotary embeddings, ...) to pass them on."""

    def call(self: DiffusersProcessorPerturbation, attn: nn.Module, *args: Any, **kwargs: Any) -> Tensor:
        return DiffusersProcessorPerturbation.__call__(self, attn, *args, **kwargs)

    call.__signature__ = inspect.signature(type(original).__call__)  # type: ignore[attr-defined]
    cls = type(f"Perturbed{type(original).__name__}", (DiffusersProcessorPerturbation,), {"__call__": call})
    return cls(original, spec, rows)


def _blur_tokens(q: Tensor, sigma: float) -> Tensor:
    """diffusers queries [B, N, C] over a square grid of N tokens."""
    side = math.isqrt(q.shape[-2])
    if side * side != q.shape[-2]:
        raise ValueError(f"smoothed-query perturbation needs a square token grid, got {q.shape[-2]} tokens")
    return gaussian_blur_2d(q, (side, side), sigma)


def _identity_attention(attn: Any, hidden_states: Tensor) -> Tensor:
    """A diffusers self-attention whose attention map is the identity: to_out(to_v(x)), with the
    module's own input reshaping, group norm, residual and output rescale (its AttnProcessor2_0)."""
    residual = hidden_states
    ndim = hidden_states.ndim
    if ndim == 4:
        b, c, h, w = hidden_states.shape
        hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
    if getattr(attn, "group_norm", None) is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    out = attn.to_out[1](attn.to_out[0](attn.to_v(hidden_states)))
    if ndim == 4:
        out = out.transpose(-1, -2).reshape(b, c, h, w)
    if getattr(attn, "residual_connection", False):
        out = out + residual
    return out / getattr(attn, "rescale_output_factor", 1.0)


def _named(net: nn.Module, keep) -> tuple[list[str], list[nn.Module]]:  # noqa: ANN001
    pairs = [(name, m) for name, m in net.named_modules() if keep(m)]
    return [n for n, _ in pairs], [m for _, m in pairs]


def _is_zoo_attention(m: nn.Module) -> bool:
    return hasattr(m, "perturbation") and not isinstance(m, nn.ModuleList)


def _is_diffusers_self_attention(m: nn.Module) -> bool:
    return hasattr(m, "set_processor") and hasattr(m, "processor") and not getattr(m, "is_cross_attention", False)


def _is_diffusers_block(m: nn.Module) -> bool:
    return type(m).__name__.endswith("TransformerBlock")


def zoo_attention_layers(net: nn.Module) -> list[nn.Module]:
    """The zoo's attention blocks (modules exposing a `perturbation` hook point), in module order."""
    return _named(net, _is_zoo_attention)[1]


def diffusers_self_attention(net: nn.Module) -> list[nn.Module]:
    """diffusers' self-attention modules (processor-based `Attention`, not cross-attention), in order."""
    return _named(net, _is_diffusers_self_attention)[1]


def diffusers_blocks(net: nn.Module) -> list[nn.Module]:
    """diffusers' transformer blocks (BasicTransformerBlock, SD3's JointTransformerBlock, ...), in order."""
    return _named(net, _is_diffusers_block)[1]


@contextmanager
def perturbed(net: nn.Module, spec: Perturbation | NormalizedAttention | AttentionProbe, rows: slice) -> Iterator[None]:
    """Within the block, `net`'s chosen layers are perturbed on batch rows `rows`, and only there (NAG: every
    layer attending to the text, its rows `rows` guided away from its rows `spec.negative`)."""
    if isinstance(spec, NormalizedAttention):
        with _normalized_attention(net, spec, rows):
            yield
        return
    if isinstance(spec, AttentionProbe):
        with _probed(net, spec, rows):
            yield
        return
    names, zoo = _named(net, _is_zoo_attention)
    if zoo:
        chosen = [zoo[i] for i in spec.chosen(names, "attention blocks")]
        for layer in chosen:
            layer.perturbation = ZooAttentionPerturbation(spec, rows)
        try:
            yield
        finally:
            for layer in chosen:
                layer.perturbation = None
        return
    if spec.kind == "skip":
        names, blocks = _named(net, _is_diffusers_block)
        handles = [blocks[i].register_forward_hook(_skip_block_hook(rows), with_kwargs=True)
                   for i in spec.chosen(names, "transformer blocks")]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
        return
    names, layers = _named(net, _is_diffusers_self_attention)
    chosen = [layers[i] for i in spec.chosen(names, "self-attention layers")]
    originals = [layer.processor for layer in chosen]
    for layer, original in zip(chosen, originals):
        layer.set_processor(_wrap_processor(original, spec, rows))
    try:
        yield
    finally:
        for layer, original in zip(chosen, originals):
            layer.set_processor(original)


def _skip_block_hook(rows: slice):  # noqa: ANN202
    """A forward hook making a diffusers block the identity on `rows`: a block returning hidden states
    gives back its input there; SD3's joint block returns (encoder_hidden_states, hidden_states)."""

    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        if isinstance(output, Tensor):
            return _replace_rows(output, rows, hidden[rows])
        if isinstance(output, tuple) and len(output) == 2:
            context = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
            first = output[0] if output[0] is None else _replace_rows(output[0], rows, context[rows])
            return first, _replace_rows(output[1], rows, hidden[rows])
        raise ValueError(f"skip perturbation: cannot skip {type(module).__name__}, whose output is "
                         f"{type(output).__name__}; choose blocks that return hidden states")

    return hook


__all__ = ["Perturbation", "NormalizedAttention", "AttentionProbe", "nag_mix", "PerturbedPass", "KINDS", "perturbed", "gaussian_blur_2d", "zoo_attention_layers",
           "diffusers_self_attention", "diffusers_blocks"]

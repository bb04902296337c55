"""The text UNet with an image condition: GLIDE's inpainting model and its upsampler.

Both concatenate an image to the noisy input along channels: the inpainting model the masked RGB
image and the mask (4 channels), the upsampler the bicubic-upsampled low-resolution image (3
channels). A convolution over [x, c] equals stem(x) + cond_stem(c), so the new input weights live in
their own zero-initialised convolution: at initialisation the model's output equals the base
model's exactly, and the base model's weights load into it unchanged.

With config.extra["cond_gate"] == "sigma" the condition branch is scaled by the noise level of
x_t, sqrt(1 - alpha_bar_t): near t = 0 the noisy input already shows the image and the known region
can add nothing, so a fine-tune cannot hurt the base model there; the model is still exactly the
base at initialisation (the branch is zero).

The condition is a dict {"tokens", "image"[, "aug"]}: CFG's unconditional branch drops the caption
and keeps the image (GLIDE). "aug" is the upsampler's noise-augmentation timestep of the
low-resolution input (Ho et al. 2021), embedded beside the diffusion timestep.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from guidance.diffusion import GaussianDiffusion
from guidance.zoo.nn import timestep_embedding, zero
from guidance.zoo.text import split_tokens
from guidance.zoo.unet import TextUNet, UNetConfig

INPAINT_CHANNELS = 4  # masked RGB image and the mask
GATES = ("sigma",)  # config.extra["cond_gate"]: how the condition branch is scaled by the timestep
UPSAMPLE_CHANNELS = 3  # the bicubic-upsampled low-resolution image


class ConditionedUNet(TextUNet):
    """TextUNet + `cond_channels` zero-initialised input channels (config.extra["cond_channels"]);
    with config.extra["noise_aug"], also a zero-initialised embedding of the augmentation level."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__(config)
        cond_channels = int(config.extra.get("cond_channels", 0))
        if cond_channels < 1:
            raise ValueError("a ConditionedUNet needs config.extra['cond_channels'] >= 1")
        self.cond_channels = cond_channels
        self.cond_stem = zero(nn.Conv2d(cond_channels, config.channels, 3, padding=1, bias=False))
        emb_dim = 4 * config.channels
        self.aug_emb = zero(nn.Linear(config.channels, emb_dim)) if config.extra.get("noise_aug") else None
        gate = config.extra.get("cond_gate")
        if gate is not None and gate not in GATES:
            raise ValueError(f"unknown cond_gate {gate!r}; valid: {', '.join(GATES)} (or none)")
        self.gated = gate is not None
        # not persistent: derived from the config's schedule, so the weights file is unchanged
        table = GaussianDiffusion.from_schedule(config.extra.get("schedule", "cosine"),
                                                int(config.extra.get("num_timesteps", 1000))).sqrt_one_minus_alphas_cumprod
        self.register_buffer("gate_table", table.float(), persistent=False)

    @classmethod
    def from_base(cls, base: TextUNet, cond_channels: int, **extra: object) -> "ConditionedUNet":
        """A conditioned copy of `base` whose output equals base's at initialisation."""
        config = UNetConfig.from_dict({**base.config.to_dict(),
                                       "extra": {**base.config.extra, "cond_channels": cond_channels, **extra}})
        model = cls(config)
        missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
        new = {k for k in missing if not k.startswith(("cond_stem.", "aug_emb."))}
        if new or unexpected:
            raise ValueError(f"base weights do not fit: missing {sorted(new)[:3]}, unexpected {sorted(unexpected)[:3]}")
        return model

    def gate(self, t: Tensor) -> Tensor:
        """The condition branch's scale at (possibly fractional) timesteps t: sqrt(1 - alpha_bar_t),
        interpolated between table entries; 1 without a gate."""
        if not self.gated:
            return torch.ones_like(t, dtype=self.gate_table.dtype)
        t = t.to(self.gate_table.dtype).clamp(0, len(self.gate_table) - 1)
        lo = t.floor().long()
        hi = (lo + 1).clamp(max=len(self.gate_table) - 1)
        return torch.lerp(self.gate_table[lo], self.gate_table[hi], t - lo)

    def condition_features(self, t: Tensor, image: Tensor) -> Tensor:
        """What the condition adds to the stem's features: gate(t) * cond_stem(image)."""
        h = self.cond_stem(image)
        return h if not self.gated else h * self.gate(t.reshape(-1).expand(len(h))).to(h.dtype)[:, None, None, None]

    def null_cond(self, cond: Mapping[str, Tensor]) -> dict[str, Tensor]:  # type: ignore[override]
        return {**cond, "tokens": super().null_cond(cond["tokens"])}

    def forward(self, x: Tensor, t: Tensor, cond: Mapping[str, Tensor]) -> Tensor:  # type: ignore[override]
        image = cond["image"]
        if image.shape[1] != self.cond_channels or image.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"condition image {tuple(image.shape[1:])} does not fit this model "
                             f"({self.cond_channels} channels at {tuple(x.shape[-2:])})")
        ids, eot = split_tokens(cond["tokens"])
        context, pooled, mask = self.text(ids, eot)
        emb = self.time(timestep_embedding(t, self.config.channels)) + self.text_to_emb(pooled)
        if self.aug_emb is not None:
            emb = emb + self.aug_emb(timestep_embedding(cond["aug"], self.config.channels))
        return self.trunk(self.stem(x) + self.condition_features(t, image.to(x.dtype)), emb, context, mask)


def inpaint_condition(tokens: Tensor, known: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """GLIDE's inpainting input: the known image zeroed where it is to be filled, and the mask
    (1 = known, 0 = to generate)."""
    mask = mask.to(known.dtype)
    return {"tokens": tokens, "image": torch.cat([known * mask, mask], 1)}


def upsample_condition(tokens: Tensor, low: Tensor, size: int, aug: Tensor) -> dict[str, Tensor]:
    """The upsampler's input: the (already noise-augmented) low-resolution image, bicubic-upsampled."""
    up = nn.functional.interpolate(low.float(), size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)
    return {"tokens": tokens, "image": up.to(low.dtype), "aug": aug}

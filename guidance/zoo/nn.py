"""Building blocks shared by the zoo's networks (ADM-style, as in guided-diffusion and GLIDE)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 4), channels)


def zero(module: nn.Module) -> nn.Module:
    """Zero-initialise the last layer of a residual branch so each block starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """Residual block with scale-shift conditioning on an embedding (BigGAN/ADM style)."""

    def __init__(self, channels: int, emb_dim: int, out_channels: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers = nn.Sequential(norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_channels))
        self.out_norm = norm(out_channels)
        self.out_layers = nn.Sequential(nn.SiLU(), nn.Dropout(dropout), zero(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.in_layers(x)
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.out_norm(h) * (1 + scale) + shift
        return self.skip(x) + self.out_layers(h)


class AttentionBlock(nn.Module):
    """Self-attention over pixels; with `context_dim`, text tokens join the keys and values (GLIDE)."""

    def __init__(self, channels: int, heads: int = 4, context_dim: int | None = None) -> None:
        super().__init__()
        self.heads = heads
        self.norm = norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.context_kv = nn.Linear(context_dim, 2 * channels) if context_dim else None
        self.proj = zero(nn.Conv1d(channels, channels, 1))
        # hook point for guidance.internals (PAG, SEG, SLG): set for one pass, None otherwise
        self.perturbation: Any = None

    def forward(self, x: Tensor, context: Tensor | None = None, context_mask: Tensor | None = None) -> Tensor:
        # Work token-major ([B, H, N, D], last dim contiguous): SDPA's fused kernels need it, and a strided
        # head dimension silently falls back to the math path (about 6x slower on CPU, also slow on CUDA).
        b, c, h, w = x.shape
        d = c // self.heads
        tokens = self.norm(x).reshape(b, c, h * w).transpose(1, 2)  # [B, N, C]
        qkv = F.linear(tokens, self.qkv.weight[..., 0], self.qkv.bias)  # the 1x1 conv as a matmul
        q, k, v = qkv.view(b, h * w, 3, self.heads, d).permute(2, 0, 3, 1, 4).unbind(0)  # [B, H, N, D] each
        mask = None
        if self.context_kv is not None and context is not None:
            ck, cv = self.context_kv(context).view(b, -1, 2, self.heads, d).permute(2, 0, 3, 1, 4).unbind(0)
            k, v = torch.cat([ck, k], -2), torch.cat([cv, v], -2)
            if context_mask is not None:
                pixels = torch.ones(b, h * w, dtype=torch.bool, device=x.device)
                mask = torch.cat([context_mask, pixels], 1)[:, None, None, :]
        if self.perturbation is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, N, D]
        else:
            out = self.perturbation.attention(q, k, v, mask, (h, w))
        out = F.linear(out.transpose(1, 2).reshape(b, h * w, c), self.proj.weight[..., 0], self.proj.bias)
        if self.perturbation is not None:
            out = self.perturbation.branch(out)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class TextTransformer(nn.Module):
    """A small pre-norm transformer over caption tokens: per-token states and a pooled (EOT) vector."""

    def __init__(self, vocab_size: int, context_length: int, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.token = nn.Embedding(vocab_size, width)
        self.position = nn.Parameter(torch.randn(context_length, width) * 0.01)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(width)

    def forward(self, tokens: Tensor, eot: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """tokens [B, L] compact ids (0 = padding), eot [B] positions -> (states, pooled, mask)."""
        mask = tokens != 0
        mask[:, 0] = True  # never an all-masked row
        h = self.token(tokens) + self.position[: tokens.shape[1]]
        h = self.final_norm(self.blocks(h, src_key_padding_mask=~mask))
        pooled = h[torch.arange(len(h), device=h.device), eot]
        return h, pooled, mask


class EncoderTower(nn.Module):
    """Timestep-conditioned convolutional encoder: image -> vector (noise-aware classifier, noised CLIP)."""

    def __init__(self, in_channels: int = 3, channels: int = 64, channel_mult: tuple[int, ...] = (1, 2, 2, 4),
                 blocks: int = 2, out_dim: int = 256, attention_heads: int = 4) -> None:
        super().__init__()
        emb_dim = channels * 4
        self.channels = channels
        self.time = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1)
        layers: list[nn.Module] = []
        ch = channels
        for level, mult in enumerate(channel_mult):
            for _ in range(blocks):
                layers.append(ResBlock(ch, emb_dim, channels * mult))
                ch = channels * mult
            if level < len(channel_mult) - 1:
                layers.append(nn.AvgPool2d(2))
        self.layers = nn.ModuleList(layers)
        self.attention = AttentionBlock(ch, attention_heads)
        self.head = nn.Sequential(norm(ch), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ch, out_dim))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        emb = self.time(timestep_embedding(t, self.channels))
        h = self.stem(x)
        for layer in self.layers:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return self.head(self.attention(h))

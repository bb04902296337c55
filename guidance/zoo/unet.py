"""The zoo's text-conditional diffusion model: an ADM-style UNet with GLIDE-style text conditioning.

A small transformer encodes the caption; its pooled vector joins the timestep embedding and its
token states join the keys and values of the attention layers at low resolution. The output has
eps and, with learned variance, the v channels of Nichol & Dhariwal's learned range.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from guidance.zoo.nn import AttentionBlock, ResBlock, TextTransformer, norm, timestep_embedding, zero
from guidance.zoo.text import CONTEXT_LENGTH, split_tokens


@dataclass
class UNetConfig:
    image_size: int = 32
    in_channels: int = 3
    channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2)
    blocks: int = 2
    attention_resolutions: tuple[int, ...] = (16, 8)
    heads: int = 4
    head_channels: int | None = None  # if set, heads = channels // head_channels at each resolution (ADM/GLIDE)
    dropout: float = 0.1
    learned_variance: bool = True
    vocab_size: int = 2048
    context_length: int = CONTEXT_LENGTH
    text_width: int = 192
    text_layers: int = 3
    text_heads: int = 4
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "UNetConfig":
        data = dict(data)
        for key in ("channel_mult", "attention_resolutions"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


class TextUNet(nn.Module):
    """Denoiser protocol: `model(x_t, t, tokens)`; `null_cond` gives the empty caption's tokens."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = c = config
        self.learned_variance = c.learned_variance
        emb_dim = 4 * c.channels
        self.time = nn.Sequential(nn.Linear(c.channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.text = TextTransformer(c.vocab_size, c.context_length, c.text_width, c.text_layers, c.text_heads)
        self.text_to_emb = nn.Linear(c.text_width, emb_dim)
        # BPE ids of the compact vocabulary, and packed tokens of the empty caption (CFG's uncond)
        self.register_buffer("vocab", torch.zeros(c.vocab_size - 2, dtype=torch.long))
        self.register_buffer("null_tokens", torch.zeros(c.context_length + 1, dtype=torch.long))
        self.stem = nn.Conv2d(c.in_channels, c.channels, 3, padding=1)
        self.down = nn.ModuleList()
        skips, ch, res = [c.channels], c.channels, c.image_size
        for level, mult in enumerate(c.channel_mult):
            for _ in range(c.blocks):
                self.down.append(self._block(ch, c.channels * mult, res, emb_dim))
                ch = c.channels * mult
                skips.append(ch)
            if level < len(c.channel_mult) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(ch, ch, 3, stride=2, padding=1)]))
                skips.append(ch)
                res //= 2
        self.middle = nn.ModuleList([ResBlock(ch, emb_dim, dropout=c.dropout),
                                     AttentionBlock(ch, self._heads(ch), c.text_width),
                                     ResBlock(ch, emb_dim, dropout=c.dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(c.channel_mult))):
            for i in range(c.blocks + 1):
                block = self._block(ch + skips.pop(), c.channels * mult, res, emb_dim)
                ch = c.channels * mult
                if level > 0 and i == c.blocks:
                    block.append(nn.Upsample(scale_factor=2, mode="nearest"))
                    block.append(nn.Conv2d(ch, ch, 3, padding=1))
                    res *= 2
                self.up.append(block)
        out_channels = c.in_channels * (2 if c.learned_variance else 1)
        self.out = nn.Sequential(norm(ch), nn.SiLU(), zero(nn.Conv2d(ch, out_channels, 3, padding=1)))

    def _block(self, ch_in: int, ch_out: int, res: int, emb_dim: int) -> nn.ModuleList:
        layers: list[nn.Module] = [ResBlock(ch_in, emb_dim, ch_out, self.config.dropout)]
        if res in self.config.attention_resolutions:
            layers.append(AttentionBlock(ch_out, self._heads(ch_out), self.config.text_width))
        return nn.ModuleList(layers)

    def _heads(self, channels: int) -> int:
        head_channels = self.config.head_channels
        return self.config.heads if head_channels is None else max(1, channels // head_channels)

    def _run(self, layers: nn.ModuleList, h: Tensor, emb: Tensor, context: Tensor, mask: Tensor) -> Tensor:
        for layer in layers:
            if isinstance(layer, ResBlock):
                h = layer(h, emb)
            elif isinstance(layer, AttentionBlock):
                h = layer(h, context, mask)
            else:
                h = layer(h)
        return h

    def null_cond(self, cond: Tensor) -> Tensor:
        return self.null_tokens.to(cond.device).expand(len(cond), -1)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        ids, eot = split_tokens(cond)
        context, pooled, mask = self.text(ids, eot)
        emb = self.time(timestep_embedding(t, self.config.channels)) + self.text_to_emb(pooled)
        return self.trunk(self.stem(x), emb, context, mask)

    def trunk(self, h: Tensor, emb: Tensor, context: Tensor, mask: Tensor) -> Tensor:
        """Down, middle and up blocks from the stem's features (the conditioned UNets add theirs to it)."""
        hs = [h]
        for layers in self.down:
            h = self._run(layers, h, emb, context, mask)
            hs.append(h)
        h = self._run(self.middle, h, emb, context, mask)
        for layers in self.up:
            h = self._run(layers, torch.cat([h, hs.pop()], 1), emb, context, mask)
        return self.out(h)

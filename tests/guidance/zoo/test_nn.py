"""Zoo building blocks against their written-out definitions."""

from __future__ import annotations

import torch

from guidance.zoo.nn import AttentionBlock


def reference_attention(block: AttentionBlock, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GLIDE's attention written out: pixels attend to text tokens (masked) and to every pixel."""
    b, c, h, w = x.shape
    heads, d = block.heads, c // block.heads
    qkv = torch.einsum("oc,bcn->bon", block.qkv.weight[..., 0], block.norm(x).reshape(b, c, h * w)) + block.qkv.bias[:, None]
    q, k, v = qkv.reshape(b, 3, heads, d, h * w).unbind(1)  # channel order (3, heads, d)
    ckv = block.context_kv(context).transpose(1, 2).reshape(b, 2, heads, d, -1)
    k, v = torch.cat([ckv[:, 0], k], -1), torch.cat([ckv[:, 1], v], -1)
    logits = torch.einsum("bhdn,bhdm->bhnm", q, k) / d**0.5
    keep = torch.cat([mask, torch.ones(b, h * w, dtype=torch.bool)], 1)[:, None, None, :]
    weights = logits.masked_fill(~keep, float("-inf")).softmax(-1)
    out = torch.einsum("bhnm,bhdm->bhdn", weights, v).reshape(b, c, h * w)
    out = torch.einsum("oc,bcn->bon", block.proj.weight[..., 0], out) + block.proj.bias[:, None]
    return x + out.reshape(b, c, h, w)


def test_attention_block_matches_written_out_attention_with_masked_text():
    torch.manual_seed(0)
    block = AttentionBlock(32, heads=4, context_dim=24)
    torch.nn.init.normal_(block.proj.weight)  # the zero-initialised projection would hide every error
    x, context = torch.randn(3, 32, 8, 8), torch.randn(3, 5, 24)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False], [True, False, True, False, True]])
    with torch.no_grad():
        torch.testing.assert_close(block(x, context, mask), reference_attention(block, x, context, mask),
                                   atol=1e-5, rtol=1e-5)
        # a masked token must not matter: change it and the output stays
        changed = context.clone()
        changed[1, 3] += 100.0
        torch.testing.assert_close(block(x, changed, mask)[1], block(x, context, mask)[1], atol=1e-5, rtol=1e-5)

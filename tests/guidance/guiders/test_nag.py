"""NAG: the formula on hand-computed attention outputs, the rows it touches inside a zoo UNet, and its costs."""

from __future__ import annotations

import pytest
import torch

from guidance.denoisers import NetworkDenoiser
from guidance.guiders import make_guidance
from guidance.guiders.base import StepInfo
from guidance.guiders.nag import NormalizedAttentionGuidance
from guidance.internals import NormalizedAttention, ZooNormalizedAttention, nag_mix, perturbed
from guidance.protocols import Conditions
from guidance.zoo.unet import TextUNet, UNetConfig
from tests.guidance.guiders.guider_helpers import PROCESS


def test_formula_on_hand_computed_attention_outputs():
    """Token 1: Z+ = (1, 1), Z- = (0, 2), phi = 1: Z~ = (2, 0), |Z~|_1 / |Z+|_1 = 1 <= tau, so Z^ = Z~, and
    alpha = 0.5 gives (1.5, 0.5). Token 2: Z+ = (1, 0), Z- = (-1, 0): Z~ = (3, 0), ratio 3 > tau = 2.5, so
    Z^ = (2.5, 0) and the blend (1.75, 0). Token 3: Z+ = 0: kept as it is (the ratio is undefined)."""
    pos = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    neg = torch.tensor([[0.0, 2.0], [-1.0, 0.0], [5.0, 5.0]])
    out = nag_mix(pos, neg, scale=1.0, tau=2.5, alpha=0.5)
    assert torch.equal(out, torch.tensor([[1.5, 0.5], [1.75, 0.0], [0.0, 0.0]]))
    # phi = 3, alpha = 0.25, tau = 2.5 on token 1: Z~ = (4, -2), ratio 3, Z^ = (10/3, -5/3), blend 0.25 Z^ + 0.75 Z+
    out = nag_mix(pos[:1], neg[:1], scale=3.0, tau=2.5, alpha=0.25)
    assert torch.allclose(out, torch.tensor([[0.25 * 10 / 3 + 0.75, -0.25 * 5 / 3 + 0.75]]), rtol=0, atol=1e-6)
    assert torch.equal(nag_mix(pos, neg, scale=0.0, tau=2.5, alpha=0.7), pos)  # phi = 0: Z+


def test_half_precision_is_mixed_in_fp32():
    pos, neg = torch.randn(4, 64, dtype=torch.float64), torch.randn(4, 64, dtype=torch.float64)
    exact = nag_mix(pos, neg, 4.0, 2.5, 0.5)
    half = nag_mix(pos.bfloat16(), neg.bfloat16(), 4.0, 2.5, 0.5)
    assert half.dtype == torch.bfloat16
    assert torch.allclose(half.double(), exact, rtol=2e-2, atol=2e-2)


def test_bad_tau_and_alpha_are_refused():
    with pytest.raises(ValueError, match="tau"):
        NormalizedAttentionGuidance(tau=0.5)
    with pytest.raises(ValueError, match="alpha"):
        NormalizedAttentionGuidance(alpha=1.5)


def tiny_zoo_unet() -> TextUNet:
    torch.manual_seed(0)
    net = TextUNet(UNetConfig(image_size=8, channels=8, channel_mult=(1, 2), blocks=1, attention_resolutions=(4,),
                              heads=2, vocab_size=32, context_length=6, text_width=8, text_layers=1, text_heads=2,
                              dropout=0.0, learned_variance=False)).eval()
    for param in net.parameters():  # the zoo zero-initialises residual outputs and the output layer
        if not param.any():
            torch.nn.init.normal_(param, std=0.3)
    return net


def test_zoo_hook_mixes_merged_heads_of_the_positive_rows():
    """The zoo hook: rows 0..1 become nag_mix of the heads-merged attention outputs (the channels the output
    projection sees) of rows 0..1 and 2..3; rows 2..3 are the plain attention."""
    q, k, v = (torch.randn(4, 2, 5, 3, generator=torch.Generator().manual_seed(i)) for i in range(3))
    hook = ZooNormalizedAttention(NormalizedAttention(2.0, 2.5, 0.5, slice(2, 4)), slice(0, 2))
    out = hook.attention(q, k, v, None, (1, 5))
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(4, 5, 6)
    assert torch.allclose(out.transpose(1, 2).reshape(4, 5, 6)[:2], nag_mix(plain[:2], plain[2:], 2.0, 2.5, 0.5))
    assert torch.equal(out[2:], torch.nn.functional.scaled_dot_product_attention(q, k, v)[2:])


def test_zoo_unet_guided_identity_and_cfg_on_top():
    """On a tiny random zoo UNet: phi = 0 is the plain conditional model; phi > 0 guides; with cfg_scale the
    result is CFG between the NAG rows and the negative branch, whose rows are the plain negative model."""
    net = tiny_zoo_unet()
    model = NetworkDenoiser(net)
    x = torch.randn(2, 3, 8, 8)
    tokens = torch.cat([torch.randint(1, 30, (2, 6)), torch.tensor([[3], [5]])], 1)
    negative = torch.cat([torch.randint(1, 30, (2, 6)), torch.tensor([[2], [4]])], 1)
    level = PROCESS.level(1.0)
    step = StepInfo(level, level.timesteps(2, torch.device("cpu")), (1.0, 0.0))
    cond = Conditions(model=tokens, negative=negative)
    with torch.no_grad():
        plain_c = model(x, level, tokens).eps
        plain_n = model(x, level, negative).eps
        guided = NormalizedAttentionGuidance(3.0).predict(model, x, step, cond).eps
        both = NormalizedAttentionGuidance(3.0, cfg_scale=2.0).predict(model, x, step, cond).eps
        identity = NormalizedAttentionGuidance(0.0).predict(model, x, step, cond).eps
    assert not torch.allclose(guided, plain_c, atol=1e-3)
    assert torch.allclose(identity, plain_c, atol=1e-6)
    assert torch.allclose(both, plain_n + 2.0 * (guided - plain_n), atol=1e-5)
    assert all(getattr(m, "perturbation", None) is None for m in net.modules())  # hooks removed


def test_networks_without_text_attention_are_refused():
    with pytest.raises(ValueError, match="attend to the text"):
        with perturbed(torch.nn.Linear(2, 2), NormalizedAttention(1.0, 2.5, 0.5, slice(1, 2)), slice(0, 1)):
            pass


def test_cost_counts_the_negative_branch():
    assert make_guidance("nag", 4.0).cost().network_passes == 2
    assert make_guidance("nag", 0.0).cost().network_passes == 1
    assert make_guidance("nag", 0.0, cfg_scale=3.0).cost().network_passes == 2
    assert NormalizedAttentionGuidance.quick_scales and NormalizedAttentionGuidance.identity_scale == 0.0

"""PAG: the mix and costs by hand, diffusers' PerturbedAttentionGuidance with CFG, and its jump at s = 1."""

from __future__ import annotations

import pytest
import torch

from guidance.denoisers import NetworkDenoiser
from guidance.guiders.base import StepInfo
from guidance.guiders.pag import PerturbedAttentionGuidance
from guidance.internals import Perturbation, perturbed
from guidance.protocols import Conditions, Perturbable
from guidance.zoo.unet import TextUNet, UNetConfig
from tests.guidance.guiders.guider_helpers import B, F64, PROCESS, SIGMAS, TableDenoiser, conditions, diffusers_guiders, step_at
from tests.guidance.guiders.perturbed_cases import diffusers_without_cfg_is_continuous, hand_mix, matches_diffusers_with_cfg


def test_mix_rows_and_costs_by_hand():
    hand_mix(PerturbedAttentionGuidance, "identity-attention", SIGMAS[5])


def reference(cfg: float, scale: float):
    return diffusers_guiders().PerturbedAttentionGuidance(guidance_scale=cfg, perturbed_guidance_scale=scale,
                                                          perturbed_guidance_layers=[0])


def test_equals_diffusers_with_cfg():
    matches_diffusers_with_cfg(reference, PerturbedAttentionGuidance, SIGMAS[5])


@pytest.mark.xfail(strict=True, reason="diffusers 0.42.1 PAG guider without CFG returns p + s (c - p), not the "
                                       "paper's (and its PAG pipelines') c + s (c - p)")
def test_diffusers_without_cfg():
    diffusers_without_cfg_is_continuous(reference)


def test_zoo_network_cond_rows_untouched_and_perturbed_row_from_the_hook():
    """On a real (tiny, random) zoo UNet: PAG's batched forward gives c + s (c - p), c from a plain
    conditional forward and p from a forward with every row perturbed."""
    torch.manual_seed(0)
    net = TextUNet(UNetConfig(image_size=8, channels=8, channel_mult=(1, 2), blocks=1, attention_resolutions=(4,),
                              heads=2, vocab_size=32, context_length=6, text_width=8, text_layers=1, text_heads=2,
                              dropout=0.0, learned_variance=False)).eval()
    for param in net.parameters():  # the zoo zero-initialises residual outputs and the output layer
        if not param.any():
            torch.nn.init.normal_(param, std=0.3)
    model = NetworkDenoiser(net)
    assert isinstance(model, Perturbable)
    x = torch.randn(2, 3, 8, 8)
    tokens = torch.cat([torch.randint(1, 30, (2, 6)), torch.tensor([[3], [5]])], 1)  # ids, then the EOT position
    level = PROCESS.level(1.0)
    step = StepInfo(level, level.timesteps(2, torch.device("cpu")), (1.0, 0.0))
    with torch.no_grad():
        out = PerturbedAttentionGuidance(2.0).predict(model, x, step, Conditions(model=tokens)).eps
        c = model(x, level, tokens).eps
        with perturbed(net, Perturbation("identity-attention"), slice(0, 2)):
            p = model(x, level, tokens).eps
    assert not torch.allclose(c, p, atol=1e-4)
    assert torch.allclose(out, c + 2.0 * (c - p), atol=1e-5)


def test_a_model_without_internals_is_a_clear_error():
    class Plain:  # a Denoiser without `perturbed`
        def __init__(self) -> None:
            self.inner = TableDenoiser(torch.ones(B, 2, dtype=F64), torch.zeros(B, 2, dtype=F64))

        def __call__(self, x, level, cond):
            return self.inner(x, level, cond)

        def null_cond(self, cond):
            return self.inner.null_cond(cond)

    with pytest.raises(ValueError, match="perturbs the model's attention layers"):
        PerturbedAttentionGuidance(2.0).predict(Plain(), torch.zeros(B, 2, dtype=F64), step_at(SIGMAS[3]), conditions())

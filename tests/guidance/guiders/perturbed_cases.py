"""Checks shared by the PAG, SEG and SLG tests: the three-branch mix by hand, its costs, one batched
forward with the perturbation on the last rows, and diffusers' guider formula (and its s = 1 jump)."""

from __future__ import annotations

import torch

from guidance.guiders.perturbed import PerturbedGuidance
from tests.guidance.guiders.guider_helpers import B, F64, TableDenoiser, conditions, step_at


def hand_mix(guidance: type[PerturbedGuidance], kind: str, sigma: float) -> None:
    # c = 1, u = 0.5, p = 0.25: with CFG 2 and s 3, 0.5 + 2 * 0.5 + 3 * 0.75 = 3.75; without CFG 1 + 3 * 0.75
    c, u, p = (torch.full((B, 2), v, dtype=F64) for v in (1.0, 0.5, 0.25))
    x = torch.zeros(B, 2, dtype=F64)
    model = TableDenoiser(c, u, p)
    out = guidance(3.0, cfg_scale=2.0).predict(model, x, step_at(sigma), conditions()).eps
    assert torch.allclose(out, torch.full_like(out, 3.75), atol=1e-12)
    assert (model.rows, model.perturbed_rows) == (3 * B, B) and model.specs[0].kind == kind
    model = TableDenoiser(c, u, p)
    out = guidance(3.0).predict(model, x, step_at(sigma), conditions()).eps
    assert torch.allclose(out, torch.full_like(out, 3.25), atol=1e-12)
    assert (model.rows, model.perturbed_rows) == (2 * B, B)
    model = TableDenoiser(c, u, p)
    assert torch.equal(guidance(0.0).predict(model, x, step_at(sigma), conditions()).eps, c)
    assert model.rows == B and not model.specs
    assert [guidance(s, cfg_scale=g).cost(sigma).network_passes for s, g in ((0.0, 1.0), (2.0, 1.0), (2.0, 3.0))] == [1, 2, 3]
    assert guidance(2.0).cost(sigma, negative=True).network_passes == 3


def matches_diffusers_with_cfg(ref_guider, guidance: type[PerturbedGuidance], sigma: float, **options) -> None:
    """diffusers' u + s_cfg (c - u) + s (c - p) with CFG on; `ref_guider(s_cfg, s)` builds diffusers' guider."""
    c, u, p = (torch.randn(B, 4, 8, 8, generator=torch.Generator().manual_seed(k)) for k in range(3))
    ours = guidance(2.5, cfg_scale=4.0, **options).predict(TableDenoiser(c, u, p), torch.zeros_like(c), step_at(sigma),
                                                          conditions()).eps
    assert torch.allclose(ours, ref_guider(4.0, 2.5).forward(c, u, p).pred, atol=1e-5)


def diffusers_without_cfg_is_continuous(ref_guider) -> None:
    """The paper (and diffusers' PAG pipelines): without CFG, eps = c + s (c - p); at s = 3, c = 1, p = 0.25
    that is 3.25. diffusers' guider at guidance_scale 1 returns p + s (c - p) = 2.5, a jump of (c - p)
    from its value just above 1 (3.25 + 1e-6 * 0.5)."""
    c, u, p = (torch.full((1, 2), v) for v in (1.0, 0.5, 0.25))
    above = ref_guider(1.0 + 1e-6, 3.0).forward(c, u, p).pred
    assert torch.allclose(above, torch.full_like(above, 3.25), atol=1e-5)
    at_one = ref_guider(1.0, 3.0).forward(c, u, p).pred
    assert torch.allclose(at_one, torch.full_like(at_one, 3.25), atol=1e-5)

"""Tangential CFG against a hand case, an independent formula (the 2x2 Gram matrix's eigenvector) and
diffusers' TangentialClassifierFreeGuidance."""

from __future__ import annotations

import torch

from guidance.guiders import make_guidance
from guidance.guiders.tcfg import tangential_uncond
from tests.guidance.guiders.guider_helpers import B, F64, TableDenoiser, conditions, diffusers_guiders, step_at, triple, SIGMAS


def test_hand_case_drops_the_unconditional_off_the_principal_direction():
    # M = [[2, 0], [0, 1]]: the principal right singular vector is e1, so u' = <u, e1> e1 = 0 and
    # eps = 0 + s (c - 0) = s c; plain CFG would give u + s (c - u) = (2s, 1 - s).
    c = torch.tensor([[2.0, 0.0]], dtype=F64)
    u = torch.tensor([[0.0, 1.0]], dtype=F64)
    assert torch.equal(tangential_uncond(c, u), torch.zeros_like(u))
    model = TableDenoiser(c.expand(B, 2).clone(), u.expand(B, 2).clone())
    x = torch.zeros(B, 2, dtype=F64)
    out = make_guidance("tcfg", 3.0).predict(model, x, step_at(SIGMAS[5]), conditions()).eps
    assert torch.allclose(out, torch.tensor([6.0, 0.0], dtype=F64).expand(B, 2), atol=1e-12)


def test_parallel_unconditional_is_plain_cfg():
    c = torch.tensor([[3.0, 4.0]], dtype=F64)
    u = 0.5 * c
    assert torch.allclose(tangential_uncond(c, u), u, atol=1e-12)


def independent(c: torch.Tensor, u: torch.Tensor, s: float) -> torch.Tensor:
    """v1 from the top eigenvector e of the Gram matrix M M^T: v1 = M^T e / |M^T e|."""
    out = []
    for ci, ui in zip(c.flatten(1), u.flatten(1)):
        m = torch.stack([ci, ui])
        _, vecs = torch.linalg.eigh(m @ m.T)
        v1 = m.T @ vecs[:, -1]
        v1 = v1 / v1.norm()
        up = (ui @ v1) * v1
        out.append(up + s * (ci - up))
    return torch.stack(out).reshape(c.shape)


def test_matches_the_gram_matrix_formula():
    x, c, u, _ = triple(1)
    u = u + 0.8 * c  # correlated branches, as real ones are
    model = TableDenoiser(c, u)
    out = make_guidance("tcfg", 4.0).predict(model, x, step_at(SIGMAS[8]), conditions()).eps
    assert torch.allclose(out, independent(c, u, 4.0), atol=1e-10)
    assert model.rows == 2 * B


def test_scale_one_is_the_conditional_model_in_one_pass():
    x, c, u, _ = triple(2)
    model = TableDenoiser(c, u)
    g = make_guidance("tcfg", 1.0)
    assert torch.equal(g.predict(model, x, step_at(SIGMAS[3]), conditions()).eps, c)
    assert model.rows == B and g.cost(1.0).network_passes == 1 and make_guidance("tcfg", 2.0).cost(1.0).network_passes == 2


def test_equals_diffusers_tangential_cfg():
    guiders = diffusers_guiders()
    _, c, u, _ = triple(3, dtype=torch.float32)
    u = u + 0.5 * c
    for s in (1.5, 5.0):
        ref = guiders.TangentialClassifierFreeGuidance(guidance_scale=s).forward(c, u).pred
        ours = tangential_uncond(c, u)
        ours = ours + s * (c - ours)
        assert torch.allclose(ours, ref, atol=1e-5), s

"""Predictions convert exactly between eps, x0, v and flow velocity at one noise level."""

from __future__ import annotations

import math

import pytest
import torch

from guidance.prediction import Prediction
from guidance.process import VE, RectifiedFlow, VPDiscrete

LEVELS = {"vp": VPDiscrete.from_schedule("cosine", 1000).level(VPDiscrete.from_schedule("cosine", 1000).timestep_sigma(400)),
          "ve": VE().level(2.5), "flow": RectifiedFlow().level(0.7)}


@pytest.mark.parametrize("process", list(LEVELS))
@pytest.mark.parametrize("space", ["eps", "x0", "v", "flow"])
def test_every_space_round_trips(process: str, space: str) -> None:
    level = LEVELS[process]
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(3, 4, generator=g, dtype=torch.float64)
    x = level.alpha * x0 + level.s * eps
    truth = {"eps": eps, "x0": x0, "v": level.alpha * eps - level.s * x0, "flow": eps - x0}
    pred = Prediction(x, level, space, truth[space])
    for other in ("eps", "x0", "v", "flow"):
        assert torch.allclose(pred.get(other), truth[other], atol=1e-12), other


def test_with_x0_moves_eps_by_the_edit_alone() -> None:
    level = LEVELS["vp"]
    x, eps = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    pred = Prediction(x, level, "eps", eps)
    assert torch.equal(pred.with_x0(pred.x0).eps, eps)
    edited = pred.with_x0(pred.x0 + 0.1)
    assert torch.allclose(edited.eps, eps - 0.1 / level.sigma)


def test_zero_snr_needs_a_non_eps_model() -> None:
    level = RectifiedFlow().level(math.inf)
    x = torch.randn(2, 3)
    assert torch.allclose(Prediction(x, level, "flow", torch.zeros_like(x)).x0, x)
    with pytest.raises(ValueError, match="zero SNR"):
        Prediction(x, level, "eps", x).x0

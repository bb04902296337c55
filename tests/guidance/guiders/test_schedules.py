"""The increasing (Wang et al.) and early-guidance schedules: values by sigma, limits, costs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from guidance.guiders import make_guidance
from guidance.guiders.schedules import first_steps, increasing
from tests.guidance.guiders.guider_helpers import B, SIGMAS, TableDenoiser, conditions, step_at, triple


def test_increasing_values_by_hand():
    sched = increasing(3.0, 0.002, 80.0)
    assert sched(80.0) == 1.0 and sched(1e4) == 1.0  # at and above sigma_hi: no guidance
    assert sched(0.002) == pytest.approx(5.0) and sched(1e-4) == pytest.approx(5.0)  # 1 + 2 (3 - 1)
    assert sched(math.sqrt(0.002 * 80.0)) == pytest.approx(3.0)  # the log-midpoint carries the mean
    grid = np.exp(np.linspace(math.log(0.002), math.log(80.0), 2001))
    values = [sched(float(s)) for s in grid]
    assert np.mean(values) == pytest.approx(3.0, abs=1e-3)
    assert all(a >= b for a, b in zip(values, values[1:]))  # grows as sigma falls


def test_increasing_cfg_is_cfg_at_the_scheduled_scale_and_charges_one_pass_above_sigma_hi():
    g = make_guidance("cfg-increasing", 3.0)
    x, c, u, _ = triple(1)
    sigma = SIGMAS[10]
    out = g.predict(TableDenoiser(c, u), x, step_at(sigma), conditions()).eps
    assert torch.allclose(out, u + g.scale(sigma) * (c - u), atol=1e-12)
    assert g.cost(100.0).network_passes == 1 and g.cost(1.0).network_passes == 2
    trajectory = [200.0, 50.0, 5.0, 0.5, 0.0]
    assert g.cost_per_image(trajectory[:-1], trajectory).network_passes == 1 + 2 + 2 + 2


def test_first_steps_by_sigma():
    sched = first_steps(4.0, 1.0)
    assert sched(1.5) == 4.0 and sched(1.0) == 1.0 and sched(0.3) == 1.0
    g = make_guidance("cfg-early", 4.0)
    x, c, u, _ = triple(2)
    early, late = TableDenoiser(c, u), TableDenoiser(c, u)
    assert torch.allclose(g.predict(early, x, step_at(2.0), conditions()).eps, u + 4.0 * (c - u), atol=1e-12)
    assert torch.equal(g.predict(late, x, step_at(0.5), conditions()).eps, c)
    assert (early.rows, late.rows) == (2 * B, B)
    trajectory = [20.0, 3.0, 1.0, 0.2, 0.0]
    assert g.cost_per_image(trajectory[:-1], trajectory).network_passes == 2 + 2 + 1 + 1


def test_schedules_refuse_bad_bounds():
    with pytest.raises(ValueError, match="sigma_stop"):
        first_steps(3.0, -1.0)
    with pytest.raises(ValueError, match="sigma_lo < sigma_hi"):
        increasing(3.0, 5.0, 1.0)

"""pytest-benchmark: one sampling step per guidance on the zoo model (run by `invoke perf`, not in CI).

Saved runs live in .benchmarks/; `invoke perf --compare mean:10%` fails when a step got slower.
"""

from __future__ import annotations

import pytest
import torch

from bench.runner.config import BenchConfig
from bench.zoo.prompts import emoji200
from bench.runner.applicability import why_not
from guidance.guiders import REGISTRY, make_guidance
from guidance.samplers import SAMPLERS, Denoise
from guidance.zoo.load import load_zoo

BATCH = 8
STEPS = 20
INDEX = 9  # the step from the 10th sigma of 20 to the next (the old respaced index 10)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    zoo = load_zoo()
    texts = ["grinning face", "red apple", "flag: Japan", "rocket"] * (BATCH // 4)
    cond = zoo.conditions(texts, torch.arange(BATCH))
    return zoo, cond, zoo.process.sigmas(STEPS), torch.randn(BATCH, *zoo.sample_shape)


PAIRS = [(name, sampler) for sampler in ("ddim", "ddpm") for name in REGISTRY]


@pytest.mark.parametrize("name, sampler", PAIRS)
def test_one_step(benchmark, setup, name, sampler):
    zoo, cond, sigmas, x = setup
    reason = why_not(name, BenchConfig.from_preset("tiny", sampler=sampler), emoji200(), zoo)
    if reason is not None:  # the runner's check: e.g. a guiding model the zoo lacks, a sampler it cannot pair with
        pytest.skip(reason.split(";")[0])
    guidance = make_guidance(name, REGISTRY[name][0].typical_scale(), zoo.guiding_models())
    denoise = Denoise(zoo.denoiser, guidance, cond, sigmas, zoo.clip_denoised)
    levels = [zoo.process.level(sigmas[INDEX]), zoo.process.level(sigmas[INDEX + 1])]
    step = SAMPLERS[sampler].fn
    with torch.no_grad():
        out = benchmark(step, denoise, x, levels, lambda: torch.zeros_like(x))
    assert torch.isfinite(out).all()

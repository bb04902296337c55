"""pytest-benchmark: one sampling step per guidance on the zoo model (run by `invoke perf`, not in CI).

Saved runs live in .benchmarks/; `invoke perf --compare mean:10%` fails when a step got slower.
"""

from __future__ import annotations

import pytest
import torch

from bench.perf import SCALES
from guidance.guiders import REGISTRY, make_guidance
from guidance.protocols import Conditions
from guidance.sampling import ddim_step, ddpm_step
from guidance.zoo.load import load_zoo

BATCH = 8


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    zoo = load_zoo()
    texts = ["grinning face", "red apple", "flag: Japan", "rocket"] * (BATCH // 4)
    cond = Conditions(model=zoo.tokenizer(texts), labels=torch.arange(BATCH), clip_tokens=zoo.clip_tokenizer(texts))
    return zoo, cond, zoo.diffusion.respace("20"), torch.randn(BATCH, 3, 32, 32)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
@pytest.mark.parametrize("name", list(REGISTRY))
def test_one_step(benchmark, setup, name, sampler):
    zoo, cond, diffusion, x = setup
    guidance = make_guidance(name, SCALES.get(name, 3.0), zoo.guiding_models())
    step = ddim_step if sampler == "ddim" else ddpm_step
    kwargs = {} if sampler == "ddim" else {"noise": torch.zeros_like(x)}
    with torch.no_grad():
        out = benchmark(step, zoo.denoiser, diffusion, guidance, x, 10, cond, **kwargs)
    assert torch.isfinite(out.x_prev).all()

"""The zoo's DDIM and DDPM samples equal those the sampler made before the noise-level refactor.

`tests/fixtures/zoo_samples_before_open_core.npz` was written by the previous sampler (commit
"Test fixture: zoo DDIM/DDPM samples ..."): 10 respaced steps, seed 7, the first two emoji200
prompts, fp32 on the CPU with 2 intra-op threads (the CI machine's; float sums depend on the thread
count, so the test pins it). Methods that edit x0 now hand x0 to the step directly instead of through
an eps round trip (which cancelled catastrophically at the first step, where sqrt(abar) ~ 1e-4),
so their samples moved by rounding; they carry numerics_version 2 in their sample key.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.emoji_prompts import emoji200
from guidance.guiders import REGISTRY, make_guidance
from guidance.samplers import sample
from guidance.zoo.load import load_zoo

FIXTURE = Path(__file__).parent.parent / "fixtures" / "zoo_samples_before_open_core.npz"
# largest |difference| measured (fp32, CPU) for the methods whose numerics changed
ROUNDING = {"apg": 5e-4, "cfg-rescale": 5e-4, "cfg-dynamic-threshold": 1e-2, "cfg-zero-star": 3e-2}


FIXTURE_THREADS = 2


@pytest.fixture(scope="module")
def zoo_and_cond():
    threads = torch.get_num_threads()
    torch.set_num_threads(FIXTURE_THREADS)
    zoo = load_zoo()
    prompts = emoji200().prompts[:2]
    yield zoo, zoo.conditions([p.text for p in prompts], torch.tensor([p.label for p in prompts]))
    torch.set_num_threads(threads)


@pytest.mark.parametrize("key", list(np.load(FIXTURE).files))
def test_zoo_samples_match_the_previous_sampler(zoo_and_cond, key: str) -> None:
    zoo, cond = zoo_and_cond
    sampler, eta, name, scale = key.split("|")
    with torch.no_grad():
        x = sample(zoo.denoiser, zoo.process, zoo.process.sigmas(10, "respace"),
                   make_guidance(name, float(scale), zoo.guiding_models()), cond, zoo.sample_shape, [0, 1], seed=7,
                   sampler=sampler, eta=float(eta))
    before = torch.from_numpy(np.load(FIXTURE)[key])
    if name in ROUNDING:
        assert REGISTRY[name][0].numerics_version > 1, "changed samples need a new numerics version"
        assert (x - before).abs().max() < ROUNDING[name]
    else:
        assert torch.equal(x, before), f"max |diff| {(x - before).abs().max():.3g}: samples changed"

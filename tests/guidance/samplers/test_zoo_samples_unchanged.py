"""The zoo's DDIM and DDPM samples equal those the sampler made before the noise-level refactor.

`tests/fixtures/zoo_samples_before_open_core.npz` was written by the previous sampler (commit
"Test fixture: zoo DDIM/DDPM samples ..."): 10 respaced steps, seed 7, the first two emoji200
prompts, fp32 on the CPU with 2 intra-op threads (the thread count is pinned to the fixture's).
Methods that edit x0 now hand x0 to the step directly instead of through an eps round trip (which
cancelled catastrophically at the first step, where sqrt(abar) ~ 1e-4), so their samples moved by
rounding; they carry numerics_version 2 in their sample key.

The fixture was made on another CPU, so samples are compared at KERNEL_SPREAD, not bit for bit: the
CPU's kernels (AVX-512 or AVX2, oneDNN's and MKL's instruction sets) and the thread count change the
float sums, and guidance amplifies the change over the steps.
"""

from __future__ import annotations


import numpy as np
import pytest
import torch

from bench.zoo.prompts import emoji200
from guidance.guiders import REGISTRY, make_guidance
from guidance.samplers import sample
from guidance.zoo.load import load_zoo
from tests.paths import FIXTURES

FIXTURE = FIXTURES / "zoo_samples_before_open_core.npz"
# largest |difference| measured (fp32, CPU) for the methods whose numerics changed
ROUNDING = {"apg": 5e-4, "cfg-rescale": 5e-4, "cfg-dynamic-threshold": 1e-2, "cfg-zero-star": 3e-2}


FIXTURE_THREADS = 2
# Largest |x - fixture| (samples in [-1, 1]) over the cases whose numerics did not change, measured on an
# AMD EPYC (AVX-512): 1.1e-3 at 1 thread (9.25e-4 at 2 threads, the fixture's count, as issue 24 reports), and
# 4.48e-3 (autoguidance: two networks' roundings compound) with ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2
# and MKL_ENABLE_INSTRUCTIONS=AVX2 at 2 threads. The bound is twice the largest, so a change below ~1e-2 (a
# reordering of float sums) passes here; the golden and parity tests pin the formulas themselves. cfg-rescale moved 6.1e-4, past its ROUNDING, so the larger bound applies to all.
MEASURED_SPREAD = 4.48e-3
KERNEL_SPREAD = 2 * MEASURED_SPREAD


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
    bound = max(ROUNDING.get(name, 0.0), KERNEL_SPREAD)
    assert (x - before).abs().max() <= bound, f"max |diff| {(x - before).abs().max():.3g} > {bound:.3g}: samples changed"

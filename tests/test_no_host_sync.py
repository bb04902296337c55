"""No host-device synchronisation inside the sampling loop, for every method and both samplers.

A sync (`.item()`, `bool(tensor)`, a data-dependent shape) makes the host wait for the GPU at each
step, so the next step's kernels cannot be queued while this one runs. Without a GPU, the `meta`
device stands in: it has shapes but no data, so any such read raises at once. The loop must run every
step on meta and fail only at the one data-dependent check the sampler makes after the loop (NaN/Inf).
"""

from __future__ import annotations

import pytest
import torch

import guidance.sampling as sampling
from guidance.guiders import REGISTRY, make_guidance
from guidance.protocols import Conditions
from guidance.zoo.load import load_zoo

META = torch.device("meta")
STEPS = 4


class _MetaNoise:
    """SampleNoise without generators (meta has none): noise of the right shape, no data."""

    def __init__(self, seed: int, indices, device) -> None:
        self.batch = len(indices)

    def randn(self, shape, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.empty(self.batch, *shape, dtype=dtype, device=META)


@pytest.fixture(scope="module")
def zoo_on_meta():
    zoo = load_zoo(device="cpu")
    texts = ["grinning face", "rocket"]
    cond = Conditions(model=zoo.tokenizer(texts), labels=torch.arange(2), clip_tokens=zoo.clip_tokenizer(texts))
    for model in [zoo.denoiser, *zoo.guiding_models().values()]:
        if model is not None:
            model.to(META)
    return zoo, cond.to(META)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_sampling_loop_reads_nothing_back_from_the_device(zoo_on_meta, monkeypatch, name, sampler):
    zoo, cond = zoo_on_meta
    monkeypatch.setattr(sampling, "SampleNoise", _MetaNoise)
    method = make_guidance(name, 3.0, zoo.guiding_models())
    steps: list[int] = []
    with pytest.raises(NotImplementedError, match="nonzero"):  # the NaN check after the loop, and only it
        sampling.sample(zoo.denoiser, zoo.diffusion.respace(str(STEPS)), method, cond, (3, 32, 32), range(2),
                        sampler=sampler, device=META, callback=lambda index, out: steps.append(index))
    assert steps == list(range(STEPS - 1, -1, -1))

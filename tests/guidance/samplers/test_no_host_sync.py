"""No host-device synchronisation inside the sampling loop, for every method and every sampler.

A sync (`.item()`, `bool(tensor)`, a data-dependent shape, a copy from pageable host memory) makes
the host wait for the GPU at each step, so the next step's kernels cannot be queued while this one
runs. Without a GPU, the `meta` device stands in: it has shapes but no data, so any read raises at
once, and a dispatch mode watches for host tensors moved to it. The loop must run every step on meta
and fail only at the one data-dependent check the sampler makes after the loop (NaN/Inf). The effective-scale
log the runner attaches to every batch is on, so its per-evaluation reductions are held to the same rule.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import guidance.samplers.loop as loop
from guidance.effective_scale import EffectiveScaleLog
from guidance.guiders import REGISTRY, make_guidance
from guidance.samplers import SAMPLERS
from guidance.zoo.load import load_zoo

META = torch.device("meta")
STEPS = 4


class _MetaNoise:
    """SampleNoise without generators (meta has none): noise of the right shape, no data."""

    def __init__(self, seed: int, indices, device, mode: str = "device") -> None:
        self.batch = len(indices)

    def randn(self, shape, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.empty(self.batch, *shape, dtype=dtype, device=META)


class _HostCopies(TorchDispatchMode):
    """Records operators that bring a host tensor to the device (a 0-dim host tensor is a kernel argument
    on CUDA, not a copy, so it is allowed)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [a for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        to_meta = func is torch.ops.aten._to_copy.default and kwargs.get("device") == META
        if any(t.device.type == "cpu" and t.ndim > 0 for t in tensors) and (to_meta or any(t.is_meta for t in tensors)):
            self.seen.append(str(func))
        return func(*args, **kwargs)


@pytest.fixture(scope="module")
def zoo_on_meta():
    zoo = load_zoo(device="cpu")
    cond = zoo.conditions(["grinning face", "rocket"], torch.arange(2))
    for model in zoo.networks():
        model.to(META)
    return zoo, cond.to(META)


# every sampler with every method it can run (CFG++ needs a sampler that renoises with eps_u)
# (universal-clip needs a latent bundle's decoder, which the zoo has not: tests/guidance/sources covers it)
ZOO_METHODS = {name for name, (cls, needs) in REGISTRY.items()
               if needs != "decoder_clip" and "embedded_guidance" not in getattr(cls, "needs", ())}
# A host read sits in a method's code or in a sampler's: every method under DDIM, every sampler under CFG, and
# the methods that renoise with eps_u (the one place a method reaches into the sampler) under every sampler
# that can take them; every method and every sampler is covered without the full cross product.
RENOISING = sorted(n for n in ZOO_METHODS if REGISTRY[n][0].renoises_unconditionally)
PAIRS = sorted({*((name, "ddim") for name in ZOO_METHODS), *(("cfg", s) for s in SAMPLERS),
                *((name, s) for name in RENOISING for s, spec in SAMPLERS.items() if spec.renoise)})


@pytest.mark.parametrize("name, sampler", PAIRS)
def test_sampling_loop_reads_nothing_back_from_the_device(zoo_on_meta, monkeypatch, name, sampler):
    zoo, cond = zoo_on_meta
    monkeypatch.setattr(loop, "SampleNoise", _MetaNoise)
    method = make_guidance(name, REGISTRY[name][0].typical_scale(), zoo.guiding_models())
    method.scale_log = log = EffectiveScaleLog()  # as the runner samples: every evaluation's effective scale
    steps: list[int] = []
    with pytest.raises(NotImplementedError, match="nonzero"), _HostCopies() as copies:  # the NaN check after the loop
        loop.sample(zoo.denoiser, zoo.process, zoo.process.sigmas(STEPS), method, cond, zoo.sample_shape, range(2),
                    sampler=sampler, device=META, callback=lambda index, x, pred: steps.append(index))
    assert steps == list(range(STEPS))
    assert copies.seen == []
    assert len(log.values) >= STEPS and all(v.is_meta and v.shape == (2,) for v in log.values)


def test_every_sampler_and_method_is_checked():
    """A sampler or method added later is covered here without editing the test."""
    assert {s for _, s in PAIRS} == set(SAMPLERS) and {n for n, _ in PAIRS} == ZOO_METHODS
    assert RENOISING and all(SAMPLERS[s].renoise or not REGISTRY[n][0].renoises_unconditionally for n, s in PAIRS)


def test_host_copy_watch_sees_a_copy():
    with _HostCopies() as copies:
        torch.ones(3).to(META)
        torch.empty(3, device=META) * torch.tensor(2.0)  # a host scalar: a kernel argument, allowed
    assert copies.seen == ["aten._to_copy.default"]

"""The method registry's contract, checked for every registered method (a method added later is covered
without editing this file): it declares its scale grids and needs on its class, runs on the analytic
mixture where its needs allow, and has its row in docs/guidance.md."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import Tensor, nn

from bench.runner.config import SCALE_RANGE, BenchConfig
from guidance.analytic import GaussianMixture
from guidance.denoisers import NetworkDenoiser
from guidance.guiders import REGISTRY, Guidance, MethodContext, guidance_class, make_guidance, register
from guidance.guiders.base import GUIDE_ROLES, NEEDS
from guidance.process import VPDiscrete
from guidance.protocols import Conditions
from guidance.samplers import sample
from tests.paths import ROOT

DOCS = ROOT / "docs" / "guidance.md"
F64 = torch.float64
SHAPE = (1, 8, 8)  # FDG's pyramid needs an image; the mixture sees it flattened (64 dimensions)
PROCESS = VPDiscrete.from_schedule("linear", 1000)


class ImageMixture(nn.Module):
    """A GaussianMixture's exact eps (or Bayes classifier logits) on images, flattened to its vectors."""

    def __init__(self, mixture: GaussianMixture, classify: bool = False) -> None:
        super().__init__()
        self.mixture, self.classify = mixture, classify

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        flat = x.flatten(1)
        if self.classify:
            return self.mixture.class_logits(flat, t)
        return self.mixture.eps(flat, t, labels).view_as(x)

    def null_cond(self, labels: Tensor) -> Tensor:
        return torch.full_like(labels, -1)


def mixture(spread: float = 1.0) -> GaussianMixture:
    means = torch.randn(3, math.prod(SHAPE), generator=torch.Generator().manual_seed(0), dtype=F64) * 0.5
    return GaussianMixture(means, torch.tensor([0.3, 0.2, 0.4]) * spread, torch.tensor([0.5, 0.3, 0.2]),
                           PROCESS.alphas_cumprod)


# what the mixture offers: exact class labels and Bayes classifier, a weak model (the same mixture, wider),
# pixel-range samples; no CLIP of either kind and no attention layers to perturb
MODELS = {"classifier": ImageMixture(mixture(), classify=True),
          "weak": NetworkDenoiser(ImageMixture(mixture(spread=2.0)), "eps")}
CONTEXT = MethodContext(source="the analytic mixture", guiding_models=frozenset(MODELS), labels=True,
                        pixel_space=True, internals=False, sampler="ddim", sampler_renoises=True)
UNAVAILABLE = {"noised_clip", "decoder_clip", "internals", "embedded_guidance"}  # the mixture takes no strength input


@pytest.mark.parametrize("name", list(REGISTRY))
def test_method_declares_its_scale_grids_and_needs(name):
    cls = REGISTRY[name][0]
    for grid in (cls.quick_scales, cls.full_scales):
        assert grid and all(SCALE_RANGE[0] <= s <= SCALE_RANGE[1] for s in grid), grid
        assert len(set(grid)) == len(grid) and list(grid) == sorted(grid), grid
    assert cls.needs <= NEEDS
    assert REGISTRY[name][1] == cls.guide_role()
    assert BenchConfig(guidance=[name], preset="full").scale_grid() == {name: list(cls.full_scales)}
    assert BenchConfig(guidance=[name], preset="tiny").scale_grid() == {name: list(cls.quick_scales)}


@pytest.mark.parametrize("name", list(REGISTRY))
def test_method_runs_on_the_analytic_mixture(name):
    """Where its needs allow, the method samples the mixture: finite, repeatable, and (except `none`)
    different from the unguided samples at its typical scale."""
    cls = REGISTRY[name][0]
    reason = cls.why_not(CONTEXT)
    if reason is not None:
        assert cls.needs & UNAVAILABLE, reason  # refused only for what the mixture lacks
        pytest.skip(reason)
    labels = torch.arange(6) % 3
    cond = Conditions(model=labels, labels=labels)
    model = NetworkDenoiser(ImageMixture(mixture()), "eps")

    def run(method: Guidance) -> Tensor:
        return sample(model, PROCESS, PROCESS.sigmas(10, "leading"), method, cond, SHAPE, range(6), seed=1,
                      sampler="ddim", clip_denoised=False, dtype=F64)

    guided = run(make_guidance(name, cls.typical_scale(), MODELS))
    assert guided.shape == (6, *SHAPE) and torch.isfinite(guided).all()
    assert torch.equal(guided, run(make_guidance(name, cls.typical_scale(), MODELS)))
    if name != "none":
        assert not torch.allclose(guided, run(make_guidance("none", 0.0))), "guidance had no effect"


def test_every_method_has_its_row_in_the_docs_table():
    rows = set(re.findall(r"^\| `([a-z0-9+\-]+)` \|", DOCS.read_text(), re.MULTILINE))
    assert set(REGISTRY) <= rows, sorted(set(REGISTRY) - rows)


@pytest.mark.parametrize("need, context, words", [
    ("labels", {"labels": False}, "has no labels"),
    ("classifier", {"guiding_models": frozenset()}, "needs a classifier model"),
    ("weak_model", {"guiding_models": frozenset({"classifier"})}, "needs a weak model"),
    ("pixel_space", {"pixel_space": False}, "thresholds x0 as pixels"),
    ("internals", {"internals": False}, "perturbs the model's attention"),
])
def test_why_not_names_the_missing_need(need, context, words):
    names = [n for n, (cls, _) in REGISTRY.items() if need in cls.needs]
    assert names, f"no registered method needs {need}"
    full = MethodContext(source="m", guiding_models=frozenset(GUIDE_ROLES.values()))
    for name in names:
        cls = REGISTRY[name][0]
        assert cls.why_not(full) is None
        assert words in cls.why_not(MethodContext(**{**full.__dict__, **context}))


def test_a_method_without_scale_grids_is_refused_at_registration():
    class Undeclared(Guidance):
        name = "undeclared-test-method"

    with pytest.raises(ValueError, match="declares no quick_scales"):
        register()(Undeclared)
    assert "undeclared-test-method" not in REGISTRY

    class UnknownNeed(Guidance):
        name = "unknown-need-test-method"
        quick_scales = full_scales = (1.0,)
        needs = frozenset({"telepathy"})

    with pytest.raises(ValueError, match="each need must be one of"):
        register()(UnknownNeed)


def test_an_unregistered_method_has_no_made_up_scales():
    with pytest.raises(ValueError, match="unknown guidance 'nonesuch'"):
        BenchConfig(guidance=["nonesuch"]).scale_grid()
    with pytest.raises(ValueError, match="unknown guidance"):
        guidance_class("nonesuch")

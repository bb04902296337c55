"""The one interface every guidance method implements, for every sampler and model.

Two kinds of guidance exist and one class covers both (as diffusers' guiders do for the first):
*combining* methods run the denoiser on several conditions and mix the predictions (CFG and its
descendants), in the space they declare (`space`: eps, x0, v or flow velocity; the prediction
converts); *gradient* methods return the gradient g of a guiding model's log-probability w.r.t.
x, which samplers apply as a score correction eps - s g (valid for every sampler), except DDPM's
ancestral step, which shifts its mean by Sigma g (Dhariwal & Nichol). A method may do both.
Methods see the noise level (`StepInfo.sigma`), never a step index: Heun's second evaluation and a
Karras schedule are handled alike.
"""

from __future__ import annotations

import math
from abc import ABC
from dataclasses import dataclass
from typing import Callable, ClassVar, Sequence

import torch
from torch import Tensor

from guidance.effective_scale import EffectiveScaleLog
from guidance.prediction import Prediction, at_least_fp32
from guidance.process import NoiseLevel
from guidance.protocols import Conditions, Denoiser

ScaleFn = Callable[[float], float]

REGISTRY: dict[str, tuple[type["Guidance"], str | None]] = {}  # name -> (class, guiding-model role it takes)

# needs a method may declare: a guiding model (by the role the bundle's `guiding_models()` gives it under),
# or a property of the run (labelled prompts, a pixel-space model, a network with hookable internals)
GUIDE_ROLES: dict[str, str] = {"classifier": "classifier", "noised_clip": "clip", "weak_model": "weak",
                               "decoder_clip": "decoder_clip"}
NEEDS = frozenset(GUIDE_ROLES) | {"labels", "pixel_space", "internals", "embedded_guidance", "text_attention"}


def register() -> Callable[[type["Guidance"]], type["Guidance"]]:
    """Class decorator: register a method under its `name`, where it is defined. The class itself must
    declare its scale grids (`quick_scales`, `full_scales`) and may declare `needs` (see NEEDS)."""

    def add(cls: type[Guidance]) -> type[Guidance]:
        if cls.name in REGISTRY and REGISTRY[cls.name][0] is not cls:
            raise ValueError(f"guidance {cls.name!r} is registered twice ({REGISTRY[cls.name][0].__name__}, {cls.__name__})")
        for grid in ("quick_scales", "full_scales"):
            if not cls.__dict__.get(grid):
                raise ValueError(f"guidance {cls.name!r} ({cls.__name__}) declares no {grid}: give the scales the "
                                 f"quick and full presets run it at, on the class")
        unknown = sorted(cls.needs - NEEDS)
        if unknown or len(cls.needs & GUIDE_ROLES.keys()) > 1:
            raise ValueError(f"guidance {cls.name!r} needs {sorted(cls.needs)}: each need must be one of "
                             f"{sorted(NEEDS)}, with at most one guiding model")
        REGISTRY[cls.name] = (cls, cls.guide_role())
        return cls

    return add


@dataclass(frozen=True)
class MethodContext:
    """What a run offers a method, for `Guidance.why_not`: the model's guiding models and properties,
    the prompts' labels and the sampler. Every task and `--guidance all` ask through this one check."""

    source: str  # the model, as messages name it
    guiding_models: frozenset[str]  # roles (GUIDE_ROLES' values) whose model is loaded
    labels: bool = True  # every prompt has a class label
    prompt_set: str = "the prompts"
    pixel_space: bool = True  # samples are pixels in [-1, 1] (not latents)
    internals: bool = True  # the denoiser exposes its attention layers (guidance.protocols.Perturbable)
    embedded_guidance: bool = False  # the model takes the guidance strength as an input (FLUX.1-dev)
    text_attention: bool = True  # the model attends to the prompt's tokens (not class labels)
    sampler: str | None = None  # its name (None: not checked)
    sampler_renoises: bool = True  # it can renoise with the unconditional prediction (CFG++ needs that)
    renoising_samplers: tuple[str, ...] = ()  # the samplers that can, for the message


def pairing_refusal(method: "Guidance | type[Guidance]", sampler: str, renoises: bool, able: Sequence[str]) -> str | None:
    """Why `sampler` (which `renoises` with eps_u or not) cannot apply `method` (one line with the fix), or
    None; `able`: the samplers that can."""
    if method.renoises_unconditionally and not renoises:
        return (f"guidance {method.name!r} renoises with the unconditional prediction, which --sampler "
                f"{sampler} cannot do; use --sampler one of {', '.join(able)}, or drop {method.name}")
    return None


@dataclass(frozen=True)
class GuidanceCost:
    """Work per image, for throughput reports: model evaluations (NFE) and guiding-model passes."""

    network_passes: float  # denoiser forward passes (a batched CFG forward of 2 conditions counts 2)
    guide_passes: float = 0.0  # forward passes of a guiding model (classifier, CLIP)
    backward_passes: float = 0.0  # backward passes through a guiding model

    def __add__(self, other: "GuidanceCost") -> "GuidanceCost":
        return GuidanceCost(self.network_passes + other.network_passes, self.guide_passes + other.guide_passes,
                            self.backward_passes + other.backward_passes)


@dataclass
class StepInfo:
    """Where the sampler is: the noise level of this model evaluation, the times the networks see,
    and the trajectory's sigmas (for methods keyed to "the first K steps", read by sigma)."""

    level: NoiseLevel
    t: Tensor  # [B] times the networks see (the level's model time)
    trajectory: tuple[float, ...] = ()  # the sampler's descending sigmas, ending with 0

    @property
    def sigma(self) -> float:
        return self.level.sigma


class Guidance(ABC):
    """Base class: by default one conditional pass and no gradient (i.e. no guidance).

    `scale` is a number or a function of sigma (the noise level), so a schedule does not depend on
    the number of sampling steps. Subclasses override `predict`, `gradient` and `cost`.
    """

    name: ClassVar[str] = "base"
    space: ClassVar[str] = "eps"  # where predictions are combined: "eps", "x0", "v" or "flow"
    identity_scale: ClassVar[float] = 0.0  # the scale that means "no guidance"
    renoises_unconditionally: ClassVar[bool] = False  # CFG++: the sampler must renoise with eps_u
    # the scales the quick (and tiny) and the full preset run, in the method's own convention (CFG's: 1 = no
    # guidance; gradient methods': 0 = none); each registered class declares its own
    quick_scales: ClassVar[tuple[float, ...]] = ()
    full_scales: ClassVar[tuple[float, ...]] = ()
    needs: ClassVar[frozenset[str]] = frozenset()  # what the method cannot run without (NEEDS)
    numerics_version: ClassVar[int] = 1  # bump when the method's fp32 samples change (part of the sample key)
    reference: ClassVar[str] = ""
    # where the effective CFG scale of each evaluation is recorded (None: not recorded; guidance.effective_scale)
    scale_log: EffectiveScaleLog | None = None

    def __init__(self, scale: float | ScaleFn = 0.0) -> None:
        if not callable(scale) and not math.isfinite(float(scale)):
            raise ValueError(f"guidance scale must be finite, got {scale}")
        self.scale = scale

    @classmethod
    def default_scales(cls, preset: str) -> tuple[float, ...]:
        """The scale grid a preset runs the method at when none is given: the full grid for "full"."""
        return cls.full_scales if preset == "full" else cls.quick_scales

    @classmethod
    def typical_scale(cls) -> float:
        """One representative scale (the middle of the quick grid), for timing and smoke tests."""
        return cls.quick_scales[len(cls.quick_scales) // 2]

    @classmethod
    def guide_role(cls) -> str | None:
        """The role of the guiding model the constructor takes first (see GUIDE_ROLES), or None."""
        return next((GUIDE_ROLES[n] for n in sorted(cls.needs) if n in GUIDE_ROLES), None)

    @classmethod
    def why_not(cls, context: MethodContext) -> str | None:
        """Why the method cannot run in `context` (one line naming the fix), or None."""
        role = cls.guide_role()
        if "labels" in cls.needs and not context.labels:
            return (f"guidance {cls.name!r} cannot run on prompt set {context.prompt_set!r}: it has no labels; use a "
                    f"set with a label column (e.g. emoji200) or drop {cls.name} from --guidance")
        if role is not None and role not in context.guiding_models:
            return (f"guidance {cls.name!r} needs a {role} model, which {context.source} does not have; drop it from "
                    f"--guidance or point --model at a directory that has one")
        if "pixel_space" in cls.needs and not context.pixel_space:
            return (f"guidance {cls.name!r} thresholds x0 as pixels in [-1, 1], which the latents of {context.source} "
                    f"are not; drop it from --guidance (cfg-rescale or apg tame high scales)")
        if "internals" in cls.needs and not context.internals:
            return (f"guidance {cls.name!r} perturbs the model's attention layers, which {context.source} does not "
                    f"expose; drop it from --guidance")
        if "embedded_guidance" in cls.needs and not context.embedded_guidance:
            return (f"guidance {cls.name!r} sets the guidance strength a guidance-distilled model takes as input "
                    f"(FLUX.1-dev), which {context.source} has not; drop it from --guidance (cfg and nag run on any "
                    f"text model)")
        if "text_attention" in cls.needs and not context.text_attention:
            return (f"guidance {cls.name!r} guides inside the attention to the prompt, which {context.source} (class "
                    f"labels) has not; drop it from --guidance")
        if context.sampler is not None:
            return pairing_refusal(cls, context.sampler, context.sampler_renoises, context.renoising_samplers)
        return None

    def scale_at(self, step: StepInfo) -> float:
        return float(self.scale(step.sigma)) if callable(self.scale) else float(self.scale)

    def reset(self) -> None:
        """Forget per-trajectory state (momentum buffers) before a new batch."""

    def for_samples(self, indices: Sequence[int]) -> "Guidance":
        """The method as it applies to the batch of these global sample indices (itself, unless its
        settings differ per sample)."""
        return self

    def note_branches(self, cond: Prediction, reference: Prediction) -> None:
        """Hand this evaluation's conditional and reference predictions to the effective-scale log."""
        if self.scale_log is not None:
            self.scale_log.branches(cond, reference)

    def note_conditional_only(self) -> None:
        """Tell the effective-scale log that this evaluation is the conditional prediction alone."""
        if self.scale_log is not None:
            self.scale_log.conditional_only()

    def predict(self, model: Denoiser, x: Tensor, step: StepInfo, cond: Conditions) -> Prediction:
        return model(x, step.level, cond.model)

    def gradient(self, x: Tensor, step: StepInfo, cond: Conditions) -> Tensor | None:
        """Scaled gradient of a log-density w.r.t. x (model coordinates), or None for combining methods."""
        return None

    def cost(self, sigma: float | None = None, negative: bool = False) -> GuidanceCost:
        """Cost per image of one model evaluation at noise level sigma (None: where guidance is active).

        `negative`: the batch carries a negative prompt, so a combining method runs its second branch
        even where the scale is the identity (the negative prompt still steers there).
        """
        return GuidanceCost(network_passes=1)

    def active_at(self, sigma: float | None) -> bool:
        """Whether the method departs from its identity scale at sigma (a schedule without sigma: yes)."""
        scale = self.scale_for_cost(sigma)
        return scale is None or scale != self.identity_scale

    def scale_for_cost(self, sigma: float | None) -> float | None:
        """The scale at sigma (the constant scale when there is no schedule); None for a schedule and no sigma."""
        if not callable(self.scale):
            return float(self.scale)
        return None if sigma is None else float(self.scale(sigma))

    def runs_network_at(self, sigma: float, trajectory: Sequence[float]) -> bool:
        """Whether an evaluation at sigma runs the network (a method may replace some by a formula)."""
        return True

    def cost_per_image(self, evaluations: Sequence[float], trajectory: Sequence[float] | None = None,
                       negative: bool = False) -> GuidanceCost:
        """Total work per image over a trajectory: the sum of `cost(sigma)` over the sigmas at which the
        sampler evaluates the model (Heun: twice per step), skipping those the method answers without
        the network. Exact for schedules that switch guidance off at some noise levels."""
        trajectory = list(evaluations) if trajectory is None else list(trajectory)
        total = GuidanceCost(network_passes=0)
        for sigma in evaluations:
            if self.runs_network_at(float(sigma), trajectory):
                total = total + self.cost(float(sigma), negative)
        return total

    def __repr__(self) -> str:
        scale = "schedule" if callable(self.scale) else self.scale
        return f"{type(self).__name__}(scale={scale})"


class GradientGuidance(Guidance):
    """A method that adds s * grad_x of a guiding model's per-sample objective: one denoiser pass per
    evaluation, plus the guide's forward and backward wherever the scale is not 0 (there the guide
    does not run). Subclasses say what the objective is (`objective`); the gradient is taken here."""

    def objective(self, step: StepInfo, cond: Conditions) -> Callable[[Tensor], Tensor]:
        """The function of x_t whose gradient guides this step ([B] values, e.g. log p(y | x_t))."""
        raise NotImplementedError

    def gradient(self, x: Tensor, step: StepInfo, cond: Conditions) -> Tensor | None:
        scale = self.scale_at(step)
        if scale == 0.0:
            return None
        return scale * input_gradient(self.objective(step, cond), x).to(x.dtype)

    def cost(self, sigma: float | None = None, negative: bool = False) -> GuidanceCost:
        guided = float(self.active_at(sigma))
        return GuidanceCost(network_passes=1, guide_passes=guided, backward_passes=guided)


def input_gradient(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """d fn(x).sum() / dx, backpropagating through the guiding model only (x is detached)."""
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        value = fn(x_in)
        (grad,) = torch.autograd.grad(value.sum(), x_in)
    return grad


__all__ = ["Guidance", "GradientGuidance", "GuidanceCost", "StepInfo", "Prediction", "REGISTRY", "register",
           "at_least_fp32", "input_gradient"]

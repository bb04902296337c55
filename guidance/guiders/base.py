"""The one interface every guidance method implements.

Two kinds of guidance exist and one class covers both (as diffusers' guiders do for the first):
*combining* methods run the denoiser on several conditions and mix the predictions (CFG and its
descendants); *gradient* methods add the gradient of a guiding model's log-probability, which the
sampler applies as Dhariwal & Nichol do (a mean shift Sigma * g for ancestral steps, a score
correction -sqrt(1 - abar) * g for DDIM). A method may do both.
"""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import Tensor

from guidance.diffusion import GaussianDiffusion, extract
from guidance.protocols import Conditions, Denoiser

ScaleFn = Callable[[float], float]


@dataclass(frozen=True)
class GuidanceCost:
    """Work per image per sampling step, for throughput reports."""

    network_passes: float  # denoiser forward passes
    guide_passes: float = 0.0  # forward passes of a guiding model (classifier, CLIP)
    backward_passes: float = 0.0  # backward passes through a guiding model

    def __add__(self, other: "GuidanceCost") -> "GuidanceCost":
        return GuidanceCost(self.network_passes + other.network_passes, self.guide_passes + other.guide_passes,
                            self.backward_passes + other.backward_passes)


@dataclass
class StepInfo:
    """Where the sampler is: process step index (respaced), model timestep and noise level."""

    index: int  # the process step (respaced), shared by the batch
    t: Tensor  # [B] timesteps the networks see
    sigma: float  # sqrt((1 - abar) / abar), the noise level; schedules are functions of it
    diffusion: GaussianDiffusion


@dataclass
class Prediction:
    """A (possibly combined) denoiser prediction: eps, and v for learned-variance models."""

    eps: Tensor
    var_values: Tensor | None = None


def split_output(out: Tensor, channels: int, learned_variance: bool) -> Prediction:
    """eps (and v) from a network's output, in at least fp32: guidance combines predictions (norms over
    whole images in APG, standard deviations in CFG-rescale) where fp16 overflows and bf16 loses the
    small difference between branches, so half-precision outputs are upcast before any method sees them."""
    out = at_least_fp32(out)
    if learned_variance:
        if out.shape[1] != 2 * channels:
            raise ValueError(f"learned-variance model must output {2 * channels} channels, got {out.shape[1]}")
        return Prediction(out[:, :channels], out[:, channels:])
    if out.shape[1] != channels:
        raise ValueError(f"model must output {channels} channels, got {out.shape[1]}; "
                         f"set learned_variance=True if it also predicts a variance")
    return Prediction(out, None)


class Guidance(ABC):
    """Base class: by default one conditional pass and no gradient (i.e. no guidance).

    `scale` is a number or a function of sigma (the noise level), so a schedule does not depend on
    the number of sampling steps. Subclasses override `predict`, `gradient` and `cost`.
    """

    name: ClassVar[str] = "base"
    space: ClassVar[str] = "eps"  # where predictions are combined: "eps", "x0" (or "v", see cfg_zero_star)
    identity_scale: ClassVar[float] = 0.0  # the scale that means "no guidance"
    reference: ClassVar[str] = ""

    def __init__(self, scale: float | ScaleFn = 0.0) -> None:
        if not callable(scale) and not torch.isfinite(torch.tensor(float(scale))):
            raise ValueError(f"guidance scale must be finite, got {scale}")
        self.scale = scale

    def scale_at(self, step: StepInfo) -> float:
        return float(self.scale(step.sigma)) if callable(self.scale) else float(self.scale)

    def reset(self) -> None:
        """Forget per-trajectory state (momentum buffers) before a new batch."""

    def predict(self, model: Denoiser, x: Tensor, step: StepInfo, cond: Conditions) -> Prediction:
        return split_output(model(x, step.t, cond.model), x.shape[1], model.learned_variance)

    def gradient(self, x: Tensor, step: StepInfo, cond: Conditions) -> Tensor | None:
        """Scaled gradient of a log-density w.r.t. x_t, or None for combining methods."""
        return None

    def cost(self, sigma: float | None = None, negative: bool = False) -> GuidanceCost:
        """Cost per image per step at noise level sigma (None: the cost where guidance is active).

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

    def network_sigmas(self, diffusion: GaussianDiffusion) -> list[float]:
        """Noise levels of the steps that run this method (all of them, unless a method skips steps)."""
        return diffusion.sigmas.tolist()

    def cost_per_image(self, diffusion: GaussianDiffusion, negative: bool = False) -> GuidanceCost:
        """Total work per image over the whole process: the sum of `cost(sigma_i)` over its steps.

        Unlike `cost() * steps`, this is exact for schedules that switch guidance off at some noise
        levels (guidance interval: one pass outside it) and for methods that skip steps.
        """
        total = GuidanceCost(network_passes=0)
        for sigma in self.network_sigmas(diffusion):
            total = total + self.cost(float(sigma), negative)
        return total

    def __repr__(self) -> str:
        scale = "schedule" if callable(self.scale) else self.scale
        return f"{type(self).__name__}(scale={scale})"


class GradientGuidance(Guidance):
    """A method that adds s * grad_x of a guiding model's per-sample objective: one denoiser pass per
    step, plus the guide's forward and backward wherever the scale is not 0 (there the guide does not
    run). Subclasses say what the objective is (`objective`); the gradient is taken here."""

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


def at_least_fp32(x: Tensor) -> Tensor:
    """Upcast half-precision outputs for log-softmax and norms; keep float64 as it is."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def x0_of(step: StepInfo, x: Tensor, eps: Tensor) -> Tensor:
    """The x0 prediction that eps implies at this step (x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar))."""
    return step.diffusion.x0_from_eps(x, step.index, eps)


def eps_for_x0(step: StepInfo, x: Tensor, eps: Tensor, x0: Tensor, x0_new: Tensor) -> Tensor:
    """The eps that implies x0_new, given that eps implies x0 (for methods that edit x0).

    Written as eps - (x0_new - x0) / sigma so that only the edit is divided by sigma, which is small
    at the last steps: an unchanged x0 gives back eps exactly.
    """
    sigma = extract(step.diffusion.sqrt_recipm1_alphas_cumprod, step.index, x)
    return eps - (x0_new - x0) / sigma


def input_gradient(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """d fn(x).sum() / dx, backpropagating through the guiding model only (x is detached)."""
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        value = fn(x_in)
        (grad,) = torch.autograd.grad(value.sum(), x_in)
    return grad

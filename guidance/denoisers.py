"""Adapters from a network to the one model contract: one adapter, tagged by prediction type.

A network `net(x, t, cond)` sees the state in its own coordinates and its own time input (a
training timestep, sigma, or t * N: the process decides, guidance.process). What it returns is
eps, v, x0 or a rectified-flow velocity (`prediction`); with `learned_variance` it also returns
Nichol & Dhariwal's variance channels. `as_k_diffusion` turns any denoiser into k-diffusion's
`model(x, sigma) -> x0` in VE coordinates, which is how the parity tests drive k-diffusion.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor, nn

from guidance.internals import AttentionProbe, NormalizedAttention, Perturbation, PerturbedPass, perturbed
from guidance.prediction import SPACES, Prediction, Space, at_least_fp32
from guidance.process import NoiseLevel, Process
from guidance.protocols import Denoiser, ModelCond

PREDICTION_TYPES = {"eps": "eps", "epsilon": "eps", "v": "v", "v_prediction": "v", "x0": "x0", "sample": "x0",
                    "flow": "flow", "flow_prediction": "flow"}


def prediction_space(name: str) -> Space:
    """The suite's name of a prediction type (diffusers' names accepted: epsilon, v_prediction, sample)."""
    if name not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction type {name!r}; valid: {', '.join(sorted(PREDICTION_TYPES))}")
    return PREDICTION_TYPES[name]  # type: ignore[return-value]


class NetworkDenoiser(nn.Module):
    """A network as a Denoiser: calls `net(x, level's model time, cond)` and tags what it predicts.

    Outputs are upcast to at least fp32 before any method combines them: norms over whole images
    (APG) and standard deviations (CFG-rescale) overflow in fp16, and bf16 loses the small
    difference between the conditional and unconditional branches.
    """

    def __init__(self, net: nn.Module, prediction: str = "eps", learned_variance: bool = False,
                 null_cond: Callable[[ModelCond], ModelCond] | None = None) -> None:
        super().__init__()
        self.net = net
        self.prediction: Space = prediction_space(prediction)
        self.learned_variance = bool(learned_variance)
        self._null_cond = null_cond

    def forward(self, x: Tensor, level: NoiseLevel, cond: ModelCond) -> Prediction:
        out = at_least_fp32(self.net(x, level.timesteps(x.shape[0], x.device), cond))
        channels = x.shape[1]
        if self.learned_variance:
            if out.shape[1] != 2 * channels:
                raise ValueError(f"learned-variance model must output {2 * channels} channels, got {out.shape[1]}")
            return Prediction(x, level, self.prediction, out[:, :channels], out[:, channels:])
        if out.shape[1] != channels:
            raise ValueError(f"model must output {channels} channels, got {out.shape[1]}; "
                             f"set learned_variance=True if it also predicts a variance")
        return Prediction(x, level, self.prediction, out)

    def perturbed(self, perturbation: Perturbation | NormalizedAttention | AttentionProbe, rows: slice) -> PerturbedPass:
        """The network with `perturbation` on batch rows `rows` (guidance.internals), for PAG, SEG and SLG."""
        return perturbed(self.net, perturbation, rows)

    def null_cond(self, cond: ModelCond) -> ModelCond:
        if self._null_cond is not None:
            return self._null_cond(cond)
        return self.net.null_cond(cond)  # type: ignore[operator]


def as_k_diffusion(denoiser: Denoiser, process: Process, cond: ModelCond) -> Callable[..., Tensor]:
    """k-diffusion's `model(x, sigma) -> x0`, x in VE coordinates (x0 + sigma eps), one sigma per call."""

    def model(x: Tensor, sigma: Tensor, **_: Any) -> Tensor:
        level = process.level(float(sigma.reshape(-1)[0]))
        return denoiser(x * level.alpha, level, cond).x0

    return model


__all__ = ["NetworkDenoiser", "as_k_diffusion", "prediction_space", "PREDICTION_TYPES", "SPACES"]

"""Training losses: the hybrid objective of Nichol & Dhariwal (2021) for learned-variance models."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from guidance.diffusion import GaussianDiffusion


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_std_normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """log-likelihood of 8-bit data x in [-1, 1] under a Gaussian discretised to 256 bins (Ho et al.)."""
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = _approx_std_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = _approx_std_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    return torch.where(x < -0.999, log_cdf_plus,
                       torch.where(x > 0.999, log_one_minus_cdf_min, torch.log(cdf_delta.clamp(min=1e-12))))


def hybrid_loss(diffusion: GaussianDiffusion, out: Tensor, x0: Tensor, x_t: Tensor, t: Tensor,
                noise: Tensor, weight: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """L_simple on eps plus the variational bound term that trains only the variance (mean detached).

    `weight` [B, 1, H, W] restricts L_simple to where it is nonzero (an inpainting model's hole)."""
    eps, var_values = out.float().chunk(2, dim=1)
    if weight is None:
        mse = ((eps - noise) ** 2).mean(dim=(1, 2, 3))
    else:
        mse = (weight * (eps - noise) ** 2).sum(dim=(1, 2, 3)) / (eps.shape[1] * weight.sum(dim=(1, 2, 3))).clamp(min=1)
    true_mean, _, true_log_var = diffusion.q_posterior(x0, x_t, t)
    p = diffusion.p_mean_variance(x_t, t, eps.detach(), var_values, clip_denoised=False)
    kl = normal_kl(true_mean, true_log_var, p["mean"], p["log_variance"]).mean(dim=(1, 2, 3)) / math.log(2.0)
    nll = -discretized_gaussian_log_likelihood(x0, p["mean"], 0.5 * p["log_variance"]).mean(dim=(1, 2, 3)) / math.log(2.0)
    vb = torch.where(t == 0, nll, kl)
    loss = (mse + vb).mean()
    return loss, {"mse": mse.mean().detach(), "vb": vb.mean().detach()}

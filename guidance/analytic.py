"""An isotropic Gaussian mixture whose diffused score and Bayes classifier are exact at every t.

Component k is class k: x0 | y=k ~ N(mu_k, s_k^2 I). Under x_t = sqrt(abar) x0 + sqrt(1-abar) eps,
x_t | k ~ N(sqrt(abar) mu_k, (abar s_k^2 + 1 - abar) I), so eps(x_t, t, y), the marginal eps(x_t, t)
and p(y | x_t) are closed-form. Guidance formulas can then be checked to float64 precision.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class GaussianMixture:
    def __init__(self, means: Tensor, stds: Tensor, weights: Tensor, alphas_cumprod: Tensor) -> None:
        self.means = means.to(torch.float64)  # [K, D]
        self.stds = stds.to(torch.float64)  # [K]
        self.weights = weights.to(torch.float64) / weights.sum()  # [K]
        self.alphas_cumprod = alphas_cumprod.to(torch.float64)  # indexed by model timestep

    @property
    def num_classes(self) -> int:
        return int(self.means.shape[0])

    def component_log_density_and_score(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """log N(x_t; m_k, v_k I) [B, K] and its score [B, K, D], by broadcasting (batch-invariant)."""
        abar = self.alphas_cumprod.to(x.device)[t.long()].to(x.dtype)[:, None]  # [B, 1]
        var = abar * self.stds.to(x)[None] ** 2 + (1 - abar)  # [B, K]
        diff = x[:, None, :] - abar.sqrt()[:, :, None] * self.means.to(x)[None]  # [B, K, D]
        dim = x.shape[-1]
        log_density = -0.5 * (diff**2).sum(-1) / var - 0.5 * dim * torch.log(2 * math.pi * var)
        return log_density, -diff / var[:, :, None]

    def class_logits(self, x: Tensor, t: Tensor) -> Tensor:
        """Exact Bayes posterior log p(y | x_t) up to a constant."""
        log_density, _ = self.component_log_density_and_score(x, t)
        return torch.log(self.weights.to(x))[None] + log_density

    def eps(self, x: Tensor, t: Tensor, labels: Tensor) -> Tensor:
        """Exact eps = -sqrt(1 - abar) * score; label -1 means the marginal (unconditional) score."""
        log_density, scores = self.component_log_density_and_score(x, t)
        posterior = torch.softmax(torch.log(self.weights.to(x))[None] + log_density, dim=-1)  # [B, K]
        onehot = torch.zeros_like(posterior).scatter_(1, labels.clamp(min=0)[:, None], 1.0)
        mix = torch.where((labels >= 0)[:, None], onehot, posterior)
        score = (mix[:, :, None] * scores).sum(1)
        abar = self.alphas_cumprod.to(x.device)[t.long()].to(x.dtype)[:, None]
        return -(1 - abar).sqrt() * score

    def posterior_x0(self, x: Tensor, alpha: Tensor, s: Tensor, labels: Tensor) -> Tensor:
        """E[x0 | x] for x = alpha x0 + s eps in any process (label -1: the marginal), exactly; alpha, s [B, 1].

        Component k: x | k ~ N(alpha mu_k, (alpha^2 s_k^2 + s^2) I) and
        E[x0 | x, k] = mu_k + alpha s_k^2 / (alpha^2 s_k^2 + s^2) (x - alpha mu_k); defined at alpha = 0 too."""
        means, stds = self.means.to(x), self.stds.to(x)
        var = alpha**2 * stds[None] ** 2 + s**2  # [B, K]
        diff = x[:, None, :] - alpha[:, :, None] * means[None]  # [B, K, D]
        log_density = -0.5 * (diff**2).sum(-1) / var - 0.5 * x.shape[-1] * var.log()
        posterior = torch.softmax(torch.log(self.weights.to(x))[None] + log_density, dim=-1)
        onehot = torch.zeros_like(posterior).scatter_(1, labels.clamp(min=0)[:, None], 1.0)
        mix = torch.where((labels >= 0)[:, None], onehot, posterior)
        x0_k = means[None] + (alpha * stds[None] ** 2 / var)[:, :, None] * diff
        return (mix[:, :, None] * x0_k).sum(1)

    def mean(self) -> Tensor:
        return (self.weights[:, None] * self.means).sum(0)

    def covariance(self) -> Tensor:
        mean = self.mean()
        dim = self.means.shape[1]
        cov = torch.zeros(dim, dim, dtype=torch.float64)
        for w, mu, s in zip(self.weights, self.means, self.stds):
            cov += w * (s**2 * torch.eye(dim, dtype=torch.float64) + torch.outer(mu - mean, mu - mean))
        return cov


class MixtureDenoiser(nn.Module):
    """Denoiser protocol over a GaussianMixture; cond holds labels, -1 = unconditional."""

    learned_variance = False

    def __init__(self, mixture: GaussianMixture) -> None:
        super().__init__()
        self.mixture = mixture

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        return self.mixture.eps(x, t, cond)

    def null_cond(self, cond: Tensor) -> Tensor:
        return torch.full_like(cond, -1)


class MixtureClassifier(nn.Module):
    """NoiseAwareClassifier protocol: the exact Bayes classifier of the mixture."""

    def __init__(self, mixture: GaussianMixture) -> None:
        super().__init__()
        self.mixture = mixture

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.mixture.class_logits(x, t)

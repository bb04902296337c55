"""Unbiased MMD^2 of a sample set against a fixed reference, for any kernel, with cheap resamples.

With per-sample draw counts w (w = 1: the samples themselves), MMD^2 = mean_{r != r'} k(r, r')
+ (w^T K_ss w - sum_j w_j^2 K_jj) / (n^2 - sum_j w_j^2) - 2 mean_{r, j} w_j k(r, j) / n: the sample term
averages over pairs of distinct samples (a resample's copies of one image are not paired with each other,
which would bias it upward), the reference term and the kernels are computed once, and a resample is a
matrix-vector product.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

Kernel = Callable[[Tensor, Tensor], Tensor]


def offdiagonal_mean(kernel: Kernel, x: Tensor, chunk: int = 2048) -> Tensor:
    """mean_{i != j} k(x_i, x_j), in row chunks (a 30k-image reference needs no 30k x 30k matrix)."""
    n = len(x)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for lo in range(0, n, chunk):
        block = kernel(x[lo:lo + chunk], x).double()
        total += block.sum() - block.diagonal(offset=lo).sum()
    return total / (n * (n - 1))


class KernelMMD:
    """Kernels between samples and against the reference, computed once for the value and every resample."""

    def __init__(self, kernel: Kernel, reference: Tensor, samples: Tensor, chunk: int = 2048,
                 k_rr: Tensor | None = None) -> None:
        self.k_rr = offdiagonal_mean(kernel, reference, chunk) if k_rr is None else k_rr.to(samples.device)
        self.k_ss = kernel(samples, samples).double()
        cross = torch.zeros(len(samples), dtype=torch.float64, device=samples.device)
        for lo in range(0, len(reference), chunk):
            cross += kernel(reference[lo:lo + chunk], samples).double().sum(0)
        self.k_rs = cross / len(reference)  # mean over the reference, per sample

    def resampled(self, counts: Tensor) -> Tensor:
        """MMD^2 per row of counts [B, n] (each row sums to n)."""
        w = counts.to(self.k_ss).reshape(-1, self.k_ss.shape[0])
        n = w.shape[1]
        w2 = w.square()
        within = ((w @ self.k_ss) * w).sum(1) - w2 @ self.k_ss.diagonal()
        return self.k_rr + within / (n * n - w2.sum(1)) - 2 * (w @ self.k_rs) / n

    def value(self) -> Tensor:
        return self.resampled(torch.ones(1, self.k_ss.shape[0]))[0]

"""CMMD (Jayasumana et al. 2024, "Rethinking FID"): MMD^2 between CLIP image embeddings under a Gaussian
RBF kernel with sigma = 10, scaled by 1000, as in the paper's code; here the unbiased estimator (the
paper's includes the diagonal, which biases it upward at small n)."""

from __future__ import annotations

from torch import Tensor

from bench.evaluators.base import SetMetric
from bench.evaluators.mmd import KernelMMD
from bench.evaluators.reference import Reference
from bench.evaluators.registry import Column, register_metric

SIGMA = 10.0
SCALE = 1000.0


def rbf_kernel(x: Tensor, y: Tensor) -> Tensor:
    """exp(-||x - y||^2 / (2 sigma^2)), computed as the paper's code does (norms and a matrix product)."""
    x, y = x.double(), y.double()
    sq = x.square().sum(1, keepdim=True) - 2 * x @ y.T + y.square().sum(1).unsqueeze(0)
    return (-sq / (2 * SIGMA**2)).exp()


@register_metric
class CMMD(SetMetric):
    name = "cmmd"
    columns = {"cmmd": Column(False, "CMMD", "1000 x MMD^2 of unit-length CLIP embeddings (RBF kernel, sigma 10)")}
    needs = frozenset({"reference", "clip"})
    networks = "clip"  # always the CLIP scorer's embeddings, whatever --features says

    def __init__(self, reference: Reference, features: Tensor, chunk: int) -> None:
        real = reference.needs_features("cmmd").to(features.device)
        self.mmd = KernelMMD(rbf_kernel, real, features, k_rr=reference.kernel_mean("cmmd", rbf_kernel))

    def value(self) -> dict[str, float]:
        return {"cmmd": float(SCALE * self.mmd.value())}

    def resampled(self, counts: Tensor) -> dict[str, Tensor]:
        return {"cmmd": (SCALE * self.mmd.resampled(counts)).float()}

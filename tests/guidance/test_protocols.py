"""Conditions with several tensors (SDXL-style text states, pooled text, time ids) go through CFG's
batched forward, device moves and slicing as one."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from guidance.denoisers import NetworkDenoiser
from guidance.guiders import ClassifierFreeGuidance
from guidance.process import VPDiscrete
from guidance.protocols import Conditions
from guidance.samplers import sample


class DictNet(nn.Module):
    """eps = 0.1 * (pooled mean + time-id sum) per sample: depends on every tensor of its condition."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, tuple[int, ...]]] = []

    def forward(self, x: Tensor, t: Tensor, cond: dict[str, Tensor]) -> Tensor:
        self.seen.append({k: tuple(v.shape) for k, v in cond.items()})
        shift = cond["pooled"].mean(1) + cond["time_ids"].sum(1)
        return 0.1 * shift[:, None].expand_as(x)

    def null_cond(self, cond: dict[str, Tensor]) -> dict[str, Tensor]:
        return {k: torch.zeros_like(v) for k, v in cond.items()}


def test_dict_conditions_batch_through_cfg() -> None:
    net = DictNet()
    cond = Conditions(model={"pooled": torch.ones(3, 4), "time_ids": torch.arange(6.0).reshape(3, 2)})
    assert len(cond) == 3 and len(cond[1:]) == 2 and cond.to("cpu").model["pooled"].shape == (3, 4)
    process = VPDiscrete.from_schedule("linear", 100)
    x = sample(NetworkDenoiser(net), process, process.sigmas(3), ClassifierFreeGuidance(2.0), cond, (2,), range(3),
               clip_denoised=False)
    assert net.seen and all(shapes == {"pooled": (6, 4), "time_ids": (6, 2)} for shapes in net.seen)
    unguided = sample(NetworkDenoiser(DictNet()), process, process.sigmas(3), ClassifierFreeGuidance(1.0), cond, (2,),
                      range(3), clip_denoised=False)
    assert not torch.allclose(x, unguided)  # the conditional branch's tensors reached the network

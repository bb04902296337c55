"""Text-to-image: each cell samples every prompt of the prompt set (the main job)."""

from __future__ import annotations

import torch

from bench.runner.store import Cell
from bench.tasks.base import SampledBatch, Task
from bench.tasks.registry import register_task
from guidance.bundle import ModelBundle
from guidance.guiders.base import Guidance
from guidance.protocols import Conditions
from guidance.samplers import sample


@register_task("text-to-image")
class TextToImage(Task):
    """Prompts in, images out; the base class's defaults are this task's."""

    def sample_batch(self, bundle: ModelBundle, cell: Cell, guidance: Guidance, cond: Conditions, indices: list[int],
                     texts: list[str], device: torch.device) -> SampledBatch:
        cfg = self.cfg
        sigmas = bundle.process.sigmas(cfg.steps, cfg.schedule)
        x = sample(bundle.denoiser, bundle.process, sigmas, guidance, cond, bundle.sample_shape, indices,
                   seed=cell.seed, sampler=cfg.sampler, eta=cfg.eta, clip_denoised=bundle.clip_denoised, device=device,
                   noise_mode=cfg.noise)
        return SampledBatch(bundle.decode(x), latents=x)

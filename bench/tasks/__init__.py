"""Tasks: what a benchmark cell samples and scores (text-to-image, inpainting, the cascade). Each task
is one module that registers its class with `@register_task(name)`; `make_task` picks the run's."""

from __future__ import annotations

from bench.runner.config import BenchConfig
from bench.tasks import cascade, inpaint, text_to_image  # noqa: F401  (each registers its task)
from bench.tasks.base import Evaluators, SampledBatch, Task
from bench.tasks.registry import TASKS, register_task

__all__ = ["TASKS", "Evaluators", "SampledBatch", "Task", "make_task", "register_task"]


def make_task(cfg: BenchConfig) -> Task:
    """The task `cfg.task` names, bound to the run's config (one line naming the valid tasks if unknown)."""
    if cfg.task not in TASKS:
        raise ValueError(f"unknown task {cfg.task!r}; valid: {', '.join(TASKS)}")
    return TASKS[cfg.task](cfg)

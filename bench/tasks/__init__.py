"""Tasks: what a benchmark cell samples and scores (text-to-image, inpainting, the cascade). Each task
is one module of this package that registers its class with `@register_task(name)`; importing the package
imports every module of it, so a new task is one new file; `make_task` picks the run's."""

from __future__ import annotations

import importlib
import pkgutil

from bench.runner.config import BenchConfig
from bench.tasks import text_to_image  # noqa: F401  (registered first: the default task leads the list)
from bench.tasks.base import Evaluators, SampledBatch, Task
from bench.tasks.registry import TASKS, register_task

for _module in pkgutil.iter_modules(__path__):  # registration is the side effect of importing a module
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["TASKS", "Evaluators", "SampledBatch", "Task", "make_task", "register_task"]


def make_task(cfg: BenchConfig) -> Task:
    """The task `cfg.task` names, bound to the run's config (one line naming the valid tasks if unknown)."""
    if cfg.task not in TASKS:
        raise ValueError(f"unknown task {cfg.task!r}; valid: {', '.join(TASKS)}")
    return TASKS[cfg.task](cfg)

# The embedded zoo's kits for the inpaint and cascade tasks register themselves (bench.tasks.kits); they
# are imported after the tasks, whose protocols they implement.
import bench.zoo.cascade  # noqa: E402,F401
import bench.zoo.editing  # noqa: E402,F401

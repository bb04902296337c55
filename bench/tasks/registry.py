"""The task registry: each task module registers its class under the name `--task` takes."""

from __future__ import annotations

from typing import Callable, TypeVar

TASKS: dict[str, type] = {}
T = TypeVar("T", bound=type)


def register_task(name: str) -> Callable[[T], T]:
    """Class decorator: `@register_task("inpaint")` makes the class what `--task inpaint` runs."""
    def add(cls: T) -> T:
        if name in TASKS:
            raise ValueError(f"task {name!r} is registered twice ({TASKS[name].__name__} and {cls.__name__})")
        cls.name = name
        TASKS[name] = cls
        return cls
    return add

"""What a model family ships for a task beyond text-to-image: GLIDE's inpainting model and the images to
edit (`--task inpaint`), the upsampler and evaluators at its resolution (`--task cascade`).

A family's glue registers its kit for a task under its model source's prefix (`register_kit`); a task asks
`kit_for(task, spec)` and never imports the family's modules, so the tasks run on any family that ships
the kit (the embedded zoo's are in bench/zoo/editing.py and bench/zoo/cascade.py).
"""

from __future__ import annotations

from typing import TypeVar

from guidance.models import source_of

KITS: dict[tuple[str, str], object] = {}  # (task, model source prefix) -> that family's kit for the task
K = TypeVar("K")


def register_kit(task: str, prefix: str, kit: K) -> K:
    """Make `kit` what `--task task` uses for models whose `--model` spec starts with `prefix`."""
    if (task, prefix) in KITS and KITS[task, prefix] is not kit:
        raise ValueError(f"a {task} kit for model source {prefix!r} is registered twice")
    KITS[task, prefix] = kit
    return kit


def kit_for(task: str, spec: str, what: str) -> object:
    """The kit of `--model spec`'s family for `task`, or one line saying which families ship one
    (`what`: what the kit holds, for that line)."""
    source, _ = source_of(spec)
    kit = KITS.get((task, source.prefix))
    if kit is None:
        families = [p or "the zoo (no prefix)" for t, p in KITS if t == task]
        raise ValueError(f"--task {task} needs {what}, which --model {spec} ({source.description}) does not ship; "
                         f"model sources with one: {', '.join(families) or 'none'}")
    return kit

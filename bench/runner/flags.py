"""The command line's one declaration: a BenchConfig field carries its flag in its metadata (help, how
its text is read, switch kind, the tasks it applies to), and `python -m bench run`'s parser is generated
from it (bench.runner.cli); `invoke bench`'s parameters are generated from that parser (tasks.py)."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, Field, dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Flag:
    """How a config field appears on the command line. Every flag defaults to unset (None), which leaves
    the field to the preset or the field's own default."""

    help: str
    type: Callable[[str], Any] | None = None  # argparse's type (its error names the flag)
    parse: Callable[[str], Any] | None = None  # text -> value after parsing (its ValueError is one line)
    switch: str | None = None  # "on": a bare --flag sets True; "on-off": --flag / --no-flag
    choices: tuple[str, ...] | None = None
    tasks: tuple[str, ...] = ()  # the tasks the option applies to (empty: every task)


def option(default: Any = MISSING, *, factory: Callable[[], Any] | None = None, **flag: Any) -> Any:
    """A dataclass field with its flag: `option(20, help="...")`."""
    metadata = {"flag": Flag(**flag)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def flag_of(f: Field) -> Flag | None:
    return f.metadata.get("flag")


def flag_name(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def add_field_arguments(parser: argparse.ArgumentParser, config_fields: tuple[Field, ...],
                        preset_fields: set[str]) -> None:
    """One argument per flagged field, in field order; the help ends with the default it falls back to."""
    for f in config_fields:
        flag = flag_of(f)
        if flag is None:
            continue
        default = f.default_factory() if f.default_factory is not MISSING else f.default  # type: ignore[misc]
        fallback = "the preset's" if f.name in preset_fields else shown(default)
        notes = ([f"default: {fallback}"] if fallback else []) + ([f"task: {', '.join(flag.tasks)}"] if flag.tasks else [])
        text = f"{flag.help} ({'; '.join(notes)})" if notes else flag.help
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": text}
        if flag.switch == "on":
            kwargs["action"] = "store_true"
        elif flag.switch == "on-off":
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs.update(type=flag.type, choices=flag.choices)
        parser.add_argument(flag_name(f.name), **kwargs)


def shown(default: Any) -> str:
    """A default as a user would type it ('' for none: no default is shown)."""
    if default is None or default is False or default == {} or default == []:
        return ""
    return ",".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)


def field_values(args: argparse.Namespace, config_fields: tuple[Field, ...]) -> dict[str, Any]:
    """The fields the command line set (a switch left off and a flag not given stay unset: None),
    each flag's `parse` applied."""
    values: dict[str, Any] = {}
    for f in config_fields:
        value, flag = getattr(args, f.name, None), flag_of(f)
        if value is None or value is False and flag is not None and flag.switch == "on":
            continue
        if flag is not None and flag.parse is not None:
            value = flag.parse(value)  # an empty list (--seeds '') is refused by its parser, not taken as unset
        values[f.name] = value
    return values


def number_list(text: str, kind: type, bad: str, empty: str) -> list:
    """A comma-separated list of `kind` (blank items skipped), at least one; `bad` / `empty` are the one-line
    errors for an unreadable or an empty list."""
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(bad) from None
    if not values:
        raise ValueError(empty)
    return values


def parse_floats(text: str, flag: str = "--scales") -> list[float]:
    """'1,3,6' -> [1.0, 3.0, 6.0]; a ValueError (one line, caught by `main`) names the flag."""
    return number_list(text, float, f"bad {flag} {text!r}: not a comma-separated number list; use e.g. 1,3,6",
                       f"{flag} {text!r} lists no numbers; use e.g. 1,3,6")


def parse_seeds(text: str) -> list[int]:
    """'0,1,2': whole numbers only (1.5 is not silently run as seed 1), at least one."""
    return number_list(text, int, f"bad --seeds {text!r}: seeds are whole numbers; use e.g. 0,1,2",
                       f"--seeds {text!r} lists no seeds; use e.g. 0,1,2 (or leave the flag out for the preset's)")


def parse_scales(text: str) -> dict[str, list[float]] | list[float]:
    """'1,3,6' (for every guidance) or 'cfg=1,3,6;clip=1,5'."""
    if "=" not in text:
        try:
            return parse_floats(text)
        except ValueError:
            raise ValueError(f"bad --scales {text!r}; use '1,3,6' for every method or 'cfg=1,3,6;clip=1,5'") from None
    out: dict[str, list[float]] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        name, _, values = part.partition("=")
        name = name.strip()
        if name in out:
            raise ValueError(f"--scales {text!r} gives {name!r} twice; list all its scales once, e.g. {name}=1,3,6")
        out[name] = parse_floats(values, f"--scales for {name!r}")
    return out


def parse_prompt_limit(text: str) -> int | str:
    """A count (checked by BenchConfig.validate), or 'all': every prompt of the set, whatever the preset's limit."""
    if text.strip().lower() == "all":
        return "all"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad --prompt-limit {text!r}; use a positive count or 'all'") from None


def comma_list(text: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']: comma-separated names as given."""
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_repaint(text: str) -> list[int]:
    """'5,2': RePaint's jump length and resample count."""
    try:
        jump, resample = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"bad --repaint {text!r}: give jump length and resample count, e.g. 5,2") from None
    return [jump, resample]

"""Prompt-set loaders: the prompts a benchmark run samples from.

Users bring prompt sets in the formats the public benchmarks ship in (T2I-CompBench ``.txt``,
PartiPrompts ``.tsv``, COCO-30k and DrawBench ``.csv``, GenEval ``.jsonl``, COCO ``captions_*.json``,
HPDv2's benchmark ``<style>.json``, ImageReward's ``benchmark-prompts.json``); this
module turns each into one :class:`PromptSet`, keeping categories and other columns so results
can be broken down per category. A malformed file raises :class:`PromptFileError` naming the
file and line, so a typo in a 30,000-row file can be found without a debugger.
Built-in sets (e.g. the emoji classes of the zoo models) are added by other modules through
:func:`register_builtin`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import islice
from pathlib import Path

__all__ = [
    "Prompt",
    "PromptSet",
    "PromptFileError",
    "SUPPORTED_SUFFIXES",
    "load_prompt_file",
    "register_builtin",
    "builtin_prompt_sets",
    "load_prompts",
]

# Column / key names, matched case-insensitively, in order of preference.
PROMPT_KEYS = ("prompt", "text", "caption", "prompts")  # "Prompts": DrawBench's CSV header
CATEGORY_KEYS = ("category", "tag")  # "tag" is GenEval's category
LABEL_KEY = "label"
NEGATIVE_KEYS = ("negative_prompt", "negative")  # a per-prompt negative prompt for CFG


@dataclass(frozen=True)
class Prompt:
    """One text prompt, plus what is known about it for guidance and per-category scores."""

    text: str
    label: int | None = None  # class index for classifier guidance (emoji identity), if known
    category: str | None = None
    meta: Mapping[str, str] = field(default_factory=dict)  # other columns, for breakdowns
    negative: str | None = None  # replaces CFG's unconditional branch for this prompt (None: the null caption)


@dataclass(frozen=True)
class PromptSet:
    """An ordered, named set of prompts and where it came from (recorded in run reports)."""

    name: str
    prompts: tuple[Prompt, ...]
    source: str  # a file path, or "builtin:NAME"

    @property
    def has_labels(self) -> bool:
        """Whether every prompt has a class label, as classifier guidance needs."""
        return bool(self.prompts) and all(p.label is not None for p in self.prompts)

    def texts(self) -> list[str]:
        """The prompt texts alone, in order, as text encoders take them."""
        return [p.text for p in self.prompts]

    def __len__(self) -> int:
        return len(self.prompts)


class PromptFileError(ValueError):
    """A prompt file that cannot be used; the message is ``"<path>:<line>: <problem>; <fix>"``."""

    def __init__(self, path: str | Path, line: int, problem: str, fix: str) -> None:
        self.path = str(path)
        self.line = line
        super().__init__(f"{path}:{line}: {problem}; {fix}")


# --------------------------------------------------------------------------- file formats


def _read_text(path: Path) -> str:
    """Decode the file as UTF-8 (a BOM is allowed), pointing at the line of any bad byte."""
    try:
        data = path.read_bytes()
    except PermissionError:
        raise PromptFileError(path, 0, "cannot be read (permission denied)",
                              "make it readable (chmod a+r) or pass a copy you can read") from None
    except IsADirectoryError:
        raise PromptFileError(path, 0, "is a directory", "pass a prompt file (.txt, .csv, .tsv, .jsonl, .json)") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise PromptFileError(
            path, line, f"not valid UTF-8 (byte {data[e.start]:#04x})", "re-save the file as UTF-8"
        ) from None


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) pairs, accepting both LF and CRLF endings."""
    for number, line in enumerate(text.split("\n"), start=1):
        yield number, line.rstrip("\r")


def _find_key(keys: list[str], wanted: tuple[str, ...]) -> str | None:
    """The first of ``keys`` matching ``wanted`` (case-insensitive, in ``wanted``'s order)."""
    by_lower = {k.strip().lower(): k for k in reversed(keys)}  # first occurrence wins
    for name in wanted:
        if name in by_lower:
            return by_lower[name]
    return None


def _parse_label(value: object, path: Path, line: int) -> int | None:
    """A class index from a cell or JSON value; empty / null means unlabelled."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    label = None
    if isinstance(value, int) and not isinstance(value, bool):
        label = value
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        label = int(value)
    if label is None or label < 0:
        raise PromptFileError(
            path, line, f"label {value!r} is not a non-negative integer",
            "use the class index (0, 1, ...) or leave the label empty",
        )
    return label


def _record_to_prompt(record: Mapping[str, object], prompt_key: str, path: Path, line: int) -> Prompt:
    """Build a Prompt from one CSV row or JSON object; columns not used go to ``meta``."""
    keys = list(record)
    category_key = _find_key(keys, CATEGORY_KEYS)
    label_key = _find_key(keys, (LABEL_KEY,))
    negative_key = _find_key(keys, NEGATIVE_KEYS)
    raw_text = record[prompt_key]
    text = raw_text.strip() if isinstance(raw_text, str) else ""
    if not text:
        raise PromptFileError(
            path, line, f"empty or non-text prompt in {prompt_key!r}", "fill in the prompt or delete the row"
        )
    category = record.get(category_key) if category_key else None
    meta = {
        k: v if isinstance(v, str) else json.dumps(v)
        for k, v in record.items()
        if k not in (prompt_key, category_key, label_key, negative_key)
    }
    negative = record.get(negative_key) if negative_key else None
    if negative is not None and not isinstance(negative, str):
        raise PromptFileError(path, line, f"negative prompt {negative!r} is not text",
                              "write the negative prompt as a string, or leave it empty for none")
    return Prompt(
        text=text,
        label=_parse_label(record[label_key], path, line) if label_key else None,
        category=(str(category).strip() or None) if category is not None else None,  # DrawBench: "Gary Marcus et al. "
        meta=meta,
        negative=(negative.strip() or None) if negative is not None else None,
    )


def _iter_txt(path: Path, text: str) -> Iterator[Prompt]:
    """One prompt per non-blank line; the file stem is the category (T2I-CompBench style)."""
    for _, line in _lines(text):
        if line.strip():
            yield Prompt(text=line.strip(), category=path.stem)


def _iter_delimited(path: Path, text: str, delimiter: str) -> Iterator[Prompt]:
    """A header row naming a prompt column, then one prompt per row (PartiPrompts, COCO-30k).

    CSV fields may be quoted; TSV has no quoting (PartiPrompts' `"G I G G L E" painted ...` keeps its quotes).
    """
    tsv = delimiter == "\t"
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
    header = next(reader, None)
    if not header:
        return
    prompt_key = _find_key(header, PROMPT_KEYS)
    if prompt_key is None:
        raise PromptFileError(
            path, 1, f"no prompt column in header (found {', '.join(map(repr, header))})",
            f"name the prompt column one of {', '.join(PROMPT_KEYS)}",
        )
    while True:
        line = reader.line_num + 1  # where the next record starts
        try:
            row = next(reader, None)
        except csv.Error as e:
            raise PromptFileError(path, reader.line_num, f"bad CSV ({e})", "check the quoting") from None
        if row is None:
            return
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise PromptFileError(
                path, line, f"{len(row)} fields but the header has {len(header)}",
                ("a TSV field cannot hold a tab" if tsv else "quote fields that contain the delimiter")
                + ", and check the suffix matches the delimiter",
            )
        yield _record_to_prompt(dict(zip(header, row)), prompt_key, path, line)


def _iter_jsonl(path: Path, text: str) -> Iterator[Prompt]:
    """One JSON object with a "prompt" key per line (GenEval metadata)."""
    for number, line in _lines(text):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise PromptFileError(path, number, f"invalid JSON ({e.msg})", "write one JSON object per line") from None
        except RecursionError:
            raise PromptFileError(path, number, "JSON nested too deeply to read", "write one flat JSON object per line") from None
        if not isinstance(record, dict):
            raise PromptFileError(
                path, number, f"expected a JSON object, got {type(record).__name__}",
                'write objects like {"prompt": "..."}',
            )
        prompt_key = _find_key(list(record), PROMPT_KEYS)
        if prompt_key is None:
            raise PromptFileError(
                path, number, f"no \"prompt\" key (found {', '.join(map(repr, record)) or 'none'})",
                'add a "prompt" key',
            )
        yield _record_to_prompt(record, prompt_key, path, number)


def _iter_json(path: Path, text: str) -> Iterator[Prompt]:
    """A ``.json`` prompt file: a list of prompt strings (HPDv2's benchmark files), or COCO captions."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise PromptFileError(path, e.lineno, f"invalid JSON ({e.msg})", "fix the JSON syntax") from None
    except RecursionError:
        raise PromptFileError(path, 1, "JSON nested too deeply to read", "use a COCO captions file's flat layout") from None
    return _iter_json_list(path, doc) if isinstance(doc, list) else _iter_coco_json(path, doc)


def _iter_json_list(path: Path, doc: list) -> Iterator[Prompt]:
    """A JSON list of prompts. Strings: HPDv2's benchmark prompts (``anime.json``, ``concept-art.json``,
    ``paintings.json``, ``photo.json``, as hpsv2's evaluation reads them), the file stem being the category
    (the style). Objects with a prompt key: ImageReward's ``benchmark-prompts.json`` ({"id", "prompt"}),
    read as JSONL rows are."""
    for i, item in enumerate(doc):
        if isinstance(item, dict):
            prompt_key = _find_key(list(item), PROMPT_KEYS)
            if prompt_key is not None:
                yield _record_to_prompt(item, prompt_key, path, 1)
                continue
        elif isinstance(item, str) and item.strip():
            yield Prompt(text=item.strip(), category=path.stem)
            continue
        raise PromptFileError(path, 1, f"item {i} of the JSON list is not prompt text ({str(item)[:40]!r})",
                              f"give a list of prompt strings or of objects with a {PROMPT_KEYS[0]!r} key, "
                              f"or COCO captions")


def _iter_coco_json(path: Path, doc: object) -> Iterator[Prompt]:
    """Official COCO ``captions_*.json``: one prompt per annotation, image id kept in meta."""
    if not isinstance(doc, dict) or not isinstance(doc.get("annotations"), list):
        raise PromptFileError(
            path, 1, 'not a COCO captions file (no "annotations" list)',
            'use {"images": [...], "annotations": [{"image_id", "id", "caption"}]}, a list of prompt strings, '
            'or .jsonl/.csv/.txt',
        )
    images = doc.get("images") or []
    if not isinstance(images, list):
        raise PromptFileError(path, 1, f'"images" is a {type(images).__name__}, not a list',
                              'give "images" as [{"id", "file_name"}, ...] or leave it out')
    # ids are numbers or strings in COCO; anything else cannot key a caption's image, so it is skipped
    file_names = {
        img["id"]: img.get("file_name")
        for img in images
        if isinstance(img, dict) and img.get("file_name") and isinstance(img.get("id"), (int, str))
    }
    for i, ann in enumerate(doc["annotations"]):
        caption = ann.get("caption") if isinstance(ann, dict) else None
        if not isinstance(caption, str) or not caption.strip():
            # The JSON module keeps no positions; official files are one line anyway.
            raise PromptFileError(
                path, 1, f"annotations[{i}] has no caption text", 'give each annotation a "caption" string'
            )
        meta = {k: str(ann[k]) for k in ("image_id", "id") if k in ann}
        if isinstance(ann.get("image_id"), (int, str)) and ann["image_id"] in file_names:
            meta["file_name"] = str(file_names[ann["image_id"]])
        yield Prompt(text=caption.strip(), meta=meta)


_READERS: dict[str, Callable[[Path, str], Iterator[Prompt]]] = {
    ".txt": _iter_txt,
    ".csv": partial(_iter_delimited, delimiter=","),
    ".tsv": partial(_iter_delimited, delimiter="\t"),
    ".jsonl": _iter_jsonl,
    ".json": _iter_json,
}
SUPPORTED_SUFFIXES = tuple(_READERS)


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of prompts or None, got {limit}")


def load_prompt_file(path: str | Path, limit: int | None = None) -> PromptSet:
    """Load a prompt file, the format chosen by its suffix; ``limit`` keeps the first N prompts.

    Reading stops after ``limit`` prompts, so rows beyond it are not validated.
    """
    _check_limit(limit)
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise PromptFileError(
            path, 1, f"unknown prompt file type {path.suffix or '(no suffix)'!r}",
            f"use one of {', '.join(SUPPORTED_SUFFIXES)}",
        )
    text = _read_text(path)
    prompts = tuple(islice(reader(path, text), limit))
    if not prompts:
        problem = "file is empty" if not text else "file has no prompts"
        raise PromptFileError(path, 1, problem, "add at least one prompt")
    return PromptSet(name=path.stem, prompts=prompts, source=str(path))


# --------------------------------------------------------------------------- built-in sets

_BUILTINS: dict[str, tuple[Callable[[], PromptSet], str]] = {}


def register_builtin(name: str, factory: Callable[[], PromptSet], description: str) -> None:
    """Make a prompt set loadable by ``name``; the factory runs lazily, on each load."""
    if not name or name != name.strip():
        raise ValueError(f"builtin prompt set name must be non-empty without surrounding spaces, got {name!r}")
    if name in _BUILTINS:
        raise ValueError(f"builtin prompt set {name!r} is already registered")
    _BUILTINS[name] = (factory, description)


def builtin_prompt_sets() -> dict[str, str]:
    """Registered builtin names and their one-line descriptions (for ``--help`` and errors)."""
    return {name: description for name, (_, description) in sorted(_BUILTINS.items())}


def load_prompts(name_or_path: str, limit: int | None = None) -> PromptSet:
    """Load a builtin prompt set by name, else a prompt file by path (builtin names win)."""
    _check_limit(limit)
    if name_or_path in _BUILTINS:
        prompt_set = _BUILTINS[name_or_path][0]()
        return replace(prompt_set, prompts=prompt_set.prompts[:limit])
    path = Path(name_or_path)
    if path.is_file():
        return load_prompt_file(path, limit)
    names = ", ".join(builtin_prompt_sets()) or "none registered"
    raise ValueError(
        f"unknown prompt set {name_or_path!r}: not a builtin ({names}) and no file at that path; "
        f"pass a builtin name or the path of an existing {'/'.join(SUPPORTED_SUFFIXES)} file"
    )

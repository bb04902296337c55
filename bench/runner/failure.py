"""How the command-line entry points end on an error: one line on stderr, never a raw traceback.

Bad input (a ValueError or FileNotFoundError naming the flag and the fix; argparse's own refusals) exits
with BAD_INPUT. Any other exception is a defect of the suite: its one-line summary names the file the
full traceback was written to (the run directory's error.log once the run has one, else a temporary
file), and the process exits with INTERNAL_ERROR.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn

from safetensors import SafetensorError

BAD_INPUT = 2  # the input was refused (what argparse also exits with)
INTERNAL_ERROR = 3  # a defect: the traceback is in the file the message names
ERROR_LOG = "error.log"
LIBRARY_ERRORS = (OSError, RuntimeError, OverflowError, KeyError, IndexError, TypeError, EOFError, SafetensorError,
                  RecursionError, MemoryError)

_run_dir: Path | None = None  # where an internal error's traceback goes, once a run directory exists


def note_run_dir(run_dir: Path) -> None:
    """The run directory of this process's run: an internal error writes its traceback there."""
    global _run_dir
    _run_dir = Path(run_dir)


def one_line(err: BaseException) -> str:
    """The error's message on one line (a library's multi-line message joined), or its type's name."""
    text = " ".join(part.strip() for part in str(err).splitlines() if part.strip())
    return text or type(err).__name__


def write_traceback(err: BaseException) -> Path:
    """The full traceback, in the run directory's error.log (appended) or in a new temporary file."""
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    if _run_dir is not None:
        try:
            path = _run_dir / ERROR_LOG
            with path.open("a", encoding="utf-8") as log:
                log.write(text + "\n")
            return path
        except OSError:
            pass  # an unwritable run directory: a temporary file instead
    with tempfile.NamedTemporaryFile("w", prefix="guidance-bench-error-", suffix=".log", delete=False,
                                     encoding="utf-8") as log:
        log.write(text)
        return Path(log.name)


def report(err: BaseException) -> tuple[str, int]:
    """Print the one line for `err`; returns it and the exit code."""
    if isinstance(err, (ValueError, FileNotFoundError)):
        line, code = f"error: {one_line(err)}", BAD_INPUT
    else:
        line, code = (f"internal error: {type(err).__name__}: {one_line(err)[:300]} (a defect of the suite; full "
                      f"traceback in {write_traceback(err)})"), INTERNAL_ERROR
    print(line, file=sys.stderr)
    return line, code


class Exit(SystemExit):
    """The exit of a `guarded(..., raises=True)` entry point: its code, and the line it printed as its text."""

    def __init__(self, line: str, code: int) -> None:
        super().__init__(code)
        self.line = line

    def __str__(self) -> str:
        return self.line


def guarded(main: Callable[..., int | None], raises: bool = False) -> Callable[..., int]:
    """An entry point's main(argv) that ends in one line and an exit code instead of a traceback: the code
    is returned, or with `raises` raised as an Exit (for mains whose callers expect SystemExit)."""
    @functools.wraps(main)
    def wrapped(*args: Any, **kwargs: Any) -> int:
        global _run_dir
        _run_dir = None
        try:
            return main(*args, **kwargs) or 0
        except (SystemExit, KeyboardInterrupt):
            raise
        except Exception as err:  # noqa: BLE001 - every other exception becomes its one line
            line, code = report(err)
            if raises:
                raise Exit(line, code) from None
            return code

    return wrapped


class Parser(argparse.ArgumentParser):
    """argparse, refusing in one line ("error: ...") instead of its usage block and message."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(BAD_INPUT)


@contextlib.contextmanager
def loading(what: str, path: str | Path, fix: str) -> Iterator[None]:
    """A library's error while loading `what` from `path` (OSError, RuntimeError, OverflowError, ...) becomes
    one ValueError naming both; errors already phrased for the user (ValueError) pass as they are."""
    try:
        yield
    except ValueError:
        raise
    except LIBRARY_ERRORS as err:
        raise ValueError(f"{what} {path} cannot be loaded ({type(err).__name__}: {one_line(err)[:200]}); {fix}") from err

"""How entry points end on an error (bench.runner.failure): one line, exit 2 for bad input, 3 and a traceback file otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.runner.failure import BAD_INPUT, ERROR_LOG, INTERNAL_ERROR, Exit, Parser, guarded, loading, note_run_dir


def fails_with(err: BaseException, run_dir: Path | None = None):
    def main(argv: list[str] | None = None) -> int:
        if run_dir is not None:
            note_run_dir(run_dir)
        raise err

    return main


def test_bad_input_is_one_line_and_exit_two(capsys):
    assert guarded(fails_with(ValueError("--steps 0 is out of range\n(second line)")))([]) == BAD_INPUT
    assert capsys.readouterr().err == "error: --steps 0 is out of range (second line)\n"


def test_an_internal_error_names_the_file_holding_its_traceback(capsys):
    assert guarded(fails_with(RuntimeError("boom")))([]) == INTERNAL_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("internal error: RuntimeError: boom") and "Traceback" not in err
    log = Path(err.rsplit("full traceback in ", 1)[1].strip(" )\n"))
    assert "Traceback" in log.read_text() and "RuntimeError: boom" in log.read_text()
    log.unlink()


def test_an_internal_error_after_the_run_directory_exists_goes_to_its_error_log(tmp_path, capsys):
    assert guarded(fails_with(KeyError("x"), tmp_path))([]) == INTERNAL_ERROR
    assert str(tmp_path / ERROR_LOG) in capsys.readouterr().err
    assert "KeyError" in (tmp_path / ERROR_LOG).read_text()


def test_raising_entry_points_exit_with_the_code_and_their_line(capsys):
    with pytest.raises(Exit) as exit_:
        guarded(fails_with(ValueError("bad --x")), raises=True)([])
    assert exit_.value.code == BAD_INPUT and str(exit_.value) == "error: bad --x"


def test_a_library_error_while_loading_names_what_and_the_file():
    with pytest.raises(ValueError, match=r"^--model /m/unet.safetensors cannot be loaded \(OverflowError: too big\); fix it$"):
        with loading("--model", "/m/unet.safetensors", "fix it"):
            raise OverflowError("too big")
    with pytest.raises(ValueError, match="^already phrased$"):
        with loading("--model", "/m", "fix it"):
            raise ValueError("already phrased")


def test_argparse_refusals_are_one_line(capsys):
    parser = Parser(prog="prog")
    parser.add_argument("--steps", type=int)
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--steps", "x"])
    assert exit_.value.code == BAD_INPUT
    assert capsys.readouterr().err == "error: argument --steps: invalid int value: 'x' (see prog --help)\n"

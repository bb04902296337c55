"""`invoke bench` (tasks.py) takes every flag of `python -m bench run`, with the same default and a help
line, and turns what it is given back into the same `python -m bench run` arguments."""

from __future__ import annotations

import argparse
import importlib.util

import pytest

from bench.runner.cli import config_from_args, run_parser
from tests.paths import ROOT

pytest.importorskip("invoke")


@pytest.fixture(scope="module")
def tasks():
    spec = importlib.util.spec_from_file_location("tasks", ROOT / "tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_flags() -> list[argparse.Action]:
    return [a for a in run_parser()._actions if a.option_strings and a.dest != "help"]


def test_every_run_flag_is_an_invoke_bench_option_with_the_same_default(tasks):
    arguments = {arg.name: arg for arg in tasks.bench.get_arguments()}
    flags = run_flags()
    assert {"cascade_features", "cudnn_benchmark", "edit_captions", "inpaint_model", "upsample_steps",
            "upsampler"} <= {a.dest for a in flags}
    for action in flags:
        assert action.dest in arguments, action.option_strings[0]
        assert arguments[action.dest].default == action.default, action.dest
        assert arguments[action.dest].help, f"{action.option_strings[0]} has no help in invoke bench"
    assert set(arguments) == {a.dest for a in flags}


def sample_value(action: argparse.Action) -> object:
    """A value other than the default for each kind of flag, as a user of invoke would give it."""
    if isinstance(action, argparse.BooleanOptionalAction):
        return "off"
    if action.nargs == 0:
        return True
    if action.choices:
        return next(c for c in action.choices if c != action.default)
    return {"scales": "cfg=1,2", "seeds": "4,5", "prompt_limit": "all", "guidance": "cfg,apg",
            "metrics": "fid,kid", "features": "domain", "shard": "1/2"}.get(action.dest, "7")


def test_invoke_bench_passes_every_option_through_unchanged(tasks):
    given = {a.dest: sample_value(a) for a in run_flags()}
    argv = tasks._bench_argv(given)
    parsed = run_parser().parse_args(argv.split())
    for action in run_flags():
        expected = False if given[action.dest] == "off" else given[action.dest]
        assert getattr(parsed, action.dest) == (action.type(expected) if action.type and isinstance(expected, str)
                                                else expected), action.dest
    assert tasks._bench_argv({}) == ""  # nothing given: every default, as `python -m bench run` alone


def test_invoke_bench_defaults_make_the_same_config(tasks):
    defaults = {arg.name: arg.default for arg in tasks.bench.get_arguments()}
    argv = tasks._bench_argv(defaults).split()
    assert config_from_args(run_parser().parse_args(argv)) == config_from_args(run_parser().parse_args([]))


def test_an_on_off_switch_takes_only_on_off_or_auto(tasks):
    assert tasks._bench_argv({"channels_last": "on", "half_weights": "off", "cudnn_benchmark": "auto"}) == \
        "--channels-last --no-half-weights"
    with pytest.raises(SystemExit, match="use on, off or auto"):
        tasks._bench_argv({"channels_last": "yes"})

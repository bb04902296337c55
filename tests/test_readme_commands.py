"""Every command of the README runs, so none can break unnoticed.

The main job (the README's first block) runs as written in .ci/run, on a fresh-machine namespace, and
so do `invoke test` and `invoke regress`. Every other `invoke` line of the README is parsed here by
invoke's own parser into its task's options, shrunk to a smoke size (SMOKE), and run through the task:
the task's commands are recorded and run in this process (bench.runner.cli, bench.tools.perf), the per-step
benchmarks in a pytest subprocess, each benchmark once.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from invoke import Collection, Context
from invoke.parser import Parser

import tasks
from bench.runner import cli
from bench.tools import perf
from scripts import make_tiny_pipeline
from tests.paths import FIXTURES, ROOT

README = ROOT / "README.md"
PROMPT_FIXTURES = FIXTURES / "prompts"
RUN_BY_CI = ("invoke bench --guidance cfg", "invoke test", "invoke regress")  # in .ci/run, as written
# options every smoke run of `invoke bench` takes in place of the README's sizes
SMOKE = {"preset": "tiny", "prompt_limit": "2", "seeds": "0,1", "steps": "2", "bootstrap": "0"}
PERF_SMOKE = ["--batch", "2", "--steps", "2", "--repeats", "1"]


def readme_commands() -> list[str]:
    """The shell commands of the README's bash blocks: comments dropped, `&&` chains split."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.splitlines():
            line = line.split(" # ")[0].strip()
            commands += [part.strip() for part in line.split("&&") if part.strip()]
    return commands


def needs_outside_files(command: str) -> bool:
    """Installs, and the diffusers lines that name weights only a user has (/models/...)."""
    return "pip install" in command or "/models/" in command


TINY_PIPELINES = "/tmp/tiny-"  # where the README's tiny-pipeline lines write (tiny-sd, tiny-flux); a temporary folder here
# in README order (so `invoke report` compares two runs made before it), plus the list the README names in a comment
SMOKED = [c for c in readme_commands() if c not in RUN_BY_CI and not needs_outside_files(c)] + ["invoke bench --sampler list"]


def test_every_readme_command_is_run_somewhere() -> None:
    """Every README command is smoked below unless CI runs it as written or it needs a user's files; the
    commands left to CI must still be in the README, and CI must run them."""
    commands = readme_commands()
    assert all(command in commands for command in RUN_BY_CI), [c for c in RUN_BY_CI if c not in commands]
    assert len(SMOKED) > 5  # the README's own commands, not only the --sampler list this test adds
    ci = (ROOT / ".ci" / "run").read_text()
    assert "readme_main_job" in ci and "invoke test" in ci and "invoke regress" in ci


def parse(command: str) -> tuple[str, dict]:
    """invoke's parse of `invoke TASK --flag value ...`: the task name and its keyword arguments."""
    collection = Collection.from_module(tasks)
    found = Parser(contexts=collection.to_contexts()).parse_argv(shlex.split(command)[1:])
    assert len(found) == 1, f"{command}: one task expected"
    return found[0].name, {arg.name: arg.value for arg in found[0].args.values() if arg.got_value}


class Recorder(Context):
    """A context that records the commands a task would run."""

    def __init__(self) -> None:
        super().__init__()
        self.commands: list[list[str]] = []

    def run(self, command: str, **kwargs: object) -> None:  # noqa: ARG002
        self.commands.append(shlex.split(command))


def run_recorded(argv: list[str], cwd: Path) -> None:
    """One recorded `python -m MODULE ...` command, in this process where the module has a main."""
    assert argv[1] == "-m", argv
    module, args = argv[2], argv[3:]
    if module == "bench":
        assert cli.main(args) == 0, args
    elif module == "bench.tools.perf":
        assert perf.main(args + PERF_SMOKE) == 0, args
    elif module == "pytest":
        args = [a for a in args if a not in ("--benchmark-enable", "--benchmark-autosave")] + ["--benchmark-disable"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-m", "pytest", *args, "-x"], cwd=ROOT, env=env, capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    else:
        raise AssertionError(f"no smoke run for {module}")


def smoke(command: str, out: Path, run_id: str, runs: list[Path]) -> None:
    command = command.replace(TINY_PIPELINES, str(out / "tiny-"))
    if command.startswith("python -m scripts.make_tiny_pipeline"):
        assert make_tiny_pipeline.main(shlex.split(command)[3:]) == 0
        return
    name, options = parse(command)
    if name == "bench" and "list" not in (options.get("guidance"), options.get("sampler")):
        options.update(SMOKE, out=str(out), run_id=run_id, no_report=False)
        if options.get("prompts") == "parti.tsv":
            options["prompts"] = str(PROMPT_FIXTURES / "parti.tsv")
        if options.get("prompt_limit") == "all":
            options["prompt_limit"] = SMOKE["prompt_limit"]
        if options.get("task") in ("inpaint", "cascade"):
            options["seeds"] = "0"  # their variants multiply the cells; one seed set shows the command runs
        if options.get("guidance") == "all" and "scales" not in options:
            options["scales"] = "all=1"  # one cell per method (cfg-pp's lambda tops out at 1), not every grid
        runs.append(out / run_id)
    if name == "report":
        options["runs"] = ",".join(str(r) for r in runs[:2])
        options["out"] = str(out / "compared")
    recorder = Recorder()
    getattr(tasks, name)(recorder, **options)
    for argv in recorder.commands:
        run_recorded(argv, out)


@pytest.mark.slow(seconds=140)
def test_readme_commands_run_in_smoke_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runs: list[Path] = []
    for k, command in enumerate(SMOKED):
        try:
            smoke(command, tmp_path, f"smoke{k}", runs)
        except (AssertionError, SystemExit, ValueError, RuntimeError, OSError) as err:
            pytest.fail(f"README command {command!r}, in smoke form, failed: {type(err).__name__}: {err}")

"""The run directory's lock (bench.runner.lock): one holder per run directory and shard, stale locks taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bench.runner import cli
from bench.runner.distributed import Shard
from bench.runner.lock import RunLock, lock_path
from tests.paths import ROOT



def foreign_lock(run_dir: Path, pid: int, shard: Shard = Shard(), launch: str | None = None) -> Path:
    """A lock file as another process (pid on this host) would have written it."""
    path = lock_path(run_dir, shard)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "launch": launch or f"pid:x:{pid}"}))
    return path


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_lock_records_its_holder_and_is_released(tmp_path):
    lock = RunLock(tmp_path)
    with lock:
        held = json.loads(lock.path.read_text())
        assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
    assert not lock.path.exists()


def test_a_live_holder_refuses_a_second_process(tmp_path):
    foreign_lock(tmp_path, os.getppid())  # the parent process: alive, and not this launch
    with pytest.raises(ValueError, match=f"in use by process {os.getppid()} on {socket.gethostname()}"):
        RunLock(tmp_path).acquire()


def test_a_stale_lock_is_taken_over(tmp_path):
    path = foreign_lock(tmp_path, dead_pid())
    with RunLock(tmp_path):
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_a_lock_held_on_another_host_is_refused(tmp_path):
    path = lock_path(tmp_path, Shard())
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "launch": "pid:elsewhere:1"}))
    with pytest.raises(ValueError, match="in use by process 1 on elsewhere"):
        RunLock(tmp_path).acquire()


def test_distinct_shards_never_conflict_and_one_shard_twice_does(tmp_path):
    foreign_lock(tmp_path, os.getppid(), Shard(0, 2))
    with RunLock(tmp_path, Shard(1, 2)):
        pass
    with pytest.raises(ValueError, match="--shard 0/2"):
        RunLock(tmp_path, Shard(0, 2)).acquire()


def test_the_ranks_of_one_torchrun_launch_are_one_holder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "launch-1")
    rank1 = Shard(1, 2, launched=True)
    foreign_lock(tmp_path, os.getppid(), rank1, launch=RunLock(tmp_path, rank1).me["launch"])  # rank 0 took it
    lock = RunLock(tmp_path, rank1)
    lock.acquire()  # the same launch: no conflict, and rank 1 does not own (or remove) rank 0's lock
    assert not lock.owned
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "launch-2")
    with pytest.raises(ValueError, match="in use"):
        RunLock(tmp_path, rank1).acquire()


def test_a_second_run_on_a_held_run_directory_is_refused_before_sampling(tmp_path, capsys):
    """Another process holds reports/R (a real second process); `python -m bench run --run-id R` is refused in one
    line and samples nothing; once the holder is killed (its lock left behind), the lock is stale and taken."""
    run_dir = tmp_path / "R"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; from bench.runner.lock import "
                               "hold; d = Path(sys.argv[1]); (d / 'samples').mkdir(parents=True); hold(d); print('held', flush=True); time.sleep(120)", str(run_dir)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        argv = ["run", "--preset", "tiny", "--guidance", "none", "--seeds", "0", "--steps", "1", "--prompt-limit", "2",
                "--metrics", "clip_score", "--out", str(tmp_path), "--run-id", "R", "--no-report"]
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"in use by process {holder.pid}" in err[0], err
        assert not list((run_dir / "samples").iterdir())
    finally:
        holder.kill()
        holder.wait()
    assert lock_path(run_dir, Shard()).exists()  # killed hard: the lock stays, stale
    with RunLock(run_dir):
        pass


def test_a_lock_appears_with_its_holder_or_not_at_all(tmp_path, monkeypatch):
    """Another rank of the same torchrun launch read the lock between its creation and its content and took it
    for a stranger's: the lock must never exist without its holder."""
    seen = []
    real_link = os.link

    def link_and_look(src, dst):
        real_link(src, dst)
        seen.append(json.loads(Path(dst).read_text()))

    monkeypatch.setattr(os, "link", link_and_look)
    lock = RunLock(tmp_path)
    lock.acquire()
    assert seen == [lock.me] and lock.owned and not list(tmp_path.glob("*.draft"))
    lock.release()
    assert not (tmp_path / ".lock").exists()

"""One holder per run directory and shard: a second, unrelated process is refused while the first runs.

Two processes sampling into one run directory would both draw every missing sample and write one
throughput file (so its s/img would merge two processes' work). The lock is a file in the run
directory holding the holder's pid, host and launch: the ranks of one torchrun launch share a launch id
and so are one holder; independent `--shard K/N` jobs each lock their own shard. A lock whose process
is gone (its pid no longer runs on this host) is stale and taken over; one held on another host is
refused with the command that removes it once that job is known to be dead.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from bench.runner.distributed import Shard


def launch_id(shard: Shard) -> str:
    """What the processes of one launch share: torchrun's run id (or its rendezvous), else this process."""
    if shard.launched:
        run = os.environ.get("TORCHELASTIC_RUN_ID") or f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
        return f"torchrun:{socket.gethostname()}:{run}"
    return f"pid:{socket.gethostname()}:{os.getpid()}"


def lock_path(run_dir: Path, shard: Shard) -> Path:
    """The run's lock, one per independent shard (distinct --shard values never conflict)."""
    if shard.world > 1 and not shard.launched:
        return run_dir / f".lock-shard{shard.rank}of{shard.world}"
    return run_dir / ".lock"


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs on this host (a zombie, ended but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it runs, under another user
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (not Linux): signal 0 reached it


@dataclass
class RunLock:
    """`with RunLock(run_dir, shard):` holds the run directory (and shard) for this process's launch."""

    run_dir: Path
    shard: Shard = Shard()

    def __post_init__(self) -> None:
        self.path = lock_path(Path(self.run_dir), self.shard)
        self.me = {"pid": os.getpid(), "host": socket.gethostname(), "launch": launch_id(self.shard)}
        self.owned = False

    def holder(self) -> dict | None:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being written, or damaged: treated as held by an unknown process
        return data if isinstance(data, dict) else {}

    def acquire(self) -> None:
        for _ in range(3):  # a stale lock removed by another process between our steps: try again
            # written aside, then linked into place: the lock appears with its holder or not at all, so another
            # rank of this launch never reads a half-written lock as a stranger's
            draft = self.path.with_name(f"{self.path.name}.{self.me['pid']}.draft")
            draft.write_text(json.dumps(self.me))
            try:
                os.link(draft, self.path)
            except FileExistsError:
                if self._take_over(self.holder()):
                    continue
                return  # held by this launch (another rank of it)
            finally:
                draft.unlink(missing_ok=True)
            self.owned = True
            return
        raise ValueError(f"cannot take the lock {self.path}; another process keeps replacing it")

    def _take_over(self, held: dict | None) -> bool:
        """True when the lock was stale and is removed (the caller retries); False when this launch holds it."""
        if held is None:
            return True  # released meanwhile
        if held.get("launch") == self.me["launch"]:
            return False
        pid, host = held.get("pid"), held.get("host")
        if host == self.me["host"] and isinstance(pid, int) and not pid_alive(pid):
            self.path.unlink(missing_ok=True)
            return True
        what = f"--shard {self.shard.rank}/{self.shard.world} of " if self.path.name != ".lock" else ""
        raise ValueError(f"{what}run directory {self.run_dir} is in use by process {pid} on {host} (lock {self.path}); "
                         f"wait for it to finish, use another --run-id, or remove the lock if that process is dead")

    def release(self) -> None:
        if self.owned and (self.holder() or {}).get("pid") == self.me["pid"]:
            self.path.unlink(missing_ok=True)
        self.owned = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


_held: dict[Path, RunLock] = {}


def hold(run_dir: Path, shard: Shard = Shard()) -> RunLock:
    """Take the run directory's lock for this launch and keep it until the process ends (a process killed
    hard leaves it behind, and the next run finds it stale)."""
    lock = RunLock(Path(run_dir), shard)
    if lock.path in _held:
        return _held[lock.path]
    lock.acquire()
    _held[lock.path] = lock
    atexit.register(lock.release)
    return lock


def release(run_dir: Path) -> None:
    """Give up this process's locks on `run_dir` (a finished run: the directory may be resumed or merged)."""
    for path in [p for p in _held if p.parent == Path(run_dir)]:
        _held.pop(path).release()

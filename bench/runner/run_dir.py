"""The run directory: named, created, probed and locked before any sampling; its config.json (strict JSON,
what a resume must match to keep the saved samples) and manifest.json (versions, checksums, device)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.distributed as dist
import torchmetrics

from bench.runner.config import BenchConfig, misfit_fields
from bench.runner.distributed import Shard
from bench.runner.failure import note_run_dir, one_line
from bench.runner.lock import hold
from bench.runner.sampling import DTYPES
from bench.runner.scoring import scorer_label
from guidance.bundle import ModelBundle


def default_run_id(cfg: BenchConfig) -> str:
    """Time stamp and methods: up to three named, more counted (a name for --guidance all stays short)."""
    methods = "-".join(cfg.guidance) if len(cfg.guidance) <= 3 else f"{len(cfg.guidance)}-methods"
    return f"{datetime.now():%Y%m%d-%H%M%S}-{methods}"


def prepare_output(cfg: BenchConfig, shard: Shard = Shard()) -> Path:
    """Create and probe the run directory before any sampling, and hold its lock (bench.runner.lock) for this
    process's launch and shard until the process ends: a second run on the same directory is refused."""
    run_id = cfg.run_id or default_run_id(cfg)
    run_dir = Path(cfg.out) / run_id
    try:
        (run_dir / "samples").mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"  # one per process: torchrun ranks probe at once
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"output directory {run_dir} is not writable ({err.strerror}); choose another with --out") from err
    hold(run_dir, shard)
    note_run_dir(run_dir)
    return run_dir


def config_json(data: dict[str, Any]) -> str:
    """config.json's text: strict JSON (a NaN or infinity is refused, never written as invalid JSON)."""
    try:
        return json.dumps(data, indent=2, allow_nan=False)
    except ValueError as err:
        raise ValueError(f"the run's settings hold a non-finite number ({err}); give finite values") from None


def check_keeps_samples(run_dir: Path, cfg: BenchConfig) -> None:
    """Refuse a command that would replace the samples a run directory holds: the same --run-id with
    other sampling settings (or other weights) would redraw every cell over the old files. Everything
    else may change on a resume (prompts, their number, scales, seeds, batch size, device, speed-ups),
    and a directory that holds no samples yet (a run killed before its first batch) takes any settings."""
    samples = run_dir / "samples"
    if not (run_dir / "config.json").exists() or not samples.is_dir() or not any(samples.iterdir()):
        return
    before = load_run_config(run_dir)
    was_set, now_set = before.sample_settings(), cfg.sample_settings()
    changed = [f for f in cfg.SAMPLE_FIELDS if was_set[f] is not None and was_set[f] != now_set[f]]
    if not changed:
        return
    if changed == ["model_fingerprint"]:
        raise ValueError(f"{run_dir} holds samples of other weights (fingerprint {before.model_fingerprint}, now "
                         f"{cfg.model_fingerprint}): restore those weights, or sample afresh under a new --run-id")
    was = ", ".join(f"--{f} {was_set[f]}" for f in changed if f != "model_fingerprint")
    now = ", ".join(f"--{f} {now_set[f]}" for f in changed if f != "model_fingerprint")
    raise ValueError(f"{run_dir} holds samples made with {was}; this command's {now} would replace them: use a "
                     f"new --run-id (or --out), or repeat {was}")


def load_run_config(run_dir: Path) -> BenchConfig:
    """The settings a run directory was made with (its config.json), or a one-line error naming the fix."""
    path = run_dir / "config.json"
    if not run_dir.is_dir() or not path.is_file():
        raise ValueError(f"{run_dir} is not a run directory (no config.json); pass the directory the --shard jobs "
                         f"wrote into (--out/--run-id)")
    try:
        data = json.loads(path.read_text(), parse_constant=refuse_constant)
    except (ValueError, RecursionError) as err:
        raise ValueError(f"{path} is not valid JSON ({one_line(err)[:120]}); restore it (every shard job writes the "
                         f"same file)") from None
    known = {f.name for f in fields(BenchConfig)}
    unknown = sorted(set(data) - known) if isinstance(data, dict) else ["(not an object)"]
    if unknown:
        raise ValueError(f"{path} has keys this version does not know: {unknown}; it comes from another version of "
                         f"the suite or was edited: merge with that version, or remove them")
    misfits = misfit_fields(data)
    if misfits:
        raise ValueError(f"{path}: {', '.join(misfits)} hold(s) values of the wrong type ({json.dumps(data[misfits[0]])[:60]}); "
                         f"restore the file (every shard job writes the same one)")
    return BenchConfig(**data)


def refuse_constant(name: str) -> float:
    """json's hook for NaN and Infinity, which strict JSON (and config.json) never holds."""
    raise ValueError(f"{name} is not valid JSON")


def agree_on_run_id(cfg: BenchConfig, shard: Shard) -> BenchConfig:
    """All processes of a torchrun group write into the directory that rank 0 names."""
    if cfg.run_id is None and shard.launched:
        name = [default_run_id(cfg) if shard.is_main else None]
        dist.broadcast_object_list(name, src=0)
        cfg = cfg.with_overrides(run_id=name[0])
    if cfg.run_id is None and shard.world > 1:
        raise ValueError("independent shard jobs must share a run directory: pass the same --run-id to every job")
    return cfg


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def versions() -> dict[str, str]:
    return {"torch": torch.__version__, "torchmetrics": torchmetrics.__version__, "open_clip": open_clip.__version__,
            "python": platform.python_version()}


def write_manifest(cfg: BenchConfig, run_dir: Path, bundle: ModelBundle, device: torch.device, wall: float | None, n: int,
                   processes: int = 1) -> None:
    manifest = {
        "run_id": run_dir.name, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": cfg.to_dict(), "config_hash": cfg.config_hash(), "versions": versions(),
        "models": bundle.checksums(), "model_dir": bundle.source, "git_commit": git_commit(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "seeds": cfg.seeds, "samples_per_cell": n, "processes": processes,
        "acceleration": cfg.acceleration().describe(device, DTYPES[cfg.dtype]), "wall_time_s": None if wall is None else round(wall, 1), "clip_scorer": scorer_label(cfg.scoring()),
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))

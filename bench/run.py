"""The benchmark run: sample a guidance x scale x seed grid, save every batch, then score each cell.

Samples are written batch by batch under the run directory, keyed by each cell's hash and the
global sample index, so an interrupted run resumes where it stopped and ends with the same results
as an uninterrupted one. Metrics are computed from the saved samples.
"""

from __future__ import annotations

import json
import os
import glob
import platform
import re
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from bench.config import BenchConfig
from bench.distributed import Shard, init_from_env, local_device
from bench.prompts import PromptSet, load_prompts
from guidance.accelerate import autocast_context, checked_device
from guidance.guiders import Guidance, make_guidance
from guidance.protocols import Conditions
from guidance.sampling import sample
from guidance.zoo.load import Zoo, load_zoo

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Cell:
    guidance: str
    scale: float
    seed_set: int
    seed: int

    @property
    def name(self) -> str:
        from bench.report import format_scale

        return f"{self.guidance}_s{format_scale(self.scale)}_seed{self.seed_set}"


def grid_cells(cfg: BenchConfig) -> list[Cell]:
    """Every (guidance, scale, seed set) cell of a run, in run order."""
    return [Cell(g, s, k, seed) for g, scales in cfg.scale_grid().items() for s in scales
            for k, seed in enumerate(cfg.seeds)]


def load_prompt_set(cfg: BenchConfig) -> PromptSet:
    import bench.emoji_prompts  # noqa: F401  (registers the built-in sets)

    return load_prompts(cfg.prompts, limit=cfg.prompt_limit)


def prepare_output(cfg: BenchConfig) -> Path:
    """Create and probe the run directory before any sampling, so a bad --out fails at once."""
    run_id = cfg.run_id or f"{datetime.now():%Y%m%d-%H%M%S}-{'-'.join(cfg.guidance)}"
    run_dir = Path(cfg.out) / run_id
    try:
        (run_dir / "samples").mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"  # one per process: torchrun ranks probe at once
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"output directory {run_dir} is not writable ({err.strerror}); choose another with --out") from err
    return run_dir


def check_keeps_samples(run_dir: Path, cfg: BenchConfig) -> None:
    """Refuse a command that would replace the samples a run directory holds: the same --run-id with
    other sampling settings (or other weights) would redraw every cell over the old files. Everything
    else may change on a resume (prompts, their number, scales, seeds, batch size, device, speed-ups),
    and a directory that holds no samples yet (a run killed before its first batch) takes any settings."""
    samples = run_dir / "samples"
    if not (run_dir / "config.json").exists() or not samples.is_dir() or not any(samples.iterdir()):
        return
    before = load_run_config(run_dir)
    changed = [f for f in cfg.SAMPLE_FIELDS if getattr(before, f) is not None and getattr(before, f) != getattr(cfg, f)]
    if not changed:
        return
    if changed == ["model_fingerprint"]:
        raise ValueError(f"{run_dir} holds samples of other weights (fingerprint {before.model_fingerprint}, now "
                         f"{cfg.model_fingerprint}): restore those weights, or sample afresh under a new --run-id")
    was = ", ".join(f"--{f} {getattr(before, f)}" for f in changed if f != "model_fingerprint")
    now = ", ".join(f"--{f} {getattr(cfg, f)}" for f in changed if f != "model_fingerprint")
    raise ValueError(f"{run_dir} holds samples made with {was}; this command's {now} would replace them: use a "
                     f"new --run-id (or --out), or repeat {was}")


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` whole: processes and shard jobs that start together read run files while others
    write them (a plain write is empty for a moment), and a kill mid-write leaves the old file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    tmp.write_text(text)
    os.replace(tmp, path)


def check_compatible(cfg: BenchConfig, prompts: PromptSet, zoo: Zoo) -> None:
    if "classifier" in cfg.guidance and not prompts.has_labels:
        raise ValueError(f"guidance 'classifier' cannot run on prompt set {prompts.name!r}: it has no labels; "
                         f"use a set with a label column (e.g. emoji200) or drop classifier from --guidance")
    for (what, drop), classes in label_limits(cfg, zoo, prompts).items():
        bad = next((p for p in prompts.prompts if p.label is not None and not 0 <= p.label < classes), None)
        if bad is not None:
            raise ValueError(f"prompt set {prompts.name!r}: label {bad.label} of {bad.text!r} is out of range "
                             f"0..{classes - 1} ({what}); fix the label column, or {drop}")
    if ("fid" in cfg.metrics or "kid" in cfg.metrics) and len(prompts) * cfg.samples_per_prompt < 2:
        raise ValueError(f"FID and KID need at least 2 samples per cell, and {len(prompts)} prompt(s) x "
                         f"{cfg.samples_per_prompt} sample(s) per prompt make {len(prompts) * cfg.samples_per_prompt}; "
                         f"raise --prompt-limit or --samples-per-prompt, or drop fid/kid from --metrics")
    from guidance.guiders import REGISTRY

    models = zoo.guiding_models()
    for name in cfg.guidance:
        needs = REGISTRY[name][1]
        if needs is not None and models.get(needs) is None:
            raise ValueError(f"guidance {name!r} needs a {needs} model, which {zoo.root} does not have; "
                             f"drop it from --guidance or point --model at a directory that has one")


def label_limits(cfg: BenchConfig, zoo: Zoo, prompts: PromptSet) -> dict[tuple[str, str], int]:
    """How many labels each user of the prompts' labels knows, keyed by (who, how to do without it): the
    guiding classifier's classes, and the identities alignment accuracy scores against (the zoo's label
    table; accuracy runs only when every prompt has a label)."""
    limits = {}
    config = getattr(zoo.guiding_models().get("classifier"), "config", None)
    if "classifier" in cfg.guidance and hasattr(config, "num_classes"):
        limits["the guiding classifier's classes", "drop classifier from --guidance"] = int(config.num_classes)
    if "accuracy" in cfg.metrics and prompts.has_labels:
        from bench.emoji_prompts import emoji_labels

        limits["the identities accuracy scores against", "drop accuracy from --metrics"] = \
            len(emoji_labels()["identity_subgroup"])
    return limits


def reset_peak_memory(device: torch.device) -> None:
    """Start a cell's peak-memory window, so each cell reports its own peak, not the run's so far:
    CUDA's allocator peak, or on Linux the process's peak RSS (VmHWM, reset through clear_refs)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux, or not allowed: the figure stays the process peak


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE).group(1)) / 1024
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


PART_NAME = re.compile(r"(\d+)-(\d+)\.npz")  # a complete batch file; a write cut short is `.<name>.partial`


@dataclass(frozen=True)
class Expected:
    """What each global sample index of a run is conditioned on: its caption and label (-1: none).

    A saved sample is reused only where both still match, so an edited prompt file resamples exactly
    the samples whose prompt changed, and a larger --prompt-limit keeps the samples already made.
    """

    texts: np.ndarray  # str [n]
    labels: np.ndarray  # int64 [n]

    @classmethod
    def of(cls, prompts: PromptSet, n: int, samples_per_prompt: int) -> "Expected":
        chosen = [prompts.prompts[i // samples_per_prompt] for i in range(n)]
        return cls(np.array([p.text for p in chosen], dtype=str),
                   np.array([-1 if p.label is None else p.label for p in chosen], dtype=np.int64))

    def __len__(self) -> int:
        return len(self.texts)

    def matches(self, stored: "np.lib.npyio.NpzFile") -> np.ndarray:
        """Per stored row: is its index in this run, with the caption and label that index asks for now?"""
        indices = stored["indices"]
        if "labels" not in stored.files:  # written before labels were stored: cannot be checked, so not reused
            return np.zeros(len(indices), dtype=bool)
        inside = (indices >= 0) & (indices < len(self))
        at = np.where(inside, indices, 0)
        return inside & (self.texts[at] == stored["prompts"]) & (self.labels[at] == stored["labels"])


def conditions(zoo: Zoo, expected: Expected, indices: list[int]) -> Conditions:
    """The batch's conditions, from the captions and labels its global sample indices ask for."""
    texts = [str(t) for t in expected.texts[indices]]
    labels = expected.labels[indices]
    clip_tokens = zoo.clip_tokenizer(texts) if zoo.clip_tokenizer is not None else None
    return Conditions(model=zoo.tokenizer(texts), labels=torch.from_numpy(labels) if (labels >= 0).all() else None,
                      clip_tokens=clip_tokens)


class SampleStore:
    """Samples of one cell on disk: batches `<cell>.<hash>.parts/<first>-<last>.npz`, merged into
    `<cell>.npz` once the cell is complete. The hash keys what samples depend on besides their prompt
    (sampler, steps, weights, guidance, scale, seed); prompts and labels are checked per sample."""

    def __init__(self, run_dir: Path, cell: Cell, cell_hash: str) -> None:
        self.final = run_dir / "samples" / f"{cell.name}.npz"
        self.parts = run_dir / "samples" / f"{cell.name}.{cell_hash}.parts"
        self.cell_hash = cell_hash

    @classmethod
    def of(cls, cfg: BenchConfig, run_dir: Path, cell: Cell) -> "SampleStore":
        """The store of `cell` under `cfg`, keyed by what its samples depend on."""
        return cls(Path(run_dir), cell, cfg.cell_hash(cell.guidance, cell.scale, cell.seed))

    def _final_current(self) -> bool:
        """The merged file exists and was made under this key (older formats and keys are resampled)."""
        if not self.final.exists():
            return False
        with np.load(self.final, allow_pickle=False) as data:
            return "labels" in data.files and str(data["cell_hash"]) == self.cell_hash

    def _sources(self) -> list[Path]:
        """Files holding samples of this cell: the merged file, then complete batches (later ones win)."""
        parts = [p for p in self.parts.glob("*.npz") if PART_NAME.fullmatch(p.name)] if self.parts.is_dir() else []
        return ([self.final] if self._final_current() else []) + sorted(parts, key=lambda p: int(p.name.split("-")[0]))

    def under_another_key(self) -> bool:
        """Samples of this cell were saved under another key (an earlier version of the suite, other
        weights or sampler settings): they stay on disk but are not reused."""
        pattern = f"{glob.escape(self.final.stem)}.*.parts"
        others = [p for p in self.final.parent.glob(pattern) if p != self.parts]
        return bool(others) or (self.final.exists() and not self._final_current())

    def done(self, expected: Expected) -> bool:
        """The merged file holds exactly samples 0..n-1, each with the prompt and label it has now."""
        if not self._final_current():
            return False
        with np.load(self.final, allow_pickle=False) as data:
            indices = data["indices"]
            return (np.array_equal(indices, np.arange(len(expected)))
                    and bool(expected.matches(data).all()))

    def _valid_rows(self, expected: Expected) -> Iterator[tuple["np.lib.npyio.NpzFile", np.ndarray]]:
        """Per file holding this cell's samples: the open file and its rows that still match their
        prompt and label."""
        for path in self._sources():
            with np.load(path, allow_pickle=False) as data:
                yield data, np.flatnonzero(expected.matches(data))

    def finished_indices(self, expected: Expected) -> set[int]:
        return {int(i) for data, rows in self._valid_rows(expected) for i in data["indices"][rows]}

    def write_batch(self, indices: list[int], images: Tensor, expected: Expected) -> None:
        self.parts.mkdir(parents=True, exist_ok=True)
        path = self.parts / f"{indices[0]}-{indices[-1]}.npz"
        tmp = self.parts / f".{path.name}.partial"  # never matches PART_NAME: a killed write is ignored
        with open(tmp, "wb") as f:
            np.savez(f, images=to_hwc_uint8(images), prompts=expected.texts[indices], labels=expected.labels[indices],
                     indices=np.array(indices))
        os.replace(tmp, path)  # atomic: a killed run leaves whole batches or none

    def merge(self, expected: Expected) -> None:
        """Write samples 0..n-1 as one file from every valid stored sample, then drop the batches."""
        images: dict[int, np.ndarray] = {}
        for data, rows in self._valid_rows(expected):
            stored = data["images"]
            images.update((int(i), stored[r]) for i, r in zip(data["indices"][rows], rows))
        missing = sorted(set(range(len(expected))) - images.keys())
        if missing:
            raise ValueError(f"{self.final.stem}: samples {missing[:5]} are missing; sample them before merging")
        tmp = self.final.with_name(f".{self.final.name}.partial")
        with open(tmp, "wb") as f:
            np.savez(f, images=np.stack([images[i] for i in range(len(expected))]), prompts=expected.texts,
                     labels=expected.labels, indices=np.arange(len(expected)), cell_hash=np.array(self.cell_hash))
        os.replace(tmp, self.final)
        shutil.rmtree(self.parts, ignore_errors=True)

    def load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(images uint8 [N, H, W, C], captions [N], labels [N], -1 where none) of the merged cell."""
        with np.load(self.final, allow_pickle=False) as data:
            return data["images"], data["prompts"], data["labels"]


def to_hwc_uint8(images: Tensor) -> np.ndarray:
    """[-1, 1] float [N, C, H, W] -> uint8 [N, H, W, C]: how samples are saved and shown."""
    return ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def batches(todo: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(todo), size):
        yield todo[start:start + size]


def no_work() -> dict[str, Any]:
    """A timing with nothing in it: what a process that sampled no batch of a cell records."""
    return {"images": 0, "seconds": 0.0, "network_passes": 0.0, "guide_passes": 0.0, "backward_passes": 0.0,
            "intervals": []}  # wall-clock [start, end] of each batch: jobs' timings merge by their overlap


def sample_cell(cfg: BenchConfig, zoo: Zoo, cell: Cell, guidance: Guidance, store: SampleStore, expected: Expected,
                device: torch.device, progress, shard: Shard, record: Callable[[dict[str, Any]], None]) -> None:
    """Sample this shard's missing batches of one cell. `record` gets each batch's own time and work
    (for throughput) right after the batch is saved, so a killed run keeps the timing of every batch it
    kept (its resume then reports s/img over all the cell's batches)."""
    diffusion = zoo.diffusion.respace(str(cfg.steps))
    finished = store.finished_indices(expected)
    cost = guidance.cost_per_image(diffusion)  # per image over all steps: exact for interval guidance
    dtype = DTYPES[cfg.dtype]
    autocast = autocast_context(device, dtype)
    # batches are numbered over the whole cell, so shard ownership and batch members never depend on
    # what other processes or earlier (killed) runs already saved
    for number, batch in enumerate(batches(list(range(len(expected))), cfg.batch_size)):
        idx = [i for i in batch if i not in finished]
        if not idx or not shard.owns(number):
            continue
        cond = conditions(zoo, expected, idx)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start, started_at = time.perf_counter(), time.time()  # the interval's length comes from perf_counter
        with autocast, torch.no_grad():  # gradient guidance turns gradients on for its guide alone
            images = sample(zoo.denoiser, diffusion, guidance, cond, (3, 32, 32), idx, seed=cell.seed,
                            sampler=cfg.sampler, eta=cfg.eta, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - start
        work = {"images": len(idx), "seconds": elapsed, "network_passes": cost.network_passes * len(idx),
                "guide_passes": cost.guide_passes * len(idx), "backward_passes": cost.backward_passes * len(idx),
                "intervals": [[started_at, started_at + elapsed]]}
        store.write_batch(idx, images, expected)
        record(work)
        progress.update(len(idx))


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def versions() -> dict[str, str]:
    import open_clip
    import torchmetrics

    return {"torch": torch.__version__, "torchmetrics": torchmetrics.__version__, "open_clip": open_clip.__version__,
            "python": platform.python_version()}


def run_benchmark(cfg: BenchConfig, progress: bool = True, shard: Shard | None = None) -> Path:
    """Run (or resume) a benchmark; returns the run directory holding results.csv and manifest.json.

    Under torchrun every process samples its share of the batches and metrics sync across the
    group; with an independent `shard` (K of N jobs) this process only samples, and
    `merge_shards` scores the run once all jobs are done.
    """
    from tqdm.auto import tqdm

    started = time.time()
    cfg.validate()
    shard = shard or init_from_env(cfg.device)
    progress = progress and shard.is_main
    prompts = load_prompt_set(cfg)
    if progress and cfg.prompt_limit is not None and len(prompts) == cfg.prompt_limit:
        print(f"prompts: the first {cfg.prompt_limit} of {prompts.name} (--prompt-limit N or all to change)")
    device = checked_device(local_device(cfg.device))
    zoo = load_zoo(None if cfg.model == "emoji" else cfg.model, device)
    check_compatible(cfg, prompts, zoo)
    from bench.scoring import check_scorers

    check_scorers(cfg, device)
    zoo.accelerate(cfg.acceleration(), device, DTYPES[cfg.dtype])
    cfg = replace(agree_on_run_id(cfg, shard), model_fingerprint=zoo.fingerprint())
    run_dir = prepare_output(cfg)
    check_keeps_samples(run_dir, cfg)
    if shard.is_main or not shard.launched:  # every independent shard job: any of them may start first
        write_atomic(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2))
    n = len(prompts) * cfg.samples_per_prompt
    expected = Expected.of(prompts, n, cfg.samples_per_prompt)
    cells = grid_cells(cfg)
    bar = tqdm(total=n * len(cells), desc="sampling", unit="img", disable=not progress, dynamic_ncols=True)
    for cell in cells:
        store = SampleStore.of(cfg, run_dir, cell)
        if store.done(expected):
            bar.update(n)
            continue
        if progress and store.under_another_key():
            bar.write(f"{cell.name}: samples saved under another key (an earlier version, other weights or "
                      f"sampler settings) are not reused: sampling afresh")
        guidance = make_guidance(cell.guidance, cell.scale, zoo.guiding_models())
        bar.set_postfix_str(cell.name)
        reset_peak_memory(device)

        def record(work: dict[str, Any], cell: Cell = cell, store: SampleStore = store) -> None:
            save_throughput(run_dir, cell, {**work, "peak_mem_mb": peak_memory_mb(device)}, store.cell_hash, shard)

        sample_cell(cfg, zoo, cell, guidance, store, expected, device, bar, shard, record)
        record(no_work())  # a process that owned no batch still reports (an empty timing), with its peak
        shard.barrier()
        if shard.launched or shard.world == 1:
            if shard.is_main:
                store.merge(expected)
            shard.barrier()
    bar.close()
    if not shard.launched and shard.world > 1:
        print(f"shard {shard.rank}/{shard.world} sampled; when every shard is done: python -m bench merge {run_dir}")
        return run_dir
    return finish_run(cfg, run_dir, cells, zoo, device, shard, time.time() - started, n, progress, shard.world)


def finish_run(cfg: BenchConfig, run_dir: Path, cells: list[Cell], zoo: Zoo, device: torch.device, shard: Shard,
               wall: float | None, n: int, progress: bool, processes: int) -> Path:
    from bench.scoring import score_cells

    results = score_cells(cfg, run_dir, cells, device, progress, shard)
    if shard.is_main:
        results.to_csv(run_dir / "results.csv", index=False)
        summary_table(run_dir).to_csv(run_dir / "summary.csv", index=False)  # also without the HTML report
        write_manifest(cfg, run_dir, zoo, device, wall, n, processes)
    shard.barrier()
    return run_dir


def load_run_config(run_dir: Path) -> BenchConfig:
    """The settings a run directory was made with (its config.json), or a one-line error naming the fix."""
    path = run_dir / "config.json"
    if not run_dir.is_dir() or not path.is_file():
        raise ValueError(f"{run_dir} is not a run directory (no config.json); pass the directory the --shard jobs "
                         f"wrote into (--out/--run-id)")
    try:
        data = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); restore it (every shard job writes the same file)") from None
    known = {f.name for f in fields(BenchConfig)}
    unknown = sorted(set(data) - known) if isinstance(data, dict) else ["(not an object)"]
    if unknown:
        raise ValueError(f"{path} has keys this version does not know: {unknown}; it comes from another version of "
                         f"the suite or was edited: merge with that version, or remove them")
    return BenchConfig(**data)


def merge_shards(run_dir: Path, progress: bool = True) -> Path:
    """Merge the batches that independent shard jobs wrote into one run directory, then score it."""
    cfg = load_run_config(Path(run_dir))
    cfg.run_id, cfg.out = Path(run_dir).name, str(Path(run_dir).parent)
    cfg.scales = {g: list(v) for g, v in cfg.scales.items()}
    prompts = load_prompt_set(cfg)
    n = len(prompts) * cfg.samples_per_prompt
    expected = Expected.of(prompts, n, cfg.samples_per_prompt)
    device = torch.device(cfg.device if cfg.device == "cpu" or torch.cuda.is_available() else "cpu")
    zoo = load_zoo(None if cfg.model == "emoji" else cfg.model, device)
    check_keeps_samples(Path(run_dir), replace(cfg, model_fingerprint=zoo.fingerprint()))
    cells = grid_cells(cfg)
    for cell in cells:
        store = SampleStore.of(cfg, run_dir, cell)
        if store.done(expected):
            continue
        missing = sorted(set(range(n)) - store.finished_indices(expected))
        if missing and store.under_another_key() and len(missing) == n:
            raise ValueError(f"{cell.name}: its samples were saved under another key (an earlier version of the "
                             f"suite, other weights or sampler settings) and are not reused; rerun every shard job")
        if missing:
            raise ValueError(f"{cell.name}: samples {missing[:5]}... are missing; run the remaining shard jobs "
                             f"(same command with their --shard K/N) before merging")
        store.merge(expected)
    # independent jobs: their wall time is not known here (they may have run at once or in turn)
    jobs = len(list(Path(run_dir).glob("throughput.rank*.json"))) or 1
    return finish_run(cfg, Path(run_dir), cells, zoo, device, Shard(), None, n, progress, jobs)


def agree_on_run_id(cfg: BenchConfig, shard: Shard) -> BenchConfig:
    """All processes of a torchrun group write into the directory that rank 0 names."""
    if cfg.run_id is None and shard.launched:
        import torch.distributed as dist

        name = [f"{datetime.now():%Y%m%d-%H%M%S}-{'-'.join(cfg.guidance)}" if shard.is_main else None]
        dist.broadcast_object_list(name, src=0)
        cfg = cfg.with_overrides(run_id=name[0])
    if cfg.run_id is None and shard.world > 1:
        raise ValueError("independent shard jobs must share a run directory: pass the same --run-id to every job")
    return cfg


def save_throughput(run_dir: Path, cell: Cell, spent: dict[str, float], cell_hash: str, shard: Shard = Shard()) -> None:
    """Timing of the sampling that actually ran, one file per process (merged when scoring).

    A resumed cell adds its work to what earlier (killed) runs of the same key recorded, so a resume
    that had nothing left to sample keeps the timings instead of zeroing them.
    """
    path = run_dir / f"throughput.rank{shard.rank}.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    before = data.get(cell.name)
    if before is not None and before.get("cell_hash") == cell_hash:
        peak = max(before.get("peak_mem_mb", 0.0), spent.get("peak_mem_mb", 0.0))
        # a timing of sampled images from before intervals were recorded has none: the merged one then
        # has none either (Throughput falls back to the slowest process); an empty list is a timing
        older = "intervals" not in before and before.get("images", 0) > 0
        intervals = None if older else before.get("intervals", []) + spent.get("intervals", [])
        spent = {k: before.get(k, 0.0) + v for k, v in spent.items() if k != "intervals"}
        spent |= {"peak_mem_mb": peak} | ({} if intervals is None else {"intervals": intervals})
    data[cell.name] = {**spent, "cell_hash": cell_hash}
    write_atomic(path, json.dumps(data, indent=1))


def write_manifest(cfg: BenchConfig, run_dir: Path, zoo: Zoo, device: torch.device, wall: float | None, n: int,
                   processes: int = 1) -> None:
    from bench.scoring import scorer_label

    manifest = {
        "run_id": run_dir.name, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": cfg.to_dict(), "config_hash": cfg.config_hash(), "versions": versions(),
        "models": zoo.checksums(), "model_dir": str(zoo.root), "git_commit": git_commit(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "seeds": cfg.seeds, "samples_per_cell": n, "processes": processes,
        "acceleration": cfg.acceleration().describe(device, DTYPES[cfg.dtype]), "wall_time_s": None if wall is None else round(wall, 1), "clip_scorer": scorer_label(cfg),
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))


def summary_table(run_dir: Path) -> pd.DataFrame:
    from bench.stats import summarize

    return summarize(pd.read_csv(run_dir / "results.csv"))

"""The benchmark run: sample a guidance x scale x seed grid, save every batch, then score each cell.

Samples are written batch by batch under the run directory, keyed by each cell's hash and the
global sample index, so an interrupted run resumes where it stopped and ends with the same results
as an uninterrupted one. Metrics are computed from the saved samples.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from bench.config import BenchConfig
from bench.prompts import PromptSet, load_prompts
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


def load_prompt_set(cfg: BenchConfig) -> PromptSet:
    import bench.emoji_prompts  # noqa: F401  (registers the built-in sets)

    return load_prompts(cfg.prompts, limit=cfg.prompt_limit)


def prepare_output(cfg: BenchConfig) -> Path:
    """Create and probe the run directory before any sampling, so a bad --out fails at once."""
    run_id = cfg.run_id or f"{datetime.now():%Y%m%d-%H%M%S}-{'-'.join(cfg.guidance)}"
    run_dir = Path(cfg.out) / run_id
    try:
        (run_dir / "samples").mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"output directory {run_dir} is not writable ({err.strerror}); choose another with --out") from err
    return run_dir


def check_compatible(cfg: BenchConfig, prompts: PromptSet, zoo: Zoo) -> None:
    if "classifier" in cfg.guidance and not prompts.has_labels:
        raise ValueError(f"guidance 'classifier' cannot run on prompt set {prompts.name!r}: it has no labels; "
                         f"use a set with a label column (e.g. emoji200) or drop classifier from --guidance")
    for name, needs in (("classifier", zoo.classifier), ("clip", zoo.noised_clip)):
        if name in cfg.guidance and needs is None:
            raise ValueError(f"guidance {name!r} needs a guiding model that {zoo.root} does not have")


def conditions(zoo: Zoo, prompts: PromptSet, indices: list[int], spp: int) -> Conditions:
    chosen = [prompts.prompts[i // spp] for i in indices]
    texts = [p.text for p in chosen]
    labels = torch.tensor([p.label for p in chosen]) if all(p.label is not None for p in chosen) else None
    clip_tokens = zoo.clip_tokenizer(texts) if zoo.clip_tokenizer is not None else None
    return Conditions(model=zoo.tokenizer(texts), labels=labels, clip_tokens=clip_tokens)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class SampleStore:
    """Batches of one cell on disk: `<cell>.<hash>.parts/<first>-<last>.npz`, merged when complete."""

    def __init__(self, run_dir: Path, cell: Cell, cell_hash: str) -> None:
        self.final = run_dir / "samples" / f"{cell.name}.npz"
        self.parts = run_dir / "samples" / f"{cell.name}.{cell_hash}.parts"
        self.cell_hash = cell_hash

    def done(self) -> bool:
        if not self.final.exists():
            return False
        with np.load(self.final, allow_pickle=False) as data:
            return str(data["cell_hash"]) == self.cell_hash

    def finished_indices(self) -> set[int]:
        found: set[int] = set()
        for part in self.parts.glob("*.npz"):
            first, last = (int(v) for v in part.stem.split("-"))
            found.update(range(first, last + 1))
        return found

    def write_batch(self, indices: list[int], images: Tensor, texts: list[str]) -> None:
        self.parts.mkdir(parents=True, exist_ok=True)
        path = self.parts / f"{indices[0]}-{indices[-1]}.npz"
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, images=to_hwc_uint8(images), prompts=np.array(texts), indices=np.array(indices))
        os.replace(tmp, path)  # atomic: a killed run leaves whole batches or none

    def merge(self) -> None:
        parts = sorted(self.parts.glob("*.npz"), key=lambda p: int(p.stem.split("-")[0]))
        loaded = [np.load(p, allow_pickle=False) for p in parts]
        images = np.concatenate([d["images"] for d in loaded])
        prompts = np.concatenate([d["prompts"] for d in loaded])
        indices = np.concatenate([d["indices"] for d in loaded])
        order = np.argsort(indices)
        tmp = self.final.with_suffix(".tmp.npz")
        np.savez(tmp, images=images[order], prompts=prompts[order], indices=indices[order],
                 cell_hash=np.array(self.cell_hash))
        os.replace(tmp, self.final)
        for p in parts:
            p.unlink()
        self.parts.rmdir()

    def load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with np.load(self.final, allow_pickle=False) as data:
            return data["images"], data["prompts"], data["indices"]


def to_hwc_uint8(images: Tensor) -> np.ndarray:
    return ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def batches(todo: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(todo), size):
        yield todo[start:start + size]


def sample_cell(cfg: BenchConfig, zoo: Zoo, prompts: PromptSet, cell: Cell, guidance: Guidance, store: SampleStore,
                sample_indices: list[int], device: torch.device, progress) -> dict[str, float]:
    """Sample the missing indices of one cell; returns the time and work spent (for throughput)."""
    diffusion = zoo.diffusion.respace(str(cfg.steps))
    todo = sorted(set(sample_indices) - store.finished_indices())
    cost = guidance.cost()
    spent = {"images": 0, "seconds": 0.0, "network_passes": 0.0, "guide_passes": 0.0, "backward_passes": 0.0}
    dtype = DTYPES[cfg.dtype]
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
    for idx in batches(todo, cfg.batch_size):
        cond = conditions(zoo, prompts, idx, cfg.samples_per_prompt)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with autocast:
            images = sample(zoo.denoiser, diffusion, guidance, cond, (3, 32, 32), idx, seed=cell.seed,
                            sampler=cfg.sampler, eta=cfg.eta, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        spent["seconds"] += time.perf_counter() - start
        spent["images"] += len(idx)
        steps = diffusion.num_timesteps
        spent["network_passes"] += cost.network_passes * steps * len(idx)
        spent["guide_passes"] += cost.guide_passes * steps * len(idx)
        spent["backward_passes"] += cost.backward_passes * steps * len(idx)
        store.write_batch(idx, images, [prompts.prompts[i // cfg.samples_per_prompt].text for i in idx])
        progress.update(len(idx))
    return spent


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


def run_benchmark(cfg: BenchConfig, progress: bool = True) -> Path:
    """Run (or resume) a benchmark; returns the run directory holding results.csv and manifest.json."""
    from tqdm.auto import tqdm

    from bench.scoring import score_cells

    started = time.time()
    cfg.validate()
    prompts = load_prompt_set(cfg)
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    zoo = load_zoo(None if cfg.model == "emoji" else cfg.model, device)
    check_compatible(cfg, prompts, zoo)
    run_dir = prepare_output(cfg)
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    n = len(prompts) * cfg.samples_per_prompt
    indices = list(range(n))
    cells = [Cell(g, s, k, seed) for g, scales in cfg.scale_grid().items() for s in scales
             for k, seed in enumerate(cfg.seeds)]
    throughput: dict[Cell, dict[str, float]] = {}
    bar = tqdm(total=n * len(cells), desc="sampling", unit="img", disable=not progress, dynamic_ncols=True)
    for cell in cells:
        store = SampleStore(run_dir, cell, cfg.cell_hash(cell.guidance, cell.scale, cell.seed))
        if store.done():
            bar.update(n)
            continue
        guidance = make_guidance(cell.guidance, cell.scale, zoo.guiding_models())
        bar.set_postfix_str(cell.name)
        spent = sample_cell(cfg, zoo, prompts, cell, guidance, store, indices, device, bar)
        spent["peak_mem_mb"] = peak_memory_mb(device)
        store.merge()
        throughput[cell] = spent
        save_throughput(run_dir, cell, spent)
    bar.close()
    results = score_cells(cfg, run_dir, cells, device, progress)
    results.to_csv(run_dir / "results.csv", index=False)
    write_manifest(cfg, run_dir, zoo, device, time.time() - started, n)
    return run_dir


def save_throughput(run_dir: Path, cell: Cell, spent: dict[str, float]) -> None:
    """Timing of the sampling that actually ran (kept across resumes: the last complete measurement)."""
    path = run_dir / "throughput.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[cell.name] = spent
    path.write_text(json.dumps(data, indent=1))


def write_manifest(cfg: BenchConfig, run_dir: Path, zoo: Zoo, device: torch.device, wall: float, n: int) -> None:
    from bench.scoring import scorer_label

    manifest = {
        "run_id": run_dir.name, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": cfg.to_dict(), "config_hash": cfg.config_hash(), "versions": versions(),
        "models": zoo.checksums(), "model_dir": str(zoo.root), "git_commit": git_commit(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "seeds": cfg.seeds, "samples_per_cell": n, "wall_time_s": round(wall, 1), "clip_scorer": scorer_label(cfg),
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))


def summary_table(run_dir: Path) -> pd.DataFrame:
    from bench.stats import summarize

    return summarize(pd.read_csv(run_dir / "results.csv"))

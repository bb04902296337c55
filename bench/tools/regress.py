"""CI quality gate: a fixed small CPU benchmark compared with a committed baseline.

    python -m bench.tools.regress                          # gate: exit 1 on a regression beyond seed noise
    python -m bench.tools.regress --update --reason "..."  # re-measure baseline and tolerances, record why

Tolerances come from measured seed-to-seed spread: `--update` runs the same grid over several seed
sets and stores, per cell and metric, k times the standard deviation across them. The gate runs one
fixed seed set, so an unchanged tree reproduces the baseline up to floating-point drift, while a
bug that costs more quality than a change of seeds would fails.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from bench.runner.config import BenchConfig
from bench.evaluators.registry import higher_is_better
from bench.runner.failure import Parser, guarded, one_line
from bench.runner.run import run_benchmark

BASELINE = Path(__file__).parent / "data" / "regress_baseline.json"
GATED = ("fid", "clip_score", "acc_subgroup", "acc_group")  # the gate's columns; directions as the metrics declare
K_SIGMA = 3.0
GATE_SEED = 0
SPREAD_SEEDS = [0, 1, 2, 3, 4, 5]


def gate_config(seeds: list[int], out: str) -> BenchConfig:
    """The fixed grid: ancestral sampling, so gradient guidance goes through the variance-weighted shift."""
    return BenchConfig.from_preset(
        "tiny", guidance=["none", "cfg", "classifier", "clip"],
        scales={"none": [0.0], "cfg": [3.0], "classifier": [5.0], "clip": [5.0]},
        prompts="emoji200", prompt_limit=32, samples_per_prompt=1, seeds=seeds, sampler="ddpm", steps=20,
        batch_size=64, metrics=["fid", "clip_score", "accuracy"], out=out, run_id="gate", device="cpu")


def measure(seeds: list[int]) -> pd.DataFrame:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = run_benchmark(gate_config(seeds, tmp), progress=False)
        return pd.read_csv(run_dir / "results.csv")


def cell_key(row: pd.Series) -> str:
    return f"{row['guidance']}@{row['scale']:g}"


def update(reason: str) -> dict:
    started = time.time()
    results = measure(SPREAD_SEEDS)
    cells: dict[str, dict] = {}
    for key, group in results.groupby(results.apply(cell_key, axis=1)):
        at_gate = group[group["seed_set"] == SPREAD_SEEDS.index(GATE_SEED)].iloc[0]
        cells[key] = {m: {"baseline": float(at_gate[m]), "seed_std": float(group[m].std(ddof=1)),
                          "tolerance": K_SIGMA * float(group[m].std(ddof=1)), "higher_is_better": higher_is_better(m)}
                      for m in GATED}
    old = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
    baseline = {
        "config": gate_config([GATE_SEED], "reports").to_dict(),
        "cells": cells,
        "tolerance_method": (f"{K_SIGMA:g} x the sample standard deviation of each metric over {len(SPREAD_SEEDS)} seed "
                             f"sets {SPREAD_SEEDS} of the same grid (python -m bench.tools.regress --update)"),
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "reason": reason,
        "measure_wall_s": round(time.time() - started, 1),
        "history": old.get("history", []) + [{"updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                              "reason": reason}],
    }
    BASELINE.parent.mkdir(parents=True, exist_ok=True)
    BASELINE.write_text(json.dumps(baseline, indent=1) + "\n")
    return baseline


def load_baseline(path: Path) -> dict:
    """The committed baseline, its shape checked before the gate spends minutes measuring."""
    fix = "restore it (git checkout bench/tools/data/regress_baseline.json) or re-measure it with `invoke regress --update --reason ...`"
    if not path.is_file():
        raise ValueError(f"no baseline at {path}; create it with `invoke regress --update --reason ...`")
    try:
        baseline = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as err:
        raise ValueError(f"baseline {path} is not valid JSON ({one_line(err)[:120]}); {fix}") from None
    cells = baseline.get("cells") if isinstance(baseline, dict) else None
    if not isinstance(cells, dict) or not cells:
        raise ValueError(f"baseline {path} has no \"cells\" object of gated cells; {fix}")
    for key, metrics in cells.items():
        entries = metrics.values() if isinstance(metrics, dict) else [None]
        for ref in entries:
            numbers = [ref.get(k) for k in ("baseline", "tolerance")] if isinstance(ref, dict) else [None]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers) \
                    or not isinstance(ref.get("higher_is_better"), bool):
                raise ValueError(f"baseline {path}: cell {key!r} needs per metric a finite \"baseline\" and "
                                 f"\"tolerance\" and a boolean \"higher_is_better\"; {fix}")
    return baseline


def check(baseline: dict) -> tuple[list[dict], bool]:
    results = measure([GATE_SEED])
    rows, ok = [], True
    for _, row in results.iterrows():
        key = cell_key(row)
        if key not in baseline["cells"]:
            raise ValueError(f"cell {key} is not in the baseline {BASELINE}; run `invoke regress --update --reason ...`")
        for metric, ref in baseline["cells"][key].items():
            now = float(row[metric])
            drop = (ref["baseline"] - now) if ref["higher_is_better"] else (now - ref["baseline"])
            passed = math.isfinite(now) and drop <= ref["tolerance"]
            ok &= passed
            rows.append({"cell": key, "metric": metric, "baseline": ref["baseline"], "now": now,
                         "tolerance": ref["tolerance"], "verdict": "ok" if passed else "REGRESSION"})
    return rows, ok


@guarded
def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update", action="store_true", help="re-measure the baseline and its tolerances")
    parser.add_argument("--reason", default=None, help="why the baseline changes (required with --update)")
    args = parser.parse_args(argv)
    if args.update:
        if not args.reason:
            print("error: --update needs --reason \"...\" (recorded in the baseline's history)", file=sys.stderr)
            return 2
        baseline = update(args.reason)
        print(f"baseline written to {BASELINE} ({baseline['tolerance_method']})")
        return 0
    rows, ok = check(load_baseline(BASELINE))
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 120, "display.float_format", "{:.4g}".format):
        print(table.to_string(index=False))
    print("quality gate: " + ("passed" if ok else "FAILED: a metric dropped beyond its tolerance (seed noise)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

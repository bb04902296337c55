"""CI quality gate: a fixed small CPU benchmark compared with a committed baseline.

    python -m bench.regress                          # gate: exit 1 on a regression beyond seed noise
    python -m bench.regress --update --reason "..."  # re-measure baseline and tolerances, record why

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

from bench.config import BenchConfig
from bench.evaluators.registry import higher_is_better
from bench.run import run_benchmark

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
                             f"sets {SPREAD_SEEDS} of the same grid (python -m bench.regress --update)"),
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "reason": reason,
        "measure_wall_s": round(time.time() - started, 1),
        "history": old.get("history", []) + [{"updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                              "reason": reason}],
    }
    BASELINE.parent.mkdir(parents=True, exist_ok=True)
    BASELINE.write_text(json.dumps(baseline, indent=1) + "\n")
    return baseline


def check(baseline: dict) -> tuple[list[dict], bool]:
    results = measure([GATE_SEED])
    rows, ok = [], True
    for _, row in results.iterrows():
        key = cell_key(row)
        if key not in baseline["cells"]:
            raise SystemExit(f"cell {key} is not in the baseline {BASELINE}; run `invoke regress --update --reason ...`")
        for metric, ref in baseline["cells"][key].items():
            now = float(row[metric])
            drop = (ref["baseline"] - now) if ref["higher_is_better"] else (now - ref["baseline"])
            passed = math.isfinite(now) and drop <= ref["tolerance"]
            ok &= passed
            rows.append({"cell": key, "metric": metric, "baseline": ref["baseline"], "now": now,
                         "tolerance": ref["tolerance"], "verdict": "ok" if passed else "REGRESSION"})
    return rows, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    if not BASELINE.exists():
        print(f"error: no baseline at {BASELINE}; create it with `invoke regress --update --reason ...`", file=sys.stderr)
        return 2
    rows, ok = check(json.loads(BASELINE.read_text()))
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 120, "display.float_format", "{:.4g}".format):
        print(table.to_string(index=False))
    print("quality gate: " + ("passed" if ok else "FAILED: a metric dropped beyond its tolerance (seed noise)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

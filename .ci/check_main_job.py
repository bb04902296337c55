"""The main job wrote its report, and every cell of it has a CMMD figure: python3 .ci/check_main_job.py RUN_DIR."""

import sys
from pathlib import Path

import pandas as pd

run = Path(sys.argv[1])
if not (run / "index.html").is_file():
    sys.exit(f"{run}: the main job wrote no report (index.html)")
results = pd.read_csv(run / "results.csv")
if "cmmd" not in results or results["cmmd"].isna().any():
    sys.exit(f"{run}/results.csv: CMMD missing from some cells")
print(f"{run}: report written; CMMD per cell: {', '.join(f'{v:.3g}' for v in results['cmmd'])}")

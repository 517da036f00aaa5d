"""Reading train_log.csv the way a user would: which step should have been kept."""
from __future__ import annotations

import csv
from pathlib import Path

HIGHER_IS_BETTER = {"holdout_psnr": True, "holdout_kid": False, "holdout_fid": False, "holdout_lpips": False}


def selection_rows(path: Path) -> list[dict]:
    """The rows of held-out evaluations (they name their selection metric)."""
    with open(path, newline="") as fh:
        return [r for r in csv.DictReader(fh) if r.get("select_metric")]


def best_step_from_log(path: Path) -> int:
    """The first step with the best value of the log's own selection metric."""
    rows = selection_rows(path)
    (column,) = {r["select_metric"] for r in rows}
    sign = 1.0 if HIGHER_IS_BETTER[column] else -1.0
    best = max(rows, key=lambda r: (sign * float(r[column]), -int(r["step"])))
    return int(best["step"])

"""``train_log.csv``: one row per logged step, rewritten atomically; read back on resume."""
from __future__ import annotations

import csv
import io as _stdio
from pathlib import Path

from .. import io as gio
from ..values import number_or_text

def write_log(path: Path, rows: list[dict]) -> None:
    fields: list[str] = []
    for row in rows:
        for k in row:
            if k not in fields:
                fields.append(k)
    buf = _stdio.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields or ["step"], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    gio.atomic_write_text(path, buf.getvalue())


def read_log(path: Path, upto: int) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                step = int(row["step"])
            except (KeyError, ValueError):
                continue
            if step <= upto:
                rows.append({k: number_or_text(v) for k, v in row.items() if v != ""})
    return rows



"""Rebuild the `ganzip demo --seeds N` tables from the students' own folders.

A `--seeds` run writes OUT/report.* only at its end, but each student keeps
its folder (OUT/LABEL@sN/report.json) as soon as it is measured. This reads
those folders, finished or not, and prints the same tables the demo report
holds (ganzip.demo's own code: mean ± std over the finished seeds, and the
first student paired against each other one over their common seeds) as
Markdown, plus which runs are missing. Used for docs/quality.md.

    python bench/demo_seeds_table.py OUT [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from ganzip import demo


def load_runs(out: Path) -> tuple[list[demo.DemoRun], list[str]]:
    runs, labels = [], json.loads((out / demo.MARKER).read_text())["students"]
    for folder in sorted(out.iterdir()):
        m = re.fullmatch(r"(.+)@s(\d+)", folder.name)
        if not m or m.group(1) not in labels or not (folder / "report.json").is_file():
            continue
        rep = json.loads((folder / "report.json").read_text())
        tr = rep.get("training", {})
        runs.append(demo.DemoRun(label=m.group(1), recipe=tr.get("recipe", ""), overrides=tr.get("overrides", []),
                                 out=folder, student_path=None, metrics=rep["metrics"], cost=rep.get("cost", {}),
                                 loss_terms=rep.get("losses_active", {}), seconds=tr.get("seconds", 0.0),
                                 steps=tr.get("steps", 0), best_step=tr.get("best_step"), seed=int(m.group(2)),
                                 selection=tr.get("student_selection", "")))
    return runs, labels


def markdown(table: dict) -> str:
    lines = [f"**{table['title']}**", "", "| " + " | ".join(table["header"]) + " |",
             "|" + "|".join("---" for _ in table["header"]) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in table["rows"]]
    return "\n".join(lines + ["", table.get("note", ""), ""])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    runs, labels = load_runs(args.out)
    seeds = sorted({r.seed for r in runs})
    present = [lb for lb in labels if any(r.label == lb for r in runs)]
    report = {"tables": [{"title": "per-seed", "header": [], "rows": []}]}
    demo.add_seed_tables(report, runs, present, max(seeds) + 1)
    for table in report["tables"][1:]:
        print(markdown(table))
    done = {(r.label, r.seed) for r in runs}
    missing = [f"{lb}@s{s}" for s in range(max(seeds) + 1) for lb in labels if (lb, s) not in done]
    print("finished runs:", ", ".join(sorted(f"{lb}@s{s}" for lb, s in done)))
    print("missing runs:", ", ".join(missing) or "none")
    for r in sorted(runs, key=lambda r: (r.seed, labels.index(r.label))):
        print(f"{r.out.name}: training {r.seconds} s, kept: {r.selection}")
    if args.json:
        args.json.write_text(json.dumps({k: report[k] for k in ("over_seeds", "paired")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

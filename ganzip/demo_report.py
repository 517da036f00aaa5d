"""The demo's report: the comparison table of teacher and students, and the labelled sample grid."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from . import io as gio
from .demo_seeds import metric_mean as _mean
from .imaging import labelled_grid
from .metrics.cost import format_macs
from .report import compose

# The shipped teacher's file name (ganzip/assets/), as the report names it.
TEACHER_FILE = "demo_teacher.safetensors"


def _loss_text(loss_terms: dict) -> str:
    return " + ".join(f"{w:g} {name}" for name, w in loss_terms.get("student", {}).items())


def compose_report(prov, runs, evals, unavailable, common, steps, batch_size, compare, device, command) -> dict:
    """The demo's report: the teacher and each student side by side, what was unavailable, and the settings."""
    first = evals[runs[0].label]
    t_cost = first.cost.get("teacher", {})
    t_met = first.metrics.get("teacher", {})
    main = runs[0]
    header = ["student", "PSNR to teacher (dB)", "SSIM to teacher", "LPIPS to teacher", "PSNR to ground truth (dB)",
              "sharpness vs ground truth", "FID", "MACs", "params", "latency (ms)", "training (s)", "student loss"]
    rows: list[list[Any]] = []
    has_lpips = any("lpips_to_teacher" in r.metrics.get("student", {}) for r in runs)
    has_fid = any("fid" in r.metrics.get("student", {}) for r in runs)
    rows.append(["teacher", None, None, None, _mean(t_met, "psnr_to_target"), _mean(t_met, "sharpness_to_target"),
                 _mean(t_met, "fid"),
                 t_cost.get("macs"), t_cost.get("params"), t_cost.get("latency_ms"), None,
                 f"trained by ganzip train ({prov.get('recipe', 'scratch')})"])
    for r in runs:
        s = r.metrics.get("student", {})
        c = r.cost.get("student", {})
        rows.append([r.label, _mean(s, "psnr_to_teacher"), _mean(s, "ssim_to_teacher"),
                     _mean(s, "lpips_to_teacher"), _mean(s, "psnr_to_target"), _mean(s, "sharpness_to_target"),
                     _mean(s, "fid"),
                     c.get("macs"), c.get("params"), c.get("latency_ms"), r.seconds, _loss_text(r.loss_terms)])
    note = (f"{first.metrics.get('count')} held-out test images of {prov['data']} at {prov['size']}x{prov['size']}; "
            f"every student: width 0.25, {steps} steps of batch {batch_size}, seed 0; kept: {main.selection or 'last step'}. "
            + ("" if has_lpips else "LPIPS: unavailable (no AlexNet weights). ")
            + ("" if has_fid else "FID: unavailable (no Inception weights). ")
            + "Sharpness: gradient energy over the ground truth's (1 = as detailed; below: blurred, above: noise). "
            + "A dash means the value does not apply or could not be measured.")
    table_rows = [[_fmt_cell(h, v) for h, v in zip(header, row)] for row in rows]
    sections: dict[str, Any] = {
        "seed": 0,
        "data": {"source": prov["data"], "train_split": "train", "eval_split": first.metrics.get("split"),
                 "eval_images": first.metrics.get("count"), "size": prov["size"], "kind": prov.get("task_kind")},
        "models": {
            "teacher": {"file": f"ganzip/assets/{TEACHER_FILE}", "arch": prov["arch"]["arch"],
                        "opts": prov["arch"].get("opts", {}), "sha256": prov.get("sha256"),
                        "trained_by": prov.get("command")},
            "student": {"arch": prov["arch"]["arch"], "width": 0.25, "recipe": main.recipe, "label": main.label,
                        "file": str(main.student_path) if main.student_path else None,
                        "channels": ((first.report.get("models") or {}).get("student") or {}).get("channels")},
        },
        "cost": {"size": prov["size"], "device": first.cost.get("device"), "teacher": t_cost,
                 "student": main.cost.get("student", {})},
        "metrics": {"teacher": t_met, "student": main.metrics.get("student", {})},
        "comparison": {"header": header, "rows": rows},
        "tables": [{"title": "Students side by side" if len(runs) > 1 else "Student",
                    "header": header, "rows": table_rows, "note": note}],
        "students": {r.label: {"recipe": r.recipe, "overrides": r.overrides, "note": r.note,
                               "loss_terms": r.loss_terms, "steps": r.steps, "best_step": r.best_step,
                               "selection": r.selection, "report": f"{r.out.name}/report.md"} for r in runs},
        "settings": {"steps": steps, "batch_size": batch_size, "width": 0.25, "overrides": list(common),
                     "device": str(device), "compare": compare},
        "unavailable": unavailable,
        "warnings": [f"{u['asset']} not found: {u['needed_for']} unavailable; {u['instead']}" for u in unavailable],
        "assets": first.assets,
    }
    report = compose("demo", sections, command=command, device=device)
    if unavailable:
        report["tables"].append({"title": "Unavailable pretrained files",
                                 "header": ["file", "needed for", "why", "used instead"],
                                 "rows": [[u["asset"], u["needed_for"], u["why"], u["instead"]] for u in unavailable],
                                 "note": "Import a file with `ganzip assets import FILE` and run the demo again."})
    return report


def _fmt_cell(header: str, v) -> str:
    if v is None:
        return "—"
    if header == "MACs":
        return format_macs(int(v))
    if header == "params":
        return f"{int(v):,}"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def write_samples(out: Path, labels: Sequence[str], folders: dict[str, Path] | None = None,
                   caption: str = "") -> list[dict]:
    """OUT/samples.png (input | ground truth | teacher | each student, labelled, under `caption`) and the grid
    rows for the report, in the same column order."""
    folders = folders or {label: out / label for label in labels}
    base = folders[labels[0]] / "images"
    rows: list[dict] = []
    tiles: list[list[np.ndarray]] = []
    i = 0
    while (base / f"{i:02d}_input.png").exists():
        cells = [("input", base / f"{i:02d}_input.png"), ("target", base / f"{i:02d}_target.png"),
                 ("teacher", base / f"{i:02d}_teacher.png")]
        cells += [(label, folders[label] / "images" / f"{i:02d}_student.png") for label in labels]
        row: dict[str, str] = {}
        arrays = []
        for col, path in cells:
            if path.exists():
                row[col] = path.relative_to(out).as_posix()
                arrays.append(np.asarray(Image.open(path).convert("RGB")))
        rows.append(row)
        tiles.append(arrays)
        i += 1
    if tiles and len({len(t) for t in tiles}) == 1 and len(tiles[0]) == 3 + len(labels):
        grid = labelled_grid(["input", "ground truth", "teacher", *labels], tiles, caption)
        gio.atomic_write_bytes(out / "samples.png", gio.png_bytes(grid))
    return rows


__all__ = ["compose_report", "write_samples"]

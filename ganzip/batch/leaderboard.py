"""The leaderboard: one row per job, measured from the files on disk, written as Markdown, CSV and JSON.

Each row holds the teacher's and the student's cost (MACs, parameters,
latency), their ratios (`ganzip.metrics.cost.ratio`, the one teacher/student
comparison), the metrics of the job's ``report.json``, its status and its
error line. Jobs run with `seeds` also get their mean ± std over seeds.
"""
from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from .. import io as gio
from .. import rundir
from ..backends import latency_columns
from ..devices import resolve_device
from ..engine import STUDENT
from ..loading import load_generator
from ..metrics.cost import count_macs, count_params, measure_latency, ratio
from ..student import load_student
from .files import describe_exception

LEADERBOARD_FILES = ("leaderboard.json", "leaderboard.csv", "leaderboard.md")


def _metric_columns(report: Mapping) -> dict[str, float]:
    """Student (and teacher) metrics from report.json as flat numbers: fid, lpips_to_teacher, ..."""
    out: dict[str, float] = {}
    metrics = report.get("metrics") if isinstance(report, Mapping) else None
    if not isinstance(metrics, Mapping):
        return out
    for who, prefix in (("student", ""), ("teacher", "teacher_")):
        table = metrics.get(who)
        if not isinstance(table, Mapping):
            continue
        for key, value in table.items():
            if isinstance(value, Mapping):
                value = value.get("mean")
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out[prefix + key] = float(value)
    training = report.get("training")
    if isinstance(training, Mapping) and isinstance(training.get("best_holdout"), Mapping):
        for key, value in training["best_holdout"].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out.setdefault(key if key.startswith("holdout") else f"holdout_{key}", float(value))
    return out


def _cost(model, size: int, latency: bool, repeats: int, device: str) -> dict:
    out = {"macs": count_macs(model.cpu(), size), "params": count_params(model), "latency_ms": None}
    if latency:
        dev = resolve_device(device)
        out["latency_ms"] = measure_latency(model.to(dev), size, dev, warmup=1, repeats=repeats)
        model.cpu()
    return out


def _cost_columns(oc, row: dict, teacher_cost: dict[tuple, dict], latency: bool, repeats: int, device: str) -> None:
    """The teacher's (measured once per teacher and size) and the student's cost, and their ratios."""
    job = oc.job
    key = (str(job.model), job.arch, json.dumps(job.arch_opts, sort_keys=True), job.image_size)
    if key not in teacher_cost:
        teacher = load_generator(str(job.model), arch=job.arch, arch_opts=job.arch_opts, device="cpu")
        teacher_cost[key] = _cost(teacher, job.image_size, latency, repeats, device)
        teacher_cost[key]["arch"] = (getattr(teacher, "ganzip_spec", None) or {}).get("arch", "")
    if not row["arch"]:  # a generator file that records its architecture
        row["arch"] = teacher_cost[key]["arch"]
    # module:callable jobs exist only in a manifest the user trusted with --trust-code
    student = load_student(oc.folder / STUDENT, arch=job.arch, arch_opts=job.arch_opts, trust_code=True)
    s = _cost(student, job.image_size, latency, repeats, device)
    t = teacher_cost[key]
    row.update({
        "teacher_macs": t["macs"], "student_macs": s["macs"], "macs_ratio": ratio(t["macs"], s["macs"]),
        "teacher_params": t["params"], "student_params": s["params"], "params_ratio": ratio(t["params"], s["params"]),
        "teacher_latency_ms": t["latency_ms"], "student_latency_ms": s["latency_ms"],
        "speedup": ratio(t["latency_ms"], s["latency_ms"]),
    })


def _finished_columns(oc, row: dict, teacher_cost: dict[tuple, dict], latency: bool, repeats: int,
                      device: str) -> None:
    """What a finished job adds to its row: cost, the report's metrics, the student and its exported latencies."""
    try:
        _cost_columns(oc, row, teacher_cost, latency, repeats, device)
    except Exception as exc:  # noqa: BLE001 - the leaderboard is written whatever one row does
        row["error"] = f"could not measure cost: {describe_exception(exc)}"
    report_path = oc.folder / "report.json"
    if report_path.is_file():
        try:
            row.update(_metric_columns(json.loads(report_path.read_text())))
        except (OSError, json.JSONDecodeError):
            row["error"] = f"{report_path} is unreadable"
    row["student"] = str(oc.folder / STUDENT)
    if latency:  # exported files beside the student (ganzip export): one latency column per backend
        row.update(latency_columns(oc.folder / STUDENT, oc.job.image_size, threads=1, repeats=repeats))


def leaderboard_rows(outcomes: Sequence, latency: bool = True, repeats: int = 5, device: str = "cpu") -> list[dict]:
    """One row per job (a `JobOutcome`): cost of teacher and student, metrics from report.json, status and error."""
    teacher_cost: dict[tuple, dict] = {}
    rows = []
    for oc in outcomes:
        job = oc.job
        row: dict[str, Any] = {
            "job": job.name, "status": oc.status, "arch": job.arch or "", "width": job.width, "recipe": Path(job.recipe).stem
            if job.recipe.endswith(".toml") else job.recipe, "size": job.image_size,
        }
        if job.group is not None:
            row.update({"seed": job.seed, "group": job.group})
        if oc.status in ("finished", "skipped"):
            _finished_columns(oc, row, teacher_cost, latency, repeats, device)
        if oc.seconds is not None:
            row["seconds"] = round(oc.seconds, 1)
        if oc.error:
            row["error"] = oc.error
        rows.append(row)
    return rows


_FIXED = ["job", "status", "arch", "width", "recipe", "size", "seed", "teacher_macs", "student_macs", "macs_ratio",
          "teacher_params", "student_params", "params_ratio", "teacher_latency_ms", "student_latency_ms", "speedup"]
_PREFERRED = ["fid", "delta_fid", "kid_mean", "lpips_to_teacher", "psnr_to_teacher", "ssim_to_teacher",
              "lpips_to_target", "psnr_to_target", "ssim_to_target", "teacher_fid", "holdout_psnr"]
_TAIL = ["seconds", "student", "error"]
_HIDDEN = {"group"}  # in leaderboard.json's rows, not a column
_NOT_AGGREGATED = {"job", "status", "arch", "width", "recipe", "size", "seed", "student", "error"}


def leaderboard_columns(rows: Sequence[Mapping]) -> list[str]:
    present = {k for r in rows for k in r} - _HIDDEN
    metrics = [k for k in _PREFERRED if k in present]
    metrics += sorted(present - set(_FIXED) - set(_PREFERRED) - set(_TAIL))
    return [c for c in _FIXED if c in present or c in ("job", "status")] + metrics + [c for c in _TAIL if c in present]


def _fmt(key: str, value: Any) -> str:
    if value is None or value == "":
        return "-"
    if key.endswith("_macs"):
        return f"{value / 1e9:.3f}G" if value >= 1e8 else f"{value / 1e6:.2f}M"
    if key.endswith("_params"):
        return f"{value:,}"
    if key.endswith("_ratio") or key == "speedup":
        return f"{value:.2f}x"
    if key.endswith("latency_ms"):
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def mean_std(values: Sequence[float]) -> dict:
    """Mean and sample standard deviation (n - 1; None for one value) of per-seed values."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"mean": mean, "std": std, "n": n}


def seed_groups(rows: Sequence[Mapping], columns: Sequence[str]) -> list[dict]:
    """Jobs expanded from `seeds`: every numeric column's mean ± std over the group's finished seeds."""
    groups: dict[str, list[Mapping]] = {}
    for r in rows:
        if r.get("group") is not None:
            groups.setdefault(r["group"], []).append(r)
    out = []
    for name, members in groups.items():
        done = [r for r in members if r["status"] in ("finished", "skipped")]
        metrics = {}
        for key in columns:
            if key in _NOT_AGGREGATED:
                continue
            values = [float(r[key]) for r in done if isinstance(r.get(key), (int, float))
                      and not isinstance(r.get(key), bool) and math.isfinite(r[key])]
            if values:
                metrics[key] = mean_std(values)
        out.append({"job": name, "seeds": [r["seed"] for r in done], "count": len(done),
                    "not_finished": [r["seed"] for r in members if r not in done], "metrics": metrics})
    return out


def _pm(key: str, entry: Mapping | None) -> str:
    if not entry:
        return "-"
    text = _fmt(key, entry["mean"])
    return text if entry["std"] is None else f"{text} ± {_fmt(key, entry['std'])}"


def _counts(rows: Sequence[Mapping]) -> dict[str, int]:
    return {s: sum(1 for r in rows if r["status"] == s) for s in ("finished", "skipped", "failed", "interrupted", "pending")}


def _seeds_csv(groups: Sequence[Mapping], agg_cols: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["job", "seeds"] + [f"{c}_{k}" for c in agg_cols for k in ("mean", "std")])
    for g in groups:
        cells: list[Any] = [g["job"], g["count"]]
        for c in agg_cols:
            e = g["metrics"].get(c)
            cells += ["" if e is None else e["mean"], "" if e is None or e["std"] is None else e["std"]]
        writer.writerow(cells)
    return buf.getvalue()


def _rows_csv(rows: Sequence[Mapping], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return buf.getvalue()


def _markdown(manifest: Path, rows: Sequence[Mapping], columns: Sequence[str], groups: Sequence[Mapping],
              agg_cols: Sequence[str], latency_info: Mapping) -> str:
    counts = _counts(rows)
    md_cols = [c for c in columns if c not in ("student", "error")]
    lines = [f"# Leaderboard: {manifest.name}", "",
             f"{counts['finished']} finished now, {counts['skipped']} finished earlier, {counts['failed']} failed"
             + (f", {counts['interrupted']} interrupted (they resume next run)" if counts["interrupted"] else "")
             + (f", {counts['pending']} not run" if counts["pending"] else "") + ".", ""]
    if latency_info.get("repeats"):
        lines += [f"Latency: median of {latency_info['repeats']} forward passes of one image at each job's size, "
                  f"on {latency_info['device']}, measured after the jobs ran, one model at a time.", ""]
    lines.append("| " + " | ".join(md_cols) + " |")
    lines.append("|" + "|".join("---" if c in ("job", "status", "arch", "recipe") else "---:" for c in md_cols) + "|")
    for r in rows:
        lines.append("| " + " | ".join(_fmt(c, r.get(c)) for c in md_cols) + " |")
    if groups:
        md_agg = [c for c in agg_cols if c not in ("student", "error")]
        lines += ["", "## Mean ± std over seeds", "",
                  "Each job run with `seeds`: the mean and the sample standard deviation (n − 1) over its "
                  "finished seeds.", "",
                  "| job | seeds | " + " | ".join(md_agg) + " |",
                  "|---|---:|" + "|".join("---:" for _ in md_agg) + "|"]
        for g in groups:
            n = f"{g['count']}" + (f" ({len(g['not_finished'])} not finished)" if g["not_finished"] else "")
            lines.append(f"| {g['job']} | {n} | " + " | ".join(_pm(c, g["metrics"].get(c)) for c in md_agg) + " |")
    failed = [r for r in rows if r.get("error")]
    if failed:
        lines += ["", "## Errors", ""]
        lines += [f"- **{r['job']}**: {_fmt('error', r['error'])}" for r in failed]
    return "\n".join(lines) + "\n"


def write_leaderboard(out: Path, manifest: Path, rows: Sequence[Mapping], latency_info: Mapping) -> dict[str, Path]:
    """Write leaderboard.json, .csv and .md into `out` (and leaderboard_seeds.csv for `seeds`); returns their paths."""
    columns = leaderboard_columns(rows)
    paths = {"json": out / "leaderboard.json", "csv": out / "leaderboard.csv", "md": out / "leaderboard.md"}
    rundir.check_replaceable(out, LEADERBOARD_FILES, overwrite=True, what="batch")
    groups = seed_groups(rows, columns)
    gio.atomic_write_json(paths["json"], {
        "manifest": str(manifest), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "counts": _counts(rows),
        "latency": dict(latency_info), "columns": columns, "jobs": list(rows),
        **({"over_seeds": groups} if groups else {}),
    })
    agg_cols = [c for c in columns if c not in _NOT_AGGREGATED and any(c in g["metrics"] for g in groups)]
    if groups:
        paths["seeds_csv"] = out / "leaderboard_seeds.csv"
        gio.atomic_write_text(paths["seeds_csv"], _seeds_csv(groups, agg_cols))
    gio.atomic_write_text(paths["csv"], _rows_csv(rows, columns))
    gio.atomic_write_text(paths["md"], _markdown(manifest, rows, columns, groups, agg_cols, latency_info))
    rundir.record(out, LEADERBOARD_FILES)
    return paths


__all__ = ["LEADERBOARD_FILES", "leaderboard_columns", "leaderboard_rows", "mean_std", "seed_groups",
           "write_leaderboard"]

"""Reports: report.json (the record), report.md and report.html (for people).

`write_reports(out_dir, report)` takes one plain dict and renders whatever
subset of these keys is present:

    schema_version, command, created, seed, data, models, recipe,
    cost {teacher, student, size, device}, metrics {teacher, student, ...},
    losses_active, training {steps, final_losses, best_step, ...},
    assets [asset records], warnings [str], versions, paths

The HTML page is self-contained apart from the PNGs written beside it (or
embedded as base64): a cost and metric table in the shape of the paper's
Table 1, an image grid input | teacher | student | target, and loss curves
drawn as inline SVG from a ``train_log.csv`` (columns ``step,<loss terms>``).
No JavaScript.
"""
from __future__ import annotations

import csv
import datetime as _dt
import math
import os
import platform
import shlex
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .devices import resolve_device
from .io import atomic_write_json, atomic_write_text
from .report_html import render_html, svg_curve
from .report_tables import (_LOG_NOT_LOSSES, COLUMN_LABELS, cost_note, LOSS_HEADER, TABLE1_HEADER, _asset_rows, _flatten,
                            _image_columns, _md_image, _num, extra_tables, headline, holdout_header, holdout_rows,
                            loss_rows, metric_header, metric_rows, model_items, one_line, samples_title,
                            table1_rows, taps_rows, training_items, TAPS_HEADER)

SCHEMA_VERSION = 1

_PACKAGES = ("torch", "torchvision", "timm", "torch-pruning", "safetensors", "lpips", "pytorch-fid",
             "numpy", "scipy", "pillow", "ganzip")


def environment_info(device: Any = None) -> dict:
    """Versions of Python and the packages ganzip relies on, the platform and the device."""
    versions: dict[str, Any] = {"python": sys.version.split()[0]}
    for name in _PACKAGES:
        try:
            versions[name.replace("-", "_")] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name.replace("-", "_")] = None
    versions["platform"] = platform.platform()
    versions["machine"] = platform.machine()
    versions["device"] = _describe_device(device)
    return versions


def _describe_device(device: Any) -> str:
    try:
        import torch

        dev = resolve_device(device if device is not None else "auto")
        if dev.type == "cuda":
            idx = dev.index if dev.index is not None else torch.cuda.current_device()
            return f"cuda:{idx} ({torch.cuda.get_device_name(idx)}, CUDA {torch.version.cuda})"
        return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    except Exception as exc:  # the report must not fail because a device query did
        return f"unknown ({type(exc).__name__})"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def compose(kind: str | None, sections: Mapping[str, Any], *, command: str | None = None,
            extra: Mapping[str, Any] | None = None, device: Any = None) -> dict:
    """The one report dict: ``schema_version``, ``kind``, ``created``, ``command``, then `sections`, then `extra`.

    `sections` are the caller's own keys (data, models, cost, metrics, ...);
    ``versions`` is filled from :func:`environment_info` (on `device`) when
    they lack it. `extra` is merged last: its ``warnings`` and ``assets`` are
    appended to the sections' own (without repeats), its ``paths`` update
    theirs, and every other key replaces the section of that name (so
    compress's ``kind`` and ``training`` go into an evaluation's report).
    """
    report: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
    if kind is not None:
        report["kind"] = kind
    report["created"] = now_iso()
    command = command or command_line()
    if command:
        report["command"] = command
    report.update(sections)
    if "versions" not in report:
        report["versions"] = environment_info(device)
    for key, value in (extra or {}).items():
        if key == "warnings":
            own = list(report.get("warnings") or [])
            report["warnings"] = own + [w for w in value if w not in own]
        elif key == "paths" and isinstance(value, Mapping):
            report["paths"] = {**(report.get("paths") or {}), **value}
        elif key == "assets" and isinstance(value, (list, tuple)):
            own = list(report.get("assets") or [])
            report["assets"] = own + [a for a in value if a not in own]
        else:
            report[key] = value
    log = (report.get("paths") or {}).get("train_log")
    if log and "loss_values" not in report:
        values = loss_values(log)
        if values:
            report["loss_values"] = values
    report["headline"] = headline(report)
    return report


def command_line(argv: Sequence[str] | None = None) -> str | None:
    """The ``ganzip ...`` command this process runs, from ``sys.argv``; None when ganzip is used as a library."""
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return None
    prog = Path(argv[0]).name
    if prog in ("ganzip", "ganzip.exe") or Path(argv[0]).as_posix().endswith("ganzip/__main__.py"):
        return shlex.join(["ganzip", *argv[1:]])
    return None


def loss_values(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """{term: {final, mean, steps}} of every loss column in a train_log.csv (not step, epoch, lr, held-out metrics)."""
    try:
        _, columns = _finite_columns(path, lambda f: f not in _LOG_NOT_LOSSES and not f.startswith("holdout_"))
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}
    sums = {t: [v for _, v in pts] for t, pts in columns.items()}
    return {t: {"final": vals[-1], "mean": math.fsum(vals) / len(vals), "steps": len(vals)} for t, vals in sums.items()}


def _finite_columns(path, keep) -> tuple[list[str], dict[str, list[tuple[float | None, float]]]]:
    """(the header, the finite numeric cells of each column ``keep`` accepts with the row's step or None).

    The one reader of train_log.csv's values.
    """
    columns: dict[str, list[tuple[float | None, float]]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        terms = [f for f in header if keep(f)]
        for row in reader:
            step = _finite(row.get("step"))
            for t in terms:
                v = _finite(row[t])
                if v is not None:
                    columns.setdefault(t, []).append((step, v))
    return header, columns


def _finite(cell) -> float | None:
    try:
        v = float(cell)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


# ---------------------------------------------------------------- training logs

def read_train_log(path: str | os.PathLike, max_points: int = 400) -> dict[str, list[tuple[float, float]]]:
    """Curves from a CSV with a `step` column and one column per loss term: {term: [(step, value)]}.

    Non-numeric and non-finite cells are skipped; long logs are thinned to about `max_points` points.
    """
    header, columns = _finite_columns(path, lambda f: f != "step")
    if "step" not in header:
        return {}
    curves = {t: [(step, v) for step, v in pts if step is not None] for t, pts in columns.items()}
    curves = {t: pts for t, pts in curves.items() if pts}
    for t, pts in curves.items():
        if len(pts) > max_points:
            stride = math.ceil(len(pts) / max_points)
            curves[t] = pts[::stride] + ([pts[-1]] if (len(pts) - 1) % stride else [])
    return curves


# ---------------------------------------------------------------- markdown

def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    def esc(x: str) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(report: Mapping, images: Sequence[Mapping[str, Any]] | None = None) -> str:
    """report.md: the same sections as the HTML page, in Markdown."""
    parts = [f"# ganzip {report.get('kind', 'report')}"]
    if report.get("headline"):
        parts.append(f"**{report['headline']}**")
    if report.get("command"):
        parts.append(f"`{report['command']}`")
    meta = [(k, _num(report[k]) if not isinstance(report[k], str) else report[k])
            for k in ("created", "seed") if report.get(k) is not None]
    if meta:
        parts.append("  \n".join(f"**{k}**: {v}" for k, v in meta))
    warnings_ = report.get("warnings") or []
    if warnings_:
        parts.append("## Warnings\n\n" + "\n".join(f"- {one_line(w)}" for w in warnings_))
    rows = table1_rows(report)
    if rows:
        parts.append("## Cost and quality\n\n" + _md_table(TABLE1_HEADER, rows) + "\n\n" + cost_note(report))
    mrows = metric_rows(report)
    if mrows:
        parts.append("## Metrics\n\n" + _md_table(metric_header(report), mrows))
    for table in extra_tables(report):
        parts.append(f"## {table['title']}\n\n" + _md_table(table["header"], table["rows"])
                     + (f"\n\n{table['note']}" if table["note"] else ""))
    if report.get("data"):
        parts.append("## Data\n\n" + _md_table(["", ""], _flatten(report["data"])))
    if images:
        cols = _image_columns(images)
        body = [[_md_image(row.get(c), c) for c in cols] for row in images]
        parts.append(f"## {samples_title(report)}\n\n" + _md_table([COLUMN_LABELS.get(c, c) for c in cols], body))
    if holdout_rows(report):
        parts.append("## Held-out training images\n\n" + _md_table(holdout_header(report), holdout_rows(report)))
    if report.get("training"):
        parts.append("## Training\n\n" + _md_table(["", ""], training_items(report)))
    if loss_rows(report):
        parts.append("## Losses\n\n" + _md_table(LOSS_HEADER, loss_rows(report)))
    if taps_rows(report):
        parts.append("## Feature taps\n\n" + _md_table(TAPS_HEADER, taps_rows(report)))
    if report.get("recipe"):
        parts.append("## Recipe\n\n" + _md_table(["setting", "value"], _flatten(report["recipe"])))
    if report.get("models"):
        parts.append("## Models\n\n" + _md_table(["", ""], model_items(report)))
    if report.get("assets"):
        parts.append("## Pretrained files\n\n" + _md_table(["asset", "file", "SHA-256", "verified"],
                                                           _asset_rows(report["assets"])))
    if report.get("versions"):
        parts.append("## Environment\n\n" + _md_table(["", ""], _flatten(report["versions"])))
    return "\n\n".join(parts) + "\n"



# ---------------------------------------------------------------- writing

def _jsonable(obj: Any) -> Any:
    """Plain JSON: numpy scalars and arrays become Python numbers, non-finite floats become null."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    item = getattr(obj, "item", None)
    if callable(item):
        try:
            return _jsonable(item())
        except (TypeError, ValueError):
            pass
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return _jsonable(tolist())
    return str(obj)


def write_reports(out_dir: str | os.PathLike, report: Mapping, images: Sequence[Mapping[str, Any]] | None = None,
                  curves: Mapping[str, Sequence[tuple[float, float]]] | None = None) -> dict[str, Path]:
    """Write report.json (with ``schema_version``), report.md and report.html into `out_dir`, atomically.

    `images` are grid rows {column: PNG path relative to out_dir, or an H x W x 3
    uint8 array to embed}. `curves` ({term: [(step, value)]}) default to the
    training log named by ``report["paths"]["train_log"]`` when that file exists.
    Returns the paths written.
    """
    out = Path(out_dir)
    data = _jsonable(dict(report))
    data.setdefault("schema_version", SCHEMA_VERSION)
    data = {"schema_version": data.pop("schema_version"), **data}
    if curves is None:
        log = (data.get("paths") or {}).get("train_log")
        if log and Path(log).is_file():
            try:
                curves = read_train_log(log)
            except (OSError, UnicodeDecodeError, csv.Error):
                curves = None
    paths = {"json": out / "report.json", "md": out / "report.md", "html": out / "report.html"}
    atomic_write_json(paths["json"], data)
    atomic_write_text(paths["md"], render_markdown(data, images))
    atomic_write_text(paths["html"], render_html(data, images, curves))
    return paths


__all__ = ["SCHEMA_VERSION", "compose", "command_line", "loss_values", "headline", "one_line", "environment_info", "read_train_log", "write_reports", "render_markdown",
           "render_html", "svg_curve", "table1_rows", "metric_rows", "now_iso"]

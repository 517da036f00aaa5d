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

import base64
import csv
import datetime as _dt
import html
import io
import math
import os
import platform
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .io import atomic_write_json, atomic_write_text

SCHEMA_VERSION = 1

_PACKAGES = ("torch", "torchvision", "timm", "torch-pruning", "safetensors", "lpips", "pytorch-fid",
             "numpy", "scipy", "pillow", "ganzip")


def environment_info(device: Any = None) -> dict:
    """Versions of Python and the packages ganzip relies on, the platform and the device."""
    from importlib import metadata

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

        from .devices import resolve_device

        dev = resolve_device(device if device is not None else "auto")
        if dev.type == "cuda":
            idx = dev.index if dev.index is not None else torch.cuda.current_device()
            return f"cuda:{idx} ({torch.cuda.get_device_name(idx)}, CUDA {torch.version.cuda})"
        return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    except Exception as exc:  # the report must not fail because a device query did
        return f"unknown ({type(exc).__name__})"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


# ---------------------------------------------------------------- training logs

def read_train_log(path: str | os.PathLike, max_points: int = 400) -> dict[str, list[tuple[float, float]]]:
    """Curves from a CSV with a `step` column and one column per loss term: {term: [(step, value)]}.

    Non-numeric and non-finite cells are skipped; long logs are thinned to about `max_points` points.
    """
    curves: dict[str, list[tuple[float, float]]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "step" not in reader.fieldnames:
            return {}
        terms = [f for f in reader.fieldnames if f != "step"]
        for row in reader:
            try:
                step = float(row["step"])
            except (TypeError, ValueError):
                continue
            for t in terms:
                try:
                    v = float(row[t])
                except (TypeError, ValueError):
                    continue
                if math.isfinite(v):
                    curves.setdefault(t, []).append((step, v))
    for t, pts in curves.items():
        if len(pts) > max_points:
            stride = math.ceil(len(pts) / max_points)
            curves[t] = pts[::stride] + ([pts[-1]] if (len(pts) - 1) % stride else [])
    return curves


# ---------------------------------------------------------------- formatting

def _num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
            return f"{x:.{digits}e}"
        return f"{x:.{digits}f}"
    return str(x)


def _macs(x: Any) -> str:
    if not isinstance(x, (int, float)):
        return "—"
    return f"{x / 1e9:.2f}G" if x >= 1e8 else f"{x / 1e6:.2f}M"


def _params(x: Any) -> str:
    if not isinstance(x, (int, float)):
        return "—"
    return f"{x / 1e6:.3f}M" if x >= 1e5 else f"{x / 1e3:.1f}K"


def _ratio(teacher: Any, student: Any) -> str:
    if isinstance(teacher, (int, float)) and isinstance(student, (int, float)) and student:
        return f"{teacher / student:.1f}×"
    return ""


def _metric_value(m: Mapping, key: str) -> Any:
    v = m.get(key)
    if isinstance(v, Mapping):
        return v.get("mean")
    return v


def table1_rows(report: Mapping) -> list[list[str]]:
    """Rows of the paper's Table 1: method | MACs (ratio) | params (ratio) | FID | ΔFID | LPIPS | latency."""
    cost = report.get("cost") or {}
    metrics = report.get("metrics") or {}
    models = report.get("models") or {}
    rows = []
    t_cost, s_cost = cost.get("teacher") or {}, cost.get("student") or {}
    t_met, s_met = metrics.get("teacher") or {}, metrics.get("student") or {}
    for who, c, m in (("teacher", t_cost, t_met), ("student", s_cost, s_met)):
        if not c and not m:
            continue
        name = who.capitalize()
        arch = (models.get(who) or {}).get("arch")
        if arch:
            name += f" ({arch})"
        macs, params, lat = _macs(c.get("macs")), _params(c.get("params")), c.get("latency_ms")
        if who == "student" and t_cost:
            r = _ratio(t_cost.get("macs"), c.get("macs"))
            macs += f" ({r})" if r else ""
            r = _ratio(t_cost.get("params"), c.get("params"))
            params += f" ({r})" if r else ""
        fid = _metric_value(m, "fid")
        delta = m.get("delta_fid") if who == "student" else None
        lp = _metric_value(m, "lpips_to_teacher") if who == "student" else None
        rows.append([name, macs, params, _num(fid, 2), (f"{delta:+.2f}" if isinstance(delta, (int, float)) else "—"),
                     _num(lp, 4), (f"{lat:.1f} ms" if isinstance(lat, (int, float)) else "—")])
    return rows


TABLE1_HEADER = ["Method", "MACs", "#Params", "FID", "ΔFID", "LPIPS", "Latency"]

_METRIC_LABELS = [
    ("fid", "FID"), ("kid_mean", "KID (mean)"), ("kid_std", "KID (std)"), ("delta_fid", "ΔFID (student − teacher)"),
    ("lpips_to_teacher", "LPIPS to teacher"), ("psnr_to_teacher", "PSNR to teacher (dB)"),
    ("ssim_to_teacher", "SSIM to teacher"), ("lpips_to_target", "LPIPS to ground truth"),
    ("psnr_to_target", "PSNR to ground truth (dB)"), ("ssim_to_target", "SSIM to ground truth"),
]


def metric_rows(report: Mapping) -> list[list[str]]:
    """Every metric present, teacher and student side by side (mean ± std for per-image metrics)."""
    metrics = report.get("metrics") or {}
    t, s = metrics.get("teacher") or {}, metrics.get("student") or {}

    def cell(m: Mapping, key: str) -> str:
        v = m.get(key)
        if isinstance(v, Mapping):
            if v.get("mean") is None:
                return "—"
            return f"{_num(v.get('mean'), 4)} ± {_num(v.get('std'), 4)}"
        if key == "delta_fid" and isinstance(v, (int, float)):
            return f"{v:+.3f}"
        return _num(v, 4 if key.startswith("kid") else 3)

    rows = []
    for key, label in _METRIC_LABELS:
        if key in t or key in s:
            rows.append([label, cell(t, key) if t else "—", cell(s, key) if s else "—"])
    return rows


def extra_tables(report: Mapping) -> list[dict]:
    """Free-form tables from ``report["tables"]``: [{title, header, rows, note?}] (e.g. `ganzip demo --compare`)."""
    out = []
    for t in report.get("tables") or []:
        if isinstance(t, Mapping) and t.get("header") and isinstance(t.get("rows"), (list, tuple)):
            out.append({"title": str(t.get("title") or "Table"), "header": [str(h) for h in t["header"]],
                        "rows": [[_num(c) if not isinstance(c, str) else c for c in r] for r in t["rows"]],
                        "note": str(t.get("note") or "")})
    return out


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if isinstance(d, Mapping):
        for k, v in d.items():
            out.extend(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(d, (list, tuple)) and not all(isinstance(x, (str, int, float, bool)) or x is None for x in d):
        for i, v in enumerate(d):
            out.extend(_flatten(v, f"{prefix}[{i}]"))
    else:
        if isinstance(d, (list, tuple)):
            d = ", ".join(_num(x) for x in d)
        out.append((prefix, _num(d) if not isinstance(d, str) else d))
    return out


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
    if report.get("command"):
        parts.append(f"`{report['command']}`")
    meta = [(k, _num(report[k]) if not isinstance(report[k], str) else report[k])
            for k in ("created", "seed") if report.get(k) is not None]
    if meta:
        parts.append("  \n".join(f"**{k}**: {v}" for k, v in meta))
    warnings_ = report.get("warnings") or []
    if warnings_:
        parts.append("## Warnings\n\n" + "\n".join(f"- {w}" for w in warnings_))
    rows = table1_rows(report)
    if rows:
        cost = report.get("cost") or {}
        note = f"MACs and latency at {cost.get('size', '?')}×{cost.get('size', '?')}, latency on {cost.get('device', '?')}."
        parts.append("## Cost and quality\n\n" + _md_table(TABLE1_HEADER, rows) + "\n\n" + note)
    mrows = metric_rows(report)
    if mrows:
        parts.append("## Metrics\n\n" + _md_table(["Metric", "Teacher", "Student"], mrows))
    for table in extra_tables(report):
        parts.append(f"## {table['title']}\n\n" + _md_table(table["header"], table["rows"])
                     + (f"\n\n{table['note']}" if table["note"] else ""))
    data = report.get("data")
    if data:
        parts.append("## Data\n\n" + _md_table(["", ""], _flatten(data)))
    if images:
        cols = _image_columns(images)
        body = [[_md_image(row.get(c), c) for c in cols] for row in images]
        parts.append("## Samples\n\n" + _md_table(cols, body))
    training = report.get("training")
    if training:
        parts.append("## Training\n\n" + _md_table(["", ""], _flatten(training)))
    if report.get("losses_active"):
        la = report["losses_active"]
        parts.append("## Losses\n\n" + (_md_table(["", ""], _flatten(la)) if isinstance(la, Mapping)
                                          else "\n".join(f"- {x}" for x in la)))
    if report.get("recipe"):
        parts.append("## Recipe\n\n" + _md_table(["setting", "value"], _flatten(report["recipe"])))
    if report.get("models"):
        parts.append("## Models\n\n" + _md_table(["", ""], _flatten(report["models"])))
    if report.get("assets"):
        parts.append("## Pretrained files\n\n" + _md_table(["asset", "file", "SHA-256", "verified"],
                                                           _asset_rows(report["assets"])))
    if report.get("versions"):
        parts.append("## Environment\n\n" + _md_table(["", ""], _flatten(report["versions"])))
    return "\n\n".join(parts) + "\n"


def _asset_rows(records: Any) -> list[list[str]]:
    if isinstance(records, Mapping):
        records = list(records.values())
    rows = []
    for r in records or []:
        if not isinstance(r, Mapping):
            continue
        verified = r.get("verified")
        mark = "yes" if verified else ("UNVERIFIED" if verified is False else "—")
        if r.get("unavailable"):
            mark = f"missing: {r['unavailable']}"
        rows.append([str(r.get("name", "")), str(r.get("path", "")), str(r.get("sha256") or "")[:16], mark])
    return rows


def _image_columns(images: Sequence[Mapping[str, Any]]) -> list[str]:
    order = ["input", "teacher", "student", "target"]
    present = {k for row in images for k, v in row.items() if v is not None}
    return [c for c in order if c in present] + sorted(present - set(order))


def _md_image(value: Any, alt: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (str, os.PathLike)):
        return f"![{alt}]({Path(value).as_posix()})"
    return f"![{alt}]({_data_uri(value)})"


def _data_uri(array: Any) -> str:
    from PIL import Image
    import numpy as np

    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# ---------------------------------------------------------------- html

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
h1{font-size:1.5em;margin-bottom:0.2em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:4px}
code{background:#f3f3f3;padding:2px 4px;border-radius:3px;font-size:0.9em;word-break:break-all}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #ddd;padding:4px 10px;text-align:left;vertical-align:top;font-size:0.92em}
th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
.warn{background:#fff4e5;border:1px solid #f0b45a;padding:8px 14px;border-radius:4px}
.warn li{margin:3px 0}.bad{color:#b00020;font-weight:600}.good{color:#1b7f3b}
.grid img{width:160px;height:auto;image-rendering:pixelated;display:block}
.grid td{padding:3px}.curves{display:flex;flex-wrap:wrap;gap:12px}
.curve{border:1px solid #ddd;border-radius:4px;padding:4px}.muted{color:#777;font-size:0.9em}
"""


def _h(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _html_table(header: Sequence[str] | None, rows: Iterable[Sequence[str]], numeric_from: int = 1) -> str:
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{_h(c)}</th>" for c in header) + "</tr>")
    for r in rows:
        cells = []
        for i, c in enumerate(r):
            cls = ' class="num"' if i >= numeric_from else ""
            cells.append(f"<td{cls}>{c if isinstance(c, _Raw) else _h(c)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


class _Raw(str):
    """Already-escaped HTML for a table cell."""


def svg_curve(points: Sequence[tuple[float, float]], title: str, width: int = 320, height: int = 180) -> str:
    """One loss curve as an inline SVG line chart with min/max labels."""
    pts = [(float(x), float(y)) for x, y in points if math.isfinite(x) and math.isfinite(y)]
    if not pts:
        return ""
    left, right, top, bottom = 48, 10, 22, 26
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5 * (abs(y0) or 1), y1 + 0.5 * (abs(y1) or 1)
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="{_h(title)}">'
        f'<text x="{left}" y="15" font-size="12" font-weight="600">{_h(title)}</text>'
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#ccc"/>'
        f'<polyline fill="none" stroke="#1f6fb2" stroke-width="1.5" points="{line}"/>'
        f'<text x="{left - 4}" y="{top + 4}" font-size="10" text-anchor="end">{_h(_num(y1, 3))}</text>'
        f'<text x="{left - 4}" y="{top + ph}" font-size="10" text-anchor="end">{_h(_num(y0, 3))}</text>'
        f'<text x="{left}" y="{height - 8}" font-size="10">{_h(_num(x0, 0))}</text>'
        f'<text x="{left + pw}" y="{height - 8}" font-size="10" text-anchor="end">step {_h(_num(x1, 0))}</text>'
        "</svg>"
    )


def render_html(report: Mapping, images: Sequence[Mapping[str, Any]] | None = None,
                curves: Mapping[str, Sequence[tuple[float, float]]] | None = None) -> str:
    """report.html: tables, the image grid and SVG loss curves, one self-contained page."""
    title = f"ganzip {report.get('kind', 'report')}"
    body = [f"<h1>{_h(title)}</h1>"]
    if report.get("command"):
        body.append(f"<p><code>{_h(report['command'])}</code></p>")
    meta = [f"{_h(k)}: {_h(report[k])}" for k in ("created", "seed") if report.get(k) is not None]
    if meta:
        body.append(f'<p class="muted">{" · ".join(meta)}</p>')
    if report.get("warnings"):
        items = "".join(f"<li>{_h(w)}</li>" for w in report["warnings"])
        body.append(f'<div class="warn"><strong>Warnings</strong><ul>{items}</ul></div>')
    rows = table1_rows(report)
    if rows:
        cost = report.get("cost") or {}
        body.append("<h2>Cost and quality</h2>" + _html_table(TABLE1_HEADER, rows))
        body.append(f'<p class="muted">MACs and latency at {_h(cost.get("size", "?"))}×{_h(cost.get("size", "?"))}; '
                    f'latency on {_h(cost.get("device", "?"))}. Ratios are teacher ÷ student.</p>')
    mrows = metric_rows(report)
    if mrows:
        body.append("<h2>Metrics</h2>" + _html_table(["Metric", "Teacher", "Student"], mrows))
    for table in extra_tables(report):
        body.append(f"<h2>{_h(table['title'])}</h2>" + _html_table(table["header"], table["rows"])
                    + (f'<p class="muted">{_h(table["note"])}</p>' if table["note"] else ""))
    if report.get("data"):
        body.append("<h2>Data</h2>" + _html_table(None, _flatten(report["data"]), numeric_from=99))
    if images:
        cols = _image_columns(images)
        grid_rows = []
        for row in images:
            cells = []
            for c in cols:
                v = row.get(c)
                if v is None:
                    cells.append(_Raw(""))
                else:
                    src = Path(v).as_posix() if isinstance(v, (str, os.PathLike)) else _data_uri(v)
                    cells.append(_Raw(f'<img src="{_h(src)}" alt="{_h(c)}">'))
            grid_rows.append(cells)
        body.append('<h2>Samples</h2><div class="grid">' + _html_table(cols, grid_rows, numeric_from=99) + "</div>")
    training = report.get("training")
    if curves:
        charts = "".join(f'<div class="curve">{svg_curve(pts, name)}</div>' for name, pts in curves.items() if pts)
        body.append(f'<h2>Loss curves</h2><div class="curves">{charts}</div>')
    if training:
        body.append("<h2>Training</h2>" + _html_table(None, _flatten(training), numeric_from=99))
    la = report.get("losses_active")
    if la:
        body.append("<h2>Losses</h2>" + (_html_table(None, _flatten(la), numeric_from=99) if isinstance(la, Mapping)
                                         else "<ul>" + "".join(f"<li>{_h(x)}</li>" for x in la) + "</ul>"))
    if report.get("recipe"):
        body.append("<h2>Recipe</h2>" + _html_table(["setting", "value"], _flatten(report["recipe"]), numeric_from=99))
    if report.get("models"):
        body.append("<h2>Models</h2>" + _html_table(None, _flatten(report["models"]), numeric_from=99))
    if report.get("assets"):
        arows = []
        for r in _asset_rows(report["assets"]):
            cls = "good" if r[3] == "yes" else "bad"
            arows.append(r[:3] + [_Raw(f'<span class="{cls}">{_h(r[3])}</span>')])
        body.append("<h2>Pretrained files</h2>" + _html_table(["asset", "file", "SHA-256", "verified"], arows, 99))
    if report.get("versions"):
        body.append("<h2>Environment</h2>" + _html_table(None, _flatten(report["versions"]), numeric_from=99))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_h(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


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


__all__ = ["SCHEMA_VERSION", "environment_info", "read_train_log", "write_reports", "render_markdown",
           "render_html", "svg_curve", "table1_rows", "metric_rows", "now_iso"]

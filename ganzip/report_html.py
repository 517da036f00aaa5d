"""report.html: tables, the image grid and SVG loss curves, one self-contained page (no JavaScript)."""
from __future__ import annotations

import html
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .report_tables import (COLUMN_LABELS, HOLDOUT_LABEL, LOSS_HEADER, TABLE1_HEADER, _asset_rows, _data_uri, _flatten,
                            _image_columns, _num, extra_tables, holdout_header, holdout_rows, loss_rows,
                            metric_header, metric_rows, model_items, one_line, samples_title, cost_note,
                            table1_rows, taps_rows, training_items, TAPS_HEADER)


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
.curve{border:1px solid #ddd;border-radius:4px;padding:4px}.headline{font-size:1.1em;font-weight:600;margin:4px 0}.muted{color:#777;font-size:0.9em}
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


def _ticks(lo: float, hi: float) -> tuple[str, str]:
    """Compact axis labels (0.0002, 2e-05, 12.3): 3 significant digits, more when the two would read the same."""
    for digits in range(3, 9):
        a, b = f"{lo:.{digits}g}", f"{hi:.{digits}g}"
        if a != b:
            break
    return a, b


def svg_curve(points: Sequence[tuple[float, float]], title: str, width: int = 320, height: int = 180,
              x_range: tuple[float, float] | None = None) -> str:
    """One curve as an inline SVG line chart with min/max labels; sparse series (held-out metrics) get dots.

    `x_range` puts every panel of a report on the same step axis.
    """
    pts = [(float(x), float(y)) for x, y in points if math.isfinite(x) and math.isfinite(y)]
    if not pts:
        return ""
    left, right, top, bottom = 48, 10, 22, 26
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = x_range if x_range is not None else (min(xs), max(xs))
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5 * (abs(y0) or 1), y1 + 0.5 * (abs(y1) or 1)
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
    lo, hi = _ticks(y0, y1)
    dots = "".join(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="#1f6fb2"/>' for x, y in pts) \
        if len(pts) <= 40 else ""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="{_h(title)}">'
        f'<text x="{left}" y="15" font-size="12" font-weight="600">{_h(title)}</text>'
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#ccc"/>'
        + (f'<polyline fill="none" stroke="#1f6fb2" stroke-width="1.5" points="{line}"/>' if len(pts) > 1 else "")
        + dots +
        f'<text x="{left - 4}" y="{top + 8}" font-size="10" text-anchor="end">{_h(hi)}</text>'
        f'<text x="{left - 4}" y="{top + ph}" font-size="10" text-anchor="end">{_h(lo)}</text>'
        f'<text x="{left}" y="{height - 8}" font-size="10">step {_h(_num(x0, 0))}</text>'
        f'<text x="{left + pw}" y="{height - 8}" font-size="10" text-anchor="end">{_h(_num(x1, 0))}</text>'
        "</svg>"
    )


def curve_panels(curves: Mapping[str, Sequence[tuple[float, float]]]) -> list[tuple[str, str]]:
    """(title, svg) per panel: the loss terms, then the lr, then each held-out metric; "epoch" is not a curve."""
    shown = {k: v for k, v in curves.items() if v and k not in ("step", "epoch", "select_metric", "select_reason")}
    steps = [x for pts in shown.values() for x, _ in pts]
    if not steps:
        return []
    x_range = (min(steps), max(steps))
    losses = [k for k in shown if k != "lr" and not k.startswith("holdout_")]
    order = losses + [k for k in shown if k == "lr"] + [k for k in shown if k.startswith("holdout_")]
    panels = []
    for name in order:
        title = (f"{name.removeprefix('holdout_')} ({HOLDOUT_LABEL})" if name.startswith("holdout_")
                 else ("learning rate" if name == "lr" else ("total loss" if name == "loss" else f"{name} loss")))
        panels.append((title, svg_curve(shown[name], title, x_range=x_range)))
    return panels


def render_html(report: Mapping, images: Sequence[Mapping[str, Any]] | None = None,
                curves: Mapping[str, Sequence[tuple[float, float]]] | None = None) -> str:
    """report.html: tables, the image grid and SVG loss curves, one self-contained page."""
    title = f"ganzip {report.get('kind', 'report')}"
    body = _html_top(report, title) + _html_results(report)
    if images:
        body.append(_html_samples(report, images))
    if curves:
        panels = curve_panels(curves)
        charts = "".join(f'<div class="curve">{svg}</div>' for _, svg in panels if svg)
        body.append(f'<h2>Loss curves</h2><div class="curves">{charts}</div>')
    body += _html_details(report)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_h(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _html_top(report: Mapping, title: str) -> list[str]:
    body = [f"<h1>{_h(title)}</h1>"]
    if report.get("headline"):
        body.append(f'<p class="headline">{_h(report["headline"])}</p>')
    if report.get("command"):
        body.append(f"<p><code>{_h(report['command'])}</code></p>")
    meta = [f"{_h(k)}: {_h(report[k])}" for k in ("created", "seed") if report.get(k) is not None]
    if meta:
        body.append(f'<p class="muted">{" · ".join(meta)}</p>')
    if report.get("warnings"):
        items = "".join(f"<li>{_h(one_line(w))}</li>" for w in report["warnings"])
        body.append(f'<div class="warn"><strong>Warnings</strong><ul>{items}</ul></div>')
    return body


def _html_results(report: Mapping) -> list[str]:
    body = []
    rows = table1_rows(report)
    if rows:
        body.append("<h2>Cost and quality</h2>" + _html_table(TABLE1_HEADER, rows))
        body.append(f'<p class="muted">{_h(cost_note(report))}</p>')
    mrows = metric_rows(report)
    if mrows:
        body.append("<h2>Metrics</h2>" + _html_table(metric_header(report), mrows))
    for table in extra_tables(report):
        body.append(f"<h2>{_h(table['title'])}</h2>" + _html_table(table["header"], table["rows"])
                    + (f'<p class="muted">{_h(table["note"])}</p>' if table["note"] else ""))
    if report.get("data"):
        body.append("<h2>Data</h2>" + _html_table(None, _flatten(report["data"]), numeric_from=99))
    return body


def _html_samples(report: Mapping, images: Sequence[Mapping[str, Any]]) -> str:
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
    return (f'<h2>{_h(samples_title(report))}</h2><div class="grid">'
            + _html_table([COLUMN_LABELS.get(c, c) for c in cols], grid_rows, numeric_from=99) + "</div>")


def _html_details(report: Mapping) -> list[str]:
    body = []
    if holdout_rows(report):
        body.append(f"<h2>{_h(HOLDOUT_LABEL.capitalize())}</h2>"
                    + _html_table(holdout_header(report), holdout_rows(report)))
    if report.get("training"):
        body.append("<h2>Training</h2>" + _html_table(None, training_items(report), numeric_from=99))
    if loss_rows(report):
        body.append("<h2>Losses</h2>" + _html_table(LOSS_HEADER, loss_rows(report)))
    if taps_rows(report):
        body.append("<h2>Feature taps</h2>" + _html_table(TAPS_HEADER, taps_rows(report), numeric_from=99))
    if report.get("recipe"):
        body.append("<h2>Recipe</h2>" + _html_table(["setting", "value"], _flatten(report["recipe"]), numeric_from=99))
    if report.get("models"):
        body.append("<h2>Models</h2>" + _html_table(None, model_items(report), numeric_from=99))
    if report.get("assets"):
        arows = []
        for r in _asset_rows(report["assets"]):
            cls = "good" if r[3] == "yes" else "bad"
            arows.append(r[:3] + [_Raw(f'<span class="{cls}">{_h(r[3])}</span>')])
        body.append("<h2>Pretrained files</h2>" + _html_table(["asset", "file", "SHA-256", "verified"], arows, 99))
    if report.get("versions"):
        body.append("<h2>Environment</h2>" + _html_table(None, _flatten(report["versions"]), numeric_from=99))
    return body


__all__ = ["render_html", "svg_curve", "curve_panels"]

"""The report's tables and cells: the paper's Table 1, the metric table, free-form tables, flattened sections.

Shared by the Markdown and HTML renderings (``ganzip.report``, ``ganzip.report_html``) and the CLI's summary.
"""
from __future__ import annotations

import base64
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .io import png_bytes


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
    return "data:image/png;base64," + base64.b64encode(png_bytes(np.asarray(array, dtype=np.uint8))).decode("ascii")


__all__ = ["TABLE1_HEADER", "table1_rows", "metric_rows", "extra_tables"]

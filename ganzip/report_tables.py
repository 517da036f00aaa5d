"""The report's tables and cells: the paper's Table 1, the metric table, free-form tables, flattened sections.

Shared by the Markdown and HTML renderings (``ganzip.report``, ``ganzip.report_html``) and the CLI's summary.
"""
from __future__ import annotations

import base64
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .io import png_bytes


def _num(x: Any, digits: int = 2) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        if x != 0 and (abs(x) >= 1e5 or abs(x) < 10 ** -digits):
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
                     _num(lp, 2), (f"{lat:.1f} ms" if isinstance(lat, (int, float)) else "—")])
    return rows


UP, DOWN, TOWARDS_ONE = "↑", "↓", "→1"
TABLE1_HEADER = ["Method", f"MACs {DOWN}", f"#Params {DOWN}", f"FID {DOWN}", f"ΔFID {DOWN}", f"LPIPS {DOWN}",
                 f"Latency {DOWN}"]

# (metric key, label, higher is better; None: best at 1, as sharpness: below is blurred, above is noise)
METRICS = [
    ("fid", "FID", False), ("kid_mean", "KID (mean)", False), ("kid_std", "KID (std)", False),
    ("delta_fid", "ΔFID (student − teacher)", False),
    ("lpips_to_teacher", "LPIPS to teacher", False), ("psnr_to_teacher", "PSNR to teacher (dB)", True),
    ("ssim_to_teacher", "SSIM to teacher", True), ("lpips_to_target", "LPIPS to ground truth", False),
    ("psnr_to_target", "PSNR to ground truth (dB)", True), ("ssim_to_target", "SSIM to ground truth", True),
    ("sharpness_to_teacher", "sharpness vs teacher", None), ("sharpness_to_target", "sharpness vs ground truth", None),
]
_METRIC_LABELS = [(k, label) for k, label, _ in METRICS]


def marked(label: str, higher_is_better: bool | None) -> str:
    """A metric's label with its direction: ``PSNR ↑`` (higher is better), ``FID ↓`` (lower), ``sharpness →1`` (best at 1)."""
    return f"{label} {TOWARDS_ONE if higher_is_better is None else UP if higher_is_better else DOWN}"


def split_label(report: Mapping) -> str:
    """Which images the report's metrics were measured on, in words: "test split, 100 images"."""
    metrics = report.get("metrics") or {}
    data = report.get("data") or {}
    split = metrics.get("split") or data.get("split") or data.get("eval_split")
    count = metrics.get("count") or data.get("images") or data.get("eval_images")
    if not split:
        return ""
    return f"{split} split" + (f", {count} images" if count else "")


def metric_rows(report: Mapping) -> list[list[str]]:
    """Every metric present, teacher and student side by side (mean ± std for per-image metrics), 2 decimals.

    KID is given to 4 decimals: its values are around 0.01, where 2 decimals say nothing.
    """
    metrics = report.get("metrics") or {}
    t, s = metrics.get("teacher") or {}, metrics.get("student") or {}

    def cell(m: Mapping, key: str) -> str:
        v = m.get(key)
        digits = 4 if key.startswith("kid") else 2
        if isinstance(v, Mapping):
            if v.get("mean") is None:
                return "—"
            return f"{_num(v.get('mean'), digits)} ± {_num(v.get('std'), digits)}"
        if key == "delta_fid" and isinstance(v, (int, float)):
            return f"{v:+.2f}"
        return _num(v, digits)

    rows = []
    for key, label, higher in METRICS:
        if key in t or key in s:
            rows.append([marked(label, higher), cell(t, key) if t else "—", cell(s, key) if s else "—"])
    return rows


def metric_header(report: Mapping) -> list[str]:
    """The metric table's header, naming the images measured."""
    where = split_label(report)
    return [f"Metric ({where})" if where else "Metric", "Teacher", "Student"]


def _ratio_value(cost: Mapping, key: str) -> float | None:
    r = (cost.get("ratios") or {}).get(key)
    if isinstance(r, (int, float)) and math.isfinite(r):
        return float(r)
    t, s = (cost.get("teacher") or {}).get(key), (cost.get("student") or {}).get(key)
    if isinstance(t, (int, float)) and isinstance(s, (int, float)) and s:
        return t / s
    return None


def headline(report: Mapping) -> str:
    """One line that says what the compression bought and cost.

    "12.1× fewer MACs, 3.3× faster on this CPU, 24.6 dB to the teacher, FID not measured (test split, 100 images)".
    """
    cost = report.get("cost") or {}
    s_met = (report.get("metrics") or {}).get("student") or {}
    t_met = (report.get("metrics") or {}).get("teacher") or {}
    parts = []
    macs = _ratio_value(cost, "macs")
    if macs is not None:
        parts.append(f"{macs:.1f}× fewer MACs")
    lat = _ratio_value(cost, "latency_ms")
    device = str(cost.get("device") or "")
    where = "this GPU" if device.startswith("cuda") else ("this CPU" if device.startswith("cpu") else device)
    if lat is not None:
        parts.append(f"{lat:.1f}× faster on {where}" if lat >= 1 else f"{1 / lat:.1f}× slower on {where}")
    elif macs is not None:
        parts.append("latency not measured")
    psnr = _metric_value(s_met, "psnr_to_teacher")
    if isinstance(psnr, (int, float)):
        parts.append(f"{psnr:.1f} dB to the teacher")
    elif isinstance(_metric_value(s_met, "psnr_to_target"), (int, float)):
        parts.append(f"{_metric_value(s_met, 'psnr_to_target'):.1f} dB to the ground truth")
    fid = _metric_value(s_met, "fid")
    if isinstance(fid, (int, float)):
        t_fid = _metric_value(t_met, "fid")
        parts.append(f"FID {fid:.1f}" + (f" (teacher {t_fid:.1f})" if isinstance(t_fid, (int, float)) else ""))
    elif report.get("metrics") is not None or parts:
        parts.append("FID not measured")
    where = split_label(report)
    return ", ".join(parts) + (f" ({where})" if where and parts else "")


def _drop_aside(text: str) -> str | None:
    """`text` without its longest parenthetical aside (balanced), or None when it has none."""
    best, start, depth = None, -1, 0
    for i, ch in enumerate(text):
        if ch == "(":
            if depth == 0:
                start = i
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
            if depth == 0 and (best is None or i - start > best[1] - best[0]):
                best = (start, i)
    if best is None:
        return None
    return (text[:best[0]].rstrip() + text[best[1] + 1:]).strip()


_ASSET_WORDS = (".pth", "ganzip assets", "pretrained", "weights", "vgg16", "inception", "alexnet")


def one_line(warning: str, limit: int = 160) -> str:
    """A warning cut to one short line; one about a missing pretrained file points to `ganzip assets`.

    The first sentence is kept without a file's description; long asides in parentheses go next, then the end
    is cut.
    """
    text = re.sub(r"(\.(?:pth|pt|npz)) \((?:[^()]|\([^()]*\))*\)", r"\1", " ".join(str(warning).split()))
    cut = text.find(". ")
    if cut > 0:
        text = text[:cut]
    while len(text) > limit:
        shorter = _drop_aside(text)
        if shorter is None:
            break
        text = shorter
    if len(text) > limit:
        text = text[:limit - 1].rstrip() + "…"
    if any(w in warning.lower() for w in _ASSET_WORDS) and "`ganzip assets" not in text:
        text += "; see `ganzip assets`"
    return text


def extra_tables(report: Mapping) -> list[dict]:
    """Free-form tables from ``report["tables"]``: [{title, header, rows, note?}] (e.g. `ganzip demo --compare`)."""
    out = []
    for t in report.get("tables") or []:
        if isinstance(t, Mapping) and t.get("header") and isinstance(t.get("rows"), (list, tuple)):
            out.append({"title": str(t.get("title") or "Table"), "header": [str(h) for h in t["header"]],
                        "rows": [[_num(c) if not isinstance(c, str) else c for c in r] for r in t["rows"]],
                        "note": str(t.get("note") or "")})
    return out


def _setting(x: Any) -> str:
    """A value in a settings table as given (0.999 stays 0.999; 2 decimals are for metrics)."""
    if isinstance(x, float) and math.isfinite(x):
        return f"{x:.6g}"
    return _num(x)


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
            d = ", ".join(_setting(x) for x in d)
        out.append((prefix, _setting(d) if not isinstance(d, str) else d))
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
        rows.append([str(r.get("name", "")), str(r.get("path") or "not on this machine"),
                     str(r.get("sha256") or "—")[:16], mark])
    return rows


def _image_columns(images: Sequence[Mapping[str, Any]]) -> list[str]:
    """Columns in the order every sample grid uses: input | ground truth | teacher | student(s), then the rest."""
    order = ["input", "target", "teacher", "student"]
    present: list[str] = []
    for row in images:
        present += [k for k, v in row.items() if v is not None and k not in present]
    return [c for c in order if c in present] + [c for c in present if c not in order]


COLUMN_LABELS = {"input": "input", "target": "ground truth", "teacher": "teacher", "student": "student"}


def _md_image(value: Any, alt: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (str, os.PathLike)):
        return f"![{alt}]({Path(value).as_posix()})"
    return f"![{alt}]({_data_uri(value)})"


def _data_uri(array: Any) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(np.asarray(array, dtype=np.uint8))).decode("ascii")


# ---------------------------------------------------------------- sections shared by report.md and report.html

HOLDOUT_LABEL = "held-out training images"
_LOG_NOT_LOSSES = ("step", "epoch", "lr", "select_metric", "select_reason")


def loss_rows(report: Mapping) -> list[list[str]]:
    """The Losses table: term | weight | final | mean over the log (values from train_log.csv, not only weights)."""
    la = report.get("losses_active") or {}
    weights = la.get("student") if isinstance(la, Mapping) and isinstance(la.get("student"), Mapping) else la
    weights = weights if isinstance(weights, Mapping) else {}
    values = report.get("loss_values") or {}
    terms = list(weights) + [t for t in values if t not in weights]
    rows = []
    for term in terms:
        v = values.get(term) or {}
        w = weights.get(term)
        rows.append([term, _num(w) if isinstance(w, (int, float)) else ("total" if term == "loss" else "—"),
                     _num(v.get("final")), _num(v.get("mean"))])
    if isinstance(la, Mapping):
        for term, why in (la.get("disabled") or {}).items():
            if term not in values:
                rows.append([term, f"off ({why})", "—", "—"])
    return rows


LOSS_HEADER = ["term", "weight", "final", "mean"]


def holdout_rows(report: Mapping) -> list[list[str]]:
    """The selection metrics compress measured during training, on held-out training images (not the test split)."""
    tr = report.get("training") or {}
    best, last = tr.get("best_holdout") or {}, tr.get("last_holdout") or {}
    rows = []
    for key in list(best) + [k for k in last if k not in best]:
        name = key.removeprefix("holdout_")
        higher = not any(w in name for w in ("l1", "lpips", "kid", "fid"))
        rows.append([marked(name.upper() if len(name) <= 5 else name, higher), _num(best.get(key)),
                     _num(last.get(key))])
    return rows


def holdout_header(report: Mapping) -> list[str]:
    tr = report.get("training") or {}
    return [f"Metric ({HOLDOUT_LABEL})", f"kept student (step {tr.get('best_step', '?')})",
            f"last step ({tr.get('steps', '?')})"]


def training_items(report: Mapping) -> list[tuple[str, str]]:
    """The Training section without what the holdout, Losses and Feature taps tables show."""
    tr = {k: v for k, v in (report.get("training") or {}).items()
          if k not in ("best_holdout", "last_holdout", "loss_terms", "feature_taps")}
    return _flatten(tr)


TAPS_HEADER = ["layer", "teacher (C×H×W)", "student (C×H×W)", "chosen as"]


def _shape(x: Any) -> str:
    return "×".join(str(v) for v in x) if isinstance(x, (list, tuple)) else _num(x)


def taps_rows(report: Mapping) -> list[list[str]]:
    """The layers the feature terms compare, with their shapes in teacher and student (empty without feature terms)."""
    taps = (report.get("training") or {}).get("feature_taps") or []
    return [[str(t.get("layer", "")), _shape(t.get("teacher")), _shape(t.get("student")), str(t.get("reason", ""))]
            for t in taps if isinstance(t, Mapping)]


def _first_layer(info: Mapping) -> Any:
    return (info.get("channels") or {}).get("first_layer")


def model_items(report: Mapping) -> list[tuple[str, str]]:
    """The Models section: a student's options are its teacher's spec, so they are labelled so, beside its real
    first-layer channels."""
    models = dict(report.get("models") or {})
    student = dict(models.get("student") or {})
    if student.get("student") and "opts" in student:
        student["built_from_teacher_opts"] = student.pop("opts")
    if student:
        models["student"] = student
    return _flatten(models)


def samples_title(report: Mapping) -> str:
    where = split_label(report)
    return f"Samples ({where})" if where else "Samples"


def cost_note(report: Mapping) -> str:
    """Where the cost and quality figures come from: image size, device, and the images measured."""
    cost = report.get("cost") or {}
    where = split_label(report)
    return (f"MACs and latency at {cost.get('size', '?')}×{cost.get('size', '?')}, latency on "
            f"{cost.get('device', '?')}; ratios are teacher ÷ student" + (f"; FID and LPIPS on the {where}." if where
                                                                          else "."))

def terminal_summary(report: dict, printed: set | frozenset = frozenset()) -> str:
    """A terminal summary: the headline, Table 1, the other metrics, warnings (one line each; not those already
    `printed`) and where the reports are."""
    lines = []
    for w in report.get("warnings") or []:
        if w not in printed:
            lines.append(f"warning: {one_line(w)}")
    if lines:
        lines.append("")
    if report.get("headline"):
        lines.append(report["headline"])
    lines.append(_columns([TABLE1_HEADER] + table1_rows(report)))
    rows = metric_rows(report)
    if rows:
        lines += ["", _columns([[h.lower() for h in metric_header(report)]] + rows)]
    paths = report.get("paths") or {}
    if paths.get("report_html"):
        lines += ["", f"report: {paths['report_html']}"]
    return "\n".join(lines)


def _columns(rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)

__all__ = ["TABLE1_HEADER", "TAPS_HEADER", "taps_rows", "METRICS", "table1_rows", "metric_rows", "metric_header", "extra_tables", "headline",
           "one_line", "split_label", "marked", "COLUMN_LABELS", "loss_rows", "LOSS_HEADER", "holdout_rows",
           "holdout_header", "training_items", "model_items", "samples_title", "HOLDOUT_LABEL", "cost_note", "terminal_summary"]

"""The demo's statistics over seeds: mean ± std per student, and crd paired against each other student."""
from __future__ import annotations

import math
from typing import Sequence

from .errors import GanzipError


def metric_mean(m: dict, key: str):
    """A metric's value in an evaluation's metrics: the mean of a per-image summary, else the number."""
    v = m.get(key)
    if isinstance(v, dict):
        return v.get("mean")
    return v


# (table header, metric key in the evaluation's student metrics, higher is better)
SEED_METRICS = (
    ("PSNR to teacher (dB)", "psnr_to_teacher", True), ("SSIM to teacher", "ssim_to_teacher", True),
    ("LPIPS to teacher", "lpips_to_teacher", False), ("PSNR to ground truth (dB)", "psnr_to_target", True),
    ("SSIM to ground truth", "ssim_to_target", True), ("LPIPS to ground truth", "lpips_to_target", False),
    ("FID", "fid", False), ("KID", "kid_mean", False),
)


def _sample_stats(values: Sequence[float]) -> dict:
    n = len(values)
    mean = sum(values) / n
    std = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else None
    return {"mean": mean, "std": std, "n": n, "values": list(values)}


def paired_differences(a: Sequence[float], b: Sequence[float]) -> dict:
    """Paired comparison over seeds of two students measured on the same test images.

    ``a[i]`` and ``b[i]`` are seed ``i``'s means over the same images. Returns
    the differences ``a - b`` (mean, sample std), the paired t statistic and
    its two-sided p-value (n - 1 degrees of freedom; scipy), and the
    seed-to-seed spread of each student (sample std).
    """
    if len(a) != len(b) or len(a) < 2:
        raise GanzipError("a paired comparison needs the same seeds, at least 2, for both students")
    from scipy import stats

    d = [x - y for x, y in zip(a, b)]
    diff = _sample_stats(d)
    if diff["std"] == 0:
        t, p = (math.inf if diff["mean"] else 0.0), (0.0 if diff["mean"] else 1.0)
    else:
        t = diff["mean"] / (diff["std"] / math.sqrt(len(d)))
        p = float(2 * stats.t.sf(abs(t), len(d) - 1))
    return {"diff": diff, "t": t, "p": p, "spread_a": _sample_stats(list(a))["std"],
            "spread_b": _sample_stats(list(b))["std"]}


def add_seed_tables(report: dict, runs: Sequence, labels: Sequence[str], seeds: int) -> None:
    """Mean ± std over the seeds per student, and crd paired against each other student."""
    per: dict[str, dict[str, dict[int, float]]] = {}
    for r in runs:
        s = r.metrics.get("student", {})
        for _, key, _ in SEED_METRICS:
            v = metric_mean(s, key)
            if isinstance(v, (int, float)) and math.isfinite(v):
                per.setdefault(r.label, {}).setdefault(key, {})[r.seed] = float(v)
    done = {label: sorted({r.seed for r in runs if r.label == label}) for label in labels}
    over = {label: {key: _sample_stats([vals[s] for s in sorted(vals)]) for key, vals in per.get(label, {}).items()}
            for label in labels}
    shown = [(h, k, hi) for h, k, hi in SEED_METRICS if any(k in over[label] for label in labels)]
    rows = []
    for label in labels:
        cells = [label, str(len(done[label]))]
        for _, key, _ in shown:
            e = over[label].get(key)
            cells.append("—" if e is None else _pm(key, e))
        rows.append(cells)
    report["tables"][0]["title"] += " (seed 0)"
    report["over_seeds"] = {"seeds": list(range(seeds)), "students": over}
    report["tables"].append({
        "title": f"Mean ± std over {seeds} seeds", "header": ["student", "seeds"] + [h for h, _, _ in shown],
        "rows": rows,
        "note": ("Seeds 0..N-1 change the student's initialisation, the discriminator's, the data order, the "
                 "augmentation and the training/held-out split; the test images are the same for every seed. "
                 "± is the sample standard deviation over the seeds (n − 1)."),
    })
    main = labels[0]
    paired, prow = [], []
    for other in labels[1:]:
        for header, key, higher in shown:
            common = sorted(set(per.get(main, {}).get(key, {})) & set(per.get(other, {}).get(key, {})))
            if len(common) < 2:
                continue
            res = paired_differences([per[main][key][s] for s in common], [per[other][key][s] for s in common])
            spread = max(v for v in (res["spread_a"], res["spread_b"]) if v is not None)
            exceeds = abs(res["diff"]["mean"]) > spread
            better = (res["diff"]["mean"] > 0) == higher
            verdict = (f"yes: {main if better else other} is better" if exceeds else "no")
            paired.append({"a": main, "b": other, "metric": key, "seeds": common, **res,
                           "exceeds_spread": exceeds, "better": (main if better else other) if exceeds else None})
            prow.append([f"{main} − {other}", header, _pm(key, res["diff"]),
                         f"{res['t']:.2f}" if math.isfinite(res["t"]) else "inf", f"{res['p']:.3f}",
                         f"{spread:.4g}", verdict])
    report["paired"] = paired
    if prow:
        report["tables"].append({
            "title": f"{main} against each student, paired over seeds",
            "header": ["difference", "metric", "mean ± std over seeds", "paired t", "p (two-sided)",
                       "seed-to-seed spread", "exceeds the spread"],
            "rows": prow,
            "note": ("Each seed's value is the mean over the same test images, so the two students are paired by "
                     "seed. 'Exceeds the spread': the mean difference is larger than the seed-to-seed standard "
                     "deviation of both students. With few seeds the t test has little power: read p with care."),
        })


def _pm(key: str, e: dict) -> str:
    digits = 4 if key.startswith(("ssim", "lpips", "kid")) else 2
    text = f"{e['mean']:.{digits}f}"
    return text if e.get("std") is None else f"{text} ± {e['std']:.{digits}f}"


__all__ = ["SEED_METRICS", "metric_mean", "paired_differences", "add_seed_tables"]

"""Cost of building a student: wall time and peak memory of `build_student` per architecture.

The bound (issue 12): at most 60 s and 2 GB for any generator of up to 25M
parameters at 256², on the CPU. On a shared, overloaded machine wall time
mostly measures the other jobs, so CPU time (one thread) is printed beside it
and either within the bound counts. Each architecture runs in its own process so
that peak memory (ru_maxrss) is its own; the baseline is the process after
imports and after the teacher is built, so "build peak" is what building the
student adds. Teachers are the third-party classes at their published sizes
(tests/third_party_models.py) with random weights. Also prints the parameter
ratio and the MAC ratio (torchprofile, at a 64² input: MACs of these
fully-convolutional models scale with the pixel count) and what stayed whole.

    python bench/student_build.py                   # every architecture, a table
    python bench/student_build.py --json out.json   # and the raw numbers
    python bench/student_build.py --only DnCNN      # one (a substring of the name)
    python bench/student_build.py --markdown        # also the table of docs/models.md
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LIMIT_S, LIMIT_GB, LIMIT_PARAMS = 60.0, 2.0, 25e6
EXTRA = {  # the 22M-24M encoder-decoder that ran out of memory before issue 12
    "smp Unet / ResNet-34": ("segmentation_models_pytorch:Unet",
                             {"encoder_name": "resnet34", "encoder_weights": None, "in_channels": 3, "classes": 3,
                              "activation": "tanh"}),
}


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # KiB on Linux


def one(name: str, width: float, size: int) -> dict:
    import warnings

    import torch

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    from ganzip.loading import build_arch
    from ganzip.metrics.cost import count_macs, count_params
    from ganzip.student import build_student
    from tests.third_party_models import build, by_name

    torch.manual_seed(0)
    if name in EXTRA:
        arch, opts = EXTRA[name]
        teacher = build_arch(arch, opts).eval()
    else:
        teacher = build(by_name(name), full=True)
    base = _rss_gb()
    t0, c0 = time.perf_counter(), time.process_time()
    student = build_student(teacher, width, init="inherit", size=size)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    peak = _rss_gb()
    info = student.ganzip_student
    return {
        "name": name, "params": count_params(teacher), "student_params": count_params(student),
        "params_ratio": count_params(teacher) / count_params(student),
        "macs_ratio": count_macs(teacher, 64) / count_macs(student, 64),
        "seconds": seconds, "cpu_seconds": cpu_seconds, "peak_gb": peak, "build_gb": max(peak - base, 0.0), "trace": info["trace"],
        "unpruned": info["unpruned"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--only", default=None, help="run the architectures whose name contains this")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--markdown", action="store_true", help="also print the table of docs/models.md")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one(args.child, args.width, args.size)))
        return
    from tests.third_party_models import CATALOGUE

    names = [e.name for e in CATALOGUE] + list(EXTRA)
    names = [n for n in names if args.only is None or args.only in n]
    rows = []
    print(f"build_student(width={args.width}, size={args.size}), CPU, 1 thread; bound {LIMIT_S:.0f} s and "
          f"{LIMIT_GB:.0f} GB up to {LIMIT_PARAMS / 1e6:.0f}M parameters")
    print(f"{'architecture':42s} {'params':>8s} {'build s':>8s} {'cpu s':>6s} {'peak GB':>8s} {'+GB':>6s} "
          f"{'params x':>8s} {'MACs x':>7s} {'whole':>5s}  ok")
    for name in names:
        proc = subprocess.run([sys.executable, __file__, "--child", name, "--width", str(args.width),
                               "--size", str(args.size)], capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            line = (proc.stderr.strip().splitlines() or ["?"])[-1]
            print(f"{name:42s} FAILED: {line}")
            rows.append({"name": name, "error": line})
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        within = r["params"] > LIMIT_PARAMS or (min(r["seconds"], r["cpu_seconds"]) <= LIMIT_S and r["peak_gb"] <= LIMIT_GB)
        r["within_bound"] = within
        rows.append(r)
        print(f"{name:42s} {r['params'] / 1e6:7.2f}M {r['seconds']:8.1f} {r['cpu_seconds']:6.1f} {r['peak_gb']:8.2f} {r['build_gb']:6.2f} "
              f"{r['params_ratio']:8.2f} {r['macs_ratio']:7.2f} {len(r['unpruned']):5d}  {'yes' if within else 'NO'}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.markdown:
        print()
        print(markdown(rows))


def _why(reason: str) -> str:
    for key, short in (("writes the output", "output layer"), ("image's", "on the image's channels"),
                       ("would leave", "too few channels"), ("cannot follow", "torch-pruning cannot map it"),
                       ("failed to prune", "torch-pruning failed on it"), ("broke the student", "broke the student"),
                       ("the same layer as", "its twin broke in another block of the class")):
        if key in reason:
            return short
    return reason


def markdown(rows: list[dict]) -> str:
    """The docs/models.md table: what stayed at full width (grouped by reason) and the ratios reached."""
    from tests.third_party_models import CATALOGUE

    structure = {e.name: e.structure for e in CATALOGUE}
    structure.update({n: "encoder-decoder, 24M parameters" for n in EXTRA})
    lines = ["| architecture | structure | params | params × | MACs × | left at full width |",
             "|---|---|---:|---:|---:|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | {structure.get(r['name'], '')} | | | | refused: {r['error']} |")
            continue
        by_reason: dict[str, list[str]] = {}
        for u in r["unpruned"]:
            by_reason.setdefault(_why(u["reason"]), []).append(u["layer"])
        left = "; ".join(f"{why}: {', '.join(f'`{n}`' for n in names[:3])}"
                         + (f" (+{len(names) - 3})" if len(names) > 3 else "") for why, names in by_reason.items())
        lines.append(f"| {r['name']} | {structure.get(r['name'], '')} | {r['params'] / 1e6:.2f}M | "
                     f"{r['params_ratio']:.2f} | {r['macs_ratio']:.2f} | {left} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

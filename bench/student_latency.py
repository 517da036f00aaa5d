"""Student vs teacher latency at 256x256: eager PyTorch, TorchScript and onnxruntime.

A random-weight CycleGAN `resnet_9blocks` (ngf 64, InstanceNorm) is the
teacher; its width-0.25 students (round_to 1 and 8) are cut with
`ganzip.student.build_student`. Every model is exported (and verified) with
`ganzip.export.export_model`. All runs happen in ONE process, interleaved
(teacher, students, teacher, ... per repeat), and the median of the repeats
is reported, so background load hits every model alike. Torch and
onnxruntime use all cores (`os.sched_getaffinity`) unless --threads says
otherwise.

The script prints, per runtime, the measured speed-up (teacher / student
latency) against the MACs ratio and whether it reaches 0.6x of it, plus
where the time goes (torch.profiler op breakdown, eager) and how each model
scales from one thread to all, which is what explains a shortfall.

    python bench/student_latency.py                 # ~2-4 min on 2 CPU cores
    python bench/student_latency.py --repeats 9 --json latency.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from ganzip import models
from ganzip.export import export_model
from ganzip.metrics.cost import count_macs, count_params
from ganzip.student import build_student

TARGET_FRACTION = 0.6  # the speed-up should reach 0.6x of the MACs ratio


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _runner_eager(model):
    def run(x):
        with torch.inference_mode():
            model(x)
    return run


def _runner_torchscript(path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = torch.jit.load(str(path)).eval()

    def run(x):
        with torch.inference_mode():
            m(x)
    return run


def _runner_onnx(path, threads):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def run(x):
        sess.run(None, {name: x.numpy()})
    return run


def _interleaved(runners: dict, x, repeats: int, warmup: int = 1) -> dict:
    """Median ms per runner; each repeat runs every runner once, in turn."""
    times = {k: [] for k in runners}
    for i in range(warmup + repeats):
        for key, run in runners.items():
            t0 = time.perf_counter()
            run(x)
            if i >= warmup:
                times[key].append((time.perf_counter() - t0) * 1000.0)
    return {k: {"median_ms": statistics.median(v), "min_ms": min(v), "max_ms": max(v), "runs": len(v)}
            for k, v in times.items()}


def _op_breakdown(model, x) -> dict:
    """Share of eager CPU time per op family (one profiled forward after a warm-up)."""
    from torch.profiler import ProfilerActivity, profile

    families = {"conv": ("conv", "mkldnn"), "norm": ("instance_norm", "batch_norm", "native_batch_norm"),
                "pad": ("pad",), "activation": ("relu", "tanh", "threshold"), "add": ("add",)}
    from ganzip.export import _silence_native_output  # kineto prints start/stop lines from C++

    with torch.inference_mode():
        model(x)
        with _silence_native_output(), profile(activities=[ProfilerActivity.CPU]) as prof:
            model(x)
    totals = {k: 0.0 for k in families} | {"other": 0.0}
    # Self time of leaf aten ops, so nested calls are not counted twice.
    for evt in prof.key_averages():
        if not evt.key.startswith("aten::"):
            continue
        name = evt.key[len("aten::"):]
        fam = next((f for f, keys in families.items() if any(k in name for k in keys)), "other")
        totals[fam] += evt.self_cpu_time_total
    total = sum(totals.values()) or 1.0
    return {k: round(100.0 * v / total, 1) for k, v in totals.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet_9blocks")
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--round-to", type=int, nargs="+", default=[1, 8])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5, help="timed runs per model and runtime (median reported)")
    p.add_argument("--threads", type=int, default=None, help="torch/onnxruntime threads (default: all cores)")
    p.add_argument("--no-onnx", action="store_true")
    p.add_argument("--no-torchscript", action="store_true")
    p.add_argument("--no-analysis", action="store_true", help="skip the op breakdown and the 1-thread runs")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    args = p.parse_args(argv)

    threads = args.threads or _cores()
    torch.set_num_threads(threads)
    t_start = time.perf_counter()
    print(f"# {args.arch} ngf {args.ngf} vs width-{args.width} students at {args.size}x{args.size}, batch 1, CPU")
    load = os.getloadavg()[0]
    print(f"# torch {torch.__version__}, {threads} threads (all {_cores()} cores available to this process), "
          f"load average {load:.1f}, {platform.processor() or platform.machine()}")
    if load > _cores() and threads > 1:
        print(f"# warning: load average {load:.1f} on {_cores()} cores: other processes compete for the CPU, and "
              "multi-threaded ops stall waiting for descheduled threads; compare with --threads 1")

    torch.manual_seed(0)
    teacher = models.create(args.arch, ngf=args.ngf).eval()
    variants = {"teacher": teacher}
    for r in args.round_to:
        variants[f"student_r{r}"] = build_student(teacher, args.width, init="inherit", round_to=r, size=64)
    cost = {k: {"macs": count_macs(m, args.size), "params": count_params(m)} for k, m in variants.items()}
    students = [k for k in variants if k != "teacher"]
    same = [k for k in students[1:] if cost[k] == cost[students[0]]]
    if same:
        print(f"# note: {', '.join(same)} has the same channels as {students[0]} "
              f"(width {args.width} of ngf {args.ngf} is already a multiple of the rounding): "
              "their rows differ only by measurement noise")
    x = torch.randn(1, 3, args.size, args.size).clamp(-1, 1)

    runtimes = {"eager": {k: _runner_eager(m) for k, m in variants.items()}}
    exported = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, flag in (("torchscript", args.no_torchscript), ("onnx", args.no_onnx)):
            if flag:
                continue
            if fmt == "onnx":
                try:
                    import onnxruntime  # noqa: F401
                except ImportError:
                    print("# onnxruntime is not installed: skipping the ONNX runtime")
                    continue
            runners = {}
            for k, m in variants.items():
                t0 = time.perf_counter()
                res = export_model(m, Path(tmp) / f"{k}.{fmt}", format=fmt, size=args.size, latency=False,
                                   seeds=(0,))
                exported[f"{fmt}/{k}"] = {"max_abs_diff": res.max_abs_diff, "export_s": round(time.perf_counter() - t0, 1)}
                runners[k] = _runner_torchscript(res.path) if fmt == "torchscript" else _runner_onnx(res.path, threads)
            runtimes[fmt] = runners

        flat = {f"{rt}/{k}": run for rt, rs in runtimes.items() for k, run in rs.items()}
        timings = _interleaved(flat, x, args.repeats)

    results = {"config": vars(args) | {"json": str(args.json) if args.json else None, "threads": threads,
                                       "cores": _cores(), "torch": torch.__version__, "python": sys.version.split()[0]},
               "cost": cost, "exported": exported, "latency_ms": timings, "speedups": {}}
    print()
    print(f"{'model':<14}{'MACs':>10}{'params':>11}" + "".join(f"{rt + ' ms':>16}" for rt in runtimes))
    for k in variants:
        print(f"{k:<14}{cost[k]['macs'] / 1e9:>9.2f}G{cost[k]['params']:>11,}"
              + "".join(f"{timings[f'{rt}/{k}']['median_ms']:>16.1f}" for rt in runtimes))
    print()
    print(f"{'runtime':<13}{'student':<13}{'MACs ratio':>11}{'speed-up':>10}{'/ MACs':>8}  reaches {TARGET_FRACTION}x?")
    for rt in runtimes:
        for k in variants:
            if k == "teacher":
                continue
            macs_ratio = cost["teacher"]["macs"] / cost[k]["macs"]
            speedup = timings[f"{rt}/teacher"]["median_ms"] / timings[f"{rt}/{k}"]["median_ms"]
            ok = speedup >= TARGET_FRACTION * macs_ratio
            results["speedups"][f"{rt}/{k}"] = {"macs_ratio": macs_ratio, "speedup": speedup,
                                                "fraction_of_macs_ratio": speedup / macs_ratio, "reaches_target": ok}
            print(f"{rt:<13}{k:<13}{macs_ratio:>10.2f}x{speedup:>9.2f}x{speedup / macs_ratio:>8.2f}  "
                  f"{'yes' if ok else 'no'}")

    if not args.no_analysis:
        student_key = next(k for k in variants if k != "teacher")
        results["op_time_percent"] = {k: _op_breakdown(variants[k], x) for k in ("teacher", student_key)}
        print()
        print("where eager time goes (% of op self time): " + "; ".join(
            f"{k}: " + ", ".join(f"{f} {v:.0f}" for f, v in results["op_time_percent"][k].items() if v >= 1)
            for k in results["op_time_percent"]))
        if threads > 1:
            torch.set_num_threads(1)
            one = _interleaved({k: runtimes["eager"][k] for k in ("teacher", student_key)}, x,
                               max(2, args.repeats // 2))
            torch.set_num_threads(threads)
            results["eager_one_thread_ms"] = one
            for k in ("teacher", student_key):
                scale = one[k]["median_ms"] / timings[f"eager/{k}"]["median_ms"]
                results.setdefault("thread_scaling", {})[k] = scale
                print(f"{k}: 1 thread {one[k]['median_ms']:.1f} ms -> {threads} threads "
                      f"{timings[f'eager/{k}']['median_ms']:.1f} ms ({scale:.2f}x from threads)")
        conv_t = results["op_time_percent"]["teacher"]["conv"]
        conv_s = results["op_time_percent"][student_key]["conv"]
        short = not all(v["reaches_target"] for v in results["speedups"].values())
        print()
        print(("Why the speed-up falls short" if short else "What keeps the speed-up below the MACs ratio")
              + ": MACs count only convolutions (and affine norms), which take "
              f"{conv_t:.0f}% of the teacher's eager time but {conv_s:.0f}% of the student's. The rest "
              "(InstanceNorm, reflection padding, ReLU, residual adds) is memory-bound work that shrinks only "
              "linearly with the channel count, not with its square, plus a fixed cost per layer (dispatch, "
              "allocation) that does not shrink at all"
              + ("; and a 16-64-channel convolution gives threads less to share than a 64-256-channel one "
                 "(see the thread scaling above)." if threads > 1 else "."))

    results["seconds"] = round(time.perf_counter() - t_start, 1)
    results["load_average"] = {"start": round(load, 2), "end": round(os.getloadavg()[0], 2)}
    print(f"\n# {results['seconds']:.0f} s in all; load average {load:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"# wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""INT8 against FP32 onnxruntime for the paper's width-0.25 resnet_9blocks student, in one run.

The teacher is a CycleGAN `resnet_9blocks` (ngf 64, InstanceNorm, random
weights: no pretrained generator can be downloaded here); the student keeps a
quarter of its channels (inherited weights). ganzip exports it to FP32 ONNX
and to INT8 ONNX (`ganzip.export.export_model(..., int8=True)`, calibrated on
`--calibration` images), then this script times both in onnxruntime on one
thread, interleaved, and reports:

* the INT8 / FP32 speed-up (median of `--repeats`),
* the INT8 student's PSNR to the FP32 student (held-out images),
* the FP32 / INT8 file-size ratio,
* a per-operator profile of both (onnxruntime's profiler), and
* with `--variants`, the same numbers for other choices of what to quantize
  (everything the quantizer can; transposed convolutions quantized too; the output conv in float).

    python bench/int8.py --json int8.json
    python bench/int8.py --variants --calibration builtin:edges2shapes --size 256
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from ganzip import models
from ganzip.export import export_model
from ganzip.quantize import QUANTIZED_OPS, calibration_images, fidelity, quantize_onnx
from ganzip.student import build_student


def session(path, threads, profile_prefix=None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def op_profile(path, x, threads, runs=5) -> dict[str, float]:
    """Mean ms per run spent in each operator type (onnxruntime's own profiler)."""
    with tempfile.TemporaryDirectory() as tmp:
        sess = session(path, threads, profile_prefix=os.path.join(tmp, "p"))
        for _ in range(2 + runs):
            sess.run(None, {"input": x})
        trace = json.load(open(sess.end_profiling()))
    per_op = defaultdict(float)
    for ev in trace:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            per_op[ev["args"]["op_name"]] += ev["dur"] / 1000.0
    # the first 2 runs are warm-up: scale by the share of runs profiled after them
    return {op: ms / (2 + runs) for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1])}


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    return sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512bw", "amx_int8"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--calibration", default="builtin:edges2shapes")
    ap.add_argument("--calibration-images", type=int, default=32)
    ap.add_argument("--variants", action="store_true", help="Also measure other choices of operators to quantize.")
    ap.add_argument("--executorch", action="store_true",
                    help="Also INT8 vs FP32 in ExecuTorch/XNNPACK (needs ganzip[mobile]).")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    teacher = models.create("resnet_9blocks", ngf=64).eval()
    student = build_student(teacher, args.width, init="inherit", size=args.size).eval()
    work = Path(tempfile.mkdtemp(prefix="ganzip-int8-bench-"))
    t0 = time.time()
    fp32 = export_model(student, work / "s.onnx", size=args.size, latency=False, threads=args.threads)
    int8 = export_model(student, work / "s.int8.onnx", size=args.size, int8=True, calibration=args.calibration,
                        calibration_images=args.calibration_images, latency=False, threads=args.threads)
    export_s = time.time() - t0
    q = int8.quantization

    x = np.asarray(torch.randn(1, 3, args.size, args.size).clamp(-1, 1).numpy())
    files = {"fp32": work / "s.onnx", "int8": work / "s.int8.onnx"}
    extra = {}
    if args.variants:
        calib, held, _ = calibration_images(args.calibration, args.size, args.calibration_images)
        import onnx

        graph = onnx.load(str(files["fp32"])).graph
        last_conv = [n.name for n in graph.node if n.op_type == "Conv"][-1]
        choices = {
            "all-ops": ("Conv", "ConvTranspose", "Pad", "Add", "Relu", "InstanceNormalization", "Concat", "Resize"),
            "int8-convtranspose": QUANTIZED_OPS + ("ConvTranspose",),
        }
        for name, ops in choices.items():
            path = work / f"s.{name}.onnx"
            quantize_onnx(files["fp32"], path, calib, ops=ops)
            files[name] = path
        path = work / "s.float-output-conv.onnx"
        quantize_onnx(files["fp32"], path, calib, exclude_nodes=[last_conv])
        files["float-output-conv"] = path
        for name in list(files)[2:]:
            sess = session(files[name], args.threads)
            got = torch.cat([torch.from_numpy(sess.run(None, {"input": h[None].numpy()})[0]) for h in held])
            with torch.inference_mode():
                ref = student(held)
            extra[name] = {"psnr": fidelity(ref, got)["psnr"], "bytes": files[name].stat().st_size}

    sessions = {k: session(p, args.threads) for k, p in files.items()}
    times = defaultdict(list)
    for name, s in sessions.items():  # warm-up
        for _ in range(3):
            s.run(None, {"input": x})
    for _ in range(args.repeats):  # interleaved: every model once per repeat
        for name, s in sessions.items():
            t = time.perf_counter()
            s.run(None, {"input": x})
            times[name].append((time.perf_counter() - t) * 1000)
    med = {k: statistics.median(v) for k, v in times.items()}

    profiles = {k: op_profile(files[k], x, args.threads) for k in ("fp32", "int8")}
    et = None
    if args.executorch:
        from ganzip.backends import load_runner

        e32 = export_model(student, work / "s.pte", format="executorch", size=args.size, latency=False,
                           threads=args.threads)
        e8 = export_model(student, work / "s.int8.pte", format="executorch", size=args.size, int8=True,
                          calibration=args.calibration, calibration_images=args.calibration_images, latency=False,
                          threads=args.threads)
        runners = {"fp32": load_runner(e32.path, args.threads), "int8": load_runner(e8.path, args.threads)}
        xt = torch.from_numpy(x)
        et_times = defaultdict(list)
        for r in runners.values():
            for _ in range(3):
                r.run(xt)
        for _ in range(args.repeats):
            for k, r in runners.items():
                t = time.perf_counter()
                r.run(xt)
                et_times[k].append((time.perf_counter() - t) * 1000)
        et = {k: statistics.median(v) for k, v in et_times.items()}
        et.update({"speedup": et["fp32"] / et["int8"], "psnr": e8.quantization["to_fp32"]["psnr"],
                   "fp32_bytes": e32.bytes, "int8_bytes": e8.bytes, "fp32_max_abs_diff": e32.max_abs_diff})
    speedup = med["fp32"] / med["int8"]
    result = {
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "model": f"resnet_9blocks ngf 64, width {args.width} student (random weights), {args.size}x{args.size}",
        "threads": args.threads, "repeats": args.repeats, "cpu": platform.processor() or platform.machine(),
        "cpu_flags": cpu_flags(), "load_average": os.getloadavg(),
        "onnxruntime": __import__("onnxruntime").__version__, "torch": torch.__version__,
        "fp32_ms": med["fp32"], "int8_ms": med["int8"], "speedup": speedup,
        "psnr_int8_to_fp32": q["to_fp32"]["psnr"], "ssim_int8_to_fp32": q["to_fp32"]["ssim"],
        "evaluated_on": q["calibration"]["evaluated_on"], "calibration": q["calibration"],
        "fp32_bytes": fp32.bytes, "int8_bytes": int8.bytes, "size_ratio": fp32.bytes / int8.bytes,
        "fp32_max_abs_diff": fp32.max_abs_diff, "float_operators": q["float_operators"],
        "op_profile_ms": profiles, "variants": {k: {**v, "ms": med[k], "speedup": med["fp32"] / med[k]}
                                                for k, v in extra.items()},
        "export_seconds": export_s, "executorch": et,
    }
    print(f"{result['model']}, {args.threads} thread(s), onnxruntime {result['onnxruntime']}, "
          f"CPU flags {' '.join(result['cpu_flags'])}, load {result['load_average'][0]:.1f}")
    print(f"FP32 {med['fp32']:.1f} ms, INT8 {med['int8']:.1f} ms: speed-up {speedup:.2f}x "
          f"({'meets' if speedup >= 1.5 else 'MISSES'} the 1.5x target)")
    print(f"INT8 PSNR to FP32 {result['psnr_int8_to_fp32']:.2f} dB, SSIM {result['ssim_int8_to_fp32']:.4f} "
          f"({'meets' if result['psnr_int8_to_fp32'] >= 30 else 'MISSES'} the 30 dB target) on {result['evaluated_on']}")
    print(f"size {fp32.bytes / 1e6:.2f} MB -> {int8.bytes / 1e6:.2f} MB: {result['size_ratio']:.2f}x smaller")
    for name, v in result["variants"].items():
        print(f"variant {name}: {v['ms']:.1f} ms ({v['speedup']:.2f}x), {v['psnr']:.2f} dB, {v['bytes'] / 1e6:.2f} MB")
    if et:
        print(f"ExecuTorch/XNNPACK: FP32 {et['fp32']:.1f} ms, INT8 {et['int8']:.1f} ms: {et['speedup']:.2f}x, "
              f"{et['psnr']:.2f} dB, {et['fp32_bytes'] / et['int8_bytes']:.2f}x smaller")
    for name, prof in profiles.items():
        total = sum(prof.values())
        top = ", ".join(f"{op} {ms:.1f} ({100 * ms / total:.0f}%)" for op, ms in list(prof.items())[:6])
        print(f"{name} per-operator ms/run: {top}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=float))
    for p in glob.glob(str(work / "*")):
        os.unlink(p)
    os.rmdir(work)


if __name__ == "__main__":
    main()

"""Benchmark: ganzip's Gram-matrix CRD loss against the direct formulation (CPU).

Measures forward + backward of L_CRD (rows, columns and k x k patches; spec §2) on
random N x 3 x S x S images in [-1, 1], for ganzip.losses.CRDLoss and for the direct
formulation of the reference code (tests/reference_crd.py, which materialises all N^2
difference vectors of each set). Prints the ratios measured in this one run and
optionally writes them as JSON.

* time: median of --repeats runs, both implementations in the same process, interleaved
  (direct, ganzip, ganzip, direct, ...), after one warm-up run of ganzip's.
  Also the process CPU time of the same runs (less sensitive to other processes on a
  shared machine than wall time, though OpenMP threads spinning at barriers count).
* peak memory (for --memory-batches, default batch 1 only: a direct run at batch 4
  needs about 5 GB and as long as a timed run): each implementation runs once in a
  fresh subprocess; the number is the
  process's peak resident set (VmHWM in /proc/self/status) minus its resident set just
  before the loss call (after imports and input creation), i.e. the extra memory the
  forward+backward needed. (getrusage's ru_maxrss is not used: on Linux a child started
  by fork+exec inherits the parent's high-water mark, which would count the parent.)
* floor: the bare N^3 element-wise work of the angle term, on cosines computed in
  advance (not timed): for every set, one op over all N^3 triplets, in chunks of
  anchors like ganzip's so that the data sits in cache. Two such ops are timed: the
  huber itself (smooth_l1, sum) and a plain multiply-add pass (dot). No implementation
  of the angle term can do less than touch every triplet once; ganzip's time is reported
  relative to both.

* scaling (--scaling-sizes, default 128 256 512): CPU time of ganzip's forward+backward
  at each image size S (batch 1), of the direct formulation up to --scaling-direct-max
  (default 256: at 512 it needs about 16x the 256 time and several GB), and of the
  floor; then the exponent p of a least-squares fit time ~ S^p for each. Rows and
  columns have N = S vectors of D = 3S, so the N^3 floor grows as S^3, the Gram and
  close-pair work as N^2 D = 3 S^3 too, and the direct formulation's N^3 D as S^4.
* --input: random images (default), or `half-flat` (left half 0.97 + 1e-6 noise, the
  issue-13 case: many close pairs, so the explicit-difference path does work) or
  `bands` (three flat colour bands + 1e-6 noise).

The bench sets OMP_WAIT_POLICY=PASSIVE before torch loads (see `_set_omp_wait_policy`);
`--omp-wait-policy default` measures with libgomp's spinning threads instead.

Example (about 2 minutes on an idle 2-core CPU)::

    python bench/crd_loss.py --size 256 --batch 1 4 --repeats 3 --json crd_bench.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _set_omp_wait_policy(argv) -> str:
    """OMP_WAIT_POLICY must be set before torch loads libgomp, so it is read from argv here.

    libgomp's default lets idle OpenMP threads spin; on a machine shared with other busy
    processes every parallel region then waits for a descheduled spinner, which slows
    a loss made of many small operations by 5-20x (and the direct formulation much
    less). PASSIVE (the default here, unless the environment already sets a policy)
    makes idle threads sleep. `--omp-wait-policy default` keeps libgomp's behaviour.
    """
    choice = "passive"
    for i, arg in enumerate(argv):
        if arg == "--omp-wait-policy" and i + 1 < len(argv):
            choice = argv[i + 1]
        elif arg.startswith("--omp-wait-policy="):
            choice = arg.split("=", 1)[1]
    if choice == "passive":
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return os.environ.get("OMP_WAIT_POLICY", "libgomp default")


OMP_WAIT_POLICY = _set_omp_wait_policy(sys.argv[1:])

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ganzip.losses import CRDLoss, crd_slices  # noqa: E402
from tests.reference_crd import crd_direct  # noqa: E402


def _image(kind: str, batch: int, size: int, g: torch.Generator) -> torch.Tensor:
    x = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    if kind == "half-flat":
        x[..., : size // 2] = 0.97 + 1e-6 * torch.randn(batch, 3, size, size // 2, generator=g)
    elif kind == "bands":
        colours = torch.rand(batch, 3, 3, generator=g) * 2 - 1  # batch x band x channel
        band = torch.arange(size) * 3 // size
        x = colours[:, band].permute(0, 2, 1).unsqueeze(3).expand(batch, 3, size, size)
        x = x + 1e-6 * torch.randn(batch, 3, size, size, generator=g)
    return x.contiguous()


def _inputs(batch: int, size: int, seed: int = 0, kind: str = "random"):
    g = torch.Generator().manual_seed(seed)
    student = _image(kind, batch, size, g).requires_grad_(True)
    teacher = _image(kind, batch, size, g)
    return student, teacher


def _loss_fn(which: str, patch_size: int, chunk_size: int | None, precision: str = "auto"):
    if which == "direct":
        return lambda s, t: crd_direct(s, t, patch_size=patch_size)
    module = CRDLoss(patch_size=patch_size, chunk_size=chunk_size, precision=precision)
    return module


def _fwd_bwd(fn, student, teacher) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, loss value) of one forward + backward."""
    student.grad = None
    c0, t0 = time.process_time(), time.perf_counter()
    loss = fn(student, teacher)
    loss.backward()
    return time.perf_counter() - t0, time.process_time() - c0, float(loss.detach())


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _memory_child(which: str, args) -> None:
    student, teacher = _inputs(args.batch[0], args.size, kind=args.input)
    fn = _loss_fn(which, args.patch_size, args.chunk_size, args.precision)
    before = _status_kib("VmRSS") * 1024
    _fwd_bwd(fn, student, teacher)
    peak = _status_kib("VmHWM") * 1024
    print(json.dumps({"before_bytes": before, "peak_bytes": peak, "delta_bytes": max(0, peak - before)}))


def _measure_memory(which: str, args, batch: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_memory-child", which, "--size", str(args.size),
           "--batch", str(batch), "--patch-size", str(args.patch_size), "--omp-wait-policy", args.omp_wait_policy,
           "--threads", str(torch.get_num_threads()), "--input", args.input, "--precision", args.precision]
    if args.chunk_size:
        cmd += ["--chunk-size", str(args.chunk_size)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _floor_seconds(student, teacher, patch_size: int, repeats: int) -> dict:
    """Median seconds of one op over the N^3 precomputed cosines of every set (see module doc)."""
    from ganzip.losses.crd import _auto_chunk

    chunks = []  # (student cosine chunk, teacher cosine chunk, times it is reused)
    with torch.no_grad():
        for g in ("rows", "columns", "patches"):
            s_sets, t_sets = crd_slices(student, g, patch_size), crd_slices(teacher, g, patch_size)
            n = s_sets.shape[1]
            b = _auto_chunk(1, n, student.device)
            pair = []
            for x in (s_sets[0], t_sets[0]):
                e = F.normalize(x[:b].unsqueeze(1) - x.unsqueeze(0), dim=2)  # b anchors x N x D
                pair.append(torch.bmm(e, e.transpose(1, 2)))  # b x N x N cosines
            chunks.append((pair[0], pair[1], s_sets.shape[0] * (n // b)))
    ops = {
        "huber": lambda cs, ct: F.smooth_l1_loss(cs, ct, reduction="sum"),
        "dot": lambda cs, ct: torch.dot(cs.reshape(-1), ct.reshape(-1)),
    }
    out = {}
    for name, op in ops.items():
        times, cpu = [], []
        for _ in range(repeats + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            for cs, ct, reps in chunks:
                for _ in range(reps):
                    op(cs, ct)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        out[name] = statistics.median(times[1:])
        out[name + "_cpu"] = statistics.median(cpu[1:])
    return out


def _fit_exponent(sizes, seconds) -> float:
    """Least-squares slope of log(seconds) against log(size)."""
    xs, ys = [math.log(s) for s in sizes], [math.log(t) for t in seconds]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def _scaling(args) -> dict:
    """CPU seconds (median of repeats) at each of --scaling-sizes, batch 1, and the fits."""
    rows = []
    for size in args.scaling_sizes:
        student, teacher = _inputs(1, size, kind=args.input)
        patch = args.patch_size if size % args.patch_size == 0 else 16
        ganzip = _loss_fn("ganzip", patch, args.chunk_size, args.precision)
        _fwd_bwd(ganzip, student, teacher)  # warm-up
        cpu = {"ganzip": [_fwd_bwd(ganzip, student, teacher)[1] for _ in range(args.repeats)]}
        if size <= args.scaling_direct_max:
            direct = _loss_fn("direct", patch, None)
            cpu["direct"] = [_fwd_bwd(direct, student, teacher)[1] for _ in range(max(1, args.repeats // 2))]
        floor = _floor_seconds(student.detach(), teacher, patch, args.repeats)
        row = {"size": size, "patch_size": patch, "cpu_s": cpu,
               "median_cpu_s": {k: statistics.median(v) for k, v in cpu.items()}, "floor_cpu_s": floor["huber_cpu"]}
        row["ganzip_over_floor"] = row["median_cpu_s"]["ganzip"] / row["floor_cpu_s"]
        rows.append(row)
        med = row["median_cpu_s"]
        direct_txt = (f"direct {med['direct'] * 1e3:9.1f} ms ({med['direct'] / med['ganzip']:.1f}x)"
                      if "direct" in med else "direct not run (too costly: see --scaling-direct-max)")
        print(f"  {size:4d}^2: ganzip {med['ganzip'] * 1e3:8.1f} ms cpu, floor {row['floor_cpu_s'] * 1e3:7.1f} ms "
              f"(ganzip {row['ganzip_over_floor']:.1f}x the floor), {direct_txt}")
    sizes = [r["size"] for r in rows]
    fits = {"ganzip": _fit_exponent(sizes, [r["median_cpu_s"]["ganzip"] for r in rows]),
            "floor": _fit_exponent(sizes, [r["floor_cpu_s"] for r in rows])}
    with_direct = [r for r in rows if "direct" in r["median_cpu_s"]]
    if len(with_direct) >= 2:
        fits["direct"] = _fit_exponent([r["size"] for r in with_direct],
                                       [r["median_cpu_s"]["direct"] for r in with_direct])
    print("  fitted exponent p of cpu time ~ S^p: " + ", ".join(f"{k} {v:.2f}" for k, v in fits.items())
          + " (the N^3 floor is S^3; the direct formulation's N^3 D is S^4)")
    return {"sizes": rows, "exponents": fits}


def run(args) -> dict:
    results = {
        "benchmark": "crd_loss",
        "command": "python bench/crd_loss.py " + " ".join(sys.argv[1:]),
        "size": args.size,
        "patch_size": args.patch_size,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "omp_wait_policy": OMP_WAIT_POLICY,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_before": list(os.getloadavg()),
        "time_method": "median of repeats, forward+backward, same process, interleaved",
        "memory_method": "fresh subprocess per implementation: VmHWM minus VmRSS just before the forward+backward",
        "floor_method": "one op (smooth_l1 sum, or dot) over the N^3 precomputed cosines of every set, "
                        "in cache-sized chunks of anchors, forward only",
        "time_budget_s": args.time_budget,
        "memory_batches": args.memory_batches,
        "input": args.input,
        "precision": args.precision,
        "runs": [],
    }
    deadline = time.perf_counter() + args.time_budget
    direct_per_image = None  # seconds, from the last direct run
    for b_index, batch in enumerate(args.batch):
        measure_memory = batch in args.memory_batches
        student, teacher = _inputs(batch, args.size, kind=args.input)
        fns = {"direct": _loss_fn("direct", args.patch_size, None),
               "ganzip": _loss_fn("ganzip", args.patch_size, args.chunk_size, args.precision)}
        values = {"ganzip": _fwd_bwd(fns["ganzip"], student, teacher)[2]}  # warm-up (the direct one is too slow)
        wall = {"direct": [], "ganzip": []}
        cpu = {"direct": [], "ganzip": []}
        for r in range(args.repeats):
            if r > 0:
                # leave time for this batch's memory runs and one repeat of each later batch
                next_round = wall["direct"][-1] + wall["ganzip"][-1]
                memory_reserve = 1.2 * wall["direct"][-1] + 10.0 if measure_memory else 0.0
                later = 1.2 * direct_per_image * sum(args.batch[b_index + 1:])
                if time.perf_counter() + next_round + memory_reserve + later > deadline:
                    break  # over the time budget: keep the repeats taken so far
            for name in (("direct", "ganzip") if r % 2 == 0 else ("ganzip", "direct")):
                w, c, values[name] = _fwd_bwd(fns[name], student, teacher)
                wall[name].append(w)
                cpu[name].append(c)
            direct_per_image = wall["direct"][-1] / batch
        med = {k: statistics.median(v) for k, v in wall.items()}
        med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
        floor = _floor_seconds(student.detach(), teacher, args.patch_size, args.repeats)
        run_ = {
            "batch": batch,
            "repeats_taken": len(wall["direct"]),
            "loss_direct": values["direct"],
            "loss_ganzip": values["ganzip"],
            "loss_rel_diff": abs(values["direct"] - values["ganzip"]) / abs(values["direct"]),
            "wall_s": wall,
            "cpu_s": cpu,
            "median_s": med,
            "median_cpu_s": med_cpu,
            "speedup": med["direct"] / med["ganzip"],
            "speedup_cpu": med_cpu["direct"] / med_cpu["ganzip"],
            "floor_s": floor,
            "ganzip_over_floor": {k: med["ganzip"] / v for k, v in floor.items()},
        }
        if measure_memory:
            mem = {k: _measure_memory(k, args, batch) for k in ("direct", "ganzip")}
            run_["memory"] = mem
            run_["memory_ratio"] = mem["ganzip"]["delta_bytes"] / max(1, mem["direct"]["delta_bytes"])
        results["runs"].append(run_)
        _print_run(run_)
    if args.scaling_sizes:
        print(f"scaling, batch 1, {args.input} inputs, median of {args.repeats} (ganzip) runs:")
        results["scaling"] = _scaling(args)
    results["load_average_after"] = list(os.getloadavg())
    return results


def _print_run(r: dict) -> None:
    med, cpu, floor = r["median_s"], r["median_cpu_s"], r["floor_s"]
    print(f"batch {r['batch']}: loss direct {r['loss_direct']:.6g} ganzip {r['loss_ganzip']:.6g} "
          f"(relative difference {r['loss_rel_diff']:.1e}); {r['repeats_taken']} timed repeats")
    print(f"  wall   direct {med['direct'] * 1e3:9.1f} ms   ganzip {med['ganzip'] * 1e3:8.1f} ms   "
          f"speedup {r['speedup']:5.1f}x  (median, forward+backward)")
    print(f"  cpu    direct {cpu['direct'] * 1e3:9.1f} ms   ganzip {cpu['ganzip'] * 1e3:8.1f} ms   "
          f"speedup {r['speedup_cpu']:5.1f}x  (process CPU time, all threads)")
    print(f"  floor  huber {floor['huber'] * 1e3:.1f} ms, dot {floor['dot'] * 1e3:.1f} ms over the N^3 "
          f"precomputed cosines; ganzip = {r['ganzip_over_floor']['huber']:.1f}x / "
          f"{r['ganzip_over_floor']['dot']:.1f}x the floor")
    if "memory" in r:
        m = r["memory"]
        print(f"  memory direct {m['direct']['delta_bytes'] / 2**20:8.1f} MiB   ganzip "
              f"{m['ganzip']['delta_bytes'] / 2**20:7.1f} MiB   ratio {r['memory_ratio']:.3f} "
              "(peak over resident before the call, fresh process each)")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256, help="image side S (default 256)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 4], help="batch sizes (default 1 4)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per implementation (default 3)")
    p.add_argument("--patch-size", type=int, default=32)
    p.add_argument("--chunk-size", type=int, default=None, help="ganzip anchors per chunk (default: auto)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--omp-wait-policy", choices=("passive", "default"), default="passive",
                   help="passive (default): set OMP_WAIT_POLICY=PASSIVE unless already set; default: leave it")
    p.add_argument("--time-budget", type=float, default=240.0,
                   help="seconds (default 240): take fewer repeats when the run would exceed it; "
                        "at least one of each is always taken")
    p.add_argument("--memory-batches", type=int, nargs="*", default=[1],
                   help="batch sizes whose peak memory is measured (default 1; none: skip)")
    p.add_argument("--input", choices=("random", "half-flat", "bands"), default="random",
                   help="input images (default random; see above)")
    p.add_argument("--precision", choices=("auto", "float64", "float32"), default="auto",
                   help="ganzip's CRDLoss precision (default auto: float64 on the CPU)")
    p.add_argument("--scaling-sizes", type=int, nargs="*", default=[128, 256, 512],
                   help="image sizes of the scaling run (default 128 256 512; none: skip)")
    p.add_argument("--scaling-direct-max", type=int, default=256,
                   help="largest size at which the scaling run also times the direct formulation (default 256)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--_memory-child", dest="memory_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        _memory_child(args.memory_child, args)
        return
    print(f"CRD loss, {args.size}x{args.size}, patch {args.patch_size}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, OMP_WAIT_POLICY {OMP_WAIT_POLICY}, "
          f"load average {os.getloadavg()[0]:.2f}")
    results = run(args)
    print(f"load average after: {results['load_average_after'][0]:.2f} (the machine may be shared: "
          "compare runs taken under similar load)")
    if args.json:
        from ganzip.io import atomic_write_json

        atomic_write_json(args.json, results)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

"""Benchmark: one full `crd` distillation step against one `kd-pixel` step (issue: ≤ 1.3×).

Both recipes run through ganzip's own engine (`ganzip.engine.compress`) with the same
teacher, the same width-0.25 student, the same data and batch size. A step's cost is the
engine's own per-step timer (`TrainResult.step_seconds`: teacher forward, student
forward and backward, every loss term, the D step and both optimiser steps; data loading
excluded), median over the steps of a run after the first (warm-up). Runs of the two
recipes alternate (crd, kd, crd, kd, ...) and the median over --repeats is reported, so
machine drift hits both alike.

The perceptual term needs VGG-16 ImageNet weights, which are not downloadable here: the
bench saves a RANDOM-WEIGHT VGG-16 stand-in (same layers, same cost) and points the
recipe at it. The cost of a step does not depend on the weights' values.

A second table breaks the crd step into its parts, timed in this process on the same
modules (teacher forward; student forward+backward; D step; CRD, perceptual and GAN
terms forward+backward), to show where the extra cost goes.

Example (about 3 minutes on a 2-core CPU at 128 px):

    python bench/distill_step.py --size 128 --json distill_step.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ganzip import models  # noqa: E402
from ganzip.engine import compress  # noqa: E402
from ganzip.io import save_safetensors_atomic  # noqa: E402
from ganzip.losses import CRDLoss, GANLoss, PerceptualLoss, PixelLoss, frozen  # noqa: E402
from ganzip.losses.perceptual import vgg16_features_to_relu4_3  # noqa: E402
from ganzip.student import build_student  # noqa: E402


def make_vgg_standin(path: Path) -> Path:
    torch.manual_seed(0)
    feats = vgg16_features_to_relu4_3()
    save_safetensors_atomic({f"features.{k}": v for k, v in feats.state_dict().items()}, path)
    return path


def run(recipe: str, teacher_path: Path, args, steps: int, vgg: Path, work: Path, tag: str) -> float:
    """Median seconds per optimisation step of one run (its first step left out)."""
    res = compress(
        str(teacher_path), data=args.data, width=0.25, recipe=recipe, arch=args.arch,
        arch_opts=[f"ngf={args.ngf}"], size=args.size, steps=steps, batch_size=args.batch_size,
        overrides=[f"perceptual.weights={json.dumps(str(vgg))}"] if recipe != "kd-pixel" else [],
        out=work / f"{tag}", device="cpu", checkpoint_every=10**9, eval_every=10**9, quiet=True,
        evaluate=False, resume=False, overwrite=True, offline=True,
    )
    return statistics.median(res.train.step_seconds[1:])


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def breakdown(args, vgg: Path) -> dict[str, float]:
    torch.manual_seed(0)
    teacher = models.create(args.arch, ngf=args.ngf).eval()
    student = build_student(teacher, 0.25, size=args.size).train()
    disc = models.create("patchgan", ndf=64, norm="instance")
    x = torch.rand(args.batch_size, 3, args.size, args.size) * 2 - 1
    real = torch.rand_like(x) * 2 - 1
    crd, per, gan, pix = CRDLoss(patch_size=32 if args.size % 32 == 0 else 16), PerceptualLoss(weights_path=vgg), GANLoss("lsgan"), PixelLoss()
    with torch.no_grad():
        t_out = teacher(x)

    def teacher_fwd():
        with torch.no_grad():
            teacher(x)

    def student_fwd_bwd():
        student(x).mean().backward()

    def d_step():
        (gan(disc(real), True) + gan(disc(t_out), False)).backward()

    def term(loss_fn):
        def f():
            s = student(x)
            loss_fn(s).backward()
        return f

    def adv(s):
        with frozen(disc):
            return gan(disc(s), True)

    base = timed(student_fwd_bwd, args.repeats)
    parts = {
        "teacher forward": timed(teacher_fwd, args.repeats),
        "student forward+backward": base,
        "D step (real + teacher fake)": timed(d_step, args.repeats),
        "CRD term (extra over student f+b)": timed(term(lambda s: crd(s, t_out)), args.repeats) - base,
        "perceptual term (extra)": timed(term(lambda s: per(s, t_out)), args.repeats) - base,
        "adversarial term through frozen D (extra)": timed(term(adv), args.repeats) - base,
        "pixel L1 term (extra)": timed(term(lambda s: pix(s, t_out)), args.repeats) - base,
    }
    return parts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet_9blocks")
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--data", default="builtin:solid2striped", help="unpaired, so D has real target images")
    ap.add_argument("--steps", type=int, default=6, help="steps per run; the first is a warm-up")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        vgg = make_vgg_standin(work / "vgg16_standin.safetensors")
        torch.manual_seed(0)
        teacher = models.create(args.arch, ngf=args.ngf)
        teacher_path = work / "teacher.safetensors"
        save_safetensors_atomic(teacher.state_dict(), teacher_path)
        per_step = {"crd": [], "kd-pixel": []}
        for r in range(args.repeats):
            for recipe in ("crd", "kd-pixel"):
                per_step[recipe].append(run(recipe, teacher_path, args, args.steps, vgg, work, f"{recipe}-{r}"))
                print(f"repeat {r}: {recipe:8s} {per_step[recipe][-1] * 1000:8.1f} ms/step", flush=True)
        parts = breakdown(args, vgg)

    crd_s = statistics.median(per_step["crd"])
    kd_s = statistics.median(per_step["kd-pixel"])
    ratios = [c / k for c, k in zip(per_step["crd"], per_step["kd-pixel"])]
    print()
    print(f"{args.arch} ngf {args.ngf} -> width 0.25 student, {args.size}x{args.size}, batch {args.batch_size}, "
          f"{args.threads} threads, CPU ({platform.processor() or platform.machine()})")
    print(f"crd step      {crd_s * 1000:8.1f} ms  (median of {args.repeats})")
    print(f"kd-pixel step {kd_s * 1000:8.1f} ms")
    print(f"ratio crd / kd-pixel: {statistics.median(ratios):.2f}x  (per repeat: {', '.join(f'{r:.2f}' for r in ratios)}; goal <= 1.3x)")
    print("\nwhere a crd step's time goes (median seconds, this process):")
    for k, v in parts.items():
        print(f"  {k:45s} {v * 1000:8.1f} ms")
    out = {"bench": "distill_step", "arch": args.arch, "ngf": args.ngf, "size": args.size, "batch_size": args.batch_size,
           "threads": args.threads, "steps": args.steps, "repeats": args.repeats,
           "crd_ms_per_step": crd_s * 1000, "kd_pixel_ms_per_step": kd_s * 1000,
           "ratio_median": statistics.median(ratios), "ratios": ratios,
           "breakdown_ms": {k: v * 1000 for k, v in parts.items()},
           "torch": torch.__version__, "vgg": "random-weight stand-in (cost only)"}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

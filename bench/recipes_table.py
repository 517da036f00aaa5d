"""Train the demo task's students for the recipe comparison of docs/quality.md, one folder per student and seed.

Same protocol as `ganzip demo --compare --seeds 3` (the shipped teacher or --teacher FILE, width 0.25, batch 4, the demo's
overrides, evaluation on the same 100 test images, student kept by held-out PSNR to the teacher), for the
feature-level recipes, `--init inherit`, and the discriminator's width. Each student is written to
OUT/LABEL@sSEED (its own report.json); an existing finished folder is skipped, so the script can be stopped
and run again. `bench/demo_seeds_table.py OUT` then prints mean ± std over seeds and the paired comparison
with the first label, from those folders, with ganzip.demo's own code.

    python bench/recipes_table.py OUT --steps 200 --seeds 0 1 2 --only gc-feature cat-ka crd-ka
    python bench/recipes_table.py OUT --pair kd-pixel+inherit:kd-pixel crd+D0.5:crd   # paired differences only
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ganzip import demo, demo_seeds, engine
from ganzip.evaluation import evaluate

ANCHOR = f"kd_pixel.weight={demo.ANCHOR_WEIGHT:g}"  # as the demo: without VGG-16, crd gets an L1 anchor
# label -> (recipe, its own overrides, --init)
STUDENTS = {
    "crd": ("crd", [ANCHOR], "scratch"),
    "gc-feature": ("gc-feature", [], "scratch"),
    "cat-ka": ("cat-ka", [], "scratch"),
    "crd-ka": ("crd-ka", [ANCHOR], "scratch"),
    "crd-gc": ("crd-gc", [ANCHOR], "scratch"),
    "kd-pixel": ("kd-pixel", [], "scratch"),
    "scratch": ("scratch", [], "scratch"),
    "kd-pixel+inherit": ("kd-pixel", [], "inherit"),
    "crd+inherit": ("crd", [ANCHOR], "inherit"),
    "crd+D0.5": ("crd", [ANCHOR, "discriminator.width=0.5"], "scratch"),
    "crd+D0.25": ("crd", [ANCHOR, "discriminator.width=0.25"], "scratch"),
}


def train_and_measure(label: str, seed: int, out: Path, steps: int, batch_size: int, eval_images: int,
                      teacher: Path | None = None) -> None:
    recipe, own, init = STUDENTS[label]
    prov = demo.demo_provenance()
    size, source, teacher = int(prov["size"]), prov["data"], teacher or demo.demo_teacher_path()
    sets = demo.demo_overrides(size, perceptual=False) + own
    run_out = out / f"{label}@s{seed}"
    t0 = time.perf_counter()
    res = engine.compress(str(teacher), data=source, width=0.25, recipe=recipe, size=size, steps=steps,
                          batch_size=batch_size, seed=seed, overrides=sets, out=run_out, device="cpu", init=init,
                          checkpoint_every=max(50, steps // 4), eval_every=max(1, steps // 4),
                          log_every=max(1, steps // 100), overwrite=True, quiet=True, offline=True, evaluate=False)
    seconds = time.perf_counter() - t0
    tr = res.train
    command = demo.compress_command(teacher, recipe, source, size, steps, batch_size, sets, run_out, "cpu", seed)
    evaluate(res.student_path, teacher=str(teacher), data=source, size=size, device="cpu", out=run_out, offline=True,
             progress=False, max_images=eval_images, allow_missing=True, latency=False, grid_images=demo.GRID_IMAGES,
             command=command + ("" if init == "scratch" else f" --init {init}"),
             extra={"kind": "compress", "seed": seed, "recipe": res.config.to_dict(),
                    "losses_active": tr.plan.describe(),
                    "training": {"recipe": recipe, "demo_student": label, "overrides": sets, "init": init,
                                 "steps": tr.steps, "batch_size": batch_size, "best_step": tr.best_step,
                                 "seconds": round(seconds, 1), "student_selection": engine.selection_text(tr),
                                 "feature_taps": tr.taps},
                    "warnings": list(res.warnings)})
    print(f"{label}@s{seed}: {seconds:.0f} s, best step {tr.best_step}", flush=True)


def _seed_means(out: Path, label: str) -> dict[int, dict]:
    found = {}
    for folder in out.glob(f"{label}@s*"):
        if folder.name.rsplit("@s", 1)[0] == label and (folder / "report.json").is_file():
            found[int(folder.name.rsplit("@s", 1)[1])] = json.loads((folder / "report.json").read_text())["metrics"]
    return found


def print_pairs(out: Path, pairs: list[str]) -> None:
    """Markdown rows ``A − B`` over the seeds both have (demo_seeds.paired_differences: mean ± std, paired t, p)."""
    print("| difference | metric | seeds | mean ± std | paired t | p | spread A, B |")
    print("|---|---|---|---|---|---|---|")
    for pair in pairs:
        a_label, b_label = pair.split(":")
        a, b = _seed_means(out, a_label), _seed_means(out, b_label)
        seeds = sorted(set(a) & set(b))
        for header, key, _ in demo_seeds.SEED_METRICS:
            va = [demo_seeds.metric_mean(a[s]["student"], key) for s in seeds]
            vb = [demo_seeds.metric_mean(b[s]["student"], key) for s in seeds]
            if len(seeds) < 2 or None in va + vb:
                continue
            r = demo_seeds.paired_differences(va, vb)
            d = r["diff"]
            print(f"| {a_label} − {b_label} | {header} | {len(seeds)} | {d['mean']:+.4g} ± {d['std']:.3g} | "
                  f"{r['t']:.2f} | {r['p']:.3f} | {r['spread_a']:.3g}, {r['spread_b']:.3g} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=demo.DEFAULT_BATCH)
    ap.add_argument("--eval-images", type=int, default=demo.EVAL_IMAGES)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--only", nargs="+", default=list(STUDENTS), choices=list(STUDENTS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--teacher", type=Path, help="another teacher file of the demo task (default: the shipped one); "
                    "docs/quality.md used ganzip 0.1's: git show b154317:ganzip/assets/demo_teacher.safetensors")
    ap.add_argument("--pair", nargs="+", metavar="A:B", help="print paired differences A − B and train nothing")
    args = ap.parse_args(argv)
    if args.pair:
        print_pairs(args.out, args.pair)
        return 0
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    marker = args.out / demo.MARKER
    labels = json.loads(marker.read_text())["students"] if marker.exists() else []
    labels += [lb for lb in args.only if lb not in labels]
    marker.write_text(json.dumps({"kind": "ganzip-demo", "status": "running", "students": labels}))
    for seed in args.seeds:  # seed-major: a stopped run has the same seeds for every student
        for label in args.only:
            if (args.out / f"{label}@s{seed}" / "report.json").is_file():
                continue
            train_and_measure(label, seed, args.out, args.steps, args.batch_size, args.eval_images, args.teacher)
    return 0


if __name__ == "__main__":
    sys.exit(main())

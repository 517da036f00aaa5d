"""Compare demo-teacher candidates on the task's held-out test images: fidelity and sharpness, and one grid.

For each teacher file this prints PSNR, SSIM and L1 to the ground truth, and
the *sharpness*: the mean Sobel gradient magnitude of the outputs' luma over
that of the ground truth (`ganzip.metrics.fidelity.sharpness`; 1.0 = as much
edge energy as the real images, an L1-blurred output sits well below 1), as
mean ± std over the images. ``--grid FILE`` writes a labelled PNG: input |
ground truth | each teacher.

    python bench/demo_teacher.py [TEACHER.safetensors ...] [--images 100] [--grid teachers.png]

With no file it measures the shipped teacher. Used for docs/demo.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ganzip import demo, teacher
from ganzip.imaging import labelled_grid
from ganzip.io import png_bytes
from ganzip.loading import load_generator
from ganzip.metrics.fidelity import from_generator, gradient_energy, sharpness

@torch.no_grad()
def outputs(model: torch.nn.Module, ds) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    items = [ds[i] for i in range(len(ds))]
    x = torch.stack([it["A"] for it in items])
    y = torch.stack([it["B"] for it in items])
    return x, y, torch.cat([model.eval()(x[i:i + 16]) for i in range(0, len(x), 16)])


def measure(path: Path, ds) -> dict:
    model = load_generator(str(path))
    res = teacher.ground_truth_metrics(model, ds)
    x, y, out = outputs(model, ds)
    ratio = sharpness(from_generator(out), from_generator(y))
    res.update(sharpness=float(ratio.mean()), sharpness_std=float(ratio.std()), file=str(path),
               bytes=path.stat().st_size)
    return res, x, y, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("teachers", nargs="*", type=Path)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--grid", type=Path)
    ap.add_argument("--grid-rows", type=int, default=6)
    ap.add_argument("--labels", nargs="*", help="column labels for the teachers (default: file stems)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    paths = args.teachers or [demo.demo_teacher_path()]
    prov = demo.demo_provenance()
    ds, split = teacher.eval_split(prov["data"], int(prov["size"]), n=args.images)
    labels = args.labels or [p.parent.name if p.stem == "teacher" else p.stem for p in paths]
    rows, outs = [], []
    print(f"{prov['data']} split {split!r}, {len(ds)} images, {prov['size']} px")
    print("| teacher | PSNR to GT (dB) | SSIM | L1 | sharpness (ratio to GT) | bytes |")
    print("|---|---|---|---|---|---|")
    for label, path in zip(labels, paths):
        res, x, y, out = measure(path, ds)
        rows.append(dict(res, label=label))
        outs.append(out)
        print(f"| {label} | {res['psnr']:.2f} | {res['ssim']:.3f} | {res['l1']:.3f} | "
              f"{res['sharpness']:.2f} ± {res['sharpness_std']:.2f} | {res['bytes']:,} |")
    ground = gradient_energy(from_generator(y))
    print(f"ground truth: mean gradient energy {float(ground.mean()):.4f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.grid:
        n = min(args.grid_rows, len(x))
        tiles = [((t[:n].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
                 for t in [x, y, *outs]]
        grid = labelled_grid(["input", "ground truth", *labels], [list(r) for r in zip(*tiles)],
                             f"{prov['data']} {split} split (never seen in training)")
        args.grid.write_bytes(png_bytes(grid))
        print(f"grid: {args.grid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

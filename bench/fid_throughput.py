"""FID feature-extraction throughput: ganzip's path against pytorch-fid's, in one run.

Both paths read the same folder of PNGs on the same device with the same
network: a seeded random-weight stand-in with pytorch-fid's FID Inception
structure (the real pt_inception weights are not needed to time it, and the
arithmetic is identical). Timed: reading the images, Inception features and
the mean/covariance, i.e. ganzip's ``InceptionFeatures.from_files`` +
``Statistics.from_features`` against pytorch-fid's
``calculate_activation_statistics`` (with its default of one loader worker).
The two paths alternate for --repeats rounds; the best round of each counts.

    python bench/fid_throughput.py                       # CPU: 32 images, 1-4 minutes on 2 cores
    python bench/fid_throughput.py --device cuda --images 1000 --json out.json
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def make_folder(folder: Path, n: int, size: int, seed: int = 0) -> list[Path]:
    rng = np.random.RandomState(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        low = rng.randint(0, 256, (16, 16, 3)).astype(np.uint8)
        Image.fromarray(low).resize((size, size), Image.BILINEAR).save(folder / f"{i:05d}.png")
    return sorted(folder.glob("*.png"))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=32, help="images in the folder (default 32)")
    ap.add_argument("--size", type=int, default=256, help="side of the PNGs (default 256, horse2zebra's)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--repeats", type=int, default=2, help="alternating rounds per path (best counts)")
    ap.add_argument("--workers", type=int, default=None,
                    help="ganzip's decoding threads (default: min(8, CPUs)); pytorch-fid keeps its default of 1")
    ap.add_argument("--json", dest="json_out", default=None, help="write the result as JSON to this file")
    args = ap.parse_args(argv)

    from pytorch_fid.fid_score import calculate_activation_statistics

    from ganzip.devices import resolve_device
    from ganzip.metrics import fid as fidm

    device = resolve_device(args.device)
    workers = args.workers or min(8, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = fidm.make_random_inception_weights(tmp / "inception_standin.pth", seed=0, calibrate=2)
        files = make_folder(tmp / "images", args.images, args.size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the stand-in is, by design, not the published file
            ext = fidm.load_inception(weights, dims=2048, device=device)
        model = ext.model  # the very same module for both paths

        def sync():
            if device.type == "cuda":
                torch.cuda.synchronize()

        def run_ganzip():
            feats = ext.from_files(files, batch_size=args.batch_size, progress=False, num_workers=workers)
            return fidm.Statistics.from_features(feats)

        def run_pytorch_fid():
            return calculate_activation_statistics(files, model, batch_size=args.batch_size, dims=2048,
                                                   device=device, num_workers=1)

        # warm-up on one batch (cuDNN autotuning, allocator, page cache)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ext.from_files(files[:args.batch_size], batch_size=args.batch_size, progress=False)
            ours_stats = theirs_stats = None
            times = {"ganzip": [], "pytorch_fid": []}
            for _ in range(args.repeats):
                for name, fn in (("ganzip", run_ganzip), ("pytorch_fid", run_pytorch_fid)):
                    sync()
                    t0 = time.perf_counter()
                    out = fn()
                    sync()
                    times[name].append(time.perf_counter() - t0)
                    if name == "ganzip":
                        ours_stats = out
                    else:
                        theirs_stats = out
        mu_diff = float(np.abs(ours_stats.mu - theirs_stats[0]).max())
        sigma_diff = float(np.abs(ours_stats.sigma - theirs_stats[1]).max())

    best = {k: min(v) for k, v in times.items()}
    result = {
        "bench": "fid_throughput",
        "command": "python bench/fid_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                                 f" ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"),
        "network": "random-weight stand-in with pytorch-fid's FID InceptionV3 structure (seed 0), 2048-d pool3",
        "images": args.images, "image_size": args.size, "batch_size": args.batch_size,
        "ganzip_decode_threads": workers, "pytorch_fid_num_workers": 1, "repeats": args.repeats,
        "seconds": times,
        "images_per_s": {k: args.images / v for k, v in best.items()},
        "speedup_ganzip_over_pytorch_fid": best["pytorch_fid"] / best["ganzip"],
        "max_abs_diff": {"mu": mu_diff, "sigma": sigma_diff},
        "torch": torch.__version__,
    }
    print(f"device: {result['device']}")
    print(f"{args.images} images of {args.size}x{args.size}, batch {args.batch_size}")
    for k in ("ganzip", "pytorch_fid"):
        print(f"  {k:12s} {result['images_per_s'][k]:8.2f} images/s  (best of {args.repeats}: {best[k]:.2f} s)")
    print(f"ratio ganzip / pytorch-fid throughput: {result['speedup_ganzip_over_pytorch_fid']:.2f}x")
    print(f"statistics agree: max |mu diff| {mu_diff:.2e}, max |sigma diff| {sigma_diff:.2e}")
    if args.json_out:
        from ganzip.io import atomic_write_json

        atomic_write_json(args.json_out, result)
    return result


if __name__ == "__main__":
    main()

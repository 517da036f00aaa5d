"""`ganzip demo`: compress the teacher shipped with ganzip, on the CPU, in minutes.

The flow is the library's own, end to end, with nothing downloaded:

1. the teacher is ``ganzip/assets/demo_teacher.safetensors``, trained by
   ``ganzip train`` on a built-in paired task (its provenance, with the
   exact command, is ``demo_teacher.json``);
2. :func:`ganzip.engine.compress` distils it into a width-0.25 student with
   the ``crd`` recipe (with ``compare``: also ``scratch`` and ``kd-pixel``
   students on the same budget) on that task's training images;
3. :func:`ganzip.evaluation.evaluate` measures each student on the task's
   held-out test images against the teacher and the ground truth;
4. ``OUT/report.json|md|html`` sets the results side by side, with the
   teacher's and the students' cost and a sample grid; each student keeps
   its own folder (``OUT/crd/``...) with its file and full report.

Pretrained files that are not on this machine never stop the demo, and
nothing stands in for them silently: without Inception there is no FID/KID
and without AlexNet no LPIPS (PSNR/SSIM are reported); without VGG-16 the
perceptual term is off and, in the crd student, an L1 to the teacher's
output takes its place as the absolute anchor that CRD's relations lack
(see :func:`demo_specs`). The report lists each one. See ``docs/demo.md``.
"""
from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from . import assets
from . import data as gdata
from . import engine
from . import io as gio
from .demo_report import TEACHER_FILE
from .demo_report import compose_report as _compose_report
from .demo_report import write_samples as _write_samples
from .demo_seeds import SEED_METRICS, add_seed_tables, paired_differences
from .errors import AssetMissingError, GanzipError
from .evaluation import evaluate
from .loading import load_generator
from .recipes import resolve_recipe
from .report import write_reports

ASSETS = Path(__file__).resolve().parent / "assets"
PROVENANCE_FILE = "demo_teacher.json"
MAIN_RECIPE = "crd"
COMPARE_RECIPES = ("scratch", "kd-pixel", "rkd-instance")
MARKER = "demo.json"
# Without VGG-16, the weight of the L1-to-teacher term that stands in for the perceptual loss
# in the crd student: lambda_CRD's own weight (docs/demo.md has the measurements).
ANCHOR_WEIGHT = 25.0

# The demo's budget: chosen so that `ganzip demo` ends in under 10 minutes on 2 CPU cores
# (docs/demo.md has the measurements) -- the paper trains for 100 epochs at 256x256.
DEFAULT_STEPS = 800
DEFAULT_BATCH = 4
EVAL_IMAGES = 100
GRID_IMAGES = 6
# None: torch's default (one thread per core). On a machine other processes share, one thread
# is steadier for the demo's small convolutions (docs/demo.md).
DEFAULT_THREADS = None


@dataclass(frozen=True)
class DemoSpec:
    """One student the demo trains: a label (its folder and table row), a recipe and its own overrides."""

    label: str
    recipe: str
    overrides: tuple[str, ...] = ()
    note: str = ""


@dataclass
class DemoRun:
    """One student of the demo, trained and measured."""

    label: str
    recipe: str
    overrides: list[str]
    out: Path
    student_path: Path | None
    metrics: dict
    cost: dict
    loss_terms: dict
    seconds: float
    steps: int
    best_step: int | None
    note: str = ""
    warnings: list[str] = field(default_factory=list)
    seed: int = 0
    selection: str = ""


@dataclass
class DemoResult:
    """What :func:`run_demo` hands back."""

    out: Path
    report: dict
    report_paths: dict
    runs: list[DemoRun]
    seconds: float
    cpu_seconds: float

    @property
    def table(self) -> list[list[Any]]:
        return self.report["comparison"]["rows"]


# ---------------------------------------------------------------- the shipped teacher


def demo_teacher_path() -> Path:
    """The shipped teacher file; a clear error if the installation lacks it."""
    path = ASSETS / TEACHER_FILE
    if not path.is_file():
        raise GanzipError(f"the demo teacher {path} is missing from this installation: reinstall ganzip, or "
                          f"regenerate it with the command in docs/demo.md")
    return path


def demo_provenance() -> dict:
    """``demo_teacher.json``: how the shipped teacher was made, and its measured metrics."""
    path = ASSETS / PROVENANCE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise GanzipError(f"{path} is missing from this installation: reinstall ganzip") from None
    except json.JSONDecodeError as exc:
        raise GanzipError(f"{path} is damaged ({exc}): reinstall ganzip") from None


def load_demo_teacher(device="cpu") -> torch.nn.Module:
    """The shipped teacher as an ``nn.Module`` (eval mode)."""
    return load_generator(str(demo_teacher_path()), device=device)


# ---------------------------------------------------------------- pretrained files


def _asset_status(name: str, offline: bool) -> tuple[Path | None, str | None]:
    try:
        return assets.resolve(name, offline=offline), None
    except AssetMissingError as exc:
        return None, str(exc).split(". ")[0]


def demo_overrides(size: int, perceptual: bool) -> list[str]:
    """The recipe settings the demo changes for every student, each for a stated reason (docs/demo.md)."""
    sets = [
        # k = 32 at 256x256 is an 8 x 8 grid of patches; keep the grid at the demo's size.
        f"crd.patch_size={max(1, size // 8)}",
    ]
    if not perceptual:
        sets.append("perceptual.weight=0")
    return sets


def demo_specs(compare: bool, perceptual: bool) -> list[DemoSpec]:
    """The students the demo trains.

    Without VGG-16 the crd student gets an L1 to the teacher's output
    (``kd_pixel.weight = ANCHOR_WEIGHT``) in place of the perceptual term:
    CRD relates pieces of one image by normalised distances and angles, which
    any per-pixel colour rotation, scaling or shift leaves unchanged, so
    without an absolute term the student's colours are free (docs/demo.md
    measures it). ``--compare`` then also trains the plain recipe
    (``crd-plain``) to show that, and the two baselines.
    """
    specs = []
    if perceptual:
        specs.append(DemoSpec(MAIN_RECIPE, MAIN_RECIPE))
    else:
        specs.append(DemoSpec(MAIN_RECIPE, MAIN_RECIPE, (f"kd_pixel.weight={ANCHOR_WEIGHT:g}",),
                              note=f"perceptual term replaced by L1 to the teacher (weight {ANCHOR_WEIGHT:g})"))
    if compare:
        if not perceptual:
            specs.append(DemoSpec("crd-plain", MAIN_RECIPE, (), note="the recipe without its perceptual term"))
        specs += [DemoSpec(r, r) for r in COMPARE_RECIPES]
    return specs


# ---------------------------------------------------------------- the demo


def demo_command(out, compare: bool, steps: int, batch_size: int, eval_images: int, device: str,
                 threads: int | None = None, seeds: int = 1) -> str:
    """The `ganzip demo` command line of a run (defaults left out)."""
    parts = ["ganzip", "demo", "--out", str(out)]
    if compare:
        parts.append("--compare")
    if seeds != 1:
        parts += ["--seeds", str(seeds)]
    for flag, value, default in (("--steps", steps, DEFAULT_STEPS), ("--batch-size", batch_size, DEFAULT_BATCH),
                                 ("--eval-images", eval_images, EVAL_IMAGES)):
        if value != default:
            parts += [flag, str(value)]
    if device != "cpu":
        parts += ["--device", device]
    if threads is not None:
        parts += ["--threads", str(threads)]
    return " ".join(shlex.quote(p) for p in parts)


def compress_command(teacher, recipe, data, size, steps, batch_size, sets, out, device, seed: int = 0) -> str:
    """The `ganzip compress` command line equivalent to one of the demo's runs."""
    parts = ["ganzip", "compress", str(teacher), "--recipe", recipe, "--data", str(data), "--width", "0.25",
             "--size", str(size), "--steps", str(steps), "--batch-size", str(batch_size), "--seed", str(seed)]
    for item in sets:
        parts += ["--set", item]
    parts += ["--out", str(out), "--offline"]
    if device != "cpu":
        parts += ["--device", device]
    return " ".join(shlex.quote(p) for p in parts)


def _prepare(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise GanzipError(f"--out {out} is a file, not a folder: choose a folder path")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise GanzipError(f"--out {out} already exists and holds files `ganzip demo` did not write: "
                          "choose a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)


def run_demo(
    out: str | Path = "ganzip-demo",
    *,
    compare: bool = False,
    steps: int | None = None,
    batch_size: int | None = None,
    device: str = "cpu",
    specs: Sequence[DemoSpec] | None = None,
    overrides: Iterable[str] = (),
    eval_images: int = EVAL_IMAGES,
    n_train: int | None = None,
    threads: int | None = DEFAULT_THREADS,
    quiet: bool = False,
    offline: bool = True,
    latency: bool = True,
    seeds: int = 1,
) -> DemoResult:
    """Compress the shipped teacher at width 0.25 and write the comparison report.

    Args:
        out: output folder (``report.*``, ``samples.png``, one folder per student).
        compare: also train the ``scratch`` and ``kd-pixel`` baselines on the same budget
            (and, without VGG-16, the plain ``crd`` recipe as ``crd-plain``).
        steps, batch_size: the training budget of every student (defaults: ``DEFAULT_STEPS``, ``DEFAULT_BATCH``).
        device: ``cpu`` (the default: the demo is meant for the CPU), ``auto`` or ``cuda``.
        specs: the students to train (default: :func:`demo_specs`).
        overrides: extra ``--set`` values applied to every student.
        eval_images: held-out test images each student is measured on.
        n_train: render only this many training images (tests use a few).
        threads: torch CPU threads while the demo runs (restored afterwards); None keeps the current setting.
        offline: never download pretrained files (the demo uses local files only).
        latency: time the models (off in tests).
        seeds: train every student with seeds 0..N-1 (folders ``LABEL@sN``); the report gives mean ± std
            over the seeds and a paired comparison of crd with each other student (:func:`paired_differences`).
    """
    steps = DEFAULT_STEPS if steps is None else int(steps)
    batch_size = DEFAULT_BATCH if batch_size is None else int(batch_size)
    if steps < 1 or batch_size < 1 or eval_images < 1:
        raise GanzipError(f"--steps, --batch-size and --eval-images must be at least 1 "
                          f"(got {steps}, {batch_size} and {eval_images})")
    if threads is not None and threads < 1:
        raise GanzipError(f"threads must be at least 1, got {threads}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise GanzipError(f"--seeds must be a whole number of at least 1, got {seeds!r}")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run_demo(Path(out), compare, steps, batch_size, device, specs, list(overrides), eval_images,
                         n_train, quiet, offline, latency, threads, seeds)
    finally:
        torch.set_num_threads(previous)


def _run_demo(out: Path, compare, steps, batch_size, device, specs, overrides, eval_images, n_train, quiet,
              offline, latency, threads, seeds=1) -> DemoResult:
    started, cpu0 = time.perf_counter(), time.process_time()
    teacher_path = demo_teacher_path()
    prov = demo_provenance()
    size = int(prov["size"])
    _prepare(out)

    vgg, why = _asset_status("vgg16", offline)
    specs = list(demo_specs(compare, perceptual=vgg is not None) if specs is None else specs)
    labels = [sp.label for sp in specs]
    if len(set(labels)) != len(labels):
        raise GanzipError(f"two demo students share a label: {labels}")
    unavailable = [] if vgg is not None else [_no_vgg(specs, why)]
    common = demo_overrides(size, perceptual=vgg is not None) + overrides
    gio.atomic_write_json(out / MARKER, {"kind": "ganzip-demo", "status": "running", "students": labels})

    # ---- training data: the task the teacher was trained on
    source = prov["data"]
    train_data: Any = source
    if n_train is not None:
        train_data = _small_bundle(source, size, n_train, specs[0].recipe, common, batch_size)

    runs: list[DemoRun] = []
    evals: dict[str, Any] = {}
    # Seed-major: when a long run is stopped, every student has the same seeds done (each folder has its report).
    for seed in range(seeds):
        for sp in specs:
            run = _train_and_measure(sp, seed, seeds, out, common, teacher_path, train_data, source, size, steps,
                                     batch_size, device, quiet, offline, eval_images, latency, evals)
            runs.append(run)
    first_seed = [r for r in runs if r.seed == 0]
    unavailable += _unavailable_metrics(evals[(labels[0], 0)])

    command = demo_command(out, compare, steps, batch_size, eval_images, device, threads, seeds)
    report = _compose_report(prov, first_seed, {r.label: evals[(r.label, 0)] for r in first_seed}, unavailable,
                             common, steps, batch_size, compare, device, command)
    if seeds > 1:
        add_seed_tables(report, runs, labels, seeds)
    first = evals[(labels[0], 0)]
    caption = f"{first.metrics.get('split')} split of {source} (not seen in training)"
    images = _write_samples(out, labels, {r.label: r.out for r in first_seed}, caption)
    report["samples"] = "samples.png"
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu0
    report["timing"] = {"wall_seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1),
                        "threads": torch.get_num_threads(),
                        "per_student_training_seconds": {r.out.name: r.seconds for r in runs}}
    paths = write_reports(out, report, images=images, curves={})
    gio.atomic_write_json(out / MARKER, {"kind": "ganzip-demo", "status": "finished", "students": labels})
    return DemoResult(out=out, report=report, report_paths=paths, runs=runs, seconds=seconds,
                      cpu_seconds=cpu_seconds)


def _no_vgg(specs: Sequence[DemoSpec], why: str | None) -> dict:
    """The report's record of VGG-16 missing: what the students train without, and what stands in."""
    instead = "students train without the perceptual term (perceptual.weight=0)"
    if any(f"kd_pixel.weight={ANCHOR_WEIGHT:g}" in sp.overrides for sp in specs):
        instead += (f"; in the crd student an L1 to the teacher's output (kd_pixel.weight={ANCHOR_WEIGHT:g}) "
                    "takes its place as the absolute anchor that CRD lacks")
    return {"asset": "vgg16", "needed_for": "the perceptual loss", "why": why, "instead": instead}


def _unavailable_metrics(first) -> list[dict]:
    """The metrics that need pretrained files, as the evaluation recorded them missing."""
    found = []
    for rec in first.assets:
        if rec.get("unavailable"):
            what = {"inception_fid": "FID and KID", "alexnet": "LPIPS"}.get(rec["name"], rec["name"])
            found.append({"asset": rec["name"], "needed_for": what, "why": rec["unavailable"],
                          "instead": "PSNR and SSIM (to the teacher and to the ground truth)"})
    return found


def _train_and_measure(sp: DemoSpec, seed: int, seeds: int, out: Path, common, teacher_path, train_data, source,
                       size, steps, batch_size, device, quiet, offline, eval_images, latency, evals) -> DemoRun:
    """Train one demo student with one seed, evaluate it on the test images, and record it."""
    sets = common + list(sp.overrides)
    run_out = out / (sp.label if seeds == 1 else f"{sp.label}@s{seed}")
    t0 = time.perf_counter()
    res = engine.compress(
        str(teacher_path), data=train_data, width=0.25, recipe=sp.recipe, size=size, steps=steps,
        batch_size=batch_size, seed=seed, overrides=sets, out=run_out, device=device,
        checkpoint_every=max(50, steps // 4), eval_every=max(1, steps // 4), log_every=max(1, steps // 100),
        overwrite=True, quiet=quiet, offline=offline, evaluate=False,
    )
    train_seconds = time.perf_counter() - t0
    cfg, tr = res.config, res.train
    selection = engine.selection_text(tr)
    ev = evaluate(
        res.student_path, teacher=str(teacher_path), data=source, size=size, device=device, out=run_out,
        offline=offline, progress=not quiet, max_images=eval_images, allow_missing=True, latency=latency,
        grid_images=GRID_IMAGES,
        command=compress_command(teacher_path, sp.recipe, source, size, steps, batch_size, sets, run_out, device,
                                 seed),
        extra={
            "kind": "compress",
            "seed": cfg.train.seed,
            "recipe": cfg.to_dict(),
            "losses_active": tr.plan.describe(),
            "training": {"recipe": sp.recipe, "demo_student": sp.label, "overrides": sets, "steps": tr.steps,
                         "batch_size": cfg.train.batch_size, "best_step": tr.best_step,
                         "best_holdout": tr.best_metrics, "last_holdout": tr.last_metrics,
                         "seconds": round(train_seconds, 1), "student_selection": selection,
                         "selection": tr.selection},
            "warnings": list(res.warnings),
            "paths": {"train_log": str(run_out / engine.TRAIN_LOG)},
        },
    )
    evals[(sp.label, seed)] = ev
    return DemoRun(label=sp.label, recipe=sp.recipe, overrides=sets, out=run_out, student_path=res.student_path,
                   metrics=ev.metrics, cost=ev.cost, loss_terms=tr.plan.describe(), seconds=round(train_seconds, 1),
                   steps=tr.steps, best_step=tr.best_step, note=sp.note, warnings=list(res.warnings), seed=seed,
                   selection=selection)


def _small_bundle(source: str, size: int, n: int, recipe: str, sets, batch_size):
    """A DataBundle of only ``n`` rendered training images (for quick tests of the demo)."""
    cfg = resolve_recipe(recipe, list(sets) + [f"train.size={size}", f"train.batch_size={batch_size}"])
    ds = gdata.open_dataset(source, split="train", size=size, augment=True, seed=0, n=n)
    train_ds, holdout = gdata.holdout_split(ds, cfg.eval.holdout, 0)
    paired = getattr(ds, "kind", None) == "paired"
    return engine.DataBundle(train=train_ds, holdout=holdout, paired=paired, has_b=True,
                             description=f"{source} (first {n} training images)")


__all__ = ["run_demo", "paired_differences", "SEED_METRICS", "DemoResult", "DemoRun", "DemoSpec", "demo_specs", "demo_teacher_path", "demo_provenance",
           "load_demo_teacher", "demo_overrides", "DEFAULT_STEPS", "DEFAULT_BATCH", "ANCHOR_WEIGHT"]

"""Train a generator from scratch (no teacher) with ganzip's own engine.

`ganzip train` is how the repository's demo teacher
(``ganzip/assets/demo_teacher.safetensors``) is made, and how a user gets a
teacher for their own built-in task or folder. There is no second training
loop: the generator takes the *student* role of :func:`ganzip.training.loop.train`
and the recipe (``scratch`` by default) has no term that reads a teacher.

What the ``scratch`` recipe optimises (``docs/demo.md``):

* paired data (aligned A|B, or a paired built-in task such as
  ``builtin:edges2shapes``): pix2pix's objective, ``100 * L1(G(x), y)`` plus
  the adversarial term of a PatchGAN trained online on real ``y`` against
  ``G(x)``; for pairs the discriminator is conditional (it sees
  ``cat(x, image)``), as in pix2pix;
* unpaired data: the adversarial term plus CycleGAN's identity term
  ``5 * |G(b) - b|``. Without a second generator there is no cycle loss, so
  this objective is weak; prefer a paired task for a teacher.

The result is ``OUT/teacher.safetensors`` in ganzip's ``generator`` format
(the architecture spec is in the metadata, so ``load_generator`` needs no
``--arch``) and ``OUT/teacher.json``: the exact command, the resolved recipe,
the file's sha256 and metrics measured on held-out images (PSNR, SSIM, L1 to
the ground truth, for the trained network and for the same network untrained).
"""
from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
import torch.nn as nn

from . import data as gdata
from . import formats
from . import io as gio
from ._version import __version__
from .devices import resolve_device
from .errors import GanzipError
from .io import sha256_file
from .loading import build_arch, parse_arch_opts
from .metrics.cost import count_macs, count_params, infer_in_channels
from .metrics.fidelity import from_generator, psnr, sharpness, ssim, summarize
from .models import init_weights
from .training.loop import train
from .training.options import DataBundle, RunOptions
from .training.outdir import finish_run, prepare_out, write_run_marker
from .training.plan import plan_losses
from .training.setup import build_discriminator, resolve_config

TEACHER_FILE = "teacher.safetensors"
PROVENANCE_FILE = "teacher.json"
GENERATOR_FORMAT = formats.GENERATOR
GENERATOR_FORMAT_VERSION = "1"
DEFAULT_RECIPE = "scratch"
EVAL_SPLITS = ("test", "val")


@dataclass
class TeacherResult:
    """What :func:`train_teacher` hands back."""

    out: Path
    path: Path | None  # OUT/teacher.safetensors (None when the run stopped early: max_steps)
    provenance: dict
    model: nn.Module
    steps: int
    total_steps: int

    @property
    def metrics(self) -> dict:
        return self.provenance.get("metrics", {})


class _NoTeacher(nn.Module):
    """Stands in the engine's teacher role when training from scratch.

    The recipes `ganzip train` accepts never read a teacher (checked by
    :func:`train_teacher`); if the engine ever did, this says so instead of
    quietly returning something.
    """

    def forward(self, x):  # pragma: no cover - guarded by plan.needs_teacher
        raise GanzipError("internal: a teacher output was requested while training without a teacher")


# ---------------------------------------------------------------- command line (provenance)


def train_command(arch: str, data: str, *, arch_opts: Mapping[str, Any] | None = None, steps: int | None = None,
                  size: int | None = None, batch_size: int | None = None, seed: int | None = None,
                  recipe: str = DEFAULT_RECIPE, overrides: Iterable[str] = (), out: str | Path = "OUT") -> str:
    """The `ganzip train` command line that reproduces a run with these settings."""
    parts = ["ganzip", "train", "--arch", arch]
    for k, v in (arch_opts or {}).items():
        parts += ["--arch-opt", f"{k}={_opt_text(v)}"]
    parts += ["--data", str(data)]
    if recipe != DEFAULT_RECIPE:
        parts += ["--recipe", str(recipe)]
    for flag, value in (("--size", size), ("--steps", steps), ("--batch-size", batch_size), ("--seed", seed)):
        if value is not None:
            parts += [flag, str(int(value))]
    for item in overrides or ():
        parts += ["--set", item]
    parts += ["--out", str(out)]
    return " ".join(shlex.quote(p) for p in parts)


def _opt_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ---------------------------------------------------------------- the format


def generator_metadata(model: nn.Module, extra: Mapping[str, Any] | None = None) -> dict[str, str]:
    """safetensors metadata of ganzip's ``generator`` format: the architecture spec and provenance."""
    spec = getattr(model, "ganzip_spec", None)
    if not spec:
        raise GanzipError("this model has no architecture spec (build it with ganzip.models.create or --arch)")
    meta = {
        formats.FORMAT_KEY: GENERATOR_FORMAT,
        formats.FORMAT_VERSION_KEY: GENERATOR_FORMAT_VERSION,
        "ganzip.arch_spec": json.dumps({"arch": spec["arch"], "opts": dict(spec.get("opts", {}))}, sort_keys=True),
        formats.VERSION_KEY: __version__,
    }
    for k, v in (extra or {}).items():
        meta[str(k)] = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
    return meta


def save_generator(model: nn.Module, path: str | Path, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write a full-width generator as safetensors that ``load_generator(path)`` rebuilds without ``--arch``."""
    path = Path(path)
    gio.save_safetensors_atomic(model.state_dict(), path, metadata=generator_metadata(model, metadata))
    return path


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file (`ganzip.io.sha256_file`)."""
    return sha256_file(path)


# ---------------------------------------------------------------- held-out metrics


def eval_split(data: str, size: int, n: int | None = None, direction: str = "AtoB"):
    """The held-out images of ``data`` with ground truth: its test split (else val), unaugmented.

    Returns ``(dataset, split)`` or ``(None, reason)``.
    """
    last = "no test or val split"
    for split in EVAL_SPLITS:
        try:
            ds = gdata.open_dataset(str(data), split=split, size=size, augment=False, n=n, direction=direction)
        except GanzipError as exc:
            last = str(exc)
            continue
        if len(ds) == 0:
            continue
        if getattr(ds, "kind", None) != "paired" or "B" not in ds[0]:
            return None, f"{data} is not paired: there is no ground truth to compare outputs with"
        return ds, split
    return None, last


@torch.no_grad()
def ground_truth_metrics(model: nn.Module, dataset, *, batch_size: int = 16, device="cpu") -> dict:
    """PSNR (dB), SSIM, L1 and sharpness of ``model(A)`` against the ground truth ``B`` (means over images).

    Sharpness is the outputs' gradient energy over the ground truth's
    (`ganzip.metrics.fidelity.sharpness`): about 1 for outputs as detailed
    as the real images, well below for blurred ones.
    """
    dev = torch.device(device)
    was = model.training
    model.eval()
    ps, ss, l1, sh = [], [], [], []
    try:
        for lo in range(0, len(dataset), batch_size):
            idx = list(range(lo, min(len(dataset), lo + batch_size)))
            many = getattr(dataset, "__getitems__", None)
            items = many(idx) if many is not None else [dataset[i] for i in idx]
            x = torch.stack([it["A"] for it in items]).to(dev)
            y = torch.stack([it["B"] for it in items]).float()
            out = model(x).float().cpu()
            a, b = from_generator(out), from_generator(y)
            ps += psnr(a, b).tolist()
            sh += sharpness(a, b).tolist()
            if min(a.shape[-2:]) >= 11:
                ss += ssim(a, b).tolist()
            l1 += (out - y).abs().flatten(1).mean(1).tolist()
    finally:
        model.train(was)
    res = {"images": len(ps), "psnr": summarize(ps)["mean"], "l1": summarize(l1)["mean"], "sharpness": summarize(sh)["mean"]}
    res["ssim"] = summarize(ss)["mean"] if ss else None
    return res


# ---------------------------------------------------------------- training


def _resolve(recipe: str, overrides: Iterable[str], *, size, steps, batch_size, seed, extra: Iterable[str] = ()):
    return resolve_config(recipe, list(extra) + list(overrides or ()), size=size, steps=steps, epochs=None,
                          batch_size=batch_size, seed=seed)


def _user_sets(overrides: Iterable[str], key: str) -> bool:
    return any(item.partition("=")[0].strip() == key for item in overrides or ())


def build_fresh(arch: str, arch_opts: Mapping[str, Any] | None, seed: int) -> nn.Module:
    """The architecture with CycleGAN's N(0, 0.02) initialisation drawn from ``seed``."""
    model = build_arch(arch, dict(arch_opts or {}))
    init_weights(model, generator=torch.Generator().manual_seed(int(seed)))
    return model


def train_teacher(
    arch: str,
    data: str,
    *,
    arch_opts=None,
    steps: int | None = None,
    size: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    recipe: str = DEFAULT_RECIPE,
    overrides: Iterable[str] = (),
    out: str | Path = "ganzip-teacher",
    device="auto",
    n_train: int | None = None,
    eval_images: int | None = 100,
    checkpoint_every: int = 500,
    log_every: int = 10,
    resume: bool = True,
    overwrite: bool = False,
    quiet: bool = False,
    max_steps: int | None = None,
    direction: str = "AtoB",
) -> TeacherResult:
    """Train generator ``arch`` from scratch on ``data`` and save it with its provenance.

    Args:
        arch, arch_opts: a zoo name (``ganzip models``) or ``package.module:callable``, and its options.
        data: ``builtin:TASK`` or a dataset folder (``ganzip.data.open_dataset``).
        steps, size, batch_size, seed: shortcuts for ``train.*`` recipe overrides.
        recipe: a recipe without teacher terms; ``scratch`` (pix2pix's L1 + GAN for pairs).
        overrides: ``section.key=value`` strings, as ``--set``.
        out: output folder: ``teacher.safetensors``, ``teacher.json``, ``train_log.csv``, ``checkpoint/``.
        n_train: use only the first n training images (built-in tasks render 1000 by default).
        eval_images: held-out images for the final metrics (None: the whole split).
        resume: continue from a checkpoint in ``out`` (same settings only).
        max_steps: stop after this many steps without finishing (the schedule spans the whole run).
        direction: ``"BtoA"`` swaps the dataset's A and B (``--direction``).

    Returns a :class:`TeacherResult`. The held-out metrics compare the trained
    network and the same network at its initialisation with the ground truth
    (paired data only; otherwise the reason is recorded).
    """
    opts_in = parse_arch_opts(arch_opts or ())
    out = Path(out)
    dev = resolve_device(device)
    overrides = list(overrides or ())
    shortcuts = dict(size=size, steps=steps, batch_size=batch_size, seed=seed)
    cfg, bundle, plan, first = _teacher_plan(recipe, overrides, shortcuts, data, n_train, direction)
    model, spec, D = _network(arch, opts_in, cfg, first, plan)

    # ---- OUT (the engine's rules: fresh, resume, or refuse)
    mode = prepare_out(out, resume=resume, overwrite=overwrite)
    if mode == "fresh":
        for name in (TEACHER_FILE, PROVENANCE_FILE):
            (out / name).unlink(missing_ok=True)
    command = train_command(spec["arch"], str(data), arch_opts=spec.get("opts"), recipe=recipe, overrides=overrides,
                            out=out, **shortcuts)
    fingerprint = {"kind": "train", "recipe": cfg.hash(), "arch": spec, "data": str(data), "n_train": n_train,
                   **({} if direction == "AtoB" else {"direction": direction})}  # AtoB runs keep their fingerprint
    marker = {"recipe": cfg.name, "seed": cfg.train.seed, "arch": spec, "command": command}
    write_run_marker(out, "running", marker)

    run = RunOptions(out=out, device=dev, checkpoint_every=checkpoint_every, eval_every=0, log_every=log_every,
                     resume=resume, overwrite=overwrite, quiet=quiet, max_steps=max_steps)
    started = time.perf_counter()
    cpu0 = time.process_time()
    result = train(_NoTeacher(), model, D, bundle, cfg, run, plan, run_info={"mode": mode, "fingerprint": fingerprint})
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu0
    model = result.student.cpu().eval()
    model.ganzip_spec = spec
    provenance = {**_provenance(command, spec, data, bundle, cfg, plan, result), "direction": direction}
    if result.steps < result.total_steps:
        write_run_marker(out, "running", {**marker, "steps": result.steps})
        return TeacherResult(out=out, path=None, provenance=provenance, model=model, steps=result.steps,
                             total_steps=result.total_steps)
    path = _save_finished(out, model, spec, data, cfg, dev, provenance, eval_images, seconds, cpu_seconds, direction)
    finish_run(out, {**marker, "steps": result.steps})
    return TeacherResult(out=out, path=path, provenance=provenance, model=model, steps=result.steps,
                         total_steps=result.total_steps)


def _teacher_plan(recipe: str, overrides: list[str], shortcuts: dict, data, n_train, direction: str = "AtoB"):
    """The recipe, every training image (no held-out split: no teacher to compare with) and the loss plan."""
    cfg = _resolve(recipe, overrides, **shortcuts)
    t = cfg.train
    ds = gdata.open_dataset(str(data), split="train", size=t.size, augment=t.augment, seed=t.seed, n=n_train,
                            direction=direction)
    if len(ds) < t.batch_size:
        raise GanzipError(f"--data {data} has {len(ds)} training images, fewer than one batch of {t.batch_size}")
    first = ds[0]
    has_b = "B" in first
    paired = has_b and getattr(ds, "kind", None) == "paired"
    if paired and not _user_sets(overrides, "discriminator.conditional"):
        # pix2pix judges (input, output) pairs
        cfg = _resolve(recipe, overrides, **shortcuts, extra=["discriminator.conditional=true"])
    bundle = DataBundle(train=ds, holdout=None, paired=paired, has_b=has_b,
                        description=f"{data} ({len(ds)} training images; {getattr(ds, 'kind', '?')})")
    plan = plan_losses(cfg, has_targets=has_b, paired=paired)
    if plan.needs_teacher:
        raise GanzipError(
            f"recipe {cfg.name!r} distils from a teacher, but `ganzip train` trains without one: "
            "use --recipe scratch (or a recipe whose teacher terms are all 0)"
        )
    return cfg, bundle, plan, first


def _network(arch: str, opts_in: dict, cfg, first: dict, plan):
    """The freshly initialised network, its spec, and its discriminator (None when the plan has none)."""
    t = cfg.train
    model = build_fresh(arch, opts_in, t.seed)
    spec = dict(model.ganzip_spec)
    in_ch = infer_in_channels(model)
    with torch.no_grad():
        probe = model.eval()(first["A"][None])
    if probe.shape[-2:] != first["A"].shape[-2:]:
        raise GanzipError(f"{arch} maps a {t.size}x{t.size} image to {tuple(probe.shape[-2:])}: choose another --size or --arch")
    D = build_discriminator(cfg, in_ch, int(probe.shape[1]), t.seed) if plan.use_discriminator else None
    return model, spec, D


def _provenance(command: str, spec: dict, data, bundle: DataBundle, cfg, plan, result) -> dict:
    ds, t = bundle.train, cfg.train
    return {
        "command": command,
        "arch": spec,
        "data": str(data),
        "task_kind": getattr(ds, "kind", None),
        "training_images": len(ds),
        "recipe": cfg.name,
        "recipe_hash": cfg.hash(),
        "config": cfg.to_dict(),
        "loss_terms": plan.describe(),
        "seed": t.seed,
        "size": t.size,
        "batch_size": t.batch_size,
        "steps": result.steps,
        "total_steps": result.total_steps,
        "resumed_from": result.resumed_from,
    }


def _save_finished(out: Path, model, spec: dict, data, cfg, dev, provenance: dict, eval_images, seconds: float,
                   cpu_seconds: float, direction: str = "AtoB") -> Path:
    """Write teacher.safetensors and teacher.json (metrics on held-out images, cost, versions)."""
    t = cfg.train
    path = save_generator(model, out / TEACHER_FILE, metadata={
        "ganzip.training": {k: provenance[k] for k in ("command", "data", "recipe", "recipe_hash", "seed", "size",
                                                        "batch_size", "steps")},
    })
    eval_ds, where = eval_split(str(data), t.size, n=eval_images, direction=direction)
    if eval_ds is not None:
        untrained = build_fresh(spec["arch"], spec.get("opts"), t.seed)
        metrics = {
            "data": f"{data} split {where!r}, {len(eval_ds)} images (never seen in training)",
            "trained": ground_truth_metrics(model, eval_ds, device=dev),
            "untrained": ground_truth_metrics(untrained, eval_ds, device=dev),
        }
    else:
        metrics = {"unavailable": where}
    provenance.update({
        "metrics": metrics,
        "cost": {"size": t.size, "macs": count_macs(model, t.size), "params": count_params(model)},
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": file_sha256(path),
        "ganzip_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "reproducibility": ("on the CPU ganzip trains with deterministic algorithms, so the same command, torch "
                            "version and thread count give the same weights; other CPUs or versions can differ "
                            "in the last bits"),
    })
    gio.atomic_write_json(out / PROVENANCE_FILE, provenance)
    return path


__all__ = ["TeacherResult", "train_teacher", "train_command", "save_generator", "generator_metadata",
           "ground_truth_metrics", "eval_split", "build_fresh", "file_sha256", "TEACHER_FILE", "PROVENANCE_FILE"]

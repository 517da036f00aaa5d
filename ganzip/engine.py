"""The training loop: a teacher, its data and a recipe in; a distilled student out.

The flow is plain objects passed down explicitly:

1. :func:`compress` resolves the recipe (``ganzip.recipes``), loads the
   teacher (``ganzip.loading``), opens the data (``ganzip.data``), builds the
   student (``ganzip.student``) and the online discriminator
   (``ganzip.models``), then calls :func:`train`;
2. :func:`train` runs the optimisation (Adam, constant then linearly decayed
   learning rate), checkpoints atomically, resumes, averages gradients
   across ranks under torchrun, evaluates fidelity to the teacher on a
   held-out split and keeps the best student;
3. :func:`compress` writes ``student.safetensors`` (the best student),
   samples and the log, and hands over to ``ganzip.evaluation.evaluate`` for
   ``report.json`` / ``report.md`` / ``report.html``.

What a step does (spec sections 3 and 5; ``docs/training.md``):

* student loss ``L_S = w_adv * gan(D(S(x)), real) + lambda_CRD * L_CRD
  + lambda_per * L_per`` (+ the baselines' terms), with D frozen;
* discriminator loss ``0.5 * (gan(D(y), real) + mean_f gan(D(f), fake))``
  over the recipe's fake sources ``f`` (teacher outputs for CRD).

Checkpoints are safetensors + JSON only (no pickle): model and optimizer
tensors go to ``checkpoint/state-<step>.safetensors``; the step, the
optimizer structure, the learning-rate schedule and every RNG state go to
``checkpoint/state.json``. On the CPU, with deterministic algorithms, a run
interrupted and resumed ends with the same student as an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import io as _stdio
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from . import distributed as ddp
from . import io as gio
from . import rundir
from .config import RecipeConfig
from .devices import resolve_device
from .errors import AssetMissingError, GanzipError, NonFiniteLossError, in_stage
from .progress import progress_bar

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_JSON = "state.json"
RUN_MARKER = "run.json"
TRAIN_LOG = "train_log.csv"
SAMPLES = "samples.png"
STUDENT = "student.safetensors"
STUDENT_LAST = "student_last.safetensors"
CHECKPOINT_FORMAT = 1
# Files a compress run writes into OUT (removed by --overwrite / --no-resume).
OWNED_FILES = (RUN_MARKER, TRAIN_LOG, SAMPLES, STUDENT, STUDENT_LAST, "report.json", "report.md", "report.html")
OWNED_DIRS = (CHECKPOINT_DIR, "tensorboard", "images", "outputs")


# ====================================================================== options and results


@dataclass
class RunOptions:
    """How a run is carried out (not what is learned: that is the recipe).

    ``checkpoint_every`` / ``eval_every`` are in steps (0: only at the end);
    ``log_every`` is how often a row goes to ``train_log.csv``.
    """

    out: Path
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    checkpoint_every: int = 500
    eval_every: int = 500
    log_every: int = 10
    resume: bool = True
    overwrite: bool = False
    quiet: bool = False
    tensorboard: bool = False
    workers: int = 0
    offline: bool = False
    max_steps: int | None = None  # stop early after this many steps (the schedule still spans the full run)


@dataclass
class LossPlan:
    """Which loss terms a run uses, given its recipe and what the data offers."""

    weights: dict[str, float]  # student terms that are on: name -> weight
    d_fakes: list[str]  # what D is shown as fake; empty: D takes no steps
    use_discriminator: bool
    conditional: bool
    needs_teacher: bool
    warnings: list[str]
    disabled: dict[str, str]  # term -> why it is off

    @property
    def adversarial(self) -> bool:
        return "adversarial" in self.weights

    def describe(self) -> dict:
        return {"student": dict(self.weights), "discriminator_fakes": list(self.d_fakes),
                "disabled": dict(self.disabled)}


@dataclass
class DataBundle:
    """Training data as the loop sees it."""

    train: Any  # Dataset of {"A", "B"?, "path"}
    holdout: Any | None  # held-out split of the training data (fidelity checks)
    targets: Any | None = None  # Dataset of real target images ({"A": image}) from --target
    paired: bool = False  # batch["B"] is the ground truth of batch["A"]
    has_b: bool = False  # batches carry "B" (real target-domain images)
    description: str = ""
    warnings: list[str] = field(default_factory=list)  # e.g. files the data loader skipped
    out_side: int | None = None  # side of the generator's outputs (None: the input side, train.size)


@dataclass
class TrainResult:
    """What :func:`train` hands back."""

    student: nn.Module = field(repr=False)  # with the best weights (the last ones when no evaluation ran)
    last_state: dict[str, torch.Tensor] = field(repr=False)
    steps: int
    total_steps: int
    best_step: int | None
    best_metrics: dict[str, float]
    last_metrics: dict[str, float]
    resumed_from: int | None
    plan: LossPlan
    log: list[dict] = field(repr=False)
    seconds: float = 0.0
    step_seconds: list[float] = field(default_factory=list, repr=False)  # per optimisation step, this process
    assets: list[dict] = field(default_factory=list)  # pretrained files the losses used (path, sha256)
    selection: dict | None = None  # Selection.describe() of the metric that picked the student; None: no hold-out


@dataclass
class CompressResult:
    """What :func:`compress` hands back (paths are None on ranks other than 0)."""

    out: Path
    student_path: Path | None
    report_path: Path | None
    train_log: Path | None
    samples: Path | None
    config: RecipeConfig
    metrics: dict
    train: TrainResult
    warnings: list[str]
    report: dict | None = field(default=None, repr=False)

    @property
    def student(self) -> nn.Module:
        return self.train.student


# ====================================================================== recipe -> loss plan


def plan_losses(cfg: RecipeConfig, *, has_targets: bool, paired: bool, same_shape: bool = True) -> LossPlan:
    """Decide the active loss terms from the recipe and what the data offers.

    ``has_targets``: real target-domain images exist (a B domain or
    ``--target``); ``paired``: they are aligned ground truth for the inputs;
    ``same_shape``: the generator's output has its input's channels and size
    (not so for super-resolution), which the identity term needs.
    """
    weights: dict[str, float] = {}
    disabled: dict[str, str] = {}
    warn: list[str] = []
    d = cfg.discriminator

    for name in ("crd", "perceptual", "rkd", "kd_pixel"):
        w = getattr(cfg, name).weight
        if w > 0:
            weights[name] = w
        else:
            disabled[name] = "weight 0"
    if cfg.crd.weight > 0 and not (cfg.crd.rows or cfg.crd.columns or cfg.crd.patches):
        raise GanzipError("crd.rows, crd.columns and crd.patches are all false: enable one or set crd.weight=0")

    if cfg.ground_truth.weight > 0:
        if paired:
            weights["ground_truth"] = cfg.ground_truth.weight
        else:
            disabled["ground_truth"] = "no aligned A|B pairs"
    else:
        disabled["ground_truth"] = "weight 0"

    if cfg.identity.weight > 0:
        if not same_shape:
            disabled["identity"] = "the output differs from the input in size or channels"
        elif has_targets and not paired:
            weights["identity"] = cfg.identity.weight
        else:
            disabled["identity"] = "used only with unpaired target images"
    else:
        disabled["identity"] = "weight 0"

    d_fakes = list(d.fakes) if d.enabled else []
    wants_adv = d.enabled and cfg.adversarial.weight > 0
    use_d = d.enabled and (wants_adv or bool(d_fakes))
    conditional = d.conditional
    if not d.enabled:
        disabled["adversarial"] = "discriminator disabled"
    elif cfg.adversarial.weight <= 0:
        disabled["adversarial"] = "weight 0"
    if use_d and not has_targets:
        if d.fallback == "error":
            raise GanzipError(
                f"recipe {cfg.name!r} needs real target images for its discriminator: give --target DIR "
                "or data with a B domain (trainA/trainB, or A|B pairs)"
            )
        warn.append(
            "no target images (no --target and no B domain): the discriminator has no real data, so the "
            "adversarial term is disabled (discriminator.fallback = \"disable\", like the crd-no-d ablation)"
        )
        disabled["adversarial"] = "no target images (fallback: disable)"
        use_d, wants_adv, d_fakes = False, False, []
    if use_d and conditional and not paired:
        raise GanzipError(
            "discriminator.conditional = true needs aligned A|B pairs (it judges input and output together): "
            "use paired data or --set discriminator.conditional=false"
        )
    if use_d and wants_adv and not d_fakes:
        raise GanzipError(
            "the student gets an adversarial term but discriminator.fakes is empty, so D would never learn: "
            "set discriminator.fakes=[\"teacher\"] or adversarial.weight=0"
        )
    if use_d and wants_adv:
        weights["adversarial"] = cfg.adversarial.weight
    if use_d and not wants_adv:
        warn.append("the discriminator trains but the student has no adversarial term: D is unused")

    if not weights:
        raise GanzipError(
            f"recipe {cfg.name!r} leaves the student with no loss term on this data "
            f"(off: {', '.join(f'{k} ({v})' for k, v in disabled.items())})"
        )
    needs_teacher = any(k in weights for k in ("crd", "perceptual", "rkd", "kd_pixel")) or "teacher" in d_fakes
    if "rkd" in weights and cfg.train.batch_size < 3:
        raise GanzipError(
            f"rkd relates the images of a batch and needs at least 3 per batch (angles), got batch size "
            f"{cfg.train.batch_size}: use --batch-size 4"
        )
    return LossPlan(weights, d_fakes if use_d else [], use_d, conditional, needs_teacher, warn, disabled)


CRD_REFERENCE_SIDE = 256  # the paper's k = 32 refers to 256-px outputs: an 8 x 8 grid of patches
CRD_REFERENCE_PATCH = 32


def crd_patch_size(cfg: RecipeConfig, out_side: int | None = None) -> int:
    """The CRD patch side k in output pixels for outputs of side ``out_side`` (default: ``train.size``).

    ``crd.patch_size = 0`` (the recipes' default) keeps the paper's grid:
    k = 32 at a 256-px output, scaled with the output side, k = out_side / 8
    (8 at 64 px, 16 at 128, 64 at 512). A positive ``crd.patch_size`` is k in
    output pixels, whatever the size.
    """
    out_side = int(out_side or cfg.train.size)
    if cfg.crd.patch_size > 0:
        return cfg.crd.patch_size
    return max(1, out_side * CRD_REFERENCE_PATCH // CRD_REFERENCE_SIDE)


def check_size(cfg: RecipeConfig, out_side: int | None = None) -> None:
    """The image size must be usable and the output (side ``out_side``, default ``train.size``) hold whole CRD patches."""
    from .loading import check_size_value

    check_size_value(cfg.train.size)
    if not (cfg.crd.weight > 0 and cfg.crd.patches):
        return
    size = cfg.train.size
    out_side = int(out_side or size)
    k = crd_patch_size(cfg, out_side)
    what = f"--size {size}" if out_side == size else f"the output side {out_side} (--size {size} input)"
    if cfg.crd.patch_size == 0 and out_side * CRD_REFERENCE_PATCH % CRD_REFERENCE_SIDE:
        raise GanzipError(
            f"{what} is not a multiple of 8, so the CRD patch grid of the recipe (8 x 8 patches, k = 32 at 256 px) "
            f"does not fit: choose --size so that the output side is a multiple of 8, or --set crd.patch_size=N "
            f"with N dividing {out_side} (or crd.patches=false)"
        )
    if out_side % k:
        raise GanzipError(
            f"{what} is not divisible by the CRD patch size {k}: choose --size so that the output side is a "
            f"multiple of {k}, or --set crd.patch_size=N with N dividing {out_side} (or crd.patches=false)"
        )
    if k > out_side:
        raise GanzipError(f"crd.patch_size {k} is larger than {what}: use --set crd.patch_size=N with N <= {out_side}")


class _Losses(nn.Module):
    """The recipe's loss modules (built once, moved to the device)."""

    def __init__(self, cfg: RecipeConfig, plan: LossPlan, offline: bool, out_side: int | None = None):
        super().__init__()
        from . import losses as L

        w = plan.weights
        if "crd" in w:
            self.crd = L.CRDLoss(
                patch_size=crd_patch_size(cfg, out_side), rows=cfg.crd.rows, columns=cfg.crd.columns,
                patches=cfg.crd.patches, distance_weight=cfg.crd.distance, angle_weight=cfg.crd.angle,
                precision=cfg.crd.precision,
            )
        if "rkd" in w:
            self.rkd = L.RKDInstanceLoss(distance_weight=cfg.rkd.distance, angle_weight=cfg.rkd.angle)
        self.asset_records: list[dict] = []
        if "perceptual" in w:
            try:
                self.perceptual = L.PerceptualLoss(
                    weights_path=cfg.perceptual.weights or None, offline=offline,
                    style_weight=cfg.perceptual.style, feature_weight=cfg.perceptual.feature,
                )
            except AssetMissingError as exc:
                if "perceptual.weight=0" in str(exc):
                    raise
                raise AssetMissingError(f"{exc}; or train without the perceptual term: --set perceptual.weight=0") from None
            weights_file = getattr(self.perceptual, "weights_file", None)
            if weights_file is not None:
                from .assets import asset_record

                self.asset_records.append(asset_record("vgg16", weights_file))
        if "kd_pixel" in w:
            self.kd_pixel = L.PixelLoss(cfg.kd_pixel.loss)
        if "ground_truth" in w:
            self.ground_truth = L.PixelLoss(cfg.ground_truth.loss)
        if "identity" in w:
            self.identity = L.PixelLoss("l1")
        if plan.use_discriminator:
            self.gan = L.GANLoss(cfg.adversarial.mode)
            self.frozen = L.frozen


# ====================================================================== schedule, RNG, optimizer state


def linear_decay(total_steps: int, decay_start: float) -> Callable[[int], float]:
    """CycleGAN's schedule in steps: factor 1 until ``decay_start * total``, then linear to 0 at ``total``."""
    start = int(round(total_steps * decay_start))
    span = max(1, total_steps - start)

    def factor(step: int) -> float:
        if step < start:
            return 1.0
        return max(0.0, (total_steps - step) / span)

    return factor


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng(device: torch.device) -> tuple[dict[str, torch.Tensor], dict]:
    """Every RNG state as uint8 tensors plus JSON-able scalars."""
    np_state = np.random.get_state()
    tensors = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.asarray(np_state[1], dtype="<u4").view(np.uint8).copy()),
    }
    if device.type == "cuda":
        tensors["cuda"] = torch.cuda.get_rng_state(device)
    py = random.getstate()
    meta = {
        "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py[0], list(py[1]), py[2]],
    }
    return tensors, meta


def restore_rng(tensors: Mapping[str, torch.Tensor], meta: Mapping, device: torch.device) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(tensors["torch"].to(torch.uint8).cpu())
    if device.type == "cuda" and "cuda" in tensors:
        torch.cuda.set_rng_state(tensors["cuda"].to(torch.uint8).cpu(), device)
    keys = tensors["numpy"].cpu().numpy().astype(np.uint8).view("<u4").astype(np.uint32)
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, keys, int(pos), int(has_gauss), float(cached)))
    version, state, gauss = meta["python"]
    random.setstate((version, tuple(state), gauss))


def _jsonable(value):
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    raise GanzipError(f"optimizer state holds a {type(value).__name__}, which cannot be checkpointed")


def flatten_optimizer(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state dict as (tensors for safetensors, JSON structure). No pickle."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    state: dict[str, dict] = {}
    for pid, entry in sd["state"].items():
        out = {}
        for key, value in entry.items():
            if torch.is_tensor(value):
                name = f"{prefix}.{pid}.{key}"
                tensors[name] = value
                out[key] = {"__tensor__": name}
            else:
                out[key] = _jsonable(value)
        state[str(pid)] = out
    return tensors, {"state": state, "param_groups": _jsonable(sd["param_groups"])}


def unflatten_optimizer(tensors: Mapping[str, torch.Tensor], structure: Mapping) -> dict:
    """Inverse of :func:`flatten_optimizer`: a state dict for ``optimizer.load_state_dict``."""
    state = {}
    for pid, entry in structure["state"].items():
        state[int(pid)] = {
            k: (tensors[v["__tensor__"]] if isinstance(v, dict) and "__tensor__" in v else v) for k, v in entry.items()
        }
    groups = []
    for g in structure["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


# ====================================================================== OUT folder and checkpoints


def _is_atomic_temp(path: Path) -> bool:
    """A leftover of an interrupted ganzip.io write: ``.NAME.XXXXXXXX.tmp``."""
    return path.is_file() and path.name.startswith(".") and path.name.endswith(".tmp")


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and all(_is_atomic_temp(p) or p.name in rundir.BOOKKEEPING for p in path.iterdir())


def read_run_marker(out: Path) -> dict | None:
    """The ``run.json`` a compress run keeps in OUT, or None when absent or not ganzip's."""
    path = out / RUN_MARKER
    if not path.exists():
        return None
    try:
        marker = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def prepare_out(out: Path, *, resume: bool, overwrite: bool) -> str:
    """Decide what to do with ``out`` and clear it if needed: returns ``"fresh"`` or ``"resume"``."""
    mode, clear = plan_out(out, resume=resume, overwrite=overwrite)
    if clear:
        clear_out(out)
    return mode


def plan_out(out: Path, *, resume: bool, overwrite: bool) -> tuple[str, bool]:
    """Decide what to do with ``out``, touching nothing: ``(mode, clear)``.

    * missing or empty: fresh;
    * holds a finished run: error, unless ``overwrite`` (then cleared);
    * holds an unfinished run with a checkpoint: resume, unless ``resume`` is
      False (then cleared and started over);
    * holds files ganzip did not write: error.

    The caller clears only after every input is loaded and checked.
    """
    rundir.check_path(out)
    if out.exists() and not out.is_dir():
        raise GanzipError(f"--out {out} is a file, not a folder: choose a folder path")
    if not out.exists():
        return "fresh", False
    if _is_empty_dir(out):
        return "fresh", True
    marker = read_run_marker(out)
    if marker is None or marker.get("kind") != "ganzip-compress":
        raise GanzipError(
            f"--out {out} already exists and holds files ganzip did not write: choose a new or empty folder"
        )
    if marker.get("status") == "finished":
        if not overwrite:
            raise GanzipError(
                f"--out {out} holds a finished run (see {out / 'report.md'}): pass --overwrite to replace it, "
                "or choose another --out"
            )
        return "fresh", True
    has_ckpt = (out / CHECKPOINT_DIR / CHECKPOINT_JSON).exists()
    if resume and has_ckpt:
        return "resume", False
    return "fresh", True


def check_inputs_outside(out: Path, *, model=None, data=None, target=None, clearing: bool = False) -> None:
    """Inputs and outputs must not overlap: outputs would become training images, or clearing would delete an input."""
    o = out.resolve()
    for flag, value in (("--data", data), ("--target", target)):
        if isinstance(value, (str, Path)) and not str(value).startswith("builtin:") and Path(value).exists():
            d = Path(value).resolve()
            if o == d or o.is_relative_to(d):
                raise GanzipError(f"--out {out} is inside {flag} {value}: its outputs would be read as training "
                                  "images; choose an --out outside the data folder")
            if d.is_relative_to(o):
                raise GanzipError(f"{flag} {value} is inside --out {out}: choose an --out that holds no inputs")
    if clearing and isinstance(model, (str, Path)):
        m = Path(model).resolve()
        if m.is_relative_to(o):
            raise GanzipError(f"the model {model} is inside --out {out}, which this run would clear: "
                              "copy the model elsewhere, or choose another --out")


def clear_out(out: Path) -> None:
    """Remove what an earlier compress run wrote into ``out`` (and nothing else)."""
    for path in out.iterdir():
        if _is_atomic_temp(path):
            with contextlib.suppress(OSError):
                path.unlink()
    for name in OWNED_FILES:
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()
    for name in OWNED_DIRS:
        shutil.rmtree(out / name, ignore_errors=True)


def write_run_marker(out: Path, status: str, info: Mapping) -> None:
    gio.atomic_write_json(out / RUN_MARKER, {"kind": "ganzip-compress", "status": status, **info})


def save_checkpoint(ckpt_dir: Path, tensors: Mapping[str, torch.Tensor], state: Mapping) -> Path:
    """Write tensors, then the JSON that points at them; then drop older tensor files.

    A crash at any point leaves a complete earlier checkpoint: the JSON is
    replaced atomically only after its tensor file is on disk.
    """
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    name = f"state-{int(state['step']):09d}.safetensors"
    gio.save_safetensors_atomic(dict(tensors), ckpt_dir / name, metadata={"ganzip.format": "checkpoint"})
    gio.atomic_write_json(ckpt_dir / CHECKPOINT_JSON, {**state, "tensors": name})
    for old in ckpt_dir.glob("state-*.safetensors"):
        if old.name != name:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
    return ckpt_dir / name


def load_checkpoint(ckpt_dir: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read what :func:`save_checkpoint` wrote: (tensors, state)."""
    from safetensors.torch import load_file

    try:
        state = json.loads((ckpt_dir / CHECKPOINT_JSON).read_text())
        tensors = load_file(str(ckpt_dir / state["tensors"]))
    except (OSError, KeyError, json.JSONDecodeError, Exception) as exc:
        raise GanzipError(
            f"the checkpoint in {ckpt_dir} cannot be read ({exc}): pass --no-resume to start over"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise GanzipError(f"the checkpoint in {ckpt_dir} has an unknown format: pass --no-resume to start over")
    return tensors, state


def _sub(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


def _prefixed(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach() for k, v in sd.items()}


def _clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ====================================================================== data order


class BatchOrder:
    """Which images each step of each rank reads, as a pure function of (seed, epoch, rank).

    Each epoch is a seeded permutation (``DistributedSampler``, which shards
    it across ranks); a step's batch is a slice of it. Nothing about the
    order has to be stored to resume exactly at any step.
    """

    def __init__(self, n: int, batch_size: int, seed: int, env: ddp.DistEnv):
        from torch.utils.data.distributed import DistributedSampler

        self.batch_size = batch_size
        self.sampler = DistributedSampler(
            range(n), num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=seed, drop_last=True
        )
        self.steps_per_epoch = len(self.sampler) // batch_size
        if self.steps_per_epoch < 1:
            raise GanzipError(
                f"the training data has {n} images, fewer than one batch of {batch_size}"
                + (f" per process for {env.world_size} processes" if env.world_size > 1 else "")
                + ": add images or lower --batch-size"
            )
        self._epoch: int | None = None
        self._indices: list[int] = []

    def batch(self, step: int) -> list[int]:
        epoch, pos = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self.sampler.set_epoch(epoch)
            self._indices = list(self.sampler)
            self._epoch = epoch
        return self._indices[pos * self.batch_size:(pos + 1) * self.batch_size]


def _collate(items: Sequence[Mapping]) -> dict:
    out: dict[str, Any] = {}
    for key in items[0]:
        vals = [it[key] for it in items]
        out[key] = torch.stack(vals) if torch.is_tensor(vals[0]) else vals
    return out


class _Loader:
    """Batches for a range of steps; with workers, prefetched by one DataLoader per epoch."""

    def __init__(self, ds, order: BatchOrder, workers: int, seed: int, pin: bool):
        self.ds, self.order, self.workers, self.seed, self.pin = ds, order, workers, seed, pin

    def _fetch(self, indices: list[int]) -> dict:
        many = getattr(self.ds, "__getitems__", None)
        items = many(indices) if many is not None else [self.ds[i] for i in indices]
        return _collate(items)

    def _set_epoch(self, epoch: int) -> None:
        ds = self.ds
        while ds is not None:  # through Subset wrappers to the dataset that draws augmentations
            set_epoch = getattr(ds, "set_epoch", None)
            if set_epoch is not None:
                set_epoch(epoch)
                return
            ds = getattr(ds, "dataset", None)

    def iterate(self, start: int, stop: int):
        spe = self.order.steps_per_epoch
        step = start
        while step < stop:
            epoch = step // spe
            end = min(stop, (epoch + 1) * spe)
            self._set_epoch(epoch)
            if self.workers <= 0:
                for s in range(step, end):
                    yield s, self._fetch(self.order.batch(s))
            else:
                from torch.utils.data import DataLoader

                batches = [self.order.batch(s) for s in range(step, end)]
                # An explicit generator: creating the loader must not draw from the global RNG.
                gen = torch.Generator().manual_seed(self.seed * 7919 + epoch)
                loader = DataLoader(self.ds, batch_sampler=batches, num_workers=self.workers, collate_fn=_collate,
                                    generator=gen, pin_memory=self.pin)
                yield from zip(range(step, end), loader)
            step = end


def _target_batch(targets, step: int, n: int, seed: int, rank: int) -> torch.Tensor:
    """``n`` real target images for ``step``: a seeded draw, so resuming needs no state."""
    g = torch.Generator().manual_seed(((seed * 1000003 + rank) * 2654435761 + step * 40503 + 17) % 2**63)
    idx = torch.randint(len(targets), (n,), generator=g).tolist()
    items = [targets[i] for i in idx]
    return torch.stack([it["B"] if "B" in it else it["A"] for it in items])


# ====================================================================== evaluation on the held-out split


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB between images in [-1, 1], on the [0, 1] scale (``ganzip.metrics.fidelity``)."""
    from .metrics.fidelity import psnr as psnr01

    return psnr01((a.float() + 1) / 2, (b.float() + 1) / 2)


# The selection metrics: log column, and whether higher is better.
SELECT_METRICS: dict[str, tuple[str, bool]] = {
    "kid": ("holdout_kid", False), "fid": ("holdout_fid", False),
    "lpips": ("holdout_lpips", False), "psnr": ("holdout_psnr", True),
}
_SELECT_ASSET = {"kid": "inception_fid", "fid": "inception_fid", "lpips": "alexnet"}
_SELECT_TEXT = {"kid": "KID", "fid": "FID", "lpips": "LPIPS", "psnr": "PSNR"}


@dataclass
class Selection:
    """Which held-out metric picks the kept student, and why (recorded in the report and train_log.csv)."""

    metric: str  # kid | fid | lpips | psnr
    requested: str  # eval.select as given (auto or a metric)
    reason: str
    fallback: bool = False  # auto could not use its first choice
    weights: Path | None = None  # the pretrained file the metric runs on
    asset: dict | None = None  # its record (path, sha256, verified)

    @property
    def column(self) -> str:
        return SELECT_METRICS[self.metric][0]

    @property
    def higher_is_better(self) -> bool:
        return SELECT_METRICS[self.metric][1]

    def better(self, new: Mapping[str, float], old: Mapping[str, float]) -> bool:
        """``new`` beats ``old`` on the selection metric (old lacking it, e.g. after a change: new wins)."""
        if self.column not in old:
            return True
        a, b = new[self.column], old[self.column]
        return a > b if self.higher_is_better else a < b

    def describe(self) -> dict:
        return {"metric": self.metric, "requested": self.requested, "reason": self.reason,
                "fallback": self.fallback, "column": self.column,
                "better": "higher" if self.higher_is_better else "lower"}


def resolve_selection(cfg: RecipeConfig, holdout_size: int, offline: bool = True) -> Selection:
    """Decide ``eval.select``: an asked-for metric whose weights are missing is a one-line error.

    ``auto`` takes KID when the Inception weights are present (and the hold-out
    has two images), else LPIPS when AlexNet's are, else PSNR.
    """
    from . import assets

    ev = cfg.eval
    explicit = {"inception_fid": ev.inception_weights or None, "alexnet": ev.alexnet_weights or None}

    def find(name: str) -> tuple[Path | None, str]:
        spec = assets.get_spec(name)
        try:
            return assets.resolve(name, explicit[name], offline), ""
        except AssetMissingError:
            where = explicit[name] or spec.filename
            return None, f"{where} not found"

    key = {"inception_fid": "eval.inception_weights", "alexnet": "eval.alexnet_weights"}
    if ev.select != "auto":
        metric = ev.select
        if metric == "psnr":
            return Selection("psnr", metric, "asked for (eval.select = psnr)")
        name = _SELECT_ASSET[metric]
        path, why = find(name)
        if path is None:
            spec = assets.get_spec(name)
            raise AssetMissingError(
                f"eval.select = {metric} needs {spec.filename} ({why}): install it with `ganzip assets import FILE`, "
                f"point --set {key[name]}=FILE at it, or choose another eval.select"
            )
        if metric in ("kid", "fid") and holdout_size < 2:
            raise GanzipError(f"eval.select = {metric} compares image sets and needs at least 2 held-out images, "
                              f"got {holdout_size}: raise eval.holdout or use eval.select=lpips|psnr")
        return Selection(metric, metric, f"asked for (eval.select = {metric})", weights=path,
                         asset=assets.asset_record(name, path))
    notes = []
    path, why = find("inception_fid")
    if path is not None and holdout_size >= 2:
        return Selection("kid", "auto", "default: KID, the most faithful metric whose weights are present "
                         "(unbiased on a small hold-out, unlike FID)", weights=path,
                         asset=assets.asset_record("inception_fid", path))
    notes.append(f"KID: {why}" if path is None else f"KID: only {holdout_size} held-out image")
    path, why = find("alexnet")
    if path is not None:
        return Selection("lpips", "auto", f"default fell back to LPIPS ({'; '.join(notes)})", fallback=True,
                         weights=path, asset=assets.asset_record("alexnet", path))
    notes.append(f"LPIPS: {why}")
    return Selection("psnr", "auto", f"default fell back to PSNR ({'; '.join(notes)}; install with "
                     "`ganzip assets import FILE`)", fallback=True)


class HoldoutEval:
    """Fidelity of the student to the teacher on held-out training images.

    Always PSNR and L1; plus the selection metric when it is another one:
    KID or FID between Inception features of the student's and the teacher's
    outputs (uint8, as saved PNGs hold them), or the mean LPIPS.
    Teacher outputs (and their features) are computed once. The student runs
    in eval mode; no random numbers are drawn, so evaluating never changes
    the training run.
    """

    def __init__(self, ds, teacher: nn.Module, device: torch.device, max_images: int, batch_size: int = 8,
                 channels_last: bool = False, selection: Selection | None = None):
        n = min(len(ds), max_images)
        self.inputs = torch.stack([ds[i]["A"] for i in range(n)])
        self.device = device
        self.batch_size = batch_size
        self.channels_last = channels_last
        self.selection = selection or Selection("psnr", "psnr", "asked for (eval.select = psnr)")
        self.teacher_out = self._run(teacher)
        self._inception = self._lpips = self._teacher_feats = None
        metric = self.selection.metric
        if metric in ("kid", "fid"):
            from .metrics.fid import load_inception

            self._inception = load_inception(self.selection.weights, dims=2048, device=device, offline=True)
            self._teacher_feats = self._features(self.teacher_out)
        elif metric == "lpips":
            from .metrics.lpips import load_lpips

            self._lpips = load_lpips("alex", self.selection.weights, device=device, offline=True)

    @torch.no_grad()
    def _run(self, model: nn.Module) -> torch.Tensor:
        was = model.training
        model.eval()
        outs = []
        try:
            for i in range(0, len(self.inputs), self.batch_size):
                x = self.inputs[i:i + self.batch_size].to(self.device)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                outs.append(model(x.clone()).float().cpu())  # never let a model change the cached inputs
        finally:
            model.train(was)
        return torch.cat(outs)

    def _features(self, images: torch.Tensor) -> np.ndarray:
        from .metrics.fid import to_uint8

        u8 = to_uint8(images)
        if u8.shape[1] == 1:
            u8 = u8.expand(-1, 3, -1, -1)
        if u8.shape[1] != 3:
            raise GanzipError(f"eval.select = {self.selection.metric} needs RGB or grayscale outputs, the teacher "
                              f"gives {u8.shape[1]} channels: use --set eval.select=psnr")
        return np.concatenate([self._inception(u8[i:i + self.batch_size])
                               for i in range(0, len(u8), self.batch_size)])

    def __call__(self, student: nn.Module) -> tuple[dict[str, float], torch.Tensor]:
        import warnings

        out = self._run(student)
        metrics = {
            "holdout_psnr": float(psnr(out, self.teacher_out).mean()),
            "holdout_l1": float((out - self.teacher_out).abs().mean()),
        }
        metric = self.selection.metric
        if self._inception is not None:
            from .metrics import fid as fidm
            from .metrics.kid import mmd2_unbiased

            feats = self._features(out)
            if metric == "kid":  # the unbiased MMD^2 on the whole hold-out (one subset: all of it)
                metrics["holdout_kid"] = mmd2_unbiased(feats.astype(np.float64), self._teacher_feats.astype(np.float64))
            else:
                with warnings.catch_warnings():  # the few-images caveat is docs/evaluation.md's, not each step's
                    warnings.simplefilter("ignore", fidm.MetricWarning)
                    a = fidm.Statistics.from_features(feats, source="student")
                    b = fidm.Statistics.from_features(self._teacher_feats, source="teacher")
                    metrics["holdout_fid"] = fidm.frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
        elif self._lpips is not None:
            values = [self._lpips(out[i:i + self.batch_size].clamp(-1, 1), self.teacher_out[i:i + self.batch_size].clamp(-1, 1))
                      for i in range(0, len(out), self.batch_size)]
            metrics["holdout_lpips"] = float(torch.cat(values).double().mean())
        return metrics, out


def display_rgb(x: torch.Tensor, size: Sequence[int] | None = None) -> torch.Tensor:
    """Images for display: 3 channels (grey repeated; a mask or other extra channels dropped), resized to ``size``."""
    x = x.float().cpu()
    if x.shape[1] < 3:
        x = x[:, :1].repeat(1, 3, 1, 1)
    x = x[:, :3]
    if size is not None and tuple(x.shape[-2:]) != tuple(size):
        x = torch.nn.functional.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False).clamp(-1, 1)
    return x


def sample_grid(inputs: torch.Tensor, teacher: torch.Tensor, student: torch.Tensor) -> bytes:
    """A PNG: one row per image, columns input | teacher | student, at the outputs' resolution.

    Inputs of another size (super-resolution) are resized to the outputs'
    for display only (bicubic); grey-scale images are shown grey, and a
    fourth input channel (a mask) is left out.
    """
    from PIL import Image

    out_hw = teacher.shape[-2:]
    rows = torch.cat([display_rgb(inputs, out_hw), display_rgb(teacher), display_rgb(student, out_hw)], dim=3)
    grid = torch.cat(list(rows), dim=1)  # C x (n*H) x (3*W)
    arr = ((grid.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buf = _stdio.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


# ====================================================================== the loop


def _autocast(device: torch.device, amp: str):
    if amp == "bf16" or (amp == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _flag(value: str, device: torch.device) -> bool:
    return value == "on" or (value == "auto" and device.type == "cuda")


def _deterministic(value: str, device: torch.device) -> bool:
    return value == "on" or (value == "auto" and device.type == "cpu")


def _cond(x: torch.Tensor, y: torch.Tensor, conditional: bool) -> torch.Tensor:
    if not conditional:
        return y
    if x.shape[-2:] != y.shape[-2:]:  # super-resolution: D judges the input enlarged to the output's size
        x = torch.nn.functional.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=False)
    return torch.cat([x, y], dim=1)


def _write_log(path: Path, rows: list[dict]) -> None:
    fields: list[str] = []
    for row in rows:
        for k in row:
            if k not in fields:
                fields.append(k)
    buf = _stdio.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields or ["step"], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    gio.atomic_write_text(path, buf.getvalue())


def _read_log(path: Path, upto: int) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                step = int(row["step"])
            except (KeyError, ValueError):
                continue
            if step <= upto:
                rows.append({k: _num(v) for k, v in row.items() if v != ""})
    return rows


def _num(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


@in_stage("training")
def train(
    teacher: nn.Module,
    student: nn.Module,
    discriminator: nn.Module | None,
    data: DataBundle,
    cfg: RecipeConfig,
    opts: RunOptions,
    plan: LossPlan,
    *,
    env: ddp.DistEnv | None = None,
    run_info: Mapping | None = None,
) -> TrainResult:
    """Distil ``teacher`` into ``student`` following ``cfg``; return the best student.

    Resumes from ``opts.out/checkpoint`` when it exists and
    ``run_info["fingerprint"]`` matches (:func:`compress` decides). Raises
    :class:`NonFiniteLossError` when a loss term becomes NaN/inf (the last
    good checkpoint stays in place).
    """
    env = env or ddp.DistEnv()
    device = opts.device
    out = Path(opts.out)
    run_info = dict(run_info or {})
    t = cfg.train
    deterministic = _deterministic(t.deterministic, device)
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    if deterministic:
        if device.type == "cuda":  # cuBLAS needs this to be reproducible (read when it initialises)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed image size: let cuDNN pick its fastest kernels
    try:
        return _train(teacher, student, discriminator, data, cfg, opts, plan, env, device, out, run_info)
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.backends.cudnn.benchmark = prev_bench


def _train(teacher, student, discriminator, data, cfg, opts, plan, env, device, out, run_info) -> TrainResult:
    t = cfg.train
    started = time.perf_counter()
    channels_last = _flag(t.channels_last, device)
    mem = torch.channels_last if channels_last else torch.contiguous_format
    losses = _Losses(cfg, plan, opts.offline, out_side=data.out_side).to(device)
    sized_crd = data.out_side is not None or "crd" not in plan.weights  # else: sized from the first outputs

    teacher = teacher.to(device).eval()  # only ever run under no_grad; its parameters are left as they are
    student = student.to(device).train()
    for p in student.parameters():  # a student copied from a frozen teacher starts frozen too
        p.requires_grad_(True)
    if channels_last:
        teacher = teacher.to(memory_format=mem)
        student = student.to(memory_format=mem)
    D = discriminator if plan.use_discriminator else None
    if D is not None:
        D = D.to(device).train()
        if channels_last:
            D = D.to(memory_format=mem)

    order = BatchOrder(len(data.train), t.batch_size, t.seed, env)
    total = cfg.total_steps(order.steps_per_epoch)
    stop_at = total if opts.max_steps is None else min(total, opts.max_steps)
    betas = (t.beta1, t.beta2)
    opt_s = torch.optim.Adam(student.parameters(), lr=t.lr, betas=betas)
    sched_s = torch.optim.lr_scheduler.LambdaLR(opt_s, linear_decay(total, t.decay_start))
    opt_d = sched_d = None
    if D is not None:
        opt_d = torch.optim.Adam(D.parameters(), lr=cfg.discriminator.lr, betas=betas)
        sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, linear_decay(total, t.decay_start))

    ckpt_dir = out / CHECKPOINT_DIR
    holdout = None
    selection: Selection | None = None
    if data.holdout is not None and len(data.holdout) > 0:
        selection = resolve_selection(cfg, min(len(data.holdout), cfg.eval.max_images), opts.offline)
        holdout = HoldoutEval(data.holdout, teacher, device, cfg.eval.max_images, channels_last=channels_last,
                              selection=selection)

    # ---- fresh start or resume
    start = 0
    best_step: int | None = None
    best_metrics: dict[str, float] = {}
    best_state: dict[str, torch.Tensor] | None = None
    last_metrics: dict[str, float] = {}
    log_rows: list[dict] = []
    resumed_from = None
    fingerprint = run_info.get("fingerprint")
    if run_info.get("mode") == "resume":
        tensors, state = load_checkpoint(ckpt_dir)
        if fingerprint is not None and state.get("fingerprint") != fingerprint:
            diff = _fingerprint_diff(state.get("fingerprint") or {}, fingerprint)
            raise GanzipError(
                f"{out} holds a checkpoint of a different run ({diff}): pass --no-resume to start over, "
                "or choose another --out"
            )
        if state.get("total_steps") != total:
            raise GanzipError(
                f"{out} holds a checkpoint of a {state.get('total_steps')}-step run but this one has {total} steps: "
                "pass --no-resume to start over, or choose another --out"
            )
        step = state.get("step")
        if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= total or not isinstance(
                state.get("rng"), list):
            raise GanzipError(f"the checkpoint in {ckpt_dir} is damaged (step {str(step)[:20]} of {total}): "
                              "pass --no-resume to start over")
        try:
            student.load_state_dict(_sub(tensors, "student"))
            opt_s.load_state_dict(unflatten_optimizer(tensors, state["optimizers"]["student"]))
            sched_s.load_state_dict(state["schedulers"]["student"])
            if D is not None:
                D.load_state_dict(_sub(tensors, "discriminator"))
                opt_d.load_state_dict(unflatten_optimizer(tensors, state["optimizers"]["discriminator"]))
                sched_d.load_state_dict(state["schedulers"]["discriminator"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise GanzipError(f"the checkpoint in {ckpt_dir} is damaged ({exc.__class__.__name__}: {str(exc)[:80]}): "
                              "pass --no-resume to start over") from None
        best = _sub(tensors, "best")
        if best:
            best_state = {k: v.to(device) for k, v in best.items()}
            best_step = state["best"]["step"]
            best_metrics = state["best"]["metrics"]
        last_metrics = state.get("last_metrics", {})
        start = resumed_from = int(state["step"])
        rng = state["rng"]
        if len(rng) == env.world_size:
            restore_rng(_sub(tensors, f"rng.{env.rank}"), rng[env.rank], device)
        else:  # a different number of processes: the data order is kept, the random streams are not
            seed_everything(t.seed + 1000003 * env.rank + start)
        if env.is_main:
            log_rows = _read_log(out / TRAIN_LOG, start)
    else:
        seed_everything(t.seed + 1000003 * env.rank)
        ddp.broadcast_module(student, env)
        if D is not None:
            ddp.broadcast_module(D, env)

    tb = None
    if opts.tensorboard and env.is_main:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise GanzipError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        tb = SummaryWriter(log_dir=str(out / "tensorboard"), purge_step=start + 1)

    def checkpoint(step: int) -> None:
        rng_t, rng_m = capture_rng(device)
        all_rng = ddp.gather_objects(({k: v.cpu() for k, v in rng_t.items()}, rng_m), env)
        if env.is_main:
            tensors = _prefixed(student.state_dict(), "student")
            ts, s_struct = flatten_optimizer(opt_s, "optim.student")
            tensors.update(ts)
            optimizers = {"student": s_struct}
            schedulers = {"student": _sched_state(sched_s)}
            if D is not None:
                tensors.update(_prefixed(D.state_dict(), "discriminator"))
                td, d_struct = flatten_optimizer(opt_d, "optim.discriminator")
                tensors.update(td)
                optimizers["discriminator"] = d_struct
                schedulers["discriminator"] = _sched_state(sched_d)
            if best_state is not None:
                tensors.update(_prefixed(best_state, "best"))
            for r, (rt, _) in enumerate(all_rng):
                tensors.update(_prefixed(rt, f"rng.{r}"))
            state = {
                "format": CHECKPOINT_FORMAT, "step": step, "total_steps": total, "fingerprint": fingerprint,
                "optimizers": optimizers, "schedulers": schedulers, "rng": [m for _, m in all_rng],
                "best": {"step": best_step, "metrics": best_metrics}, "last_metrics": last_metrics,
            }
            # The log first: a resume keeps the rows up to its checkpoint, so a log that runs
            # ahead is harmless, while one that lags would lose rows for good.
            _write_log(out / TRAIN_LOG, log_rows)
            save_checkpoint(ckpt_dir, tensors, state)
        ddp.barrier(env)

    bar = progress_bar(total=total, initial=start, disable=opts.quiet or not env.is_main, file=sys.stderr,
                       desc=f"compress {cfg.name}", unit="step")
    loader = _Loader(data.train, order, opts.workers, t.seed + env.rank, pin=device.type == "cuda")
    autocast = lambda: _autocast(device, t.amp)  # noqa: E731
    d_fakes = plan.d_fakes
    w = plan.weights
    step = start
    step_seconds: list[float] = []  # wall time of each optimisation step (data loading excluded)
    try:
        for step, batch in loader.iterate(start, stop_at):
            step_started = time.perf_counter()
            x = batch["A"].to(device, non_blocking=True).contiguous(memory_format=mem)
            real = None
            if data.targets is not None:
                real = _target_batch(data.targets, step, x.shape[0], t.seed, env.rank).to(device)
            elif data.has_b and "B" in batch:
                real = batch["B"].to(device, non_blocking=True)
            if real is not None:
                real = real.contiguous(memory_format=mem)

            # ---- student
            terms: dict[str, torch.Tensor] = {}
            with autocast():
                # a copy each: some generators (RCAN) scale their input in place
                s_out = student(x.clone())
                t_out = None
                if plan.needs_teacher:
                    with torch.no_grad():
                        t_out = teacher(x.clone())
            s32 = s_out.float()
            t32 = t_out.float() if t_out is not None else None
            if not sized_crd:  # a DataBundle built by hand does not say the output side
                losses.crd.patch_size = crd_patch_size(cfg, int(s32.shape[-1]))
                sized_crd = True
            if "adversarial" in w:
                with losses.frozen(D), autocast():
                    pred = D(_cond(x, s_out, plan.conditional))
                terms["adversarial"] = w["adversarial"] * losses.gan(pred.float(), True, for_discriminator=False)
            if "crd" in w:
                terms["crd"] = w["crd"] * losses.crd(s32, t32)
            if "rkd" in w:
                terms["rkd"] = w["rkd"] * losses.rkd(s32, t32)
            if "perceptual" in w:
                terms["perceptual"] = w["perceptual"] * losses.perceptual(s32, t32)
            if "kd_pixel" in w:
                terms["kd_pixel"] = w["kd_pixel"] * losses.kd_pixel(s32, t32)
            if "ground_truth" in w:
                terms["ground_truth"] = w["ground_truth"] * losses.ground_truth(s32, real.float())
            if "identity" in w:
                with autocast():
                    same = student(real)
                terms["identity"] = w["identity"] * losses.identity(same.float(), real.float())
            loss_s = sum(terms.values())
            opt_s.zero_grad(set_to_none=True)
            loss_s.backward()

            # ---- discriminator (real targets vs the recipe's fakes; never a gradient to the student)
            d_terms: dict[str, torch.Tensor] = {}
            if D is not None:
                fakes = {"teacher": t_out, "student": s_out}
                with autocast():
                    pred_real = D(_cond(x, real, plan.conditional))
                    d_terms["d_real"] = losses.gan(pred_real.float(), True, for_discriminator=True)
                    for src in d_fakes:
                        pred_fake = D(_cond(x, fakes[src].detach(), plan.conditional))
                        d_terms[f"d_fake_{src}"] = losses.gan(pred_fake.float(), False, for_discriminator=True)
                fake_mean = sum(d_terms[f"d_fake_{s}"] for s in d_fakes) / len(d_fakes)
                loss_d = 0.5 * (d_terms["d_real"] + fake_mean)
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()

            # ---- one sync: every term (averaged over ranks), checked before any weight moves
            names = list(terms) + list(d_terms)
            values = torch.stack([v.detach().float() for v in list(terms.values()) + list(d_terms.values())])
            values = ddp.all_reduce_mean(values, env).cpu().tolist()
            bad = [n for n, v in zip(names, values) if not math.isfinite(v)]
            if bad:
                kept = _last_ckpt_step(ckpt_dir)
                where = (f"the last good checkpoint (step {kept}) is in {ckpt_dir}" if kept is not None
                         else "no checkpoint was written yet")
                raise NonFiniteLossError(
                    f"loss term {bad[0]!r} became {values[names.index(bad[0])]} at step {step + 1}; training stopped "
                    f"and {where}: lower the learning rate (--set train.lr=...) or the {bad[0]} weight, then run again"
                )
            lr_used = opt_s.param_groups[0]["lr"]
            ddp.average_gradients(student, env)
            opt_s.step()
            sched_s.step()
            if D is not None:
                ddp.average_gradients(D, env)
                opt_d.step()
                sched_d.step()
            ddp.broadcast_module(student, env, buffers_only=True)
            if D is not None:
                ddp.broadcast_module(D, env, buffers_only=True)

            if device.type == "cuda":
                torch.cuda.synchronize(device)
            step_seconds.append(time.perf_counter() - step_started)
            done = step + 1
            scalars = dict(zip(names, values))
            scalars["loss"] = float(sum(values[: len(terms)]))
            row = None
            if env.is_main and (done % max(1, opts.log_every) == 0 or done == stop_at):
                row = {"step": done, "epoch": step // order.steps_per_epoch, "lr": lr_used,
                       "loss": scalars["loss"], **{k: v for k, v in scalars.items() if k != "loss"}}
                log_rows.append(row)
                if tb is not None:
                    for k, v in scalars.items():
                        tb.add_scalar(f"train/{k}", v, done)
            if env.is_main and not opts.quiet:
                bar.set_postfix({k: f"{v:.3g}" for k, v in scalars.items()}, refresh=False)
            bar.update(1)

            # ---- held-out fidelity, best student
            if holdout is not None and ((opts.eval_every > 0 and done % opts.eval_every == 0) or done == total):
                metrics, _ = holdout(student)
                last_metrics = metrics
                if best_step is None or selection.better(metrics, best_metrics):
                    best_step, best_metrics = done, metrics
                    best_state = _clone_state(student)
                if env.is_main:
                    if row is None or row["step"] != done:
                        row = {"step": done, "epoch": step // order.steps_per_epoch}
                        log_rows.append(row)
                    row.update(metrics)
                    row.update({"select_metric": selection.column, "select_reason": selection.reason})
                    if tb is not None:
                        for k, v in metrics.items():
                            tb.add_scalar(f"holdout/{k}", v, done)

            if (opts.checkpoint_every > 0 and done % opts.checkpoint_every == 0) or done == stop_at:
                checkpoint(done)
    finally:
        bar.close()
        if tb is not None:
            tb.close()

    steps_done = stop_at if stop_at > start else start
    last_state = _clone_state(student)
    if best_state is not None:
        student.load_state_dict(best_state)
    student.eval()
    return TrainResult(
        student=student, last_state=last_state, steps=steps_done, total_steps=total, best_step=best_step,
        best_metrics=best_metrics, last_metrics=last_metrics, resumed_from=resumed_from, plan=plan,
        log=log_rows, seconds=time.perf_counter() - started, step_seconds=step_seconds,
        assets=list(losses.asset_records) + ([selection.asset] if selection is not None and selection.asset else []),
        selection=selection.describe() if selection is not None else None,
    )


def _sched_state(sched) -> dict:
    sd = sched.state_dict()
    sd["lr_lambdas"] = [None] * len(sd.get("lr_lambdas", []))  # plain functions: rebuilt from the config
    return _jsonable(sd)


def _last_ckpt_step(ckpt_dir: Path) -> int | None:
    try:
        return int(json.loads((ckpt_dir / CHECKPOINT_JSON).read_text())["step"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


def _fingerprint_diff(old: Mapping, new: Mapping) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:4]) or "unknown differences"


# ====================================================================== compress: the whole run


def _module_sha256(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _resolve_config(recipe, overrides, *, size, steps, epochs, batch_size, seed) -> RecipeConfig:
    from .recipes import resolve_recipe

    if steps is not None and epochs is not None:
        raise GanzipError("give --steps or --epochs, not both")
    flags = list(overrides or ())
    if size is not None:
        flags.append(f"train.size={int(size)}")
    if steps is not None:
        if int(steps) < 1:
            raise GanzipError(f"--steps must be at least 1, got {steps}")
        flags.append(f"train.steps={int(steps)}")
    if epochs is not None:
        if int(epochs) < 1:
            raise GanzipError(f"--epochs must be at least 1, got {epochs}")
        flags += [f"train.epochs={int(epochs)}", "train.steps=0"]
    if batch_size is not None:
        flags.append(f"train.batch_size={int(batch_size)}")
    if seed is not None:
        flags.append(f"train.seed={int(seed)}")
    return resolve_recipe(recipe, flags)


def open_training_data(data, target, cfg: RecipeConfig, *, in_channels: int = 3, out_channels: int | None = None,
                       scale: int = 1) -> DataBundle:
    """Open ``data`` (folder or ``builtin:NAME``) and ``target``; split off the held-out images.

    Images are read with the generator's ``in_channels`` (inputs) and
    ``out_channels`` (targets); target images are read at ``scale`` times
    ``train.size``. With ``scale`` > 1, ``--data LR_DIR --target HR_DIR`` are
    paired by file name (``ganzip.data.open_pairs``): the HR images are the
    ground truth and D's real images; when no file name matches, the HR
    images are unpaired real images for D.
    """
    from . import data as gdata

    t = cfg.train
    if isinstance(data, DataBundle):
        return data
    out_channels = out_channels or in_channels
    out_side = t.size * scale
    read = dict(channels=in_channels, target_channels=out_channels, target_scale=scale)
    notes = []
    pairs = None
    if target is not None and scale > 1 and not gdata.is_builtin(str(data)) and \
            gdata.resolve_layout(str(data)).kind == "plain":
        pairs = gdata.open_pairs(str(data), str(target), size=t.size, scale=scale, channels=in_channels,
                                 target_channels=out_channels, augment=t.augment, seed=t.seed)
        if pairs is None:
            notes.append(f"no image of {data} has a same-named image in {target}: the {out_side}-px images of "
                         f"{target} are used as unpaired real images (for D and FID), not as ground truth")
    ds = pairs if pairs is not None else gdata.open_dataset(str(data), split="train", size=t.size, augment=t.augment,
                                                            seed=t.seed, **read)
    if len(ds) < 2:
        raise GanzipError(f"--data {data} has {len(ds)} training image(s): at least 2 are needed (one is held out)")
    train_ds, holdout = gdata.holdout_split(ds, cfg.eval.holdout, t.seed)
    kind = getattr(ds, "kind", None)
    sample = train_ds[0]
    has_b = "B" in sample
    paired = has_b and kind == "paired"
    targets = None
    if target is not None and pairs is None:
        targets = gdata.open_dataset(str(target), split="train", size=out_side, augment=t.augment, seed=t.seed + 1,
                                     channels=out_channels)
        if len(targets) == 0:
            raise GanzipError(f"--target {target} holds no images")
    desc = f"{data} ({len(train_ds)} training, {len(holdout)} held-out images"
    if pairs is not None:
        desc += f"; paired by file name with {target}, {t.size}-px inputs, {out_side}-px targets)"
    else:
        desc += f"; {kind})" if kind else ")"
    for source, d in ((data, ds), (target, targets)):
        skipped = getattr(d, "skipped", 0) if d is not None else 0
        if skipped:
            summary = d.skip_summary() if hasattr(d, "skip_summary") else ""
            notes.append(f"{skipped} files in {source} were skipped" + (f": {summary}" if summary else ""))
    return DataBundle(train=train_ds, holdout=holdout, targets=targets, paired=paired, has_b=has_b, description=desc,
                      warnings=notes, out_side=out_side)


def build_discriminator(cfg: RecipeConfig, in_channels: int, out_channels: int, seed: int) -> nn.Module:
    """The online PatchGAN D, freshly initialised (N(0, 0.02), seeded)."""
    from .models import create, init_weights

    d = cfg.discriminator
    input_nc = out_channels + (in_channels if d.conditional else 0)
    D = create(d.arch, input_nc=input_nc, ndf=d.ndf, n_layers=d.n_layers, norm=d.norm)
    init_weights(D, generator=torch.Generator().manual_seed(seed + 7))
    return D


def check_discriminator_size(D: nn.Module, size: int) -> None:
    """Run D once on a blank image of the training size: a PatchGAN too deep for it fails here, not at step 1."""
    first = next((m for m in D.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        return
    D = copy.deepcopy(D)  # a BatchNorm D must not keep statistics of the blank image
    try:
        with torch.no_grad():
            D(torch.zeros(1, first.in_channels, size, size))
    except (ValueError, RuntimeError) as exc:
        ok = next((s for s in (32, 64, 128, 256, 512) if s > size and _d_runs(D, first.in_channels, s)), None)
        raise GanzipError(
            f"--size {size} is too small for the discriminator ({str(exc).splitlines()[0][:80]}): "
            + (f"use --size {ok} or more, " if ok else "")
            + "or a shallower one with --set discriminator.n_layers=N"
        ) from None


def _d_runs(D: nn.Module, channels: int, size: int) -> bool:
    try:
        with torch.no_grad():
            D(torch.zeros(1, channels, size, size))
        return True
    except (ValueError, RuntimeError):
        return False


def _out_channels(model: nn.Module, in_channels: int, size: int) -> int:
    with torch.no_grad():
        p = next(model.parameters())
        return int(model.eval()(torch.zeros(1, in_channels, size, size, device=p.device, dtype=p.dtype)).shape[1])


def output_geometry(model: nn.Module, in_channels: int, size: int) -> tuple[int, int, int]:
    """(output channels, output side, scale) of a generator on ``size``-px square inputs.

    The scale is the whole factor by which the output side exceeds the input
    side (1 for image-to-image translation, 2 or 4 for super-resolution).
    """
    with torch.no_grad():
        p = next(model.parameters(), None)
        kw = {} if p is None else {"device": p.device, "dtype": p.dtype}
        y = model.eval()(torch.zeros(1, in_channels, size, size, **kw))
    c, h, w = (int(v) for v in y.shape[1:])
    if h != w or h % size:
        raise GanzipError(
            f"the model maps {size}x{size} images to {h}x{w}: ganzip trains generators whose square output is a "
            f"whole multiple of the input side (1x, 2x, 4x...); check --size"
        )
    return c, h, h // size


def compress(
    model,
    *,
    data,
    width: float = 0.25,
    recipe: str | RecipeConfig = "crd",
    arch: str | None = None,
    arch_opts=None,
    target=None,
    size: int | None = None,
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    overrides: Iterable[str] = (),
    out: str | Path = "ganzip-out",
    device: str | torch.device = "auto",
    init: str = "scratch",
    round_to: int = 1,
    trust_pickle: bool = False,
    checkpoint_every: int = 500,
    eval_every: int = 500,
    log_every: int = 10,
    workers: int = 0,
    resume: bool = True,
    overwrite: bool = False,
    quiet: bool = False,
    offline: bool = False,
    tensorboard: bool = False,
    max_steps: int | None = None,
    evaluate: bool = True,
    in_channels: int | None = None,
) -> CompressResult:
    """Distil a teacher generator into a student with ``width`` of its channels.

    Args:
        model: a checkpoint path (with ``arch`` for state dicts) or an ``nn.Module``.
        data: training images: a folder (see ``ganzip.data``) or ``builtin:NAME``.
        width: fraction of channels the student keeps (0.25 in the paper).
        recipe: a recipe name, a ``.toml`` path, or a :class:`RecipeConfig`.
        target: a folder of real target-domain images, for data without a B domain.
        size, steps, epochs, batch_size, seed: shortcuts for ``train.*`` overrides.
        overrides: ``section.key=value`` strings (``--set``), applied before the shortcuts.
        out: output folder; a checkpoint there is resumed unless ``resume=False``.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        init: ``scratch`` or ``inherit`` (see ``ganzip.student.build_student``).
        checkpoint_every, eval_every, log_every: in steps (0: only at the end).
        max_steps: stop after this many steps without finishing the run (for
            splitting a run into sessions; the schedule spans the whole run).
        evaluate: call ``ganzip.evaluation.evaluate`` at the end to write the reports.
        in_channels: the image channels the teacher takes, when the guess is wrong (``--in-channels``).

    Returns a :class:`CompressResult`: paths in ``out``, metrics, the trained student.
    Under torchrun every rank returns; only rank 0's paths are set.
    """
    cfg = _resolve_config(recipe, overrides, size=size, steps=steps, epochs=epochs, batch_size=batch_size, seed=seed)
    from .loading import check_size_value

    check_size_value(cfg.train.size)  # the CRD patches are checked once the teacher says its output side
    for name, value in (("--checkpoint-every", checkpoint_every), ("--eval-every", eval_every)):
        if value < 0:
            raise GanzipError(f"{name} must be >= 0, got {value}")
    env, dev = ddp.setup(resolve_device(device))
    try:
        return _compress(model, cfg, env, dev, data=data, width=width, arch=arch, arch_opts=arch_opts, target=target,
                         out=Path(out), init=init, round_to=round_to, trust_pickle=trust_pickle,
                         checkpoint_every=checkpoint_every, eval_every=eval_every, log_every=log_every,
                         workers=workers, resume=resume, overwrite=overwrite, quiet=quiet, offline=offline,
                         tensorboard=tensorboard, max_steps=max_steps, evaluate=evaluate, in_channels=in_channels)
    finally:
        ddp.teardown(env)


def _on_main(env: ddp.DistEnv, fn: Callable[[], Any]):
    """Run ``fn`` on rank 0 and share its result (or its GanzipError) with every rank."""
    result, error = None, None
    if env.is_main:
        try:
            result = fn()
        except GanzipError as exc:
            error = (type(exc).__name__, str(exc))
    result, error = ddp.broadcast_object((result, error), env)
    if error is not None:
        from . import errors

        raise getattr(errors, error[0], GanzipError)(error[1])
    return result


def _compress(model, cfg: RecipeConfig, env: ddp.DistEnv, device: torch.device, *, data, width, arch, arch_opts,
              target, out: Path, init, round_to, trust_pickle, checkpoint_every, eval_every, log_every, workers,
              resume, overwrite, quiet, offline, tensorboard, max_steps, evaluate, in_channels=None) -> CompressResult:
    warnings_: list[str] = []
    held: dict[str, rundir.FolderLock] = {}
    _on_main(env, lambda: held.setdefault("lock", rundir.lock(out)) and None)  # one run per OUT (rank 0 holds it)
    lock = held.get("lock")
    try:
        return _compress_locked(model, cfg, env, device, data=data, width=width, arch=arch, arch_opts=arch_opts,
                                target=target, out=out, init=init, round_to=round_to, trust_pickle=trust_pickle,
                                checkpoint_every=checkpoint_every, eval_every=eval_every, log_every=log_every,
                                workers=workers, resume=resume, overwrite=overwrite, quiet=quiet, offline=offline,
                                tensorboard=tensorboard, max_steps=max_steps, evaluate=evaluate, warnings_=warnings_,
                                in_channels=in_channels)
    finally:
        if lock is not None:
            lock.release()


def _compress_locked(model, cfg, env, device, *, data, width, arch, arch_opts, target, out: Path, init, round_to,
                     trust_pickle, checkpoint_every, eval_every, log_every, workers, resume, overwrite, quiet,
                     offline, tensorboard, max_steps, evaluate, warnings_, in_channels=None) -> CompressResult:
    from .loading import check_image_model, load_generator, parse_arch_opts
    from .metrics.cost import set_in_channels
    from .student import build_student, check_batch_size

    # Every output is checked and every input loaded before anything in OUT is removed.
    mode, clear = _on_main(env, lambda: plan_out(out, resume=resume, overwrite=overwrite))
    check_inputs_outside(out, model=model if not isinstance(model, nn.Module) else None, data=data, target=target,
                         clearing=clear)

    # ---- teacher
    if isinstance(model, nn.Module):
        teacher = model
        teacher_source, teacher_sha = type(model).__name__, _module_sha256(model)
    else:
        path = Path(model)
        teacher = load_generator(str(path), arch=arch, arch_opts=parse_arch_opts(arch_opts or ()),
                                 trust_pickle=trust_pickle, device="cpu")
        teacher_source, teacher_sha = str(path), gio.sha256_file(path)
    teacher = teacher.cpu().eval()
    set_in_channels(teacher, in_channels)
    check_image_model(teacher, cfg.train.size, in_channels)
    from .metrics.cost import infer_in_channels

    in_ch = infer_in_channels(teacher)
    out_ch, out_side, scale = output_geometry(teacher, in_ch, cfg.train.size)
    check_size(cfg, out_side)

    # ---- data and the loss terms it allows
    bundle = open_training_data(data, target, cfg, in_channels=in_ch, out_channels=out_ch, scale=scale)
    plan = plan_losses(cfg, has_targets=bundle.has_b or bundle.targets is not None, paired=bundle.paired,
                       same_shape=(in_ch, scale) == (out_ch, 1))
    warnings_ += bundle.warnings + plan.warnings
    if cfg.perceptual.weight == 0:
        warnings_.append("perceptual: disabled (weight 0)")

    # ---- student and discriminator (D judges outputs: their channels, at their size)
    student = build_student(teacher, width, init=init, round_to=round_to, seed=cfg.train.seed)
    check_batch_size(student, cfg.train.batch_size)
    D = None
    if plan.use_discriminator:
        D = build_discriminator(cfg, in_ch, out_ch, cfg.train.seed)
        check_discriminator_size(D, out_side)

    fingerprint = {
        "recipe": cfg.hash(), "teacher_sha256": teacher_sha, "width": width, "init": init, "round_to": round_to,
        "data": str(data) if isinstance(data, (str, Path)) else "in-memory",
        "target": None if target is None else str(target),
    }
    run_info = {
        "recipe": cfg.name, "recipe_hash": cfg.hash(), "seed": cfg.train.seed, "teacher": teacher_source,
        "width": width, "world_size": env.world_size,
    }
    if env.is_main:
        if clear:
            clear_out(out)
        write_run_marker(out, "running", run_info)
    ddp.barrier(env)

    opts = RunOptions(out=out, device=device, checkpoint_every=checkpoint_every, eval_every=eval_every,
                      log_every=log_every, resume=resume, overwrite=overwrite, quiet=quiet or not env.is_main,
                      tensorboard=tensorboard, workers=workers, offline=offline, max_steps=max_steps)
    result = train(teacher, student, D, bundle, cfg, opts, plan, env=env,
                   run_info={"mode": mode, "fingerprint": fingerprint})

    if result.selection is not None and result.selection["fallback"]:
        warnings_.append(f"student selection: {result.selection['reason']}")
    finished = result.steps >= result.total_steps
    paths = {"student": None, "report": None, "log": None, "samples": None}
    metrics: dict = {}
    report = None
    if env.is_main and finished:
        paths, metrics, report = _write_outputs(out, cfg, teacher, result, bundle, plan, warnings_, run_info,
                                                 fingerprint, device, offline, evaluate, data, target, opts.quiet)
        write_run_marker(out, "finished", {**run_info, "steps": result.steps})
        shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)  # the run is complete: outputs replace it
        rundir.record(out, [n for n in OWNED_FILES + ("images",) if (out / n).exists()])
    elif env.is_main:
        paths["log"] = out / TRAIN_LOG
    ddp.barrier(env)
    return CompressResult(out=out, student_path=paths["student"], report_path=paths["report"],
                          train_log=paths["log"], samples=paths["samples"], config=cfg, metrics=metrics,
                          train=result, warnings=warnings_, report=report)


def selection_text(result: TrainResult) -> str:
    """One line for reports: which student was kept, by which metric, and why."""
    sel = result.selection
    if sel is None or result.best_step is None:
        return "last step (no held-out evaluation)"
    better = "highest" if sel["better"] == "higher" else "lowest"
    return (f"{better} held-out {_SELECT_TEXT[sel['metric']]} to the teacher (step {result.best_step}); "
            f"{sel['reason']}")


def _write_outputs(out, cfg, teacher, result: TrainResult, bundle: DataBundle, plan: LossPlan, warnings_, run_info,
                   fingerprint, device, offline, evaluate, data, target, quiet):
    from .student import save_student

    student = result.student.cpu().eval()
    meta = {
        "ganzip.recipe": cfg.name, "ganzip.recipe_hash": cfg.hash(), "ganzip.seed": str(cfg.train.seed),
        "ganzip.recipe_config": json.dumps(cfg.to_dict(), sort_keys=True),
        "ganzip.teacher_sha256": fingerprint["teacher_sha256"], "ganzip.steps": str(result.steps),
        "ganzip.best_step": str(result.best_step),
    }
    student_path = save_student(student, out / STUDENT, metadata=meta)
    last = copy.deepcopy(student)
    last.load_state_dict(result.last_state)
    save_student(last, out / STUDENT_LAST, metadata={**meta, "ganzip.best_step": "last"})

    samples_path = None
    if bundle.holdout is not None and len(bundle.holdout) and cfg.eval.samples > 0:
        n = min(cfg.eval.samples, len(bundle.holdout))
        x = torch.stack([bundle.holdout[i]["A"] for i in range(n)])
        with torch.no_grad():
            t_out = teacher.cpu().eval()(x)
            s_out = student(x)
        gio.atomic_write_bytes(out / SAMPLES, sample_grid(x, t_out, s_out))
        samples_path = out / SAMPLES

    training = {
        "recipe": cfg.name, "recipe_hash": cfg.hash(), "seed": cfg.train.seed,
        "steps": result.steps, "total_steps": result.total_steps, "resumed_from": result.resumed_from,
        "student_selection": selection_text(result),
        "selection": result.selection,
        "best_step": result.best_step, "best_holdout": result.best_metrics, "last_holdout": result.last_metrics,
        "loss_terms": plan.describe(), "data": bundle.description, "teacher": run_info["teacher"],
        "teacher_sha256": fingerprint["teacher_sha256"], "width": run_info["width"], "init": fingerprint["init"],
        "round_to": fingerprint["round_to"], "world_size": run_info["world_size"],
        "seconds": round(result.seconds, 2), "assets": result.assets,
    }
    paths = {"student": str(student_path), "student_last": str(out / STUDENT_LAST), "train_log": str(out / TRAIN_LOG)}
    if samples_path is not None:
        paths["samples"] = str(samples_path)
    extra = {"kind": "compress", "recipe": cfg.to_dict(), "recipe_hash": cfg.hash(), "seed": cfg.train.seed,
             "losses_active": dict(plan.weights), "training": training, "warnings": list(warnings_), "paths": paths}
    report_path, metrics, report = None, {}, None
    if evaluate:
        report_path, metrics, report = _final_evaluation(out, cfg, student_path, teacher, data, target, extra,
                                                         device, offline, quiet)
    return ({"student": student_path, "report": report_path, "log": out / TRAIN_LOG, "samples": samples_path},
            metrics, report)


def _final_evaluation(out, cfg, student_path, teacher, data, target, extra, device, offline, quiet):
    """Hand over to ganzip.evaluation so compress and `ganzip eval` write the same reports.

    Data given as a folder or ``builtin:NAME`` is evaluated on its test (else
    val) split; in-memory data (a :class:`DataBundle`) gets a report of the
    training run and the cost only.
    """
    if isinstance(data, (str, Path)):
        from .evaluation import evaluate as run_evaluation

        from .student import load_student, read_student_metadata

        student: Any = str(student_path)
        spec = json.loads(read_student_metadata(student_path).get("ganzip.teacher_spec", "{}"))
        if ":" in spec.get("arch", ""):  # the user named this module for the teacher already
            student = load_student(student_path, arch=spec["arch"], arch_opts=spec.get("opts"))
        res = run_evaluation(student, teacher, str(data), target=target, size=cfg.train.size,
                             device=device, out=out, offline=offline, progress=not quiet, allow_missing=True,
                             inception_weights=cfg.eval.inception_weights or None,
                             alexnet_weights=cfg.eval.alexnet_weights or None, extra=extra,
                             claim_out=False)  # compress holds OUT's lock
        return out / "report.json", res.metrics, res.to_dict()
    from .metrics.cost import profile_model
    from .report import environment_info, now_iso, write_reports

    from .student import load_student

    student = load_student(student_path)
    size = cfg.train.size
    cost = {"size": size, "device": "cpu",
            "student": profile_model(student, size=size, device="cpu", latency=False),
            "teacher": profile_model(teacher.cpu(), size=size, device="cpu", latency=False)}
    cost["ratios"] = {k: cost["teacher"][k] / cost["student"][k] for k in ("macs", "params")}
    report = {"schema_version": 1, "created": now_iso(), "cost": cost, "metrics": {}, "assets": [],
              "versions": environment_info(device), **extra}
    write_reports(out, report)
    return out / "report.json", {}, report

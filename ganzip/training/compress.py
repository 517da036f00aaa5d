"""compress(): a teacher, its data and a recipe in; a distilled student out.

1. resolve the recipe (``ganzip.recipes``), load the teacher
   (``ganzip.loading``), open the data, build the student
   (``ganzip.student``) and the online discriminator (``ganzip.models``);
2. train (``ganzip.training.loop``);
3. write ``student.safetensors`` (the best student), samples and the log,
   and hand over to ``ganzip.evaluation.evaluate`` for the reports
   (``ganzip.training.outputs``).

Every input is loaded and checked before anything in OUT is removed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

from .. import distributed as ddp
from .. import errors
from .. import io as gio
from .. import rundir
from ..config import RecipeConfig
from ..devices import resolve_device
from ..errors import GanzipError
from ..loading import check_image_model, check_size_value, load_generator, parse_arch_opts
from ..metrics.cost import infer_in_channels, set_in_channels
from ..student import build_student, check_batch_size
from .loop import TrainResult, train
from .options import RunOptions
from . import runplan
from .batches import BatchOrder
from .holdout import resolve_selection
from .outdir import (CHECKPOINT_DIR, CHECKPOINT_JSON, OWNED_FILES, TRAIN_LOG, check_inputs_outside, clear_out,
                     finish_run, plan_out, write_run_marker)
from .outputs import write_outputs
from .plan import check_size, plan_losses
from .setup import (build_discriminator, check_discriminator_size, module_sha256, open_training_data, output_geometry,
                    resolve_config)
from .taps import run_taps


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
    plan: dict | None = field(default=None, repr=False)  # the plan block printed before step 1 (runplan)

    @property
    def student(self) -> nn.Module:
        return self.train.student


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
    direction: str = "AtoB",
    real_stats: str | Path | None = None,
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
        direction: ``"BtoA"`` swaps a dataset's A and B (``--direction``), for CycleGAN's G_B or BtoA pix2pix.
        real_stats: precomputed FID statistics (.npz, keys mu and sigma) for the final evaluation.

    Returns a :class:`CompressResult`: paths in ``out``, metrics, the trained student.
    Under torchrun every rank returns; only rank 0's paths are set.
    """
    cfg = resolve_config(recipe, overrides, size=size, steps=steps, epochs=epochs, batch_size=batch_size, seed=seed)
    check_size_value(cfg.train.size)  # the CRD patches are checked once the teacher says its output side
    for name, value in (("--checkpoint-every", checkpoint_every), ("--eval-every", eval_every)):
        if value < 0:
            raise GanzipError(f"{name} must be >= 0, got {value}")
    env, dev = ddp.setup(resolve_device(device))
    job = dict(data=data, width=width, arch=arch, arch_opts=arch_opts, target=target, out=Path(out), init=init,
               round_to=round_to, trust_pickle=trust_pickle, checkpoint_every=checkpoint_every,
               eval_every=eval_every, log_every=log_every, workers=workers, resume=resume, overwrite=overwrite,
               quiet=quiet, offline=offline, tensorboard=tensorboard, max_steps=max_steps, evaluate=evaluate,
               in_channels=in_channels, direction=direction, real_stats=real_stats)
    try:
        return _compress(model, cfg, env, dev, **job)
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
        raise getattr(errors, error[0], GanzipError)(error[1])
    return result


def _compress(model, cfg: RecipeConfig, env: ddp.DistEnv, device: torch.device, **job) -> CompressResult:
    held: dict[str, rundir.FolderLock] = {}
    out = job["out"]
    _on_main(env, lambda: held.setdefault("lock", rundir.lock(out)) and None)  # one run per OUT (rank 0 holds it)
    lock = held.get("lock")
    try:
        return _compress_locked(model, cfg, env, device, **job)
    finally:
        if lock is not None:
            lock.release()


def _load_teacher(model, cfg: RecipeConfig, *, arch, arch_opts, trust_pickle, in_channels):
    """The teacher on the CPU, checked on the training size: (teacher, source text, sha256)."""
    if isinstance(model, nn.Module):
        teacher = model
        teacher_source, teacher_sha = type(model).__name__, module_sha256(model)
    else:
        path = Path(model)
        teacher = load_generator(str(path), arch=arch, arch_opts=parse_arch_opts(arch_opts or ()),
                                 trust_pickle=trust_pickle, device="cpu")
        teacher_source, teacher_sha = str(path), gio.sha256_file(path)
    teacher = teacher.cpu().eval()
    set_in_channels(teacher, in_channels)
    check_image_model(teacher, cfg.train.size, in_channels)
    return teacher, teacher_source, teacher_sha


def _compress_locked(model, cfg, env, device, *, data, width, arch, arch_opts, target, out: Path, init, round_to,
                     trust_pickle, checkpoint_every, eval_every, log_every, workers, resume, overwrite, quiet,
                     offline, tensorboard, max_steps, evaluate, in_channels=None, direction="AtoB",
                     real_stats=None) -> CompressResult:
    warnings_: list[str] = []
    # Every output is checked and every input loaded before anything in OUT is removed.
    mode, clear = _on_main(env, lambda: plan_out(out, resume=resume, overwrite=overwrite))
    check_inputs_outside(out, model=model if not isinstance(model, nn.Module) else None, data=data, target=target,
                         clearing=clear)
    teacher, teacher_source, teacher_sha = _load_teacher(model, cfg, arch=arch, arch_opts=arch_opts,
                                                         trust_pickle=trust_pickle, in_channels=in_channels)
    in_ch = infer_in_channels(teacher)
    out_ch, out_side, scale = output_geometry(teacher, in_ch, cfg.train.size)
    check_size(cfg, out_side)

    # ---- data and the loss terms it allows
    bundle = open_training_data(data, target, cfg, in_channels=in_ch, out_channels=out_ch, scale=scale,
                                direction=direction)
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
    taps = run_taps(cfg, plan, teacher, student)  # bad layer names stop here, before the plan block and OUT

    fingerprint = {
        "recipe": cfg.hash(), "teacher_sha256": teacher_sha, "width": width, "init": init, "round_to": round_to,
        "data": str(data) if isinstance(data, (str, Path)) else "in-memory",
        "target": None if target is None else str(target),
        **({} if direction == "AtoB" else {"direction": direction}),  # AtoB runs keep their old fingerprint
    }
    run_info = {
        "recipe": cfg.name, "recipe_hash": cfg.hash(), "seed": cfg.train.seed, "teacher": teacher_source,
        "width": width, "world_size": env.world_size,
    }
    block = None
    if env.is_main:  # the plan, before anything in OUT is removed and before step 1
        block = _plan_block(cfg, teacher, student, plan, bundle, env, device, out, in_ch, mode, clear, data,
                            evaluate, offline, warnings_, max_steps, quiet)
        if clear:
            kept = clear_out(out)
            runplan.emit(runplan.PlanBlock([], {}, kept))
            warnings_ += kept
        write_run_marker(out, "running", run_info)
    ddp.barrier(env)

    opts = RunOptions(out=out, device=device, checkpoint_every=checkpoint_every, eval_every=eval_every,
                      log_every=log_every, resume=resume, overwrite=overwrite, quiet=quiet or not env.is_main,
                      tensorboard=tensorboard, workers=workers, offline=offline, max_steps=max_steps)
    result = train(teacher, student, D, bundle, cfg, opts, plan, env=env,
                   run_info={"mode": mode, "fingerprint": fingerprint, "taps": taps})
    final = {"plan_block": block.data if block else None, "real_stats": real_stats, "direction": direction}
    return _finish(out, cfg, env, teacher, result, bundle, plan, warnings_, run_info, fingerprint, device, offline,
                   evaluate, data, target, opts.quiet, final)


def _plan_block(cfg, teacher, student, plan, bundle, env, device, out, in_ch, mode, clear, data, evaluate, offline,
                warnings_, max_steps, quiet) -> runplan.PlanBlock:
    """Compose and print the plan block (rank 0); ``warnings_`` becomes its warnings, said before step 1."""
    order = BatchOrder(len(bundle.train), cfg.train.batch_size, cfg.train.seed, env)
    resumed = runplan.read_checkpoint_step(out / CHECKPOINT_DIR / CHECKPOINT_JSON) if mode == "resume" else None
    held_out = len(bundle.holdout) if bundle.holdout is not None else 0
    selection = resolve_selection(cfg, min(held_out, cfg.eval.max_images), offline) if held_out else None
    block = runplan.compose_plan(
        cfg=cfg, teacher=teacher, student=student, plan=plan, bundle=bundle,
        steps_per_epoch=order.steps_per_epoch, total_steps=cfg.total_steps(order.steps_per_epoch),
        device=device, out=out, in_channels=in_ch, mode=mode, cleared=clear, resumed=resumed,
        world_size=env.world_size, data=data, evaluate=evaluate, selection=selection, warnings=warnings_,
        max_steps=max_steps)
    warnings_[:] = block.warnings
    runplan.emit(block, quiet=quiet)
    return block


def _finish(out, cfg, env, teacher, result: TrainResult, bundle, plan, warnings_, run_info, fingerprint, device,
            offline, evaluate, data, target, quiet, final: dict) -> CompressResult:
    """Outputs of a finished run (rank 0), the run marker, the ledger; the result on every rank."""
    if result.selection is not None and result.selection["fallback"]:
        said = f"student selection: {result.selection['reason']}"
        if said not in warnings_:  # the plan block said it before step 1
            warnings_.append(said)
    finished = result.steps >= result.total_steps
    paths = {"student": None, "report": None, "log": None, "samples": None}
    metrics: dict = {}
    report = None
    if env.is_main and finished:
        paths, metrics, report = write_outputs(out, cfg, teacher, result, bundle, plan, warnings_, run_info,
                                               fingerprint, device, offline, evaluate, data, target, quiet, **final)
        finish_run(out, {**run_info, "steps": result.steps})
        rundir.record(out, [n for n in OWNED_FILES + ("images",) if (out / n).exists()])
    elif env.is_main:
        paths["log"] = out / TRAIN_LOG
    ddp.barrier(env)
    return CompressResult(out=out, student_path=paths["student"], report_path=paths["report"],
                          train_log=paths["log"], samples=paths["samples"], config=cfg, metrics=metrics,
                          train=result, warnings=warnings_, report=report, plan=final["plan_block"])


__all__ = ["CompressResult", "compress"]

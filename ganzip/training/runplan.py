"""The plan of a compress run: what it will do, printed before step 1 and kept in report.json.

A run at the paper's defaults lasts about 100k steps. Everything a user
should know before committing to it is decided before the first step, so it
is said then, not when the run returns:

* teacher -> student: MACs, parameters and the channels of the first layer;
* the total steps and how they follow from the epochs and the images;
* the loss terms that are on, and those that are off with the reason;
* the device, AMP, OUT (fresh, resumed, replaced) and the data splits that
  pick the kept student and that the final evaluation reads;
* the warnings known so far (no target images, perceptual off, ...), and
  :func:`anchor_warning`: CRD alone is blind to absolute colour.

:func:`compose_plan` returns a :class:`PlanBlock` (text lines, a dict for
report.json, the warnings); :func:`emit` prints it. Nothing here trains.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, TextIO

import torch
from torch import nn

from ..errors import GanzipError
from ..data import is_builtin, resolve_layout
from ..data.eval_split import training_split_warning
from ..metrics.cost import count_macs, count_params, format_macs, format_params, ratio

# Terms that tie the student's output to absolute pixel values (the teacher's or the ground truth's).
ANCHOR_TERMS = ("perceptual", "kd_pixel", "ground_truth")
# The shipped recipe for machines without VGG-16: CRD plus an L1 anchor to the teacher.
NO_VGG_RECIPE = "crd-novgg"
_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
             nn.Linear)


@dataclass
class PlanBlock:
    """The plan of one run: ``lines`` to print, ``data`` for report.json, ``warnings`` (one line each)."""

    lines: list[str]
    data: dict
    warnings: list[str] = field(default_factory=list)

    def text(self) -> str:
        """The block as printed: the lines, then one ``warning:`` line each."""
        return "\n".join([*self.lines, *(f"warning: {w}" for w in self.warnings)])


# ---------------------------------------------------------------- pieces


def first_layer(model: nn.Module, size: int, in_channels: int) -> dict | None:
    """The first weighted layer that runs on a ``1 x C x size x size`` input: its name, type and channels.

    Found by running the model once (module order is not execution order in
    every model). None when no convolution or linear layer runs.
    """
    names = {m: n for n, m in model.named_modules()}
    seen: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, _i, _o: seen.append(mod))
             for m in model.modules() if isinstance(m, _WEIGHTED)]
    was_training = model.training
    p = next(model.parameters(), None)
    kw = {} if p is None else {"device": p.device, "dtype": p.dtype}
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, in_channels, size, size, **kw))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    if not seen:
        return None
    m = seen[0]
    if isinstance(m, nn.Linear):
        cin, cout = m.in_features, m.out_features
    else:
        cin, cout = m.in_channels, m.out_channels
    return {"name": names.get(m, ""), "type": type(m).__name__, "in_channels": int(cin), "out_channels": int(cout)}


def model_summary(model: nn.Module, size: int, in_channels: int) -> dict:
    """MACs (one ``size``-px image), parameters and first layer of a generator.

    The global random stream is left as it was (counting MACs draws a random
    input), so composing the plan does not change the trained weights.
    A model whose MACs cannot be counted (torchprofile cannot trace it) gets
    ``None`` and the reason: the plan never stops a run that could train.
    """
    info: dict[str, Any] = {"macs": None, "params": count_params(model), "first_layer": None}
    with torch.random.fork_rng(devices=[]):
        try:
            info["macs"] = count_macs(model, size, in_channels)
        except GanzipError as exc:
            info["macs_error"] = str(exc)[:120]
        try:
            info["first_layer"] = first_layer(model, size, in_channels)
        except (RuntimeError, ValueError, TypeError) as exc:
            info["first_layer_error"] = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
    return info


def steps_summary(cfg, *, n_train: int, steps_per_epoch: int, total_steps: int, world_size: int = 1) -> dict:
    """How the total steps follow from the recipe: ``train.steps``, or epochs x steps per epoch.

    ``steps_per_epoch`` is the engine's (``BatchOrder``): the training images
    shared among ``world_size`` processes (remainder dropped), then whole batches.
    """
    t = cfg.train
    per = "" if world_size == 1 else f" per process of {world_size}"
    epoch = (f"{steps_per_epoch:,} steps per epoch = {n_train:,} training images // batch {t.batch_size}{per}"
             if world_size == 1 else
             f"{steps_per_epoch:,} steps per epoch = ({n_train:,} training images // {world_size} processes) "
             f"// batch {t.batch_size}")
    if t.steps > 0:
        source = "train.steps"
        epochs = total_steps / steps_per_epoch
        text = f"{total_steps:,} (train.steps, --steps; {epochs:.3g} epochs of {epoch})"
    else:
        source, epochs = "train.epochs", t.epochs
        text = f"{total_steps:,} = {t.epochs} epochs x {epoch}"
    return {"total": int(total_steps), "source": source, "epochs": epochs, "steps_per_epoch": int(steps_per_epoch),
            "training_images": int(n_train), "batch_size": int(t.batch_size), "world_size": int(world_size),
            "text": text}


def amp_mode(amp: str, device: torch.device | str) -> str:
    """What ``train.amp`` means on ``device``: ``"bf16"`` (autocast) or ``"off"`` (float32)."""
    kind = torch.device(device).type
    return "bf16" if amp == "bf16" or (amp == "auto" and kind == "cuda") else "off"


def loss_text(plan) -> tuple[str, str]:
    """(active terms with weights and what D sees, disabled terms with why) for a ``LossPlan``."""
    active = " + ".join(f"{w:g} {name}" for name, w in plan.weights.items())
    if plan.use_discriminator:
        active += f"; D steps on {' and '.join(plan.d_fakes)} outputs" + (" (conditional)" if plan.conditional else "")
    off = ", ".join(f"{name} ({why})" for name, why in plan.disabled.items()) or "none"
    return active, off


def anchor_warning(plan) -> str | None:
    """A warning when no active term ties the student's absolute colours, naming the fix; else None.

    CRD (and RKD) compare normalised distances and angles, which a per-pixel
    colour rotation, scaling or shift leaves unchanged; the adversarial and
    identity terms do not tie the output to the teacher's colours either.
    """
    if any(name in plan.weights for name in ANCHOR_TERMS):
        return None
    relational = [n for n in ("crd", "rkd") if n in plan.weights]
    if not relational:
        return None  # e.g. the scratch baseline: a GAN objective by design, no teacher to anchor to
    verb = "relates" if len(relational) == 1 else "relate"
    return (f"no active term anchors the student's colours ({' and '.join(relational)} {verb} pieces of an image "
            f"only; {', '.join(ANCHOR_TERMS)} are off), so they can drift from the teacher's: "
            f"use --recipe {NO_VGG_RECIPE}, or --set kd_pixel.weight=25")


def evaluation_split(data, evaluate: bool = True) -> dict:
    """The split the final evaluation reads (as ``ganzip.evaluation.evaluate`` picks it)."""
    if not evaluate:
        return {"split": None, "text": "none (evaluate=False): no final evaluation"}
    if not isinstance(data, (str, Path)):
        return {"split": None, "text": "in-memory data: the report has the training run and the cost only"}
    split = "test" if is_builtin(str(data)) else resolve_layout(str(data)).eval_split
    info: dict[str, Any] = {"split": split, "source": str(data), "text": f"{data}, split {split!r}"}
    warning = training_split_warning(data, split)
    if warning is not None:
        info["text"] += " -- the training images themselves (no test or val split)"
        info["warning"] = warning
    return info


def selection_split(bundle, cfg, selection=None) -> dict:
    """The held-out training images that pick the kept student, and by which metric."""
    n = len(bundle.holdout) if getattr(bundle, "holdout", None) is not None else 0
    if n == 0:
        return {"images": 0, "metric": None, "text": "none: no held-out images, the last step is kept"}
    used = min(n, cfg.eval.max_images)
    sel = selection.describe() if hasattr(selection, "describe") else selection
    metric = sel["metric"] if sel else None
    by = f"by {metric.upper()} to the teacher" if metric else f"by eval.select = {cfg.eval.select}"
    text = (f"{n} held-out training images (eval.holdout {cfg.eval.holdout:g}), {used} used, {by}"
            + (f" ({sel['reason']})" if sel and sel.get("fallback") else ""))
    return {"images": n, "used": used, "metric": metric, "text": text}


def selection_warning(selection) -> str | None:
    """The engine's warning when ``eval.select = auto`` fell back to a weaker metric (same words)."""
    sel = selection.describe() if hasattr(selection, "describe") else selection
    return f"student selection: {sel['reason']}" if sel and sel.get("fallback") else None


def read_checkpoint_step(state_json: str | Path) -> tuple[int, int | None] | None:
    """(step, total steps) of the checkpoint a run resumes from, or None when it cannot be read."""
    try:
        state = json.loads(Path(state_json).read_text())
        step = state["step"]
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
    if not isinstance(step, int) or isinstance(step, bool):
        return None
    total = state.get("total_steps")
    return step, total if isinstance(total, int) and not isinstance(total, bool) else None


def out_text(out: Path, mode: str, cleared: bool, resumed: tuple[int, int | None] | None, total: int) -> str:
    if mode == "resume":
        if resumed is not None and resumed[1] in (None, total):
            return f"{out} (resuming from the checkpoint at step {resumed[0]} of {total})"
        return f"{out} (resuming from its checkpoint)"
    return f"{out} ({'cleared: an earlier run is replaced' if cleared else 'fresh'})"


# ---------------------------------------------------------------- the block


def _cost_line(t: dict, s: dict, size: int) -> str:
    macs = (f"MACs at {size}x{size} {format_macs(t['macs'])} -> {format_macs(s['macs'])} "
            f"({ratio(t['macs'], s['macs']):.1f}x fewer)" if t["macs"] and s["macs"] else "MACs not countable")
    line = (f"{macs}, params {format_params(t['params'])} -> {format_params(s['params'])} "
            f"({ratio(t['params'], s['params']):.1f}x fewer)")
    ft, fs = t["first_layer"], s["first_layer"]
    if ft and fs:
        line += f", first layer {ft['out_channels']} -> {fs['out_channels']} channels ({ft['name'] or ft['type']})"
    return line


def compose_plan(*, cfg, teacher: nn.Module, student: nn.Module, plan, bundle, steps_per_epoch: int,
                 total_steps: int, device, out, in_channels: int = 3, mode: str = "fresh", cleared: bool = False,
                 resumed: tuple[int, int | None] | None = None, world_size: int = 1, data=None,
                 evaluate: bool = True, selection=None, warnings: Iterable[str] = (),
                 max_steps: int | None = None) -> PlanBlock:
    """The plan block of a compress run, composed from the real modules and the resolved recipe.

    Args:
        cfg: the resolved :class:`ganzip.config.RecipeConfig`.
        teacher, student: the modules that will train (measured at ``cfg.train.size``).
        plan: the run's ``LossPlan`` (weights, disabled, d_fakes, use_discriminator, conditional).
        bundle: the ``DataBundle`` (its train and holdout datasets, description).
        steps_per_epoch, total_steps: the engine's ``BatchOrder.steps_per_epoch`` and
            ``cfg.total_steps(steps_per_epoch)``.
        mode, cleared, resumed: what ``plan_out`` decided, and (step, total) of the checkpoint
            resumed from (:func:`read_checkpoint_step`).
        data, evaluate: what the final evaluation reads (:func:`evaluation_split`).
        selection: the ``Selection`` (or its ``describe()``) that picks the kept student, if resolved.
        warnings: warnings known so far (data loader, loss plan); the anchor and
            evaluation-split warnings are added after them.
    """
    size = cfg.train.size
    device = torch.device(device)
    t_info = model_summary(teacher, size, in_channels)
    s_info = model_summary(student, size, in_channels)
    steps = steps_summary(cfg, n_train=len(bundle.train), steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                          world_size=world_size)
    active, off = loss_text(plan)
    amp = amp_mode(cfg.train.amp, device)
    sel = selection_split(bundle, cfg, selection)
    ev = evaluation_split(data, evaluate)
    where = out_text(Path(out), mode, cleared, resumed, total_steps)
    warns = list(dict.fromkeys(warnings))  # in order, once each
    for extra in (anchor_warning(plan), ev.get("warning"), selection_warning(selection)):
        if extra and extra not in warns:
            warns.append(extra)
    procs = f", {world_size} processes" if world_size > 1 else ""
    stop = f" (this session stops after {max_steps:,})" if max_steps is not None and max_steps < total_steps else ""
    lines = [
        f"ganzip compress: recipe {cfg.name}, the plan before step 1",
        f"  teacher -> student  {_cost_line(t_info, s_info, size)}",
        f"  steps               {steps['text']}{stop}",
        f"  losses              {active}",
        f"  off                 {off}",
        f"  device              {device}{procs}, AMP {amp} (train.amp = {cfg.train.amp})",
        f"  OUT                 {where}",
        f"  student selection   {sel['text']}",
        f"  final evaluation    {ev['text']}",
    ]
    data_dict = {
        "teacher": t_info, "student": s_info,
        "ratios": {k: ratio(t_info[k], s_info[k]) for k in ("macs", "params")}, "size": size,
        "steps": steps, "max_steps": max_steps,
        "losses": {"active": dict(plan.weights), "disabled": dict(plan.disabled),
                   "discriminator_fakes": list(plan.d_fakes)},
        "device": str(device), "world_size": world_size, "amp": amp, "amp_setting": cfg.train.amp,
        "out": str(out), "mode": mode, "cleared": cleared, "resumed_from": resumed[0] if resumed else None,
        "selection_split": sel, "evaluation_split": {k: v for k, v in ev.items() if k != "warning"},
        "warnings": warns,
    }
    return PlanBlock(lines=lines, data=data_dict, warnings=warns)


def emit(block: PlanBlock, stream: TextIO | None = None, quiet: bool = False) -> None:
    """Print the block (with ``quiet``: only its warnings) to ``stream`` (default: stderr)."""
    stream = stream or sys.stderr
    lines = ([] if quiet else block.lines) + [f"warning: {w}" for w in block.warnings]
    if lines:
        stream.write("\n".join(lines) + "\n")
        stream.flush()


def printed_warnings(report: Mapping | None) -> list[str]:
    """The warnings a run's plan block already printed (from its report), so they are not printed twice."""
    plan = (report or {}).get("plan") if isinstance(report, Mapping) else None
    return list(plan.get("warnings", [])) if isinstance(plan, Mapping) else []

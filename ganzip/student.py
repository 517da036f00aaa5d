"""Students: the teacher's own architecture with every channel group scaled by `width`.

`build_student` uses torch-pruning's dependency graph, so residual adds, U-Net
concatenations, transposed and depthwise convolutions stay consistent. Layers
tied to the image, and groups that torch-pruning cannot follow or that break
the student, stay at full width and are recorded with their reason; the
student is checked to run and to keep the teacher's output shape. The
result is a plain `nn.Module`. `save_student` writes it as safetensors with
its structure (per-layer channel configuration and the teacher's architecture
spec) in the metadata; `load_student` rebuilds it from that, without pickle and
without torch-pruning.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from .errors import GanzipError, in_stage
from .metrics.cost import infer_in_channels
from .models import init_weights
from .pruning import (_check_width, _nothing_prunable, _reference_shapes, _run, _search, _tied_layers, _trace_input,
                      kept_channels, kept_round_to)
from .student_file import FORMAT_VERSION, describe, load_student, read_student_metadata, save_student

INITS = ("scratch", "inherit")

__all__ = ["INITS", "FORMAT_VERSION", "build_student", "count_params", "check_batch_size", "describe",
           "kept_channels", "kept_round_to", "load_student", "read_student_metadata", "save_student"]


@in_stage("building the student")
def build_student(teacher: nn.Module, width: float, init: str = "scratch", round_to: int = 1,
                  example_input: torch.Tensor | None = None, size: int | None = None,
                  seed: int = 0, in_channels: int | None = None) -> nn.Module:
    """A copy of `teacher` with every prunable channel group scaled to `width`.

    Layers tied to the image (the output layer, layers with the image's channel
    count such as a depthwise conv or a mean shift on the input) stay at full
    width. After pruning, the student must run in eval and train mode and give
    the teacher's output shape; where a channel group breaks it (channel splits,
    slices, re-parameterised blocks), that group is left at full width and the
    student rebuilt, so the result is the most compression found that runs.
    `student.ganzip_student["unpruned"]` lists each layer left, and why;
    ``["params_ratio"]`` is the ratio reached. Raises GanzipError only when
    nothing can be pruned.

    Args:
        teacher: any generator (not modified).
        width: fraction of channels kept, in (0, 1]; 0.25 gives the paper's students.
        init: "inherit" keeps the teacher's largest-magnitude channels and their weights;
            "scratch" re-initialises the student (N(0, 0.02), as CycleGAN does).
        round_to: keep channel counts at multiples of this (8 suits many accelerators).
        example_input: an input for tracing; by default 1×C×s×s zeros at a small side s.
        size: the largest side to trace at (default: the model's `min_size` or 64).
        seed: seeds the scratch initialisation.
        in_channels: the image channels the teacher takes (default: inferred).
    """
    if init not in INITS:
        raise GanzipError(f"unknown --init {init!r}: use scratch or inherit")
    if isinstance(teacher, torch.jit.ScriptModule):
        raise GanzipError("a TorchScript teacher cannot be pruned: load its state dict with --arch instead")
    _check_width(width, round_to)
    reference = teacher.cpu().eval()
    if example_input is None:
        in_ch = in_channels or infer_in_channels(reference, size=size)
        example_input = _trace_input(reference, in_ch, size)
    example_input = example_input.cpu()
    in_ch = int(example_input.shape[1])
    shapes = _reference_shapes(reference, example_input)
    tied = _tied_layers(reference, example_input, shapes[False], width, round_to)
    student, keep, message = _search(reference, example_input, width, round_to, tied, shapes, train_trace=False)
    if student is None or (width < 1.0 and count_params(student) >= count_params(reference)):
        student, keep, message = _search(reference, example_input, width, round_to, tied, shapes, train_trace=False,
                                         twins=False)  # generalising to every block may have been too much
    trace = "eval"
    if len(keep) > len(tied):  # something broke: a trace in train mode may follow more (re-parameterised layers)
        other, other_keep, other_message = _search(reference, example_input, width, round_to, tied, shapes, train_trace=True)
        if other is not None and (student is None or count_params(other) < count_params(student)):
            student, keep, message, trace = other, other_keep, other_message, "train"
    teacher_params = count_params(reference)
    if student is None or (width < 1.0 and count_params(student) >= teacher_params):
        raise _nothing_prunable(reference, width, round_to, keep, message)
    if hasattr(teacher, "ganzip_spec"):
        student.ganzip_spec = copy.deepcopy(teacher.ganzip_spec)
    if init == "scratch":
        g = torch.Generator().manual_seed(seed)
        init_weights(student, generator=g)
    student.ganzip_student = {
        "width": width, "round_to": round_to, "init": init, "in_channels": in_ch, "trace": trace,
        "params_ratio": round(teacher_params / max(count_params(student), 1), 4),
        "unpruned": [{"layer": n, "reason": r} for n, r in keep.items()],
    }
    return student


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check_batch_size(model: nn.Module, batch_size: int, in_channels: int | None = None, size: int = 32) -> None:
    """Refuse, in one line, a batch size the model cannot train at.

    A BatchNorm after global pooling (an ASPP pooling branch) sees one value per
    channel at batch size 1 and fails in train mode; say so before training.
    """
    if batch_size != 1:
        return
    model = model.cpu()
    c = in_channels or infer_in_channels(model)
    s = max(size, getattr(model, "min_size", 0) or 0)
    _, at_one = _run(model, torch.zeros(1, c, s, s), training=True)
    if at_one is None:
        return
    _, at_two = _run(model, torch.zeros(2, c, s, s), training=True)
    if at_two is None:
        stack, _, message = at_one
        where = next((n for n in reversed(stack) if n), "the model")
        raise GanzipError(f"training at batch size 1 fails at {where} ({message}): a BatchNorm after global "
                          "pooling needs more than one image per step; use --batch-size 2")

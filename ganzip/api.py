"""ganzip's public Python API: the functions the CLI is a thin layer over.

Every function returns objects (modules, dataclasses with paths and
metrics), never printed text, and raises `ganzip.GanzipError` with a
one-line message for bad input. See docs/api.md.

    import ganzip
    result = ganzip.compress("G.pth", arch="resnet_9blocks", data="datasets/horse2zebra", out="h2z")
    result.student_path, result.metrics
    report = ganzip.evaluate(result.student_path, teacher="G.pth", arch="resnet_9blocks", data="datasets/horse2zebra")
    report.metrics["student"]["fid"]
"""
from __future__ import annotations

import inspect

from . import evaluation as _evaluation
from .batch import BatchResult, load_manifest, run_batch
from .training import compress as _training
from .training.compress import CompressResult
from .training.loop import TrainResult
from .evaluation import EvalResult
from .export import ExportResult, export
from .loading import load_generator
from .profiling import profile
from .student import build_student, load_student, save_student


def compress(model, **options) -> CompressResult:
    """Distil a teacher generator into a width-scaled student (what `ganzip compress` runs).

    Args:
        model: the teacher: a checkpoint path (a state dict needs ``arch``; a
            TorchScript archive or a ganzip generator file does not) or an ``nn.Module``.
        data: training images: a folder (trainA/trainB, A/B, A|B pairs, flat) or ``"builtin:NAME"``.
        width: fraction of the teacher's channels the student keeps (0.25 in the paper).
        recipe: a recipe name (``ganzip recipes``), a ``.toml`` path or a ``RecipeConfig``.
        overrides: ``["section.key=value", ...]`` applied to the recipe (``--set``).
        arch, arch_opts: architecture of a bare state dict (zoo name or ``package.module:callable``).
        size, steps, epochs, batch_size, seed: shortcuts for the recipe's ``train.*`` values.
        out: output folder; a checkpoint there is resumed (``resume=False`` starts over).
        device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
        Other keywords (``init``, ``round_to``, ``target``, ``checkpoint_every``,
        ``eval_every``, ``quiet``, ``offline``, ...) are those of
        ``ganzip.training.compress.compress``, whose signature this function carries.

    Returns:
        ``CompressResult`` with ``out``, ``student_path`` (``out/student.safetensors``),
        ``report_path``, ``train_log``, ``samples``, ``metrics`` (the final
        evaluation), ``config`` (the resolved recipe), ``train`` (steps, best
        step, held-out fidelity, the trained module as ``.student``) and ``warnings``.
    """
    return _training.compress(model, **options)


def evaluate(*args, **options) -> EvalResult:
    """Measure a student (and its teacher): FID/KID, LPIPS/PSNR/SSIM to the teacher, cost.

    Args:
        student, teacher: ``nn.Module``s or files (a ganzip student needs no ``arch``;
            ``arch``/``arch_opts`` describe a bare teacher state dict).
        data: a dataset folder or ``"builtin:NAME"`` (its test split, else val).
        out: a folder for report.json/.md/.html and sample images (optional).
        size, batch_size, device, max_images, target, real_stats, offline,
        allow_missing, ...: as in ``ganzip.evaluation.evaluate``, whose
        signature this function carries.

    Returns:
        ``EvalResult`` with ``metrics`` (``metrics["student"]["fid"]``,
        ``metrics["student"]["psnr_to_teacher"]["mean"]``, ...), ``cost``
        (MACs, params, latency of both), ``paths``, ``warnings`` and the full
        ``report`` dict (report.json's content).
    """
    return _evaluation.evaluate(*args, **options)


# The wrappers document themselves; their parameters are the engine's and the evaluator's.
compress.__signature__ = inspect.signature(_training.compress).replace(return_annotation=CompressResult)
evaluate.__signature__ = inspect.signature(_evaluation.evaluate).replace(return_annotation=EvalResult)

__all__ = [
    "BatchResult", "CompressResult", "EvalResult", "ExportResult", "TrainResult", "build_student", "compress",
    "evaluate", "export", "load_generator", "load_manifest", "load_student", "profile", "run_batch", "save_student",
]

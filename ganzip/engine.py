"""The training engine's names, where they always were: a thin re-export of ``ganzip.training``.

The code lives in the ``ganzip.training`` package (``docs/architecture.md``):
``plan`` (the loss plan from the registry), ``step``, ``loop`` (:func:`train`),
``state`` (checkpoints), ``outdir``, ``batches``, ``holdout``, ``setup``,
``outputs`` and ``compress`` (:func:`compress`).
"""
from __future__ import annotations

from . import distributed as ddp  # noqa: F401  (tests reach ddp.DistEnv through here)
from .losses.builtin import CRD_REFERENCE_PATCH, CRD_REFERENCE_SIDE, crd_patch_size
from .training.batches import BatchOrder, Loader as _Loader, target_batch as _target_batch
from .training.batches import _collate  # noqa: F401
from .training.compress import CompressResult, compress, _compress, _compress_locked, _on_main  # noqa: F401
from .training.holdout import (SELECT_METRICS, HoldoutEval, Selection, display_rgb, psnr, resolve_selection,
                               sample_grid, selection_text)
from .training.loop import TrainResult, train
from .training.options import DataBundle, RunOptions
from .training.outdir import (CHECKPOINT_DIR, CHECKPOINT_JSON, OWNED_DIRS, OWNED_FILES, RUN_MARKER, SAMPLES, STUDENT,
                              STUDENT_LAST, TRAIN_LOG, check_inputs_outside, clear_out, plan_out, prepare_out,
                              read_run_marker, write_run_marker)
from .training.outdir import fingerprint_diff as _fingerprint_diff  # noqa: F401
from .training.outputs import write_outputs as _write_outputs  # noqa: F401
from .training.plan import LossPlan, check_size, plan_losses
from .training.setup import (build_discriminator, check_discriminator_size, open_training_data, output_geometry)
from .training.setup import module_sha256 as _module_sha256, resolve_config as _resolve_config  # noqa: F401
from .training.state import (CHECKPOINT_FORMAT, capture_rng, flatten_optimizer, linear_decay, load_checkpoint,
                             restore_rng, save_checkpoint, seed_everything, unflatten_optimizer)
from .training.step import TermModules as _Losses  # noqa: F401
from .training.step import autocast as _autocast, cond as _cond  # noqa: F401
from .training.trainlog import read_log as _read_log, write_log as _write_log  # noqa: F401

__all__ = [
    "BatchOrder", "CHECKPOINT_DIR", "CHECKPOINT_FORMAT", "CHECKPOINT_JSON", "CRD_REFERENCE_PATCH",
    "CRD_REFERENCE_SIDE", "CompressResult", "DataBundle", "HoldoutEval", "LossPlan", "OWNED_DIRS", "OWNED_FILES",
    "RUN_MARKER", "RunOptions", "SAMPLES", "SELECT_METRICS", "STUDENT", "STUDENT_LAST", "Selection", "TRAIN_LOG",
    "TrainResult", "capture_rng", "check_discriminator_size", "check_inputs_outside", "check_size", "clear_out",
    "compress", "crd_patch_size", "display_rgb", "flatten_optimizer", "linear_decay", "load_checkpoint",
    "open_training_data", "output_geometry", "plan_losses", "plan_out", "prepare_out", "psnr", "read_run_marker",
    "resolve_selection", "restore_rng", "sample_grid", "save_checkpoint", "seed_everything", "selection_text",
    "train", "unflatten_optimizer", "write_run_marker",
]

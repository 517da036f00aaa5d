"""What a training run is given besides its recipe: how to run it, and its data as the loop sees it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


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


__all__ = ["DataBundle", "RunOptions"]

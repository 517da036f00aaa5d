"""Which feature taps a run needs: none unless an active loss term reads features (``uses_features``)."""
from __future__ import annotations

import sys

import torch
from torch import nn

from ..config import RecipeConfig
from ..features import Tap, resolve_taps, taps_text
from ..losses.feature_terms import check_features_section
from ..losses.registry import get_term
from ..metrics.cost import infer_in_channels
from .plan import LossPlan


def feature_terms(plan: LossPlan) -> list[str]:
    """The active terms that read the feature taps."""
    return [name for name in plan.weights if get_term(name).uses_features]


def run_taps(cfg: RecipeConfig, plan: LossPlan, teacher: nn.Module, student: nn.Module) -> list[Tap]:
    """The taps of ``cfg.section("features")`` checked on both models at the training size; [] when unused.

    One dry forward of each model (eval mode, the RNG streams restored) on a
    blank ``train.size`` image finds the layers and their shapes.
    """
    if not feature_terms(plan):
        return []
    section = cfg.section("features")
    check_features_section(section)
    p = next(teacher.parameters(), None)
    example = torch.zeros(1, infer_in_channels(teacher), cfg.train.size, cfg.train.size,
                          device=p.device if p is not None else "cpu")
    return resolve_taps(teacher, student, section.layers, example, max_taps=section.max_taps)


def print_taps(taps: list[Tap], terms: list[str]) -> None:
    """The chosen layers, before training (stderr, like the progress bar)."""
    print(f"{taps_text(taps)}\n  used by: {', '.join(terms)}", file=sys.stderr)


__all__ = ["feature_terms", "print_taps", "run_taps"]

"""Pixel losses between two images (teacher output, ground truth, identity)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import GanzipError

_KINDS = {"l1": F.l1_loss, "l2": F.mse_loss, "mse": F.mse_loss}


class PixelLoss(nn.Module):
    """Mean pixel distance ``kind`` ("l1" or "l2"/"mse") between two same-shaped images."""

    def __init__(self, kind: str = "l1"):
        super().__init__()
        if kind not in _KINDS:
            raise GanzipError(f"unknown pixel loss {kind!r}: use l1 or l2")
        self.kind = kind

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if prediction.shape != target.shape:
            raise GanzipError(f"pixel loss needs images of the same shape, got {tuple(prediction.shape)} and "
                              f"{tuple(target.shape)}")
        return _KINDS[self.kind](prediction, target)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


__all__ = ["PixelLoss"]

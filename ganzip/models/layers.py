"""Normalisation choices shared by the zoo, as pytorch-CycleGAN-and-pix2pix defines them."""
from __future__ import annotations

import functools

import torch.nn as nn

from ..errors import GanzipError

NORMS = ("batch", "instance", "none")


def norm_layer(norm: str):
    """Return (layer factory, use_bias) for a norm name.

    As in the CycleGAN code, convolutions carry a bias only when followed by
    InstanceNorm (BatchNorm has its own shift; with no norm the original code
    also drops the bias, and checkpoints follow that).
    """
    if norm == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True), False
    if norm == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False), True
    if norm == "none":
        return (lambda _c: nn.Identity()), False
    raise GanzipError(f"unknown norm {norm!r}: use one of {', '.join(NORMS)}")

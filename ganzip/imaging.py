"""Images of generators for people: display RGB, output geometry, and labelled sample grids.

Evaluation, the demo and compress's ``samples.png`` draw their grids here, so
every grid has the same column order and labels. ``display_rgb`` and
``output_geometry`` live here (not in the training package) so that evaluation
can use them without importing training, which imports evaluation.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .errors import GanzipError


def display_rgb(x: torch.Tensor, size: Sequence[int] | None = None) -> torch.Tensor:
    """Images for display: 3 channels (grey repeated; a mask or other extra channels dropped), resized to ``size``."""
    x = x.float().cpu()
    if x.shape[1] < 3:
        x = x[:, :1].repeat(1, 3, 1, 1)
    x = x[:, :3]
    if size is not None and tuple(x.shape[-2:]) != tuple(size):
        x = torch.nn.functional.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False).clamp(-1, 1)
    return x


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


__all__ = ["display_rgb", "output_geometry"]

"""Images of generators for people: display RGB, output geometry, and labelled sample grids.

Evaluation, the demo and compress's ``samples.png`` draw their grids here, so
every grid has the same column order and labels. ``display_rgb`` and
``output_geometry`` live here (not in the training package) so that evaluation
can use them without importing training, which imports evaluation.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, ImageDraw, ImageFont

from .errors import GanzipError
from .io import png_bytes

LABEL_BAND = 14  # pixels of the label band above each column, and of the caption line


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


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    while text and draw.textlength(text, font=font) > width - 2:
        text = text[:-1]
    return text


def labelled_grid(columns: Sequence[str], rows: Sequence[Sequence[np.ndarray]], caption: str = "") -> np.ndarray:
    """One H x W x 3 uint8 image: a caption line (naming the split), a label over each column, then the rows.

    `rows` are lists of H x W x 3 uint8 tiles of one size, in the order of
    `columns`; a label too long for its column is cut.
    """
    if not rows or not columns:
        raise GanzipError("a sample grid needs at least one row and one column")
    if any(len(r) != len(columns) for r in rows):
        raise GanzipError(f"every row of a sample grid needs {len(columns)} images ({', '.join(columns)})")
    body = np.concatenate([np.concatenate([np.asarray(t, dtype=np.uint8) for t in r], axis=1) for r in rows], axis=0)
    tile_w = body.shape[1] // len(columns)
    top = LABEL_BAND * (2 if caption else 1)
    canvas = Image.new("RGB", (body.shape[1], body.shape[0] + top), "white")
    canvas.paste(Image.fromarray(body), (0, top))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    if caption:
        draw.text((2, 1), _fit(draw, caption, font, body.shape[1]), fill=(0, 0, 0), font=font)
    for i, name in enumerate(columns):
        draw.text((i * tile_w + 2, top - LABEL_BAND + 1), _fit(draw, name, font, tile_w), fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def _tiles(x: torch.Tensor) -> list[np.ndarray]:
    u8 = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return list(u8)


def sample_grid(inputs: torch.Tensor, teacher: torch.Tensor, student: torch.Tensor,
                caption: str = "held-out training images") -> bytes:
    """compress's ``samples.png``: columns input | teacher | student, labelled, under a caption naming the images.

    Images are N x C x H x W in [-1, 1]; inputs of another size (super-resolution)
    are resized to the outputs' for display only (bicubic), grey-scale shown grey,
    and a fourth input channel (a mask) left out.
    """
    out_hw = teacher.shape[-2:]
    cols = [_tiles(display_rgb(inputs, out_hw)), _tiles(display_rgb(teacher)), _tiles(display_rgb(student, out_hw))]
    rows = [list(r) for r in zip(*cols)]
    return png_bytes(labelled_grid(["input", "teacher", "student"], rows, caption))


__all__ = ["display_rgb", "output_geometry", "labelled_grid", "sample_grid", "LABEL_BAND"]

"""Image preprocessing in the conventions of pytorch-CycleGAN-and-pix2pix.

Training (``augment=True``): resize to ``load_size`` (``resize_and_crop``:
a square; ``scale_width_and_crop``: width ``load_size``, aspect kept; ``crop``:
no resize), take a random ``size`` x ``size`` crop, flip horizontally with
probability 1/2. Evaluation (``augment=False``): resize straight to ``size``
(or scale the width and take the centre crop), no flip.

Every random choice comes from a generator seeded with ``(seed, epoch, index)``,
so an item's augmentation does not depend on which DataLoader worker loads it
or in which order. A paired A|B image draws one set of parameters for both
halves.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..errors import GanzipError

PREPROCESS = ("resize_and_crop", "scale_width_and_crop", "crop")


@dataclass(frozen=True)
class Params:
    """One image's preprocessing: resize to (load_w, load_h), crop at (x, y), maybe flip."""

    load_w: int
    load_h: int
    x: int
    y: int
    flip: bool


def default_load_size(size: int, augment: bool) -> int:
    """286 for 256 (the reference's --load_size 286 --crop_size 256) when augmenting, else `size`."""
    return int(round(size * 286 / 256)) if augment else size


def check_preprocess(preprocess: str, size: int, load_size: int | None) -> None:
    if preprocess not in PREPROCESS:
        raise GanzipError(f"unknown preprocess {preprocess!r}: use one of {', '.join(PREPROCESS)}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise GanzipError(f"image size must be a positive integer, got {size!r}")
    if load_size is not None and load_size < size:
        raise GanzipError(f"load_size ({load_size}) must be at least the crop size ({size})")


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for one item's random choices."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


def sample_params(
    width: int,
    height: int,
    size: int,
    load_size: int | None,
    augment: bool,
    rng: np.random.Generator | None,
    preprocess: str = "resize_and_crop",
    flip: bool = True,
) -> Params:
    """Preprocessing parameters for a `width` x `height` image (random only when `augment`)."""
    load = load_size if (augment and load_size is not None) else default_load_size(size, augment)
    if preprocess == "resize_and_crop":
        lw = lh = load
    elif preprocess == "scale_width_and_crop":
        lw, lh = load, max(1, round(load * height / width))
    else:  # crop: keep the native resolution
        lw, lh = width, height
    if min(lw, lh) < size:  # too small to crop: scale up so the short side is `size`
        scale = size / min(lw, lh)
        lw, lh = max(size, round(lw * scale)), max(size, round(lh * scale))
    if augment:
        assert rng is not None
        x = int(rng.integers(0, lw - size + 1))
        y = int(rng.integers(0, lh - size + 1))
        do_flip = bool(flip and rng.random() < 0.5)
    else:
        x, y, do_flip = (lw - size) // 2, (lh - size) // 2, False
    return Params(lw, lh, x, y, do_flip)


def scaled(params: Params, scale: int) -> Params:
    """The same preprocessing at ``scale`` times the resolution (the HR image of an LR/HR pair).

    Resize target and crop corner are multiplied by ``scale``, so the HR crop
    covers exactly the content of the LR crop (crop at LR coordinates x scale).
    """
    if scale == 1:
        return params
    return Params(params.load_w * scale, params.load_h * scale, params.x * scale, params.y * scale, params.flip)


def apply(img: Image.Image, params: Params, size: int) -> torch.Tensor:
    """PIL image (L, RGB or RGBA) -> float32 [C, size, size] in [-1, 1] (C = 1, 3 or 4)."""
    if img.mode == "RGBA":  # PIL premultiplies alpha when resizing: treat the mask as an independent band
        return torch.cat([apply(band, params, size) for band in img.split()])
    if img.size != (params.load_w, params.load_h):
        img = img.resize((params.load_w, params.load_h), Image.BICUBIC)
    if (params.x, params.y, size, size) != (0, 0, *img.size):
        img = img.crop((params.x, params.y, params.x + size, params.y + size))
    arr = np.array(img, dtype=np.uint8)  # a writable copy
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if params.flip:
        arr = np.ascontiguousarray(arr[:, ::-1])
    t = torch.from_numpy(arr).permute(2, 0, 1)
    return t.float() / 127.5 - 1.0

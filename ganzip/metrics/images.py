"""Image files as the FID protocol reads them: pytorch-fid's folder selection, PIL decoding, uint8 conversion."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import GanzipError

IMAGE_EXTENSIONS = frozenset({"bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp"})


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files directly inside `folder`, sorted (pytorch-fid's selection)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GanzipError(f"{folder}: not a folder of images")
    files = sorted(p for p in folder.iterdir() if p.suffix[1:].lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        nested = any(p.is_dir() for p in folder.iterdir())
        hint = " (images in sub-folders are not read: point at the folder that holds them)" if nested else ""
        raise GanzipError(f"{folder} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}){hint}")
    return files


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as an H x W x 3 uint8 array (PIL, converted to RGB)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise GanzipError(f"{path}: cannot read this image ({exc})") from exc


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator images in [-1, 1] (N x C x H x W float) to uint8, as saved PNGs hold them.

    Uses the CycleGAN/pix2pix ``tensor2im`` convention the reference
    evaluations used: ``(x + 1) / 2 * 255`` truncated to an integer.
    """
    x = (images.detach().float().clamp(-1, 1) + 1) / 2.0 * 255.0
    return x.clamp(0, 255).to(torch.uint8)

"""Image files: which ones ganzip reads, how they are decoded and probed, and why one is skipped.

Files that cannot be used (not an image, unreadable or corrupt, smaller than
`MIN_SIDE` pixels on a side, a paired image of odd width) are skipped and
counted with their reason (`_Scanned`, `summarize_skips`).
Decompression-bomb protection (``PIL.Image.MAX_IMAGE_PIXELS``) stays on.
"""
from __future__ import annotations

import os
import stat
import struct
import warnings
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import GanzipError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp")
MIN_SIDE = 8
"""Images smaller than this on either side (each half, for paired images) are skipped."""

# What a malformed file can make PIL raise while opening or decoding it.
DECODE_ERRORS = (
    UnidentifiedImageError,
    Image.DecompressionBombError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    TypeError,
    ZeroDivisionError,
    MemoryError,
)



def accepted_extensions() -> str:
    return ", ".join(IMG_EXTENSIONS)


def is_image_file(path: str | Path) -> bool:
    return str(path).lower().endswith(IMG_EXTENSIONS)


class SkipImage(Exception):
    """An image file that cannot be used; the message is the reason."""


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image -> 8-bit RGB.

    Transparent images (RGBA, LA, palette with transparency) are composited
    over white; 16-bit and 32-bit integer greyscale is scaled to 8 bits
    (assuming the 16-bit range when values exceed 255); float images in [0, 1]
    are scaled by 255; CMYK, YCbCr, 1-bit and palette images are converted.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img).astype(np.float64)
        if mode.startswith("I;16") or (arr.size and arr.max() > 255):
            arr = arr / 257.0
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        if arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L").convert("RGB")
    return img.convert("RGB")


CHANNELS = (1, 3, 4)
"""Image channels a dataset can deliver: grey-scale (L), RGB, RGB + mask (RGBA: the alpha band is the mask)."""


def check_channels(channels: int, what: str = "image") -> int:
    if channels not in CHANNELS:
        raise GanzipError(f"the model's {what} has {channels} channels; ganzip reads images as 1 (grey-scale), "
                          "3 (RGB) or 4 (RGB + mask, from the alpha band) channels")
    return int(channels)


def to_channels(img: Image.Image, channels: int) -> Image.Image:
    """A decoded image as 1 (L), 3 (RGB) or 4 (RGBA) channels.

    Grey-scale comes from the RGB conversion of :func:`to_rgb`. For 4 channels
    the alpha band is kept as the fourth channel (the mask of inpainting
    models); an image without alpha gets a constant 255 there.
    """
    if channels == 4:
        if img.mode in ("RGBA", "LA", "La", "RGBa", "PA") or (img.mode == "P" and "transparency" in img.info):
            return img.convert("RGBA")
        return to_rgb(img).convert("RGBA")
    rgb = to_rgb(img)
    return rgb.convert("L") if channels == 1 else rgb


def read_image(path: str | Path, channels: int = 3) -> Image.Image:
    """Decode `path` fully as a 1-, 3- or 4-channel image (see :func:`to_channels`), or raise SkipImage."""
    if channels == 3:
        return read_rgb(path)
    return read_rgb(path, convert=lambda im: to_channels(im, channels))


def read_rgb(path: str | Path, convert=None) -> Image.Image:
    """Decode `path` fully into an RGB image (or ``convert(image)``), or raise SkipImage saying why not."""
    convert = convert or to_rgb
    try:
        with warnings.catch_warnings():
            # Header oddities (odd TIFF tags, large-but-allowed sizes) are not the user's concern
            # unless the pixels fail to decode.
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                with warnings.catch_warnings():
                    # PIL warns (rather than raises) on some truncated files, e.g. TIFF: treat as corrupt.
                    warnings.simplefilter("error", UserWarning)
                    im.load()
                return convert(im)
    except Image.DecompressionBombError as exc:
        raise SkipImage(f"too many pixels (decompression-bomb limit {Image.MAX_IMAGE_PIXELS}): {exc}") from None
    except UnidentifiedImageError:
        raise SkipImage("not a readable image") from None
    except (*DECODE_ERRORS, UserWarning) as exc:
        raise SkipImage(f"cannot decode ({type(exc).__name__}: {exc})") from None


def probe(path: str | Path) -> tuple[int, int]:
    """Read only the header of `path`: its (width, height), or SkipImage."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                return im.size
    except Image.DecompressionBombError:
        raise SkipImage(f"too many pixels (decompression-bomb limit {Image.MAX_IMAGE_PIXELS})") from None
    except UnidentifiedImageError:
        raise SkipImage("not a readable image") from None
    except DECODE_ERRORS as exc:
        raise SkipImage(f"cannot read header ({type(exc).__name__}: {exc})") from None


def _size_problem(w: int, h: int, paired: bool, min_side: int) -> str | None:
    if paired and w % 2:
        return f"odd width {w}: a paired image must be two halves (A|B) of equal width"
    half = w // 2 if paired else w
    if min(half, h) < min_side:
        what = "each half" if paired else "image"
        return f"{what} is {half}x{h}, smaller than the {min_side} px minimum side"
    return None


def list_files(root: Path, recursive: bool = True) -> list[Path]:
    """Every regular file under `root` (hidden files and folders excluded), sorted."""
    if recursive:
        out = []
        seen = set()
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen:  # a symlink loop, or a folder linked twice
                dirnames[:] = []
                continue
            seen.add(real)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            out.extend(Path(dirpath) / f for f in filenames if not f.startswith("."))
        return sorted(out)
    return sorted(p for p in root.iterdir() if not p.is_dir() and not p.name.startswith("."))


def _unreadable(path: Path) -> str | None:
    """Why `path` cannot be opened as an image file at all: a FIFO, device or dangling link, or no permission.

    Opening a FIFO blocks forever, so only regular files (and links to them) are ever opened.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "a symbolic link to nothing"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a FIFO, socket or device)"
    if not os.access(path, os.R_OK):
        return "cannot be read (permission denied)"
    return None



class _Scanned:
    """The usable image files of one folder, with the skipped ones and why."""

    def __init__(self, root: Path, paired: bool, min_side: int, verify: bool, n: int | None, recursive: bool = True):
        root = Path(root)
        if n is not None and (isinstance(n, bool) or int(n) < 1):
            raise GanzipError(f"n (the number of images to use) must be at least 1, got {n!r}")
        if not root.is_dir():
            raise GanzipError(f"image folder {root} does not exist: pass a folder of images ({accepted_extensions()})")
        self.root = root
        self.paths: list[str] = []
        self.skip_reasons: list[tuple[str, str]] = []
        for path in list_files(root, recursive):
            if n is not None and len(self.paths) >= n:
                break
            if not is_image_file(path):
                self.skip_reasons.append((str(path), f"not an image file (accepted: {accepted_extensions()})"))
                continue
            why = _unreadable(path)
            if why:
                self.skip_reasons.append((str(path), why))
                continue
            try:
                w, h = read_rgb(path).size if verify else probe(path)
            except SkipImage as exc:
                self.skip_reasons.append((str(path), str(exc)))
                continue
            problem = _size_problem(w, h, paired, min_side)
            if problem:
                self.skip_reasons.append((str(path), problem))
                continue
            self.paths.append(str(path))
        if not self.paths:
            raise GanzipError(self._empty_message(paired, min_side))

    def _empty_message(self, paired: bool, min_side: int) -> str:
        if not self.skip_reasons:
            return f"no images in {self.root}: put image files ({accepted_extensions()}) in it"
        what = "paired A|B images" if paired else "images"
        return (
            f"no usable {what} in {self.root}: {summarize_skips(self.skip_reasons)}; "
            f"images need a side of at least {min_side} px"
            + (" per half and an even width" if paired else "")
            + f" and one of the extensions {accepted_extensions()}"
        )


def summarize_skips(reasons: Sequence[tuple[str, str]]) -> str:
    """'3 files skipped (2 not an image file, 1 smaller than ...)' from (path, reason) pairs."""
    if not reasons:
        return "no files skipped"
    kinds = Counter(_reason_kind(r) for _, r in reasons)
    detail = ", ".join(f"{c} {k}" for k, c in kinds.most_common())
    return f"{len(reasons)} file{'s' if len(reasons) != 1 else ''} skipped ({detail}; first: {reasons[0][0]})"


def _reason_kind(reason: str) -> str:
    return reason.split(" (")[0].split(":")[0]

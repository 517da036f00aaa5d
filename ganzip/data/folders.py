"""Image folders on disk: layout detection, robust decoding, torch Datasets.

Understands the layouts of pytorch-CycleGAN-and-pix2pix:

- unpaired (CycleGAN): ``trainA/``, ``trainB/``, ``testA/``, ``testB/`` (``valA/``, ``valB/`` too);
- paired (pix2pix): ``train/``, ``val/``, ``test/`` holding A|B images, A on the
  left half and B on the right;
- separate A/ and B/ folders (the input of the reference's combine_A_and_B
  script), each optionally with train/val/test inside: paired when both
  sides hold the same file names, else unpaired;
- plain: any folder of images, searched recursively.

Files that cannot be used (not an image, unreadable or corrupt, smaller than
`MIN_SIDE` pixels on a side, a paired image of odd width) are skipped and
counted; ``dataset.skipped`` and ``dataset.skip_reasons`` say which and why.
Decompression-bomb protection (``PIL.Image.MAX_IMAGE_PIXELS``) stays on.
"""
from __future__ import annotations

import json
import os
import stat
import struct
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..errors import GanzipError
from . import transforms as T

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

_UNPAIRED_DIRS = ("trainA", "trainB", "valA", "valB", "testA", "testB")
_PAIRED_DIRS = ("train", "val", "test")


def accepted_extensions() -> str:
    return ", ".join(IMG_EXTENSIONS)


def is_image_file(path: str | Path) -> bool:
    return str(path).lower().endswith(IMG_EXTENSIONS)


# ---------------------------------------------------------------------------
# Layout


@dataclass(frozen=True)
class Layout:
    """Where a dataset's images are.

    kind: "unpaired" | "paired" | "plain".
    splits: split name -> folder of inputs (unpaired: the A folders; paired:
    the A|B folders, or the A folders of separate A/ and B/; plain:
    {"all": root}). A split named "all" serves every split.
    b_splits: split name -> folder of target-domain (B) images: the B folders
    of an unpaired layout, or of a paired one kept in separate A/ and B/
    folders (matched by file name). Empty for A|B images and plain folders.
    """

    kind: str
    root: Path
    splits: dict[str, Path] = field(default_factory=dict)
    b_splits: dict[str, Path] = field(default_factory=dict)

    @property
    def separate_pairs(self) -> bool:
        """True for paired data kept as A/ and B/ folders (matched by file name), not A|B images."""
        return self.kind == "paired" and bool(self.b_splits)

    def folder(self, split: str) -> Path:
        """The input folder of `split` ("all" serves any split)."""
        if "all" in self.splits:
            return self.splits["all"]
        if split not in self.splits:
            raise GanzipError(
                f"{self.root} has no {split!r} split ({self.kind} layout with {', '.join(self.splits) or 'no splits'}): "
                f"{self._hint(split)}"
            )
        return self.splits[split]

    def b_folder(self, split: str) -> Path | None:
        """The target-domain folder of `split` when B images live in their own folder, else None."""
        if "all" in self.b_splits:
            return self.b_splits["all"]
        return self.b_splits.get(split)

    @property
    def eval_split(self) -> str:
        """The split to report on: "test" when there is one, else "val" (edges2shoes has no test)."""
        if "all" in self.splits:
            return "all"
        for name in ("test", "val"):
            if name in self.splits:
                return name
        return "train"

    def _hint(self, split: str) -> str:
        want = f"{split}A/" if self.kind == "unpaired" else f"{split}/"
        return f"add a {want} folder or choose one of the splits that exist"


def _check_complete(root: Path) -> None:
    """A folder `ganzip data make` was still writing (or that was cut short) is refused, not half-used."""
    marker = root / "ganzip-data.json"
    if not marker.is_file():
        return
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return
    if isinstance(info, dict) and info.get("complete") is False:
        raise GanzipError(f"{root} is an incomplete dataset: `ganzip data make {info.get('task', 'NAME')}` was cut short "
                          "(a full disk or an interrupted run); make it again with --overwrite")


def resolve_layout(path: str | os.PathLike, kind: str | None = None) -> Layout:
    """Detect the layout of the dataset folder `path`.

    A folder with any of trainA/trainB/testA/testB/valA/valB is "unpaired";
    else one with train/val/test subfolders is "paired" (A|B images); else it
    is a "plain" folder of images (searched recursively). `kind` forces an
    interpretation, e.g. ``kind="paired"`` for a single folder of A|B images
    (then its only split is "all").
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise GanzipError(f"data folder {root} does not exist: pass an existing folder of images (e.g. --data datasets/horse2zebra)")
    if not root.is_dir():
        raise GanzipError(f"--data {root} is a file, not a folder: pass the folder that holds the images")
    if kind not in (None, "unpaired", "paired", "plain"):
        raise GanzipError(f"unknown layout kind {kind!r}: use unpaired, paired or plain")
    _check_complete(root)
    subdirs = {p.name for p in root.iterdir() if p.is_dir()}
    has_unpaired = any(d in subdirs for d in _UNPAIRED_DIRS)
    has_paired = any(d in subdirs for d in _PAIRED_DIRS)
    if not has_unpaired and not has_paired and {"A", "B"} <= subdirs and kind != "plain":
        return _separate_layout(root, kind)

    if kind == "unpaired" or (kind is None and has_unpaired):
        if not has_unpaired:
            raise GanzipError(f"{root} has none of the unpaired folders {', '.join(_UNPAIRED_DIRS)}")
        splits = {s: root / f"{s}A" for s in _PAIRED_DIRS if f"{s}A" in subdirs}
        b_splits = {s: root / f"{s}B" for s in _PAIRED_DIRS if f"{s}B" in subdirs}
        if not splits:
            raise GanzipError(
                f"{root} has only target-domain folders ({', '.join(sorted(d for d in subdirs if d.endswith('B')))}): "
                "add trainA/ (and testA/) with the input images"
            )
        return Layout("unpaired", root, splits, b_splits)
    if kind == "paired" or (kind is None and has_paired):
        splits = {s: root / s for s in _PAIRED_DIRS if s in subdirs}
        if not splits:  # forced paired on a single folder of A|B images
            splits = {"all": root}
        return Layout("paired", root, splits)
    return Layout("plain", root, {"all": root})


def _separate_layout(root: Path, kind: str | None) -> Layout:
    a, b = root / "A", root / "B"
    names = [s for s in _PAIRED_DIRS if (a / s).is_dir()]
    if names:
        splits = {s: a / s for s in names}
        b_splits = {s: b / s for s in names if (b / s).is_dir()}
    else:
        splits, b_splits = {"all": a}, {"all": b}
    if kind is None:
        same = all(
            _stems(splits[s]) == _stems(b_splits[s]) for s in splits if s in b_splits
        ) and bool(b_splits)
        kind = "paired" if same else "unpaired"
    if kind == "paired":
        missing = [s for s in splits if s not in b_splits]
        if missing:
            raise GanzipError(f"{b} has no {', '.join(missing)} folder to pair with {a}")
    return Layout(kind, root, splits, b_splits)


def _stems(folder: Path) -> set[str]:
    return {str(p.relative_to(folder).with_suffix("")) for p in list_files(folder) if is_image_file(p)}


# ---------------------------------------------------------------------------
# Decoding


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


# ---------------------------------------------------------------------------
# Datasets


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


class _Base(Dataset):
    """Shared: preprocessing options, per-item seeded RNG, epochs, skip bookkeeping."""

    kind = "plain"

    def __init__(self, size, load_size, augment, seed, preprocess, flip, channels=3, b_channels=None, b_scale=1):
        T.check_preprocess(preprocess, size, load_size)
        self.channels = check_channels(channels, "input")
        self.b_channels = check_channels(b_channels or channels, "output")
        if isinstance(b_scale, bool) or not isinstance(b_scale, (int, np.integer)) or b_scale < 1:
            raise GanzipError(f"the target scale must be a positive integer (output side / input side), got {b_scale!r}")
        self.b_scale = int(b_scale)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise GanzipError(f"seed must be a non-negative integer, got {seed!r}")
        self.size = int(size)
        self.load_size = load_size
        self.augment = bool(augment)
        self.seed = int(seed)
        self.preprocess = preprocess
        self.flip = bool(flip)
        self.epoch = 0
        self.load_failures: list[tuple[str, str]] = []  # decode errors met while iterating (this process)

    def set_epoch(self, epoch: int) -> None:
        """Use the augmentation draws of `epoch` (like DistributedSampler.set_epoch).

        DataLoader workers get a fresh copy of the dataset at each epoch unless
        ``persistent_workers=True``; call this before creating the iterator.
        """
        self.epoch = int(epoch)

    def _check_index(self, index: int) -> int:
        n = len(self)
        index = int(index)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        return index

    def _rng(self, index: int) -> np.random.Generator:
        return T.item_rng(self.seed, self.epoch, index)

    def _params(self, w: int, h: int, rng) -> T.Params:
        return T.sample_params(w, h, self.size, self.load_size, self.augment, rng, self.preprocess, self.flip)

    @property
    def b_size(self) -> int:
        """Side of the target (B) images: the input side times the model's scale."""
        return self.size * self.b_scale

    def _b_params(self, w: int, h: int, rng) -> T.Params:
        """Preprocessing of an unaligned target image, at the output resolution."""
        s = self.b_scale
        return T.sample_params(w, h, self.size * s, None if self.load_size is None else self.load_size * s,
                               self.augment, rng, self.preprocess, self.flip)

    @property
    def skipped(self) -> int:
        """How many files were skipped while scanning (see `skip_reasons`)."""
        return len(self.skip_reasons)

    def skip_summary(self) -> str:
        """One line for the user about the skipped files."""
        return summarize_skips(self.skip_reasons)

    def _read_with_fallback(self, paths: list[str], i: int, channels: int | None = None) -> tuple[int, Image.Image]:
        """Decode paths[i]; if it turns out corrupt, use the next decodable file instead."""
        for step in range(len(paths)):
            j = (i + step) % len(paths)
            try:
                return j, read_image(paths[j], channels or self.channels)
            except SkipImage as exc:
                self.load_failures.append((paths[j], str(exc)))
                warnings.warn(f"ganzip: skipping {paths[j]}: {exc}", RuntimeWarning, stacklevel=3)
        raise GanzipError(f"none of the {len(paths)} images could be decoded (first: {paths[0]})")


class ImageFolder(_Base):
    """A folder of images (searched recursively): items {key: [3,S,S] in [-1,1], "path": str}.

    `n` keeps the first n usable images (sorted by path). `verify=True`
    decodes every file while scanning, so corrupt files are counted up front
    rather than met (and replaced by the next image, with a warning) later.
    """

    kind = "plain"

    def __init__(
        self,
        root: str | os.PathLike,
        size: int = 256,
        load_size: int | None = None,
        augment: bool = False,
        seed: int = 0,
        n: int | None = None,
        key: str = "A",
        preprocess: str = "resize_and_crop",
        flip: bool = True,
        min_side: int = MIN_SIDE,
        verify: bool = False,
        recursive: bool = True,
        channels: int = 3,
    ) -> None:
        super().__init__(size, load_size, augment, seed, preprocess, flip, channels)
        scan = _Scanned(Path(root), False, min_side, verify, n, recursive)
        self.root, self.paths, self.skip_reasons = scan.root, scan.paths, scan.skip_reasons
        self.key = key
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        index = self._check_index(index)
        rng = self._rng(index)
        j, img = self._read_with_fallback(self.paths, index)
        return {self.key: T.apply(img, self._params(*img.size, rng), self.size), "path": self.paths[j]}

    def evaluation_view(self) -> "ImageFolder":
        """The same files, without augmentation."""
        return _copy_without_augment(self)


class PairedFolder(_Base):
    """A|B images split into halves: items {"A", "B", "path"}; one crop/flip for both halves.

    `direction="BtoA"` makes the right half the input A.
    """

    kind = "paired"

    def __init__(
        self,
        root: str | os.PathLike,
        size: int = 256,
        load_size: int | None = None,
        augment: bool = False,
        seed: int = 0,
        n: int | None = None,
        direction: str = "AtoB",
        preprocess: str = "resize_and_crop",
        flip: bool = True,
        min_side: int = MIN_SIDE,
        verify: bool = False,
        channels: int = 3,
        b_channels: int | None = None,
        b_scale: int = 1,
    ) -> None:
        super().__init__(size, load_size, augment, seed, preprocess, flip, channels, b_channels, b_scale)
        _check_direction(direction)
        if self.b_scale != 1:
            raise GanzipError(f"{root} holds A|B images, whose halves have one size, but the model's output is "
                              f"{self.b_scale}x its input: keep low- and high-resolution images in separate folders "
                              "(--data LR_DIR --target HR_DIR, matched by file name)")
        scan = _Scanned(Path(root), True, min_side, verify, n)
        self.root, self.paths, self.skip_reasons = scan.root, scan.paths, scan.skip_reasons
        self.direction = direction
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        index = self._check_index(index)
        rng = self._rng(index)
        ca, cb = (self.b_channels, self.channels) if self.direction == "BtoA" else (self.channels, self.b_channels)
        # the scan checked the (header) size
        j, ab = self._read_with_fallback(self.paths, index, 4 if 4 in (ca, cb) else 3)
        w, h = ab.size
        half = w // 2
        left, right = ab.crop((0, 0, half, h)), ab.crop((half, 0, w, h))
        params = self._params(half, h, rng)
        a = T.apply(to_channels(left, ca), params, self.size)
        b = T.apply(to_channels(right, cb), params, self.size)
        if self.direction == "BtoA":
            a, b = b, a
        return {"A": a, "B": b, "path": self.paths[j]}

    def evaluation_view(self) -> "PairedFolder":
        return _copy_without_augment(self)


class UnpairedFolders(_Base):
    """Two unaligned folders: items {"A", "B", "path", "B_path"}.

    The length is the number of A images (one epoch = one pass over the
    inputs); each item's B image is drawn from the B folder by the item's
    seeded generator when augmenting, and is B[index % len(B)] otherwise.
    `direction="BtoA"` swaps the folders.
    """

    kind = "unpaired"

    def __init__(
        self,
        root_a: str | os.PathLike,
        root_b: str | os.PathLike,
        size: int = 256,
        load_size: int | None = None,
        augment: bool = False,
        seed: int = 0,
        n: int | None = None,
        direction: str = "AtoB",
        preprocess: str = "resize_and_crop",
        flip: bool = True,
        min_side: int = MIN_SIDE,
        verify: bool = False,
        channels: int = 3,
        b_channels: int | None = None,
        b_scale: int = 1,
    ) -> None:
        super().__init__(size, load_size, augment, seed, preprocess, flip, channels, b_channels, b_scale)
        _check_direction(direction)
        if direction == "BtoA":
            root_a, root_b = root_b, root_a
        a = _Scanned(Path(root_a), False, min_side, verify, n)
        b = _Scanned(Path(root_b), False, min_side, verify, None)
        self.root, self.root_b = a.root, b.root
        self.paths, self.b_paths = a.paths, b.paths
        self.skip_reasons = a.skip_reasons + b.skip_reasons
        self.direction = direction

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        index = self._check_index(index)
        rng = self._rng(index)
        ib = int(rng.integers(0, len(self.b_paths))) if self.augment else index % len(self.b_paths)
        ja, img_a = self._read_with_fallback(self.paths, index)
        jb, img_b = self._read_with_fallback(self.b_paths, ib, self.b_channels)
        a = T.apply(img_a, self._params(*img_a.size, rng), self.size)
        b = T.apply(img_b, self._b_params(*img_b.size, rng), self.b_size)
        return {"A": a, "B": b, "path": self.paths[ja], "B_path": self.b_paths[jb]}

    def evaluation_view(self) -> "UnpairedFolders":
        return _copy_without_augment(self)


class AlignedFolders(_Base):
    """Paired images kept in two folders and matched by file name: items {"A", "B", "path", "B_path"}.

    A file of the A folder without a same-named image (any extension, same
    relative path) in the B folder is skipped. Both images of a pair get the
    same crop and flip. With ``b_scale`` s > 1 (super-resolution: A low-,
    B high-resolution) B is resized to s times A's resize and cropped at A's
    crop corner times s, a crop s times larger, so the pair stays aligned.
    """

    kind = "paired"

    def __init__(
        self,
        root_a: str | os.PathLike,
        root_b: str | os.PathLike,
        size: int = 256,
        load_size: int | None = None,
        augment: bool = False,
        seed: int = 0,
        n: int | None = None,
        direction: str = "AtoB",
        preprocess: str = "resize_and_crop",
        flip: bool = True,
        min_side: int = MIN_SIDE,
        verify: bool = False,
        channels: int = 3,
        b_channels: int | None = None,
        b_scale: int = 1,
    ) -> None:
        super().__init__(size, load_size, augment, seed, preprocess, flip, channels, b_channels, b_scale)
        _check_direction(direction)
        if direction == "BtoA" and self.b_scale != 1:
            raise GanzipError("direction BtoA would feed the high-resolution images to a model that enlarges them: "
                              "use AtoB with A holding the low-resolution inputs")
        a = _Scanned(Path(root_a), False, min_side, verify, n)
        b = _Scanned(Path(root_b), False, min_side, verify, None)
        by_stem = {str(Path(p).relative_to(b.root).with_suffix("")): p for p in b.paths}
        self.root, self.root_b = a.root, b.root
        self.paths: list[str] = []
        self.b_paths: list[str] = []
        self.skip_reasons = a.skip_reasons + b.skip_reasons
        for p in a.paths:
            partner = by_stem.get(str(Path(p).relative_to(a.root).with_suffix("")))
            if partner is None:
                self.skip_reasons.append((p, f"no image with the same name in {b.root} to pair with"))
            else:
                self.paths.append(p)
                self.b_paths.append(partner)
        if not self.paths:
            raise GanzipError(
                f"no image of {a.root} has a same-named partner in {b.root}: paired A/ and B/ folders "
                "must hold the same file names"
            )
        self.direction = direction

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        index = self._check_index(index)
        rng = self._rng(index)
        for step in range(len(self.paths)):
            j = (index + step) % len(self.paths)
            try:
                swap = self.direction == "BtoA"
                img_a = read_image(self.paths[j], self.b_channels if swap else self.channels)
                img_b = read_image(self.b_paths[j], self.channels if swap else self.b_channels)
                break
            except SkipImage as exc:
                self.load_failures.append((self.paths[j], str(exc)))
                warnings.warn(f"ganzip: skipping pair {self.paths[j]}: {exc}", RuntimeWarning, stacklevel=2)
        else:
            raise GanzipError(f"none of the {len(self.paths)} pairs in {self.root} could be decoded")
        params = self._params(*img_a.size, rng)
        a = T.apply(img_a, params, self.size)
        b = T.apply(img_b, T.scaled(params, self.b_scale), self.b_size)
        if self.direction == "BtoA":
            a, b = b, a
        return {"A": a, "B": b, "path": self.paths[j], "B_path": self.b_paths[j]}

    def evaluation_view(self) -> "AlignedFolders":
        return _copy_without_augment(self)


def _check_direction(direction: str) -> None:
    if direction not in ("AtoB", "BtoA"):
        raise GanzipError(f"direction must be AtoB or BtoA, got {direction!r}")


def _copy_without_augment(ds):
    import copy

    view = copy.copy(ds)
    view.augment = False
    view.load_failures = []
    return view


def image_folder(
    path: str | os.PathLike,
    size: int = 256,
    load_size: int | None = None,
    augment: bool = False,
    seed: int = 0,
    n: int | None = None,
    key: str = "A",
    **kwargs,
) -> ImageFolder:
    """A plain folder of images as a Dataset of {key: [3,S,S] in [-1,1], "path": str}.

    Use it for a target-domain folder (e.g. trainB for FID statistics) with
    ``key="B"``. Without `augment` images are resized to `size` x `size`.
    """
    return ImageFolder(path, size=size, load_size=load_size, augment=augment, seed=seed, n=n, key=key, **kwargs)


def holdout_split(
    dataset: Dataset,
    fraction: float = 0.1,
    seed: int = 0,
    min_holdout: int = 1,
) -> tuple[torch.utils.data.Subset, torch.utils.data.Subset]:
    """Split training data into (train, holdout) for model selection, deterministically by `seed`.

    The holdout gets ``max(min_holdout, round(fraction * len))`` items chosen
    by a seeded permutation, and at least one item stays in train. If the
    dataset has ``evaluation_view()`` the holdout indexes that view, so held-out
    images are never augmented. Select checkpoints on this, never on the test set.
    """
    n = len(dataset)
    if not 0.0 <= fraction < 1.0:
        raise GanzipError(f"holdout fraction must be in [0, 1), got {fraction}")
    k = max(int(min_holdout), int(round(fraction * n)))
    if k >= n:
        raise GanzipError(
            f"cannot hold out {k} of {n} training images and keep any for training: "
            "add images or lower the holdout fraction"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).tolist()
    held, kept = sorted(perm[:k]), sorted(perm[k:])
    view = dataset.evaluation_view() if hasattr(dataset, "evaluation_view") else dataset
    return torch.utils.data.Subset(dataset, kept), torch.utils.data.Subset(view, held)

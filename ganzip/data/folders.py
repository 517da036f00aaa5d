"""Image folders on disk as torch Datasets (layouts in `ganzip.data.layout`, decoding in `ganzip.data.files`).

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

import copy
import os
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import GanzipError
from . import transforms as T
from .files import (CHANNELS, DECODE_ERRORS, IMG_EXTENSIONS, MIN_SIDE, SkipImage, _Scanned,  # noqa: F401
                    accepted_extensions, check_channels, is_image_file, list_files, probe, read_image, read_rgb,
                    summarize_skips, to_channels, to_rgb)
from .layout import Layout, resolve_layout  # noqa: F401  (importable from here as before)


@dataclass(frozen=True)
class FolderOptions:
    """What every folder dataset takes besides its folders (all keyword arguments of the dataset classes).

    size: the side of the images given out; load_size: resize before cropping
    (preprocess); augment: random crop and flip, drawn per item from
    (seed, epoch, index); n: keep the first n usable images; direction: AtoB or
    BtoA (which side is the input); min_side: smaller images are skipped;
    verify: decode every file while scanning; channels / b_channels: image
    channels of the input and the target; b_scale: target side / input side.
    """

    size: int = 256
    load_size: int | None = None
    augment: bool = False
    seed: int = 0
    n: int | None = None
    direction: str = "AtoB"
    preprocess: str = "resize_and_crop"
    flip: bool = True
    min_side: int = MIN_SIDE
    verify: bool = False
    channels: int = 3
    b_channels: int | None = None
    b_scale: int = 1


_ALL_OPTIONS = frozenset(f.name for f in fields(FolderOptions))


class _Base(Dataset):
    """Shared: preprocessing options, per-item seeded RNG, epochs, skip bookkeeping."""

    kind = "plain"
    takes = _ALL_OPTIONS  # the FolderOptions this dataset class accepts

    def __init__(self, **options):
        unknown = sorted(set(options) - self.takes)
        if unknown:
            raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {unknown[0]!r}")
        opts = self.options = FolderOptions(**options)
        T.check_preprocess(opts.preprocess, opts.size, opts.load_size)
        self.channels = check_channels(opts.channels, "input")
        self.b_channels = check_channels(opts.b_channels or opts.channels, "output")
        b_scale, seed = opts.b_scale, opts.seed
        if isinstance(b_scale, bool) or not isinstance(b_scale, (int, np.integer)) or b_scale < 1:
            raise GanzipError(f"the target scale must be a positive integer (output side / input side), got {b_scale!r}")
        self.b_scale = int(b_scale)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise GanzipError(f"seed must be a non-negative integer, got {seed!r}")
        self.size = int(opts.size)
        self.load_size = opts.load_size
        self.augment = bool(opts.augment)
        self.seed = int(seed)
        self.preprocess = opts.preprocess
        self.flip = bool(opts.flip)
        self.epoch = 0
        self.load_failures: list[tuple[str, str]] = []  # decode errors met while iterating (this process)

    def _scan(self, root, paired: bool = False, n: int | None = None, recursive: bool = True) -> _Scanned:
        return _Scanned(Path(root), paired, self.options.min_side, self.options.verify, n, recursive)

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
    takes = _ALL_OPTIONS - {"direction", "b_channels", "b_scale"}

    def __init__(self, root: str | os.PathLike, *, key: str = "A", recursive: bool = True, **options) -> None:
        super().__init__(**options)
        scan = self._scan(root, False, self.options.n, recursive)
        self.root, self.paths, self.skip_reasons = scan.root, scan.paths, scan.skip_reasons
        self.key = key
        self.min_side = self.options.min_side

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

    def __init__(self, root: str | os.PathLike, **options) -> None:
        super().__init__(**options)
        direction = self.options.direction
        _check_direction(direction)
        if self.b_scale != 1:
            raise GanzipError(f"{root} holds A|B images, whose halves have one size, but the model's output is "
                              f"{self.b_scale}x its input: keep low- and high-resolution images in separate folders "
                              "(--data LR_DIR --target HR_DIR, matched by file name)")
        scan = self._scan(root, True, self.options.n)
        self.root, self.paths, self.skip_reasons = scan.root, scan.paths, scan.skip_reasons
        self.direction = direction
        self.min_side = self.options.min_side

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

    def __init__(self, root_a: str | os.PathLike, root_b: str | os.PathLike, **options) -> None:
        super().__init__(**options)
        direction = self.options.direction
        _check_direction(direction)
        if direction == "BtoA":
            root_a, root_b = root_b, root_a
        a = self._scan(root_a, False, self.options.n)
        b = self._scan(root_b, False, None)
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

    def __init__(self, root_a: str | os.PathLike, root_b: str | os.PathLike, **options) -> None:
        super().__init__(**options)
        direction = self.options.direction
        _check_direction(direction)
        if direction == "BtoA" and self.b_scale != 1:
            raise GanzipError("direction BtoA would feed the high-resolution images to a model that enlarges them: "
                              "use AtoB with A holding the low-resolution inputs")
        a = self._scan(root_a, False, self.options.n)
        b = self._scan(root_b, False, None)
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

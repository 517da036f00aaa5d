"""Datasets for ganzip: image folders in the pytorch-CycleGAN-and-pix2pix layouts and built-in tasks.

Every dataset yields dicts ``{"A": FloatTensor[3,S,S] in [-1,1], "B": ... (when
there is a target), "path": str}``; A is the generator's input.

    open_dataset("datasets/horse2zebra")               # unpaired: trainA inputs, trainB targets
    open_dataset("datasets/facades", split="test", augment=False)   # paired A|B
    open_dataset("builtin:edges2shapes", size=64, n=500)           # procedural, no files
"""
from __future__ import annotations

import os

from torch.utils.data import Dataset

from ..errors import GanzipError
from .folders import (
    CHANNELS,
    IMG_EXTENSIONS,
    AlignedFolders,
    MIN_SIDE,
    ImageFolder,
    Layout,
    PairedFolder,
    UnpairedFolders,
    _Scanned,
    holdout_split,
    image_folder,
    read_image,
    read_rgb,
    resolve_layout,
    summarize_skips,
    to_channels,
    to_rgb,
)
from .procedural import DEFAULT_N, TASKS, ProceduralDataset, generate, get_task, list_tasks, make_dataset

BUILTIN_PREFIX = "builtin:"

__all__ = [
    "CHANNELS",
    "IMG_EXTENSIONS",
    "AlignedFolders",
    "MIN_SIDE",
    "TASKS",
    "ImageFolder",
    "Layout",
    "PairedFolder",
    "ProceduralDataset",
    "UnpairedFolders",
    "generate",
    "holdout_split",
    "image_folder",
    "inspect_source",
    "is_builtin",
    "list_tasks",
    "make_dataset",
    "open_dataset",
    "open_pairs",
    "open_target",
    "read_image",
    "read_rgb",
    "resolve_layout",
    "summarize_skips",
    "to_channels",
    "to_rgb",
]


def is_builtin(source) -> bool:
    """True for ``"builtin:NAME"`` sources (procedural tasks)."""
    return isinstance(source, str) and source.startswith(BUILTIN_PREFIX)


def open_dataset(
    source: str | os.PathLike,
    split: str = "train",
    size: int = 256,
    load_size: int | None = None,
    augment: bool = True,
    direction: str = "AtoB",
    seed: int = 0,
    n: int | None = None,
    *,
    kind: str | None = None,
    preprocess: str = "resize_and_crop",
    flip: bool = True,
    verify: bool = False,
    channels: int = 3,
    target_channels: int | None = None,
    target_scale: int = 1,
) -> Dataset:
    """Open a dataset for training (``augment=True``) or evaluation (``augment=False``).

    `source` is a folder or ``"builtin:NAME"`` (see `list_tasks()`). For a
    folder, `resolve_layout` decides the kind (`kind` forces one):

    - unpaired root (trainA/trainB/...): A from ``{split}A``, B from ``{split}B``
      (B omitted when that folder is missing);
    - paired root (train/val/test of A|B images): A and B are the halves;
    - A/ and B/ folders: paired by file name when the names match, else unpaired;
    - plain folder: A only.

    Training preprocessing follows ``--preprocess resize_and_crop``: resize to
    `load_size` (default 286/256 of `size`), random `size` crop, random
    horizontal flip; all draws come from a generator seeded by (seed, epoch,
    index), so results do not depend on DataLoader workers (use ``set_epoch``
    to change them per epoch). Evaluation resizes to `size` without flipping.
    `n` keeps the first n images; built-in tasks render n images (default
    1000 for train, 100 for val/test) at sizes 64-256 and only flip when
    augmenting. `channels` is the model's input channel count (1: grey-scale,
    3: RGB, 4: RGB + the alpha band as a mask) and `target_channels` its
    output's (default: the same); `target_scale` s > 1 (super-resolution)
    reads B images at s times `size`, cropped in step with A (separate A/
    and B/ folders; A|B images cannot hold two sizes). The returned dataset has ``kind``, ``skipped`` and
    ``skip_reasons`` attributes; report ``dataset.skip_summary()`` to the user
    when ``skipped`` is non-zero.
    """
    if is_builtin(source):
        if (channels, target_channels or channels, target_scale) != (3, 3, 1):
            raise GanzipError(f"the built-in tasks render RGB images of one size; this model takes {channels} channels "
                              f"and gives {target_channels or channels} at {target_scale}x: use a folder of images")
        return ProceduralDataset(source[len(BUILTIN_PREFIX):], n=n, size=size, seed=seed, split=split,
                                 direction=direction, augment=augment and flip)
    layout = resolve_layout(source, kind=kind)
    opts = dict(size=size, load_size=load_size, augment=augment, seed=seed, n=n,
                preprocess=preprocess, flip=flip, verify=verify, channels=channels)
    pair_opts = dict(opts, b_channels=target_channels, b_scale=target_scale)
    if layout.kind == "paired":
        if layout.separate_pairs:
            return AlignedFolders(layout.folder(split), layout.b_folder(split), direction=direction, **pair_opts)
        return PairedFolder(layout.folder(split), direction=direction, **pair_opts)
    if layout.kind == "unpaired":
        a_dir, b_dir = layout.folder(split), layout.b_folder(split)
        if b_dir is None:
            if direction == "BtoA":
                raise GanzipError(f"direction BtoA needs {layout.root / (split + 'B')}, which does not exist")
            return ImageFolder(a_dir, key="A", **opts)
        return UnpairedFolders(a_dir, b_dir, direction=direction, **pair_opts)
    if direction == "BtoA":
        raise GanzipError(f"{layout.root} is a plain folder of images: direction BtoA needs a paired or unpaired dataset")
    return ImageFolder(layout.root, key="A", **opts)


def open_pairs(
    inputs: str | os.PathLike,
    targets: str | os.PathLike,
    size: int = 256,
    scale: int = 1,
    channels: int = 3,
    target_channels: int | None = None,
    **kwargs,
) -> Dataset | None:
    """``--data LR_DIR --target HR_DIR``: the two folders paired by file name, or None when no name matches.

    An input image is paired with the image of the target folder that has
    the same path relative to its folder, without the extension
    (``lr/0001.png`` with ``hr/0001.jpg``); inputs without a partner are
    skipped and counted. Targets are read at ``scale`` times ``size`` and
    cropped in step with their inputs (see `AlignedFolders`).
    """
    for folder in (inputs, targets):
        if is_builtin(folder) or not os.path.isdir(folder):
            return None
    try:
        return AlignedFolders(inputs, targets, size=size, channels=channels, b_channels=target_channels,
                              b_scale=scale, **kwargs)
    except GanzipError as exc:
        if "same-named partner" in str(exc):
            return None
        raise


def open_target(
    source: str | os.PathLike,
    split: str = "train",
    size: int = 256,
    direction: str = "AtoB",
    seed: int = 0,
    n: int | None = None,
    **kwargs,
) -> Dataset:
    """The real target-domain images of a split, unaugmented, as items {"B": [3,S,S], "path"}.

    For FID statistics of the target domain: an unpaired root gives every
    image of ``{split}B`` (``{split}A`` for BtoA); a paired root gives the B
    halves of ``{split}/``; a built-in task gives its B renders. A plain
    folder is taken as the target images themselves.
    """
    if is_builtin(source):
        return _OnlyKey(ProceduralDataset(source[len(BUILTIN_PREFIX):], n=n, size=size, seed=seed, split=split,
                                          direction=direction), "B")
    layout = resolve_layout(source, kind=kwargs.pop("kind", None))
    if layout.kind == "unpaired":
        folder = layout.folder(split) if direction == "BtoA" else layout.b_folder(split)
        if folder is None:
            raise GanzipError(f"{layout.root} has no {split}B folder with target-domain images")
        return ImageFolder(folder, size=size, augment=False, seed=seed, n=n, key="B", **kwargs)
    if layout.kind == "paired" and layout.separate_pairs:
        folder = layout.folder(split) if direction == "BtoA" else layout.b_folder(split)
        return ImageFolder(folder, size=size, augment=False, seed=seed, n=n, key="B", **kwargs)
    if layout.kind == "paired":
        return _OnlyKey(PairedFolder(layout.folder(split), size=size, augment=False, seed=seed, n=n,
                                     direction=direction, **kwargs), "B")
    return ImageFolder(layout.root, size=size, augment=False, seed=seed, n=n, key="B", **kwargs)


class _OnlyKey(Dataset):
    """A view of a dataset that keeps one image key (and the path)."""

    def __init__(self, base: Dataset, key: str) -> None:
        self.base, self.key = base, key
        self.kind = "plain"

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        item = self.base[index]
        return {self.key: item[self.key], "path": item["path"]}

    @property
    def skipped(self) -> int:
        return self.base.skipped

    @property
    def skip_reasons(self):
        return self.base.skip_reasons

    def skip_summary(self) -> str:
        return summarize_skips(self.skip_reasons)


def inspect_source(source: str | os.PathLike, verify: bool = False) -> dict:
    """What `source` holds: its layout kind and, per split, the folders, usable image counts and skips.

    Scans headers only unless `verify` (then every image is decoded). For a
    built-in task, describes the task instead.
    """
    if is_builtin(source):
        task = get_task(source)
        return {"source": source, "kind": task.kind, "builtin": True, "description": task.description,
                "splits": {s: {"images": n} for s, n in DEFAULT_N.items()}}
    layout = resolve_layout(source)
    paired_halves = layout.kind == "paired" and not layout.separate_pairs
    info = {"source": str(source), "kind": layout.kind, "builtin": False, "splits": {}}

    def scan(folder) -> dict:
        try:
            sc = _Scanned(folder, paired_halves, MIN_SIDE, verify, None)
            return {"folder": str(folder), "images": len(sc.paths), "skipped": len(sc.skip_reasons),
                    "skip_summary": summarize_skips(sc.skip_reasons)}
        except GanzipError as exc:
            return {"folder": str(folder), "images": 0, "error": str(exc)}

    for split, folder in layout.splits.items():
        entry = {"A": scan(folder)}
        b = layout.b_folder(split)
        if b is not None:
            entry["B"] = scan(b) if b.is_dir() else {"folder": str(b), "images": 0, "error": "missing"}
        info["splits"][split] = entry
    return info

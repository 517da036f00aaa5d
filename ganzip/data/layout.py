"""Dataset folder layouts: what `resolve_layout` recognises in a folder (unpaired, paired, separate A/B, plain)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import GanzipError
from .files import is_image_file, list_files

_UNPAIRED_DIRS = ("trainA", "trainB", "valA", "valB", "testA", "testB")
_PAIRED_DIRS = ("train", "val", "test")


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

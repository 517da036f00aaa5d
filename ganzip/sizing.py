"""The image side a ganzip model was trained at, and the size `eval` and `export` run at by default.

A student written by ``compress`` records its resolved recipe (with
``train.size``) in its safetensors metadata; an older file may only have the
``report.json`` compress wrote beside it. Evaluating or exporting at another
side changes the numbers (a 64-px teacher scores 17.7 dB at 64 and 12.1 dB at
256 on the same images), so the default is the training size, and an explicit
``--size`` that differs gets a one-line warning.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .formats import read_metadata

# The side used when a model records no training size (a foreign checkpoint).
DEFAULT_SIZE = 256


def _from_metadata(path: Path) -> int | None:
    try:
        meta = read_metadata(path)
    except Exception:  # not a safetensors file, or unreadable: the loader will say so
        return None
    for key in ("ganzip.recipe_config", "ganzip.config"):
        try:
            size = json.loads(meta.get(key) or "{}").get("train", {}).get("size")
        except (json.JSONDecodeError, AttributeError):
            continue
        if isinstance(size, int) and size > 0:
            return size
    size = meta.get("ganzip.size")
    return int(size) if size and str(size).isdigit() else None


def _from_report(path: Path) -> int | None:
    try:
        report = json.loads((path.parent / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if report.get("kind") != "compress":
        return None
    size = (report.get("cost") or {}).get("size")
    return size if isinstance(size, int) and size > 0 else None


def training_size(model: Any) -> int | None:
    """The side `model` (a file path) was trained at: its metadata's recipe, else compress's report.json beside it.

    None for an ``nn.Module``, a foreign checkpoint, or a file that records no size.
    """
    if not isinstance(model, (str, os.PathLike)):
        return None
    path = Path(model)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    return _from_metadata(path) or _from_report(path)


def resolve_size(model: Any, size: int | None, flag: str = "--size") -> tuple[int, str | None]:
    """(the side to run `model` at, a one-line warning or None).

    ``size=None`` takes the training size (else :data:`DEFAULT_SIZE`); a given
    size that differs from the training size is kept, with a warning.
    """
    trained = training_size(model)
    if size is None:
        return (trained or DEFAULT_SIZE), None
    if trained is not None and int(size) != trained:
        return int(size), (f"{flag} {size} differs from the student's training size {trained} (recorded in "
                           f"{Path(model).name}): numbers at another size are not comparable; omit {flag} to use {trained}")
    return int(size), None


__all__ = ["DEFAULT_SIZE", "training_size", "resolve_size"]

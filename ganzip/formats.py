"""ganzip's safetensors files: the kinds it writes and the metadata keys that name them.

Every file ganzip writes carries ``ganzip.format`` in its safetensors metadata:

* ``generator`` — a teacher trained by ``ganzip train`` (it records its architecture);
* ``student`` — a compressed student (``student.safetensors``: architecture, width, kept channels);
* ``checkpoint`` — a training checkpoint (student, discriminator, optimizers, RNG streams).
"""
from __future__ import annotations

import os

import torch
from safetensors import safe_open

from .errors import GanzipError

FORMAT_KEY = "ganzip.format"
FORMAT_VERSION_KEY = "ganzip.format_version"
VERSION_KEY = "ganzip.version"

GENERATOR = "generator"
STUDENT = "student"
CHECKPOINT = "checkpoint"
KINDS = (GENERATOR, STUDENT, CHECKPOINT)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The safetensors metadata of ``path`` (empty when it has none); raises what ``safe_open`` raises."""
    with safe_open(os.fspath(path), framework="pt") as f:
        return dict(f.metadata() or {})


def kind_of(metadata: dict[str, str] | None) -> str | None:
    """The ganzip kind recorded in ``metadata`` (one of :data:`KINDS`), or None for a foreign file."""
    value = (metadata or {}).get(FORMAT_KEY)
    return value if value in KINDS else None


def read(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of the safetensors file ``path``; a damaged file is a one-line `GanzipError`."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise GanzipError(f"{path} is not a readable safetensors file ({exc}); is it truncated or corrupt?") from exc
    return tensors, meta


def is_kind(path: str | os.PathLike, kind: str) -> bool:
    """Does the safetensors file ``path`` say it is a ganzip ``kind``? False for any other or unreadable file."""
    try:
        return kind_of(read_metadata(path)) == kind
    except Exception:
        return False

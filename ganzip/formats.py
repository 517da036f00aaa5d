"""ganzip's safetensors files: the kinds it writes and the metadata keys that name them.

Every file ganzip writes carries ``ganzip.format`` in its safetensors metadata:

* ``generator`` — a teacher trained by ``ganzip train`` (it records its architecture);
* ``student`` — a compressed student (``student.safetensors``: architecture, width, kept channels);
* ``checkpoint`` — a training checkpoint (student, discriminator, optimizers, RNG streams).
"""
from __future__ import annotations

import os

from safetensors import safe_open

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

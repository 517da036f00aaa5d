"""ganzip: compress pretrained image-translation GAN generators.

Public API (see docs/api.md):
    load_generator, build_student, load_student, compress, evaluate
"""
from __future__ import annotations

from ._version import __version__

__all__ = ["__version__", "load_generator", "build_student", "load_student", "save_student", "compress", "evaluate", "GanzipError"]

from .errors import GanzipError


def __getattr__(name):  # lazy: `import ganzip` stays cheap for the CLI
    if name == "load_generator":
        from .loading import load_generator
        return load_generator
    if name in ("build_student", "load_student", "save_student"):
        from . import student
        return getattr(student, name)
    if name == "compress":
        from .api import compress
        return compress
    if name == "evaluate":
        from .api import evaluate
        return evaluate
    raise AttributeError(f"module 'ganzip' has no attribute {name!r}")

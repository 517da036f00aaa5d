"""What code a file may make ganzip run: the rule of docs/security.md.

ganzip builds user architectures from `package.module:callable` names. A
name the user typed (`--arch` on the command line, `arch=` in Python) is the
user's choice. A name that a *file* supplies (a student's or generator file's
metadata, a batch manifest) is only a claim, and so are the options the file
passes with it. This module decides, before anything is imported, whether a
claim may be acted on, and checks the size of what a description would
allocate before it is allocated.

The rule, in order:

1. Nothing from the Python standard library is ever an architecture.
2. A name from a file is imported only when the user confirms it: by typing
   the same `--arch` (students, generator files), or with `--trust-code`
   (`trust_code=True`) for a manifest, which names many models at once.
3. What is called must be a class that subclasses `torch.nn.Module`. A factory
   function is called only when its name *and* all its options come from the
   user, or with `--trust-code`.
4. Options a file supplies for a confirmed name are shown in the confirmation
   error; for a factory they must be repeated with `--arch-opt` (or trusted).
"""
from __future__ import annotations

import importlib
import inspect
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch.nn as nn

from .errors import GanzipError

# A model described by a file is checked on the meta device before it is allocated.
DEFAULT_MAX_PARAMS = 500_000_000
MAX_PARAMS_ENV = "GANZIP_MAX_PARAMS"
_STDLIB = set(getattr(sys, "stdlib_module_names", ())) | {"builtins", "__main__", "__builtin__"}


@dataclass(frozen=True)
class Origin:
    """Where an architecture name and its options came from.

    `source` is "user" (typed on the command line or passed in code) or a
    description of the file ("student x.safetensors", "manifest m.toml:7").
    `user_opts` are the options the user typed; `trust_code` is the user's
    explicit `--trust-code`.
    """

    source: str = "user"
    user_opts: Mapping[str, Any] = field(default_factory=dict)
    trust_code: bool = False

    @property
    def from_file(self) -> bool:
        return self.source != "user"


USER = Origin()


def max_params() -> int:
    raw = os.environ.get(MAX_PARAMS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PARAMS
    try:
        value = int(float(raw))
    except ValueError:
        raise GanzipError(f"{MAX_PARAMS_ENV}={raw!r} is not a number: set it to a parameter count such as 2e9") from None
    if value < 1:
        raise GanzipError(f"{MAX_PARAMS_ENV}={raw!r} must be a positive parameter count")
    return value


def _fmt_opts(opts: Mapping[str, Any]) -> str:
    return " ".join(f"--arch-opt {k}={_fmt_value(v)}" for k, v in opts.items())


def _fmt_value(v: Any) -> str:
    text = v if isinstance(v, str) else repr(v)
    if isinstance(v, bool):
        text = "true" if v else "false"
    if isinstance(v, str) and (not text or any(c.isspace() or c in "'\"$`;&|<>" for c in text)):
        text = repr(v)
    return text


def check_name(arch: Any, origin: Origin = USER) -> tuple[str, str]:
    """Validate a `module:callable` name before anything is imported; return (module, attr)."""
    if not isinstance(arch, str) or not arch:
        raise GanzipError(f"the architecture name from {origin.source} must be a string, got {type(arch).__name__}")
    module_name, _, attr = arch.partition(":")
    if not module_name or not attr or not all(p.isidentifier() for p in module_name.split(".") + attr.split(".")):
        raise GanzipError(f"{arch!r} (from {origin.source}) is not package.module:callable")
    if module_name.split(".")[0] in _STDLIB:
        raise GanzipError(
            f"refusing --arch {arch} (from {origin.source}): a standard-library callable is never a generator; "
            "name a class that subclasses torch.nn.Module"
        )
    if any(part.startswith("_") for part in attr.split(".")):
        raise GanzipError(f"refusing --arch {arch} (from {origin.source}): private attributes are not architectures")
    return module_name, attr


def resolve(arch: str, opts: Mapping[str, Any], origin: Origin = USER) -> Any:
    """Import and return the callable named by `arch`, if the rule allows it; else raise."""
    module_name, attr = check_name(arch, origin)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise GanzipError(
            f"cannot import {module_name!r} for --arch {arch}: {exc.__class__.__name__}: {exc}. "
            "Check the spelling and that the package is installed or on PYTHONPATH"
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise GanzipError(f"{module_name!r} has no attribute {attr!r} (from --arch {arch})")
        obj = getattr(obj, part)
    if inspect.isclass(obj):
        if not issubclass(obj, nn.Module):
            raise GanzipError(f"--arch {arch} is a class but not a torch.nn.Module subclass: give a generator class or factory")
        return obj
    if not callable(obj):
        raise GanzipError(f"--arch {arch} is not callable: give a class or a function that returns an nn.Module")
    if getattr(obj, "__module__", None) and str(obj.__module__).split(".")[0] in _STDLIB:
        raise GanzipError(f"refusing --arch {arch}: it resolves to the standard library's {obj.__module__}.{getattr(obj, '__name__', '?')}")
    # A factory function: it may do anything, so its name and options must be the user's.
    if origin.trust_code:
        return obj
    file_opts = {k: v for k, v in opts.items() if k not in origin.user_opts or origin.user_opts[k] != v}
    if origin.from_file and file_opts:
        raise GanzipError(
            f"{origin.source} asks to call the factory function {arch} with options it supplies "
            f"({', '.join(f'{k}={v!r}' for k, v in file_opts.items())}); check them, then confirm with "
            f"{_fmt_opts(file_opts)}, or pass --trust-code if you trust the file"
        )
    return obj


def confirm(recorded: Any, given: str | None, opts: Mapping[str, Any], what: str, *, keyword: str = "--arch") -> None:
    """A file records `recorded`; it is acted on only when the user's `given` names the same architecture."""
    if not isinstance(recorded, str):
        raise GanzipError(f"{what} has damaged metadata: its architecture is a {type(recorded).__name__}, not a name")
    if ":" not in recorded or given == recorded:
        return
    shown = f" with options {dict(opts)}" if opts else ""
    flags = f"{keyword} {recorded}" + (f" {_fmt_opts(opts)}" if opts and keyword == "--arch" else "")
    raise GanzipError(
        f"{what} names {recorded}{shown}; loading it imports and runs that code: "
        f"check it, then pass {flags} to confirm"
    )


def check_opts(opts: Any, what: str) -> dict[str, Any]:
    """Options from a file must be a flat mapping of identifiers to JSON scalars or short lists."""
    if not isinstance(opts, Mapping):
        raise GanzipError(f"{what}: architecture options must be a table of key = value, got {type(opts).__name__}")
    out: dict[str, Any] = {}
    for k, v in opts.items():
        if not isinstance(k, str) or not k.isidentifier() or k.startswith("__"):
            raise GanzipError(f"{what}: {k!r} is not a valid architecture option name")
        if not _plain(v):
            raise GanzipError(f"{what}: option {k} must be a number, string, boolean or a short list of them")
        out[k] = v
    return out


def _plain(v: Any, depth: int = 0) -> bool:
    if v is None or isinstance(v, (bool, int, str)):
        return not isinstance(v, str) or len(v) <= 4096
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, (list, tuple)) and depth < 2 and len(v) <= 64:
        return all(_plain(x, depth + 1) for x in v)
    return False


def check_param_count(model: nn.Module, what: str) -> None:
    """Refuse a model (built on the meta device) whose parameter count exceeds the bound."""
    n = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    limit = max_params()
    if n > limit:
        raise GanzipError(
            f"{what} would allocate {n:,} parameters ({n * 4 / 2**30:.1f} GiB in float32), over the limit of {limit:,}: "
            f"check its options, or raise the limit with {MAX_PARAMS_ENV}={n}"
        )


def check_numel(shapes: Mapping[str, Any], what: str) -> None:
    """Validate recorded tensor shapes (a file's claim) and bound their total size."""
    total = 0
    for name, shape in shapes.items():
        if not isinstance(shape, (list, tuple)) or len(shape) > 8 or not all(
                isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31 for d in shape):
            raise GanzipError(f"{what} has damaged metadata: tensor {name} has shape {str(shape)[:60]}")
        total += math.prod(shape)
    limit = max_params()
    if total > limit:
        raise GanzipError(
            f"{what} describes {total:,} parameters, over the limit of {limit:,}: "
            f"raise it with {MAX_PARAMS_ENV}={total} if the file is genuine"
        )

"""`build(arch, opts)`: any architecture name ganzip accepts, built into an `nn.Module`.

A name is a zoo name (``ganzip.models.list_models()``), ``package.module:callable``
(a class or factory, imported only as far as `ganzip.trust` allows), or
``spandrel/ID`` (an architecture spandrel's registry recognised, see
`ganzip.autodetect`).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn

from .. import autodetect, trust
from ..errors import GanzipError
from .registry import create

SPANDREL_PREFIX = autodetect.PREFIX  # "spandrel/"


def build(arch: str, opts: Mapping[str, Any] | None = None, origin: trust.Origin = trust.USER) -> nn.Module:
    """Build an architecture: a zoo name, `package.module:callable` (class or factory), or `spandrel/ID`.

    `origin` says where the name and options came from (see `ganzip.trust`):
    a name a file supplies is acted on only as far as the user confirmed it.
    ``spandrel/ID`` names (recorded by ``--arch auto``) build only classes of
    spandrel's own registry (``ganzip.autodetect``), never an import a file names.
    """
    if not isinstance(arch, str) or not arch:
        raise GanzipError(f"the architecture from {origin.source} must be a name, got {type(arch).__name__}")
    opts = dict(opts or {}) if not origin.from_file else trust.check_opts(opts or {}, origin.source)
    if arch.startswith(SPANDREL_PREFIX):
        return _build_spandrel(arch, opts, origin)
    if ":" not in arch:
        if origin.from_file:  # a file describes it: size it on the meta device first
            with torch.device("meta"):
                trust.check_param_count(create(arch, **opts), f"the {arch} that {origin.source} describes")
        return create(arch, **opts)
    return _build_callable(arch, opts, origin)


def _build_spandrel(arch: str, opts: dict, origin: trust.Origin) -> nn.Module:
    if origin.from_file:  # a file describes it: size it on the meta device first
        try:
            with torch.device("meta"):
                sized = autodetect.build(arch, opts)
        except GanzipError:
            raise
        except Exception:
            sized = None  # not every class builds on the meta device; it is built for real below
        if sized is not None:
            trust.check_param_count(sized, f"the {arch} that {origin.source} describes")
    return autodetect.build(arch, opts)


def _build_callable(arch: str, opts: dict, origin: trust.Origin) -> nn.Module:
    obj = trust.resolve(arch, opts, origin)
    if origin.from_file:
        try:
            with torch.device("meta"):
                sized = obj(**opts)
        except Exception:
            sized = None  # not every class builds on the meta device; it is built for real below
        if isinstance(sized, nn.Module):
            trust.check_param_count(sized, f"the {arch} that {origin.source} describes")
    try:
        model = obj(**opts)
    except TypeError as exc:
        raise GanzipError(f"calling {arch} with options {opts} failed: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise GanzipError(f"--arch {arch} returned {type(model).__name__}, not a torch.nn.Module: give a module class or factory")
    model.ganzip_spec = {"arch": arch, "opts": opts}
    return model

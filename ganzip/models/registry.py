"""Model registry: `@register_model` names a factory, `create(name, **opts)` builds it.

Every model built through `create` carries `model.ganzip_spec = {"arch": name, "opts": {...}}`
so a student can record, without pickle, which architecture it was cut from.
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch.nn as nn

from ..errors import GanzipError

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_KINDS: dict[str, str] = {}


def register_model(name: str, kind: str = "generator"):
    def deco(fn: Callable[..., nn.Module]):
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = fn
        _KINDS[name] = kind
        return fn

    return deco


def list_models(kind: str | None = None) -> list[str]:
    return sorted(n for n in _MODELS if kind is None or _KINDS[n] == kind)


def model_options(name: str) -> dict[str, object]:
    """The keyword options a zoo model accepts, with their defaults."""
    fn = _get(name)
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.default is not inspect.Parameter.empty
    }


def _get(name: str) -> Callable[..., nn.Module]:
    try:
        return _MODELS[name]
    except KeyError:
        raise GanzipError(
            f"unknown architecture {name!r}: choose one of {', '.join(list_models())} "
            "or give an importable factory as package.module:callable"
        ) from None


def create(name: str, **opts) -> nn.Module:
    """Build zoo model `name` with options `opts` (see `model_options(name)`)."""
    fn = _get(name)
    valid = model_options(name)
    unknown = sorted(set(opts) - set(valid))
    if unknown:
        raise GanzipError(
            f"{name} has no option {', '.join(unknown)}: valid options are "
            + ", ".join(f"{k} (default {v!r})" for k, v in valid.items())
        )
    for key, value in opts.items():
        _check_option(name, key, value, valid[key])
    model = fn(**opts)
    model.ganzip_spec = {"arch": name, "opts": dict(opts)}
    return model


# Channel and layer counts above this are never a generator someone trained.
_MAX_INT_OPTION = 65536


def _check_option(name: str, key: str, value, default) -> None:
    """Zoo options are typed by their defaults: counts are whole numbers >= 1, flags are booleans."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise GanzipError(f"{name} option {key} must be true or false, got {value!r}")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise GanzipError(f"{name} option {key} must be a whole number, got {value!r} (for example {key}={default})")
        if not 1 <= value <= _MAX_INT_OPTION:
            raise GanzipError(f"{name} option {key}={value} is out of range: use a whole number from 1 to {_MAX_INT_OPTION} "
                              f"(default {default})")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= float(value) < 1.0):
            raise GanzipError(f"{name} option {key} must be a number in [0, 1), got {value!r}")
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise GanzipError(f"{name} option {key} must be a name such as {default!r}, got {value!r}")

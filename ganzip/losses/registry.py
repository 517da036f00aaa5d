"""The loss-term registry: what a recipe may name as a student loss term, and how each is built.

A term is one :class:`TermSpec`: its name (the recipe section and the
``train_log.csv`` column), the dataclass of its recipe section (with a float
``weight``), a builder ``build(section, ctx) -> nn.Module``, whether it reads
the teacher's output, and when the data rules it out. Its module's
``forward`` takes one :class:`TermInputs` and returns the *unweighted* loss;
the training loop multiplies by the section's ``weight``.

Adding a term is one module plus one ``register_term(TermSpec(...))``; a
recipe can then name its section (``[my_term] weight = 1.0``). Terms run in
registration order (the float sum and the log's columns follow it); the
built-in ones are registered by ``ganzip.losses.builtin``.

A term module may own trainable parameters (e.g. learned 1x1 maps of a
feature term): they are optimized with the student (a second parameter group
of its Adam), checkpointed under ``terms.<name>.`` and restored on resume,
and never written into ``student.safetensors``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Mapping

import torch
from torch import nn

from .. import config
from ..errors import GanzipError


@dataclass(frozen=True)
class DataFacts:
    """What the training data offers, as a term's ``unavailable`` sees it."""

    has_targets: bool  # real target-domain images exist (a B domain or --target)
    paired: bool  # they are aligned ground truth for the inputs
    same_shape: bool = True  # the generator's output has its input's channels and size
    batch_size: int = 1  # images per batch and process (train.batch_size)


@dataclass(frozen=True)
class TermContext:
    """What a term's builder may read: the recipe, the loss plan, the output side, offline, the device, the taps."""

    cfg: Any  # ganzip.config.RecipeConfig
    plan: Any  # ganzip.training.plan.LossPlan
    out_side: int | None  # side of the generator's outputs (None: not known before the first step)
    offline: bool
    device: torch.device | None = None
    taps: tuple = ()  # the resolved feature taps (ganzip.features.Tap) when an active term uses features


@dataclass
class TermInputs:
    """What one step hands every term (``student_out``/``teacher_out`` in float32)."""

    x: torch.Tensor  # the input batch
    student_out: torch.Tensor
    teacher_out: torch.Tensor | None  # None when no active term reads the teacher
    real: torch.Tensor | None  # real target images (ground truth for paired data), or None
    student: nn.Module  # for terms that run the student again (identity)
    autocast: Callable[[], ContextManager]  # the step's autocast context, for such extra runs
    features: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None  # layer -> (student, teacher)


def _always_available(section, facts: DataFacts) -> str | None:
    return None


@dataclass(frozen=True)
class TermSpec:
    """One registered loss term (see the module docstring)."""

    name: str
    config: type
    build: Callable[[Any, TermContext], nn.Module]
    needs_teacher: bool = False
    unavailable: Callable[[Any, DataFacts], str | None] = _always_available
    uses_features: bool = False


_TERMS: dict[str, TermSpec] = {}
_BUILTIN: set[str] = set()


def register_term(spec: TermSpec, *, builtin: bool = False) -> TermSpec:
    """Register ``spec`` (after the terms already registered); a recipe may then name ``spec.name``.

    Registering a name again replaces that term in place; ganzip's own terms cannot be replaced.
    """
    if not isinstance(spec, TermSpec):
        raise GanzipError(f"register_term takes a TermSpec, got {type(spec).__name__}")
    if spec.name in _BUILTIN:
        raise GanzipError(f"loss term {spec.name!r} is ganzip's own: choose another name")
    fields = {f.name: f for f in dataclasses.fields(spec.config)} if dataclasses.is_dataclass(spec.config) else {}
    if "weight" not in fields:
        raise GanzipError(f"the section of loss term {spec.name!r} must be a dataclass with a float `weight`")
    config.register_section(spec.name, spec.config)
    _TERMS[spec.name] = spec
    if builtin:
        _BUILTIN.add(spec.name)
    return spec


def unregister_term(name: str) -> None:
    """Remove a term registered by :func:`register_term` (and its recipe section); ganzip's own stay."""
    if name in _BUILTIN:
        raise GanzipError(f"loss term {name!r} is ganzip's own and cannot be removed")
    if _TERMS.pop(name, None) is not None:
        config.unregister_section(name)


def get_term(name: str) -> TermSpec:
    """The term registered as ``name``."""
    try:
        return _TERMS[name]
    except KeyError:
        raise GanzipError(f"unknown loss term {name!r}: registered terms are {', '.join(_TERMS)}") from None


def terms() -> list[TermSpec]:
    """Every registered term, in registration order (the order a step computes them in)."""
    return list(_TERMS.values())


__all__ = ["DataFacts", "TermContext", "TermInputs", "TermSpec", "get_term", "register_term", "terms",
           "unregister_term"]

"""The loss terms of ganzip, each a small ``nn.Module`` naming its spec equation.

* :class:`CRDLoss` — content relationship distillation (spec §2), built on the RKD
  relational core :func:`relational_loss` / :class:`RelationalLoss` (spec §1);
  :class:`RKDInstanceLoss` relates the images of a batch (paper Table 3).
* :class:`PerceptualLoss` — VGG-16 style + feature loss (spec §4).
* :class:`GANLoss` (lsgan / hinge / vanilla) and :func:`frozen` for the student's
  adversarial term against the online discriminator (spec §3).
* :class:`PixelLoss` — L1 / L2.

Recipes name loss *terms* through ``ganzip.losses.registry`` (:class:`TermSpec`,
:func:`register_term`; ganzip's own terms are in ``ganzip.losses.builtin``). The
plain module factories are also named in a small registry::

    from ganzip.losses import build_loss
    crd = build_loss("crd", patch_size=32)
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from ..errors import GanzipError
from .adversarial import GAN_MODES, GANLoss, frozen
from .crd import GRANULARITIES, CRDLoss, RelationalLoss, RKDInstanceLoss, crd_slices, relational_loss
from .perceptual import PerceptualLoss, gram_matrix
from .pixel import PixelLoss
from .registry import DataFacts, TermContext, TermInputs, TermSpec, get_term, register_term, terms, unregister_term
from .builtin import crd_patch_size
from . import feature_terms  # noqa: F401  (registers gc_feature, kernel_alignment and [features] after the built-ins)

_LOSSES: dict[str, Callable[..., nn.Module]] = {}


def register_loss(name: str):
    """Decorator registering a loss factory (usually an ``nn.Module`` class) under ``name``.

    Example::

        @register_loss("my_l1")
        class MyL1(nn.Module): ...
    """

    def deco(factory):
        _LOSSES[name] = factory
        return factory

    return deco


def build_loss(name: str, **kwargs) -> nn.Module:
    """Build the loss registered as ``name`` with keyword arguments ``kwargs``."""
    try:
        factory = _LOSSES[name]
    except KeyError:
        raise GanzipError(f"unknown loss {name!r}: registered losses are {', '.join(list_losses())}") from None
    return factory(**kwargs)


def list_losses() -> list[str]:
    """Names of the registered losses, sorted."""
    return sorted(_LOSSES)


register_loss("crd")(CRDLoss)
register_loss("rkd_instance")(RKDInstanceLoss)
register_loss("relational")(RelationalLoss)
register_loss("perceptual")(PerceptualLoss)
register_loss("pixel")(PixelLoss)
register_loss("gan")(GANLoss)

__all__ = [
    "CRDLoss", "RelationalLoss", "RKDInstanceLoss", "relational_loss", "crd_slices", "GRANULARITIES",
    "PerceptualLoss", "gram_matrix", "GANLoss", "GAN_MODES", "frozen", "PixelLoss",
    "register_loss", "build_loss", "list_losses",
    "DataFacts", "TermContext", "TermInputs", "TermSpec", "get_term", "register_term", "terms", "unregister_term",
    "crd_patch_size",
]

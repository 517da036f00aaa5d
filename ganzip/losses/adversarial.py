"""GAN losses and the frozen-discriminator context of the online teacher D (spec §3)."""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import GanzipError

GAN_MODES = ("lsgan", "hinge", "vanilla")


class GANLoss(nn.Module):
    """Adversarial loss on discriminator outputs (spec §3: LSGAN unpaired, hinge paired).

    ``loss(pred, target_is_real, for_discriminator=True)``:

    * ``lsgan``: mean squared error to 1 (real) or 0 (fake);
    * ``vanilla``: binary cross-entropy with logits against 1 or 0;
    * ``hinge``: for D, ``mean(relu(1 - pred))`` on real and ``mean(relu(1 + pred))`` on
      fake; for the generator (``for_discriminator=False``), ``-mean(pred)``, which
      only makes sense with ``target_is_real=True``.

    ``pred`` may be a tensor or a list of tensors (multi-scale D); a list gives the mean
    of the per-tensor losses. For the student's term ``gan_loss(D(S(x)), real)``, wrap
    the call in :func:`frozen` so D's parameters get no gradient.
    """

    def __init__(self, mode: str = "lsgan"):
        super().__init__()
        if mode not in GAN_MODES:
            raise GanzipError(f"unknown GAN loss mode {mode!r}: use one of {', '.join(GAN_MODES)}")
        self.mode = mode

    def _single(self, pred: torch.Tensor, target_is_real: bool, for_discriminator: bool) -> torch.Tensor:
        if self.mode == "hinge":
            if for_discriminator:
                return F.relu(1.0 - pred).mean() if target_is_real else F.relu(1.0 + pred).mean()
            if not target_is_real:
                raise GanzipError("the hinge generator loss is -mean(D(G(x))): call it with target_is_real=True")
            return -pred.mean()
        target = torch.full_like(pred, 1.0 if target_is_real else 0.0)
        if self.mode == "lsgan":
            return F.mse_loss(pred, target)
        return F.binary_cross_entropy_with_logits(pred, target)

    def forward(self, pred: torch.Tensor | Sequence[torch.Tensor], target_is_real: bool,
                for_discriminator: bool = True) -> torch.Tensor:
        if isinstance(pred, (list, tuple)):
            if not pred:
                raise GanzipError("GANLoss got an empty list of discriminator outputs")
            losses = [self._single(p, target_is_real, for_discriminator) for p in pred]
            return torch.stack(losses).mean()
        return self._single(pred, target_is_real, for_discriminator)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Freeze the parameters of ``modules`` inside the block (spec §3 "updating-freezing").

    Parameters get ``requires_grad=False`` on entry and their previous flags back on
    exit, even after an exception. Gradients still flow *through* the modules to their
    inputs, so ``with frozen(D): loss = gan(D(student(x)), True, for_discriminator=False)``
    trains the student against D without touching D's ``.grad``.
    """
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


__all__ = ["GANLoss", "frozen", "GAN_MODES"]

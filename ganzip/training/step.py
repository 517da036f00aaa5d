"""One distillation step: the student's loss terms (from the registry) and the discriminator's step.

What a step does (spec sections 3 and 5; ``docs/training.md``):

* student loss ``L_S = w_adv * gan(D(S(x)), real) + lambda_CRD * L_CRD
  + lambda_per * L_per`` (+ the baselines' terms), with D frozen: every
  active term in registration order, each module giving its unweighted
  loss and the step multiplying by its weight;
* discriminator loss ``0.5 * (gan(D(y), real) + mean_f gan(D(f), fake))``
  over the recipe's fake sources ``f`` (teacher outputs for CRD).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import torch
import torch.nn as nn

from ..config import RecipeConfig
from ..errors import GanzipError
from ..features import FeatureTaps, Tap
from ..losses.adversarial import GANLoss, frozen
from ..losses.registry import TermContext, TermInputs, get_term, terms
from .plan import LossPlan


def autocast(device: torch.device, amp: str):
    """bf16 autocast where the recipe asks for it (``train.amp``; auto: on CUDA), else a no-op context."""
    if amp == "bf16" or (amp == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def flag(value: str, device: torch.device) -> bool:
    """An on/off/auto setting that is on by default on CUDA."""
    return value == "on" or (value == "auto" and device.type == "cuda")


def deterministic(value: str, device: torch.device) -> bool:
    """``train.deterministic``: on by default on the CPU."""
    return value == "on" or (value == "auto" and device.type == "cpu")


def cond(x: torch.Tensor, y: torch.Tensor, conditional: bool) -> torch.Tensor:
    """What D judges: ``y``, or ``cat(x, y)`` for a conditional D."""
    if not conditional:
        return y
    if x.shape[-2:] != y.shape[-2:]:  # super-resolution: D judges the input enlarged to the output's size
        x = torch.nn.functional.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=False)
    return torch.cat([x, y], dim=1)


class TermModules(nn.Module):
    """The plan's loss modules, one attribute per active term (built once, moved to the device).

    ``gan`` is D's loss when the discriminator trains. Terms whose modules
    own trainable parameters list them in :meth:`trainable`.
    """

    def __init__(self, cfg: RecipeConfig, plan: LossPlan, offline: bool, out_side: int | None = None,
                 device: torch.device | None = None, taps: Sequence[Tap] = ()):
        super().__init__()
        ctx = TermContext(cfg=cfg, plan=plan, out_side=out_side, offline=offline, device=device, taps=tuple(taps))
        self.order = [spec.name for spec in terms() if spec.name in plan.weights]
        self.sized = out_side is not None  # else: sized from the first outputs
        self.asset_records: list[dict] = []
        for name in self.order:
            if hasattr(nn.Module, name) or name in ("order", "sized", "asset_records", "gan", "frozen"):
                raise GanzipError(f"a loss term cannot be called {name!r}: choose another name")
            module = get_term(name).build(cfg.section(name), ctx)
            setattr(self, name, module)
            self.asset_records += list(getattr(module, "asset_records", []))
        if plan.use_discriminator:
            self.gan = GANLoss(cfg.adversarial.mode)
            self.frozen = frozen

    def trainable(self) -> dict[str, list[nn.Parameter]]:
        """Term name -> its parameters that learn (none for ganzip's own terms)."""
        found = {name: [p for p in getattr(self, name).parameters() if p.requires_grad] for name in self.order}
        return {name: ps for name, ps in found.items() if ps}

    def fit_output_side(self, out_side: int) -> None:
        """Let terms sized by the output (CRD's patches) size themselves from the first outputs."""
        for name in self.order:
            fit = getattr(getattr(self, name), "fit_output_side", None)
            if fit is not None:
                fit(out_side)
        self.sized = True


def student_terms(losses: TermModules, plan: LossPlan, student: nn.Module, teacher: nn.Module, D: nn.Module | None,
                  x: torch.Tensor, real: torch.Tensor | None, amp: Callable, taps: FeatureTaps | None = None):
    """The student's weighted terms for batch ``x``: ``(terms, student_out, teacher_out)``.

    With ``taps`` the two forwards record the tapped features, which reach the terms as ``TermInputs.features``.
    """
    out: dict[str, torch.Tensor] = {}
    recording = taps.recording() if taps is not None else contextlib.nullcontext()
    with recording, amp():
        # a copy each: some generators (RCAN) scale their input in place
        s_out = student(x.clone())
        t_out = None
        if plan.needs_teacher:
            with torch.no_grad():
                t_out = teacher(x.clone())
    s32 = s_out.float()
    t32 = t_out.float() if t_out is not None else None
    if not losses.sized:  # a DataBundle built by hand does not say the output side
        losses.fit_output_side(int(s32.shape[-1]))
    inputs = TermInputs(x=x, student_out=s32, teacher_out=t32, real=real, student=student, autocast=amp,
                        features=taps.pairs() if taps is not None else None)
    for name in losses.order:
        weight = plan.weights[name]
        if name == "adversarial":  # the student against D, frozen: D's parameters get no gradient
            with losses.frozen(D), amp():
                pred = D(cond(x, s_out, plan.conditional))
            out[name] = weight * losses.adversarial(pred.float(), True, for_discriminator=False)
        else:
            out[name] = weight * getattr(losses, name)(inputs)
    return out, s_out, t_out


def discriminator_terms(losses: TermModules, plan: LossPlan, D: nn.Module, x: torch.Tensor, real: torch.Tensor,
                        s_out: torch.Tensor, t_out: torch.Tensor | None, amp: Callable):
    """D's terms (real targets vs the recipe's fakes; never a gradient to the student) and its loss."""
    d_terms: dict[str, torch.Tensor] = {}
    fakes = {"teacher": t_out, "student": s_out}
    with amp():
        pred_real = D(cond(x, real, plan.conditional))
        d_terms["d_real"] = losses.gan(pred_real.float(), True, for_discriminator=True)
        for src in plan.d_fakes:
            pred_fake = D(cond(x, fakes[src].detach(), plan.conditional))
            d_terms[f"d_fake_{src}"] = losses.gan(pred_fake.float(), False, for_discriminator=True)
    fake_mean = sum(d_terms[f"d_fake_{s}"] for s in plan.d_fakes) / len(plan.d_fakes)
    return d_terms, 0.5 * (d_terms["d_real"] + fake_mean)


__all__ = ["TermModules", "autocast", "cond", "deterministic", "discriminator_terms", "flag", "student_terms"]

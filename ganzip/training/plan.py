"""The loss plan: which registered loss terms a run uses, given its recipe and what the data offers.

Every term comes from ``ganzip.losses.registry``: one that is on (weight > 0)
and available on this data gets its weight in :attr:`LossPlan.weights`,
listed in the recipe's section order; the adversarial term joins last, once
the discriminator's settings allow it. Everything else is in
:attr:`LossPlan.disabled` with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import config
from ..config import RecipeConfig
from ..errors import GanzipError
from ..loading import check_size_value
from ..losses.builtin import CRD_REFERENCE_PATCH, CRD_REFERENCE_SIDE, crd_patch_size
from ..losses.registry import DataFacts, get_term, terms


@dataclass
class LossPlan:
    """Which loss terms a run uses, given its recipe and what the data offers."""

    weights: dict[str, float]  # student terms that are on: name -> weight
    d_fakes: list[str]  # what D is shown as fake; empty: D takes no steps
    use_discriminator: bool
    conditional: bool
    needs_teacher: bool
    warnings: list[str]
    disabled: dict[str, str]  # term -> why it is off

    @property
    def adversarial(self) -> bool:
        return "adversarial" in self.weights

    def describe(self) -> dict:
        return {"student": dict(self.weights), "discriminator_fakes": list(self.d_fakes),
                "disabled": dict(self.disabled)}


def _in_section_order(names):
    order = list(config.SECTIONS)
    return sorted(names, key=order.index)


def plan_losses(cfg: RecipeConfig, *, has_targets: bool, paired: bool, same_shape: bool = True) -> LossPlan:
    """Decide the active loss terms from the recipe and what the data offers.

    ``has_targets``: real target-domain images exist (a B domain or
    ``--target``); ``paired``: they are aligned ground truth for the inputs;
    ``same_shape``: the generator's output has its input's channels and size
    (not so for super-resolution), which the identity term needs.
    """
    weights: dict[str, float] = {}
    disabled: dict[str, str] = {}
    facts = DataFacts(has_targets=has_targets, paired=paired, same_shape=same_shape,
                      batch_size=cfg.train.batch_size)
    for name in _in_section_order(spec.name for spec in terms() if spec.name != "adversarial"):
        section = cfg.section(name)
        why = get_term(name).unavailable(section, facts) if section.weight > 0 else "weight 0"
        if why is None:
            weights[name] = section.weight
        else:
            disabled[name] = why
    d_fakes, use_d, warn = _plan_discriminator(cfg, weights, disabled, has_targets=has_targets, paired=paired)
    if not weights:
        raise GanzipError(
            f"recipe {cfg.name!r} leaves the student with no loss term on this data "
            f"(off: {', '.join(f'{k} ({v})' for k, v in disabled.items())})"
        )
    needs_teacher = any(get_term(k).needs_teacher for k in weights) or "teacher" in d_fakes
    return LossPlan(weights, d_fakes, use_d, cfg.discriminator.conditional, needs_teacher, warn, disabled)


def _plan_discriminator(cfg: RecipeConfig, weights: dict, disabled: dict, *, has_targets: bool,
                        paired: bool) -> tuple[list[str], bool, list[str]]:
    """The online D's part of the plan: its fakes, whether it trains, and the adversarial term (added to ``weights``)."""
    d = cfg.discriminator
    warn: list[str] = []
    d_fakes = list(d.fakes) if d.enabled else []
    wants_adv = d.enabled and cfg.adversarial.weight > 0
    use_d = d.enabled and (wants_adv or bool(d_fakes))
    if not d.enabled:
        disabled["adversarial"] = "discriminator disabled"
    elif cfg.adversarial.weight <= 0:
        disabled["adversarial"] = "weight 0"
    if use_d and not has_targets:
        if d.fallback == "error":
            raise GanzipError(
                f"recipe {cfg.name!r} needs real target images for its discriminator: give --target DIR "
                "or data with a B domain (trainA/trainB, or A|B pairs)"
            )
        warn.append(
            "no target images (no --target and no B domain): the discriminator has no real data, so the "
            "adversarial term is disabled (discriminator.fallback = \"disable\", like the crd-no-d ablation)"
        )
        disabled["adversarial"] = "no target images (fallback: disable)"
        use_d, wants_adv, d_fakes = False, False, []
    if use_d and d.conditional and not paired:
        raise GanzipError(
            "discriminator.conditional = true needs aligned A|B pairs (it judges input and output together): "
            "use paired data or --set discriminator.conditional=false"
        )
    if use_d and wants_adv and not d_fakes:
        raise GanzipError(
            "the student gets an adversarial term but discriminator.fakes is empty, so D would never learn: "
            "set discriminator.fakes=[\"teacher\"] or adversarial.weight=0"
        )
    if use_d and wants_adv:
        weights["adversarial"] = cfg.adversarial.weight
    if use_d and not wants_adv:
        warn.append("the discriminator trains but the student has no adversarial term: D is unused")
    return (d_fakes if use_d else []), use_d, warn


def check_size(cfg: RecipeConfig, out_side: int | None = None) -> None:
    """The image size must be usable and the output (side ``out_side``, default ``train.size``) hold whole CRD patches."""
    check_size_value(cfg.train.size)
    if not (cfg.crd.weight > 0 and cfg.crd.patches):
        return
    size = cfg.train.size
    out_side = int(out_side or size)
    k = crd_patch_size(cfg, out_side)
    what = f"--size {size}" if out_side == size else f"the output side {out_side} (--size {size} input)"
    if cfg.crd.patch_size == 0 and out_side * CRD_REFERENCE_PATCH % CRD_REFERENCE_SIDE:
        raise GanzipError(
            f"{what} is not a multiple of 8, so the CRD patch grid of the recipe (8 x 8 patches, k = 32 at 256 px) "
            f"does not fit: choose --size so that the output side is a multiple of 8, or --set crd.patch_size=N "
            f"with N dividing {out_side} (or crd.patches=false)"
        )
    if out_side % k:
        raise GanzipError(
            f"{what} is not divisible by the CRD patch size {k}: choose --size so that the output side is a "
            f"multiple of {k}, or --set crd.patch_size=N with N dividing {out_side} (or crd.patches=false)"
        )
    if k > out_side:
        raise GanzipError(f"crd.patch_size {k} is larger than {what}: use --set crd.patch_size=N with N <= {out_side}")


__all__ = ["LossPlan", "check_size", "crd_patch_size", "plan_losses"]

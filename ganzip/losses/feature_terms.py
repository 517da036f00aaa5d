"""The feature-level loss terms as registry entries, and the recipe's ``[features]`` section.

* ``[gc_feature]``: GAN Compression's mapped feature L2 (:class:`GCFeatureLoss`);
  its 1x1 maps are parameters of the term, so they train with the student,
  live in the checkpoint under ``terms.gc_feature.`` and never in the student.
* ``[kernel_alignment]``: CAT's kernel alignment (:class:`KernelAlignmentLoss`).
* ``[features]``: which layers are tapped (``layers``, default ``["auto"]``,
  see ``ganzip.features``) and at most how many ``"auto"`` keeps.

Both terms read ``TermInputs.features``; the training loop registers the taps
only when an active term has ``uses_features`` (``TermContext.taps`` holds
the resolved :class:`ganzip.features.Tap` list at build time).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .. import config
from ..errors import GanzipError
from ..features import AUTO, MAX_TAPS
from .feature import KA_OVER, GCFeatureLoss, KernelAlignmentLoss
from .registry import DataFacts, TermContext, TermInputs, TermSpec, register_term

GC_MAP_SEED_OFFSET = 11  # the maps' private generator: train.seed + 11 (D uses + 7)


@dataclass
class GCFeatureConfig:
    """GAN Compression's distillation ``sum_t mean((f_t(S_t) - T_t)^2)``; weight = lambda_distill."""

    weight: float = 0.0


@dataclass
class KernelAlignmentConfig:
    """CAT's ``sum_t (1 - KA(S_t, T_t))``; weight = lambda_distill. ``over``: positions | batch."""

    weight: float = 0.0
    over: str = "positions"


@dataclass
class FeaturesConfig:
    """The feature taps: module names (the same in teacher and student), or ``["auto"]``."""

    layers: list[str] = field(default_factory=lambda: [AUTO])
    max_taps: int = MAX_TAPS  # how many layers "auto" keeps at most


def _features(inputs: TermInputs, name: str):
    if inputs.features is None:
        raise GanzipError(f"{name}: the step recorded no feature taps (teacher and student must both run)")
    return inputs.features


def _taps(ctx: TermContext, name: str):
    taps = getattr(ctx, "taps", None)
    if not taps:
        raise GanzipError(f"{name} needs feature taps, and none were resolved for this run")
    return taps


class GCFeatureTerm(GCFeatureLoss):
    """GAN Compression's feature term on the step's taps."""

    def forward(self, inputs: TermInputs):
        return super().forward(_features(inputs, "gc_feature"))


class KernelAlignmentTerm(KernelAlignmentLoss):
    """CAT's kernel-alignment term on the step's taps."""

    def forward(self, inputs: TermInputs):
        return super().forward(_features(inputs, "kernel_alignment"))


def _build_gc(section: GCFeatureConfig, ctx: TermContext) -> GCFeatureTerm:
    taps = _taps(ctx, "gc_feature")
    return GCFeatureTerm([t.name for t in taps], [(t.student[0], t.teacher[0]) for t in taps],
                         seed=ctx.cfg.train.seed + GC_MAP_SEED_OFFSET)


def _build_ka(section: KernelAlignmentConfig, ctx: TermContext) -> KernelAlignmentTerm:
    return KernelAlignmentTerm([t.name for t in _taps(ctx, "kernel_alignment")], over=section.over)


def _ka_unavailable(section: KernelAlignmentConfig, facts: DataFacts) -> str | None:
    if section.over not in KA_OVER:
        raise GanzipError(f"kernel_alignment.over = {section.over!r} is not one of: {', '.join(KA_OVER)}")
    if section.over == "batch" and facts.batch_size < 2:
        raise GanzipError(
            "kernel_alignment.over = \"batch\" relates the images of a batch and is constant at batch size 1: "
            "use --batch-size 2 or more, or kernel_alignment.over=positions")
    return None


def check_features_section(section: FeaturesConfig) -> None:
    """Refuse an empty ``layers`` list or a ``max_taps`` below 1 (before any model is loaded)."""
    if not section.layers:
        raise GanzipError('features.layers is empty: name modules, or use "auto"')
    if section.max_taps < 1:
        raise GanzipError("features.max_taps must be >= 1")


config.register_section("features", FeaturesConfig)
register_term(TermSpec("gc_feature", GCFeatureConfig, _build_gc, needs_teacher=True, uses_features=True),
              builtin=True)
register_term(TermSpec("kernel_alignment", KernelAlignmentConfig, _build_ka, needs_teacher=True,
                       unavailable=_ka_unavailable, uses_features=True), builtin=True)

__all__ = ["FeaturesConfig", "GCFeatureConfig", "GCFeatureTerm", "KernelAlignmentConfig", "KernelAlignmentTerm",
           "check_features_section"]

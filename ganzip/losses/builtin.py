"""ganzip's own loss terms as registry entries: each term's section, builder and availability.

Registration order is the order a step computes the terms in (the float sum
and the columns of ``train_log.csv`` follow it): adversarial, crd, rkd,
perceptual, kd_pixel, ground_truth, identity. The adversarial term is listed
here for its section and its place; the training step runs it itself
(``ganzip.training.step``), since it needs the discriminator.
"""
from __future__ import annotations

from .. import assets
from ..config import (AdversarialConfig, CRDConfig, GroundTruthConfig, IdentityConfig, KDPixelConfig,
                      PerceptualConfig, RKDConfig)
from ..errors import AssetMissingError, GanzipError
from .adversarial import GANLoss
from .crd import CRDLoss, RKDInstanceLoss
from .perceptual import PerceptualLoss
from .pixel import PixelLoss
from .registry import DataFacts, TermContext, TermInputs, TermSpec, register_term

CRD_REFERENCE_SIDE = 256  # the paper's k = 32 refers to 256-px outputs: an 8 x 8 grid of patches
CRD_REFERENCE_PATCH = 32


def crd_patch_size(cfg, out_side: int | None = None) -> int:
    """The CRD patch side k in output pixels for outputs of side ``out_side`` (default: ``train.size``).

    ``crd.patch_size = 0`` (the recipes' default) keeps the paper's grid:
    k = 32 at a 256-px output, scaled with the output side, k = out_side / 8
    (8 at 64 px, 16 at 128, 64 at 512). A positive ``crd.patch_size`` is k in
    output pixels, whatever the size.
    """
    return _patch_side(cfg.crd.patch_size, int(out_side or cfg.train.size))


def _patch_side(fixed: int, out_side: int) -> int:
    if fixed > 0:
        return fixed
    return max(1, out_side * CRD_REFERENCE_PATCH // CRD_REFERENCE_SIDE)


# ---------------------------------------------------------------- term modules (forward takes TermInputs)


class CRDTerm(CRDLoss):
    """CRD between the student's and the teacher's outputs (spec section 2)."""

    def __init__(self, section: CRDConfig, patch_size: int):
        super().__init__(patch_size=patch_size, rows=section.rows, columns=section.columns, patches=section.patches,
                         distance_weight=section.distance, angle_weight=section.angle, precision=section.precision)
        self.fixed_patch = section.patch_size

    def fit_output_side(self, out_side: int) -> None:
        """Size the patches from the first outputs (data built by hand does not say their side)."""
        self.patch_size = _patch_side(self.fixed_patch, out_side)

    def forward(self, inputs: TermInputs):
        return super().forward(inputs.student_out, inputs.teacher_out)


class RKDTerm(RKDInstanceLoss):
    """Instance-level relational KD across the images of a batch."""

    def forward(self, inputs: TermInputs):
        return super().forward(inputs.student_out, inputs.teacher_out)


class PerceptualTerm(PerceptualLoss):
    """VGG-16 style + feature loss to the teacher's outputs (spec section 4); records its weights file."""

    def __init__(self, section: PerceptualConfig, offline: bool):
        try:
            super().__init__(weights_path=section.weights or None, offline=offline, style_weight=section.style,
                             feature_weight=section.feature)
        except AssetMissingError as exc:
            if "crd-novgg" in str(exc):
                raise
            raise AssetMissingError(f"{exc}; or train without VGG-16: --recipe crd-novgg") from None
        weights_file = getattr(self, "weights_file", None)
        self.asset_records = [] if weights_file is None else [assets.asset_record("vgg16", weights_file)]

    def forward(self, inputs: TermInputs):
        return super().forward(inputs.student_out, inputs.teacher_out)


class TeacherPixelTerm(PixelLoss):
    """Pixel loss to the teacher's outputs."""

    def forward(self, inputs: TermInputs):
        return super().forward(inputs.student_out, inputs.teacher_out)


class GroundTruthTerm(PixelLoss):
    """Pixel loss to the ground truth (aligned pairs)."""

    def forward(self, inputs: TermInputs):
        return super().forward(inputs.student_out, inputs.real.float())


class IdentityTerm(PixelLoss):
    """CycleGAN's identity term ``|S(b) - b|``: the student runs once more, on the target images."""

    def forward(self, inputs: TermInputs):
        with inputs.autocast():
            same = inputs.student(inputs.real)
        return super().forward(same.float(), inputs.real.float())


# ---------------------------------------------------------------- availability


def _crd_checked(section: CRDConfig, facts: DataFacts) -> str | None:
    if not (section.rows or section.columns or section.patches):
        raise GanzipError("crd.rows, crd.columns and crd.patches are all false: enable one or set crd.weight=0")
    return None


def _rkd_checked(section: RKDConfig, facts: DataFacts) -> str | None:
    if facts.batch_size < 3:
        raise GanzipError(
            f"rkd relates the images of a batch and needs at least 3 per batch (angles), got batch size "
            f"{facts.batch_size}: use --batch-size 4"
        )
    return None


def _needs_pairs(section, facts: DataFacts) -> str | None:
    return None if facts.paired else "no aligned A|B pairs"


def _needs_unpaired_targets(section, facts: DataFacts) -> str | None:
    if not facts.same_shape:
        return "the output differs from the input in size or channels"
    if facts.has_targets and not facts.paired:
        return None
    return "used only with unpaired target images"


def _crd(section: CRDConfig, ctx: TermContext) -> CRDTerm:
    return CRDTerm(section, crd_patch_size(ctx.cfg, ctx.out_side))


BUILTIN_TERMS = (
    TermSpec("adversarial", AdversarialConfig, lambda s, ctx: GANLoss(s.mode)),
    TermSpec("crd", CRDConfig, _crd, needs_teacher=True, unavailable=_crd_checked),
    TermSpec("rkd", RKDConfig, lambda s, ctx: RKDTerm(distance_weight=s.distance, angle_weight=s.angle),
             needs_teacher=True, unavailable=_rkd_checked),
    TermSpec("perceptual", PerceptualConfig, lambda s, ctx: PerceptualTerm(s, ctx.offline), needs_teacher=True),
    TermSpec("kd_pixel", KDPixelConfig, lambda s, ctx: TeacherPixelTerm(s.loss), needs_teacher=True),
    TermSpec("ground_truth", GroundTruthConfig, lambda s, ctx: GroundTruthTerm(s.loss), unavailable=_needs_pairs),
    TermSpec("identity", IdentityConfig, lambda s, ctx: IdentityTerm("l1"), unavailable=_needs_unpaired_targets),
)
for _spec in BUILTIN_TERMS:
    register_term(_spec, builtin=True)

__all__ = ["BUILTIN_TERMS", "CRDTerm", "CRD_REFERENCE_PATCH", "CRD_REFERENCE_SIDE", "GroundTruthTerm", "IdentityTerm",
           "PerceptualTerm", "RKDTerm", "TeacherPixelTerm", "crd_patch_size"]

"""Relational knowledge distillation (RKD) and content relationship distillation (CRD).

Spec: ``shared/spec/method.md`` §1 (RKD distance and angle potentials, huber, weights
1 and 2) and §2 (CRD: rows, columns and k x k patches of one output image).

The relational core works on sets of N vectors of dimension D. It has two exact
formulations, chosen by ``precision`` (``"auto"``: ``"float64"`` on the CPU,
``"float32"`` on other devices):

* ``"float64"``: every potential is derived from the N x N matrix of squared pairwise
  distances (:func:`_sq_distances`), never from the N x N x D difference vectors that
  the reference code materialises. The angle numerator is the law of cosines,
  ``<x_j - x_i, x_k - x_i> = (d_ij^2 + d_ik^2 - d_jk^2) / 2`` (:class:`_AngleHuberSum`),
  which needs no reference point, so a tight group of vectors far from everything else
  keeps its digits. The distances come from a float64 Gram matrix where that is exact;
  for the close pairs, where it cancels, each group of close vectors gets its own Gram
  matrix relative to one of its members (explicit differences as the fallback).
* ``"float32"``: the difference vectors themselves, normalised and multiplied, in chunks
  of anchors with a fused backward (:class:`_DirectAngleHuberSum`). No float64 anywhere;
  the N^3 D work suits a GPU's float32 throughput, not a CPU.

Both agree with the direct formulation (``tests/reference_crd.py``) to ~1e-10 relative
in float64 and to float32 rounding (~1e-6) in float32, gradients included, on flat,
clustered and exactly repeated inputs as well as textured ones (``tests/test_crd.py``).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import GanzipError
from .crd_core import (PRECISIONS, _AngleHuberSum, _DirectAngleHuberSum, _angle_chunk, _diff_budget,  # noqa: F401
                       _distance_terms, _sq_distances, resolve_precision)

GRANULARITIES = ("rows", "columns", "patches")


# ----------------------------------------------------------------------------- relational core


def _as_sets(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() == 2:
        return x.unsqueeze(0)
    if x.dim() != 3:
        raise GanzipError(f"{name} must be B x N x D sets of vectors (or one N x D set), got shape {tuple(x.shape)}")
    return x


def relational_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    w_dist: float = 1.0,
    w_angle: float = 2.0,
    chunk_size: int | None = None,
    reduction: str = "mean",
    compute_dtype: torch.dtype | None = None,
    precision: str = "auto",
) -> torch.Tensor:
    """RKD loss ``w_dist * L_D + w_angle * L_A`` (spec §1) between sets of vectors.

    Args:
        student, teacher: ``B x N x D`` (B independent sets of N vectors each) or one
            ``N x D`` set. The teacher side carries no gradient.
        w_dist, w_angle: weights of the distance and angle terms (spec: 1 and 2).
        chunk_size: anchors per chunk of the angle term (its working memory is four
            buffers of B x chunk x N x N numbers); ``None`` picks one for the device.
        reduction: ``"mean"`` over the B sets, ``"sum"``, or ``"none"`` (a B vector).
        precision: ``"float64"``: distances and angle numerators in float64 from the
            squared distances (N^2 D + N^3 work; exact on every input, the CPU
            default); ``"float32"``: explicit difference vectors in the inputs'
            precision, never float64 (N^3 D work, for GPUs; as exact as the direct
            formulation in float32); ``"auto"``: float64 on the CPU, float32 elsewhere.
        compute_dtype: older spelling of ``precision`` (torch.float64 or torch.float32);
            when given it wins.

    ``L_D`` averages huber over all N x N pairs (the zero diagonal included, as the
    reference code), the distances normalised by their mean over i != j. ``L_A``
    averages over all N^3 triplets, degenerate ones included. Student and teacher
    vectors may differ in dimension D (only relations are compared). Returns float32
    for float32 or lower-precision inputs, float64 for float64 inputs.
    """
    s, t, precision = _check_sets(student, teacher, chunk_size, reduction, compute_dtype, precision)
    n = s.shape[1]
    if precision == "float64":
        as_, us, dist_s = _distance_terms(s)
        with torch.no_grad():
            at, ut, dist_t = _distance_terms(t.detach())
        chunk = min(chunk_size or _angle_chunk(s.shape[0], n, s.device), n)
    else:
        work = torch.float64 if s.dtype == torch.float64 else torch.float32
        s_w, t_w = s.to(work), t.detach().to(work)
        # explicit differences (no matmul expansion), so close pairs keep their digits
        dist_s = torch.cdist(s_w, s_w, compute_mode="donot_use_mm_for_euclid_dist")
        with torch.no_grad():
            dist_t = torch.cdist(t_w, t_w, compute_mode="donot_use_mm_for_euclid_dist")
        per_anchor = s.shape[0] * n * max(s.shape[2], t.shape[2])
        chunk = min(chunk_size or max(1, _diff_budget(s.device) // per_anchor), n)

    per_set = dist_s.new_zeros(s.shape[0])
    if w_dist:
        per_set = per_set + w_dist * _distance_potential(dist_s, dist_t, n)
    if w_angle:
        if precision == "float64":
            cos_dtype = torch.float64 if s.dtype == torch.float64 else torch.float32
            sums = _AngleHuberSum.apply(as_, us, at, ut, chunk, cos_dtype)
        else:
            sums = _DirectAngleHuberSum.apply(s_w, t_w, chunk)
        per_set = per_set + w_angle * sums.to(per_set.dtype) / float(n) ** 3

    per_set = per_set.to(student.dtype if student.dtype in (torch.float32, torch.float64) else torch.float32)
    if reduction == "mean":
        return per_set.mean()
    if reduction == "sum":
        return per_set.sum()
    return per_set


def _distance_potential(dist_s: torch.Tensor, dist_t: torch.Tensor, n: int) -> torch.Tensor:
    """``L_D`` per set: huber between the distances normalised by their mean over the N (N - 1) pairs i != j."""
    pairs = n * (n - 1)
    mu_s = dist_s.sum(dim=(1, 2), keepdim=True) / pairs
    mu_t = dist_t.sum(dim=(1, 2), keepdim=True) / pairs
    # an all-coincident set has mu = 0 and every distance 0: its potential is 0
    psi_s = dist_s / torch.where(mu_s > 0, mu_s, torch.ones_like(mu_s))
    psi_t = dist_t / torch.where(mu_t > 0, mu_t, torch.ones_like(mu_t))
    return F.smooth_l1_loss(psi_s, psi_t, reduction="none", beta=1.0).mean(dim=(1, 2))


def _check_sets(student, teacher, chunk_size, reduction, compute_dtype, precision):
    """The inputs as B x N x D sets and the resolved precision; a one-line GanzipError for anything unusable."""
    s = _as_sets(student, "student")
    t = _as_sets(teacher, "teacher")
    if s.shape[:2] != t.shape[:2]:
        raise GanzipError(
            f"student and teacher sets differ: {tuple(s.shape)} vs {tuple(t.shape)} (need the same B and N)"
        )
    n = s.shape[1]
    if n < 2:
        raise GanzipError(f"relational loss needs at least 2 vectors per set to form pairs, got N={n}")
    if reduction not in ("mean", "sum", "none"):
        raise GanzipError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if compute_dtype is not None:
        if compute_dtype not in (torch.float64, torch.float32):
            raise GanzipError(f"compute_dtype must be torch.float64 or torch.float32, got {compute_dtype}")
        precision = "float64" if compute_dtype == torch.float64 else "float32"
    precision = resolve_precision(precision, s.device)
    if chunk_size is not None and chunk_size < 1:
        raise GanzipError(f"chunk_size must be >= 1, got {chunk_size}")
    return s, t, precision


class RelationalLoss(nn.Module):
    """RKD between sets of vectors, ``w_dist * L_D + w_angle * L_A`` (spec §1).

    ``loss(student, teacher)`` on ``B x N x D`` tensors returns the mean over the B
    sets. See :func:`relational_loss`.
    """

    def __init__(self, w_dist: float = 1.0, w_angle: float = 2.0, chunk_size: int | None = None,
                 compute_dtype: torch.dtype | None = None, precision: str = "auto"):
        super().__init__()
        resolve_precision(precision, torch.device("cpu"))  # validates it
        self.w_dist = float(w_dist)
        self.w_angle = float(w_angle)
        self.chunk_size = chunk_size
        self.compute_dtype = compute_dtype
        self.precision = precision

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return relational_loss(student, teacher, self.w_dist, self.w_angle, self.chunk_size,
                               compute_dtype=self.compute_dtype, precision=self.precision)

    def extra_repr(self) -> str:
        return f"w_dist={self.w_dist}, w_angle={self.w_angle}, precision={self.precision!r}"


class RKDInstanceLoss(nn.Module):
    """Instance-level RKD across a batch (paper Table 3 "rkd-instance"; spec §1).

    Each flattened output image of the batch is one vector, so N is the batch size,
    which must be at least 2. ``loss(student_images, teacher_images)`` on
    ``N x C x H x W``.
    """

    def __init__(self, w_dist: float = 1.0, w_angle: float = 2.0, chunk_size: int | None = None,
                 *, distance_weight: float | None = None, angle_weight: float | None = None,
                 precision: str = "auto"):
        super().__init__()
        resolve_precision(precision, torch.device("cpu"))  # validates it
        self.w_dist = float(w_dist if distance_weight is None else distance_weight)
        self.w_angle = float(w_angle if angle_weight is None else angle_weight)
        self.chunk_size = chunk_size
        self.precision = precision

    def forward(self, student_images: torch.Tensor, teacher_images: torch.Tensor) -> torch.Tensor:
        if student_images.shape != teacher_images.shape:
            raise GanzipError(f"student and teacher images differ in shape: {tuple(student_images.shape)} vs "
                              f"{tuple(teacher_images.shape)}")
        if student_images.shape[0] < 2:
            raise GanzipError("rkd_instance relates the images of a batch to each other and needs a batch of at "
                              f"least 2 (got {student_images.shape[0]}): raise the batch size or use the crd loss")
        return relational_loss(student_images.flatten(1).unsqueeze(0), teacher_images.flatten(1).unsqueeze(0),
                               self.w_dist, self.w_angle, self.chunk_size, precision=self.precision)

    def extra_repr(self) -> str:
        return f"w_dist={self.w_dist}, w_angle={self.w_angle}"


# ----------------------------------------------------------------------------- CRD


def crd_slices(images: torch.Tensor, granularity: str, patch_size: int = 32) -> torch.Tensor:
    """The vectors CRD relates within each image (spec §2), as ``B x N x D``.

    * ``rows``: H vectors of C*W per image;
    * ``columns``: W vectors of C*H;
    * ``patches``: the H*W/k^2 non-overlapping k x k patches, C*k*k each.

    Built with permute + reshape (never ``.view`` of a transposed tensor, spec §8).
    The order of the coordinates inside a vector does not matter to the loss.
    """
    b, c, h, w = images.shape
    if granularity == "rows":
        return images.permute(0, 2, 1, 3).reshape(b, h, c * w)
    if granularity == "columns":
        return images.permute(0, 3, 1, 2).reshape(b, w, c * h)
    if granularity == "patches":
        k = patch_size
        if h % k or w % k:
            raise GanzipError(f"patch size {k} does not divide the image size {h}x{w}")
        x = images.reshape(b, c, h // k, k, w // k, k).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, (h // k) * (w // k), c * k * k)
    raise GanzipError(f"unknown CRD granularity {granularity!r}: use one of {', '.join(GRANULARITIES)}")


class CRDLoss(nn.Module):
    """Content relationship distillation loss L_CRD (spec §2).

    For each image, and each enabled granularity G (rows, columns, k x k patches),
    ``w_dist * L_D(G) + w_angle * L_A(G)`` between the student's and the teacher's
    slices of that image (spec §1 potentials); summed over G and averaged over the
    images of the batch. The teacher side carries no gradient.

    Args:
        patch_size: k of the patch granularity (spec: 32 at 256 x 256). It must divide
            H and W, unless ``crop=True``.
        w_dist, w_angle: distance and angle weights (spec: 1 and 2).
        granularities: any of ``("rows", "columns", "patches")`` (the Table 4 ablation
            drops one).
        chunk_size: anchors per chunk of the angle term (``None``: chosen for the
            device); only memory and speed depend on it.
        crop: if True and k does not divide H or W, the patch term uses the central
            region whose sides are the largest multiples of k (rows and columns still
            use the whole image). Off by default: a mismatch is an error.
        rows, columns, patches: boolean switches, the recipe's spelling of
            ``granularities``; when any is given they replace it.
        distance_weight, angle_weight: aliases of ``w_dist`` and ``w_angle``.
        precision: ``"auto"`` (float64 arithmetic on the CPU, float32-only on other
            devices), ``"float64"`` or ``"float32"``; see :func:`relational_loss`. Both
            are exact to their precision; only speed and memory differ.

    Example::

        loss = CRDLoss(patch_size=32)(student(x), teacher(x).detach())
    """

    def __init__(
        self,
        patch_size: int = 32,
        w_dist: float = 1.0,
        w_angle: float = 2.0,
        granularities: Sequence[str] = GRANULARITIES,
        chunk_size: int | None = None,
        crop: bool = False,
        *,
        rows: bool | None = None,
        columns: bool | None = None,
        patches: bool | None = None,
        distance_weight: float | None = None,
        angle_weight: float | None = None,
        precision: str = "auto",
    ):
        super().__init__()
        resolve_precision(precision, torch.device("cpu"))  # validates it
        if isinstance(granularities, str):
            granularities = (granularities,)
        granularities = tuple(granularities)
        if rows is not None or columns is not None or patches is not None:
            flags = {"rows": rows, "columns": columns, "patches": patches}
            granularities = tuple(g for g in GRANULARITIES if (flags[g] if flags[g] is not None else g in granularities))
        unknown = [g for g in granularities if g not in GRANULARITIES]
        if unknown:
            raise GanzipError(f"unknown CRD granularity {unknown[0]!r}: use any of {', '.join(GRANULARITIES)}")
        if not granularities:
            raise GanzipError("CRD needs at least one granularity (rows, columns, patches); "
                              "to turn the whole term off give it weight 0 instead")
        if int(patch_size) < 1:
            raise GanzipError(f"CRD patch_size must be >= 1, got {patch_size}")
        self.patch_size = int(patch_size)
        self.w_dist = float(w_dist if distance_weight is None else distance_weight)
        self.w_angle = float(w_angle if angle_weight is None else angle_weight)
        self.granularities = tuple(g for g in GRANULARITIES if g in granularities)
        self.chunk_size = chunk_size
        self.crop = bool(crop)
        self.precision = precision

    def _patch_region(self, x: torch.Tensor) -> torch.Tensor:
        k = self.patch_size
        h, w = x.shape[-2:]
        if h % k == 0 and w % k == 0:
            return x
        if h < k or w < k:
            raise GanzipError(f"CRD patch size {k} is larger than the image ({h}x{w}): "
                              f"pass a patch_size of at most {min(h, w)}")
        if not self.crop:
            bad = " and ".join(f"{name} {size}" for name, size in (("height", h), ("width", w)) if size % k)
            raise GanzipError(
                f"CRD patch size {k} does not divide the image {bad} (image {h}x{w}): pass a patch_size that "
                f"divides both sides, resize the images to multiples of {k}, or pass crop=True to use the "
                f"central {h // k * k}x{w // k * k} region for the patch term"
            )
        h2, w2 = h // k * k, w // k * k
        top, left = (h - h2) // 2, (w - w2) // 2
        return x[..., top:top + h2, left:left + w2]

    def forward(self, student_images: torch.Tensor, teacher_images: torch.Tensor) -> torch.Tensor:
        if student_images.dim() != 4 or student_images.shape != teacher_images.shape:
            raise GanzipError(
                f"CRD needs student and teacher images of the same N x C x H x W shape, got "
                f"{tuple(student_images.shape)} and {tuple(teacher_images.shape)}"
            )
        teacher_images = teacher_images.detach()
        batch = student_images.shape[0]
        # Granularities whose sets have the same N x D (rows and columns of a square
        # image) go through the relational core together: fewer, larger operations.
        groups: dict[tuple[int, int], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for g in self.granularities:
            s, t = student_images, teacher_images
            if g == "patches":
                s, t = self._patch_region(s), self._patch_region(t)
            s_sets, t_sets = crd_slices(s, g, self.patch_size), crd_slices(t, g, self.patch_size)
            if s_sets.shape[1] < 2:
                raise GanzipError(f"CRD {g} of a {s.shape[-2]}x{s.shape[-1]} image give a single vector, and a "
                                  f"relation needs two: use larger images or a smaller patch_size")
            groups.setdefault(tuple(s_sets.shape[1:]), []).append((s_sets, t_sets))
        total = student_images.new_zeros(batch)
        for items in groups.values():
            per_set = relational_loss(
                torch.cat([s for s, _ in items]), torch.cat([t for _, t in items]),
                self.w_dist, self.w_angle, self.chunk_size, reduction="none", precision=self.precision,
            )
            total = total + per_set.view(len(items), batch).sum(dim=0)
        return total.mean()

    def extra_repr(self) -> str:
        return (f"patch_size={self.patch_size}, w_dist={self.w_dist}, w_angle={self.w_angle}, "
                f"granularities={self.granularities}, crop={self.crop}, precision={self.precision!r}")


__all__ = ["CRDLoss", "RelationalLoss", "RKDInstanceLoss", "relational_loss", "crd_slices", "GRANULARITIES",
           "PRECISIONS", "resolve_precision"]

"""Relational knowledge distillation (RKD) and content relationship distillation (CRD).

Spec: ``shared/spec/method.md`` §1 (RKD distance and angle potentials, huber, weights
1 and 2) and §2 (CRD: rows, columns and k x k patches of one output image).

The relational core works on sets of N vectors of dimension D and never builds the
N x N x D difference vectors that the reference code materialises. Everything is
derived from the N x N Gram matrix of each set (see :func:`_gram_terms` and
:class:`_AngleHuberSum`), computed in float64 so that nearly equal vectors do not lose
their differences to cancellation. The result equals the direct formulation
(``tests/reference_crd.py``) to float precision, gradients included.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import GanzipError

GRANULARITIES = ("rows", "columns", "patches")

# Two vectors whose squared distance is below this fraction of their (centred) squared
# norms are treated as coincident: the float64 Gram matrix cannot resolve a smaller
# difference (its rounding error is ~1e-14 of the norms), and the direct formulation
# gives a coincident pair a zero difference vector, i.e. cosine 0 and distance 0.
_COINCIDENT_RTOL = 1e-12

# Elements (anchors x N x N) per chunk of the angle term: bounds the memory to a few
# buffers of this size and keeps each chunk close to the CPU cache.
_CPU_CHUNK_ELEMENTS = 1 << 18
_GPU_CHUNK_ELEMENTS = 1 << 24


# ----------------------------------------------------------------------------- helpers


def _auto_chunk(m_sets: int, n: int, device: torch.device) -> int:
    budget = _GPU_CHUNK_ELEMENTS if device.type == "cuda" else _CPU_CHUNK_ELEMENTS
    return max(1, min(n, budget // (m_sets * n * n)))


def _gram_terms(x: torch.Tensor, dtype: torch.dtype):
    """Gram-matrix quantities of M sets of N vectors (x: M x N x D).

    Returns ``(G, a, u, dist)``, each M x N x N, with vectors centred on their set mean
    (differences, hence every potential, are unchanged; the Gram entries shrink to the
    spread of the set, which is what the float64 rounding error is relative to):

    * ``G[i, j] = <x_i, x_j>``
    * ``a[i, j] = G_ij - G_ii / 2`` (so ``<x_j - x_i, x_k - x_i> = G_jk - a_ij - a_ik``)
    * ``u[i, j] = 1 / ||x_j - x_i||``, 0 on the diagonal and for coincident pairs
    * ``dist[i, j] = ||x_j - x_i||`` (0 for coincident pairs), via
      ``||x_j - x_i||^2 = G_ii + G_jj - 2 G_ij``.
    """
    xc = x.to(dtype)
    xc = xc - xc.mean(dim=1, keepdim=True)
    gram = xc @ xc.transpose(1, 2)
    sq = gram.diagonal(dim1=1, dim2=2)
    sq_i, sq_j = sq.unsqueeze(2), sq.unsqueeze(1)
    d2 = sq_i + sq_j - 2.0 * gram
    eye = torch.eye(x.shape[1], dtype=torch.bool, device=x.device)
    valid = (d2 > _COINCIDENT_RTOL * (sq_i + sq_j)) & ~eye
    safe = torch.where(valid, d2, torch.ones_like(d2))
    dist = torch.where(valid, safe.sqrt(), torch.zeros_like(d2))
    u = torch.where(valid, safe.rsqrt(), torch.zeros_like(d2))
    a = gram - 0.5 * sq_i
    return gram, a, u, dist


class _AngleHuberSum(torch.autograd.Function):
    """Sum over all (i, j, k) of huber(psi_A(s)[i,j,k], psi_A(t)[i,j,k]) for each of M sets.

    The angle potential at vertex i (spec §1) is a cosine between difference vectors.
    Its numerator is an inner product of differences, which the Gram matrix gives
    without forming the differences:

        <x_j - x_i, x_k - x_i> = G_jk - G_ij - G_ik + G_ii = G_jk - a_ij - a_ik
        cos[i, j, k]           = (G_jk - a_ij - a_ik) * u_ij * u_ik

    with ``u_ij = 1 / ||x_j - x_i||`` (0 when j == i or the pair coincides, matching
    ``F.normalize`` of a zero vector). So an anchor's N x N cosine matrix costs N^2
    element-wise operations instead of an N x D x N matmul over N x D differences.

    Anchors are processed in chunks. Forward and backward are fused: while a chunk's
    student and teacher cosines are in memory, the gradient of the huber sum with
    respect to the student's ``G``, ``a`` and ``u`` is accumulated analytically, so
    nothing of size N^3 is saved or recomputed. With ``g = clamp(c_s - c_t, -1, 1)``
    (the huber derivative) and ``H = g * u_j * u_k`` (the derivative with respect to
    the inner products), per anchor i:

        dL/dG_jk += H_jk
        dL/da_ij  = -2 sum_k H_jk                    (c is symmetric in j and k)
        dL/du_ij  =  2 sum_k g_jk c_jk / u_ij

    Autograd then carries these through the N x N maps from the Gram matrix, and from
    the Gram matrix to the vectors. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, gs, as_, us, gt, at, ut, chunk: int, cos_dtype: torch.dtype):
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        gs, as_, us = gs.detach(), as_.detach(), us.detach()
        m_sets, n, _ = gs.shape
        # G_jk - a_ij - a_ik cancels when vectors nearly coincide, so it is formed in the
        # Gram matrix's precision (float64) and rounded once; the cosines are O(1) and
        # free of cancellation, so everything after that runs in `cos_dtype` (float32
        # for float32 inputs), which halves the memory traffic.
        shape = (m_sets, chunk, n, n)
        work = gs.new_empty(shape) if cos_dtype != gs.dtype else None
        buf_s, buf_t, buf_g = (gs.new_empty(shape, dtype=cos_dtype) for _ in range(3))
        us_c, ut_c = us.to(cos_dtype), ut.to(cos_dtype)
        sums = gs.new_zeros(m_sets)
        if need_grad:
            d_g = torch.zeros_like(gs, dtype=cos_dtype)
            rho = gs.new_empty(gs.shape, dtype=cos_dtype)  # sum_k g_jk c_jk, per anchor i and j
            row_h = gs.new_empty(gs.shape, dtype=cos_dtype)  # sum_k g_jk u_ik

        def cosines(gram, a_rows, u_rows, out):  # gram M x N x N; a_rows, u_rows M x b x N
            w = out if work is None else work[:, : out.shape[1]]
            torch.sub(gram.unsqueeze(1), a_rows.unsqueeze(3), out=w)
            w.sub_(a_rows.unsqueeze(2))
            if w is not out:
                out.copy_(w)
            return out.mul_(u_rows.unsqueeze(3)).mul_(u_rows.unsqueeze(2))

        # All sets go through each chunk of anchors together: fewer, larger operations.
        for i0 in range(0, n, chunk):
            i1 = min(n, i0 + chunk)
            b = i1 - i0
            cs = cosines(gs, as_[:, i0:i1], us_c[:, i0:i1], buf_s[:, :b])
            ct = cosines(gt, at[:, i0:i1], ut_c[:, i0:i1], buf_t[:, :b])
            # huber(d) = g * d - g * g / 2 with g = clamp(d, -1, 1), the huber derivative
            diff = torch.sub(cs, ct, out=ct)
            g = torch.clamp(diff, -1.0, 1.0, out=buf_g[:, :b])
            flat_g, flat_d = g.reshape(m_sets, -1), diff.reshape(m_sets, -1)
            sums += (torch.linalg.vecdot(flat_g, flat_d) - 0.5 * torch.linalg.vecdot(flat_g, flat_g)).to(sums.dtype)
            if need_grad:
                torch.sum(torch.mul(g, cs, out=cs), dim=3, out=rho[:, i0:i1])
                uc = us_c[:, i0:i1]
                h = g.mul_(uc.unsqueeze(2))
                torch.sum(h, dim=3, out=row_h[:, i0:i1])
                h.mul_(uc.unsqueeze(3))
                for k in range(b):  # faster than h.sum(dim=1) for a short anchor dimension
                    d_g += h[:, k]
        if need_grad:
            d_a = row_h.to(gs.dtype).mul_(us).mul_(-2.0)
            d_u = torch.where(us > 0, 2.0 * rho.to(gs.dtype) / torch.where(us > 0, us, 1.0), 0.0)
            ctx.save_for_backward(d_g.to(gs.dtype), d_a, d_u)
        return sums

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_sums):
        d_g, d_a, d_u = ctx.saved_tensors
        scale = grad_sums.to(d_g.dtype).view(-1, 1, 1)
        return d_g * scale, d_a * scale, d_u * scale, None, None, None, None, None


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
    compute_dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """RKD loss ``w_dist * L_D + w_angle * L_A`` (spec §1) between sets of vectors.

    Args:
        student, teacher: ``B x N x D`` (B independent sets of N vectors each) or one
            ``N x D`` set. The teacher side carries no gradient.
        w_dist, w_angle: weights of the distance and angle terms (spec: 1 and 2).
        chunk_size: anchors per chunk of the angle term (its working memory is four
            buffers of B x chunk x N x N numbers); ``None`` picks one for the device.
        reduction: ``"mean"`` over the B sets, ``"sum"``, or ``"none"`` (a B vector).
        compute_dtype: precision of the Gram-matrix arithmetic. float64 (default)
            keeps differences of nearly equal vectors; float32 is faster and can lose
            them to cancellation.

    ``L_D`` averages huber over all N x N pairs (the zero diagonal included, as the
    reference code), the distances normalised by their mean over i != j. ``L_A``
    averages over all N^3 triplets, degenerate ones included. Student and teacher
    vectors may differ in dimension D (only relations are compared). Returns float32
    for float32 or lower-precision inputs, float64 for float64 inputs.
    """
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
    chunk = chunk_size or _auto_chunk(s.shape[0], n, s.device)
    if chunk < 1:
        raise GanzipError(f"chunk_size must be >= 1, got {chunk}")
    chunk = min(chunk, n)

    gs, as_, us, dist_s = _gram_terms(s, compute_dtype)
    with torch.no_grad():
        gt, at, ut, dist_t = _gram_terms(t.detach(), compute_dtype)

    per_set = gs.new_zeros(s.shape[0])
    if w_dist:
        pairs = n * (n - 1)
        mu_s = dist_s.sum(dim=(1, 2), keepdim=True) / pairs
        mu_t = dist_t.sum(dim=(1, 2), keepdim=True) / pairs
        # an all-coincident set has mu = 0 and every distance 0: its potential is 0
        psi_s = dist_s / torch.where(mu_s > 0, mu_s, torch.ones_like(mu_s))
        psi_t = dist_t / torch.where(mu_t > 0, mu_t, torch.ones_like(mu_t))
        l_d = F.smooth_l1_loss(psi_s, psi_t, reduction="none", beta=1.0).mean(dim=(1, 2))
        per_set = per_set + w_dist * l_d
    if w_angle:
        cos_dtype = torch.float64 if s.dtype == torch.float64 == compute_dtype else torch.float32
        l_a = _AngleHuberSum.apply(gs, as_, us, gt, at, ut, chunk, cos_dtype) / float(n) ** 3
        per_set = per_set + w_angle * l_a

    per_set = per_set.to(student.dtype if student.dtype in (torch.float32, torch.float64) else torch.float32)
    if reduction == "mean":
        return per_set.mean()
    if reduction == "sum":
        return per_set.sum()
    return per_set


class RelationalLoss(nn.Module):
    """RKD between sets of vectors, ``w_dist * L_D + w_angle * L_A`` (spec §1).

    ``loss(student, teacher)`` on ``B x N x D`` tensors returns the mean over the B
    sets. See :func:`relational_loss`.
    """

    def __init__(self, w_dist: float = 1.0, w_angle: float = 2.0, chunk_size: int | None = None,
                 compute_dtype: torch.dtype = torch.float64):
        super().__init__()
        self.w_dist = float(w_dist)
        self.w_angle = float(w_angle)
        self.chunk_size = chunk_size
        self.compute_dtype = compute_dtype

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return relational_loss(student, teacher, self.w_dist, self.w_angle, self.chunk_size,
                               compute_dtype=self.compute_dtype)

    def extra_repr(self) -> str:
        return f"w_dist={self.w_dist}, w_angle={self.w_angle}"


class RKDInstanceLoss(nn.Module):
    """Instance-level RKD across a batch (paper Table 3 "rkd-instance"; spec §1).

    Each flattened output image of the batch is one vector, so N is the batch size,
    which must be at least 2. ``loss(student_images, teacher_images)`` on
    ``N x C x H x W``.
    """

    def __init__(self, w_dist: float = 1.0, w_angle: float = 2.0, chunk_size: int | None = None,
                 *, distance_weight: float | None = None, angle_weight: float | None = None):
        super().__init__()
        self.w_dist = float(w_dist if distance_weight is None else distance_weight)
        self.w_angle = float(w_angle if angle_weight is None else angle_weight)
        self.chunk_size = chunk_size

    def forward(self, student_images: torch.Tensor, teacher_images: torch.Tensor) -> torch.Tensor:
        if student_images.shape != teacher_images.shape:
            raise GanzipError(f"student and teacher images differ in shape: {tuple(student_images.shape)} vs "
                              f"{tuple(teacher_images.shape)}")
        if student_images.shape[0] < 2:
            raise GanzipError("rkd_instance relates the images of a batch to each other and needs a batch of at "
                              f"least 2 (got {student_images.shape[0]}): raise the batch size or use the crd loss")
        return relational_loss(student_images.flatten(1).unsqueeze(0), teacher_images.flatten(1).unsqueeze(0),
                               self.w_dist, self.w_angle, self.chunk_size)

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
    ):
        super().__init__()
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
                self.w_dist, self.w_angle, self.chunk_size, reduction="none",
            )
            total = total + per_set.view(len(items), batch).sum(dim=0)
        return total.mean()

    def extra_repr(self) -> str:
        return (f"patch_size={self.patch_size}, w_dist={self.w_dist}, w_angle={self.w_angle}, "
                f"granularities={self.granularities}, crop={self.crop}")


__all__ = ["CRDLoss", "RelationalLoss", "RKDInstanceLoss", "relational_loss", "crd_slices", "GRANULARITIES"]

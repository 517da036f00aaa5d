"""The exact relational core of RKD/CRD: squared pairwise distances and the angle potential's fused sums.

`ganzip.losses.crd` builds the losses on these; see its docstring for the two
formulations (``"float64"`` from squared distances, ``"float32"`` from explicit
difference vectors). The float64 path's digits are pinned by ``tests/test_crd.py``
against ``tests/reference_crd.py``: change nothing here without rerunning it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import GanzipError

PRECISIONS = ("auto", "float64", "float32")

# A pair whose squared distance from the Gram matrix is below this fraction of the two
# vectors' squared (centred) norms is a "close pair": its distance is recomputed from the
# explicit difference vector. The Gram matrix's float64 rounding error is ~1e-16 of the
# norms (times a small factor for the length of the dot products), so every other pair
# keeps a relative error below ~1e-11, and the close pairs (tight groups: flat regions,
# bands of one colour, repeated rows) are exact.
_CLOSE_RTOL = 1e-4

# Elements (anchors x N x N) per chunk of the angle term: bounds the memory to a few
# buffers of this size and keeps each chunk close to the CPU cache.
_CPU_CHUNK_ELEMENTS = 1 << 18
_GPU_CHUNK_ELEMENTS = 1 << 24
# Elements (pairs x D, or anchors x N x D) per chunk of explicit difference vectors.
_CPU_DIFF_ELEMENTS = 1 << 21
_GPU_DIFF_ELEMENTS = 1 << 25


# ----------------------------------------------------------------------------- helpers


def _auto_chunk(m_sets: int, n: int, device: torch.device) -> int:
    budget = _GPU_CHUNK_ELEMENTS if device.type == "cuda" else _CPU_CHUNK_ELEMENTS
    return max(1, min(n, budget // (m_sets * n * n)))


def _block_bounds(n: int) -> list[tuple[int, int]]:
    """Up to 4 index ranges splitting 0..n (blocks of the angle term, at least 16 wide)."""
    parts = max(1, min(_BLOCK_PARTS, n // 16))
    return [(n * p // parts, n * (p + 1) // parts) for p in range(parts)]


def _angle_chunk(m_sets: int, n: int, device: torch.device) -> int:
    """Anchors per chunk of :class:`_AngleHuberSum`: its buffers hold M x chunk x w x w
    elements, w the width of a block (:func:`_block_bounds`)."""
    budget = _GPU_CHUNK_ELEMENTS if device.type == "cuda" else _CPU_CHUNK_ELEMENTS
    width = max(hi - lo for lo, hi in _block_bounds(n))
    return max(1, min(n, budget // (m_sets * width * width)))


def _diff_budget(device: torch.device) -> int:
    return _GPU_DIFF_ELEMENTS if device.type == "cuda" else _CPU_DIFF_ELEMENTS


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"float64"`` or ``"float32"`` for ``precision`` (``"auto"``: float64 on the CPU,
    where float64 costs the same per element as float32 in this loss; float32 elsewhere,
    since consumer GPUs run float64 at 1/32 to 1/64 of their float32 rate, and MPS has none)."""
    if precision not in PRECISIONS:
        raise GanzipError(f"CRD precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "float64" if device.type == "cpu" else "float32"
    return precision


class _PairSqDist(torch.autograd.Function):
    """``||x[p, i] - x[p, j]||^2`` for a list of pairs, from explicit difference vectors.

    ``x`` is ``M*N x D`` (all sets flattened), ``first`` and ``second`` index its rows.
    Differences are formed in chunks of about ``budget`` elements, in forward and again
    in backward, so the memory stays bounded however many pairs there are.
    """

    @staticmethod
    def forward(ctx, x, first, second, budget: int):
        step = max(1, budget // max(1, x.shape[1]))
        out = x.new_empty(first.shape[0])
        for p0 in range(0, first.shape[0], step):
            d = x[first[p0:p0 + step]] - x[second[p0:p0 + step]]
            out[p0:p0 + step] = torch.linalg.vecdot(d, d)
        ctx.save_for_backward(x, first, second)
        ctx.step = step
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, first, second = ctx.saved_tensors
        dx = torch.zeros_like(x)
        for p0 in range(0, first.shape[0], ctx.step):
            i, j = first[p0:p0 + ctx.step], second[p0:p0 + ctx.step]
            w = (x[i] - x[j]).mul_(2.0 * grad[p0:p0 + ctx.step].unsqueeze(1))
            dx.index_add_(0, i, w)
            dx.index_add_(0, j, w.neg_())
        return dx, None, None, None


class _Gram(torch.autograd.Function):
    """``Y Y^T`` of M sets (M x N x D) with a one-matmul backward, ``(dG + dG^T) Y``
    (autograd's generic matmul backward takes two)."""

    @staticmethod
    def forward(ctx, y):
        ctx.save_for_backward(y)
        return y @ y.transpose(1, 2)

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return (grad + grad.transpose(1, 2)) @ y


def _components(adj: torch.Tensor) -> torch.Tensor:
    """Connected-component labels (the smallest member index) of an N x N boolean graph."""
    n = adj.shape[0]
    adj = adj | adj.t() | torch.eye(n, dtype=torch.bool, device=adj.device)
    labels = torch.arange(n, device=adj.device)
    while True:
        new = torch.where(adj, labels.unsqueeze(0), n).amin(dim=1)
        new = new[new]  # pointer jumping: a chain converges in O(log N) rounds
        if torch.equal(new, labels):
            return labels
        labels = new


def _sq_distances(x: torch.Tensor, depth: int = 0) -> torch.Tensor:
    """Squared distances ``D[m, i, j] = ||x_mi - x_mj||^2`` of M sets (x: M x N x D, float64).

    A Gram matrix gives all of them with N^2 D multiply-adds in one BLAS call, but
    ``G_ii + G_jj - 2 G_ij`` loses the digits of a pair that is close compared with the
    vectors' distance to the reference point (the set mean), and centring on the mean
    helps only when the whole set is one tight group. So the close pairs
    (:data:`_CLOSE_RTOL`) are recomputed: each group of vectors linked by close pairs
    (a flat background, a band of one colour) gets its own Gram matrix, relative to one
    of its members, recursively (a group may hold tighter groups). Exactly repeated
    vectors get exactly 0. A group that is the whole set, or nested too deep, falls back
    to explicit difference vectors (:class:`_PairSqDist`). Textured inputs have no close
    pairs, and this costs nothing there.
    """
    m, n, dim = x.shape
    ref = x.mean(dim=1, keepdim=True) if depth == 0 else x[:, :1]
    gram = _Gram.apply(x - ref)
    sq = gram.diagonal(dim1=1, dim2=2)
    norms = sq.unsqueeze(2) + sq.unsqueeze(1)
    d2 = (norms - 2.0 * gram).clamp_min(0.0)
    eye = torch.eye(n, dtype=torch.bool, device=x.device)
    with torch.no_grad():
        close = torch.triu(d2 < _CLOSE_RTOL * norms, diagonal=1)
        sets = close.flatten(1).any(dim=1).nonzero().flatten().tolist()
    pairs = []
    for s in sets:
        labels = _components(close[s])
        for label in torch.unique(labels[close[s].any(dim=1)]).tolist():
            idx = (labels == label).nonzero().flatten()
            if idx.shape[0] == n or depth >= 8:  # no progress: explicit differences
                i, j = torch.triu(close[s][idx][:, idx], diagonal=1).nonzero().unbind(1)
                pairs.append((s * n + idx[i], s * n + idx[j]))
                continue
            local = _sq_distances(x[s, idx].unsqueeze(0), depth + 1)[0]
            d2 = d2.index_put((torch.full_like(idx, s).unsqueeze(1), idx.unsqueeze(1), idx.unsqueeze(0)), local)
    if pairs:
        first, second = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
        exact = _PairSqDist.apply(x.reshape(m * n, dim), first, second, _diff_budget(x.device))
        s, i, j = first // n, first % n, second % n
        d2 = d2.index_put((s, i, j), exact).index_put((s, j, i), exact)
    return d2.masked_fill(eye, 0.0)


def _distance_terms(x: torch.Tensor):
    """``(A, u, dist)`` of M sets of N vectors (x: M x N x D), each M x N x N float64:

    * ``A[i, j] = ||x_j - x_i||^2 / 2``, so that the angle numerator at vertex i is
      ``<x_j - x_i, x_k - x_i> = A_ij + A_ik - A_jk`` (law of cosines);
    * ``u[i, j] = 1 / ||x_j - x_i||``, 0 on the diagonal and for coincident vectors;
    * ``dist[i, j] = ||x_j - x_i||``.
    """
    d2 = _sq_distances(x.to(torch.float64))
    valid = d2 > 0
    safe = torch.where(valid, d2, torch.ones_like(d2))
    dist = torch.where(valid, safe.sqrt(), torch.zeros_like(d2))
    u = torch.where(valid, safe.rsqrt(), torch.zeros_like(d2))
    return 0.5 * d2, u, dist


class _AngleHuberSum(torch.autograd.Function):
    """Sum over all (i, j, k) of huber(psi_A(s)[i,j,k], psi_A(t)[i,j,k]) for each of M sets.

    The angle potential at vertex i (spec §1) is a cosine between difference vectors.
    Its numerator is an inner product of differences, which the squared distances give
    without forming the differences (law of cosines), with ``A = D / 2``:

        <x_j - x_i, x_k - x_i> = A_ij + A_ik - A_jk
        cos[i, j, k]           = (A_ij + A_ik - A_jk) * u_ij * u_ik

    with ``u_ij = 1 / ||x_j - x_i||`` (0 when j == i or the pair coincides, matching
    ``F.normalize`` of a zero vector). So an anchor's N x N cosine matrix costs N^2
    element-wise operations instead of an N x D x N matmul over N x D differences. Unlike
    the Gram form ``G_jk - G_ij - G_ik + G_ii``, this needs no reference point: its
    rounding error is relative to the triangle's own sides, so a triplet inside a tight
    group is as accurate as one of spread-out vectors.

    Anchors are processed in chunks, and of each anchor's symmetric N x N matrix only the
    blocks on and above the diagonal (:func:`_block_bounds`). Forward and backward are fused: while a chunk's
    student and teacher cosines are in memory, the gradient of the huber sum with
    respect to the student's ``A`` and ``u`` is accumulated analytically, so nothing of
    size N^3 is saved or recomputed. With ``g = clamp(c_s - c_t, -1, 1)`` (the huber
    derivative) and ``H = g * u_j * u_k`` (the derivative with respect to the inner
    products), per anchor i:

        dL/dA_jk -= H_jk
        dL/dA_ij  = 2 sum_k H_jk                     (c is symmetric in j and k)
        dL/du_ij  = 2 sum_k g_jk c_jk / u_ij

    Autograd then carries these through the distances back to the vectors. Not twice
    differentiable.
    """

    @staticmethod
    def forward(ctx, as_, us, at, ut, chunk: int, cos_dtype: torch.dtype):
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        as_, us = as_.detach(), us.detach()
        m_sets, n, _ = as_.shape
        # The cosines are symmetric in j and k: only the blocks (J, K) with J <= K of each
        # anchor's N x N matrix are computed, those off the diagonal counted twice.
        bounds = _block_bounds(n)
        blocks = [(bounds[p], bounds[q], p != q) for p in range(len(bounds)) for q in range(p, len(bounds))]
        width = max(hi - lo for lo, hi in bounds)
        size = m_sets * chunk * width * width
        # A_ij + A_ik - A_jk cancels for a thin triangle (a close pair seen from a far
        # vertex), so it is formed in float64 and rounded once; the cosines are O(1), so
        # everything after that runs in `cos_dtype` (float32 for float32 inputs), which
        # halves the memory traffic.
        work = as_.new_empty(size) if cos_dtype != as_.dtype else None
        buf_s, buf_t, buf_u = (as_.new_empty(size, dtype=cos_dtype) for _ in range(3))
        us_c, ut_c = us.to(cos_dtype), ut.to(cos_dtype)
        if work is not None:
            # An anchor whose distances to the other vectors are all within a factor
            # _FAST_RATIO of each other has no thin triangle at its vertex: its numerators
            # are safe in cos_dtype (error ~ eps * ratio), so chunks of such anchors skip
            # the float64 pass (textured images: all of them).
            fast_s, fast_t = _well_conditioned(us), _well_conditioned(ut)
            as_c, at_c = as_.to(cos_dtype), at.to(cos_dtype)
        sums = as_.new_zeros(m_sets)
        if need_grad:
            d_g = torch.zeros_like(as_, dtype=cos_dtype)  # sum over anchors of H_jk, blocks J <= K
            rho = torch.zeros_like(as_, dtype=cos_dtype)  # sum_k g_jk c_jk, per anchor i and j
            row_h = torch.zeros_like(as_, dtype=cos_dtype)  # sum_k H_jk, per anchor i and j

        def view(buf, b, bj, bk):  # a contiguous M x b x bj x bk buffer
            return buf[: m_sets * b * bj * bk].view(m_sets, b, bj, bk)

        def numerators(a_all, a_rows, js, ks, out):  # a_all M x N x N; a_rows M x b x N
            w = out if a_all.dtype == out.dtype else view(work, *out.shape[1:])
            torch.add(a_rows[..., js].unsqueeze(3), a_rows[..., ks].unsqueeze(2), out=w)
            w.sub_(a_all[:, js, ks].unsqueeze(1))
            if w is not out:
                out.copy_(w)
            return out

        for i0 in range(0, n, chunk):  # all sets go through each chunk of anchors together
            i1 = min(n, i0 + chunk)
            b = i1 - i0
            a_s = as_c if work is not None and all(fast_s[i0:i1]) else as_
            a_t = at_c if work is not None and all(fast_t[i0:i1]) else at
            a_s_rows, a_t_rows, u_s_rows, u_t_rows = a_s[:, i0:i1], a_t[:, i0:i1], us_c[:, i0:i1], ut_c[:, i0:i1]
            for (j0, j1), (k0, k1), twice in blocks:
                js, ks = slice(j0, j1), slice(k0, k1)
                bj, bk = j1 - j0, k1 - k0
                uu = torch.mul(u_s_rows[..., js].unsqueeze(3), u_s_rows[..., ks].unsqueeze(2),
                               out=view(buf_u, b, bj, bk))  # u_ij u_ik
                cs = numerators(a_s, a_s_rows, js, ks, view(buf_s, b, bj, bk)).mul_(uu)
                ct = numerators(a_t, a_t_rows, js, ks, view(buf_t, b, bj, bk))
                ct.mul_(u_t_rows[..., js].unsqueeze(3)).mul_(u_t_rows[..., ks].unsqueeze(2))
                for m in range(m_sets):
                    part = F.smooth_l1_loss(cs[m], ct[m], reduction="sum", beta=1.0).to(sums.dtype)
                    sums[m] += 2.0 * part if twice else part
                if need_grad:
                    g = torch.sub(cs, ct, out=ct).clamp_(-1.0, 1.0)  # the huber derivative
                    gc = torch.mul(g, cs, out=cs)
                    rho[:, i0:i1, js] += gc.sum(dim=3)
                    h = g.mul_(uu)
                    row_h[:, i0:i1, js] += h.sum(dim=3)
                    if twice:
                        rho[:, i0:i1, ks] += gc.sum(dim=2)
                        row_h[:, i0:i1, ks] += h.sum(dim=2)
                    block = d_g[:, js, ks]
                    for k in range(b):  # faster than h.sum(dim=1) for a short anchor dimension
                        block += h[:, k]
        if need_grad:
            for (j0, j1), (k0, k1), twice in blocks:
                if twice:
                    d_g[:, k0:k1, j0:j1] = d_g[:, j0:j1, k0:k1].transpose(1, 2)
            d_a = row_h.to(as_.dtype).mul_(2.0).sub_(d_g.to(as_.dtype))
            d_u = torch.where(us > 0, 2.0 * rho.to(as_.dtype) / torch.where(us > 0, us, 1.0), 0.0)
            ctx.save_for_backward(d_a, d_u)
        return sums

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_sums):
        d_a, d_u = ctx.saved_tensors
        scale = grad_sums.to(d_a.dtype).view(-1, 1, 1)
        return d_a * scale, d_u * scale, None, None, None, None


_FAST_RATIO = 16.0
_BLOCK_PARTS = 4


def _well_conditioned(u: torch.Tensor) -> list[bool]:
    """Per anchor i (over all M sets): are the nonzero distances from x_i within a factor
    _FAST_RATIO of each other? (u = 1 / distance, 0 for none.)"""
    big = u.amax(dim=2)
    small = torch.where(u > 0, u, torch.full_like(u, float("inf"))).amin(dim=2)
    return (big <= _FAST_RATIO * small).all(dim=0).tolist()


def _unit_differences(x: torch.Tensor, i0: int, i1: int):
    """``(e, inv)`` for the anchors i0..i1 of M sets x (M x N x D): ``e[m, a, j]`` is the
    unit vector of ``x_j - x_{i0+a}`` (0 for a zero difference, as ``F.normalize``) and
    ``inv`` the inverse norms (0 there), as (M*b) x N x D and (M*b) x N."""
    diff = (x.unsqueeze(1) - x[:, i0:i1].unsqueeze(2)).flatten(0, 1)
    norm = torch.linalg.vector_norm(diff, dim=2)
    inv = torch.where(norm > 0, 1.0 / torch.where(norm > 0, norm, 1.0), 0.0)
    return diff.mul_(inv.unsqueeze(2)), inv


class _DirectAngleHuberSum(torch.autograd.Function):
    """The same sum as :class:`_AngleHuberSum`, from explicit unit difference vectors.

    Per chunk of anchors i: ``E_i`` (the N unit vectors of ``x_j - x_i``), the cosines
    ``E_i E_i^T`` by one batched matmul, the huber, and, fused, its gradient:
    ``dL/dE_i = 2 g E_i``, through the normalisation
    ``dL/d(x_j - x_i) = (dE - e <e, dE>) / ||x_j - x_i||``, then to ``x_j`` (+) and
    ``x_i`` (-). Nothing of size N^3 is stored; the working memory is a few buffers of
    b x N x D. It runs in the inputs' precision (float32 for float32 inputs) and is as
    accurate as the direct formulation in that precision, for every input: no quantity
    that can cancel is formed. Its cost is N^3 D multiply-adds, as the direct
    formulation's: the path for a GPU's float32 throughput.
    """

    @staticmethod
    def forward(ctx, s, t, chunk: int):
        need_grad = ctx.needs_input_grad[0]
        s, t = s.detach(), t.detach()
        m_sets, n, _ = s.shape
        sums = s.new_zeros(m_sets)
        dx = torch.zeros_like(s) if need_grad else None
        for i0 in range(0, n, chunk):
            i1 = min(n, i0 + chunk)
            b = i1 - i0
            es, inv = _unit_differences(s, i0, i1)
            et, _ = _unit_differences(t, i0, i1)
            cs = torch.bmm(es, es.transpose(1, 2))
            diff = torch.bmm(et, et.transpose(1, 2)).neg_().add_(cs)
            g = torch.clamp(diff, -1.0, 1.0)
            flat_g, flat_d = g.reshape(m_sets, -1), diff.reshape(m_sets, -1)
            sums += torch.linalg.vecdot(flat_g, flat_d) - 0.5 * torch.linalg.vecdot(flat_g, flat_g)
            if need_grad:
                de = torch.bmm(g, es).mul_(2.0)
                proj = torch.linalg.vecdot(es, de)
                dd = de.sub_(es.mul_(proj.unsqueeze(2))).mul_(inv.unsqueeze(2)).view(m_sets, b, n, -1)
                dx += dd.sum(dim=1)
                dx[:, i0:i1] -= dd.sum(dim=2)
        if need_grad:
            ctx.save_for_backward(dx)
        return sums

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_sums):
        (dx,) = ctx.saved_tensors
        return dx * grad_sums.to(dx.dtype).view(-1, 1, 1), None, None

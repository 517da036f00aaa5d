"""The direct CRD/RKD formulation, used as ground truth by tests and `bench/crd_loss.py`.

This is the formulation of the RKD reference code (lenscloth/RKD `metric/loss.py`) and of
the CRD reference code (`relation_kd.py` there), written from the spec
(`shared/spec/method.md` §1-§2) rather than copied. It materialises all N*N pairwise
difference vectors (N*N*D floats), which is exactly what ganzip's Gram-matrix version
avoids. Conventions, pinned down from the reference code:

* distances: psi_D = ||t_i - t_j|| / mu, mu = mean over the N*(N-1) pairs i != j; the
  loss is smooth_l1 (beta 1) averaged over all N*N entries, the zero diagonal included.
  (The reference computes ||.|| through the Gram expansion clamped at 1e-12; here the norm
  is taken of the explicit difference vectors, which is the better-conditioned value.)
* angles: e_ji = F.normalize(t_j - t_i) (so e_ii = 0, and a coincident pair gives a zero
  vector), cos[i, j, k] = <e_ji, e_ki> by bmm, smooth_l1 averaged over all N**3 entries,
  the degenerate ones (j == i, k == i, j == k) included.
* teacher potentials carry no gradient.

`coincident="zero"` changes one thing: a zero difference vector (exactly repeated
vectors) contributes a zero gradient, ganzip's convention, instead of the 1e12-scaled one
that `F.normalize`'s clamp gives it. Values are the same either way.

Run it in float64 (on float64 copies of the inputs) for ground truth.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _potentials(x: torch.Tensor, coincident: str = "clamp"):
    """(psi_D as N x N, psi_A flattened to N**3) of one set x (N x D), built from the
    explicit difference vectors x_j - x_i (N x N x D)."""
    n = x.shape[0]
    diff = x.unsqueeze(0) - x.unsqueeze(1)  # diff[i, j] = x_j - x_i
    if coincident == "clamp":
        norm = diff.norm(dim=2)
        e = diff / norm.clamp_min(1e-12).unsqueeze(2)  # == F.normalize(diff, dim=2)
    else:  # "zero": the same values, no gradient through a zero difference
        sq = (diff * diff).sum(dim=2)
        nonzero = sq > 0
        norm = torch.where(nonzero, torch.where(nonzero, sq, 1.0).sqrt(), 0.0)
        e = torch.where(nonzero.unsqueeze(2), diff / torch.where(nonzero, norm, 1.0).unsqueeze(2), 0.0)
    mu = norm.sum() / (n * (n - 1))
    dist = norm / mu if mu > 0 else norm * 0
    angle = torch.bmm(e, e.transpose(1, 2)).reshape(-1)  # angle[i, j, k] = <e_ji, e_ki>
    return dist, angle


def rkd_direct(s: torch.Tensor, t: torch.Tensor, w_dist: float = 1.0, w_angle: float = 2.0,
               coincident: str = "clamp") -> torch.Tensor:
    """w_dist * L_D + w_angle * L_A (spec §1) of one set: s, t are N x D."""
    with torch.no_grad():
        t_dist, t_angle = _potentials(t, coincident)
    s_dist, s_angle = _potentials(s, coincident)
    loss = s.new_zeros(())
    if w_dist:
        loss = loss + w_dist * F.smooth_l1_loss(s_dist, t_dist, beta=1.0)
    if w_angle:
        loss = loss + w_angle * F.smooth_l1_loss(s_angle, t_angle, beta=1.0)
    return loss


def slices_direct(img: torch.Tensor, granularity: str, patch_size: int) -> torch.Tensor:
    """The N x D vectors of one C x H x W image for 'rows', 'columns' or 'patches' (spec §2)."""
    c, h, w = img.shape
    if granularity == "rows":
        return img.permute(1, 0, 2).reshape(h, c * w)
    if granularity == "columns":
        return img.permute(2, 0, 1).reshape(w, c * h)
    if granularity == "patches":
        k = patch_size
        return F.unfold(img.unsqueeze(0), kernel_size=k, stride=k)[0].t()
    raise ValueError(granularity)


def crd_direct(
    student: torch.Tensor,
    teacher: torch.Tensor,
    patch_size: int = 32,
    w_dist: float = 1.0,
    w_angle: float = 2.0,
    granularities=("rows", "columns", "patches"),
    coincident: str = "clamp",
) -> torch.Tensor:
    """L_CRD (spec §2) of N x C x H x W images, averaged over the images."""
    total = student.new_zeros(())
    for s_img, t_img in zip(student, teacher):
        for g in granularities:
            total = total + rkd_direct(
                slices_direct(s_img, g, patch_size), slices_direct(t_img, g, patch_size), w_dist, w_angle, coincident
            )
    return total / student.shape[0]


def rkd_instance_direct(student: torch.Tensor, teacher: torch.Tensor, w_dist: float = 1.0, w_angle: float = 2.0):
    """RKD across a batch: each flattened image is one vector (Table 3 'rkd-instance')."""
    return rkd_direct(student.flatten(1), teacher.flatten(1), w_dist, w_angle)

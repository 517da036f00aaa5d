"""CRD / RKD losses (spec §1-§2) against the direct formulation in tests/reference_crd.py."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ganzip.errors import GanzipError
from ganzip.losses import CRDLoss, RelationalLoss, RKDInstanceLoss, build_loss, crd_slices, relational_loss
from tests.reference_crd import crd_direct, rkd_direct, rkd_instance_direct, slices_direct

RTOL = 1e-4  # the acceptance bound: float32 ganzip vs the direct formulation


def images(shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1).to(dtype)


def rel(a, b):
    return (abs(float(a) - float(b)) / abs(float(b)))


def grad_of(fn, student, teacher):
    s = student.detach().clone().requires_grad_(True)
    loss = fn(s, teacher)
    (g,) = torch.autograd.grad(loss, s)
    return loss.detach(), g


def grad_close(g, ref, tol=RTOL):
    return float((g - ref).abs().max() / ref.abs().max()) < tol


@pytest.mark.parametrize("shape,k", [((2, 3, 32, 32), 8), ((1, 3, 24, 40), 8), ((1, 1, 16, 32), 16)])
def test_loss_matches_direct_formulation(shape, k):
    s, t = images(shape, 0), images(shape, 1)
    assert rel(CRDLoss(patch_size=k)(s, t), crd_direct(s, t, patch_size=k)) < RTOL


def test_gradients_match_direct_formulation():
    s, t = images((2, 3, 32, 32), 2), images((2, 3, 32, 32), 3)
    loss, g = grad_of(CRDLoss(patch_size=8), s, t)
    ref_loss, ref_g = grad_of(lambda a, b: crd_direct(a, b, patch_size=8), s, t)
    assert rel(loss, ref_loss) < RTOL
    assert grad_close(g, ref_g)


@pytest.mark.parametrize("granularity", ["rows", "columns", "patches"])
def test_each_granularity_alone_matches_direct(granularity):
    s, t = images((1, 3, 32, 48), 4), images((1, 3, 32, 48), 5)
    loss, g = grad_of(CRDLoss(patch_size=8, granularities=(granularity,)), s, t)
    ref_loss, ref_g = grad_of(lambda a, b: crd_direct(a, b, 8, granularities=(granularity,)), s, t)
    assert rel(loss, ref_loss) < RTOL
    assert grad_close(g, ref_g)


@pytest.mark.parametrize("w_dist,w_angle", [(1.0, 0.0), (0.0, 1.0), (0.5, 3.0)])
def test_distance_and_angle_weights_match_direct(w_dist, w_angle):
    s, t = images((1, 3, 16, 16), 6), images((1, 3, 16, 16), 7)
    ours = CRDLoss(patch_size=4, w_dist=w_dist, w_angle=w_angle)(s, t)
    assert rel(ours, crd_direct(s, t, 4, w_dist, w_angle)) < RTOL


def test_moderate_size_matches_direct():
    # one larger case: 64 rows / columns of 192 values and 16 patches of 768
    s, t = images((1, 3, 64, 64), 8), images((1, 3, 64, 64), 9)
    loss, g = grad_of(CRDLoss(patch_size=16), s, t)
    ref_loss, ref_g = grad_of(lambda a, b: crd_direct(a, b, patch_size=16), s, t)
    assert rel(loss, ref_loss) < RTOL
    assert grad_close(g, ref_g)


# ----------------------------------------------------------------------------- exactness
# Issue 13 §1: loss and gradient within 1e-6 (float64 inputs) or 1e-4 (float32 inputs) of
# the direct formulation run in float64 on the same (rounded) inputs, as ||g - g_ref|| /
# ||g_ref||, for both precision paths, on inputs where a Gram-matrix expansion cancels.

RTOL64 = 1e-6  # float64 inputs
PRECISIONS = ("float64", "float32")
DTYPES = (torch.float64, torch.float32)


def grad_rel(g, ref):
    return float((g.double() - ref).norm() / ref.norm())


def assert_exact(student, teacher, precision, patch_size=8, granularities=("rows", "columns", "patches")):
    """ganzip against the float64 direct formulation on the same inputs; returns the
    reference gradient. Exactly repeated student vectors get ganzip's zero-gradient
    convention in the reference (`coincident="zero"`); values do not depend on it."""
    tol = RTOL64 if student.dtype == torch.float64 else RTOL
    crd = CRDLoss(patch_size=patch_size, granularities=granularities, precision=precision)
    loss, g = grad_of(crd, student, teacher)
    ref_loss, ref_g = grad_of(
        lambda a, b: crd_direct(a, b, patch_size, granularities=granularities, coincident="zero"),
        student.double(), teacher.double())
    assert g.dtype == student.dtype and loss.dtype == student.dtype
    assert rel(loss, ref_loss) < tol, f"loss off by {rel(loss, ref_loss):.1e}"
    assert grad_rel(g, ref_g) < tol, f"gradient off by {grad_rel(g, ref_g):.1e}"
    return ref_g


def half_flat(seed, noise, size=64):
    """Left half a near-white background 0.97 + noise * N(0, 1), right half uniform random."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, size, size, generator=g, dtype=torch.float64) * 2 - 1
    x[..., : size // 2] = 0.97 + noise * torch.randn(1, 3, size, size // 2, generator=g, dtype=torch.float64)
    return x


def bands(seed, noise, size=64):
    """Three flat horizontal colour bands plus noise * N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.rand(3, 3, generator=g, dtype=torch.float64) * 2 - 1
    band = torch.arange(size) * 3 // size  # 0, 1 or 2 for each image row
    x = colours[band].t().reshape(3, size, 1).expand(3, size, size).unsqueeze(0)
    return x + noise * torch.randn(1, 3, size, size, generator=g, dtype=torch.float64)


def clustered(seed, granularity, spread, size=32, k=8, n_clusters=4):
    """An image whose rows, columns or k x k patches come in `n_clusters` interleaved
    groups of nearly equal vectors: a base vector plus spread * N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.empty(1, 3, size, size, dtype=torch.float64)
    if granularity == "patches":
        bases = torch.rand(n_clusters, 3, k, k, generator=g, dtype=torch.float64) * 1.6 - 0.8
        for p in range(size // k * (size // k)):
            r, c = divmod(p, size // k)
            x[0, :, r * k:(r + 1) * k, c * k:(c + 1) * k] = bases[p % n_clusters]
    else:
        bases = torch.rand(n_clusters, 3, size, generator=g, dtype=torch.float64) * 1.6 - 0.8
        lines = bases[torch.arange(size) % n_clusters].permute(1, 0, 2)  # 3 x line x along
        x[0] = lines if granularity == "rows" else lines.transpose(1, 2)
    return x + spread * torch.randn(x.shape, generator=g, dtype=torch.float64)


ISSUE_CASES = {  # issue 13's table: 64 x 64 images, patch size 8
    "half-flat-1e-5": lambda seed: half_flat(seed, 1e-5),
    "half-flat-1e-6": lambda seed: half_flat(seed, 1e-6),
    "bands-1e-5": lambda seed: bands(seed, 1e-5),
    "bands-1e-6": lambda seed: bands(seed, 1e-6),
}


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ISSUE_CASES)
def test_flat_regions_match_direct_formulation(case, dtype, precision):
    make = ISSUE_CASES[case]
    assert_exact(make(30).to(dtype), make(31).to(dtype), precision)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spread", [1e-4, 1e-5, 1e-6])
@pytest.mark.parametrize("granularity", ["rows", "columns", "patches"])
def test_clustered_vectors_match_direct_formulation(granularity, spread, dtype, precision):
    s, t = clustered(32, granularity, spread), clustered(33, granularity, spread)
    assert_exact(s.to(dtype), t.to(dtype), precision)


def gram_formulation(s, t, patch_size=8):
    """ganzip 0.1's arithmetic, written out for this check: angle numerators and squared
    distances from the float64 Gram matrix of each set, centred on its mean."""
    def potentials(x):
        x = x - x.mean(dim=0)
        gram = x @ x.t()
        sq = gram.diagonal()
        d2 = (sq[:, None] + sq[None, :] - 2 * gram).clamp_min(0)
        dist = torch.where(d2 > 0, d2.clamp_min(1e-300).sqrt(), 0.0)
        inner = gram[None] - gram[:, :, None] - gram[:, None, :] + sq[:, None, None]  # [i, j, k]
        inv = torch.where(dist > 0, 1 / dist.clamp_min(1e-300), 0.0)
        return dist / (dist.sum() / (len(x) * (len(x) - 1))), (inner * inv[:, :, None] * inv[:, None, :]).reshape(-1)

    total = 0.0
    for g in ("rows", "columns", "patches"):
        ds, cs = potentials(slices_direct(s[0], g, patch_size))
        dt, ct = potentials(slices_direct(t[0], g, patch_size))
        total = total + F.smooth_l1_loss(ds, dt.detach()) + 2 * F.smooth_l1_loss(cs, ct.detach())
    return total


def test_the_clustered_cases_defeat_a_centred_float64_gram_matrix():
    # why the cases above are hard: the Gram expansion of ganzip 0.1, in float64 and
    # centred on the set mean, gets the loss value right but not the gradient
    s, t = clustered(32, "rows", 1e-6), clustered(33, "rows", 1e-6)
    loss, g = grad_of(gram_formulation, s, t)
    ref_loss, ref_g = grad_of(lambda a, b: crd_direct(a, b, 8, coincident="zero"), s, t)
    assert rel(loss, ref_loss) < 1e-4
    assert grad_rel(g, ref_g) > 10 * RTOL64


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_random_inputs_match_direct_formulation(dtype, precision):
    assert_exact(images((2, 3, 32, 32), 34, torch.float64).to(dtype), images((2, 3, 32, 32), 35).to(dtype), precision)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_mixing_flat_and_textured_images_matches_per_image(dtype, precision):
    parts = [bands(36, 1e-6), images((1, 3, 64, 64), 37, torch.float64), half_flat(38, 1e-6),
             clustered(39, "patches", 1e-5, size=64)]
    s = torch.cat(parts).to(dtype)
    t = torch.cat([bands(40, 1e-6), half_flat(41, 1e-5), images((1, 3, 64, 64), 42, torch.float64),
                   clustered(43, "patches", 1e-5, size=64)]).to(dtype)
    ref_g = assert_exact(s, t, precision)
    # each image's own gradient too, not only the batch's norm (which flat images dominate)
    _, g = grad_of(CRDLoss(patch_size=8, precision=precision), s, t)
    tol = RTOL64 if dtype == torch.float64 else RTOL
    for i in range(len(parts)):
        assert grad_rel(g[i], ref_g[i]) < tol, f"image {i}"


def repeated(seed):
    """Random 16 x 16 images with exactly repeated rows, columns and 4 x 4 patches."""
    x = images((1, 3, 16, 16), seed, torch.float64)
    x[:, :, 4:9] = x[:, :, 4:5]
    x[:, :, :, 10:13] = x[:, :, :, 10:11]
    x[:, :, 12:16, 12:16] = x[:, :, 0:4, 0:4]
    return x


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_exactly_repeated_vectors_match_direct_formulation(dtype, precision):
    s, t = repeated(44), repeated(45)
    t[:, :, 1:3] = t[:, :, 7:8]  # the teacher repeats other rows than the student
    assert_exact(s.to(dtype), t.to(dtype), precision, patch_size=4)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_repeated_teacher_rows_gradients_match_direct(precision):
    # with repeats on the teacher side only, the reference's own convention applies as is
    s, t = images((1, 3, 16, 16), 16), images((1, 3, 16, 16), 17)
    t[:, :, 3:8] = t[:, :, 3:4]
    _, g = grad_of(CRDLoss(patch_size=4, precision=precision), s, t)
    _, ref_g = grad_of(lambda a, b: crd_direct(a, b, patch_size=4), s.double(), t.double())
    assert grad_rel(g, ref_g) < RTOL


@pytest.mark.parametrize("precision", PRECISIONS)
def test_constant_student_against_a_textured_teacher(precision):
    # every student vector coincides: the loss is the teacher's relations against none
    # (nonzero, and the same as the direct formulation's), and every pair is coincident,
    # so by ganzip's convention the gradient is exactly zero
    s = torch.full((1, 3, 8, 8), 0.25)
    t = images((1, 3, 8, 8), 46)
    loss, g = grad_of(CRDLoss(patch_size=4, precision=precision), s, t)
    ref = crd_direct(s.double(), t.double(), patch_size=4)
    assert float(ref) > 0.1
    assert rel(loss, ref) < RTOL
    assert torch.count_nonzero(g) == 0


@pytest.mark.parametrize("precision", PRECISIONS)
def test_gradient_matches_finite_differences_on_a_tight_group(precision):
    # a tiny float64 case with two tight groups of rows (spread 1e-3): central differences
    # of the loss itself, independent of any analytic gradient
    s, t = clustered(47, "rows", 1e-3, size=8, k=4, n_clusters=2), clustered(48, "rows", 1e-3, size=8, k=4)
    crd = CRDLoss(patch_size=4, precision=precision)
    _, g = grad_of(crd, s, t)
    coords = torch.randperm(s.numel(), generator=torch.Generator().manual_seed(49))[:12]
    h = 1e-7
    for c in coords.tolist():
        up, down = s.clone().view(-1), s.clone().view(-1)
        up[c] += h
        down[c] -= h
        fd = (float(crd(up.view_as(s), t)) - float(crd(down.view_as(s), t))) / (2 * h)
        assert abs(fd - float(g.view(-1)[c])) < 1e-5 * float(g.norm()), f"coordinate {c}"


def nested_clusters(seed, dim=24):
    """3 groups 1e-3 apart, each of 2 subgroups 1e-7 apart, each of 3 vectors 1e-11 apart,
    plus exact repeats: every level of a Gram matrix's cancellation at once."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 1, 1, dim, generator=g, dtype=torch.float64)
    x = x + 1e-3 * torch.randn(3, 2, 1, dim, generator=g, dtype=torch.float64)
    x = x + 1e-7 * torch.randn(3, 2, 3, dim, generator=g, dtype=torch.float64)
    x = x.reshape(18, dim) + 1e-11 * torch.randn(18, dim, generator=g, dtype=torch.float64)
    return torch.cat([x, x[:2], 5 + torch.randn(3, dim, generator=g, dtype=torch.float64)]).unsqueeze(0)


@pytest.mark.parametrize("depth", [0, 8])  # 8: the explicit-difference fallback at once
def test_squared_distances_are_exact_entry_by_entry(depth):
    from ganzip.losses.crd import _sq_distances

    x = nested_clusters(54)
    truth = ((x[0].unsqueeze(0) - x[0].unsqueeze(1)) ** 2).sum(dim=2)
    d2 = _sq_distances(x, depth)[0]
    off = ~torch.eye(len(truth), dtype=torch.bool)
    assert torch.all((d2 - truth).abs()[off] <= 1e-13 * truth[off])
    assert torch.count_nonzero(d2[0, 18]) == 0 and torch.count_nonzero(d2[1, 19]) == 0  # the repeats


@pytest.mark.parametrize("depth", [0, 8])
def test_squared_distances_backward_passes_gradcheck(depth):
    from ganzip.losses.crd import _sq_distances

    g = torch.Generator().manual_seed(55)
    x = torch.randn(2, 1, 6, generator=g, dtype=torch.float64) + 1e-3 * torch.randn(2, 4, 6, generator=g,
                                                                                    dtype=torch.float64)
    x = torch.cat([x, 3 + torch.randn(2, 2, 6, generator=g, dtype=torch.float64)], dim=1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: _sq_distances(v, depth), (x,))


def test_float32_precision_never_computes_in_float64():
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = set()

    class Dtypes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for x in (out if isinstance(out, (tuple, list)) else (out,)):
                if isinstance(x, torch.Tensor):
                    seen.add(x.dtype)
            return out

    s, t = bands(50, 1e-6, size=16).float().requires_grad_(True), bands(51, 1e-6, size=16).float()
    with Dtypes():
        CRDLoss(patch_size=4, precision="float32")(s, t).backward()
    assert torch.float32 in seen and torch.float64 not in seen
    assert s.grad is not None and torch.isfinite(s.grad).all()


def test_auto_precision_is_float64_on_cpu_and_float32_on_gpus():
    from ganzip.losses.crd import resolve_precision

    assert resolve_precision("auto", torch.device("cpu")) == "float64"
    assert resolve_precision("auto", torch.device("cuda")) == "float32"
    assert resolve_precision("float64", torch.device("cuda")) == "float64"
    with pytest.raises(GanzipError, match="precision"):
        CRDLoss(precision="float16")


def test_precision_changes_the_loss_value_by_float_rounding_only():
    s, t = images((1, 3, 32, 32), 52), images((1, 3, 32, 32), 53)
    values = [CRDLoss(patch_size=8, precision=p)(s, t) for p in PRECISIONS]
    assert rel(values[0], values[1]) < 1e-6


def test_teacher_receives_no_gradient():
    s = images((1, 3, 16, 16), 18).requires_grad_(True)
    t = images((1, 3, 16, 16), 19).requires_grad_(True)
    CRDLoss(patch_size=4)(s, t).backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0


@pytest.mark.parametrize("precision", PRECISIONS)
def test_analytic_backward_passes_gradcheck(precision):
    s = torch.randn(2, 6, 5, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 6, 5, dtype=torch.float64)
    with torch.no_grad():
        s[0, 4] = s[0, 1] + 1e-3 * torch.randn(5, dtype=torch.float64)  # one close pair
    assert torch.autograd.gradcheck(lambda x: relational_loss(x, t, chunk_size=4, precision=precision), (s,))


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_chunk_size_changes_nothing(chunk, precision):
    s, t = images((1, 3, 16, 24), 20), images((1, 3, 16, 24), 21)
    ref = CRDLoss(patch_size=8, precision=precision)(s, t)
    loss, g = grad_of(CRDLoss(patch_size=8, chunk_size=chunk, precision=precision), s, t)
    _, ref_g = grad_of(CRDLoss(patch_size=8, precision=precision), s, t)
    assert rel(loss, ref) < 1e-6
    assert grad_rel(g, ref_g.double()) < 1e-6


def test_batch_loss_is_mean_over_images():
    s, t = images((3, 3, 16, 16), 22), images((3, 3, 16, 16), 23)
    crd = CRDLoss(patch_size=8)
    each = [crd(s[i:i + 1], t[i:i + 1]) for i in range(3)]
    assert rel(crd(s, t), sum(each) / 3) < 1e-6


def test_slices_follow_the_image_layout():
    x = images((2, 3, 8, 12), 24)
    rows, cols, patches = (crd_slices(x, g, 4) for g in ("rows", "columns", "patches"))
    assert rows.shape == (2, 8, 36) and cols.shape == (2, 12, 24) and patches.shape == (2, 6, 48)
    assert torch.equal(rows[1, 5], x[1, :, 5, :].reshape(-1))
    assert torch.equal(cols[0, 7], x[0, :, :, 7].reshape(-1))
    # patch index runs row-major over the 2 x 3 grid of 4 x 4 patches
    assert torch.equal(patches[1, 4], x[1, :, 4:8, 4:8].reshape(-1))
    assert torch.equal(patches[1], slices_direct(x[1], "patches", 4))


def test_patch_size_not_dividing_is_an_error_naming_the_side():
    crd = CRDLoss(patch_size=8)
    x = torch.zeros(1, 3, 16, 20)
    with pytest.raises(GanzipError, match=r"width 20.*crop=True"):
        crd(x, x)


def test_crop_uses_central_region_for_patches_only():
    s, t = images((1, 3, 20, 18), 25), images((1, 3, 20, 18), 26)
    ours = CRDLoss(patch_size=8, crop=True)(s, t)
    centre = (slice(None), slice(None), slice(2, 18), slice(1, 17))
    expected = crd_direct(s, t, granularities=("rows", "columns")) + crd_direct(
        s[centre], t[centre], patch_size=8, granularities=("patches",))
    assert rel(ours, expected) < RTOL


def test_mismatched_shapes_are_an_error():
    with pytest.raises(GanzipError, match="same"):
        CRDLoss(patch_size=4)(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 12))


def test_unknown_or_empty_granularities_are_errors():
    with pytest.raises(GanzipError, match="granularity"):
        CRDLoss(granularities=("rows", "diagonals"))
    with pytest.raises(GanzipError, match="at least one"):
        CRDLoss(granularities=())


def test_recipe_flags_select_granularities():
    crd = CRDLoss(rows=True, columns=False, patches=True, distance_weight=0.5, angle_weight=3.0)
    assert crd.granularities == ("rows", "patches")
    assert (crd.w_dist, crd.w_angle) == (0.5, 3.0)


def test_relational_loss_on_sets_matches_direct_per_set():
    g = torch.Generator().manual_seed(27)
    s, t = torch.randn(3, 10, 7, generator=g), torch.randn(3, 10, 7, generator=g)
    per_set = relational_loss(s, t, reduction="none")
    for i in range(3):
        assert rel(per_set[i], rkd_direct(s[i], t[i])) < RTOL
    assert rel(RelationalLoss()(s, t), per_set.mean()) < 1e-6


def test_rkd_instance_relates_the_images_of_a_batch():
    s, t = images((5, 3, 8, 8), 28), images((5, 3, 8, 8), 29)
    loss, g = grad_of(RKDInstanceLoss(), s, t)
    ref_loss, ref_g = grad_of(rkd_instance_direct, s, t)
    assert rel(loss, ref_loss) < RTOL
    assert grad_close(g, ref_g)


def test_rkd_instance_needs_two_images():
    with pytest.raises(GanzipError, match="batch of at least 2"):
        RKDInstanceLoss()(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def test_registry_builds_crd_and_rkd():
    assert isinstance(build_loss("crd", patch_size=8), CRDLoss)
    assert isinstance(build_loss("rkd_instance"), RKDInstanceLoss)

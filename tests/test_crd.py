"""CRD / RKD losses (spec §1-§2) against the direct formulation in tests/reference_crd.py."""
from __future__ import annotations

import pytest
import torch

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


def clustered_rows(seed, n_clusters=4, rows_per_cluster=8, width=32, spread=1e-4):
    """An image whose rows come in clusters of nearly equal rows (differences ~1e-4 of the
    values): the Gram-matrix expansion cancels catastrophically on them in float32."""
    g = torch.Generator().manual_seed(seed)
    bases = torch.rand(n_clusters, 1, 3, width, generator=g, dtype=torch.float64) * 1.6 - 0.8
    noise = torch.randn(n_clusters, rows_per_cluster, 3, width, generator=g, dtype=torch.float64) * spread
    rows = (bases + noise).reshape(n_clusters * rows_per_cluster, 3, width)
    return rows.permute(1, 0, 2).unsqueeze(0).float()  # 1 x 3 x H x W


def test_nearly_equal_rows_keep_float32_accuracy():
    s, t = clustered_rows(10), clustered_rows(11)
    truth = crd_direct(s.double(), t.double(), patch_size=8, granularities=("rows",))
    ours = CRDLoss(patch_size=8, granularities=("rows",))(s, t)
    assert rel(ours, truth) < RTOL
    # the case really is ill-conditioned: the same Gram arithmetic in float32 is far off
    naive = relational_loss(crd_slices(s, "rows"), crd_slices(t, "rows"), compute_dtype=torch.float32)
    assert rel(naive, truth) > 100 * RTOL


def test_nearly_equal_rows_gradients_match_float64_direct():
    s, t = clustered_rows(12), clustered_rows(13)
    _, g = grad_of(CRDLoss(patch_size=8, granularities=("rows",)), s, t)
    _, ref_g = grad_of(lambda a, b: crd_direct(a, b, 8, granularities=("rows",)), s.double(), t.double())
    assert grad_close(g.double(), ref_g)


def test_exactly_repeated_rows_match_direct():
    # flat regions repeat rows exactly: a coincident pair has a zero difference vector
    s, t = images((1, 3, 16, 16), 14), images((1, 3, 16, 16), 15)
    s[:, :, 4:9] = s[:, :, 4:5]
    t[:, :, 2:6] = t[:, :, 2:3]
    t[:, :, :, 7:12] = t[:, :, :, 7:8]
    loss, g = grad_of(CRDLoss(patch_size=4), s, t)
    assert rel(loss, crd_direct(s, t, patch_size=4)) < RTOL
    assert torch.isfinite(g).all()


def test_repeated_teacher_rows_gradients_match_direct():
    s, t = images((1, 3, 16, 16), 16), images((1, 3, 16, 16), 17)
    t[:, :, 3:8] = t[:, :, 3:4]
    _, g = grad_of(CRDLoss(patch_size=4), s, t)
    _, ref_g = grad_of(lambda a, b: crd_direct(a, b, patch_size=4), s, t)
    assert grad_close(g, ref_g)


def test_constant_images_give_zero_loss_and_gradient():
    s = torch.full((1, 3, 8, 8), 0.25)
    t = torch.full((1, 3, 8, 8), -0.5)
    loss, g = grad_of(CRDLoss(patch_size=4), s, t)
    assert float(loss) == 0.0
    assert torch.count_nonzero(g) == 0


def test_teacher_receives_no_gradient():
    s = images((1, 3, 16, 16), 18).requires_grad_(True)
    t = images((1, 3, 16, 16), 19).requires_grad_(True)
    CRDLoss(patch_size=4)(s, t).backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_analytic_backward_passes_gradcheck():
    s = torch.randn(2, 6, 5, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 6, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: relational_loss(x, t, chunk_size=4), (s,))


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_chunk_size_changes_nothing(chunk):
    s, t = images((1, 3, 16, 24), 20), images((1, 3, 16, 24), 21)
    ref = CRDLoss(patch_size=8)(s, t)
    assert rel(CRDLoss(patch_size=8, chunk_size=chunk)(s, t), ref) < 1e-6


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

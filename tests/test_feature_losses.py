"""Feature distillation losses against independent float64 computations written here."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ganzip.errors import GanzipError
from ganzip.losses.feature import GCFeatureLoss, KernelAlignmentLoss, kernel_alignment


def _np(t):
    return t.detach().double().numpy()


def _ka_reference(x, y):
    """KA = <Kx, Ky>_F / (||Kx||_F ||Ky||_F) with the full sample-by-sample kernels K = X X^T."""
    kx, ky = x @ x.T, y @ y.T
    return float((kx * ky).sum() / np.sqrt((kx**2).sum() * (ky**2).sum()))


def test_gc_feature_is_the_sum_over_layers_of_the_mean_squared_error_after_a_1x1_map():
    torch.manual_seed(0)
    feats = {"a": (torch.randn(2, 3, 4, 5), torch.randn(2, 6, 4, 5)),
             "b": (torch.randn(2, 2, 3, 3), torch.randn(2, 4, 3, 3))}
    loss = GCFeatureLoss(["a", "b"], [(3, 6), (2, 4)], seed=1)
    expected = 0.0
    for i, (s, t) in enumerate(feats.values()):
        w = _np(loss.maps[i].weight)[:, :, 0, 0]  # (teacher C, student C)
        b = _np(loss.maps[i].bias)
        mapped = np.einsum("ts,nshw->nthw", w, _np(s)) + b[None, :, None, None]
        expected += ((mapped - _np(t)) ** 2).mean()
    assert float(loss(feats).detach()) == pytest.approx(expected, rel=1e-5)


def test_gc_maps_are_seeded_apart_from_the_global_rng_and_train():
    state = torch.get_rng_state()
    a = GCFeatureLoss(["x"], [(4, 8)], seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # building the maps draws nothing from the global stream
    b = GCFeatureLoss(["x"], [(4, 8)], seed=3)
    assert torch.equal(a.maps[0].weight, b.maps[0].weight)
    assert float(a.maps[0].weight.std()) == pytest.approx(0.02, rel=0.3) and not a.maps[0].bias.any()
    assert sorted(dict(a.named_parameters())) == ["maps.0.bias", "maps.0.weight"]
    s, t = torch.randn(1, 4, 3, 3), torch.randn(1, 8, 3, 3)
    loss = a({"x": (s, t)})
    loss.backward()
    assert a.maps[0].weight.grad is not None


def test_gc_feature_takes_bf16_and_channels_last_maps_and_names_a_missing_layer():
    loss = GCFeatureLoss(["x"], [(4, 8)])
    s = torch.randn(2, 4, 5, 5).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    t = torch.randn(2, 8, 5, 5).to(torch.bfloat16)
    assert loss({"x": (s, t)}).dtype == torch.float32
    with pytest.raises(GanzipError, match="no tapped features for layer 'x'"):
        loss({"y": (s, t)})


def test_kernel_alignment_over_positions_matches_the_full_position_kernels():
    torch.manual_seed(0)
    x, y = torch.randn(3, 4, 5, 6), torch.randn(3, 7, 5, 6)  # widths differ
    expected = np.mean([_ka_reference(_np(x[i]).reshape(4, -1).T, _np(y[i]).reshape(7, -1).T) for i in range(3)])
    assert float(kernel_alignment(x, y, "positions")) == pytest.approx(expected, rel=1e-5)


def test_kernel_alignment_over_the_batch_is_cats_released_formula():
    torch.manual_seed(1)
    x, y = torch.randn(4, 3, 5, 5), torch.randn(4, 6, 5, 5)
    assert float(kernel_alignment(x, y, "batch")) == pytest.approx(
        _ka_reference(_np(x).reshape(4, -1), _np(y).reshape(4, -1)), rel=1e-5)
    # one image: the kernels are 1x1 and KA is 1 whatever the features (why "positions" is the default)
    assert float(kernel_alignment(x[:1], y[:1], "batch")) == pytest.approx(1.0)


def test_kernel_alignment_is_one_for_equal_maps_and_ignores_scale_and_channel_rotation():
    torch.manual_seed(2)
    x = torch.randn(2, 5, 4, 4)
    q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))
    rotated = torch.einsum("dc,nchw->ndhw", q.float(), x) * 7.0
    assert float(kernel_alignment(x, x)) == pytest.approx(1.0, abs=1e-6)
    assert float(kernel_alignment(x, rotated)) == pytest.approx(1.0, abs=1e-5)
    assert 0.0 <= float(kernel_alignment(x, torch.randn(2, 3, 4, 4))) < 1.0


def test_kernel_alignment_loss_is_the_sum_of_one_minus_ka_and_pulls_the_student_closer():
    torch.manual_seed(3)
    t = {"a": torch.randn(1, 6, 4, 4), "b": torch.randn(1, 6, 2, 2)}
    s = {k: torch.randn(1, 3, *v.shape[2:], requires_grad=True) for k, v in t.items()}
    loss = KernelAlignmentLoss(["a", "b"])
    feats = {k: (s[k], t[k]) for k in t}
    value = loss(feats)
    assert float(value) == pytest.approx(sum(1 - float(kernel_alignment(s[k], t[k])) for k in t), rel=1e-6)
    opt = torch.optim.SGD(list(s.values()), lr=0.5)
    first = float(value)
    for _ in range(20):
        opt.zero_grad()
        loss({k: (s[k], t[k]) for k in t}).backward()
        opt.step()
    assert float(loss({k: (s[k], t[k]) for k in t})) < first
    assert list(loss.parameters()) == []


def test_kernel_alignment_refuses_an_unknown_reading_and_zero_maps_give_no_nan():
    with pytest.raises(GanzipError, match="kernel_alignment.over = 'pixels' is not one of: positions, batch"):
        KernelAlignmentLoss(["a"], over="pixels")
    z = torch.zeros(1, 2, 3, 3)
    assert torch.isfinite(kernel_alignment(z, torch.randn(1, 4, 3, 3)))

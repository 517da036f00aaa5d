"""PSNR, SSIM and LPIPS against reference implementations on the same inputs.

LPIPS's AlexNet backbone (torchvision ImageNet weights) is not available
here: the tests use a seeded random-weight AlexNet saved to a file inside
the test, and compare ganzip's LPIPS with the lpips package building the
same network through its own code path.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ganzip.errors import AssetMissingError, GanzipError
from ganzip.metrics import fidelity


def _ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. SSIM written directly with scipy's Gaussian filter (skimage's recipe), one HxWxC image."""
    from scipy.ndimage import gaussian_filter

    def filt(x):
        return gaussian_filter(x, sigma=1.5, truncate=3.5, mode="reflect")  # radius 5: an 11x11 window

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    values = []
    for ch in range(a.shape[2]):
        x, y = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)
        ux, uy = filt(x), filt(y)
        vx, vy, vxy = filt(x * x) - ux * ux, filt(y * y) - uy * uy, filt(x * y) - ux * uy
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
        values.append(s[5:-5, 5:-5].mean())  # positions where the whole window lies inside the image
    return float(np.mean(values))


@pytest.fixture
def pair():
    rng = np.random.RandomState(0)
    a = rng.rand(2, 3, 40, 33)
    b = np.clip(a + rng.randn(*a.shape) * 0.1, 0, 1)
    return a, b


def test_ssim_matches_a_direct_implementation(pair):
    a, b = pair
    ours = fidelity.ssim(torch.tensor(a), torch.tensor(b))
    for i in range(2):
        ref = _ssim_reference(a[i].transpose(1, 2, 0), b[i].transpose(1, 2, 0))
        assert float(ours[i]) == pytest.approx(ref, abs=1e-7)


def test_ssim_matches_scikit_image_when_installed(pair):
    metrics = pytest.importorskip("skimage.metrics")
    a, b = pair
    ours = fidelity.ssim(torch.tensor(a), torch.tensor(b))
    for i in range(2):
        ref = metrics.structural_similarity(a[i].transpose(1, 2, 0), b[i].transpose(1, 2, 0), gaussian_weights=True,
                                            sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=2)
        assert float(ours[i]) == pytest.approx(ref, abs=1e-7)


def test_ssim_of_an_image_with_itself_is_one(pair):
    a, _ = pair
    np.testing.assert_allclose(fidelity.ssim(torch.tensor(a), torch.tensor(a)).numpy(), 1.0, atol=1e-12)


def test_ssim_refuses_images_smaller_than_the_window():
    with pytest.raises(GanzipError, match="at least 11x11"):
        fidelity.ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def _gradient_energy_reference(img: np.ndarray) -> float:
    """Mean Sobel magnitude of the BT.601 luma of one CxHxW image, with scipy's Sobel (edges replicated)."""
    from scipy.ndimage import sobel

    luma = 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]
    return float(np.hypot(sobel(luma, axis=0, mode="nearest"), sobel(luma, axis=1, mode="nearest")).mean())


def test_gradient_energy_matches_scipys_sobel(pair):
    a, _ = pair
    got = fidelity.gradient_energy(torch.from_numpy(a)).numpy()
    assert got == pytest.approx([_gradient_energy_reference(x) for x in a], rel=1e-12)


def test_sharpness_is_below_one_for_a_blurred_image_and_one_for_itself(pair):
    from scipy.ndimage import gaussian_filter

    a, _ = pair
    blurred = np.stack([gaussian_filter(x, sigma=(0, 1.5, 1.5), mode="nearest") for x in a])
    ta, tb = torch.from_numpy(a), torch.from_numpy(blurred)
    expected = [_gradient_energy_reference(x) / _gradient_energy_reference(y) for x, y in zip(blurred, a)]
    assert fidelity.sharpness(tb, ta).double().numpy() == pytest.approx(expected, rel=1e-6)
    assert (fidelity.sharpness(tb, ta) < 0.5).all()
    assert fidelity.sharpness(ta, ta).numpy() == pytest.approx(1.0)
    grey = ta[:, :1]
    assert fidelity.sharpness(grey, grey).numpy() == pytest.approx(1.0)


def test_psnr_of_a_constant_offset():
    a = torch.full((1, 3, 16, 16), 0.5)
    assert float(fidelity.psnr(a, a + 0.1)[0]) == pytest.approx(20.0, abs=1e-5)  # mse 0.01


def test_psnr_of_identical_images_is_capped():
    a = torch.rand(2, 3, 8, 8)
    assert fidelity.psnr(a, a).tolist() == [fidelity.PSNR_MAX_DB] * 2


def test_shapes_must_match():
    with pytest.raises(GanzipError, match="different shapes"):
        fidelity.psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))


@pytest.fixture
def alexnet_standin(tmp_path_factory):
    """torchvision AlexNet with seeded random weights, saved like alexnet-owt-7be5be79.pth."""
    from .metrics_standins import alexnet_standin

    return alexnet_standin(tmp_path_factory)


def test_lpips_matches_the_lpips_package_on_the_same_backbone(alexnet_standin, monkeypatch):
    import contextlib
    import io

    import lpips
    import torchvision

    from ganzip.metrics.lpips import load_lpips

    with pytest.warns(UserWarning, match="unverified"):
        ours = load_lpips("alex", alexnet_standin, device="cpu")
    assert ours.backbone["verified"] is False

    state = torch.load(alexnet_standin, weights_only=True)
    real_alexnet = torchvision.models.alexnet

    def alexnet_from_file(*args, **kwargs):
        net = real_alexnet(weights=None)
        net.load_state_dict(state)
        return net

    # The reference: lpips builds its backbone itself (pnet_rand=False) from "pretrained" torchvision
    # weights, which here come from the stand-in file, and loads its own linear layers.
    monkeypatch.setattr(torchvision.models, "alexnet", alexnet_from_file)
    with contextlib.redirect_stdout(io.StringIO()):
        reference = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=False, verbose=False).eval()

    torch.manual_seed(1)
    a = torch.rand(3, 3, 64, 64) * 2 - 1
    b = (a + 0.3 * torch.randn_like(a)).clamp(-1, 1)
    with torch.no_grad():
        expected = reference(a, b).flatten()
    got = ours(a, b)
    assert float(expected.abs().min()) > 0
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert ours(a, a).abs().max() < 1e-6


def test_lpips_without_its_backbone_names_the_file(tmp_path, monkeypatch):
    from ganzip.metrics.lpips import load_lpips

    monkeypatch.setenv("GANZIP_HOME", str(tmp_path / "g"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "t"))
    with pytest.raises(AssetMissingError, match="alexnet-owt-7be5be79.pth"):
        load_lpips("alex", offline=True)


def test_lpips_refuses_a_file_that_is_not_an_alexnet(tmp_path):
    from ganzip.metrics.lpips import load_lpips

    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(2, 2)}, bad)
    with pytest.warns(UserWarning), pytest.raises(GanzipError, match="features"):
        load_lpips("alex", bad)


def test_summarize_gives_mean_std_and_count():
    s = fidelity.summarize(torch.tensor([1.0, 2.0, 3.0]))
    assert s == {"mean": 2.0, "std": pytest.approx(np.std([1, 2, 3])), "count": 3}

"""FID/KID: ganzip against pytorch-fid on the same weights, statistics files and caching, bad input.

The real pt_inception-2015-12-05 weights are not available here. Every test
uses a stand-in made inside the test: pytorch-fid's own FID Inception
structure with seeded random weights (batch-norm statistics calibrated on
random smooth images), saved to a .pth that both ganzip and pytorch-fid load.

Dimensions: ganzip's features are checked against pytorch-fid's at the full
2048-d pool3 output on a few images. The FID itself is compared at 192-d
(pytorch-fid's second block): scipy's sqrtm of a 2048x2048 product takes
45-90 s on this 2-core machine, per call, which is too slow for a unit test;
the Fréchet code path is the same at every size.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ganzip.errors import GanzipError
from ganzip.metrics import fid as fidm
from ganzip.metrics.kid import kernel_inception_distance, mmd2_unbiased

N_IMAGES = 12


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("GANZIP_HOME", str(tmp_path / "ganzip"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "ganzip"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random-weight stand-in for pt_inception-2015-12-05-6726825d.pth (seeded)."""
    from .metrics_standins import inception_standin

    return inception_standin(tmp_path_factory)


def _write_folder(folder, n, offset, seed, size=64):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    for i in range(n):
        low = rng.randint(0, 196, (8, 8, 3)).astype(np.uint8)
        img = Image.fromarray(low).resize((size, size), Image.BILINEAR)
        arr = np.clip(np.asarray(img).astype(int) + offset, 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    return _write_folder(root / "a", N_IMAGES, 0, 1), _write_folder(root / "b", N_IMAGES, 50, 2)


@pytest.fixture(scope="module")
def extractor192(weights):
    with pytest.warns(UserWarning):  # the stand-in is not the published file
        return fidm.load_inception(weights, dims=192, device="cpu")


@pytest.fixture(scope="module")
def fid192(folders, extractor192):
    """ganzip's FID (and KID) between the two folders at 192-d, computed once for this module."""
    return fidm.compute_fid(*folders, dims=192, batch_size=6, kid=True, progress=False, cache=False,
                            extractor=extractor192)


def _pytorch_fid_model(weights, dims):
    """pytorch-fid's InceptionV3, built by pytorch-fid itself with its URL loader reading the stand-in."""
    import pytorch_fid.inception as pfi

    state = torch.load(weights, map_location="cpu", weights_only=True)
    original = pfi.load_state_dict_from_url
    pfi.load_state_dict_from_url = lambda url, *a, **k: state
    try:
        return pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[dims]]).eval()
    finally:
        pfi.load_state_dict_from_url = original


def test_features_equal_pytorch_fid_at_2048_dims(weights, folders):
    from pytorch_fid.fid_score import get_activations

    files = fidm.list_images(folders[0])[:2]
    with pytest.warns(UserWarning):
        ours = fidm.load_inception(weights, dims=2048, device="cpu").from_files(files, batch_size=1, progress=False)
    theirs = get_activations(files, _pytorch_fid_model(weights, 2048), batch_size=1, dims=2048, device="cpu",
                             num_workers=0)
    assert ours.shape == (2, 2048)
    assert np.abs(theirs).mean() > 0.1  # the stand-in gives non-trivial features
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:The `disp` argument:DeprecationWarning")  # inside pytorch-fid
def test_fid_equals_pytorch_fid_on_the_same_folders(weights, folders, fid192):
    from pytorch_fid.fid_score import calculate_activation_statistics, calculate_frechet_distance

    ours = fid192
    model = _pytorch_fid_model(weights, 192)
    m1, s1 = calculate_activation_statistics(fidm.list_images(folders[0]), model, 6, 192, "cpu", 0)
    m2, s2 = calculate_activation_statistics(fidm.list_images(folders[1]), model, 6, 192, "cpu", 0)
    theirs = calculate_frechet_distance(m1, s1, m2, s2)
    assert theirs > 1.0
    assert abs(ours.fid - theirs) < 1e-3
    assert ours.count_a == ours.count_b == N_IMAGES


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    rng = np.random.RandomState(0)
    mu1, mu2 = rng.randn(16), rng.randn(16)
    a, b = rng.rand(16) + 0.5, rng.rand(16) + 0.5
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert fidm.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-9)


@pytest.mark.filterwarnings("ignore:The `disp` argument:DeprecationWarning")  # inside pytorch-fid
def test_frechet_distance_matches_pytorch_fid_on_full_covariances():
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.RandomState(1)
    x, y = rng.randn(200, 32), rng.randn(200, 32) * 1.3 + 0.2
    args = (x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert fidm.frechet_distance(*args) == pytest.approx(calculate_frechet_distance(*args), abs=1e-9)


def test_a_singular_product_falls_back_to_the_epsilon_offset_with_a_warning(monkeypatch):
    calls = []
    real = fidm._sqrtm

    def flaky(m):
        calls.append(m)
        return np.full_like(m, np.inf) if len(calls) == 1 else real(m)

    monkeypatch.setattr(fidm, "_sqrtm", flaky)
    with pytest.warns(fidm.MetricWarning, match="singular"):
        value = fidm.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(3))
    assert len(calls) == 2
    np.testing.assert_allclose(calls[1], (np.eye(3) * (1 + 1e-6)) @ (np.eye(3) * (1 + 1e-6)))
    # as pytorch-fid: the offset enters the root but not the traces, 2 * 3 - 2 * 3 * (1 + eps)
    assert value == pytest.approx(-6e-6, rel=1e-6)


def test_a_large_imaginary_component_is_an_error(monkeypatch):
    monkeypatch.setattr(fidm, "_sqrtm", lambda m: np.eye(2) * (1 + 0.5j))
    with pytest.raises(GanzipError, match="imaginary"):
        fidm.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2))


def test_sqrtm_works_with_scipy_versions_that_return_a_tuple(monkeypatch):
    import scipy.linalg

    real = scipy.linalg.sqrtm
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda m, *a, **k: (real(m), 0.0))  # SciPy < 1.x style
    assert fidm.frechet_distance(np.zeros(2), 4 * np.eye(2), np.zeros(2), np.eye(2)) == pytest.approx(2.0)


def test_generator_images_are_quantised_like_tensor2im():
    x = torch.tensor([-1.0, -0.5, 0.0, 0.3, 0.999, 1.0]).reshape(1, 1, 2, 3)
    expected = ((x.numpy() + 1) / 2.0 * 255.0).astype(np.uint8)  # CycleGAN's util.tensor2im
    np.testing.assert_array_equal(fidm.to_uint8(x).numpy(), expected)


def test_saved_statistics_give_the_same_fid_as_the_folder(folders, extractor192, fid192, tmp_path):
    stats = fidm.folder_statistics(folders[1], extractor192, progress=False, cache=False)
    npz = tmp_path / "b.npz"
    fidm.save_stats(npz, stats)
    with np.load(npz) as f:
        assert f["mu"].shape == (192,) and f["sigma"].shape == (192, 192)
    by_stats = fidm.compute_fid(folders[0], npz, dims=192, progress=False, cache=False, extractor=extractor192)
    assert by_stats.fid == pytest.approx(fid192.fid, abs=1e-9)


def test_real_statistics_are_cached_by_folder_content(folders, extractor192, home, tmp_path, monkeypatch):
    import shutil

    folder = shutil.copytree(folders[0], tmp_path / "real")
    first = fidm.folder_statistics(folder, extractor192, progress=False)
    assert len(list((home / "fid_stats").glob("*.npz"))) == 1

    def no_features(*args, **kwargs):
        raise AssertionError("statistics were recomputed")

    monkeypatch.setattr(fidm.InceptionFeatures, "from_files", no_features)
    again = fidm.folder_statistics(folder, extractor192, progress=False)
    np.testing.assert_array_equal(again.sigma, first.sigma)
    assert again.features is not None and again.features.shape == (N_IMAGES, 192)

    (folder / "000.png").write_bytes((folders[1] / "000.png").read_bytes())  # new content: new key
    with pytest.raises(AssertionError, match="recomputed"):
        fidm.folder_statistics(folder, extractor192, progress=False)


def test_a_statistics_file_of_the_wrong_shape_is_refused(tmp_path, extractor192):
    bad = tmp_path / "bad.npz"
    np.savez(bad, mu=np.zeros(10), sigma=np.zeros((10, 11)))
    with pytest.raises(GanzipError, match="sigma"):
        fidm.load_stats(bad)
    ok_but_other_dims = tmp_path / "other.npz"
    np.savez(ok_but_other_dims, mu=np.zeros(2048), sigma=np.eye(2048))
    with pytest.raises(GanzipError, match="2048-d"):
        fidm.statistics_of(ok_but_other_dims, extractor192)
    nokeys = tmp_path / "nokeys.npz"
    np.savez(nokeys, m=np.zeros(3))
    with pytest.raises(GanzipError, match="'mu' and 'sigma'"):
        fidm.load_stats(nokeys)


def test_a_folder_without_images_is_refused(tmp_path):
    (tmp_path / "empty" / "nested").mkdir(parents=True)
    (tmp_path / "empty" / "nested" / "x.png").write_bytes(b"")
    with pytest.raises(GanzipError, match="no images.*sub-folders"):
        fidm.list_images(tmp_path / "empty")


def test_fewer_images_than_feature_dims_warns_with_the_number_needed(fid192):
    joined = " ".join(fid192.warnings)
    assert f"{N_IMAGES} images for 192-d" in joined and "more than 192 images" in joined


def test_mmd2_unbiased_matches_the_definition():
    rng = np.random.RandomState(0)
    x, y = rng.randn(7, 5), rng.randn(7, 5) + 0.3

    def k(a, b):
        return (a @ b / 5 + 1) ** 3

    m = 7
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)


def test_kid_over_subsets_of_the_whole_sets_has_zero_spread():
    rng = np.random.RandomState(0)
    x, y = rng.randn(20, 8), rng.randn(20, 8) + 0.5
    with pytest.warns(fidm.MetricWarning, match="subsets of 20"):
        mean, std = kernel_inception_distance(x, y, subsets=5, subset_size=1000)
    assert mean == pytest.approx(mmd2_unbiased(x, y), rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-9)


def test_kid_subsets_are_seeded_and_vary():
    rng = np.random.RandomState(0)
    x, y = rng.randn(60, 8), rng.randn(60, 8) + 0.5
    a = kernel_inception_distance(x, y, subsets=10, subset_size=20)
    assert a == kernel_inception_distance(x, y, subsets=10, subset_size=20)
    assert a[1] > 0 and a[0] > 0


def test_cli_fid_prints_json_equal_to_the_library(cli, weights, folders, fid192):
    res = cli("fid", *folders, "--inception-weights", weights, "--dims", "192", "--json", "--quiet", "--kid",
              "--batch-size", "6")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["fid"] == pytest.approx(fid192.fid, abs=1e-9)
    assert out["kid_mean"] == pytest.approx(fid192.kid_mean, rel=1e-9)
    assert out["weights"]["verified"] is False


def test_cli_fid_save_stats_writes_mu_and_sigma(cli, weights, folders, tmp_path):
    dest = tmp_path / "stats.npz"
    res = cli("fid", folders[0], "--save-stats", dest, "--inception-weights", weights, "--dims", "192", "--quiet")
    assert res.exit_code == 0, res.stderr
    stats = fidm.load_stats(dest, dims=192)
    assert stats.count == N_IMAGES and np.isfinite(stats.sigma).all()


def test_cli_fid_save_stats_takes_pytorch_fids_argument_order(cli, weights, folders, tmp_path):
    """`python -m pytorch_fid --save-stats DIR OUT.npz` carries over: the same statistics as `DIR --save-stats OUT`."""
    ours, theirs = tmp_path / "ours.npz", tmp_path / "theirs.npz"
    common = ("--inception-weights", weights, "--dims", "192", "--quiet", "--no-cache")
    assert cli("fid", folders[0], "--save-stats", ours, *common).exit_code == 0
    res = cli("fid", "--save-stats", folders[0], theirs, *common)
    assert res.exit_code == 0, res.stderr
    a, b = fidm.load_stats(ours, dims=192), fidm.load_stats(theirs, dims=192)
    assert b.count == N_IMAGES and np.array_equal(a.mu, b.mu) and np.array_equal(a.sigma, b.sigma)


def test_cli_fid_save_stats_into_a_folder_exits_2(cli, weights, folders):
    res = cli("fid", folders[0], "--save-stats", folders[1], "--inception-weights", weights, "--quiet")
    res.assert_user_error("is a folder")


@pytest.mark.parametrize("save", [False, True])
def test_cli_fid_num_workers_reaches_the_image_reader(cli, weights, folders, tmp_path, monkeypatch, save):
    seen = []
    real = fidm.InceptionFeatures.from_files

    def spy(self, files, *args, num_workers=None, **kwargs):
        seen.append(num_workers)
        return real(self, files, *args, num_workers=num_workers, **kwargs)

    monkeypatch.setattr(fidm.InceptionFeatures, "from_files", spy)
    args = ("--save-stats", tmp_path / "s.npz") if save else (folders[1],)
    res = cli("fid", folders[0], *args, "--num-workers", "3", "--inception-weights", weights, "--dims", "192",
              "--quiet", "--no-cache")
    assert res.exit_code == 0, res.stderr
    assert seen and set(seen) == {3}


def test_cli_fid_without_the_inception_weights_exits_2(cli, folders, monkeypatch):
    monkeypatch.setenv("GANZIP_OFFLINE", "1")
    res = cli("fid", *folders, "--quiet")
    res.assert_user_error("pt_inception-2015-12-05-6726825d.pth", "ganzip assets import")


def test_cli_fid_on_an_empty_folder_exits_2(cli, weights, folders, tmp_path):
    (tmp_path / "empty").mkdir()
    res = cli("fid", tmp_path / "empty", folders[0], "--inception-weights", weights, "--dims", "192", "--quiet")
    res.assert_user_error("holds no images")


def test_weights_that_do_not_fit_the_fid_inception_are_refused_in_one_line(tmp_path):
    bad = tmp_path / "not_inception.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.warns(UserWarning, match="unverified"), pytest.raises(GanzipError, match="do not fit") as err:
        fidm.load_inception(bad, dims=64)
    assert "\n" not in str(err.value)

"""ganzip.evaluation.evaluate and `ganzip eval`: metrics, cost, reports, missing assets, bad input.

All pretrained files are stand-ins made inside the tests (seeded random
weights): the FID Inception keeps pytorch-fid's structure, the LPIPS
backbone is a torchvision AlexNet. FID runs at 64-d features (the first
Inception block) to stay fast; the 2048-d path is covered in test_fid.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganzip.errors import AssetMissingError, GanzipError

SIZE = 64
N = 4


def _image(rng, size=SIZE, shift=0):
    low = rng.randint(0, 200, (8, 8, 3)).astype(np.uint8)
    arr = np.asarray(Image.fromarray(low).resize((size, size), Image.BILINEAR)).astype(int) + shift
    return np.clip(arr, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Datasets, a teacher (.pth state dict), a student (.safetensors) and asset stand-ins."""
    from ganzip import models
    from ganzip.student import save_student

    from .metrics_standins import alexnet_standin, inception_standin

    root = tmp_path_factory.mktemp("eval")
    rng = np.random.RandomState(0)
    unpaired = root / "unpaired"
    for split, shift in (("testA", 0), ("testB", 40), ("trainA", 0)):
        (unpaired / split).mkdir(parents=True)
        for i in range(N):
            Image.fromarray(_image(rng, shift=shift)).save(unpaired / split / f"{i:02d}.png")
    paired = root / "paired" / "test"
    paired.mkdir(parents=True)
    for i in range(N):
        a = _image(rng)
        Image.fromarray(np.concatenate([a, 255 - a], axis=1)).save(paired / f"{i:02d}.png")

    torch.manual_seed(0)
    teacher_path = root / "teacher.pth"
    torch.save(models.create("resnet_6blocks", ngf=4).state_dict(), teacher_path)
    student_dir = root / "run"
    student_dir.mkdir()
    # A ganzip student file; a narrower zoo model stands in for a pruned-and-distilled student.
    student_path = save_student(models.create("resnet_6blocks", ngf=2).eval(), student_dir / "student.safetensors")
    return dict(root=root, unpaired=unpaired, paired=paired.parent, teacher=teacher_path, student=student_path,
                inception=inception_standin(tmp_path_factory), alexnet=alexnet_standin(tmp_path_factory))


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("GANZIP_HOME", str(tmp_path / "ganzip"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("GANZIP_OFFLINE", "1")


def _evaluate(env, student=None, **kw):
    from ganzip.evaluation import evaluate

    args = dict(teacher=env["teacher"], arch="resnet_6blocks", arch_opts=["ngf=4"], data=env["unpaired"],
                size=SIZE, batch_size=4, device="cpu", inception_weights=env["inception"],
                alexnet_weights=env["alexnet"], fid_dims=64, progress=False, latency=False)
    args.update(kw)
    return evaluate(env["student"] if student is None else student, **args)


@pytest.fixture(scope="module")
def unpaired_run(env, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    log = Path(env["student"]).parent / "train_log.csv"
    log.write_text("step,crd,adversarial\n0,3.0,1.0\n5,2.0,0.8\n10,1.2,0.7\n")
    mp = pytest.MonkeyPatch()
    mp.setenv("GANZIP_HOME", str(out / "home"))
    try:
        result = _evaluate(env, out=out, save_images=True,
                           extra={"training": {"steps": 10, "best_step": 10}, "warnings": ["from compress"]})
    finally:
        mp.undo()
        log.unlink()
    return result, out


def test_unpaired_eval_measures_fid_of_both_models_and_the_student_against_the_teacher(unpaired_run):
    result, _ = unpaired_run
    s, t = result.metrics["student"], result.metrics["teacher"]
    assert np.isfinite(s["fid"]) and np.isfinite(t["fid"]) and s["fid"] > 0
    assert s["delta_fid"] == pytest.approx(s["fid"] - t["fid"])
    for key in ("lpips_to_teacher", "psnr_to_teacher", "ssim_to_teacher"):
        assert s[key]["count"] == N and s[key]["mean"] is not None
    assert "psnr_to_target" not in s  # unpaired: the B images are not ground truth
    assert result.metrics["fid_reference"]["count"] == N
    assert "kid_mean" in s and "kid_std" in s


def test_the_report_holds_both_costs_and_their_ratio(unpaired_run, env):
    from ganzip.loading import load_generator
    from ganzip.metrics.cost import count_macs

    result, _ = unpaired_run
    teacher = load_generator(env["teacher"], arch="resnet_6blocks", arch_opts=["ngf=4"])
    assert result.cost["teacher"]["macs"] == count_macs(teacher, SIZE)
    assert result.cost["ratios"]["macs"] == pytest.approx(result.cost["teacher"]["macs"] / result.cost["student"]["macs"])
    assert result.cost["ratios"]["macs"] > 2  # a half-width student


def test_fid_in_memory_equals_ganzip_fid_on_the_written_pngs(unpaired_run, env):
    from ganzip.metrics.fid import compute_fid

    result, out = unpaired_run
    written = out / "outputs" / "student"
    assert len(list(written.glob("*.png"))) == N
    again = compute_fid(written, env["unpaired"] / "testB", weights=env["inception"], dims=64, progress=False,
                        cache=False)
    assert again.fid == pytest.approx(result.metrics["student"]["fid"], abs=1e-6)


def test_reports_are_written_with_the_grid_curves_and_extra_sections(unpaired_run):
    result, out = unpaired_run
    data = json.loads((out / "report.json").read_text())
    assert data["schema_version"] == 1 and data["kind"] == "eval"
    assert data["training"] == {"steps": 10, "best_step": 10}
    assert "from compress" in data["warnings"]
    assert any("unverified" in w for w in data["warnings"])  # the stand-ins are not the published files
    assert {a["name"]: a["verified"] for a in data["assets"]} == {"inception_fid": False, "alexnet": False}
    page = (out / "report.html").read_text()
    assert page.count("<svg") == 2  # crd and adversarial curves from train_log.csv
    grid = sorted(p.name for p in (out / "images").iterdir())
    assert len(grid) == 3 * N and "00_input.png" in grid and "00_teacher.png" in grid and "00_student.png" in grid
    assert 'src="images/00_student.png"' in page
    assert "Student (resnet_6blocks)" in (out / "report.md").read_text()


def test_paired_data_adds_metrics_against_the_ground_truth(env):
    result = _evaluate(env, teacher=None, data=env["paired"], kid=False)
    s = result.metrics["student"]
    assert "teacher" not in result.metrics and "teacher" not in result.cost
    for key in ("psnr_to_target", "ssim_to_target", "lpips_to_target"):
        assert s[key]["count"] == N
    assert result.metrics["fid_reference"]["kind"] == "dataset targets"


def test_an_identity_generator_reproduces_paired_targets_closely(env, tmp_path):
    rng = np.random.RandomState(3)
    same = tmp_path / "same" / "test"
    same.mkdir(parents=True)
    for i in range(3):
        a = _image(rng)
        Image.fromarray(np.concatenate([a, a], axis=1)).save(same / f"{i}.png")

    class Identity(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 1, bias=False)
            torch.nn.init.dirac_(self.conv.weight)

        def forward(self, x):
            return self.conv(x)

    result = _evaluate(env, student=Identity(), teacher=None, data=same.parent, lpips=False, kid=False)
    s = result.metrics["student"]
    # tensor2im truncation may lose one level on some pixels, never more
    assert s["psnr_to_target"]["mean"] > 45
    assert s["ssim_to_target"]["mean"] > 0.999
    assert s["sharpness_to_target"]["mean"] == pytest.approx(1.0, abs=0.01)


def test_a_blurring_generator_is_measured_as_less_sharp_than_the_targets(env):
    """The identity above measures 1.0; an 11x11 box blur of the inputs well below (the metric: test_fidelity)."""
    class Box(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 11, padding=5, padding_mode="replicate", bias=False, groups=3)
            torch.nn.init.constant_(self.conv.weight, 1 / 121)

        def forward(self, x):
            return self.conv(x)

    result = _evaluate(env, student=Box(), teacher=None, data=env["paired"], lpips=False, kid=False)
    s = result.metrics["student"]["sharpness_to_target"]
    assert s["count"] == N and s["mean"] < 0.7


def test_a_missing_inception_is_an_error_for_eval(env):
    with pytest.raises(AssetMissingError, match="pt_inception"):
        _evaluate(env, inception_weights=None)


def test_allow_missing_records_fid_as_unavailable_with_the_reason(env):
    result = _evaluate(env, inception_weights=None, allow_missing=True, lpips=False)
    assert "fid" not in result.metrics["student"] and "fid_reference" not in result.metrics
    assert any(w.startswith("FID and KID not computed") and "pt_inception" in w for w in result.warnings)
    record = {a["name"]: a for a in result.assets}["inception_fid"]
    assert record["unavailable"] and record["path"] is None
    assert result.metrics["student"]["psnr_to_teacher"]["count"] == N  # the rest is still measured


def test_a_model_that_cannot_run_at_the_size_is_a_clear_error(env):
    class Fixed(torch.nn.Module):
        def forward(self, x):
            if x.shape[-1] != 128:
                raise ValueError("this model only takes 128x128 images")
            return x

    with pytest.raises(GanzipError, match="student.*128x128"):
        _evaluate(env, student=Fixed(), teacher=None)


def test_a_plain_folder_without_targets_warns_that_fid_was_not_computed(env):
    result = _evaluate(env, teacher=None, data=env["unpaired"] / "testA")
    assert "fid" not in result.metrics["student"]
    assert any("--target" in w and "FID not computed" in w for w in result.warnings)


def test_real_stats_file_replaces_the_target_folder(env, unpaired_run, tmp_path):
    from ganzip.metrics import fid as fidm

    with pytest.warns(UserWarning, match="unverified"):
        ext = fidm.load_inception(env["inception"], dims=64)
    stats = fidm.folder_statistics(env["unpaired"] / "testB", ext, progress=False, cache=False)
    npz = tmp_path / "testB.npz"
    fidm.save_stats(npz, stats)
    by_stats = _evaluate(env, teacher=None, real_stats=npz)
    assert by_stats.metrics["fid_reference"]["kind"] == "statistics file"
    by_folder = unpaired_run[0].metrics["student"]["fid"]
    assert by_stats.metrics["student"]["fid"] == pytest.approx(by_folder, abs=1e-9)
    assert any("KID not computed" in w for w in by_stats.warnings)


def test_cli_eval_prints_the_report_as_json(cli, env, tmp_path):
    res = cli("eval", env["student"], "--teacher", env["teacher"], "--arch", "resnet_6blocks", "--arch-opt", "ngf=4",
              "--data", env["unpaired"], "--size", SIZE, "--inception-weights", env["inception"],
              "--lpips-weights", env["alexnet"], "--no-latency", "--quiet", "--json", "--no-kid",
              "--fid-dims", "64", "--out", tmp_path / "cli-out")
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["metrics"]["fid_dims"] == 64
    assert data["metrics"]["student"]["delta_fid"] == pytest.approx(
        data["metrics"]["student"]["fid"] - data["metrics"]["teacher"]["fid"])
    assert Path(data["paths"]["report_html"]).is_file()


def test_cli_eval_without_images_exits_2(cli, env, tmp_path):
    (tmp_path / "empty").mkdir()
    res = cli("eval", env["student"], "--data", tmp_path / "empty", "--size", SIZE, "--inception-weights",
              env["inception"], "--quiet")
    res.assert_user_error()

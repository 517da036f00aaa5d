"""eval.select: which held-out metric keeps the student, the default's fallbacks, and the errors.

The pretrained Inception and AlexNet weights cannot be downloaded here: the
tests that need them use small random-weight stand-ins with the real files'
structure (tests/metrics_standins.py), passed as explicit files
(``eval.inception_weights`` / ``eval.alexnet_weights``). Values computed with
them mean nothing; they only check which metric is used and that it is
computed as defined.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ganzip import engine, recipes
from ganzip.errors import AssetMissingError

from .test_engine import FAST, MemoryImages, run, teacher_net
from .train_logs import best_step_from_log, selection_rows


@pytest.fixture(autouse=True)
def no_local_assets(tmp_path, monkeypatch):
    """Empty caches: whatever this machine has, the default sees no pretrained files."""
    monkeypatch.setenv("GANZIP_HOME", str(tmp_path / "ganzip"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("GANZIP_OFFLINE", "1")


@pytest.fixture(scope="module")
def inception(tmp_path_factory):
    from .metrics_standins import inception_standin

    return inception_standin(tmp_path_factory)  # random weights: the real file is not available here


@pytest.fixture(scope="module")
def alexnet(tmp_path_factory):
    from .metrics_standins import alexnet_standin

    return alexnet_standin(tmp_path_factory)  # random weights: the real file is not available here


@pytest.fixture(scope="module")
def images():
    from ganzip.data import ProceduralDataset

    ds = ProceduralDataset("solid2striped", n=12, size=64, seed=3)
    return ds.__getitems__(list(range(12)))


@pytest.fixture
def bundle(images):
    # three held-out images: KID compares two sets and needs at least two in each
    return engine.DataBundle(train=MemoryImages(images[:9]), holdout=MemoryImages(images[9:], augment=False),
                             has_b=True, paired=False)


def cfg(*sets):
    return recipes.resolve_recipe("crd", FAST + list(sets))


# ---------------------------------------------------------------- which metric


def test_the_default_falls_back_to_psnr_and_says_which_files_are_missing():
    sel = engine.resolve_selection(cfg(), 3)
    assert (sel.metric, sel.requested, sel.fallback) == ("psnr", "auto", True)
    assert "pt_inception-2015-12-05-6726825d.pth not found" in sel.reason
    assert "alexnet-owt-7be5be79.pth not found" in sel.reason and "ganzip assets import" in sel.reason


def test_the_default_takes_kid_when_inception_is_present(inception):
    sel = engine.resolve_selection(cfg(f"eval.inception_weights={json.dumps(str(inception))}"), 3)
    assert (sel.metric, sel.fallback) == ("kid", False) and "unbiased" in sel.reason
    assert sel.asset["name"] == "inception_fid" and sel.asset["verified"] is False  # a stand-in, recorded as such


def test_the_default_takes_lpips_when_only_alexnet_is_present(alexnet):
    sel = engine.resolve_selection(cfg(f"eval.alexnet_weights={json.dumps(str(alexnet))}"), 3)
    assert (sel.metric, sel.fallback) == ("lpips", True) and "pt_inception" in sel.reason


def test_kid_needs_two_held_out_images(inception):
    with_inception = f"eval.inception_weights={json.dumps(str(inception))}"
    assert engine.resolve_selection(cfg(with_inception), 1).metric == "psnr"
    with pytest.raises(Exception, match="at least 2 held-out images"):
        engine.resolve_selection(cfg(with_inception, "eval.select=kid"), 1)


@pytest.mark.parametrize("metric, filename", [("kid", "pt_inception-2015-12-05-6726825d.pth"),
                                              ("fid", "pt_inception-2015-12-05-6726825d.pth"),
                                              ("lpips", "alexnet-owt-7be5be79.pth")])
def test_an_asked_for_metric_without_its_weights_is_an_error(metric, filename):
    with pytest.raises(AssetMissingError) as info:
        engine.resolve_selection(cfg(f"eval.select={metric}"), 3)
    msg = str(info.value)
    assert "\n" not in msg and filename in msg and "ganzip assets import" in msg


def test_the_cli_exits_2_with_one_line_naming_the_file(cli, teacher_file, tmp_path):
    from ganzip.data import make_dataset

    make_dataset("solid2striped", tmp_path / "data", n=6, size=64, progress=False)
    data = tmp_path / "data"
    res = cli("compress", teacher_file, "--arch", "resnet_6blocks", "--arch-opt", "ngf=4", "--data", data,
              "--out", tmp_path / "out", "--size", "64", "--steps", "1", "--set", "perceptual.weight=0",
              "--set", "crd.patch_size=16", "--set", "eval.select=kid")
    res.assert_user_error("pt_inception-2015-12-05-6726825d.pth", "ganzip assets import")


def test_psnr_asked_for_is_not_a_fallback():
    sel = engine.resolve_selection(cfg("eval.select=psnr"), 3)
    assert (sel.metric, sel.fallback) == ("psnr", False)


# ---------------------------------------------------------------- the metric as computed, and the kept step


def _mmd2_unbiased(x, y):
    """KID's unbiased MMD^2 with the cubic polynomial kernel, written out."""
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    m = len(x)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * kxy.mean())


def test_kid_selection_keeps_the_step_with_the_lowest_held_out_kid(bundle, tmp_path, inception):
    from ganzip.metrics.fid import load_inception, to_uint8

    teacher = teacher_net()
    result = run("crd", bundle, tmp_path, "train.steps=3", "train.lr=5e-3",
                 f"eval.inception_weights={json.dumps(str(inception))}", teacher=teacher, eval_every=1)
    assert result.selection["metric"] == "kid"
    rows = selection_rows(tmp_path / engine.TRAIN_LOG)
    assert len(rows) == 3 and all(r["select_metric"] == "holdout_kid" for r in rows)
    assert result.best_step == best_step_from_log(tmp_path / engine.TRAIN_LOG)
    # the kept student's held-out KID, recomputed from its outputs and the teacher's
    x = torch.stack([bundle.holdout[i]["A"] for i in range(len(bundle.holdout))])
    net = load_inception(inception, device="cpu", offline=True)
    with torch.no_grad():
        fs = net(to_uint8(result.student.eval()(x))).astype(np.float64)
        ft = net(to_uint8(teacher(x))).astype(np.float64)
    assert result.best_metrics["holdout_kid"] == pytest.approx(_mmd2_unbiased(fs, ft), rel=1e-4, abs=1e-9)
    assert any(a.get("name") == "inception_fid" for a in result.assets)


def test_lpips_selection_logs_lpips_and_keeps_its_best_step(bundle, tmp_path, alexnet):
    result = run("crd", bundle, tmp_path, "train.steps=3", "train.lr=5e-3", "eval.select=lpips",
                 f"eval.alexnet_weights={json.dumps(str(alexnet))}", eval_every=1)
    assert result.selection == {**result.selection, "metric": "lpips", "fallback": False, "better": "lower"}
    assert {r["select_metric"] for r in selection_rows(tmp_path / engine.TRAIN_LOG)} == {"holdout_lpips"}
    assert result.best_step == best_step_from_log(tmp_path / engine.TRAIN_LOG)


def test_the_report_and_log_say_which_metric_and_why(cli, teacher_file, tmp_path):
    from ganzip.data import make_dataset

    make_dataset("solid2striped", tmp_path / "data", n=6, size=64, progress=False)
    data = tmp_path / "data"
    out = tmp_path / "out"
    res = cli("compress", teacher_file, "--arch", "resnet_6blocks", "--arch-opt", "ngf=4", "--data", data,
              "--out", out, "--size", "64", "--steps", "2", "--eval-every", "1", "--set", "perceptual.weight=0",
              "--set", "crd.patch_size=16", "--set", "discriminator.ndf=8", "--offline")
    assert res.exit_code == 0, (res.stdout, res.stderr, res.exception)
    report = json.loads((out / "report.json").read_text())
    training = report["training"]
    assert training["selection"]["metric"] == "psnr" and training["selection"]["fallback"] is True
    assert training["student_selection"].startswith("highest held-out PSNR to the teacher (step ")
    assert "fell back" in training["student_selection"]
    assert any(w.startswith("student selection: default fell back to PSNR") for w in report["warnings"])
    rows = selection_rows(out / "train_log.csv")
    assert rows and all(r["select_reason"] == training["selection"]["reason"] for r in rows)
    assert "held-out PSNR" in (out / "report.md").read_text() or "fell back" in (out / "report.md").read_text()

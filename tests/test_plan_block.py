"""The plan block a compress run prints before step 1 (ganzip.training.runplan), the crd-novgg recipe, and
what an earlier run leaves in OUT (ganzip.leftovers).

Models have random weights made here; data is a few random PNGs. The numbers in the
block are checked against counts made independently of ganzip's own code where one
exists (parameters, convolution MACs, first-layer channels, steps).
"""
from __future__ import annotations

import inspect
import io
import json
import os
import time

import numpy as np
import pytest
import torch
from torch import nn

from ganzip import engine, rundir
from ganzip import distributed as ddp
from ganzip.leftovers import carry_latencies, clear_exports, export_leftovers
from ganzip.recipes import resolve_recipe
from ganzip.training.runplan import (NO_VGG_RECIPE, anchor_warning, compose_plan, emit, evaluation_split, model_summary,
                            printed_warnings, read_checkpoint_step, steps_summary)


# ---------------------------------------------------------------- helpers


def _conv_macs(model: nn.Module, size: int, channels: int = 3) -> int:
    """Multiply-accumulates of the convolutions, counted from their output shapes (not with torchprofile)."""
    total = [0]

    def hook(m, _inputs, output):
        # torchprofile's convention, which GAN Compression's published MACs share: a transposed conv is
        # counted like a conv, output elements x in_channels/groups x k x k (stride^2 above its real work)
        total[0] += output.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, channels, size, size))
    for h in hooks:
        h.remove()
    return total[0]


def _images(folder, n, size=32, seed=0):
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def unpaired(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan-data")
    _images(root / "trainA", 21)
    _images(root / "trainB", 21, seed=1)
    _images(root / "testA", 3, seed=2)
    return root


@pytest.fixture(scope="module")
def teacher():
    from ganzip import models

    torch.manual_seed(0)  # random weights: no pretrained generator here
    return models.create("resnet_6blocks", ngf=8).eval()


def _setup(recipe, sets, data, epochs=3, batch=2, steps=None):
    cfg = engine._resolve_config(recipe, sets, size=32, steps=steps, epochs=None if steps else epochs,
                                 batch_size=batch, seed=0)
    bundle = engine.open_training_data(str(data), None, cfg)
    plan = engine.plan_losses(cfg, has_targets=bundle.has_b or bundle.targets is not None, paired=bundle.paired)
    return cfg, bundle, plan


def _block(cfg, bundle, plan, teacher, data, **kw):
    from ganzip.student import build_student

    student = build_student(teacher, 0.25, seed=0)
    order = engine.BatchOrder(len(bundle.train), cfg.train.batch_size, cfg.train.seed, ddp.DistEnv())
    total = cfg.total_steps(order.steps_per_epoch)
    block = compose_plan(cfg=cfg, teacher=teacher, student=student, plan=plan, bundle=bundle,
                         steps_per_epoch=order.steps_per_epoch, total_steps=total, device="cpu", out="OUT",
                         data=str(data), warnings=bundle.warnings + plan.warnings, **kw)
    return block, student


NO_VGG = ["perceptual.weight=0", "crd.patch_size=4", "eval.max_images=2"]


# ---------------------------------------------------------------- the block's numbers


def test_block_reports_cost_and_first_layer_of_the_real_modules(teacher, unpaired):
    cfg, bundle, plan = _setup(NO_VGG_RECIPE, NO_VGG[1:], unpaired)
    block, student = _block(cfg, bundle, plan, teacher, unpaired)
    t, s = block.data["teacher"], block.data["student"]
    assert t["params"] == sum(p.numel() for p in teacher.parameters())
    assert s["params"] == sum(p.numel() for p in student.parameters())
    assert t["macs"] == _conv_macs(teacher, 32)
    assert s["macs"] == _conv_macs(student, 32)
    # resnet_6blocks opens with a 7x7 conv of ngf channels: 8 in the teacher, a quarter of them in the student
    assert (t["first_layer"]["out_channels"], s["first_layer"]["out_channels"]) == (8, 2)
    assert block.data["ratios"]["macs"] == pytest.approx(t["macs"] / s["macs"])
    assert "first layer 8 -> 2 channels" in block.lines[1]


def test_total_steps_follow_from_epochs_images_and_batch(teacher, unpaired):
    cfg, bundle, plan = _setup(NO_VGG_RECIPE, NO_VGG[1:], unpaired, epochs=3, batch=2)
    n_train = len(bundle.train)
    block, _ = _block(cfg, bundle, plan, teacher, unpaired)
    steps = block.data["steps"]
    assert steps["training_images"] == n_train
    assert steps["total"] == 3 * (n_train // 2)
    assert steps["source"] == "train.epochs"
    assert f"{3 * (n_train // 2):,} = 3 epochs x {n_train // 2} steps per epoch = {n_train} training images // batch 2" \
        in block.text()


def test_explicit_steps_are_said_to_come_from_train_steps():
    cfg = resolve_recipe("crd", ["train.steps=50", "train.batch_size=4"])
    info = steps_summary(cfg, n_train=40, steps_per_epoch=10, total_steps=cfg.total_steps(10))
    assert (info["total"], info["source"], info["epochs"]) == (50, "train.steps", 5.0)
    under_ddp = steps_summary(cfg, n_train=41, steps_per_epoch=5, total_steps=50, world_size=2)
    assert "(41 training images // 2 processes) // batch 4" in under_ddp["text"]


def test_composing_the_block_leaves_the_random_stream_alone(teacher):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    model_summary(teacher, 32, 3)  # counting MACs runs the model on a random input
    assert torch.equal(torch.rand(3), expected)


def test_block_names_active_and_disabled_terms_device_amp_out_and_splits(teacher, unpaired):
    cfg, bundle, plan = _setup("crd", NO_VGG, unpaired)
    block, _ = _block(cfg, bundle, plan, teacher, unpaired, selection={"metric": "psnr", "fallback": False})
    text = block.text()
    assert "25 crd + 1 adversarial; D steps on teacher outputs" in text
    assert "perceptual (weight 0)" in text and "kd_pixel (weight 0)" in text
    assert "device              cpu, AMP off (train.amp = auto)" in text
    assert "OUT                 OUT (fresh)" in text
    assert f"{len(bundle.holdout)} held-out training images" in text and "by PSNR to the teacher" in text
    assert f"{unpaired}, split 'test'" in text
    assert block.data["losses"]["disabled"]["perceptual"] == "weight 0"
    assert block.data["evaluation_split"]["split"] == "test"
    json.dumps(block.data)  # goes into report.json as it is


def test_data_warnings_known_before_training_are_in_the_block(teacher, tmp_path):
    _images(tmp_path / "trainA", 6)  # no B domain and no --target: D has no real images
    cfg, bundle, plan = _setup("crd", NO_VGG, tmp_path, epochs=1)
    block, _ = _block(cfg, bundle, plan, teacher, tmp_path)
    stream = io.StringIO()
    emit(block, stream, quiet=True)
    printed = stream.getvalue()
    assert "warning: no target images" in printed and "adversarial term is disabled" in printed
    assert "the plan before step 1" not in printed  # quiet: the warnings only
    assert printed_warnings({"plan": block.data}) == block.warnings


def test_resume_is_announced_with_the_checkpoint_step(teacher, unpaired, tmp_path):
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"step": 10, "total_steps": 30}))
    assert read_checkpoint_step(state) == (10, 30)
    assert read_checkpoint_step(tmp_path / "missing.json") is None
    cfg, bundle, plan = _setup(NO_VGG_RECIPE, NO_VGG[1:], unpaired, steps=30)
    block, _ = _block(cfg, bundle, plan, teacher, unpaired, mode="resume", resumed=(10, 30))
    assert "resuming from the checkpoint at step 10 of 30" in block.text()
    assert block.data["resumed_from"] == 10


def test_a_flat_folder_is_evaluated_on_its_training_images_and_the_block_says_so(tmp_path):
    _images(tmp_path / "flat", 4)
    info = evaluation_split(str(tmp_path / "flat"))
    assert info["split"] in ("all", "train")
    assert "training images" in info["warning"]
    assert "warning" not in evaluation_split("builtin:edges2shapes")


# ---------------------------------------------------------------- the colour anchor


def _plan(recipe, sets=(), paired=False):
    cfg = resolve_recipe(recipe, list(sets))
    return engine.plan_losses(cfg, has_targets=True, paired=paired)


def test_anchor_warning_fires_for_crd_without_perceptual_and_names_the_fix():
    warning = anchor_warning(_plan("crd", ["perceptual.weight=0"]))
    assert warning is not None
    assert f"--recipe {NO_VGG_RECIPE}" in warning and "kd_pixel.weight" in warning
    assert anchor_warning(_plan("rkd-instance", ["perceptual.weight=0"])) is not None


@pytest.mark.parametrize("recipe, sets", [
    (NO_VGG_RECIPE, ()), ("crd", ()), ("kd-pixel", ()), ("scratch", ()),
    ("crd", ["perceptual.weight=0", "kd_pixel.weight=5"]),
])
def test_no_anchor_warning_when_a_term_ties_the_colours(recipe, sets):
    assert anchor_warning(_plan(recipe, sets)) is None


def test_ground_truth_anchors_paired_runs():
    assert anchor_warning(_plan("crd-paired", ["perceptual.weight=0", "ground_truth.weight=10"], paired=True)) is None
    # without aligned pairs the ground-truth term is off, so it anchors nothing
    assert anchor_warning(_plan("crd-paired", ["perceptual.weight=0", "ground_truth.weight=10",
                                               "discriminator.conditional=false"])) is not None


def test_the_no_vgg_recipe_loads_validates_and_needs_no_vgg(cli):
    res = cli("recipes", "show", NO_VGG_RECIPE)
    assert res.exit_code == 0, (res.stdout, res.stderr)
    assert 'name = "crd-novgg"' in res.stdout
    cfg = resolve_recipe(NO_VGG_RECIPE)
    assert cfg.description and "VGG" in cfg.description
    assert (cfg.crd.weight, cfg.kd_pixel.weight, cfg.perceptual.weight) == (25.0, 25.0, 0.0)
    plan = engine.plan_losses(cfg, has_targets=True, paired=False)
    assert set(plan.weights) == {"crd", "kd_pixel", "adversarial"}
    assert "perceptual" not in plan.weights  # no VGG-16 file is ever looked up


def test_compress_help_points_at_the_no_vgg_recipe(cli):
    res = cli("compress", "--help")
    assert f"--recipe {NO_VGG_RECIPE}" in res.stdout
    assert "--set perceptual.weight=0\n" not in res.stdout


# ---------------------------------------------------------------- compress CLI knobs


def test_a_bad_real_stats_file_stops_compress_before_training(cli, teacher_file, data_dir, tmp_path):
    bad = tmp_path / "stats.npz"
    bad.write_bytes(b"not an npz")
    res = cli("compress", teacher_file, "--arch", "resnet_6blocks", "--arch-opt", "ngf=4", "--data", data_dir,
              "--out", tmp_path / "run", "--real-stats", bad, "--size", "32", "--steps", "1", "--quiet")
    res.assert_user_error(str(bad))
    assert not (tmp_path / "run").exists()


_FAST = ["--size", "32", "--steps", "2", "--set", "crd.patch_size=4", "--set", "discriminator.ndf=8",
         "--set", "eval.max_images=2", "--recipe", NO_VGG_RECIPE, "--quiet", "--offline"]


@pytest.fixture(scope="module")
def compressed(tmp_path_factory, teacher_file, data_dir):
    """One tiny compress run through the CLI (random teacher, 2 steps) with --inception-weights."""
    from click.testing import CliRunner

    from ganzip.cli import main

    tmp = tmp_path_factory.mktemp("compressed")
    inception = tmp / "no-such-inception.pth"  # absent: selection and FID fall back, and say so
    out = tmp / "run"
    res = CliRunner().invoke(main, ["compress", str(teacher_file), "--arch", "resnet_6blocks", "--arch-opt", "ngf=4",
                                    "--data", str(data_dir), "--out", str(out), "--inception-weights", str(inception),
                                    *[a for a in _FAST if a != "--quiet"]], obj={"debug": False})
    assert res.exit_code == 0, (res.stdout, res.stderr, res.exception)
    return {"out": out, "stderr": res.stderr, "inception": inception,
            "report": json.loads((out / "report.json").read_text())}


def test_inception_weights_reach_selection_and_the_final_evaluation(compressed):
    assert compressed["report"]["recipe"]["eval"]["inception_weights"] == str(compressed["inception"])


WIRED = "plan" in engine.CompressResult.__dataclass_fields__
wired_at_merge = pytest.mark.skipif(not WIRED, reason="wired at merge: engine calls ganzip.training.runplan (issue 18)")


@wired_at_merge
def test_compress_prints_the_plan_before_step_1_and_records_it(compressed):
    err = compressed["stderr"]
    assert "the plan before step 1" in err
    before_training = err.split("step 1/2")[0] if "step 1/2" in err else err.split("student:")[0]
    plan = compressed["report"]["plan"]
    assert plan["steps"]["total"] == 2 and plan["losses"]["active"]["kd_pixel"] == 25.0
    assert plan["evaluation_split"]["split"] == "train"  # data_dir has trainA/trainB only
    assert plan["warnings"] and all(err.count(f"warning: {w}") == 1 for w in plan["warnings"])  # once each
    assert all(f"warning: {w}" in before_training for w in plan["warnings"])
    assert "student selection: default fell back to PSNR" in " ".join(plan["warnings"])


@pytest.mark.skipif("real_stats" not in inspect.signature(engine.compress).parameters,
                    reason="wired at merge: compress(real_stats=...) (issue 18)")
def test_real_stats_are_the_fid_reference_of_the_final_evaluation(cli, teacher_file, data_dir, tmp_path,
                                                                 tmp_path_factory):
    from .metrics_standins import inception_standin

    inception = inception_standin(tmp_path_factory)  # random weights: the FID value means nothing here
    stats = tmp_path / "real.npz"
    np.savez(stats, mu=np.zeros(2048), sigma=np.eye(2048))
    res = cli("compress", teacher_file, "--arch", "resnet_6blocks", "--arch-opt", "ngf=4", "--data", data_dir,
              "--out", tmp_path / "run", "--real-stats", stats, "--inception-weights", inception, *_FAST)
    assert res.exit_code == 0, (res.stdout, res.stderr, res.exception)
    report = json.dumps(json.loads((tmp_path / "run" / "report.json").read_text()))
    assert "statistics file" in report and str(stats) in report


# ---------------------------------------------------------------- leftovers of earlier runs


def test_overwrite_clears_the_old_students_exports_that_ganzip_wrote(tmp_path):
    for name in ("student.safetensors", "student.onnx", "student.onnx.json", "student.int8.onnx",
                 "student_last.pte"):
        (tmp_path / name).write_bytes(name.encode())
    rundir.record(tmp_path, ["student.onnx", "student.onnx.json", "student.int8.onnx"])
    assert {p.name for p in export_leftovers(tmp_path)} == {"student.onnx", "student.onnx.json",
                                                           "student.int8.onnx", "student_last.pte"}
    removed, warnings = clear_exports(tmp_path)
    assert {p.name for p in removed} == {"student.onnx", "student.onnx.json", "student.int8.onnx"}
    assert (tmp_path / "student_last.pte").exists()  # not in the ledger: the user's, kept and named
    assert len(warnings) == 1 and "student_last.pte" in warnings[0]
    assert (tmp_path / "student.safetensors").exists()  # the student itself is clear_out's business


def test_latencies_measured_earlier_survive_a_rerun_that_measures_none(tmp_path):
    student = tmp_path / "a" / "student.safetensors"
    student.parent.mkdir()
    student.write_bytes(b"s")
    old_time = time.time() - 100
    os.utime(student, (old_time, old_time))
    previous = tmp_path / "leaderboard.json"
    previous.write_text(json.dumps({"created": "2026-12-01T10:00:00", "jobs": [
        {"job": "a", "status": "finished", "student": str(student), "teacher_latency_ms": 9.0,
         "student_latency_ms": 3.0, "speedup": 3.0, "onnx_latency_ms": 1.5},
        {"job": "b", "status": "finished", "student": "elsewhere", "student_latency_ms": 4.0}]}))
    rows = [{"job": "a", "status": "skipped", "student": str(student), "teacher_latency_ms": None,
             "student_latency_ms": None, "speedup": None},
            {"job": "b", "status": "finished", "student": "elsewhere", "student_latency_ms": None}]
    assert carry_latencies(rows, previous) == 1
    assert (rows[0]["student_latency_ms"], rows[0]["onnx_latency_ms"], rows[0]["speedup"]) == (3.0, 1.5, 3.0)
    assert rows[0]["latency_from"] == "2026-12-01T10:00:00"
    assert rows[1]["student_latency_ms"] is None  # retrained this time: the old latency is not its own
    os.utime(student, (time.time() + 100, time.time() + 100))  # a student newer than the leaderboard
    fresh = [{"job": "a", "status": "skipped", "student": str(student), "student_latency_ms": None}]
    assert carry_latencies(fresh, previous) == 0

"""`ganzip compress` end to end on the CPU: 64x64 images, a random-weight ngf-8 teacher saved in the test."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import ganzip


FAST = ["--size", "64", "--set", "crd.patch_size=16", "--set", "perceptual.weight=0",
        "--set", "discriminator.ndf=8", "--set", "eval.max_images=2", "--quiet"]


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    from safetensors.torch import save_file

    from ganzip import models

    torch.manual_seed(0)  # random weights: no pretrained generator exists here
    net = models.create("resnet_6blocks", ngf=8)
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    save_file(net.state_dict(), str(path))
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from ganzip.data import make_dataset

    root = tmp_path_factory.mktemp("data") / "s2s"
    make_dataset("solid2striped", root, n=8, size=64, progress=False)
    return root


def args(teacher_file, data_dir, out, *extra):
    return ["compress", str(teacher_file), "--arch", "resnet_6blocks", "--arch-opt", "ngf=8",
            "--data", str(data_dir), "--out", str(out), *FAST, *extra]


def test_compress_writes_student_report_samples_and_log(cli, teacher_file, data_dir, tmp_path):
    from ganzip.student import load_student, read_student_metadata

    out = tmp_path / "run"
    res = cli(*args(teacher_file, data_dir, out, "--steps", "4", "--eval-every", "2", "--log-every", "1"))
    assert res.exit_code == 0, (res.stdout, res.stderr, res.exception)
    assert "student:" in res.stdout
    for name in ("student.safetensors", "student_last.safetensors", "report.json", "report.md", "samples.png",
                 "train_log.csv"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoint").exists()  # a finished run keeps its outputs, not its checkpoint
    student = load_student(out / "student.safetensors")
    assert student(torch.zeros(1, 3, 64, 64)).shape == (1, 3, 64, 64)
    meta = read_student_metadata(out / "student.safetensors")
    report = json.loads((out / "report.json").read_text())
    assert meta["ganzip.recipe_hash"] == report["recipe_hash"] and meta["ganzip.seed"] == "0"
    assert report["schema_version"] >= 1 and report["kind"] == "compress"
    assert report["recipe"]["crd"]["weight"] == 25.0
    assert set(report["losses_active"]) == {"crd", "adversarial"}
    assert "perceptual: disabled (weight 0)" in report["warnings"]
    assert report["cost"]["teacher"]["params"] > report["cost"]["student"]["params"] > 0
    assert report["cost"]["teacher"]["macs"] > report["cost"]["student"]["macs"] > 0
    assert report["training"]["steps"] == 4 and report["training"]["best_step"] in (2, 4)
    assert "torch" in json.dumps(report["versions"])
    rows = (out / "train_log.csv").read_text().splitlines()
    assert len(rows) == 5


def test_a_finished_run_is_not_overwritten_without_overwrite(cli, teacher_file, data_dir, tmp_path):
    from ganzip.engine import write_run_marker

    write_run_marker(tmp_path, "finished", {})
    cli(*args(teacher_file, data_dir, tmp_path, "--steps", "2")).assert_user_error("finished run", "--overwrite")


def test_out_with_unrelated_files_is_refused(cli, teacher_file, data_dir, tmp_path):
    (tmp_path / "thesis.tex").write_text("x")
    cli(*args(teacher_file, data_dir, tmp_path, "--steps", "2")).assert_user_error("did not write")
    assert (tmp_path / "thesis.tex").exists()


def test_missing_data_folder_is_a_clear_error(cli, teacher_file, tmp_path):
    cli(*args(teacher_file, tmp_path / "nope", tmp_path / "out", "--steps", "2")).assert_user_error("does not exist")


def test_empty_data_folder_is_a_clear_error(cli, teacher_file, tmp_path):
    (tmp_path / "empty").mkdir()
    cli(*args(teacher_file, tmp_path / "empty", tmp_path / "out", "--steps", "2")).assert_user_error("empty")


def test_unknown_recipe_lists_the_valid_ones(cli, teacher_file, data_dir, tmp_path):
    cli(*args(teacher_file, data_dir, tmp_path / "o", "--recipe", "crdd")).assert_user_error("crd-paired", "scratch")


def test_unknown_key_lists_the_valid_ones(cli, teacher_file, data_dir, tmp_path):
    cli(*args(teacher_file, data_dir, tmp_path / "o", "--set", "crd.wieght=1")).assert_user_error("crd.weight")


def test_size_not_divisible_by_the_patch_size(cli, teacher_file, data_dir, tmp_path):
    # the recipes' k is output side / 8 (32 at 256 px): a 68-px output holds no whole 8 x 8 grid
    res = cli("compress", str(teacher_file), "--arch", "resnet_6blocks", "--arch-opt", "ngf=8", "--data", str(data_dir),
              "--out", str(tmp_path / "o"), "--size", "68", "--set", "perceptual.weight=0", "--steps", "2")
    res.assert_user_error("--set crd.patch_size=", "--size")


def test_steps_and_epochs_together_are_refused(cli, teacher_file, data_dir, tmp_path):
    cli(*args(teacher_file, data_dir, tmp_path / "o", "--steps", "2", "--epochs", "1")).assert_user_error("--steps")


def test_missing_perceptual_weights_name_the_file_and_the_way_out(cli, teacher_file, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("GANZIP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    res = cli("compress", str(teacher_file), "--arch", "resnet_6blocks", "--arch-opt", "ngf=8", "--data",
              str(data_dir), "--out", str(tmp_path / "o"), "--size", "64", "--set", "crd.patch_size=16",
              "--steps", "2", "--quiet", "--offline")
    line = res.assert_user_error("--set perceptual.weight=0")
    assert "vgg16" in line.lower()


def test_killed_run_resumes_from_its_checkpoint_and_finishes(teacher_file, data_dir, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ganzip", *args(teacher_file, data_dir, out, "--steps", "30",
                                                   "--checkpoint-every", "3", "--eval-every", "10")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(ganzip.__file__).resolve().parents[1])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    state = out / "checkpoint" / "state.json"
    deadline = time.time() + 300
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert state.exists(), "no checkpoint appeared"
    saved = json.loads(state.read_text())["step"]
    assert 3 <= saved < 30 and not (out / "student.safetensors").exists()

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from the checkpoint at step {saved}" in again.stderr
    assert (out / "student.safetensors").is_file() and (out / "report.json").is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["training"]["resumed_from"] == saved and report["training"]["steps"] == 30
    steps = [int(r.split(",")[0]) for r in (out / "train_log.csv").read_text().splitlines()[1:]]
    assert steps == sorted(set(steps)) and steps[-1] == 30


def test_without_target_images_the_adversarial_term_is_disabled_and_reported(cli, teacher_file, data_dir, tmp_path):
    out = tmp_path / "run"
    res = cli(*args(teacher_file, data_dir / "trainA", out, "--steps", "2"))
    assert res.exit_code == 0, res.stderr
    report = json.loads((out / "report.json").read_text())
    assert set(report["losses_active"]) == {"crd"}
    assert any("adversarial term is disabled" in w for w in report["warnings"])


def test_target_folder_feeds_the_discriminator(cli, teacher_file, data_dir, tmp_path):
    out = tmp_path / "run"
    res = cli(*args(teacher_file, data_dir / "trainA", out, "--target", str(data_dir / "trainB"), "--steps", "2",
                    "--log-every", "1"))
    assert res.exit_code == 0, res.stderr
    report = json.loads((out / "report.json").read_text())
    assert set(report["losses_active"]) == {"crd", "adversarial"}
    assert "d_real" in (out / "train_log.csv").read_text().splitlines()[0]

"""Latency per exported backend: `ganzip profile --backend`, the eval report table, the batch leaderboard columns.

Random-weight tiny students (no pretrained weights exist here), 32 px, ONNX
exports (onnxruntime is a test dependency). No timing is asserted beyond
being a positive number: speed targets live in bench/.
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from ganzip import models
from ganzip.backends import backend_latencies, backend_table, find_exports, latency_columns
from ganzip.export import export_model
from ganzip.student import build_student, save_student

SIZE = 32


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A compress-like output folder: student.safetensors with student.onnx and student.int8.onnx beside it."""
    root = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    teacher = models.create("resnet_6blocks", ngf=8).eval()
    torch.save(teacher.state_dict(), root / "teacher.pth")
    student = build_student(teacher, 0.5, init="inherit", size=SIZE).eval()
    save_student(student, root / "student.safetensors")
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((40, 40), Image.BICUBIC).save(photos / f"{i}.png")
    export_model(student, root / "student.onnx", size=SIZE, latency=False)
    export_model(student, root / "student.int8.onnx", size=SIZE, int8=True, calibration=str(photos),
                 calibration_images=4, latency=False)
    return root


def test_exports_beside_a_student_are_found_by_their_suffix(run_folder):
    found = find_exports(run_folder / "student.safetensors")
    assert found == {"onnx": run_folder / "student.onnx", "onnx-int8": run_folder / "student.int8.onnx"}


def test_each_backend_is_timed_in_its_runtime_with_the_thread_count(run_folder):
    lat = backend_latencies(run_folder / "student.safetensors", size=SIZE, threads=1, repeats=2)
    assert set(lat) == {"onnx", "onnx-int8"}
    for entry in lat.values():
        assert entry["latency_ms"] > 0 and entry["threads"] == 1 and "onnxruntime" in entry["runtime"]


def test_a_broken_export_is_recorded_not_fatal(run_folder, tmp_path):
    (tmp_path / "student.safetensors").write_bytes((run_folder / "student.safetensors").read_bytes())
    (tmp_path / "student.onnx").write_bytes(b"not an onnx model")
    lat = backend_latencies(tmp_path / "student.safetensors", size=SIZE, repeats=1)
    assert lat["onnx"]["latency_ms"] is None and "onnxruntime cannot load" in lat["onnx"]["error"]


def test_profile_backend_times_the_file_or_the_export_beside_a_student(cli, run_folder):
    res = cli("profile", run_folder / "student.int8.onnx", "--backend", "onnx-int8", "--repeats", 2, "--json")
    assert res.exit_code == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["backend"] == "onnx-int8" and info["latency_ms"] > 0 and info["threads"] == 1
    res = cli("profile", run_folder / "student.safetensors", "--backend", "onnx", "--repeats", 2)
    assert res.exit_code == 0, res.stderr
    assert res.stdout.startswith("onnx: ") and "1 thread(s)" in res.stdout and "student.onnx" in res.stdout


def test_profile_backend_without_the_export_says_to_export_first(cli, run_folder):
    cli("profile", run_folder / "student.safetensors", "--backend", "executorch").assert_user_error(
        "student.pte", "ganzip export")


def test_the_eval_report_table_lists_eager_and_every_backend(run_folder):
    from ganzip.report import extra_tables

    cost = {"size": SIZE, "device": "cpu", "student": {"latency_ms": 3.0},
            "backends": backend_latencies(run_folder / "student.safetensors", size=SIZE, repeats=1)}
    (table,) = extra_tables({"tables": [backend_table(cost)]})
    assert [r[0] for r in table["rows"]] == ["eager (PyTorch)", "onnx", "onnx-int8"]
    assert table["header"][:3] == ["backend", "latency (ms)", "threads"]


def test_the_leaderboard_gains_one_latency_column_per_backend(run_folder):
    from ganzip.batch import leaderboard_columns, leaderboard_rows

    job = SimpleNamespace(name="j", arch="resnet_6blocks", width=0.5, recipe="crd", image_size=SIZE,
                          model=run_folder / "teacher.pth", arch_opts={"ngf": 8}, group=None, seed=None)
    outcome = SimpleNamespace(job=job, status="finished", folder=run_folder, seconds=1.0, error=None)
    (row,) = leaderboard_rows([outcome], latency=True, repeats=1)
    assert row["onnx_latency_ms"] > 0 and row["onnx-int8_latency_ms"] > 0 and row["backend_threads"] == 1
    assert {"onnx_latency_ms", "onnx-int8_latency_ms"} <= set(leaderboard_columns([row]))
    assert latency_columns(run_folder / "nothing-here.safetensors") == {}

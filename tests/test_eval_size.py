"""`ganzip eval` runs at the student's training size unless --size says otherwise (issue 18 §2)."""
from __future__ import annotations

import json

import pytest

from ganzip import models
from ganzip.sizing import DEFAULT_SIZE, resolve_size, training_size
from ganzip.student import build_student, save_student


def _student(tmp_path, size=64, name="s.safetensors"):
    """A student written the way compress writes one: its resolved recipe (train.size) in the metadata."""
    student = build_student(models.create("resnet_6blocks", ngf=4), 0.5, size=size)
    meta = {"ganzip.recipe_config": json.dumps({"train": {"size": size, "batch_size": 1}})}
    return save_student(student, tmp_path / name, metadata=meta)


def _eval(cli, student, *extra):
    return cli("eval", student, "--data", "builtin:edges2shapes", "--max-images", "2", "--no-fid", "--no-lpips",
               "--no-latency", "--quiet", "--offline", "--json", *extra)


def test_the_training_size_is_read_from_the_students_metadata(tmp_path):
    assert training_size(_student(tmp_path, size=48)) == 48


def test_a_student_without_a_recorded_size_falls_back_to_256(tmp_path):
    path = save_student(build_student(models.create("resnet_6blocks", ngf=4), 0.5, size=64), tmp_path / "s.safetensors")
    assert training_size(path) is None
    assert resolve_size(path, None) == (DEFAULT_SIZE, None)


def test_a_student_with_only_compress_report_beside_it_uses_that_size(tmp_path):
    path = save_student(build_student(models.create("resnet_6blocks", ngf=4), 0.5, size=64), tmp_path / "s.safetensors")
    (tmp_path / "report.json").write_text(json.dumps({"kind": "compress", "cost": {"size": 96}}))
    assert training_size(path) == 96


def test_a_64px_student_evaluated_without_size_runs_at_64(tmp_path, cli):
    res = _eval(cli, _student(tmp_path))
    assert res.exit_code == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["cost"]["size"] == 64 and report["data"]["size"] == 64
    assert report["data"]["training_size"] == 64
    assert "differs" not in res.stderr
    assert not any("differs from the student's training size" in w for w in report["warnings"])


@pytest.mark.parametrize("given", ["96", "128"])
def test_a_size_that_differs_is_kept_with_one_warning_line(tmp_path, cli, given):
    res = _eval(cli, _student(tmp_path), "--size", given)
    assert res.exit_code == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["cost"]["size"] == int(given)
    lines = [ln for ln in res.stderr.splitlines() if "differs from the student's training size 64" in ln]
    assert len(lines) == 1 and lines[0].startswith(f"warning: --size {given} differs")
    assert sum("differs from the student's training size 64" in w for w in report["warnings"]) == 1


def test_the_same_size_as_training_gives_no_warning(tmp_path, cli):
    res = _eval(cli, _student(tmp_path), "--size", "64")
    assert res.exit_code == 0, res.stderr
    assert "differs" not in res.stderr


def test_the_report_records_what_was_skipped(tmp_path, cli):
    res = _eval(cli, _student(tmp_path), "--no-kid")
    report = json.loads(res.stdout)
    assert report["metrics"]["not_measured"] == {"fid": "skipped (--no-fid)", "kid": "skipped (--no-fid)",
                                                 "lpips": "skipped (--no-lpips)"}
    assert report["headline"].endswith("FID not measured (test split, 2 images)")

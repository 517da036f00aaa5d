"""`ganzip eval` runs with what is there: --no-fid and --allow-missing record what was skipped."""
from __future__ import annotations

import json

from ganzip import models
from ganzip.student import build_student, save_student


def _student(tmp_path):
    return save_student(build_student(models.create("resnet_6blocks", ngf=4), 0.5, size=64), tmp_path / "s.safetensors")


def test_no_fid_runs_without_inception_and_says_so(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("GANZIP_HOME", str(tmp_path / "empty-home"))  # no pretrained files at all
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))
    args = ("eval", _student(tmp_path), "--data", "builtin:edges2shapes", "--size", "64", "--max-images", "2",
            "--no-lpips", "--no-latency", "--quiet", "--offline", "--json")
    cli(*args).assert_user_error("pt_inception")  # without the flag, the missing file stops it
    res = cli(*args, "--no-fid")
    assert res.exit_code == 0, res.stderr
    report = json.loads(res.stdout)
    assert "FID and KID skipped (--no-fid)" in report["warnings"]
    assert "fid" not in report["metrics"]["student"]


def test_allow_missing_records_the_unavailable_metric(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("GANZIP_HOME", str(tmp_path / "empty-home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))
    res = cli("eval", _student(tmp_path), "--data", "builtin:edges2shapes", "--size", "64", "--max-images", "2",
              "--no-lpips", "--no-latency", "--quiet", "--offline", "--json", "--allow-missing")
    assert res.exit_code == 0, res.stderr
    report = json.loads(res.stdout)
    assert any(w.startswith("FID and KID not computed") for w in report["warnings"])
    assert any(a.get("name") == "inception_fid" and a.get("unavailable") for a in report["assets"])

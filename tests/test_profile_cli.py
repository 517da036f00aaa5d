"""`ganzip profile` and the bad inputs every model-loading command shares."""
import json
import subprocess
import sys
import textwrap

import pytest
import torch


def test_profile_json_reports_the_papers_student(cli):
    res = cli("profile", "--arch", "mobile_resnet_9blocks", "--arch-opt", "ngf=64", "--width", "0.25", "--json", "--no-latency")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["student"]["macs"] == 1_407_713_280 and out["student"]["params"] == 137_347
    assert out["teacher"]["params"] == 1_987_075
    assert out["ratios"]["macs"] == pytest.approx(18_314_428_416 / 1_407_713_280)


def test_profile_measures_latency_and_omits_the_student_without_width(cli):
    res = cli("profile", "--arch", "resnet_6blocks", "--arch-opt", "ngf=8", "--size", "64", "--repeats", "2", "--json")
    out = json.loads(res.stdout)
    assert set(out) == {"size", "teacher"}
    assert out["teacher"]["latency_ms"] > 0


def test_profile_table_has_ratios(cli):
    from ganzip import models
    from ganzip.metrics.cost import count_macs, count_params
    from ganzip.student import build_student

    res = cli("profile", "--arch", "resnet_6blocks", "--arch-opt", "ngf=8", "--size", "64", "--width", "0.5", "--repeats", "2")
    assert res.exit_code == 0
    rows = {line.split()[0]: line.split()[1:] for line in res.stdout.splitlines() if line.strip()}
    macs_ratio, params_ratio = (float(v.rstrip("x")) for v in rows["ratio"][:2])
    teacher = models.create("resnet_6blocks", ngf=8)
    student = build_student(teacher, 0.5, size=64)
    assert macs_ratio == pytest.approx(count_macs(teacher, 64) / count_macs(student, 64), abs=0.006)
    assert params_ratio == pytest.approx(count_params(teacher) / count_params(student), abs=0.006)


@pytest.fixture
def ckpt(tmp_path, tiny_resnet):
    p = tmp_path / "g.pth"
    torch.save(tiny_resnet.state_dict(), p)
    return p


GEN = ["--arch", "resnet_6blocks", "--arch-opt", "ngf=8", "--size", "64", "--no-latency"]


def test_missing_file(cli, tmp_path):
    cli("profile", tmp_path / "nope.pth", *GEN).assert_user_error("no such file")


def test_empty_file(cli, tmp_path):
    p = tmp_path / "empty.pth"
    p.write_bytes(b"")
    cli("profile", p, *GEN).assert_user_error("empty")


def test_not_a_checkpoint(cli, tmp_path):
    p = tmp_path / "notes.pth"
    p.write_text("these are my notes, not weights\n")
    cli("profile", p, *GEN).assert_user_error("not a pytorch checkpoint")


def test_random_bytes(cli, tmp_path):
    p = tmp_path / "noise.pth"
    p.write_bytes(bytes(range(256)) * 40)
    cli("profile", p, *GEN).assert_user_error("not a pytorch checkpoint")


def test_truncated_checkpoint(cli, tmp_path, ckpt):
    p = tmp_path / "cut.pth"
    p.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    cli("profile", p, *GEN).assert_user_error("corrupt")


def test_truncated_safetensors(cli, tmp_path, tiny_resnet):
    from safetensors.torch import save_file

    full = tmp_path / "g.safetensors"
    save_file(tiny_resnet.state_dict(), str(full))
    p = tmp_path / "cut.safetensors"
    p.write_bytes(full.read_bytes()[:1000])
    cli("profile", p, *GEN).assert_user_error("safetensors")


def test_wrong_architecture(cli, ckpt):
    cli("profile", ckpt, "--arch", "unet_256", "--no-latency").assert_user_error("do not fit")


def test_arch_not_importable(cli, ckpt):
    cli("profile", ckpt, "--arch", "no_such_pkg.gens:G", "--no-latency").assert_user_error("cannot import")


def test_arch_not_a_module_factory(cli, ckpt):
    cli("profile", ckpt, "--arch", "math:sqrt", "--no-latency").assert_user_error("math:sqrt")


@pytest.mark.parametrize("width", ["0", "1.5", "-0.25"])
def test_impossible_width(cli, ckpt, width):
    cli("profile", ckpt, *GEN, "--width", width).assert_user_error("width")


def test_output_not_an_image(cli, tmp_path, monkeypatch):
    (tmp_path / "badgen.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        class Classifier(nn.Module):
            def __init__(self):
                super().__init__()
                self.c = nn.Conv2d(3, 4, 3)
            def forward(self, x):
                return self.c(x).mean(dim=(2, 3))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    cli("profile", "--arch", "badgen:Classifier", "--size", "32", "--no-latency").assert_user_error("not an image tensor")


def test_console_script_exit_code_and_debug_traceback(tmp_path):
    missing = str(tmp_path / "nope.pth")
    base = [sys.executable, "-m", "ganzip", "profile", missing, "--arch", "resnet_9blocks"]
    plain = subprocess.run(base, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().count("\n") == 0
    debug = subprocess.run(base + ["--debug"], capture_output=True, text=True, timeout=120)
    assert "Traceback" in debug.stderr

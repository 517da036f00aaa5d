"""`ganzip export`: ONNX and TorchScript files that reproduce the student, or a clear error.

Every model is a random-weight tiny generator built inside the test (no
pretrained weights exist here); images are 32-64 px so each export takes seconds.
"""
from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from ganzip import models
from ganzip.errors import GanzipError
from ganzip.export import default_output, export_model
from ganzip.student import build_student, save_student

SIZE = 32


@pytest.fixture(scope="module")
def student_file(tmp_path_factory):
    torch.manual_seed(0)
    teacher = models.create("resnet_6blocks", ngf=8).eval()
    student = build_student(teacher, 0.5, init="inherit", size=SIZE)
    path = tmp_path_factory.mktemp("student") / "student.safetensors"
    save_student(student, path)
    return path, student


def _ort_run(path, x: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def _jit_load(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path)).eval()


class FourierMix(nn.Module):
    """A generator with a spectral layer (as in FFC/LaMa inpainting nets): ONNX opset 17 has no FFT."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return torch.tanh(y + torch.fft.fft2(y).real * 0.01)


class PythonShifted(nn.Module):
    """Centres by a mean computed in NumPy: a trace freezes that number as a constant."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        shift = float(x.detach().mean().numpy())
        return torch.tanh(self.conv(x - shift))


def test_onnx_export_reproduces_the_student(cli, student_file, tmp_path):
    path, student = student_file
    out = tmp_path / "g.onnx"
    res = cli("export", path, "--format", "onnx", "--size", SIZE, "--out", out, "--repeats", 2, "--json")
    assert res.exit_code == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["max_abs_diff"] <= 1e-4 and len(info["checks"]) == 3
    assert info["latency_ms"] > 0 and "onnxruntime" in info["runtime"]
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(99)).clamp(-1, 1)
    with torch.no_grad():
        expected = student(x).numpy()
    assert np.abs(_ort_run(out, x) - expected).max() <= 1e-4


def test_torchscript_export_reproduces_the_student(cli, student_file, tmp_path):
    path, student = student_file
    out = tmp_path / "g.pt"
    res = cli("export", path, "--format", "torchscript", "--size", SIZE, "--out", out, "--no-latency")
    assert res.exit_code == 0, res.stderr
    assert "verified: max abs difference" in res.stdout
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(98))
    with torch.no_grad():
        assert (_jit_load(out)(x) - student(x)).abs().max() <= 1e-4


def test_dynamic_onnx_accepts_other_batch_and_image_sizes(student_file, tmp_path):
    _, student = student_file
    result = export_model(student, tmp_path / "d.onnx", format="onnx", size=SIZE, dynamic=True, latency=False)
    shapes = {tuple(c["shape"]) for c in result.checks}
    assert shapes == {(1, 3, SIZE, SIZE), (2, 3, SIZE, SIZE), (1, 3, SIZE // 2, SIZE // 2)}
    x = torch.randn(3, 3, 48, 48)
    with torch.no_grad():
        assert np.abs(_ort_run(result.path, x) - student(x).numpy()).max() <= 1e-4


def test_static_onnx_is_checked_at_its_own_shape_only(student_file, tmp_path):
    _, student = student_file
    result = export_model(student, tmp_path / "s.onnx", format="onnx", size=SIZE, latency=False)
    assert [c["shape"] for c in result.checks] == [[1, 3, SIZE, SIZE]] * 3
    assert result.opset == 17 and not result.dynamic


def test_an_operator_onnx_cannot_express_is_a_clear_error(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(GanzipError, match=r"cannot express the operator aten::fft_fft2.*format='torchscript'"):
        export_model(FourierMix().eval(), tmp_path / "f.onnx", format="onnx", size=16, latency=False)
    assert list(tmp_path.iterdir()) == []  # nothing half-written or unverified is left


def test_the_same_model_exports_to_torchscript(tmp_path):
    torch.manual_seed(0)
    model = FourierMix().eval()
    result = export_model(model, tmp_path / "f.pt", format="torchscript", size=16, latency=False)
    assert result.max_abs_diff <= 1e-4


def test_cli_reports_an_unexpressible_operator_on_one_line(cli, tmp_path):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(FourierMix().eval(), torch.randn(1, 3, 16, 16))
        traced.save(str(tmp_path / "fourier.pt"))  # a TorchScript generator, as users bring them
    res = cli("export", tmp_path / "fourier.pt", "--format", "onnx", "--size", 16, "--no-latency")
    res.assert_user_error("aten::fft_fft2", "torchscript")
    assert not (tmp_path / "fourier.onnx").exists()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_an_export_that_does_not_match_fails_and_writes_nothing(tmp_path, fmt):
    torch.manual_seed(0)
    out = tmp_path / f"p.{fmt}"
    with pytest.raises(GanzipError, match="differs from the PyTorch model"):
        export_model(PythonShifted().eval(), out, format=fmt, size=16, latency=False)
    assert list(tmp_path.iterdir()) == []


def test_default_output_sits_beside_the_student(tmp_path):
    assert default_output(tmp_path / "run" / "student.safetensors", "onnx") == tmp_path / "run" / "student.onnx"
    assert default_output(tmp_path / "G.pth", "torchscript") == tmp_path / "G.torchscript.pt"


def test_exporting_onto_the_input_file_is_refused(cli, student_file):
    path, _ = student_file
    cli("export", path, "--out", path, "--no-latency").assert_user_error("input file itself")


def test_bare_weights_need_an_architecture(cli, tmp_path):
    torch.manual_seed(0)
    torch.save(models.create("resnet_6blocks", ngf=4).state_dict(), tmp_path / "G.pth")
    cli("export", tmp_path / "G.pth", "--size", SIZE).assert_user_error("--arch")
    res = cli("export", tmp_path / "G.pth", "--arch", "resnet_6blocks", "--arch-opt", "ngf=4", "--size", SIZE,
              "--format", "torchscript", "--no-latency")
    assert res.exit_code == 0, res.stderr
    assert (tmp_path / "G.torchscript.pt").exists()


def test_a_student_of_a_users_class_exports_once_arch_confirms_it(cli, tmp_path, monkeypatch):
    (tmp_path / "tinygen_export_mod.py").write_text(
        "from ganzip.models.resnet import ResnetGenerator\n\ndef make(ngf=8):\n    return ResnetGenerator(ngf=ngf, n_blocks=1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from ganzip.loading import build_arch

    torch.manual_seed(0)
    teacher = build_arch("tinygen_export_mod:make", {"ngf": 8}).eval()
    save_student(build_student(teacher, 0.5, size=SIZE), tmp_path / "s.safetensors")
    cli("export", tmp_path / "s.safetensors", "--size", SIZE, "--no-latency").assert_user_error(
        "--arch tinygen_export_mod:make")
    # a factory function's recorded options are confirmed too (docs/security.md)
    cli("export", tmp_path / "s.safetensors", "--arch", "tinygen_export_mod:make", "--size", SIZE,
        "--no-latency").assert_user_error("--arch-opt ngf=8")
    res = cli("export", tmp_path / "s.safetensors", "--arch", "tinygen_export_mod:make", "--arch-opt", "ngf=8",
              "--size", SIZE, "--format", "torchscript", "--no-latency")
    assert res.exit_code == 0, res.stderr


def test_missing_onnx_packages_are_named_before_any_work(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(GanzipError, match="pip install onnxruntime"):
        export_model(FourierMix().eval(), tmp_path / "x.onnx", format="onnx", size=16, latency=False)
    assert list(tmp_path.iterdir()) == []

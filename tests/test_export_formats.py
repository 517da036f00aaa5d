"""`ganzip export --format pt2|executorch|tflite|coreml`: each file is run in its own runtime by the test.

Random-weight tiny generators (no pretrained weights exist here), 32-64 px.
The on-device runtimes are optional extras; a test whose package is absent is
skipped with the pip line that installs it.
"""
from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from ganzip import models
from ganzip.errors import GanzipError
from ganzip.export import export_model, sidecar_path
from ganzip.mobile import PaddingFreeConvTranspose2d
from ganzip.student import build_student, save_student

SIZE = 32


def _needs(module: str, extra: str):
    try:
        __import__(module)
    except Exception:  # noqa: BLE001 - absent, or built for another torch
        pytest.skip(f"{module} is not installed: pip install 'ganzip[{extra}]'")


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    teacher = models.create("resnet_6blocks", ngf=8).eval()
    return build_student(teacher, 0.5, init="inherit", size=SIZE).eval()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("calib")
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).resize((40, 40), Image.BICUBIC).save(root / f"{i}.png")
    return root


def _x(seed: int, size: int = SIZE, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(100 + seed)).clamp(-1, 1)


def _photo_batch(folder, n=4) -> torch.Tensor:
    """The first photos at SIZE in [-1, 1], read with PIL alone (image-like inputs, unlike white noise)."""
    out = []
    for p in sorted(folder.glob("*.png"))[:n]:
        img = np.asarray(Image.open(p).convert("RGB").resize((SIZE, SIZE), Image.BICUBIC), dtype=np.float32)
        out.append(img.transpose(2, 0, 1) / 127.5 - 1)
    return torch.from_numpy(np.stack(out))


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    a01, b01 = ((a.double() + 1) / 2).clamp(0, 1), ((b.double() + 1) / 2).clamp(0, 1)
    return float(10 * torch.log10(1 / ((a01 - b01) ** 2).mean()))


class FourierMix(nn.Module):
    """A spectral layer (FFC/LaMa style): fine for torch.export, not for on-device formats."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return torch.tanh(y + torch.fft.fft2(y).real * 0.01)


# ---------------------------------------------------------------- pt2


def test_pt2_is_an_exported_program_that_reproduces_the_student(cli, student, tmp_path):
    save_student(student, tmp_path / "student.safetensors")
    res = cli("export", tmp_path / "student.safetensors", "--format", "pt2", "--size", SIZE, "--no-latency")
    assert res.exit_code == 0, res.stderr
    out = tmp_path / "student.pt2"
    extra = {"ganzip.json": ""}
    program = torch.export.load(str(out), extra_files=extra)
    assert isinstance(program, torch.export.ExportedProgram)
    contract = json.loads(extra["ganzip.json"])
    assert contract["input_shape"] == [1, 3, SIZE, SIZE] and contract["value_range"] == [-1.0, 1.0]
    module = program.module()
    for seed in range(3):
        with torch.no_grad():
            assert (module(_x(seed)) - student(_x(seed))).abs().max() <= 1e-4


def test_pt2_dynamic_takes_other_shapes(student, tmp_path):
    export_model(student, tmp_path / "d.pt2", format="pt2", size=SIZE, dynamic=True, latency=False)
    module = torch.export.load(str(tmp_path / "d.pt2")).module()
    x = _x(0, size=48, batch=2)
    with torch.no_grad():
        assert (module(x) - student(x)).abs().max() <= 1e-4


def test_torchscript_is_marked_deprecated_and_warns_nothing(cli, student, tmp_path):
    assert "DEPRECATED" in cli("export", "--help").stdout
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_model(student, tmp_path / "s.torchscript.pt", format="torchscript", size=SIZE, latency=False)
        from ganzip.loading import load_generator

        load_generator(str(tmp_path / "s.torchscript.pt"))
    assert not [w for w in caught if "torch.jit" in str(w.message) or "TorchScript" in str(w.message)]


# ---------------------------------------------------------------- ExecuTorch


def _run_pte(path, x: torch.Tensor) -> torch.Tensor:
    from executorch.runtime import Runtime

    # ExecuTorch's Python runtime reads the raw buffer and ignores strides: hand it contiguous memory.
    return Runtime.get().load_program(str(path)).load_method("forward").execute([x.contiguous()])[0]


def test_executorch_fp32_pte_runs_in_executorch_runtime(student, tmp_path):
    _needs("executorch", "mobile")
    result = export_model(student, tmp_path / "s.pte", format="executorch", size=SIZE, latency=False)
    assert "ExecuTorch" in result.runtime and result.max_abs_diff <= 1e-4
    for seed in range(3):
        with torch.no_grad():
            assert (_run_pte(tmp_path / "s.pte", _x(seed)) - student(_x(seed))).abs().max() <= 1e-4


def test_executorch_int8_pte_keeps_the_students_quality(student, photos, tmp_path):
    _needs("executorch", "mobile")
    result = export_model(student, tmp_path / "s.int8.pte", format="executorch", size=SIZE, int8=True,
                          calibration=str(photos), calibration_images=4, latency=False)
    x = _photo_batch(photos)
    got = torch.cat([_run_pte(result.path, x[i:i + 1]) for i in range(len(x))])
    with torch.no_grad():
        ref = student(x)
    assert 0 < (got - ref).abs().max()  # quantized, not the FP32 program
    assert _psnr(ref, got) >= 30
    assert result.quantization["to_fp32"]["psnr"] >= 30 and "PT2E" in result.quantization["method"]


def test_an_operator_executorch_cannot_express_is_named(tmp_path):
    _needs("executorch", "mobile")
    torch.manual_seed(0)
    with pytest.raises(GanzipError, match=r"ExecuTorch cannot express the operator aten.*fft.*format='pt2'"):
        export_model(FourierMix().eval(), tmp_path / "f.pte", format="executorch", size=16, latency=False)
    assert list(tmp_path.iterdir()) == []
    export_model(FourierMix().eval(), tmp_path / "f.pt2", format="pt2", size=16, latency=False)  # the named format can


def test_a_missing_executorch_is_named_with_its_pip_line(cli, student, tmp_path, monkeypatch):
    save_student(student, tmp_path / "student.safetensors")
    monkeypatch.setitem(sys.modules, "executorch", None)
    monkeypatch.setitem(sys.modules, "executorch.exir", None)
    cli("export", tmp_path / "student.safetensors", "--format", "executorch", "--size", SIZE).assert_user_error(
        "pip install 'ganzip[mobile]'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.safetensors"]


# ---------------------------------------------------------------- TFLite


def _run_tflite(path, x: torch.Tensor) -> torch.Tensor:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    assert list(inp["shape"]) == [1, SIZE, SIZE, 3]  # NHWC, the TFLite convention
    interp.set_tensor(inp["index"], x.permute(0, 2, 3, 1).contiguous().numpy())
    interp.invoke()
    return torch.from_numpy(interp.get_tensor(out["index"])).permute(0, 3, 1, 2)


def test_tflite_fp32_runs_in_the_litert_interpreter(cli, student, tmp_path):
    _needs("litert_torch", "tflite")
    save_student(student, tmp_path / "student.safetensors")
    res = cli("export", tmp_path / "student.safetensors", "--format", "tflite", "--size", SIZE, "--no-latency")
    assert res.exit_code == 0, res.stderr
    out = tmp_path / "student.tflite"
    for seed in range(3):
        with torch.no_grad():
            assert (_run_tflite(out, _x(seed)) - student(_x(seed))).abs().max() <= 1e-4
    assert json.loads(sidecar_path(out).read_text())["contract"]["layout"] == "NHWC"


def test_a_missing_litert_is_named_with_its_pip_line(student, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "litert_torch", None)
    with pytest.raises(GanzipError, match=r"pip install 'ganzip\[tflite\]'"):
        export_model(student, tmp_path / "s.tflite", format="tflite", size=SIZE, latency=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stride,padding,output_padding", [(2, 1, 1), (2, 0, 0), (1, 1, 0), (2, 1, 0), (3, 2, 2)])
def test_padding_free_transposed_convolution_is_exact(stride, padding, output_padding):
    torch.manual_seed(0)
    ct = nn.ConvTranspose2d(4, 3, 3, stride, padding, output_padding).eval()
    x = torch.randn(2, 4, 7, 5)
    with torch.no_grad():
        assert (PaddingFreeConvTranspose2d(ct)(x) - ct(x)).abs().max() <= 1e-5


# ---------------------------------------------------------------- Core ML


def test_coreml_package_structure_is_validated_and_the_skip_said(cli, student, tmp_path):
    _needs("coremltools", "coreml")
    save_student(student, tmp_path / "student.safetensors")
    res = cli("export", tmp_path / "student.safetensors", "--format", "coreml", "--size", SIZE, "--no-latency")
    assert res.exit_code == 0, res.stderr
    if sys.platform != "darwin":
        assert "numerical check NOT run" in res.stdout and "macOS" in res.stdout
    import coremltools as ct

    spec = ct.utils.load_spec(str(tmp_path / "student.mlpackage"))
    assert spec.WhichOneof("Type") == "mlProgram"
    (inp,), (out,) = spec.description.input, spec.description.output
    assert inp.name == "input" and list(inp.type.multiArrayType.shape) == [1, 3, SIZE, SIZE]
    assert list(out.type.multiArrayType.shape) == [1, 3, SIZE, SIZE]
    ops = [op.type for f in spec.mlProgram.functions.values() for b in f.block_specializations.values()
           for op in b.operations]
    assert "conv" in ops and "tanh" in ops
    meta = dict(spec.description.metadata.userDefined)
    assert json.loads(meta["ganzip.value_range"]) == [-1.0, 1.0]


def test_tflite_int8_uses_litert_quantization_and_keeps_quality(student, photos, tmp_path):
    _needs("litert_torch", "tflite")
    from ai_edge_litert.interpreter import Interpreter

    result = export_model(student, tmp_path / "s.int8.tflite", format="tflite", size=SIZE, int8=True,
                          calibration=str(photos), calibration_images=4, latency=False)
    interp = Interpreter(model_path=str(result.path), num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    x = _photo_batch(photos)
    got = []
    for img in x:
        a = img[None].permute(0, 2, 3, 1).contiguous().numpy()
        if np.dtype(inp["dtype"]).kind in "iu":  # integer I/O: the file's own scale and zero point
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            a = np.clip(np.round(a / scale + zero), info.min, info.max).astype(inp["dtype"])
        interp.set_tensor(inp["index"], a)
        interp.invoke()
        y = interp.get_tensor(out["index"]).astype(np.float32)
        if np.dtype(out["dtype"]).kind in "iu":
            scale, zero = out["quantization"]
            y = (y - zero) * scale
        got.append(torch.from_numpy(y).permute(0, 3, 1, 2))
    with torch.no_grad():
        assert _psnr(student(x), torch.cat(got)) >= 30
    assert result.quantization["to_fp32"]["psnr"] >= 30


@pytest.mark.parametrize("fmt", ["executorch", "tflite", "coreml"])
def test_on_device_formats_refuse_dynamic_shapes(cli, student, tmp_path, fmt):
    save_student(student, tmp_path / "student.safetensors")
    cli("export", tmp_path / "student.safetensors", "--format", fmt, "--dynamic").assert_user_error(
        "static shapes only", "--format onnx or pt2")

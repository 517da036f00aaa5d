"""`ganzip export --int8`: an INT8 ONNX student checked against the quality it lost, or nothing written.

The student is a random-weight tiny generator built here (no pretrained
weights exist); calibration images are random 32 px PNGs or built-in renders.
Every fidelity number is recomputed in the test from onnxruntime's own
outputs (NumPy PSNR), never taken from ganzip's report alone.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from ganzip import models
from ganzip.errors import GanzipError
from ganzip.export import export_model, sidecar_path
from ganzip.student import build_student, save_student

SIZE = 32


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    torch.manual_seed(0)
    teacher = models.create("resnet_6blocks", ngf=8).eval()
    student = build_student(teacher, 0.5, init="inherit", size=SIZE).eval()
    return teacher, student


@pytest.fixture
def student_dir(student, tmp_path):
    """A fresh folder holding only student.safetensors."""
    save_student(student[1], tmp_path / "student.safetensors")
    return tmp_path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Twelve smooth random 40x40 photos (smooth like real images, unlike white noise)."""
    root = tmp_path_factory.mktemp("calib")
    rng = np.random.default_rng(0)
    for i in range(12):
        small = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
        Image.fromarray(small).resize((40, 40), Image.BICUBIC).save(root / f"{i}.png")
    return root


def _ort(path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two [-1, 1] images mapped to [0, 1], computed directly."""
    a01, b01 = (a.astype(np.float64) + 1) / 2, (b.astype(np.float64) + 1) / 2
    return float(10 * np.log10(1.0 / np.mean((a01.clip(0, 1) - b01.clip(0, 1)) ** 2)))


def _photo_batch(folder, n=4) -> np.ndarray:
    """The first photos resized to SIZE and scaled to [-1, 1], read with PIL alone."""
    out = []
    for p in sorted(folder.glob("*.png"))[:n]:
        img = np.asarray(Image.open(p).convert("RGB").resize((SIZE, SIZE), Image.BICUBIC), dtype=np.float32)
        out.append(img.transpose(2, 0, 1) / 127.5 - 1)
    return np.stack(out)


def test_int8_onnx_student_passes_its_fidelity_check(cli, student, student_dir, photos):
    _, fp32 = student
    res = cli("export", student_dir / "student.safetensors", "--int8", "--calibration", photos,
              "--calibration-images", 8, "--size", SIZE, "--repeats", 2, "--threads", 1, "--json")
    assert res.exit_code == 0, res.stderr
    info = json.loads(res.stdout)
    out = student_dir / "student.int8.onnx"
    assert info["path"] == str(out) and out.is_file() and info["int8"]

    # Independent check: onnxruntime's INT8 outputs against the PyTorch FP32 student.
    x = _photo_batch(photos)
    with torch.no_grad():
        ref = fp32(torch.from_numpy(x)).numpy()
    got = np.concatenate([_ort(out, x[i:i + 1]) for i in range(len(x))])
    measured = _psnr(ref, got)
    assert measured >= 30, measured
    assert 0 < np.abs(got - ref).max()  # it really is quantized, not the FP32 graph

    q = info["quantization"]
    assert q["to_fp32"]["psnr"] >= 30 and abs(q["to_fp32"]["psnr"] - measured) < 3
    assert q["calibration"]["images"] == 8 and "held-out" in q["calibration"]["evaluated_on"]
    assert q["latency"]["threads"] == 1 and q["latency"]["fp32_ms"] > 0 and q["latency"]["int8_ms"] > 0
    assert q["bytes"]["int8"] == out.stat().st_size and q["bytes"]["ratio"] > 1
    assert {"InstanceNormalization", "Tanh"} <= set(q["float_operators"])
    assert all(v["why"] for v in q["float_operators"].values())
    assert json.loads(sidecar_path(out).read_text())["quantization"]["to_fp32"] == q["to_fp32"]


def test_int8_onnx_is_qdq_with_per_channel_int8_weights(student, photos, tmp_path):
    _, fp32 = student
    result = export_model(fp32, tmp_path / "s.int8.onnx", size=SIZE, int8=True, calibration=str(photos),
                          calibration_images=4, latency=False)
    graph = onnx.load(str(result.path)).graph
    ops = [n.op_type for n in graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    inits = {i.name: i for i in graph.initializer}
    first_conv = next(n for n in graph.node if n.op_type == "Conv")
    weight_dq = next(n for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] == first_conv.input[1])
    w, scale = inits[weight_dq.input[0]], inits[weight_dq.input[1]]
    assert w.data_type == onnx.TensorProto.INT8
    assert list(scale.dims) == [w.dims[0]]  # one scale per output channel


def test_the_contract_is_in_the_onnx_metadata(student, photos, tmp_path):
    _, fp32 = student
    for int8 in (False, True):
        out = tmp_path / f"m{int8}.onnx"
        export_model(fp32, out, size=SIZE, int8=int8, calibration=str(photos) if int8 else None,
                     calibration_images=4, latency=False)
        props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
        assert props["ganzip.layout"] == "NCHW" and json.loads(props["ganzip.value_range"]) == [-1.0, 1.0]
        assert json.loads(props["ganzip.input_shape"]) == [1, 3, SIZE, SIZE]
        assert props["ganzip.input"] == "input" and props["ganzip.output"] == "output"
        assert props["ganzip.precision"] == ("int8" if int8 else "fp32")


def test_static_shape_is_the_default(student, tmp_path):
    import onnxruntime as ort

    _, fp32 = student
    export_model(fp32, tmp_path / "s.onnx", size=SIZE, latency=False)
    sess = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == [1, 3, SIZE, SIZE]
    assert sess.get_outputs()[0].shape == [1, 3, SIZE, SIZE]


def test_fidelity_to_the_teacher_is_reported(student, photos, tmp_path):
    teacher, fp32 = student
    result = export_model(fp32, tmp_path / "t.int8.onnx", size=SIZE, int8=True, calibration=str(photos),
                          calibration_images=8, teacher=teacher, latency=False)
    t = result.quantization["to_teacher"]
    x = _photo_batch(photos)  # not the held-out images, so compare loosely: same ballpark
    with torch.no_grad():
        t_out = teacher(torch.from_numpy(x)).numpy()
    got = np.concatenate([_ort(result.path, x[i:i + 1]) for i in range(len(x))])
    assert abs(t["int8"]["psnr"] - _psnr(t_out, got)) < 3
    assert abs(t["int8"]["psnr"] - t["fp32"]["psnr"]) < 1  # INT8 loses little against what FP32 already lost


def test_builtin_calibration(student, tmp_path):
    torch.manual_seed(0)
    teacher = models.create("resnet_6blocks", ngf=8).eval()
    s64 = build_student(teacher, 0.5, init="inherit", size=64).eval()
    result = export_model(s64, tmp_path / "b.int8.onnx", size=64, int8=True, calibration="builtin:edges2shapes",
                          calibration_images=4, latency=False)
    assert result.quantization["calibration"]["source"] == "builtin:edges2shapes"
    assert result.quantization["to_fp32"]["psnr"] >= 30


def test_below_min_psnr_nothing_is_written(cli, student_dir, photos):
    before = sorted(p.name for p in student_dir.iterdir())
    res = cli("export", student_dir / "student.safetensors", "--int8", "--calibration", photos,
              "--calibration-images", 4, "--size", SIZE, "--min-psnr", 99, "--no-latency")
    line = res.assert_user_error("dB PSNR", "below --min-psnr 99")
    measured = float(line.split("failed: ")[1].split(" dB")[0])
    assert 20 < measured < 99
    assert sorted(p.name for p in student_dir.iterdir()) == before  # no file, no temp, no JSON


def test_a_calibration_folder_without_images_is_refused(cli, student_dir, tmp_path_factory):
    empty = tmp_path_factory.mktemp("empty")
    cli("export", student_dir / "student.safetensors", "--int8", "--calibration", empty, "--size", SIZE,
        "--no-latency").assert_user_error("--calibration", "no images")
    junk = tmp_path_factory.mktemp("junk")
    (junk / "notes.txt").write_text("not an image")
    (junk / "broken.png").write_bytes(b"\x89PNG not really")
    cli("export", student_dir / "student.safetensors", "--int8", "--calibration", junk, "--size", SIZE,
        "--no-latency").assert_user_error("--calibration", "no usable images")
    assert sorted(p.name for p in student_dir.iterdir()) == ["student.safetensors"]


@pytest.mark.parametrize("fmt", ["torchscript", "pt2", "coreml"])
def test_int8_is_refused_where_the_format_has_no_int8_path(cli, student_dir, photos, fmt):
    cli("export", student_dir / "student.safetensors", "--format", fmt, "--int8", "--calibration", photos,
        "--size", SIZE).assert_user_error(f"--int8 is not available with --format {fmt}", "--format onnx")
    assert sorted(p.name for p in student_dir.iterdir()) == ["student.safetensors"]


def test_int8_needs_calibration_images(cli, student_dir):
    cli("export", student_dir / "student.safetensors", "--int8", "--size", SIZE).assert_user_error("--calibration")


def test_missing_onnxruntime_quantization_is_named(monkeypatch, student, photos, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(GanzipError, match="pip install onnxruntime"):
        export_model(student[1], tmp_path / "x.onnx", size=SIZE, int8=True, calibration=str(photos), latency=False)
    assert list(tmp_path.iterdir()) == []


def test_every_instance_norm_is_reported_as_float(student, photos, tmp_path):
    _, fp32 = student
    result = export_model(fp32, tmp_path / "f.int8.onnx", size=SIZE, int8=True, calibration=str(photos),
                          calibration_images=4, latency=False)
    norms = sum(isinstance(m, torch.nn.InstanceNorm2d) for m in fp32.modules())
    convt = sum(isinstance(m, torch.nn.ConvTranspose2d) for m in fp32.modules())
    floats = result.quantization["float_operators"]
    assert floats["InstanceNormalization"]["count"] == norms
    assert floats["ConvTranspose"]["count"] == convt and floats["Tanh"]["count"] == 1

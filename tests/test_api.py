"""The public Python API end to end: objects with paths and metrics in, no printed text.

The teacher is a random-weight tiny ResNet generator saved inside the test
(no pretrained weights exist here); data is a folder of random 64 px PNGs.
FID and LPIPS need pretrained files that are absent here, so evaluation runs
with allow_missing and the tests check the metrics that need none (PSNR, SSIM).
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from PIL import Image

import ganzip
from ganzip import models


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    rng = np.random.default_rng(0)
    for sub, n in (("trainA", 6), ("trainB", 6), ("testA", 2), ("testB", 2)):
        (root / "data" / sub).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "data" / sub / f"{i}.png")
    torch.manual_seed(0)
    torch.save(models.create("resnet_6blocks", ngf=8).state_dict(), root / "G.pth")
    return root


@pytest.fixture(scope="module")
def compressed(setup):
    return ganzip.compress(
        str(setup / "G.pth"), arch="resnet_6blocks", arch_opts={"ngf": 8}, data=str(setup / "data"), width=0.5,
        size=64, steps=3, out=str(setup / "out"), device="cpu", quiet=True, offline=True,
        overrides=["perceptual.weight=0", "crd.patch_size=16", "discriminator.ndf=8", "eval.samples=0"],
        checkpoint_every=0, eval_every=0,
    )


def test_compress_returns_paths_and_metrics(compressed, setup):
    assert isinstance(compressed, ganzip.api.CompressResult)
    assert compressed.student_path == setup / "out" / "student.safetensors" and compressed.student_path.is_file()
    assert compressed.report_path.is_file() and compressed.train.steps == 3
    # the reported PSNR to the teacher, recomputed from the saved files on the two test images
    student = ganzip.load_student(compressed.student_path)
    teacher = ganzip.load_generator(setup / "G.pth", arch="resnet_6blocks", arch_opts=["ngf=8"])
    files = sorted((setup / "data" / "testA").glob("*.png"))
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), dtype=np.float32)).permute(2, 0, 1)
                     for f in files]) / 127.5 - 1
    with torch.no_grad():  # uint8 as a saved PNG holds it: (y + 1) / 2 * 255, truncated
        s8, t8 = [((m.eval()(x).clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8).double() / 255 for m in (student, teacher)]
    mse = (s8 - t8).pow(2).flatten(1).mean(1)
    expected = (10 * torch.log10(1 / mse)).mean().item()
    assert compressed.metrics["student"]["psnr_to_teacher"]["mean"] == pytest.approx(expected, abs=1e-4)
    assert compressed.metrics["student"]["psnr_to_teacher"]["count"] == len(files)


def test_the_saved_student_is_the_returned_one_at_half_width(compressed, setup):
    loaded = ganzip.load_student(compressed.student_path)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(loaded(x), compressed.student.cpu().eval()(x), atol=1e-6)
    teacher = ganzip.load_generator(setup / "G.pth", arch="resnet_6blocks", arch_opts=["ngf=8"])
    first = lambda m: next(c for c in m.modules() if isinstance(c, torch.nn.Conv2d))  # noqa: E731
    assert first(loaded).out_channels == first(teacher).out_channels // 2


def test_evaluate_returns_metrics_for_a_student_file(compressed, setup):
    result = ganzip.evaluate(compressed.student_path, teacher=str(setup / "G.pth"), data=str(setup / "data"),
                             arch="resnet_6blocks", arch_opts=["ngf=8"], size=64, device="cpu", offline=True,
                             allow_missing=True, progress=False, latency=False)
    assert isinstance(result, ganzip.api.EvalResult)
    assert result.metrics["count"] == 2
    assert result.metrics["student"]["psnr_to_teacher"]["mean"] == pytest.approx(
        compressed.metrics["student"]["psnr_to_teacher"]["mean"], abs=1e-6)
    assert result.cost["teacher"]["macs"] > result.cost["student"]["macs"]


def test_build_student_keeps_the_asked_fraction_of_channels():
    teacher = models.create("resnet_6blocks", ngf=8)
    student = ganzip.build_student(teacher, 0.25)
    convs = [m.out_channels for m in student.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0] == 2 and convs[-1] == 3  # the image-producing layer keeps its 3 channels


def test_the_api_functions_carry_the_library_signatures():
    params = inspect.signature(ganzip.compress).parameters
    assert {"data", "width", "recipe", "overrides", "out", "device", "steps"} <= set(params)
    assert {"teacher", "data", "size", "out"} <= set(inspect.signature(ganzip.evaluate).parameters)
    for name in ("compress", "evaluate", "load_generator", "build_student", "load_student", "export", "run_batch"):
        assert getattr(ganzip.api, name).__doc__


def test_export_through_the_api_returns_a_verified_file(compressed, tmp_path):
    import onnxruntime as ort

    result = ganzip.api.export(compressed.student_path, tmp_path / "s.onnx", size=64, latency=False)
    assert result.path == tmp_path / "s.onnx" and result.path.is_file()
    # checked here with onnxruntime, not by export's own report, on an input export never saw
    sess = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(5)) * 2 - 1  # the file's static shape
    with torch.no_grad():
        expected = ganzip.load_student(compressed.student_path).eval()(x).numpy()
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 1e-4

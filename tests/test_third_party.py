"""Students of real third-party generators: spandrel's architectures and segmentation_models_pytorch.

Every model is built from its own package's class with random weights (no
pretrained weights exist here), through `--arch package.module:callable`, at
small sizes. A student must run, keep the teacher's output shape, and reload
from its safetensors file to the same outputs.
"""
import json

import pytest
import torch
import torch.nn as nn

pytest.importorskip("spandrel")
pytest.importorskip("segmentation_models_pytorch")

import ganzip  # noqa: E402
from ganzip.errors import GanzipError  # noqa: E402
from ganzip.loading import build_arch, check_image_model  # noqa: E402
from ganzip.metrics.cost import infer_in_channels, set_in_channels  # noqa: E402
from ganzip.profiling import profile  # noqa: E402
from ganzip.student import build_student, check_batch_size, load_student, read_student_metadata, save_student  # noqa: E402
from tests.third_party_models import CATALOGUE, build, by_name  # noqa: E402

SMALL = [e for e in CATALOGUE if "deep" not in e.tags]
SAME_SIZE = ["DnCNN", "DRUNet", "NAFNet", "smp Unet / ResNet-18", "smp UnetPlusPlus / MobileNetV2",
             "smp FPN / EfficientNet-B0"]


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x.clone())  # RCAN scales its input in place


@pytest.mark.parametrize("entry", SMALL, ids=[e.name for e in SMALL])
def test_student_runs_keeps_the_output_shape_and_reloads_without_pickle(entry, tmp_path):
    teacher = build(entry)
    x = torch.rand(1, entry.in_channels, entry.size, entry.size)
    expected = forward(teacher, x).shape
    assert expected[-1] == entry.size * entry.scale  # the catalogue says what the model does

    student = build_student(teacher, 0.25, init="inherit", size=entry.size)
    assert forward(student, x).shape == expected
    assert params(student) < params(teacher)
    info = student.ganzip_student
    assert info["params_ratio"] == pytest.approx(params(teacher) / params(student), rel=1e-3)
    assert all(set(u) == {"layer", "reason"} and u["reason"] for u in info["unpruned"])

    path = save_student(student, tmp_path / "student.safetensors")
    assert json.loads(read_student_metadata(path)["ganzip.student"])["unpruned"] == info["unpruned"]
    rebuilt = load_student(path, arch=entry.arch)
    assert torch.allclose(forward(rebuilt, x), forward(student, x), atol=1e-5)


def test_the_23_block_rrdb_builds_with_every_dense_concatenation_consistent():
    # torch-pruning's own size inference gives up on this graph ("Maximum recursive depth reached").
    teacher = build(by_name("ESRGAN RRDBNet (23 blocks)"))
    student = build_student(teacher, 0.25, size=16)
    x = torch.rand(1, 3, 16, 16)
    assert forward(student, x).shape == (1, 3, 64, 64)
    trunk = student.model[1].sub
    assert len(trunk) == 24  # 23 RRDBs and the trunk conv
    for rrdb in list(trunk)[:23]:
        for rdb in (rrdb.RDB1, rrdb.RDB2, rrdb.RDB3):
            convs = [rdb.conv1[0], rdb.conv2[0], rdb.conv3[0], rdb.conv4[0], rdb.conv5[0]]
            feature = student.model[0].out_channels
            for k, conv in enumerate(convs):  # conv_k reads cat(x, x1, ..., x_{k-1})
                assert conv.in_channels == feature + sum(c.out_channels for c in convs[:k])
            assert convs[0].out_channels == 32 // 4  # the growth channels were scaled, not left whole
    assert student.ganzip_student["unpruned"] == [{"layer": "model.10", "reason": "writes the output image"}]
    assert student.ganzip_student["params_ratio"] > 14


def test_layers_on_the_image_channels_stay_whole_instead_of_a_refusal():
    rcan = build_student(build(by_name("RCAN")), 0.25, size=16)
    left = {u["layer"]: u["reason"] for u in rcan.ganzip_student["unpruned"]}
    assert "image's 3 channels" in left["sub_mean"] and rcan.sub_mean.weight.shape == (3, 3, 1, 1)
    swift = build_student(build(by_name("SwiftSRGAN")), 0.25, size=16)
    assert swift.initial.cnn.depthwise.out_channels == 3
    assert swift.initial.cnn.pointwise.out_channels == 4  # 16 -> 4 right after it


def test_a_group_that_breaks_the_student_is_found_left_whole_and_recorded():
    # NAFNet's gates (x1, x2 = x.chunk(2, 1); x1 * x2) and pixel-shuffle ups: some groups cannot be cut.
    teacher = build(by_name("NAFNet"))
    student = build_student(teacher, 0.25, size=32)
    broke = [u for u in student.ganzip_student["unpruned"] if "broke the student" in u["reason"]]
    assert broke, student.ganzip_student["unpruned"]
    x = torch.rand(1, 3, 32, 32)
    assert forward(student, x).shape == forward(teacher, x).shape
    student.train()
    assert student(x.expand(2, -1, -1, -1)).shape == (2, 3, 32, 32)  # and it trains
    assert params(teacher) / params(student) > 1.2


def test_the_input_channels_are_not_read_off_a_conv_after_pixel_unshuffle():
    teacher = build(by_name("Real-ESRGAN x2 RRDBNet (pixel-unshuffle)"))
    first = next(m for m in teacher.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 12
    assert infer_in_channels(teacher) == 3
    student = build_student(teacher, 0.25, size=16)
    assert student.ganzip_student["in_channels"] == 3
    assert forward(student, torch.rand(1, 3, 16, 16)).shape == (1, 3, 32, 32)


class NoiseMapped(nn.Module):
    """Takes an image and makes its own noise-level channel, so its first conv sees 4 channels."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(4, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 3, 3, padding=1))

    def forward(self, x):
        if x.shape[1] != 3:
            raise ValueError("RGB only")
        return self.body(torch.cat([x, x.std(1, keepdim=True)], 1))


def test_in_channels_names_the_flag_when_the_guess_is_impossible_and_fixes_it(cli, tmp_path, monkeypatch):
    class Opaque(nn.Module):  # only the caller knows it takes 2 channels (a grey image and a mask)
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(10, 8, 3, padding=1)
            self.out = nn.Conv2d(8, 2, 3, padding=1)

        def forward(self, x):
            assert x.shape[1] == 2
            return self.out(self.conv(x.repeat(1, 5, 1, 1)).relu())

    with pytest.raises(GanzipError, match="with in_channels"):  # Python wording of --in-channels
        check_image_model(Opaque(), 32)
    set_in_channels(model := Opaque(), 2)
    check_image_model(model, 32)
    assert infer_in_channels(NoiseMapped()) == 3  # one less than the first conv's 4 also counts
    result = profile(Opaque(), width=0.5, size=32, latency=False, in_channels=2)
    assert result["ratios"]["params"] > 1.5

    (tmp_path / "opaque_gen.py").write_text(
        "import torch.nn as nn\n"
        "class G(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(10, 8, 3, padding=1)\n"
        "        self.out = nn.Conv2d(8, 2, 3, padding=1)\n"
        "    def forward(self, x):\n"
        "        assert x.shape[1] == 2\n"
        "        return self.out(self.conv(x.repeat(1, 5, 1, 1)).relu())\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    res = cli("profile", "--arch", "opaque_gen:G", "--size", "32", "--no-latency")
    res.assert_user_error("--in-channels")
    ok = cli("profile", "--arch", "opaque_gen:G", "--size", "32", "--no-latency", "--in-channels", "2", "--width", "0.5")
    assert ok.exit_code == 0, ok.stderr


def test_batchnorm_after_global_pooling_asks_for_batch_size_two_before_training(tmp_path):
    # DeepLabV3's ASPP pooling branch: AdaptiveAvgPool2d(1) -> Conv -> BatchNorm.
    teacher = build_arch("segmentation_models_pytorch:DeepLabV3",
                         {"encoder_name": "resnet18", "encoder_weights": None, "classes": 3, "activation": "tanh",
                          "decoder_channels": 32}).eval()
    student = build_student(teacher, 0.25, size=64)
    with pytest.raises(GanzipError, match="batch_size=2") as err:  # Python wording of --batch-size 2
        check_batch_size(student, 1)
    assert "\n" not in str(err.value)
    check_batch_size(student, 2)
    with pytest.raises(GanzipError, match="batch_size=2"):
        ganzip.compress(teacher, data="builtin:day2night", recipe="kd-pixel", size=64, steps=2, batch_size=1,
                        out=str(tmp_path / "out"), device="cpu", quiet=True, offline=True, evaluate=False,
                        checkpoint_every=0, eval_every=0)


@pytest.mark.parametrize("name", SAME_SIZE)
def test_same_size_restorers_compress_end_to_end_and_reload(name, tmp_path):
    entry = by_name(name)
    teacher = build(entry)
    result = ganzip.compress(teacher, data="builtin:day2night", recipe="kd-pixel", width=0.25, size=64, steps=2,
                             batch_size=2, out=str(tmp_path / "out"), device="cpu", quiet=True, offline=True,
                             overrides=["eval.samples=0"], checkpoint_every=0, eval_every=0,
                             evaluate=name == "DnCNN")
    assert result.train.steps == 2
    loaded = load_student(result.student_path, arch=entry.arch)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    assert forward(loaded, x).shape == forward(teacher, x).shape
    assert torch.allclose(forward(loaded, x), forward(result.student.cpu(), x), atol=1e-5)
    assert params(loaded) < params(teacher)
    if name == "DnCNN":
        assert result.report_path.is_file()


# Real-CUGAN reflect-pads by 18 px, so it cannot run on these 16-px images; it builds and reloads above.
SUPER_RESOLUTION = ["ESRGAN RRDBNet (6 blocks)", "Real-ESRGAN SRVGGNetCompact", "SPAN", "PLKSR", "SwiftSRGAN", "RCAN"]


@pytest.fixture(scope="module")
def lr_images(tmp_path_factory):
    """Six random 16-px RGB images: low-resolution inputs (kd-pixel needs no HR targets)."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("lr")
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


@pytest.mark.parametrize("name", SUPER_RESOLUTION)
def test_upscalers_compress_end_to_end_and_reload_at_the_output_size(name, lr_images, tmp_path):
    entry = by_name(name)
    teacher = build(entry)
    result = ganzip.compress(teacher, data=str(lr_images), recipe="kd-pixel", width=0.25, size=16, steps=2,
                             batch_size=2, out=str(tmp_path / "out"), device="cpu", quiet=True, offline=True,
                             overrides=["eval.samples=0"], checkpoint_every=0, eval_every=0, evaluate=False)
    assert result.train.steps == 2
    loaded = load_student(result.student_path, arch=entry.arch)
    x = torch.rand(1, 3, 16, 16)
    assert forward(loaded, x).shape == forward(teacher, x).shape == (1, 3, 16 * entry.scale, 16 * entry.scale)
    assert torch.allclose(forward(loaded, x), forward(result.student.cpu(), x), atol=1e-5)
    assert params(loaded) < params(teacher)

"""Generators whose output differs from their input: super-resolution, grey-scale, image + mask; --arch auto.

The teachers are real third-party architectures built from spandrel's own
classes (ESRGAN's RRDBNet, Real-ESRGAN's SRVGGNetCompact) with random
weights (no pretrained file can be downloaded here), saved as bare state
dicts and recognised by ``--arch auto``. Images are tiny PNGs written by the
tests: 16-px low-resolution inputs, their 64-px (x4) or 32-px (x2)
high-resolution originals.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("spandrel")

from spandrel.architectures.Compact import Compact  # noqa: E402
from spandrel.architectures.ESRGAN import ESRGAN  # noqa: E402

LR, N = 16, 6
# Small and fast: no VGG-16 (perceptual off), a narrow D, few held-out images.
FAST = ["--size", str(LR), "--steps", "2", "--eval-every", "1", "--set", "perceptual.weight=0",
        "--set", "discriminator.ndf=4", "--set", "eval.max_images=2", "--quiet", "--offline"]

from ganzip.imaging import LABEL_BAND

HEAD = 2 * LABEL_BAND  # samples.png: a caption line, then a label over each column


def _save_state_dict(model: torch.nn.Module, path) -> str:
    torch.save(model.state_dict(), path)
    return str(path)


def _lr_hr(root, scale: int, mode: str = "RGB", n: int = N, extra_lr: bool = False):
    """LR/HR folders: each HR image is its LR image enlarged ``scale`` times (nearest), same file names."""
    rng = np.random.default_rng(scale)
    lr, hr = root / f"lr{scale}{mode}", root / f"hr{scale}{mode}"
    lr.mkdir()
    hr.mkdir()
    channels = {"L": 1, "RGB": 3}[mode]
    for i in range(n):
        small = rng.integers(0, 256, (LR, LR, channels), dtype=np.uint8).squeeze(-1 if channels == 1 else None)
        Image.fromarray(small).save(lr / f"{i:03d}.png")
        Image.fromarray(small).resize((LR * scale, LR * scale), Image.NEAREST).save(hr / f"{i:03d}.png")
    if extra_lr:  # an input without a ground truth: skipped and counted
        Image.fromarray(rng.integers(0, 256, (LR, LR, channels), dtype=np.uint8).squeeze()).save(lr / "orphan.png")
    return lr, hr


@pytest.fixture(scope="module")
def sr(tmp_path_factory):
    root = tmp_path_factory.mktemp("sr")
    torch.manual_seed(0)  # random weights: stand-ins for pretrained Real-ESRGAN files
    files = {
        "rrdb": _save_state_dict(ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4), root / "rrdb.pth"),
        "compact": _save_state_dict(Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=4),
                                    root / "compact.pth"),
    }
    lr, hr = _lr_hr(root, 4, extra_lr=True)
    return dict(root=root, lr=lr, hr=hr, **files)


def _report(out) -> dict:
    return json.loads((out / "report.json").read_text())


def _psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / mse))


# ---------------------------------------------------------------- the Done-when command


@pytest.mark.parametrize("model,arch", [("rrdb", "spandrel/ESRGAN"), ("compact", "spandrel/Compact")])
def test_real_esrgan_style_model_compresses_end_to_end_at_the_output_resolution(cli, sr, tmp_path, model, arch):
    from ganzip import load_student

    out = tmp_path / "run"
    res = cli("compress", sr[model], "--arch", "auto", "--width", "0.25", "--data", sr["lr"], "--target", sr["hr"],
              "--out", out, *FAST)
    assert res.exit_code == 0, (res.stdout, res.stderr, res.exception)
    report = _report(out)

    # the architecture and its hyperparameters are recorded, as plain JSON
    assert report["models"]["student"]["arch"] == arch
    assert report["models"]["student"]["opts"]["ganzip_scale"] == 4
    # the HR folder is the ground truth, matched by file name; the orphan LR image is skipped and said so
    assert report["data"]["output_size"] == 4 * LR and report["data"]["scale"] == 4
    assert report["data"]["kind"] == "paired" and report["metrics"]["count"] == N
    assert any("skipped" in w and "orphan" in w for w in report["warnings"]), report["warnings"]
    student_m, teacher_m = report["metrics"]["student"], report["metrics"]["teacher"]
    for key in ("psnr_to_target", "ssim_to_target", "psnr_to_teacher", "ssim_to_teacher"):
        assert np.isfinite(student_m[key]["mean"]), key
    assert np.isfinite(teacher_m["psnr_to_target"]["mean"])

    # samples.png: one row per held-out image, input | teacher | student, each 64 px
    grid = Image.open(out / "samples.png")
    assert grid.size == (3 * 4 * LR, 4 * LR + HEAD)  # 5% of 6 images -> one held out; caption + labels
    assert Image.open(out / "images" / "00_input.png").size == (4 * LR, 4 * LR)

    # the student reloads from its file alone and keeps the teacher's output shape
    student = load_student(out / "student.safetensors")
    assert student.ganzip_spec["arch"] == arch
    x = torch.rand(1, 3, LR, LR) * 2 - 1
    assert student(x).shape == (1, 3, 4 * LR, 4 * LR)
    assert report["cost"]["ratios"]["params"] > 3

    # exported at the input size, checked against PyTorch on 16-px inputs and 64-px outputs
    onnx = tmp_path / "student.onnx"
    res = cli("export", out / "student.safetensors", "--format", "onnx", "--size", str(LR), "--out", onnx, "--json", "--no-latency")
    assert res.exit_code == 0, (res.stdout, res.stderr)
    exported = json.loads(res.stdout)
    assert exported["checks"][0]["shape"] == [1, 3, LR, LR] and exported["max_abs_diff"] <= 1e-4

    # the reported PSNR to the ground truth, recomputed here from the files at 64 px
    ours = []
    for i in range(N):
        lr_img = np.array(Image.open(sr["lr"] / f"{i:03d}.png"))
        x = torch.from_numpy(lr_img).permute(2, 0, 1)[None].float() / 127.5 - 1
        with torch.no_grad():
            y = student(x)[0]
        y_u8 = ((y.clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8).permute(1, 2, 0).numpy()  # tensor2im: truncated
        ours.append(_psnr_u8(y_u8, np.asarray(Image.open(sr["hr"] / f"{i:03d}.png"))))
    assert student_m["psnr_to_target"]["mean"] == pytest.approx(np.mean(ours), abs=1e-3)


def test_the_discriminator_sees_the_output_channels_and_the_crd_patch_follows_the_output(sr, tmp_path):
    from ganzip import engine
    from ganzip.loading import load_generator

    teacher = load_generator(sr["rrdb"], arch="auto")
    cfg = engine._resolve_config("crd", ["perceptual.weight=0", "discriminator.ndf=4"], size=LR, steps=1,
                                 epochs=None, batch_size=None, seed=None)
    assert engine.output_geometry(teacher, 3, LR) == (3, 4 * LR, 4)
    bundle = engine.open_training_data(str(sr["lr"]), str(sr["hr"]), cfg, in_channels=3, out_channels=3, scale=4)
    item = bundle.train[0]
    assert item["A"].shape == (3, LR, LR) and item["B"].shape == (3, 4 * LR, 4 * LR)
    plan = engine.plan_losses(cfg, has_targets=True, paired=bundle.paired, same_shape=False)
    losses = engine._Losses(cfg, plan, offline=True, out_side=bundle.out_side)
    assert losses.crd.patch_size == 4 * LR // 8  # k = 32 at 256 px -> 8 at a 64-px output (not 2 at the input's 16)
    D = engine.build_discriminator(cfg, 3, 3, seed=0)
    assert D(teacher(item["A"][None])).ndim == 4

    # HR images whose names match no input: unpaired real images for D, still read at the output's size
    other = tmp_path / "unrelated"
    other.mkdir()
    for i in range(2):
        Image.fromarray(np.full((80, 80, 3), 40 * i, np.uint8)).save(other / f"x{i}.png")
    unpaired = engine.open_training_data(str(sr["lr"]), str(other), cfg, in_channels=3, out_channels=3, scale=4)
    assert not unpaired.paired and any("unpaired" in w for w in unpaired.warnings)
    assert engine._target_batch(unpaired.targets, 0, 2, 0, 0).shape == (2, 3, 4 * LR, 4 * LR)


def test_training_relates_crd_patches_of_the_output_not_of_the_input(sr, tmp_path, monkeypatch):
    from ganzip import engine, losses

    seen = []
    original = losses.CRDLoss.forward

    def spy(self, student, teacher):
        seen.append((self.patch_size, tuple(student.shape[-2:])))
        return original(self, student, teacher)

    monkeypatch.setattr(losses.CRDLoss, "forward", spy)
    engine.compress(sr["compact"], arch="auto", data=str(sr["lr"]), target=str(sr["hr"]), size=LR, steps=1,
                    overrides=["perceptual.weight=0", "discriminator.ndf=4"], out=tmp_path / "run", quiet=True,
                    offline=True, evaluate=False)
    assert seen == [(8, (4 * LR, 4 * LR))]  # 64-px outputs: k = 64 / 8


# ---------------------------------------------------------------- other channel counts


def test_grey_scale_x2_model_compresses_and_reloads(cli, tmp_path):
    from ganzip import load_student

    torch.manual_seed(1)
    teacher = _save_state_dict(ESRGAN(in_nc=1, out_nc=1, num_filters=8, num_blocks=1, scale=2), tmp_path / "grey.pth")
    lr, hr = _lr_hr(tmp_path, 2, mode="L")
    out = tmp_path / "run"
    res = cli("compress", teacher, "--arch", "auto", "--width", "0.25", "--data", lr, "--target", hr, "--out", out,
              *FAST)
    assert res.exit_code == 0, (res.stdout, res.stderr, res.exception)
    report = _report(out)
    assert (report["data"]["in_channels"], report["data"]["out_channels"], report["data"]["output_size"]) == (1, 1, 32)
    assert np.isfinite(report["metrics"]["student"]["psnr_to_target"]["mean"])
    assert Image.open(out / "samples.png").size == (3 * 2 * LR, 2 * LR + HEAD)
    assert load_student(out / "student.safetensors")(torch.zeros(1, 1, LR, LR)).shape == (1, 1, 2 * LR, 2 * LR)


def test_image_plus_mask_model_reads_the_alpha_band_as_its_fourth_channel(cli, tmp_path):
    from ganzip import load_student
    from ganzip.data import open_dataset

    torch.manual_seed(2)
    teacher = _save_state_dict(ESRGAN(in_nc=4, out_nc=3, num_filters=8, num_blocks=1, scale=1), tmp_path / "inpaint.pth")
    rng = np.random.default_rng(4)
    data, target = tmp_path / "masked", tmp_path / "real"
    data.mkdir()
    target.mkdir()
    for i in range(N):
        rgba = rng.integers(0, 256, (32, 32, 4), dtype=np.uint8)
        rgba[..., 3] = np.where(rng.random((32, 32)) < 0.3, 255, 0)  # the mask
        Image.fromarray(rgba, "RGBA").save(data / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(target / f"r{i}.png")

    # what the model is fed: RGB exactly as stored (not composited over white) and the alpha band as the mask
    item = open_dataset(data, size=32, augment=False, channels=4, target_channels=3)[0]
    stored = np.array(Image.open(data / "0.png"))
    assert item["A"].shape == (4, 32, 32)
    assert torch.equal(((item["A"] + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0),
                       torch.from_numpy(stored))

    out = tmp_path / "run"
    res = cli("compress", teacher, "--arch", "auto", "--width", "0.25", "--data", data, "--target", target,
              "--out", out, *FAST[2:], "--size", "32")
    assert res.exit_code == 0, (res.stdout, res.stderr, res.exception)
    report = _report(out)
    assert (report["data"]["in_channels"], report["data"]["out_channels"]) == (4, 3)
    assert "adversarial" in report["losses_active"]  # D trained on the 3-channel real images
    assert Image.open(out / "samples.png").size == (3 * 32, 32 + HEAD)
    assert load_student(out / "student.safetensors")(torch.zeros(1, 4, 32, 32)).shape == (1, 3, 32, 32)


# ---------------------------------------------------------------- data: LR/HR crops stay aligned


def test_lr_and_hr_crops_stay_aligned_under_augmentation(tmp_path):
    from ganzip.data import open_pairs

    rng = np.random.default_rng(7)
    lr, hr = tmp_path / "lr", tmp_path / "hr"
    lr.mkdir()
    hr.mkdir()
    for i in range(4):
        small = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
        Image.fromarray(small).save(lr / f"{i}.png")
        Image.fromarray(small).resize((96, 96), Image.NEAREST).save(hr / f"{i}.jpg".replace(".jpg", ".png"))
    ds = open_pairs(lr, hr, size=16, scale=4, augment=True, seed=3, preprocess="crop")
    seen_offsets = set()
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            a, b = item["A"], item["B"]
            assert b.shape == (3, 64, 64)
            # B is A enlarged 4x by repetition, pixel for pixel: the crops cover the same content
            assert torch.equal(b, a.repeat_interleave(4, 1).repeat_interleave(4, 2))
            full = torch.from_numpy(np.array(Image.open(lr / f"{i}.png"))).permute(2, 0, 1).float() / 127.5 - 1
            for y in range(9):
                for x in range(9):
                    if torch.equal(a, full[:, y:y + 16, x:x + 16]) or torch.equal(a, full[:, y:y + 16, x:x + 16].flip(2)):
                        seen_offsets.add((y, x))
    assert len(seen_offsets) > 3  # the crops did move


def test_pairs_are_matched_by_file_name_and_unmatched_targets_are_unpaired(tmp_path):
    from ganzip.data import open_pairs

    lr, hr = _lr_hr(tmp_path, 2)
    assert len(open_pairs(lr, hr, size=LR, scale=2)) == N
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(other / "unrelated.png")
    assert open_pairs(lr, other, size=LR, scale=2) is None


# ---------------------------------------------------------------- the CRD patch size scales with the output


def test_crd_patch_size_is_the_papers_grid_at_any_output_side():
    from ganzip import engine, recipes

    cfg = recipes.resolve_recipe("crd")
    assert [engine.crd_patch_size(cfg, s) for s in (256, 128, 64, 512)] == [32, 16, 8, 64]
    assert engine.crd_patch_size(recipes.resolve_recipe("crd", ["crd.patch_size=16"]), 128) == 16  # pixels, as given
    engine.check_size(recipes.resolve_recipe("crd", ["train.size=24"]), out_side=96)  # 12-px patches of a x4 output
    with pytest.raises(Exception, match="output side 100"):
        engine.check_size(recipes.resolve_recipe("crd", ["train.size=25"]), out_side=100)


# ---------------------------------------------------------------- sample grids


def test_sample_grid_shows_inputs_resized_to_the_output_size():
    from ganzip.engine import sample_grid

    smooth = torch.nn.functional.interpolate(torch.rand(2, 4, 8, 8) * 2 - 1, size=(32, 32), mode="bilinear")
    x = smooth  # image + mask
    y = torch.rand(2, 3, 128, 128) * 2 - 1
    png = Image.open(io.BytesIO(sample_grid(x, y, y)))
    assert png.size == (3 * 128, 2 * 128 + HEAD)
    arr = np.asarray(png).astype(np.int16)[HEAD:]  # below the caption and the column labels
    assert np.array_equal(arr[:, 128:256], arr[:, 256:])  # teacher and student columns as given
    # the input column is the input (its RGB part) enlarged: 4x4 means of it give the input back, roughly
    shown = torch.from_numpy(arr[:128, :128]).permute(2, 0, 1)[None].float() / 127.5 - 1
    back = torch.nn.functional.avg_pool2d(shown, 4)[0]
    assert (back - x[0, :3]).abs().mean() < 0.03


# ---------------------------------------------------------------- --arch auto refusals


def test_arch_auto_on_a_state_dict_spandrel_does_not_know_is_one_line(cli, tmp_path):
    from ganzip import models

    path = tmp_path / "cyclegan.pth"
    torch.save(models.create("resnet_6blocks", ngf=4).state_dict(), path)
    line = cli("profile", path, "--arch", "auto", "--size", "32", "--no-latency").assert_user_error(
        "spandrel", "does not recognise", "--arch")
    assert "cyclegan.pth" in line


def test_arch_auto_without_spandrel_names_the_extra(cli, sr, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "spandrel", None)  # as if not installed: import raises ImportError
    cli("profile", sr["rrdb"], "--arch", "auto", "--size", "16", "--no-latency").assert_user_error(
        "pip install 'ganzip[spandrel]'")


def test_a_real_esrgan_release_layout_loads_with_arch_auto(tmp_path):
    from ganzip.loading import load_generator

    torch.manual_seed(3)
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=2, scale=4).eval()
    new = {}
    for key, value in net.state_dict().items():  # model.1.sub.<i>.RDB<j>.conv<k>.0.<w|b> -> body.<i>.rdb<j>.conv<k>.<w|b>
        p = key.split(".")
        if key.startswith("model.1.sub.") and p[4].startswith("RDB"):
            new[f"body.{p[3]}.rdb{p[4][3:]}.{p[5]}.{p[-1]}"] = value
        elif key.startswith("model.1.sub.2."):
            new[f"conv_body.{p[-1]}"] = value
        else:
            new[f"{ {'0': 'conv_first', '3': 'conv_up1', '6': 'conv_up2', '8': 'conv_hr', '10': 'conv_last'}[p[1]]}.{p[-1]}"] = value
    assert len(new) == len(net.state_dict())
    path = tmp_path / "RealESRGAN_x4plus_like.pth"
    torch.save({"params_ema": new, "params": {k: torch.zeros_like(v) for k, v in new.items()}}, path)

    model = load_generator(path, arch="auto")
    assert model.ganzip_spec["arch"] == "spandrel/ESRGAN"
    x = torch.rand(1, 3, 8, 8) * 2 - 1
    with torch.no_grad():  # spandrel's network works on [0, 1]; ganzip's wrapper on [-1, 1]
        assert torch.allclose(model(x), net((x + 1) / 2) * 2 - 1, atol=1e-6)


def test_a_bare_state_dict_without_arch_is_recognised_too(sr):
    from ganzip.loading import load_generator

    model = load_generator(sr["compact"])
    assert model.ganzip_spec["arch"] == "spandrel/Compact"
    assert model(torch.zeros(1, 3, 8, 8)).shape == (1, 3, 32, 32)


def test_arch_auto_on_a_ganzip_generator_file_uses_the_recorded_architecture(tmp_path):
    from ganzip import models
    from ganzip.loading import load_generator
    from ganzip.teacher import save_generator

    torch.manual_seed(0)
    net = models.create("resnet_6blocks", ngf=4).eval()
    path = save_generator(net, tmp_path / "g.safetensors")
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(load_generator(path, arch="auto")(x), net(x))

"""Perceptual (spec §4), GAN (spec §3) and pixel losses, and the loss registry."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from ganzip import assets
from ganzip.errors import AssetMissingError, GanzipError
from ganzip.losses import GANLoss, PerceptualLoss, PixelLoss, build_loss, frozen, list_losses

# ----------------------------------------------------------------------------- perceptual
# No pretrained VGG-16 exists here: the tests save a random-weight stand-in with
# torchvision's VGG-16 layout and check ganzip against torchvision's own VGG-16
# `features` module loaded with the same weights.


@pytest.fixture(scope="module")
def vgg_standin():
    """torchvision's VGG-16 `features` with random weights scaled so activations stay O(1)."""
    torch.manual_seed(0)
    features = make_layers(cfgs["D"], batch_norm=False)
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.normal_(m.bias, std=0.01)
    return features.eval()


@pytest.fixture(scope="module")
def vgg_pth(vgg_standin, tmp_path_factory):
    """The stand-in saved as torchvision's file format (keys features.N.*, plus a classifier)."""
    sd = {f"features.{k}": v for k, v in vgg_standin.state_dict().items()}
    sd["classifier.6.weight"] = torch.zeros(10, 4)  # a classifier must be ignored
    path = tmp_path_factory.mktemp("vgg") / "vgg16-standin.pth"
    torch.save(sd, path)
    return path


def load_quietly(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", assets.UnverifiedAssetWarning)  # a stand-in is not the published file
        return PerceptualLoss(weights_path=path, offline=True, **kwargs)


def reference_perceptual(features, s, t, style_weight=1e4, feature_weight=10.0):
    """Spec §4 written directly on torchvision's module."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def taps(x):
        x = ((x + 1) / 2 - mean) / std
        out = []
        for i, layer in enumerate(features[:23]):
            x = layer(x)
            if i in (3, 8, 15, 22):  # relu1_2, relu2_2, relu3_3, relu4_3
                out.append(x)
        return out

    def gram(f):
        b, c, h, w = f.shape
        f = f.reshape(b, c, h * w)
        return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)

    fs, ft = taps(s), taps(t)
    style = sum((gram(a) - gram(b)).abs().mean() for a, b in zip(fs, ft))
    return style_weight * style + feature_weight * (fs[1] - ft[1]).abs().mean()


def two_images(seed=0, shape=(2, 3, 32, 32)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * 2 - 1, torch.rand(shape, generator=g) * 2 - 1


def test_perceptual_matches_torchvision_vgg16_on_same_weights(vgg_standin, vgg_pth):
    s, t = two_images()
    ours = load_quietly(vgg_pth)(s, t)
    ref = reference_perceptual(vgg_standin, s, t)
    assert torch.allclose(ours, ref, rtol=1e-4, atol=0)


def test_perceptual_term_weights_are_applied(vgg_standin, vgg_pth):
    s, t = two_images(1)
    style_only = load_quietly(vgg_pth, style_weight=2.0, feature_weight=0.0)(s, t)
    feature_only = load_quietly(vgg_pth, style_weight=0.0, feature_weight=3.0)(s, t)
    assert torch.allclose(style_only, reference_perceptual(vgg_standin, s, t, 2.0, 0.0), rtol=1e-4)
    assert torch.allclose(feature_only, reference_perceptual(vgg_standin, s, t, 0.0, 3.0), rtol=1e-4)


def test_perceptual_accepts_timm_safetensors(vgg_standin, vgg_pth, tmp_path):
    sd = {f"features.{k}": v.contiguous() for k, v in vgg_standin.state_dict().items()}
    sd["pre_logits.fc1.weight"] = torch.zeros(4, 4)  # timm's extra heads must be ignored
    sd["head.fc.weight"] = torch.zeros(10, 4)
    path = tmp_path / "model.safetensors"
    save_file(sd, str(path))
    s, t = two_images(2)
    assert torch.allclose(load_quietly(path)(s, t), load_quietly(vgg_pth)(s, t), rtol=1e-6)


def test_perceptual_warns_that_an_explicit_file_is_unverified(vgg_pth):
    with pytest.warns(assets.UnverifiedAssetWarning):
        PerceptualLoss(weights_path=vgg_pth, offline=True)


def test_perceptual_gradient_reaches_student_only(vgg_pth):
    loss_fn = load_quietly(vgg_pth)
    s, t = two_images(3)
    s.requires_grad_(True)
    t.requires_grad_(True)
    loss_fn(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None
    assert all(p.grad is None and not p.requires_grad for p in loss_fn.parameters())


def test_perceptual_missing_weights_name_file_places_and_off_switch(tmp_path, monkeypatch):
    for var in ("GANZIP_HOME", "TORCH_HOME", "HF_HUB_CACHE"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    with pytest.raises(AssetMissingError) as info:
        PerceptualLoss(offline=True)
    msg = str(info.value)
    assert "vgg16-397923af.pth" in msg
    assert str(tmp_path / "ganzip_home") in msg
    assert "overrides=['perceptual.weight=0']" in msg  # the library names the keyword; the CLI says --set


def test_perceptual_missing_explicit_file_is_asset_error(tmp_path):
    with pytest.raises(AssetMissingError, match="perceptual.weight=0"):
        PerceptualLoss(weights_path=tmp_path / "nope.pth", offline=True)


def test_perceptual_rejects_a_file_without_vgg_keys(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(GanzipError, match="features.0.weight"):
        load_quietly(path)


# ----------------------------------------------------------------------------- GAN losses

PRED = torch.tensor([[-1.5, -0.2], [0.3, 2.0]])


@pytest.mark.parametrize("real,expected", [(True, ((PRED - 1) ** 2).mean()), (False, (PRED ** 2).mean())])
def test_lsgan_is_mse_to_one_or_zero(real, expected):
    assert torch.allclose(GANLoss("lsgan")(PRED, real), expected)


@pytest.mark.parametrize("real,expected", [(True, F.softplus(-PRED).mean()), (False, F.softplus(PRED).mean())])
def test_vanilla_is_bce_with_logits(real, expected):
    assert torch.allclose(GANLoss("vanilla")(PRED, real), expected)


@pytest.mark.parametrize("real,expected", [(True, F.relu(1 - PRED).mean()), (False, F.relu(1 + PRED).mean())])
def test_hinge_discriminator_terms(real, expected):
    assert torch.allclose(GANLoss("hinge")(PRED, real, for_discriminator=True), expected)


def test_hinge_generator_term_is_negative_mean():
    assert torch.allclose(GANLoss("hinge")(PRED, True, for_discriminator=False), -PRED.mean())
    with pytest.raises(GanzipError, match="target_is_real=True"):
        GANLoss("hinge")(PRED, False, for_discriminator=False)


def test_gan_loss_averages_a_list_of_outputs():
    preds = [PRED, PRED[:1] * 3]
    gan = GANLoss("lsgan")
    assert torch.allclose(gan(preds, True), (gan(preds[0], True) + gan(preds[1], True)) / 2)


def test_unknown_gan_mode_is_an_error():
    with pytest.raises(GanzipError, match="lsgan"):
        GANLoss("wgan")


def small_nets():
    torch.manual_seed(0)
    student = nn.Conv2d(3, 3, 3, padding=1)
    disc = nn.Sequential(nn.Conv2d(3, 4, 4, stride=2), nn.LeakyReLU(0.2), nn.Conv2d(4, 1, 3))
    return student, disc


def test_frozen_discriminator_gets_no_gradient_but_passes_it_to_the_student():
    student, disc = small_nets()
    x = torch.randn(2, 3, 16, 16)
    with frozen(disc):
        loss = GANLoss("lsgan")(disc(student(x)), True, for_discriminator=False)
    loss.backward()
    assert all(p.grad is None for p in disc.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


def test_frozen_restores_requires_grad_flags_even_after_an_error():
    _, disc = small_nets()
    first = next(disc.parameters())
    first.requires_grad_(False)  # a flag that was already off stays off
    with pytest.raises(RuntimeError):
        with frozen(disc):
            assert not any(p.requires_grad for p in disc.parameters())
            raise RuntimeError("boom")
    assert not first.requires_grad
    assert all(p.requires_grad for p in list(disc.parameters())[1:])


# ----------------------------------------------------------------------------- pixel, registry


def test_pixel_losses():
    a, b = torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.5)
    assert float(PixelLoss("l1")(a, b)) == pytest.approx(0.5)
    assert float(PixelLoss("l2")(a, b)) == pytest.approx(0.25)
    with pytest.raises(GanzipError, match="l1 or l2"):
        PixelLoss("l3")
    with pytest.raises(GanzipError, match="same shape"):
        PixelLoss()(a, b[..., :1])


def test_registry_names_and_builds_losses():
    assert {"crd", "rkd_instance", "perceptual", "pixel", "gan"} <= set(list_losses())
    assert isinstance(build_loss("pixel", kind="l2"), PixelLoss)
    assert build_loss("gan", mode="hinge").mode == "hinge"
    with pytest.raises(GanzipError, match="registered losses"):
        build_loss("nope")

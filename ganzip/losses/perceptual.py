"""OMGD's perceptual loss on ImageNet VGG-16 features, kept by CRD (spec §4)."""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import assets
from ..errors import AssetMissingError, GanzipError

# torchvision's VGG-16 `features` up to relu4_3 (timm's vgg16.tv_in1k uses the same
# `features.N` indices): numbers are conv widths, "M" a 2x2 max-pool.
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512)
# indices in `features` of relu1_2, relu2_2, relu3_3, relu4_3
VGG16_LAYERS = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

OFF_SWITCH = ("--recipe crd-novgg (an L1 anchor to the teacher replaces the perceptual term; in another recipe: "
              "--set perceptual.weight=0 --set kd_pixel.weight=25)")


def vgg16_features_to_relu4_3() -> nn.Sequential:
    """Untrained VGG-16 ``features[:23]`` with torchvision's layer indices."""
    layers: list[nn.Module] = []
    in_ch = 3
    for v in _VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_ch, v, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            in_ch = v
    return nn.Sequential(*layers)


def load_vgg16_features(weights_path: str | os.PathLike | None = None, offline: bool | None = None,
                        trust_pickle: bool = False) -> tuple[nn.Sequential, Path]:
    """VGG-16 ``features[:23]`` with ImageNet weights from a local file.

    The file is found by :func:`ganzip.assets.resolve` (``weights_path`` first, then
    ganzip's asset folder and the torch hub / timm caches). Accepted: torchvision's
    ``vgg16-397923af.pth`` state dict and timm's ``vgg16.tv_in1k`` safetensors; only the
    ``features.N.*`` tensors are used, anything else (classifier, ``pre_logits``,
    ``head``) is ignored. Raises :class:`AssetMissingError` when no file is found.
    """
    try:
        path = assets.resolve("vgg16", path=weights_path, offline=offline)
    except AssetMissingError as exc:
        raise AssetMissingError(f"{exc}; or turn the perceptual term off with {OFF_SWITCH}") from None
    state = assets.load_state_dict("vgg16", path, trust_pickle=trust_pickle)
    net = vgg16_features_to_relu4_3()
    wanted = {f"features.{k}" for k in net.state_dict()}
    found = {k[len("features."):]: v for k, v in state.items() if k in wanted}
    missing = sorted(wanted - {f"features.{k}" for k in found})
    if missing:
        raise GanzipError(
            f"{path} is not a VGG-16 state dict: it lacks {', '.join(missing[:3])}"
            f"{' ...' if len(missing) > 3 else ''} (expected torchvision's features.N.weight/bias keys); "
            f"pass the right file, or turn the perceptual term off with {OFF_SWITCH}"
        )
    try:
        net.load_state_dict({k: v.float() for k, v in found.items()})
    except RuntimeError as exc:  # shape mismatch
        raise GanzipError(f"{path} does not hold VGG-16 weights of the expected shapes: {exc}") from None
    return net, Path(path)


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """B x C x C Gram matrix of B x C x H x W features, normalised by C*H*W (spec §4)."""
    b, c, h, w = features.shape
    f = features.reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


class PerceptualLoss(nn.Module):
    """Perceptual loss L_per of OMGD/CRD (spec §4, weight lambda_per in §5).

    Both images ([-1, 1], N x 3 x H x W) are mapped to [0, 1], ImageNet-normalised and
    passed through VGG-16 up to relu4_3. Then

        L_per = style_weight * sum_l L1(Gram(S_l), Gram(T_l))   l in relu1_2 .. relu4_3
              + feature_weight * L1(S_relu2_2, T_relu2_2)

    with Gram matrices normalised by C*H*W and L1 the mean absolute difference. The
    teacher side carries no gradient; VGG's weights are frozen.

    Args:
        weights_path: a local VGG-16 weights file; ``None`` looks it up with
            :func:`ganzip.assets.resolve` (never downloads when ``offline``).
        offline: forbid any download attempt.
        style_weight, feature_weight: 1e4 and 10 in the spec.
        trust_pickle: allow a pickled ``.pth`` that is not a plain state dict.
    """

    def __init__(self, weights_path: str | os.PathLike | None = None, offline: bool | None = False,
                 style_weight: float = 1e4, feature_weight: float = 10.0, trust_pickle: bool = False):
        super().__init__()
        self.features, self.weights_file = load_vgg16_features(weights_path, offline, trust_pickle)
        self.features.eval()
        self.features.requires_grad_(False)
        self.style_weight = float(style_weight)
        self.feature_weight = float(feature_weight)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):  # VGG stays in eval mode
        super().train(mode)
        self.features.eval()
        return self

    def extract(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Features at relu1_2, relu2_2, relu3_3, relu4_3 of images in [-1, 1]."""
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise GanzipError(f"the perceptual loss needs N x 3 x H x W images (or 1 channel), got "
                              f"{tuple(images.shape)}")
        x = images.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = ((x + 1) / 2 - self.mean) / self.std
        taps = set(VGG16_LAYERS.values())
        out = []
        for idx, layer in enumerate(self.features):
            x = layer(x)
            if idx in taps:
                out.append(x)
        return out

    def forward(self, student_images: torch.Tensor, teacher_images: torch.Tensor) -> torch.Tensor:
        if student_images.shape != teacher_images.shape:
            raise GanzipError(f"student and teacher images differ in shape: {tuple(student_images.shape)} vs "
                              f"{tuple(teacher_images.shape)}")
        s_feats = self.extract(student_images)
        with torch.no_grad():
            t_feats = self.extract(teacher_images.detach())
        loss = student_images.new_zeros((), dtype=torch.float32)
        if self.style_weight:
            style = sum(F.l1_loss(gram_matrix(s), gram_matrix(t)) for s, t in zip(s_feats, t_feats))
            loss = loss + self.style_weight * style
        if self.feature_weight:
            loss = loss + self.feature_weight * F.l1_loss(s_feats[1], t_feats[1])
        return loss

    def extra_repr(self) -> str:
        return f"style_weight={self.style_weight}, feature_weight={self.feature_weight}, weights={self.weights_file}"


__all__ = ["PerceptualLoss", "load_vgg16_features", "gram_matrix", "vgg16_features_to_relu4_3", "VGG16_LAYERS"]

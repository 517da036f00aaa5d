"""Feature-level distillation: losses between tapped teacher and student feature maps.

Both take ``features``, a mapping ``layer -> (student_map, teacher_map)`` of
4-D tensors (``ganzip.features.FeatureTaps.pairs``); the maps are cast to
float32 here, so AMP and ``channels_last`` inputs are fine.

* :class:`GCFeatureLoss`: GAN Compression (Li et al., CVPR 2020),
  ``sum_t mean((f_t(S_t) - T_t)^2)`` with a learned 1x1 convolution ``f_t``
  per layer from the student's channels to the teacher's. The paper writes a
  plain L2 norm; its released code takes the mean squared error per layer
  (``F.mse_loss``) and sums over layers, which is what we do.
* :class:`KernelAlignmentLoss`: CAT (Jin et al., "Teachers Do More Than
  Teach", CVPR 2021), ``sum_t (1 - KA(S_t, T_t))`` with
  ``KA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)``; no learned map,
  so the widths may differ. CAT minimises ``-KA``; ``1 - KA`` has the same
  gradient and stays in [0, 1]. The paper calls the rows of X "samples"; its
  code flattens each image and relates the images of a batch, which is the
  constant 1 (no gradient) at batch size 1, CycleGAN's and ganzip's default.
  ``over="positions"`` (our default) takes the spatial positions of one image
  as the samples (X is HW x C) and averages over the batch;
  ``over="batch"`` is the released code's reading and needs 2+ images.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import GanzipError

Features = Mapping[str, tuple[torch.Tensor, torch.Tensor]]
KA_OVER = ("positions", "batch")
MAP_INIT_STD = 0.02  # GAN Compression initialises its maps like the generators: N(0, 0.02), zero bias
_EPS = 1e-12


def _check_layers(features: Features, layers: Sequence[str], what: str) -> None:
    missing = [n for n in layers if n not in features]
    if missing:
        raise GanzipError(f"{what}: no tapped features for layer {missing[0]!r} (taps: {', '.join(features) or 'none'})")


class GCFeatureLoss(nn.Module):
    """``sum_t mean((f_t(S_t) - T_t)^2)`` with learned 1x1 maps ``f_t`` (GAN Compression's distillation).

    Args:
        layers: the tapped layer names, in order.
        channels: (student channels, teacher channels) per layer.
        seed: seeds the maps' N(0, 0.02) initialisation through a private
            generator, so building the loss draws nothing from the global RNG.

    The maps are the only parameters (``maps.<i>.weight`` / ``.bias``, ``i``
    the layer's position); they train with the student and belong in the
    checkpoint, never in the student's weights.
    """

    def __init__(self, layers: Sequence[str], channels: Sequence[tuple[int, int]], seed: int = 0):
        super().__init__()
        if len(layers) != len(channels) or not layers:
            raise GanzipError("gc_feature needs one (student, teacher) channel pair per tapped layer")
        self.layers = list(layers)
        g = torch.Generator().manual_seed(int(seed))
        maps = []
        for c_s, c_t in channels:
            conv = nn.utils.skip_init(nn.Conv2d, int(c_s), int(c_t), 1)  # no draw from the global RNG
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * MAP_INIT_STD)
                conv.bias.zero_()
            maps.append(conv)
        self.maps = nn.ModuleList(maps)

    def per_layer(self, features: Features) -> dict[str, torch.Tensor]:
        """The mean squared error of each layer (unweighted)."""
        _check_layers(features, self.layers, "gc_feature")
        out = {}
        for name, f in zip(self.layers, self.maps):
            s, t = features[name]
            out[name] = F.mse_loss(f(s.float()), t.float().detach())
        return out

    def forward(self, features: Features) -> torch.Tensor:
        return torch.stack(list(self.per_layer(features).values())).sum()


def kernel_alignment(x: torch.Tensor, y: torch.Tensor, over: str = "positions") -> torch.Tensor:
    """Kernel alignment of two feature maps (N, C1, H, W) and (N, C2, H, W), in [0, 1].

    ``over="positions"``: per image, X (HW x C1) and Y (HW x C2) relate the
    positions; ``KA = ||Y^T X||^2 / (||X^T X|| ||Y^T Y||)`` (Frobenius norms,
    computed on the C x C products, never the HW x HW kernels), averaged over
    the batch. ``over="batch"``: X (N x C1HW) and Y (N x C2HW) relate the images.
    """
    x, y = x.float(), y.float()
    if over == "positions":
        if x.shape[-2:] != y.shape[-2:] or x.shape[0] != y.shape[0]:
            raise GanzipError(f"kernel alignment over positions needs equal N, H, W, got {tuple(x.shape)} and {tuple(y.shape)}")
        a, b = x.flatten(2), y.flatten(2)  # N x C x HW: the rows of X^T
        cross = (b @ a.transpose(1, 2)).square().sum((1, 2))
        xx = (a @ a.transpose(1, 2)).square().sum((1, 2)).sqrt()
        yy = (b @ b.transpose(1, 2)).square().sum((1, 2)).sqrt()
        return (cross / (xx * yy).clamp_min(_EPS)).mean()
    if over == "batch":
        if x.shape[0] != y.shape[0]:
            raise GanzipError(f"kernel alignment over the batch needs equal N, got {x.shape[0]} and {y.shape[0]}")
        a, b = x.flatten(1), y.flatten(1)
        ka, kb = a @ a.T, b @ b.T
        return (ka * kb).sum() / (ka.square().sum() * kb.square().sum()).sqrt().clamp_min(_EPS)
    raise GanzipError(f"kernel_alignment.over = {over!r} is not one of: {', '.join(KA_OVER)}")


class KernelAlignmentLoss(nn.Module):
    """``sum_t (1 - KA(S_t, T_t))`` over the tapped layers (CAT's similarity loss); no parameters."""

    def __init__(self, layers: Sequence[str], over: str = "positions"):
        super().__init__()
        if over not in KA_OVER:
            raise GanzipError(f"kernel_alignment.over = {over!r} is not one of: {', '.join(KA_OVER)}")
        if not layers:
            raise GanzipError("kernel_alignment needs at least one tapped layer")
        self.layers = list(layers)
        self.over = over

    def per_layer(self, features: Features) -> dict[str, torch.Tensor]:
        """``1 - KA`` of each layer (unweighted)."""
        _check_layers(features, self.layers, "kernel_alignment")
        return {n: 1.0 - kernel_alignment(features[n][0], features[n][1].detach(), self.over) for n in self.layers}

    def forward(self, features: Features) -> torch.Tensor:
        return torch.stack(list(self.per_layer(features).values())).sum()

"""LPIPS (Zhang et al. 2018) with its ImageNet backbone read from a local file.

The ``lpips`` package ships its calibrated linear layers (``weights/v0.1/alex.pth``)
but fetches the backbone (torchvision's AlexNet or VGG-16 ImageNet weights)
from the internet when it builds the network. ganzip builds
``lpips.LPIPS(net=..., pnet_rand=True)`` (random backbone, nothing fetched),
loads the package's linear layers itself with ``weights_only=True``, and
copies the backbone's convolutions from the asset file that
:func:`ganzip.assets.resolve` finds (``alexnet`` or ``vgg16``).
"""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import assets
from ..devices import resolve_device
from ..errors import GanzipError

_BACKBONE_ASSET = {"alex": "alexnet", "vgg": "vgg16"}


def _lin_weights_path(net: str, version: str = "0.1") -> Path:
    import lpips as _lpips

    return Path(_lpips.__file__).parent / "weights" / f"v{version}" / f"{net}.pth"


def _copy_backbone(lp: torch.nn.Module, backbone_sd: dict, source: str) -> None:
    """Copy torchvision `features.<i>.*` tensors into lpips' slices, which hold `features[i]` modules."""
    loaded = 0
    for slice_name, slice_mod in lp.net.named_children():
        for idx, layer in slice_mod.named_children():
            own = layer.state_dict()
            if not own:
                continue
            part = {k: backbone_sd.get(f"features.{idx}.{k}") for k in own}
            missing = [k for k, v in part.items() if v is None]
            if missing:
                raise GanzipError(f"{source} lacks features.{idx}.{missing[0]}: not a torchvision "
                                  f"ImageNet backbone state dict")
            try:
                layer.load_state_dict(part)
            except RuntimeError as exc:
                detail = " ".join(str(exc).split())[:200]
                raise GanzipError(f"{source}: features.{idx} does not fit the LPIPS backbone ({detail})") from exc
            loaded += 1
    if loaded == 0:
        raise GanzipError(f"{source}: no backbone layers were loaded")


@dataclass
class LPIPSMetric:
    """A ready LPIPS network and the record of the backbone file it uses."""

    model: torch.nn.Module
    net: str
    device: torch.device
    backbone: dict  # asset record

    @torch.no_grad()
    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS distance (shape N) between two batches in [-1, 1]."""
        if a.shape != b.shape:
            raise GanzipError(f"LPIPS of images with different shapes {tuple(a.shape)} and {tuple(b.shape)}")
        d = self.model(a.to(self.device).float(), b.to(self.device).float(), normalize=False)
        return d.reshape(d.shape[0]).cpu()


def load_lpips(net: str = "alex", weights: str | os.PathLike | None = None, device: str | torch.device = "cpu",
               offline: bool | None = None) -> LPIPSMetric:
    """Build LPIPS v0.1 with backbone `net` ('alex' or 'vgg') from a local backbone file.

    `weights` is an explicit backbone file (``--lpips-weights``); otherwise the
    asset (``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth``) is looked up.
    """
    import lpips as _lpips

    if net not in _BACKBONE_ASSET:
        raise GanzipError(f"LPIPS backbone must be one of {sorted(_BACKBONE_ASSET)}, not {net!r}")
    name = _BACKBONE_ASSET[net]
    path = assets.resolve(name, weights, offline)
    record = assets.asset_record(name, path)
    backbone_sd = assets.load_state_dict(name, path)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        # lpips prints set-up chatter and calls torchvision with the deprecated `pretrained=False`
        warnings.simplefilter("ignore", UserWarning)
        model = _lpips.LPIPS(pretrained=False, net=net, version="0.1", pnet_rand=True, verbose=False)
    lin_sd = torch.load(_lin_weights_path(net), map_location="cpu", weights_only=True)
    own = model.state_dict()
    bad = [k for k in lin_sd if k not in own]
    if bad:
        raise GanzipError(f"the lpips package's linear weights do not fit its network ({bad[0]})")
    model.load_state_dict(lin_sd, strict=False)
    _copy_backbone(model, backbone_sd, str(path))
    dev = resolve_device(device)
    model = model.to(dev).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return LPIPSMetric(model=model, net=net, device=dev, backbone=record)


__all__ = ["LPIPSMetric", "load_lpips"]

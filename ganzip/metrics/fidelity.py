"""PSNR, SSIM and sharpness between two image batches (student against teacher, or against ground truth).

Both take N x C x H x W float images in [0, 1] (use :func:`from_generator`
on generator outputs in [-1, 1]) and return one value per image.

SSIM follows Wang et al. (2004): an 11x11 Gaussian window with sigma 1.5,
K1 = 0.01, K2 = 0.03, data range 1, local statistics with the population
(biased) variance, averaged over the positions where the window fits
entirely inside the image ("valid"), then over channels. This equals
scikit-image's ``structural_similarity(..., gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=...)``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import GanzipError

PSNR_MAX_DB = 100.0  # the value reported for identical images (mse 0)


def from_generator(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] generator images to [0, 1]."""
    return ((images.float() + 1) / 2).clamp(0, 1)


def _check_pair(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise GanzipError(f"{what} of images with different shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if a.ndim != 4:
        raise GanzipError(f"{what} expects N x C x H x W batches, got shape {tuple(a.shape)}")


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB: ``10 log10(range^2 / mse)``, capped at 100 dB for identical images."""
    _check_pair(a, b, "PSNR")
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
    floor = data_range ** 2 * 10 ** (-PSNR_MAX_DB / 10)
    return (10 * torch.log10(data_range ** 2 / mse.clamp_min(floor))).float()


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float64) -> torch.Tensor:
    """Normalised 2-D Gaussian window (size x size)."""
    coords = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Per-image SSIM (mean over valid window positions and channels), computed in float64."""
    _check_pair(a, b, "SSIM")
    n, c, h, w = a.shape
    if h < window or w < window:
        raise GanzipError(f"SSIM needs images of at least {window}x{window} pixels, got {h}x{w}")
    x, y = a.double(), b.double()
    kernel = gaussian_window(window, sigma).to(x.device).expand(c, 1, window, window)

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=c)

    mu_x, mu_y = filt(x), filt(y)
    var_x = filt(x * x) - mu_x ** 2
    var_y = filt(y * y) - mu_y ** 2
    cov = filt(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return s.mean(dim=(1, 2, 3)).float()


_SOBEL = ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0))
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601


def gradient_energy(images: torch.Tensor) -> torch.Tensor:
    """Per-image mean Sobel gradient magnitude of the luma (edges replicated), images in [0, 1]: [N], float64.

    Grey (1-channel) images are their own luma; channels past the third are ignored.
    """
    if images.ndim != 4:
        raise GanzipError(f"gradient energy expects N x C x H x W batches, got shape {tuple(images.shape)}")
    x = images.double()
    luma = x[:, :1] if x.shape[1] < 3 else sum(w * x[:, i:i + 1] for i, w in enumerate(_LUMA))
    k = torch.tensor(_SOBEL, dtype=torch.float64, device=x.device)
    g = F.conv2d(F.pad(luma, (1, 1, 1, 1), mode="replicate"), torch.stack([k, k.t()])[:, None])
    return g.pow(2).sum(1).sqrt().flatten(1).mean(1)


def sharpness(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image sharpness of ``a`` relative to ``b``: gradient energy of a over that of b (1 = as much edge energy).

    Outputs trained with only a per-pixel loss on unpredictable textures sit well
    below 1 (blurred); GAN textures near or above 1. It says nothing of
    whether the edges are in the right place: read it beside PSNR.
    """
    _check_pair(a, b, "sharpness")
    return (gradient_energy(a) / gradient_energy(b).clamp_min(1e-12)).float()


def summarize(values: list[float] | torch.Tensor) -> dict:
    """Mean and standard deviation (population) of per-image values, as plain floats."""
    t = torch.as_tensor(values, dtype=torch.float64).flatten()
    if t.numel() == 0:
        return {"mean": None, "std": None, "count": 0}
    mean = float(t.mean())
    std = float(t.std(unbiased=False)) if t.numel() > 1 else 0.0
    return {"mean": mean if math.isfinite(mean) else None, "std": std, "count": int(t.numel())}


__all__ = ["from_generator", "psnr", "ssim", "gradient_energy", "sharpness", "gaussian_window", "summarize", "PSNR_MAX_DB"]

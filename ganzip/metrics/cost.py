"""Cost of a generator: MACs, parameters and measured latency.

MACs follow the convention of the paper's tables (spec §6), i.e. torchprofile's:
a transposed convolution counts output elements × C_in × k², affine
normalisation layers count their output elements, padding and activations
count nothing. One 1×C×S×S input, eval mode.
"""
from __future__ import annotations

import statistics
import time
import warnings

import torch
import torch.nn as nn

from ..devices import resolve_device
from ..errors import GanzipError


def infer_in_channels(model: nn.Module, default: int = 3) -> int:
    """The image channels a generator expects: the in_channels of its first convolution."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            return m.in_channels
    return default


def _example(model: nn.Module, size: int, in_channels: int | None, device) -> torch.Tensor:
    c = in_channels or infer_in_channels(model)
    return torch.randn(1, c, size, size, device=device)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, size: int = 256, in_channels: int | None = None) -> int:
    """Multiply-accumulates of one forward pass on a 1×C×size×size input (torchprofile)."""
    from torchprofile import profile_macs

    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "No handlers found: aten::pad": padding counts nothing by convention
            return int(profile_macs(model, _example(model, size, in_channels, device)))
    except Exception as exc:  # tracing failures come in many types
        raise GanzipError(f"could not count MACs of this model at {size}x{size}: {exc}") from exc
    finally:
        model.train(was_training)


@torch.inference_mode()
def measure_latency(model: nn.Module, size: int = 256, device="cpu", warmup: int = 3, repeats: int = 10,
                    in_channels: int | None = None, batch_size: int = 1) -> float:
    """Median wall time of one forward pass in milliseconds, after `warmup` runs."""
    device = resolve_device(device)
    was_training = model.training
    model.eval()
    x = _example(model, size, in_channels, device).expand(batch_size, -1, -1, -1).contiguous()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    try:
        for i in range(warmup + repeats):
            sync()
            t0 = time.perf_counter()
            model(x)
            sync()
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000.0)
    finally:
        model.train(was_training)
    return float(statistics.median(times))


def profile_model(model: nn.Module, size: int = 256, device="cpu", latency: bool = True,
                  warmup: int = 3, repeats: int = 10) -> dict:
    """{"macs": int, "params": int, "latency_ms": float | None} for one model."""
    device = resolve_device(device)
    model = model.to(device)
    out = {"macs": count_macs(model, size), "params": count_params(model), "latency_ms": None}
    if latency:
        out["latency_ms"] = measure_latency(model, size, device, warmup=warmup, repeats=repeats)
    return out


def format_macs(macs: int) -> str:
    return f"{macs / 1e9:.3f}G" if macs >= 1e8 else f"{macs / 1e6:.2f}M"


def format_params(params: int) -> str:
    return f"{params:,}"

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
import weakref

import torch
import torch.nn as nn

from ..devices import resolve_device
from ..errors import GanzipError
from .dispatch_macs import count_macs_by_dispatch, needs_dispatch_count


_GUESSED: "weakref.WeakKeyDictionary[nn.Module, int]" = weakref.WeakKeyDictionary()


def infer_in_channels(model: nn.Module, default: int = 3, size: int | None = None) -> int:
    """The image channels a generator expects.

    A student records them. Otherwise the first convolution's `in_channels` is
    only a candidate: after a pixel-unshuffle (Real-ESRGAN x2: 3 -> 12) or an
    extra input channel (a noise map) it is not the image's. Each candidate
    (that count, its quotients by 4, 9 and 16, one less, then 3, 1, 4) is tried
    with a forward pass on a small input, and the first that runs is the answer
    (remembered per model). When none runs, the first convolution's count is
    returned and the caller's own forward pass reports the failure (pass
    ``in_channels=`` / ``--in-channels`` then).
    """
    info = getattr(model, "ganzip_student", None)
    if isinstance(info, dict) and info.get("in_channels"):
        return int(info["in_channels"])
    try:
        if model in _GUESSED:
            return _GUESSED[model]
    except TypeError:  # not weak-referenceable
        pass
    first = next((m.in_channels for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))), None)
    if first is None:
        return default
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if device.type == "meta":
        return first
    candidates = [first] + [first // f for f in (4, 9, 16) if first % f == 0] + [first - 1, 3, 1, 4]
    guess = first
    was_training = model.training
    model.eval()
    try:
        min_size = getattr(model, "min_size", 0) or 0
        for s in dict.fromkeys((max(min_size, 16), max(min_size, 32), size or 64)):
            found = next((c for c in dict.fromkeys(candidates) if c > 0 and _runs(model, c, s, device)), None)
            if found is not None:
                guess = found
                break
    finally:
        model.train(was_training)
    try:
        _GUESSED[model] = guess
    except TypeError:
        pass
    return guess


def set_in_channels(model: nn.Module, channels: int | None) -> None:
    """Tell ganzip how many image channels `model` takes (``in_channels=`` / ``--in-channels``)."""
    if channels is None:
        return
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise GanzipError(f"--in-channels must be a positive integer, got {channels!r}")
    _GUESSED[model] = channels


def _runs(model: nn.Module, channels: int, size: int, device) -> bool:
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model(torch.zeros(1, channels, size, size, device=device))
        return True
    except Exception:  # a wrong channel count fails in many ways
        return False


def _example(model: nn.Module, size: int, in_channels: int | None, device) -> torch.Tensor:
    c = in_channels or infer_in_channels(model)
    return torch.randn(1, c, size, size, device=device)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, size: int = 256, in_channels: int | None = None) -> int:
    """Multiply-accumulates of one forward pass on a 1×C×size×size input (torchprofile's counting rules).

    torchprofile traces the model; a TorchScript module cannot be traced again,
    so its ops are counted as they run, with torchprofile's handlers
    (``dispatch_macs``).
    """
    from torchprofile import profile_macs

    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "No handlers found: aten::pad": padding counts nothing by convention
            example = _example(model, size, in_channels, device)
            if needs_dispatch_count(model):
                return count_macs_by_dispatch(model, example)
            return int(profile_macs(model, example))
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


def ratio(teacher: float | None, student: float | None) -> float | None:
    """How many times the teacher's cost is the student's (teacher / student); None when either is unknown or 0."""
    if not teacher or not student:
        return None
    return teacher / student


def compare(teacher: dict, student: dict, keys=("macs", "params", "latency_ms")) -> dict[str, float | None]:
    """The teacher/student ratio of each cost in ``keys`` (see :func:`ratio`): the one comparison of two profiles."""
    return {k: ratio(teacher.get(k), student.get(k)) for k in keys}

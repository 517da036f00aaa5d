"""Device selection: `auto` picks CUDA when present, else the CPU. Never hard-coded."""
from __future__ import annotations

import torch

from .errors import GanzipError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise GanzipError(f"--device {name} was asked for but CUDA is not available here: use --device cpu or auto")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise GanzipError(f"unknown device {name!r}: use auto, cpu or cuda[:N]")

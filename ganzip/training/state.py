"""What a checkpoint holds and how it is written: optimizer flattening, RNG capture, schedules.

Checkpoints are safetensors + JSON only (no pickle): model and optimizer
tensors go to ``checkpoint/state-<step>.safetensors``; the step, the
optimizer structure, the learning-rate schedule and every RNG state go to
``checkpoint/state.json``.
"""
from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file

from .. import formats
from .. import io as gio
from ..errors import GanzipError
from .outdir import CHECKPOINT_JSON

CHECKPOINT_FORMAT = 1

def linear_decay(total_steps: int, decay_start: float) -> Callable[[int], float]:
    """CycleGAN's schedule in steps: factor 1 until ``decay_start * total``, then linear to 0 at ``total``."""
    start = int(round(total_steps * decay_start))
    span = max(1, total_steps - start)

    def factor(step: int) -> float:
        if step < start:
            return 1.0
        return max(0.0, (total_steps - step) / span)

    return factor


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng(device: torch.device) -> tuple[dict[str, torch.Tensor], dict]:
    """Every RNG state as uint8 tensors plus JSON-able scalars."""
    np_state = np.random.get_state()
    tensors = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.asarray(np_state[1], dtype="<u4").view(np.uint8).copy()),
    }
    if device.type == "cuda":
        tensors["cuda"] = torch.cuda.get_rng_state(device)
    py = random.getstate()
    meta = {
        "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py[0], list(py[1]), py[2]],
    }
    return tensors, meta


def restore_rng(tensors: Mapping[str, torch.Tensor], meta: Mapping, device: torch.device) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(tensors["torch"].to(torch.uint8).cpu())
    if device.type == "cuda" and "cuda" in tensors:
        torch.cuda.set_rng_state(tensors["cuda"].to(torch.uint8).cpu(), device)
    keys = tensors["numpy"].cpu().numpy().astype(np.uint8).view("<u4").astype(np.uint32)
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, keys, int(pos), int(has_gauss), float(cached)))
    version, state, gauss = meta["python"]
    random.setstate((version, tuple(state), gauss))


def _jsonable(value):
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    raise GanzipError(f"optimizer state holds a {type(value).__name__}, which cannot be checkpointed")


def flatten_optimizer(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state dict as (tensors for safetensors, JSON structure). No pickle."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    state: dict[str, dict] = {}
    for pid, entry in sd["state"].items():
        out = {}
        for key, value in entry.items():
            if torch.is_tensor(value):
                name = f"{prefix}.{pid}.{key}"
                tensors[name] = value
                out[key] = {"__tensor__": name}
            else:
                out[key] = _jsonable(value)
        state[str(pid)] = out
    return tensors, {"state": state, "param_groups": _jsonable(sd["param_groups"])}


def unflatten_optimizer(tensors: Mapping[str, torch.Tensor], structure: Mapping) -> dict:
    """Inverse of :func:`flatten_optimizer`: a state dict for ``optimizer.load_state_dict``."""
    state = {}
    for pid, entry in structure["state"].items():
        state[int(pid)] = {
            k: (tensors[v["__tensor__"]] if isinstance(v, dict) and "__tensor__" in v else v) for k, v in entry.items()
        }
    groups = []
    for g in structure["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def save_checkpoint(ckpt_dir: Path, tensors: Mapping[str, torch.Tensor], state: Mapping) -> Path:
    """Write tensors, then the JSON that points at them; then drop older tensor files.

    A crash at any point leaves a complete earlier checkpoint: the JSON is
    replaced atomically only after its tensor file is on disk.
    """
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    name = f"state-{int(state['step']):09d}.safetensors"
    gio.save_safetensors_atomic(dict(tensors), ckpt_dir / name, metadata={formats.FORMAT_KEY: formats.CHECKPOINT})
    gio.atomic_write_json(ckpt_dir / CHECKPOINT_JSON, {**state, "tensors": name})
    for old in ckpt_dir.glob("state-*.safetensors"):
        if old.name != name:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
    return ckpt_dir / name


def load_checkpoint(ckpt_dir: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read what :func:`save_checkpoint` wrote: (tensors, state)."""
    try:
        state = json.loads((ckpt_dir / CHECKPOINT_JSON).read_text())
        tensors = load_file(str(ckpt_dir / state["tensors"]))
    except (OSError, KeyError, json.JSONDecodeError, Exception) as exc:
        raise GanzipError(
            f"the checkpoint in {ckpt_dir} cannot be read ({exc}): pass --no-resume to start over"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise GanzipError(f"the checkpoint in {ckpt_dir} has an unknown format: pass --no-resume to start over")
    return tensors, state


def sub(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


def prefixed(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach() for k, v in sd.items()}


def clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def sched_state(sched) -> dict:
    sd = sched.state_dict()
    sd["lr_lambdas"] = [None] * len(sd.get("lr_lambdas", []))  # plain functions: rebuilt from the config
    return _jsonable(sd)


def last_checkpoint_step(ckpt_dir: Path) -> int | None:
    try:
        return int(json.loads((ckpt_dir / CHECKPOINT_JSON).read_text())["step"])
    except (OSError, KeyError, ValueError, TypeError):
        return None

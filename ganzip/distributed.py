"""Data-parallel training under ``torchrun``: process group, gradient averaging, rank-0 output.

``ganzip compress`` runs unchanged under ``torchrun --nproc-per-node N -m
ganzip compress ...``: when ``WORLD_SIZE`` > 1 the process group is
initialised from the environment (gloo on CPU, NCCL on CUDA), each rank
reads its own shard of the data, gradients are averaged across ranks after
every backward pass, and only rank 0 writes files or shows progress.

Gradients are averaged explicitly (one flattened all-reduce per model)
rather than through ``DistributedDataParallel``: a training step runs the
student several times (input, identity term) and the discriminator on real,
teacher and student images, with its parameters frozen for some of those
calls. DDP's reducer expects one forward per backward and a fixed set of
parameters that receive gradients; explicit averaging gives the same
update without those constraints. Buffers (BatchNorm statistics) are
broadcast from rank 0 after each step, as DDP does by default.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from .errors import GanzipError


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise GanzipError(f"WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} is not an integer") from None


def setup(device: torch.device) -> tuple[DistEnv, torch.device]:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1).

    Returns the environment and the device this rank should use (on CUDA, the
    GPU numbered ``LOCAL_RANK``). A group initialised by the caller is reused.
    """
    if dist.is_available() and dist.is_initialized():
        env = DistEnv(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), False)
        return env, _rank_device(device, env)
    world = env_world_size()
    if world <= 1:
        return DistEnv(), device
    if not dist.is_available():
        raise GanzipError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise GanzipError(f"WORLD_SIZE={world} but {var} is not set: launch with torchrun --nproc-per-node N -m ganzip ...")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.type == "cuda" else "gloo"
    env = DistEnv(int(os.environ["RANK"]), world, local_rank, True)
    device = _rank_device(device, env)
    kwargs = {"backend": backend, "init_method": "env://", "timeout": datetime.timedelta(minutes=30)}
    if device.type == "cuda":
        torch.cuda.set_device(device)
        kwargs["device_id"] = device
    try:
        dist.init_process_group(**kwargs)
    except TypeError:  # older torch without device_id
        kwargs.pop("device_id", None)
        dist.init_process_group(**kwargs)
    return env, device


def _rank_device(device: torch.device, env: DistEnv) -> torch.device:
    if device.type == "cuda" and env.world_size > 1:
        if env.local_rank >= torch.cuda.device_count():
            raise GanzipError(f"LOCAL_RANK {env.local_rank} but only {torch.cuda.device_count()} GPUs are visible")
        return torch.device("cuda", env.local_rank)
    return device


def teardown(env: DistEnv) -> None:
    """Leave the process group if :func:`setup` created it."""
    if env.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def average_gradients(model: nn.Module, env: DistEnv) -> None:
    """All-reduce and average the gradients of ``model`` (one flat buffer)."""
    if not env.enabled:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= env.world_size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def broadcast_module(model: nn.Module, env: DistEnv, buffers_only: bool = False) -> None:
    """Copy rank 0's parameters (unless ``buffers_only``) and buffers to every rank."""
    if not env.enabled:
        return
    tensors = [] if buffers_only else [p.data for p in model.parameters()]
    tensors += [b for b in model.buffers()]
    for t in tensors:
        dist.broadcast(t, src=0)


def all_reduce_mean(values: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Mean of a tensor across ranks (a copy; the input is left alone)."""
    if not env.enabled:
        return values
    out = values.clone()
    dist.all_reduce(out)
    return out / env.world_size


def gather_objects(obj, env: DistEnv) -> list:
    """Every rank's ``obj``, in rank order (on every rank)."""
    if not env.enabled:
        return [obj]
    out = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, env: DistEnv):
    """Rank 0's ``obj`` on every rank."""
    if not env.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]

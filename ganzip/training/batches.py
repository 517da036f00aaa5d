"""Which images each step reads (a pure function of seed, epoch and rank), and loading them."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from .. import distributed as ddp
from ..errors import GanzipError

class BatchOrder:
    """Which images each step of each rank reads, as a pure function of (seed, epoch, rank).

    Each epoch is a seeded permutation (``DistributedSampler``, which shards
    it across ranks); a step's batch is a slice of it. Nothing about the
    order has to be stored to resume exactly at any step.
    """

    def __init__(self, n: int, batch_size: int, seed: int, env: ddp.DistEnv):
        self.batch_size = batch_size
        self.sampler = DistributedSampler(
            range(n), num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=seed, drop_last=True
        )
        self.steps_per_epoch = len(self.sampler) // batch_size
        if self.steps_per_epoch < 1:
            raise GanzipError(
                f"the training data has {n} images, fewer than one batch of {batch_size}"
                + (f" per process for {env.world_size} processes" if env.world_size > 1 else "")
                + ": add images or lower --batch-size"
            )
        self._epoch: int | None = None
        self._indices: list[int] = []

    def batch(self, step: int) -> list[int]:
        epoch, pos = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self.sampler.set_epoch(epoch)
            self._indices = list(self.sampler)
            self._epoch = epoch
        return self._indices[pos * self.batch_size:(pos + 1) * self.batch_size]


def _collate(items: Sequence[Mapping]) -> dict:
    out: dict[str, Any] = {}
    for key in items[0]:
        vals = [it[key] for it in items]
        out[key] = torch.stack(vals) if torch.is_tensor(vals[0]) else vals
    return out


class Loader:
    """Batches for a range of steps; with workers, prefetched by one DataLoader per epoch."""

    def __init__(self, ds, order: BatchOrder, workers: int, seed: int, pin: bool):
        self.ds, self.order, self.workers, self.seed, self.pin = ds, order, workers, seed, pin

    def _fetch(self, indices: list[int]) -> dict:
        many = getattr(self.ds, "__getitems__", None)
        items = many(indices) if many is not None else [self.ds[i] for i in indices]
        return _collate(items)

    def _set_epoch(self, epoch: int) -> None:
        ds = self.ds
        while ds is not None:  # through Subset wrappers to the dataset that draws augmentations
            set_epoch = getattr(ds, "set_epoch", None)
            if set_epoch is not None:
                set_epoch(epoch)
                return
            ds = getattr(ds, "dataset", None)

    def iterate(self, start: int, stop: int):
        spe = self.order.steps_per_epoch
        step = start
        while step < stop:
            epoch = step // spe
            end = min(stop, (epoch + 1) * spe)
            self._set_epoch(epoch)
            if self.workers <= 0:
                for s in range(step, end):
                    yield s, self._fetch(self.order.batch(s))
            else:
                batches = [self.order.batch(s) for s in range(step, end)]
                # An explicit generator: creating the loader must not draw from the global RNG.
                gen = torch.Generator().manual_seed(self.seed * 7919 + epoch)
                loader = DataLoader(self.ds, batch_sampler=batches, num_workers=self.workers, collate_fn=_collate,
                                    generator=gen, pin_memory=self.pin)
                yield from zip(range(step, end), loader)
            step = end


def target_batch(targets, step: int, n: int, seed: int, rank: int) -> torch.Tensor:
    """``n`` real target images for ``step``: a seeded draw, so resuming needs no state."""
    g = torch.Generator().manual_seed(((seed * 1000003 + rank) * 2654435761 + step * 40503 + 17) % 2**63)
    idx = torch.randint(len(targets), (n,), generator=g).tolist()
    items = [targets[i] for i in idx]
    return torch.stack([it["B"] if "B" in it else it["A"] for it in items])

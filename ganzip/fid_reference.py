"""The real images FID compares against: a statistics file, a folder, or a dataset's own targets."""
from __future__ import annotations

import numpy as np
import torch

from .data import is_builtin, open_target, resolve_layout
from .errors import GanzipError
from .metrics import fid as fidm
from .progress import progress_iter


def round_uint8(images: torch.Tensor) -> torch.Tensor:
    """Dataset images in [-1, 1] that came from uint8 files, back to the same uint8 values."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def rgb3(u8: torch.Tensor, what: str) -> torch.Tensor:
    """A uint8 batch as 3 channels (grey repeated); other channel counts cannot be measured."""
    if u8.shape[1] == 3:
        return u8
    if u8.shape[1] == 1:
        return u8.expand(-1, 3, -1, -1)
    raise GanzipError(f"the {what} outputs {u8.shape[1]} channels; FID and LPIPS need RGB (3) or grayscale (1) images")


class Reference:
    """The real images FID compares against: statistics plus a description."""

    def __init__(self, stats, info: dict):
        self.stats, self.info = stats, info


def _reference_folder(data, split, direction, notes: list[str]):
    """The folder of real target images for FID, False when there is none, None for A|B data or built-ins."""
    if is_builtin(data):
        return None
    layout = resolve_layout(data)
    if layout.kind == "plain":
        notes.append(f"FID not computed: {data} is a plain folder of inputs with no target-domain images; "
                     "pass --target DIR (real target images) or --real-stats FILE")
        return False
    if layout.kind == "unpaired" or layout.separate_pairs:
        folder = layout.folder(split) if direction == "BtoA" else layout.b_folder(split)
        if folder is None:
            notes.append(f"FID not computed: {data} has no {split}B folder; pass --target DIR or --real-stats FILE")
            return False
        return folder
    return None


def reference_stats(extractor, data, split, size, direction, target, real_stats, batch_size, progress,
                     notes: list[str]) -> Reference | None:
    if real_stats is not None:
        stats = fidm.statistics_of(real_stats, extractor)
        return Reference(stats, {"kind": "statistics file", "source": str(real_stats), "count": stats.count})
    if target is not None:
        stats = fidm.statistics_of(target, extractor, batch_size=batch_size, progress=progress)
        return Reference(stats, {"kind": "folder", "source": str(target), "count": stats.count})
    folder = _reference_folder(data, split, direction, notes)
    if folder is False:
        return None
    if folder is not None:
        stats = fidm.statistics_of(folder, extractor, batch_size=batch_size, progress=progress)
        return Reference(stats, {"kind": "folder", "source": str(folder), "count": stats.count})
    # A|B images or a built-in task: the target halves/renders, at the evaluation size.
    ds = open_target(data, split=split, size=size, direction=direction)
    feats = []
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)
    for batch in progress_iter(loader, desc="FID reference", disable=not progress, leave=False):
        feats.append(extractor(rgb3(round_uint8(batch["B"]), "target data")))
    stats = fidm.Statistics.from_features(np.concatenate(feats), source=f"{data} ({split} targets)",
                                          protocol=extractor.protocol)
    return Reference(stats, {"kind": "dataset targets", "source": f"{data} ({split})", "count": stats.count,
                              "size": size})


__all__ = ["Reference", "reference_stats", "rgb3", "round_uint8"]

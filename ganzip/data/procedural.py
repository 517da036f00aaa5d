"""Built-in procedural image-translation tasks: generated on the fly, no downloads.

Every image is a small outdoor "scene": sky above a wavy horizon, grass below,
and two to six objects standing on the ground — balls (ellipses), brick boxes
(rotated rectangles) and striped tents (triangles), drawn far-to-near so the
near ones occlude the far ones. The tasks render the same kind of scene in
different styles:

- paired (pix2pix-like, A and B show the same scene):
  ``labels2shapes`` (flat label map -> shaded, textured picture) and
  ``edges2shapes`` (black edge drawing -> picture);
- unpaired (CycleGAN-like, A and B are different scenes):
  ``day2night`` and ``solid2striped`` (plain brown objects -> zebra-striped
  objects on the same background, the horse2zebra analogue).

Image ``i`` of a split depends only on ``(task, seed, split, domain, i)``:
its parameters come from its own seeded generator, so any subset can be
generated in any order, alone or in a batch, and gives the same pixels
(only per-element float operations are used, so batching does not change
the arithmetic).
Rendering is vectorised over a batch with torch (thousands of 64x64 images
per second on one CPU core).
"""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import GanzipError
from ..io import atomic_write_bytes, atomic_write_json, png_bytes
from .scenes import _K, _LABEL_COLOURS, _render  # noqa: F401  (_LABEL_COLOURS: importable from here as before)

MIN_SIZE = 64
MAX_SIZE = 256
SPLITS = ("train", "val", "test")
DEFAULT_N = {"train": 1000, "val": 100, "test": 100}
PREFIX = "builtin:"

_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
# Chunk so one batch's per-object fields stay around 8 MB each.
_PIXELS_PER_CHUNK = 1 << 21


@dataclass(frozen=True)
class Task:
    """A built-in task: `kind` is "paired" or "unpaired"; A is the input domain, B the target."""

    name: str
    kind: str
    description: str
    a: str  # style rendered for domain A
    b: str  # style rendered for domain B


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            "labels2shapes", "paired",
            "flat label map (sky, grass, ball, box, tent) -> shaded, textured scene (like labels2facades)",
            "labels", "day",
        ),
        Task(
            "edges2shapes", "paired",
            "black-on-white edge drawing -> shaded, textured scene (like edges2shoes)",
            "edges", "day",
        ),
        Task(
            "day2night", "unpaired",
            "daylight scenes -> night scenes with stars, moon and lit windows (unaligned)",
            "day", "night",
        ),
        Task(
            "solid2striped", "unpaired",
            "plain brown objects -> zebra-striped objects on the same kind of background (like horse2zebra)",
            "solid", "striped",
        ),
    )
}


def list_tasks() -> list[Task]:
    """The built-in tasks, sorted by name."""
    return [TASKS[k] for k in sorted(TASKS)]


def get_task(name: str) -> Task:
    """The task called `name` (a leading ``builtin:`` is accepted); GanzipError if unknown."""
    key = name[len(PREFIX):] if name.startswith(PREFIX) else name
    try:
        return TASKS[key]
    except KeyError:
        raise GanzipError(
            f"unknown built-in dataset {name!r}: choose one of {', '.join(sorted(TASKS))} (see `ganzip data list`)"
        ) from None


def check_size(size: int) -> int:
    """Built-in tasks render square images with a side from 64 to 256 pixels."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise GanzipError(
            f"built-in datasets are rendered at sizes {MIN_SIZE} to {MAX_SIZE} px, got {size!r}: "
            f"pass a size in that range (e.g. --size 64)"
        )
    return int(size)


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise GanzipError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_split(split: str) -> str:
    if split not in _SPLIT_IDS:
        raise GanzipError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    return split


# ---------------------------------------------------------------------------
# Scene parameters (one seeded generator per image)


def _image_rng(task: str, seed: int, split: str, domain: int, index: int) -> np.random.Generator:
    task_id = zlib.crc32(task.encode("utf-8"))
    return np.random.default_rng(np.random.SeedSequence([seed, task_id, _SPLIT_IDS[split], domain, index]))


def _scene_params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """All random numbers one scene needs, as fixed-shape arrays (so scenes stack into a batch)."""
    f32 = np.float32
    horizon = rng.uniform(0.32, 0.55)
    n_obj = int(rng.integers(2, _K + 1))
    kind = rng.integers(0, 3, size=_K)  # 0 ball, 1 box, 2 tent
    bottom = rng.uniform(horizon + 0.06, 0.98, size=_K)  # where the object touches the ground
    depth = (bottom - horizon) / (1.0 - horizon)  # 0 at the horizon, 1 at the bottom edge
    r = rng.uniform(0.08, 0.17, size=_K) * (0.55 + 0.65 * depth)  # nearer objects look bigger
    aspect = np.sqrt(rng.uniform(0.6, 1.6, size=_K))
    rx, ry = r * aspect, r / aspect
    theta = np.where(kind == 1, rng.uniform(-0.35, 0.35, size=_K), 0.0)
    cx = rng.uniform(0.08, 0.92, size=_K)
    cy = bottom - ry
    valid = np.arange(_K) < n_obj
    order = np.lexsort((np.arange(_K), bottom, valid))  # invalid first, then far to near
    light_x = rng.uniform(-0.9, -0.3) * rng.choice([-1.0, 1.0])
    return {
        "horizon": np.array(horizon, f32),
        "wave": np.array([rng.uniform(0.0, 0.045), rng.uniform(0.5, 2.0), rng.uniform(0, 1)], f32),
        "valid": valid[order],
        "kind": kind[order].astype(np.int64),
        "cx": cx[order].astype(f32), "cy": cy[order].astype(f32),
        "rx": rx[order].astype(f32), "ry": ry[order].astype(f32),
        "theta": theta[order].astype(f32),
        "tint": rng.uniform(0.8, 1.15, size=(_K, 3)).astype(f32),
        "stripe": np.stack([rng.uniform(2.5, 5.0, _K), rng.uniform(0, 2 * np.pi, _K)], 1).astype(f32)[order],
        "windows": (rng.random((_K, 12)) < 0.6).astype(f32),
        "light": np.array([light_x, rng.uniform(-0.8, -0.4), 0.7], f32),
        "sun": np.array([rng.uniform(0.1, 0.9), rng.uniform(0.06, horizon - 0.1)], f32),
        "clouds": rng.standard_normal((6, 6)).astype(f32),
        "grass": rng.standard_normal((12, 12)).astype(f32),
        "grain": rng.standard_normal((64, 64)).astype(f32),
        "stars": rng.standard_normal((96, 96)).astype(f32),
        "brightness": np.array(rng.uniform(0.9, 1.08), f32),
    }


def _stack(params: Sequence[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.stack([p[k] for p in params])) for k in params[0]}


# ---------------------------------------------------------------------------
# Public generation API


def generate(
    name: str,
    indices: Sequence[int] | int,
    size: int = 256,
    seed: int = 0,
    split: str = "train",
) -> dict[str, torch.Tensor]:
    """Render images `indices` of a built-in task's split: {"A": uint8 [N,3,S,S], "B": same}.

    For a paired task A[i] and B[i] show the same scene; for an unpaired one
    they are independent scenes. `indices` may be an int n (meaning 0..n-1).
    """
    task = get_task(name)
    size, seed, split = check_size(size), _check_seed(seed), _check_split(split)
    idx = list(range(indices)) if isinstance(indices, (int, np.integer)) else [int(i) for i in indices]
    if any(i < 0 for i in idx):
        raise GanzipError("image indices must be non-negative")
    chunk = max(1, _PIXELS_PER_CHUNK // (size * size))
    parts: dict[str, list[torch.Tensor]] = {"A": [], "B": []}
    for start in range(0, len(idx), chunk):
        sel = idx[start:start + chunk]
        if task.kind == "paired":
            P = _stack([_scene_params(_image_rng(task.name, seed, split, 0, i)) for i in sel])
            r = _render(P, size, (task.a, task.b))
            parts["A"].append(r[task.a])
            parts["B"].append(r[task.b])
        else:
            for domain, style in (("A", task.a), ("B", task.b)):
                P = _stack([_scene_params(_image_rng(task.name, seed, split, int(domain == "B"), i)) for i in sel])
                parts[domain].append(_render(P, size, (style,))[style])
    empty = torch.zeros(0, 3, size, size, dtype=torch.uint8)
    return {k: torch.cat(v) if v else empty for k, v in parts.items()}


def to_float(img: torch.Tensor) -> torch.Tensor:
    """uint8 [...,3,H,W] in 0..255 -> float32 in [-1, 1] (the generator convention)."""
    return img.float() / 127.5 - 1.0


class ProceduralDataset(Dataset):
    """A built-in task's split as a torch Dataset of {"A", "B", "path"} dicts.

    Images are rendered on demand (and in one vectorised batch when a
    DataLoader asks for a whole batch through ``__getitems__``). With
    `augment`, each item is flipped horizontally (A and B together for paired
    tasks) with probability 1/2, decided by a generator seeded from
    ``(seed, epoch, index)``; call `set_epoch` to vary it between epochs.
    `direction="BtoA"` swaps the domains.
    """

    def __init__(
        self,
        name: str,
        n: int | None = None,
        size: int = 256,
        seed: int = 0,
        split: str = "train",
        direction: str = "AtoB",
        augment: bool = False,
    ) -> None:
        self.task = get_task(name)
        self.size = check_size(size)
        self.seed = _check_seed(seed)
        self.split = _check_split(split)
        self.n = DEFAULT_N[split] if n is None else int(n)
        if self.n < 1:
            raise GanzipError(f"n must be at least 1, got {n!r}")
        if direction not in ("AtoB", "BtoA"):
            raise GanzipError(f"direction must be AtoB or BtoA, got {direction!r}")
        self.direction = direction
        self.augment = bool(augment)
        self.epoch = 0
        self.kind = self.task.kind
        self.skipped = 0
        self.skip_reasons: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        """Use the augmentation draws of `epoch` (like DistributedSampler.set_epoch)."""
        self.epoch = int(epoch)

    def skip_summary(self) -> str:
        return "no files skipped"

    def evaluation_view(self) -> "ProceduralDataset":
        """The same images without augmentation (for held-out evaluation)."""
        return ProceduralDataset(self.task.name, self.n, self.size, self.seed, self.split, self.direction, False)

    def _flip(self, index: int) -> bool:
        if not self.augment:
            return False
        return bool(np.random.default_rng([self.seed, self.epoch, index]).random() < 0.5)

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        indices = [self._check_index(i) for i in indices]
        imgs = generate(self.task.name, indices, self.size, self.seed, self.split)
        a, b = ("A", "B") if self.direction == "AtoB" else ("B", "A")
        items = []
        for j, i in enumerate(indices):
            A, B = to_float(imgs[a][j]), to_float(imgs[b][j])
            if self._flip(i):
                A, B = A.flip(-1), B.flip(-1)
            items.append({"A": A, "B": B, "path": f"{PREFIX}{self.task.name}/{self.split}/{i:05d}"})
        return items

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]

    def _check_index(self, i) -> int:
        i = int(i)
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} images")
        return i

    def __repr__(self) -> str:
        return (f"ProceduralDataset({self.task.name!r}, n={self.n}, size={self.size}, seed={self.seed}, "
                f"split={self.split!r}, direction={self.direction!r}, augment={self.augment})")


# ---------------------------------------------------------------------------
# Writing a task to disk in the pytorch-CycleGAN-and-pix2pix layout


def _png_bytes(arr: np.ndarray) -> bytes:
    return png_bytes(arr, compress_level=3)  # level 3 keeps the bytes of the datasets ganzip wrote before


DATA_MARKER = "ganzip-data.json"


def make_dataset(
    name: str,
    out: str | Path,
    n: int = 1000,
    size: int = 256,
    seed: int = 0,
    n_test: int | None = None,
    n_val: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Write a built-in task to `out` as PNGs in the pytorch-CycleGAN-and-pix2pix layout.

    Paired tasks get ``train/``, ``val/`` and ``test/`` folders of A|B images
    (A on the left, B on the right, each `size` x `size`); unpaired tasks get
    ``trainA/``, ``trainB/``, ``testA/``, ``testB/``. `n` images go to the
    training split, `n_test` (default n // 10, at least 1) to the test split
    and, for paired tasks, `n_val` (default n_test) to val. A ``ganzip-data.json``
    manifest records how the folder was made. Every file is written atomically.
    Returns a summary dict (task, kind, root, size, seed, counts, files, seconds).

    Example: ``make_dataset("edges2shapes", "data/e2s", n=2000, size=64)``.
    """
    from tqdm import tqdm

    task = get_task(name)
    size, seed = check_size(size), _check_seed(seed)
    n = int(n)
    n_test = max(1, n // 10) if n_test is None else int(n_test)
    n_val = n_test if n_val is None else int(n_val)
    if n < 1 or n_test < 0 or n_val < 0:
        raise GanzipError(f"need n >= 1 and n_test, n_val >= 0 (got n={n}, n_test={n_test}, n_val={n_val})")
    out = Path(out)
    _check_out(out, overwrite)

    if task.kind == "paired":
        plan = [("train", n), ("val", n_val), ("test", n_test)]
    else:
        plan = [("train", n), ("test", n_test)]
    start = time.perf_counter()
    counts: dict[str, int] = {}
    total = sum(k for _, k in plan)
    # Marked incomplete until the last image is on disk: a run cut short (a full disk, a kill) is refused on use.
    atomic_write_json(out / DATA_MARKER, {"task": task.name, "complete": False})
    bar = tqdm(total=total, desc=f"{task.name}", unit="img", disable=not progress)
    files = 0
    for split, count in plan:
        files += _write_split(task, out, split, count, size, seed, bar)
        counts[split] = count
    bar.close()
    summary = {
        "task": task.name,
        "kind": task.kind,
        "description": task.description,
        "root": str(out),
        "size": size,
        "seed": seed,
        "counts": counts,
        "files": files,
        "complete": True,
    }
    atomic_write_json(out / DATA_MARKER, summary)
    summary["seconds"] = round(time.perf_counter() - start, 3)
    return summary


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse an output that is a file, or a non-empty folder unless `overwrite` and ganzip made it."""
    if out.exists() and not out.is_dir():
        raise GanzipError(f"{out} exists and is not a folder: choose another output folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise GanzipError(f"{out} already exists and is not empty: choose a new folder or pass --overwrite")
        if not (out / DATA_MARKER).is_file():
            raise GanzipError(f"{out} holds files that ganzip data make did not write: --overwrite replaces only "
                              "a dataset ganzip made; choose a new folder")


def _write_split(task: Task, out: Path, split: str, count: int, size: int, seed: int, bar) -> int:
    """Render and write one split's `count` images, a chunk at a time; returns the number of files written."""
    chunk = max(1, _PIXELS_PER_CHUNK // (size * size))
    files = 0
    for lo in range(0, count, chunk):
        idx = list(range(lo, min(count, lo + chunk)))
        imgs = generate(task.name, idx, size, seed, split)
        A = imgs["A"].permute(0, 2, 3, 1).numpy()
        B = imgs["B"].permute(0, 2, 3, 1).numpy()
        for j, i in enumerate(idx):
            if task.kind == "paired":
                atomic_write_bytes(out / split / f"{i:05d}.png", _png_bytes(np.concatenate([A[j], B[j]], axis=1)))
                files += 1
            else:
                atomic_write_bytes(out / f"{split}A" / f"{i:05d}.png", _png_bytes(A[j]))
                atomic_write_bytes(out / f"{split}B" / f"{i:05d}.png", _png_bytes(B[j]))
                files += 2
        bar.update(len(idx))
    return files

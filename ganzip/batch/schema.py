"""The manifest's schema: its keys and their types, the `Job` and `Manifest` it becomes, errors naming lines."""
from __future__ import annotations

import difflib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import GanzipError
from .locate import TomlLocator

# key -> (accepted types, description for errors)
JOB_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "name": ((str,), "a string"),
    "model": ((str,), "a path"),
    "arch": ((str,), "a zoo name or package.module:callable"),
    "arch_opts": ((dict, list), 'a table ({ngf = 64}) or a list of "key=value" strings'),
    "data": ((str,), "a folder or builtin:NAME"),
    "target": ((str,), "a folder"),
    "width": ((float, int), "a number in (0, 1]"),
    "widths": ((list,), "a list of numbers in (0, 1]"),
    "recipe": ((str,), "a recipe name or a .toml path"),
    "set": ((dict, list), 'a table ({"crd.weight" = 10}) or a list of "section.key=value" strings'),
    "steps": ((int,), "a positive integer"),
    "epochs": ((int,), "a positive integer"),
    "size": ((int,), "a positive integer"),
    "batch_size": ((int,), "a positive integer"),
    "seed": ((int,), "a non-negative integer"),
    "seeds": ((list,), "a list of distinct non-negative integers"),
    "device": ((str,), "auto, cpu or cuda[:N]"),
    "init": ((str,), "scratch or inherit"),
    "round_to": ((int,), "a positive integer"),
    "checkpoint_every": ((int,), "a non-negative integer"),
    "eval_every": ((int,), "a non-negative integer"),
}
TOP_KEYS = ("out", "defaults", "job")


@dataclass
class Job:
    """One compress run (one width, one seed) as the manifest describes it, paths resolved."""

    name: str
    model: Path
    data: str
    width: float
    arch: str | None = None
    arch_opts: dict[str, Any] = field(default_factory=dict)
    target: Path | None = None
    recipe: str = "crd"
    overrides: list[str] = field(default_factory=list)
    steps: int | None = None
    epochs: int | None = None
    size: int | None = None
    batch_size: int | None = None
    seed: int | None = None
    device: str = "auto"
    init: str = "scratch"
    round_to: int = 1
    checkpoint_every: int | None = None
    eval_every: int | None = None
    line: int | None = None  # manifest line of the job's [[job]] header
    image_size: int = 256  # train.size after the recipe and overrides
    group: str | None = None  # with `seeds`: the job's name without @sN (its seeds are aggregated under it)

    def spec(self) -> dict:
        """What defines the job's result, as JSON-able data (stored in done.json).

        Files are recorded by name, not by full path, so moving an experiment
        folder does not make its finished jobs look changed.
        """
        keys = ("name", "model", "data", "width", "arch", "arch_opts", "target", "recipe", "overrides", "steps",
                "epochs", "size", "batch_size", "seed", "init", "round_to")
        out = {k: getattr(self, k) for k in keys}
        for k in ("model", "target", "data", "recipe"):
            v = out[k]
            if v is not None and (isinstance(v, Path) or (k in ("data", "recipe") and os.sep in str(v))):
                out[k] = Path(v).name
        return out

    def spec_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.spec(), sort_keys=True).encode()).hexdigest()[:16]

    def compress_kwargs(self, out: Path) -> dict:
        """Keyword arguments for `ganzip.engine.compress` (the model is its first argument): the one
        translation of a job into a library call, used by every launcher."""
        kw: dict[str, Any] = dict(
            data=self.data, width=self.width, recipe=self.recipe, arch=self.arch, arch_opts=dict(self.arch_opts),
            target=None if self.target is None else str(self.target), size=self.size, steps=self.steps,
            epochs=self.epochs, batch_size=self.batch_size, seed=self.seed, overrides=list(self.overrides),
            out=str(out), device=self.device, init=self.init, round_to=self.round_to,
        )
        if self.checkpoint_every is not None:
            kw["checkpoint_every"] = self.checkpoint_every
        if self.eval_every is not None:
            kw["eval_every"] = self.eval_every
        return kw


@dataclass
class Manifest:
    """A parsed manifest: its file, the expanded jobs (one per width and seed) and the output folder."""

    path: Path
    jobs: list[Job]
    out: Path


class Reader:
    """Validation with errors that name the manifest file and line."""

    def __init__(self, path: Path, text: str, trust_code: bool = False):
        self.path = path
        self.loc = TomlLocator(text)
        self.trust_code = trust_code

    def error(self, where: tuple, message: str) -> GanzipError:
        line = self.loc.line(*where)
        prefix = f"{self.path}:{line}" if line else str(self.path)
        return GanzipError(f"{prefix}: {message}")


def suggest(key: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def resolve_path(base: Path, value: str) -> Path:
    """A manifest path: `~` expanded, relative to the manifest's folder, normalised (never run through a shell)."""
    p = Path(value).expanduser()
    return (p if p.is_absolute() else base / p).resolve()


def width_label(width: float) -> str:
    """0.25 -> "w0.25"; distinct widths always get distinct labels."""
    short = f"{width:g}"
    return f"w{short}" if float(short) == width else f"w{width!r}"


def check_table(reader: Reader, table: Mapping, where: tuple, what: str, allowed: Sequence[str]) -> None:
    """Every key of `table` is known and of its type."""
    for key, value in table.items():
        if key not in allowed:
            raise reader.error(where + (key,), f"{what}: unknown key {key!r}{suggest(key, allowed)}")
        types, desc = JOB_KEYS[key]
        ok = isinstance(value, types) and not isinstance(value, bool)
        if not ok:
            raise reader.error(where + (key,), f"{what}: {key} must be {desc}, got {value!r}")



__all__ = ["JOB_KEYS", "Job", "Manifest", "Reader", "TOP_KEYS", "check_table", "resolve_path", "suggest", "width_label"]

"""Run many compress jobs from one TOML manifest and rank them in a leaderboard.

A manifest is data (read with tomllib, never executed)::

    out = "runs"                      # optional; relative to this file

    [defaults]                        # applies to every job
    data = "datasets/horse2zebra"
    recipe = "crd"
    steps = 20000
    set = {"perceptual.weight" = 1}

    [[job]]
    name = "h2z-resnet"
    model = "weights/h2z_G.pth"
    arch = "resnet_9blocks"
    widths = [0.25, 0.5]              # expands to h2z-resnet@w0.25 and h2z-resnet@w0.5

    [[job]]
    name = "h2z-seeds"
    model = "weights/h2z_G.pth"
    seeds = [0, 1, 2]                 # h2z-seeds@s0, @s1, @s2; the leaderboard adds mean ± std

    [[job]]
    name = "edges-unet"
    model = "weights/edges2shoes_G.pth"
    arch = "unet_256"
    arch_opts = {norm = "batch"}
    recipe = "crd-paired"
    set = ["crd.weight=10"]

`load_manifest` checks everything it can before any job starts (keys, types,
files, recipes, `set` keys, zoo names and options, duplicate names) and names
the manifest line of each problem. `run_batch` runs the jobs in order, skips
finished ones, resumes interrupted ones (the engine resumes from the
checkpoint in the job's folder), records failures and goes on, then writes
``leaderboard.md``, ``.csv`` and ``.json`` into the output folder.
"""
from __future__ import annotations

import contextlib
import csv
import difflib
import hashlib
import io
import json
import math
import os
import queue
import re
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from . import io as gio
from . import rundir, trust
from .errors import GanzipError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

DONE_MARKER = "done.json"
ERROR_FILE = "error.txt"
LOG_FILE = "compress.log"
BATCH_FILES = (DONE_MARKER, ERROR_FILE, LOG_FILE)
LEADERBOARD_FILES = ("leaderboard.json", "leaderboard.csv", "leaderboard.md")
LAUNCHERS = ("auto", "inprocess", "subprocess", "torchrun")

# key -> (accepted types, description for errors)
_JOB_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
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
_TOP_KEYS = ("out", "defaults", "job")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


# ====================================================================== locating lines


_HEADER_RE = re.compile(r"^\s*(\[\[?)\s*([^\[\]#]+?)\s*(\]\]?)\s*(#.*)?$")
_KEY_RE = re.compile(r"""^\s*("(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+)\s*(?:\.|=)""")


def _bracket_balance(text: str) -> int:
    """Opened minus closed brackets/braces outside strings and comments."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'', "", text).partition("#")[0]
    return text.count("[") + text.count("{") - text.count("]") - text.count("}")


def _unquote(part: str) -> str:
    part = part.strip()
    if len(part) >= 2 and part[0] == part[-1] and part[0] in "\"'":
        inner = part[1:-1]
        return json.loads(f'"{inner}"') if part[0] == '"' else inner
    return part


def _split_dotted(name: str) -> tuple[str, ...]:
    return tuple(_unquote(p) for p in re.findall(r"""("(?:[^"\\]|\\.)*"|'[^']*'|[^.]+)""", name))


class TomlLocator:
    """Find the line of a table, an array-of-tables entry or a key in TOML text.

    tomllib reports no positions for valid documents, so the text is scanned:
    table headers (``[defaults]``, ``[[job]]``, ``[job.set]``) and the first
    segment of ``key = value`` lines are recorded per table, skipping the
    insides of multi-line strings. Lines are 1-based.

    >>> loc = TomlLocator('[[job]]\\nname = "a"\\n[[job]]\\nname = "b"\\nwidht = 1\\n')
    >>> loc.line("job", 1, "widht"), loc.line("job", 1), loc.line("job", 0, "name")
    (5, 3, 2)
    """

    def __init__(self, text: str):
        self.keys: dict[tuple, int] = {}  # (table path..., key) -> line
        self.headers: dict[tuple, int] = {}  # table path -> line
        counts: dict[tuple, int] = {}
        table: tuple = ()
        in_string: str | None = None
        depth = 0  # open brackets of a multi-line array value
        for number, line in enumerate(text.splitlines(), start=1):
            if in_string:
                if line.count(in_string) % 2 == 1:
                    in_string = None
                continue
            if depth > 0:
                depth = max(0, depth + _bracket_balance(line))
                continue
            header = _HEADER_RE.match(line)
            if header and header.group(1) == header.group(3)[::-1].replace("]", "["):
                path = _split_dotted(header.group(2))
                if header.group(1) == "[[":
                    index = counts.get(path, 0)
                    counts[path] = index + 1
                    table = path + (index,)
                else:
                    table = self._resolve(path, counts)
                    if len(table) > 1:  # [job.set] also marks the key "set" of the enclosing table
                        self.keys.setdefault(table[:-1] + (table[-1],), number)
                self.headers.setdefault(table, number)
                continue
            key = _KEY_RE.match(line)
            if key:
                self.keys.setdefault(table + (_unquote(key.group(1)),), number)
                depth = max(0, _bracket_balance(line.partition("=")[2]))
            for quote in ('"""', "'''"):
                if line.count(quote) % 2 == 1:
                    in_string = quote
                    break

    @staticmethod
    def _resolve(path: tuple, counts: Mapping[tuple, int]) -> tuple:
        """`[job.set]` after the third `[[job]]` belongs to ("job", 2, "set")."""
        out: tuple = ()
        for part in path:
            out = out + (part,)
            if out in counts:
                out = out + (counts[out] - 1,)
        return out

    def line(self, *path) -> int | None:
        """Line of `path` (e.g. ("job", 2, "model"), ("defaults",), ("out",)); falls back to the enclosing table."""
        path = tuple(path)
        while path:
            if path in self.keys:
                return self.keys[path]
            if path in self.headers:
                return self.headers[path]
            path = path[:-1]
        return None


# ====================================================================== jobs and manifests


@dataclass
class Job:
    """One compress run (one width) as the manifest describes it, paths resolved."""

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
        """Keyword arguments for `ganzip.engine.compress` (with the model as first argument)."""
        kw: dict[str, Any] = dict(
            data=self.data, width=self.width, recipe=self.recipe, arch=self.arch,
            arch_opts=[f"{k}={_cli_value(v)}" for k, v in self.arch_opts.items()],
            target=None if self.target is None else str(self.target), size=self.size, steps=self.steps,
            epochs=self.epochs, batch_size=self.batch_size, seed=self.seed, overrides=list(self.overrides),
            out=str(out), device=self.device, init=self.init, round_to=self.round_to,
        )
        if self.checkpoint_every is not None:
            kw["checkpoint_every"] = self.checkpoint_every
        if self.eval_every is not None:
            kw["eval_every"] = self.eval_every
        return kw

    def compress_args(self, out: Path) -> list[str]:
        """The same job as `ganzip compress` arguments (after the command name)."""
        args = [str(self.model), "--width", _cli_value(self.width), "--data", self.data, "--recipe", self.recipe,
                "--out", str(out), "--device", self.device, "--init", self.init, "--round-to", str(self.round_to)]
        if self.arch:
            args += ["--arch", self.arch]
        for k, v in self.arch_opts.items():
            args += ["--arch-opt", f"{k}={_cli_value(v)}"]
        if self.target is not None:
            args += ["--target", str(self.target)]
        for flag, value in (("--size", self.size), ("--steps", self.steps), ("--epochs", self.epochs),
                            ("--batch-size", self.batch_size), ("--seed", self.seed),
                            ("--checkpoint-every", self.checkpoint_every), ("--eval-every", self.eval_every)):
            if value is not None:
                args += [flag, str(value)]
        for item in self.overrides:
            args += ["--set", item]
        return args + ["--quiet"]


@dataclass
class Manifest:
    """A parsed manifest: its file, the expanded jobs (one per width) and the output folder."""

    path: Path
    jobs: list[Job]
    out: Path


def _cli_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _toml_value(value: Any) -> str:
    """A manifest value as the right-hand side of `--set key=VALUE` (parsed back as TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return {math.inf: "inf", -math.inf: "-inf"}.get(value, "nan")
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(type(value).__name__)


def overrides_from(value: Any) -> list[str]:
    """`set = {"crd.weight" = 10}` or `set = ["crd.weight=10"]` -> ["crd.weight=10"].

    Nested tables (`set = {crd = {weight = 10}}`, or `[job.set.crd]`) flatten to dotted keys.
    """
    if isinstance(value, list):
        bad = [v for v in value if not isinstance(v, str) or "=" not in v]
        if bad:
            raise ValueError(f'each entry must be a "section.key=value" string, got {bad[0]!r}')
        return list(value)
    out: list[str] = []

    def walk(prefix: str, table: Mapping) -> None:
        for key, val in table.items():
            full = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(val, dict):
                walk(full, val)
            else:
                try:
                    out.append(f"{full}={_toml_value(val)}")
                except TypeError:
                    raise ValueError(f"{full}: a {type(val).__name__} cannot be a recipe value") from None

    walk("", value)
    return out


def _arch_opts_from(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return dict(value)
    from .loading import parse_arch_opts

    return parse_arch_opts(value)


def width_label(width: float) -> str:
    """0.25 -> "w0.25"; distinct widths always get distinct labels."""
    short = f"{width:g}"
    return f"w{short}" if float(short) == width else f"w{width!r}"


class _Reader:
    """Validation with errors that name the manifest file and line."""

    def __init__(self, path: Path, text: str):
        self.path = path
        self.loc = TomlLocator(text)
        self.trust_code = False

    def error(self, where: tuple, message: str) -> GanzipError:
        line = self.loc.line(*where)
        prefix = f"{self.path}:{line}" if line else str(self.path)
        return GanzipError(f"{prefix}: {message}")


def _suggest(key: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_table(reader: _Reader, table: Mapping, where: tuple, what: str, allowed: Sequence[str]) -> None:
    for key, value in table.items():
        if key == "name" and key not in allowed:
            raise reader.error(where + (key,), f"{what}: name belongs in each [[job]], not in {what}")
        if key not in allowed:
            raise reader.error(where + (key,), f"{what}: unknown key {key!r}{_suggest(key, allowed)}; "
                                               f"valid keys: {', '.join(allowed)}")
        types, desc = _JOB_KEYS[key]
        ok = isinstance(value, types) and not isinstance(value, bool)
        if not ok:
            raise reader.error(where + (key,), f"{what}: {key} must be {desc}, got {value!r}")


def load_manifest(path: str | os.PathLike, out: str | os.PathLike | None = None, *, trust_code: bool = False) -> Manifest:
    """Read and check a manifest; expand multi-width jobs. Raises GanzipError naming the line.

    A job whose `arch` is `package.module:callable` imports and runs that code;
    it is refused unless `trust_code` is set (`--trust-code`, docs/security.md).

    Relative paths (models, data, targets, .toml recipes, `out`) resolve
    against the manifest's folder. `out` overrides the manifest's `out`
    (default: ``<manifest folder>/<manifest name>-runs``).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GanzipError(f"no such manifest: {path}") from None
    except IsADirectoryError:
        raise GanzipError(f"{path} is a folder: give the manifest's .toml file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GanzipError(f"cannot read manifest {path}: {exc}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GanzipError(f"{path} is not valid TOML: {exc}") from None
    reader = _Reader(path, text)
    reader.trust_code = trust_code
    base = path.resolve().parent

    for key in doc:
        if key not in _TOP_KEYS:
            raise reader.error((key,), f"unknown top-level key {key!r}{_suggest(key, _TOP_KEYS)}; "
                                       "a manifest has [defaults], [[job]] entries and an optional out")
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise reader.error(("defaults",), "defaults must be a table: write [defaults] (single brackets)")
    _check_table(reader, defaults, ("defaults",), "[defaults]", [k for k in _JOB_KEYS if k != "name"])
    entries = doc.get("job", [])
    if isinstance(entries, dict):
        raise reader.error(("job",), "jobs are an array of tables: write [[job]] (double brackets) above each job")
    if not isinstance(entries, list) or not entries:
        raise reader.error(("job",) if "job" in doc else (), "the manifest has no jobs: add [[job]] tables")
    if "out" in doc and not isinstance(doc["out"], str):
        raise reader.error(("out",), f"out must be a folder path, got {doc['out']!r}")

    root = Path(out) if out is not None else _resolve(base, doc["out"] if "out" in doc else f"{path.stem}-runs")

    jobs: list[Job] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        where = ("job", index)
        if not isinstance(entry, dict):
            raise reader.error(where, f"job {index + 1} is not a table")
        _check_table(reader, entry, where, f"job {index + 1}", list(_JOB_KEYS))
        name = entry.get("name")
        if name is None:
            raise reader.error(where, f"job {index + 1} has no name: add name = \"...\" (it names the job's folder)")
        if not _NAME_RE.match(name):
            raise reader.error(where + ("name",), f"job name {name!r} may use only letters, digits, '.', '_', '+' "
                                                  "and '-': it becomes a folder name ('@' is added by width "
                                                  "expansion: name@w0.25)")
        for job in _expand(reader, base, defaults, entry, index):
            if job.name in seen:
                raise reader.error(where + ("name",), f"duplicate job name {job.name!r} (also job {seen[job.name] + 1}): "
                                                      "job names must be unique")
            seen[job.name] = index
            jobs.append(job)
    return Manifest(path=path, jobs=jobs, out=root)


def _resolve(base: Path, value: str) -> Path:
    """A manifest path: `~` expanded, relative to the manifest's folder, normalised (never run through a shell)."""
    p = Path(value).expanduser()
    return (p if p.is_absolute() else base / p).resolve()


def _expand(reader: _Reader, base: Path, defaults: Mapping, entry: Mapping, index: int) -> list[Job]:
    where = ("job", index)
    what = f"job {entry['name']!r}"

    def origin(key: str) -> tuple:
        return where + (key,) if key in entry else ("defaults", key)

    merged = dict(defaults)
    if "steps" in entry or "epochs" in entry:  # a job's run length replaces the defaults' entirely
        merged.pop("steps", None)
        merged.pop("epochs", None)
    if "width" in entry or "widths" in entry:
        merged.pop("width", None)
        merged.pop("widths", None)
    if "seed" in entry or "seeds" in entry:  # a job's seed(s) replace the defaults'
        merged.pop("seed", None)
        merged.pop("seeds", None)
    for key, value in entry.items():
        if key in ("set", "arch_opts") and key in merged:
            continue  # merged below
        merged[key] = value

    # --- overrides and architecture options: the defaults', then the job's
    overrides: list[str] = []
    for source, w in ((defaults, ("defaults", "set")), (entry, where + ("set",))):
        if "set" in source:
            try:
                overrides += overrides_from(source["set"])
            except ValueError as exc:
                raise reader.error(w, f"{what}: set: {exc}") from None
    arch_opts: dict[str, Any] = {}
    for source, w in ((defaults, ("defaults", "arch_opts")), (entry, where + ("arch_opts",))):
        if "arch_opts" in source:
            try:
                arch_opts.update(_arch_opts_from(source["arch_opts"]))
            except GanzipError as exc:
                raise reader.error(w, f"{what}: arch_opts: {exc}") from None

    for key in ("model", "data"):
        if key not in merged:
            raise reader.error(where, f"{what} has no {key}: add {key} = \"...\" to the job or to [defaults]")
    if "steps" in merged and "epochs" in merged:
        raise reader.error(origin("epochs"), f"{what}: give steps or epochs, not both")

    # --- files
    model = _resolve(base, merged["model"])
    if not model.is_file():
        raise reader.error(origin("model"), f"{what}: model file {model} does not exist")
    data = merged["data"]
    from .data import is_builtin

    if not is_builtin(data):
        data_path = _resolve(base, data)
        if not data_path.exists():
            raise reader.error(origin("data"), f"{what}: data folder {data_path} does not exist "
                                               "(give a folder, or builtin:NAME for a built-in task)")
        data = str(data_path)
    else:
        from .data.procedural import get_task

        try:
            get_task(data)
        except GanzipError as exc:
            raise reader.error(origin("data"), f"{what}: {exc}") from None
    target = None
    if "target" in merged:
        target = _resolve(base, merged["target"])
        if not target.exists():
            raise reader.error(origin("target"), f"{what}: target folder {target} does not exist")

    # --- architecture
    arch = merged.get("arch")
    if arch is not None and (not isinstance(arch, str) or not arch):
        raise reader.error(origin("arch"), f"{what}: arch must be a zoo name or package.module:callable, got {arch!r}")
    if arch is not None and ":" in arch:
        try:  # a manifest often comes from someone else: its code runs only with the user's --trust-code
            trust.check_name(arch, trust.Origin(source=f"manifest {reader.path.name}"))
        except GanzipError as exc:
            raise reader.error(origin("arch"), f"{what}: {exc}") from None
        if not reader.trust_code:
            raise reader.error(origin("arch"), f"{what}: arch = {arch!r} imports and runs code named by this manifest"
                                               + (f" with options {arch_opts}" if arch_opts else "")
                                               + "; check it, then pass --trust-code to allow it")
    if arch is not None and ":" not in arch:
        from . import models

        if arch not in models.list_models():
            raise reader.error(origin("arch"), f"{what}: unknown architecture {arch!r}{_suggest(arch, models.list_models())}; "
                                               f"choose one of {', '.join(models.list_models('generator'))} "
                                               "or package.module:callable")
        valid = models.model_options(arch)
        bad = sorted(set(arch_opts) - set(valid))
        if bad:
            raise reader.error(origin("arch_opts"), f"{what}: {arch} has no option {', '.join(bad)}; "
                                                    f"valid options: {', '.join(valid)}")

    # --- recipe and its overrides
    recipe = merged.get("recipe", "crd")
    if recipe.endswith(".toml"):
        recipe_path = _resolve(base, recipe)
        if not recipe_path.is_file():
            raise reader.error(origin("recipe"), f"{what}: recipe file {recipe_path} does not exist")
        recipe = str(recipe_path)
    from .recipes import resolve_recipe

    try:
        resolve_recipe(recipe)
    except GanzipError as exc:
        raise reader.error(origin("recipe"), f"{what}: {exc}") from None
    size = merged.get("size")
    try:
        cfg = resolve_recipe(recipe, overrides + ([f"train.size={size}"] if size is not None else []))
    except GanzipError as exc:
        where_set = where + ("set",) if "set" in entry else ("defaults", "set")
        raise reader.error(where_set if overrides else origin("size"), f"{what}: {exc}") from None

    # --- scalars
    for key in ("steps", "epochs", "size", "batch_size", "round_to"):
        if key in merged and merged[key] < 1:
            raise reader.error(origin(key), f"{what}: {key} must be at least 1, got {merged[key]}")
    for key in ("seed", "checkpoint_every", "eval_every"):
        if key in merged and merged[key] < 0:
            raise reader.error(origin(key), f"{what}: {key} must be >= 0, got {merged[key]}")
    device = merged.get("device", "auto")
    if not _DEVICE_RE.match(device):
        raise reader.error(origin("device"), f"{what}: device must be auto, cpu or cuda[:N], got {device!r}")
    init = merged.get("init", "scratch")
    if init not in ("scratch", "inherit"):
        raise reader.error(origin("init"), f"{what}: init must be scratch or inherit, got {init!r}")

    # --- widths
    if "widths" in merged:
        widths = merged["widths"]
        key = "widths"
        if not widths:
            raise reader.error(origin(key), f"{what}: widths is empty")
    else:
        widths = [merged.get("width", 0.25)]
        key = "width"
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not (0 < w <= 1):
            raise reader.error(origin(key), f"{what}: each width must be a number in (0, 1], got {w!r}")
    if len(set(widths)) != len(widths):
        raise reader.error(origin(key), f"{what}: widths has repeated values {widths}")

    # --- seeds
    if "seed" in merged and "seeds" in merged:
        raise reader.error(origin("seeds"), f"{what}: give seed or seeds, not both")
    seeds: list[int | None] = [merged.get("seed")]
    if "seeds" in merged:
        seeds = merged["seeds"]
        if not seeds:
            raise reader.error(origin("seeds"), f"{what}: seeds is empty: list at least one seed, e.g. seeds = [0, 1, 2]")
        for sd in seeds:
            if isinstance(sd, bool) or not isinstance(sd, int) or sd < 0:
                raise reader.error(origin("seeds"), f"{what}: each seed must be a non-negative integer, got {sd!r}")
        if len(set(seeds)) != len(seeds):
            raise reader.error(origin("seeds"), f"{what}: seeds has repeated values {seeds}")

    jobs = []
    for w in widths:
        base = entry["name"] if len(widths) == 1 else f"{entry['name']}@{width_label(w)}"
        for sd in seeds:
            name = f"{base}@s{sd}" if "seeds" in merged else base
            jobs.append(Job(
                name=name, model=model, data=data, width=float(w), arch=arch, arch_opts=arch_opts, target=target,
                recipe=recipe, overrides=overrides, steps=merged.get("steps"), epochs=merged.get("epochs"),
                size=size, batch_size=merged.get("batch_size"), seed=sd, device=device, init=init,
                round_to=merged.get("round_to", 1), checkpoint_every=merged.get("checkpoint_every"),
                eval_every=merged.get("eval_every"), line=reader.loc.line(*where), image_size=cfg.train.size,
                group=base if "seeds" in merged else None,
            ))
    return jobs


# ====================================================================== launching


def parse_gpus(text: str | Sequence[str] | None) -> list[str]:
    """'0,1,3' -> ['0', '1', '3'] (device indices or GPU UUIDs, as CUDA_VISIBLE_DEVICES takes them)."""
    if text is None:
        return []
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text)]
    items = [t for t in items if t]
    bad = [t for t in items if not re.match(r"^[A-Za-z0-9-]+$", t)]
    if bad or not items:
        raise GanzipError(f"--gpus takes comma-separated device numbers such as 0,1,2,3, got {text!r}")
    if len(set(items)) != len(items):
        raise GanzipError(f"--gpus lists a device twice: {text!r}")
    return items


def plan_workers(gpus: Sequence[str], nproc_per_node: int = 1) -> list[dict[str, str]]:
    """One worker per group of `nproc_per_node` GPUs; each gets its CUDA_VISIBLE_DEVICES.

    No GPUs: one worker that leaves the environment alone.

    >>> plan_workers(["0", "1", "2", "3"], 2)
    [{'CUDA_VISIBLE_DEVICES': '0,1'}, {'CUDA_VISIBLE_DEVICES': '2,3'}]
    """
    if nproc_per_node < 1:
        raise GanzipError(f"--nproc-per-node must be at least 1, got {nproc_per_node}")
    if not gpus:
        return [{}]
    if len(gpus) % nproc_per_node:
        raise GanzipError(f"--gpus lists {len(gpus)} devices, which do not split into groups of "
                          f"--nproc-per-node {nproc_per_node}")
    return [{"CUDA_VISIBLE_DEVICES": ",".join(gpus[i:i + nproc_per_node])}
            for i in range(0, len(gpus), nproc_per_node)]


def job_argv(job: Job, out: Path, launcher: str = "subprocess", nproc_per_node: int = 1,
             python: str | None = None) -> list[str]:
    """The argument list that runs `job` in a new process (never through a shell).

    * subprocess: ``python -m ganzip compress ...``
    * torchrun:   ``python -m torch.distributed.run --standalone --nproc-per-node N -m ganzip compress ...``
      (the `torchrun` program, run by this interpreter; ``--standalone`` picks
      a free rendezvous port, so several jobs can run side by side).
    """
    python = python or sys.executable
    args = ["-m", "ganzip", "compress"] + job.compress_args(out)
    if launcher == "torchrun":
        return [python, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc_per_node)] + args
    if launcher == "subprocess":
        return [python] + args
    raise GanzipError(f"launcher {launcher!r} does not start processes: use subprocess or torchrun")


_ERROR_LINE = re.compile(r"^(?:\[[^\]]*\]:?\s*)?error: (.+)$")


def error_from_output(returncode: int, output: str) -> str:
    """The one-line reason a `ganzip compress` process failed, from its output."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for ln in reversed(lines):
        m = _ERROR_LINE.match(ln)
        if m:
            return m.group(1)
    for ln in reversed(lines):  # an unexpected exception: its last line is "Type: message"
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b", ln):
            return ln
    tail = lines[-1] if lines else "no output"
    return f"exit code {returncode}: {tail}"


# ====================================================================== results


@dataclass
class JobOutcome:
    """How one job ended: finished (ran now), skipped (finished earlier), failed, interrupted (stopped
    by the cluster; it resumes next run), or pending (not reached)."""

    job: Job
    status: str
    folder: Path
    error: str | None = None
    seconds: float | None = None
    row: dict = field(default_factory=dict)


@dataclass
class BatchResult:
    """What `run_batch` hands back: every job's outcome and the leaderboard files."""

    manifest: Path
    out: Path
    jobs: list[JobOutcome]
    leaderboard: dict[str, Path]

    def count(self, status: str) -> int:
        return sum(1 for j in self.jobs if j.status == status)

    @property
    def failed(self) -> list[JobOutcome]:
        return [j for j in self.jobs if j.status == "failed"]


def _job_state(job: Job, folder: Path) -> tuple[str, str | None]:
    """("done" | "changed" | "todo", message) for a job's folder."""
    from .engine import STUDENT, read_run_marker

    marker = read_run_marker(folder) if folder.is_dir() else None
    finished = marker is not None and marker.get("status") == "finished" and (folder / STUDENT).is_file()
    if not finished:
        return "todo", None
    done = folder / DONE_MARKER
    if done.is_file():
        try:
            info = json.loads(done.read_text())
        except (OSError, json.JSONDecodeError):
            info = {}
        if info.get("spec_hash") not in (None, job.spec_hash()):
            changed = sorted(k for k, v in job.spec().items() if info.get("spec", {}).get(k) != v)
            return "changed", (f"{folder} holds a finished run with other settings ({', '.join(changed) or 'spec'} "
                               "changed): delete that folder or rename the job to run it again")
    return "done", None


def _clean_batch_files(folder: Path) -> None:
    """Remove the batch's own files from a job folder; a same-named file ganzip did not write stops the job."""
    existing = rundir.check_replaceable(folder, BATCH_FILES, overwrite=True, what="batch", flag="job folder")
    rundir.remove_owned(folder, existing)
    if folder.is_dir() and {p.name for p in folder.iterdir()} <= set(rundir.BOOKKEEPING):
        for name in rundir.BOOKKEEPING:  # the engine starts afresh in a missing or empty folder
            with contextlib.suppress(FileNotFoundError):
                (folder / name).unlink()
        folder.rmdir()


def _write_batch_file(path: Path, text: str) -> None:
    """Write one of the batch's own files and note it in the folder's ledger (never over a user's file)."""
    if path.exists() and not rundir.owned(path.parent, path.name):
        return  # _clean_batch_files refused the job already; its error is in the leaderboard
    gio.atomic_write_text(path, text)
    rundir.record(path.parent, [path.name])


def _describe_exception(exc: BaseException) -> str:
    if isinstance(exc, GanzipError):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _run_inprocess(job: Job, folder: Path, quiet: bool) -> None:
    from .engine import compress

    result = compress(str(job.model), **job.compress_kwargs(folder), quiet=quiet)
    if result.student_path is None:
        raise GanzipError("the run stopped before its last step (no student was written)")


def _run_subprocess(argv: list[str], env_extra: Mapping[str, str], folder: Path) -> tuple[int, str]:
    env = {**os.environ, **env_extra}
    proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    _write_batch_file(folder / LOG_FILE, proc.stdout or "")
    return proc.returncode, proc.stdout or ""


def _execute(job: Job, folder: Path, mode: str, env_extra: Mapping[str, str], nproc_per_node: int,
             quiet: bool) -> tuple[str | None, str | None]:
    """Run one job; returns (error line, details for error.txt), both None on success."""
    try:
        _clean_batch_files(folder)
    except GanzipError as exc:
        return str(exc), None
    if mode == "inprocess":
        try:
            _run_inprocess(job, folder, quiet)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - a failed job is recorded, the batch goes on
            return _describe_exception(exc), traceback.format_exc()
        return None, None
    argv = job_argv(job, folder, mode, nproc_per_node)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        returncode, output = _run_subprocess(argv, env_extra, folder)
    except OSError as exc:
        return f"could not start {argv[0]}: {exc}", traceback.format_exc()
    if returncode != 0:
        details = "command: " + " ".join(argv) + "\n" + "".join(f"{k}={v}\n" for k, v in env_extra.items())
        return error_from_output(returncode, output), details + "\n" + output
    return None, None


def run_batch(manifest: str | os.PathLike | Manifest, out: str | os.PathLike | None = None, *,
              gpus: str | Sequence[str] | None = None, launcher: str = "auto", nproc_per_node: int = 1,
              latency: bool = True, latency_repeats: int = 5, latency_device: str = "cpu", quiet: bool = True,
              echo: Callable[[str], None] | None = None, trust_code: bool = False) -> BatchResult:
    """Run every job of a manifest and write the leaderboard.

    Args:
        manifest: a path (read with `load_manifest`) or a `Manifest`.
        out: output folder (overrides the manifest's `out`); each job writes into `out/<job name>`.
        gpus: "0,1,..." or a list: jobs spread over these GPUs, one worker per
            group of `nproc_per_node`, each pinned with CUDA_VISIBLE_DEVICES.
        launcher: "inprocess" (this process, one job after another), "subprocess"
            (`python -m ganzip compress` per job), "torchrun" (`torchrun
            --nproc-per-node N -m ganzip compress` per job) or "auto"
            (inprocess, or subprocess when `gpus` are given).
        latency, latency_repeats, latency_device: time every teacher and
            student for the leaderboard (median of repeats, after the jobs ran,
            one model at a time).
        quiet: no progress bars from the jobs.
        echo: called with one line per job event (the CLI prints them).
        trust_code: allow jobs whose arch is package.module:callable (see `load_manifest`).

    Jobs already finished are skipped; interrupted ones resume from their
    checkpoint; a failing job is recorded (its error line in the leaderboard,
    the traceback or process output in `out/<job>/error.txt`) and the run goes on.
    """
    m = manifest if isinstance(manifest, Manifest) else load_manifest(manifest, out, trust_code=trust_code)
    root = Path(out) if out is not None else m.out
    say = echo or (lambda _line: None)
    gpu_list = parse_gpus(gpus)
    if launcher not in LAUNCHERS:
        raise GanzipError(f"unknown launcher {launcher!r}: use {', '.join(LAUNCHERS)}")
    mode = launcher if launcher != "auto" else ("subprocess" if gpu_list else "inprocess")
    if mode == "inprocess" and gpu_list:
        raise GanzipError("--gpus runs jobs in separate processes: use --launcher subprocess or torchrun")
    if mode == "inprocess" and nproc_per_node != 1:
        raise GanzipError("--nproc-per-node needs --launcher torchrun")
    workers = plan_workers(gpu_list, nproc_per_node if mode == "torchrun" else 1)
    if latency_repeats < 0:
        raise GanzipError(f"--latency-repeats must be >= 0, got {latency_repeats}")

    rundir.check_path(root)
    rundir.check_replaceable(root, LEADERBOARD_FILES, overwrite=True, what="batch")  # before hours of jobs
    outcomes, todo = plan_jobs(m, root, say)

    def announce(oc: JobOutcome, env_extra: Mapping[str, str]) -> None:
        pinned = f" on GPU {env_extra['CUDA_VISIBLE_DEVICES']}" if env_extra else ""
        say(f"[run]  {oc.job.name}{pinned}")

    def run_one(oc: JobOutcome, env_extra: Mapping[str, str]) -> None:
        t0 = time.perf_counter()
        error, details = _execute(oc.job, oc.folder, mode, env_extra, nproc_per_node, quiet)
        oc.seconds = time.perf_counter() - t0
        if error is None:
            oc.status = "finished"
            record_finished(oc.job, oc.folder, oc.seconds)
            say(f"[done] {oc.job.name} ({oc.seconds:.0f} s)")
        else:
            oc.status, oc.error = "failed", error
            _write_batch_file(oc.folder / ERROR_FILE, f"{error}\n\n{details or ''}")
            say(f"[fail] {oc.job.name}: {error}")

    def finish(measure: bool) -> dict[str, Path]:
        repeats = latency_repeats if (latency and measure) else 0
        return finish_batch(outcomes, root, m.path, latency_repeats=repeats, latency_device=latency_device)

    try:
        if mode == "inprocess" or len(workers) == 1:
            for oc in todo:
                announce(oc, workers[0])
                run_one(oc, workers[0])
        else:
            _run_pool(todo, workers, announce, run_one)
    except KeyboardInterrupt:
        finish(measure=False)  # record what finished, quickly; unfinished jobs resume next time
        raise
    paths = finish(measure=True)
    return BatchResult(manifest=m.path, out=root, jobs=outcomes, leaderboard=paths)


def plan_jobs(m: Manifest, root: Path, say: Callable[[str], None]) -> tuple[list[JobOutcome], list[JobOutcome]]:
    """Every job's outcome, skipped and changed ones settled; returns (all outcomes, those still to run).

    Every launcher starts from this, so skipping finished jobs and refusing
    to reuse a finished run with other settings work the same on all of them.
    """
    outcomes = [JobOutcome(job=j, status="pending", folder=root / j.name) for j in m.jobs]
    todo: list[JobOutcome] = []
    for oc in outcomes:
        state, message = _job_state(oc.job, oc.folder)
        if state == "done":
            oc.status = "skipped"
            say(f"[skip] {oc.job.name}: finished earlier ({oc.folder})")
        elif state == "changed":
            oc.status, oc.error = "failed", message
            say(f"[fail] {oc.job.name}: {message}")
        else:
            todo.append(oc)
    return outcomes, todo


def record_finished(job: Job, folder: Path, seconds: float) -> None:
    """Write ``done.json``: the settings a finished job ran with (what later runs compare against)."""
    _write_batch_file(folder / DONE_MARKER, json.dumps({
        "name": job.name, "spec": job.spec(), "spec_hash": job.spec_hash(),
        "seconds": round(seconds, 2), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }, indent=2, default=str) + "\n")


def finish_batch(outcomes: Sequence[JobOutcome], root: Path, manifest: Path, *, latency_repeats: int = 0,
                 latency_device: str = "cpu") -> dict[str, Path]:
    """Measure every row from the files on disk and write the leaderboard (every launcher ends here)."""
    rows = leaderboard_rows(outcomes, latency=latency_repeats > 0, repeats=latency_repeats, device=latency_device)
    for oc, row in zip(outcomes, rows):
        oc.row = row
    return write_leaderboard(root, manifest, rows,
                             latency_info={"device": latency_device, "repeats": latency_repeats})


def _run_pool(todo: list[JobOutcome], workers: list[dict[str, str]],
              announce: Callable[[JobOutcome, Mapping[str, str]], None],
              run_one: Callable[[JobOutcome, Mapping[str, str]], None]) -> None:
    """Hand jobs, in manifest order, to whichever worker (GPU group) is free next.

    Each worker is a thread that starts one job process at a time with its
    CUDA_VISIBLE_DEVICES; taking the next job and announcing it happen under
    one lock, so jobs start in manifest order.
    """
    jobs: queue.Queue = queue.Queue()
    for oc in todo:
        jobs.put(oc)
    stop = threading.Event()
    dispatch = threading.Lock()

    def worker(env_extra: dict[str, str]) -> None:
        while not stop.is_set():
            with dispatch:
                try:
                    oc = jobs.get_nowait()
                except queue.Empty:
                    return
                announce(oc, env_extra)
            run_one(oc, env_extra)

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(timeout=0.5)
    except KeyboardInterrupt:
        stop.set()  # running jobs finish (their processes got the signal too); no new ones start
        raise


# ====================================================================== leaderboard


def _metric_columns(report: Mapping) -> dict[str, float]:
    """Student (and teacher) metrics from report.json as flat numbers: fid, lpips_to_teacher, ..."""
    out: dict[str, float] = {}
    metrics = report.get("metrics") if isinstance(report, Mapping) else None
    if not isinstance(metrics, Mapping):
        return out
    for who, prefix in (("student", ""), ("teacher", "teacher_")):
        table = metrics.get(who)
        if not isinstance(table, Mapping):
            continue
        for key, value in table.items():
            if isinstance(value, Mapping):
                value = value.get("mean")
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out[prefix + key] = float(value)
    training = report.get("training")
    if isinstance(training, Mapping) and isinstance(training.get("best_holdout"), Mapping):
        for key, value in training["best_holdout"].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out.setdefault(key if key.startswith("holdout") else f"holdout_{key}", float(value))
    return out


def leaderboard_rows(outcomes: Sequence[JobOutcome], latency: bool = True, repeats: int = 5,
                     device: str = "cpu") -> list[dict]:
    """One row per job: cost of teacher and student, metrics from report.json, status and error."""
    from .engine import STUDENT
    from .loading import load_generator
    from .metrics.cost import count_macs, count_params, measure_latency
    from .student import load_student

    teacher_cost: dict[tuple, dict] = {}
    rows = []
    for oc in outcomes:
        job = oc.job
        row: dict[str, Any] = {
            "job": job.name, "status": oc.status, "arch": job.arch or "", "width": job.width, "recipe": Path(job.recipe).stem
            if job.recipe.endswith(".toml") else job.recipe, "size": job.image_size,
        }
        if job.group is not None:
            row.update({"seed": job.seed, "group": job.group})
        if oc.status in ("finished", "skipped"):
            try:
                key = (str(job.model), job.arch, json.dumps(job.arch_opts, sort_keys=True), job.image_size)
                if key not in teacher_cost:
                    teacher = load_generator(str(job.model), arch=job.arch, arch_opts=job.arch_opts, device="cpu")
                    teacher_cost[key] = _cost(teacher, job.image_size, latency, repeats, device,
                                              count_macs, count_params, measure_latency)
                    teacher_cost[key]["arch"] = (getattr(teacher, "ganzip_spec", None) or {}).get("arch", "")
                if not row["arch"]:  # a generator file that records its architecture
                    row["arch"] = teacher_cost[key]["arch"]
                # module:callable jobs exist only in a manifest the user trusted with --trust-code
                student = load_student(oc.folder / STUDENT, arch=job.arch, arch_opts=job.arch_opts, trust_code=True)
                s = _cost(student, job.image_size, latency, repeats, device, count_macs, count_params, measure_latency)
                t = teacher_cost[key]
                row.update({
                    "teacher_macs": t["macs"], "student_macs": s["macs"], "macs_ratio": t["macs"] / s["macs"],
                    "teacher_params": t["params"], "student_params": s["params"],
                    "params_ratio": t["params"] / s["params"],
                    "teacher_latency_ms": t["latency_ms"], "student_latency_ms": s["latency_ms"],
                    "speedup": (t["latency_ms"] / s["latency_ms"]) if t["latency_ms"] and s["latency_ms"] else None,
                })
            except Exception as exc:  # noqa: BLE001 - the leaderboard is written whatever one row does
                row["error"] = f"could not measure cost: {_describe_exception(exc)}"
            report_path = oc.folder / "report.json"
            if report_path.is_file():
                try:
                    row.update(_metric_columns(json.loads(report_path.read_text())))
                except (OSError, json.JSONDecodeError):
                    row["error"] = f"{report_path} is unreadable"
            row["student"] = str(oc.folder / STUDENT)
            if latency:  # exported files beside the student (ganzip export): one latency column per backend
                from .backends import latency_columns

                row.update(latency_columns(oc.folder / STUDENT, job.image_size, threads=1, repeats=repeats))
        if oc.seconds is not None:
            row["seconds"] = round(oc.seconds, 1)
        if oc.error:
            row["error"] = oc.error
        rows.append(row)
    return rows


def _cost(model, size, latency, repeats, device, count_macs, count_params, measure_latency) -> dict:
    from .devices import resolve_device

    out = {"macs": count_macs(model.cpu(), size), "params": count_params(model), "latency_ms": None}
    if latency:
        dev = resolve_device(device)
        out["latency_ms"] = measure_latency(model.to(dev), size, dev, warmup=1, repeats=repeats)
        model.cpu()
    return out


_FIXED = ["job", "status", "arch", "width", "recipe", "size", "seed", "teacher_macs", "student_macs", "macs_ratio",
          "teacher_params", "student_params", "params_ratio", "teacher_latency_ms", "student_latency_ms", "speedup"]
_PREFERRED = ["fid", "delta_fid", "kid_mean", "lpips_to_teacher", "psnr_to_teacher", "ssim_to_teacher",
              "lpips_to_target", "psnr_to_target", "ssim_to_target", "teacher_fid", "holdout_psnr"]
_TAIL = ["seconds", "student", "error"]
_HIDDEN = {"group"}  # in leaderboard.json's rows, not a column
_NOT_AGGREGATED = {"job", "status", "arch", "width", "recipe", "size", "seed", "student", "error"}


def leaderboard_columns(rows: Sequence[Mapping]) -> list[str]:
    present = {k for r in rows for k in r} - _HIDDEN
    metrics = [k for k in _PREFERRED if k in present]
    metrics += sorted(present - set(_FIXED) - set(_PREFERRED) - set(_TAIL))
    return [c for c in _FIXED if c in present or c in ("job", "status")] + metrics + [c for c in _TAIL if c in present]


def _fmt(key: str, value: Any) -> str:
    if value is None or value == "":
        return "-"
    if key.endswith("_macs"):
        return f"{value / 1e9:.3f}G" if value >= 1e8 else f"{value / 1e6:.2f}M"
    if key.endswith("_params"):
        return f"{value:,}"
    if key.endswith("_ratio") or key == "speedup":
        return f"{value:.2f}x"
    if key.endswith("latency_ms"):
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def mean_std(values: Sequence[float]) -> dict:
    """Mean and sample standard deviation (n - 1; None for one value) of per-seed values."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"mean": mean, "std": std, "n": n}


def seed_groups(rows: Sequence[Mapping], columns: Sequence[str]) -> list[dict]:
    """Jobs expanded from `seeds`: every numeric column's mean ± std over the group's finished seeds."""
    groups: dict[str, list[Mapping]] = {}
    for r in rows:
        if r.get("group") is not None:
            groups.setdefault(r["group"], []).append(r)
    out = []
    for name, members in groups.items():
        done = [r for r in members if r["status"] in ("finished", "skipped")]
        metrics = {}
        for key in columns:
            if key in _NOT_AGGREGATED:
                continue
            values = [float(r[key]) for r in done if isinstance(r.get(key), (int, float))
                      and not isinstance(r.get(key), bool) and math.isfinite(r[key])]
            if values:
                metrics[key] = mean_std(values)
        out.append({"job": name, "seeds": [r["seed"] for r in done], "count": len(done),
                    "not_finished": [r["seed"] for r in members if r not in done], "metrics": metrics})
    return out


def _pm(key: str, entry: Mapping | None) -> str:
    if not entry:
        return "-"
    text = _fmt(key, entry["mean"])
    return text if entry["std"] is None else f"{text} ± {_fmt(key, entry['std'])}"


def write_leaderboard(out: Path, manifest: Path, rows: Sequence[Mapping], latency_info: Mapping) -> dict[str, Path]:
    """Write leaderboard.json, .csv and .md into `out` (and leaderboard_seeds.csv for `seeds`); returns their paths."""
    columns = leaderboard_columns(rows)
    paths = {"json": out / "leaderboard.json", "csv": out / "leaderboard.csv", "md": out / "leaderboard.md"}
    rundir.check_replaceable(out, LEADERBOARD_FILES, overwrite=True, what="batch")
    counts = {s: sum(1 for r in rows if r["status"] == s)
              for s in ("finished", "skipped", "failed", "interrupted", "pending")}
    groups = seed_groups(rows, columns)
    gio.atomic_write_json(paths["json"], {
        "manifest": str(manifest), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "counts": counts,
        "latency": dict(latency_info), "columns": columns, "jobs": list(rows),
        **({"over_seeds": groups} if groups else {}),
    })
    agg_cols = [c for c in columns if c not in _NOT_AGGREGATED and any(c in g["metrics"] for g in groups)]
    if groups:
        paths["seeds_csv"] = out / "leaderboard_seeds.csv"
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["job", "seeds"] + [f"{c}_{k}" for c in agg_cols for k in ("mean", "std")])
        for g in groups:
            cells: list[Any] = [g["job"], g["count"]]
            for c in agg_cols:
                e = g["metrics"].get(c)
                cells += ["" if e is None else e["mean"], "" if e is None or e["std"] is None else e["std"]]
            writer.writerow(cells)
        gio.atomic_write_text(paths["seeds_csv"], buf.getvalue())
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    gio.atomic_write_text(paths["csv"], buf.getvalue())

    md_cols = [c for c in columns if c not in ("student", "error")]
    lines = [f"# Leaderboard: {manifest.name}", "",
             f"{counts['finished']} finished now, {counts['skipped']} finished earlier, {counts['failed']} failed"
             + (f", {counts['interrupted']} interrupted (they resume next run)" if counts["interrupted"] else "")
             + (f", {counts['pending']} not run" if counts["pending"] else "") + ".", ""]
    if latency_info.get("repeats"):
        lines += [f"Latency: median of {latency_info['repeats']} forward passes of one image at each job's size, "
                  f"on {latency_info['device']}, measured after the jobs ran, one model at a time.", ""]
    lines.append("| " + " | ".join(md_cols) + " |")
    lines.append("|" + "|".join("---" if c in ("job", "status", "arch", "recipe") else "---:" for c in md_cols) + "|")
    for r in rows:
        lines.append("| " + " | ".join(_fmt(c, r.get(c)) for c in md_cols) + " |")
    if groups:
        md_agg = [c for c in agg_cols if c not in ("student", "error")]
        lines += ["", "## Mean ± std over seeds", "",
                  "Each job run with `seeds`: the mean and the sample standard deviation (n − 1) over its "
                  "finished seeds.", "",
                  "| job | seeds | " + " | ".join(md_agg) + " |",
                  "|---|---:|" + "|".join("---:" for _ in md_agg) + "|"]
        for g in groups:
            n = f"{g['count']}" + (f" ({len(g['not_finished'])} not finished)" if g["not_finished"] else "")
            lines.append(f"| {g['job']} | {n} | " + " | ".join(_pm(c, g["metrics"].get(c)) for c in md_agg) + " |")
    failed = [r for r in rows if r.get("error")]
    if failed:
        lines += ["", "## Errors", ""]
        lines += [f"- **{r['job']}**: {_fmt('error', r['error'])}" for r in failed]
    gio.atomic_write_text(paths["md"], "\n".join(lines) + "\n")
    rundir.record(out, LEADERBOARD_FILES)
    return paths


__all__ = [
    "BatchResult", "Job", "JobOutcome", "Manifest", "TomlLocator", "error_from_output", "job_argv",
    "finish_batch", "leaderboard_rows", "load_manifest", "overrides_from", "parse_gpus", "plan_jobs", "plan_workers",
    "record_finished", "run_batch", "write_leaderboard",
]

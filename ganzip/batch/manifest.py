"""Batch manifests: the schema, the `Job` each entry becomes, and reading with ``file:line`` errors.

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
the manifest line of each problem (`ganzip.batch.schema` holds the
keys and the `Job` each entry becomes).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .. import models, trust
from ..data import is_builtin
from ..data.procedural import get_task
from ..errors import GanzipError
from ..loading import parse_arch_opts
from ..recipes import resolve_recipe
from ..tomltext import toml_value, tomllib
from .schema import TOP_KEYS, JOB_KEYS, Job, Manifest, Reader, check_table, resolve_path, suggest, width_label

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


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
                    out.append(f"{full}={toml_value(val)}")
                except TypeError:
                    raise ValueError(f"{full}: a {type(val).__name__} cannot be a recipe value") from None

    walk("", value)
    return out


# ====================================================================== reading


def _read(path: Path) -> tuple[str, dict]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GanzipError(f"no such manifest: {path}") from None
    except IsADirectoryError:
        raise GanzipError(f"{path} is a folder: give the manifest's .toml file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GanzipError(f"cannot read manifest {path}: {exc}") from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GanzipError(f"{path} is not valid TOML: {exc}") from None


def _check_top(reader: Reader, doc: Mapping) -> tuple[dict, list]:
    """The manifest's [defaults] and [[job]] entries, their shapes checked."""
    for key in doc:
        if key not in TOP_KEYS:
            raise reader.error((key,), f"unknown top-level key {key!r}{suggest(key, TOP_KEYS)}; "
                                       "a manifest has [defaults], [[job]] entries and an optional out")
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise reader.error(("defaults",), "defaults must be a table: write [defaults] (single brackets)")
    check_table(reader, defaults, ("defaults",), "[defaults]", [k for k in JOB_KEYS if k != "name"])
    entries = doc.get("job", [])
    if isinstance(entries, dict):
        raise reader.error(("job",), "jobs are an array of tables: write [[job]] (double brackets) above each job")
    if not isinstance(entries, list) or not entries:
        raise reader.error(("job",) if "job" in doc else (), "the manifest has no jobs: add [[job]] tables")
    if "out" in doc and not isinstance(doc["out"], str):
        raise reader.error(("out",), f"out must be a folder path, got {doc['out']!r}")
    return defaults, entries


def _check_entry(reader: Reader, entry: Any, index: int) -> None:
    where = ("job", index)
    if not isinstance(entry, dict):
        raise reader.error(where, f"job {index + 1} is not a table")
    check_table(reader, entry, where, f"job {index + 1}", list(JOB_KEYS))
    name = entry.get("name")
    if name is None:
        raise reader.error(where, f"job {index + 1} has no name: add name = \"...\" (it names the job's folder)")
    if not _NAME_RE.match(name):
        raise reader.error(where + ("name",), f"job name {name!r} may use only letters, digits, '.', '_', '+' "
                                              "and '-': it becomes a folder name ('@' is added by width "
                                              "expansion: name@w0.25)")


def load_manifest(path: str | os.PathLike, out: str | os.PathLike | None = None, *, trust_code: bool = False) -> Manifest:
    """Read and check a manifest; expand multi-width and multi-seed jobs. Raises GanzipError naming the line.

    A job whose `arch` is `package.module:callable` imports and runs that code;
    it is refused unless `trust_code` is set (`--trust-code`, docs/security.md).

    Relative paths (models, data, targets, .toml recipes, `out`) resolve
    against the manifest's folder. `out` overrides the manifest's `out`
    (default: ``<manifest folder>/<manifest name>-runs``).
    """
    path = Path(path)
    text, doc = _read(path)
    reader = Reader(path, text, trust_code)
    base = path.resolve().parent
    defaults, entries = _check_top(reader, doc)
    root = Path(out) if out is not None else resolve_path(base, doc["out"] if "out" in doc else f"{path.stem}-runs")
    jobs: list[Job] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        _check_entry(reader, entry, index)
        for job in expand(reader, base, defaults, entry, index):
            if job.name in seen:
                raise reader.error(("job", index, "name"), f"duplicate job name {job.name!r} (also job "
                                                           f"{seen[job.name] + 1}): job names must be unique")
            seen[job.name] = index
            jobs.append(job)
    return Manifest(path=path, jobs=jobs, out=root)


# ====================================================================== one entry -> its jobs


@dataclass
class _Entry:
    """One [[job]] entry being expanded: its table, the defaults merged in, and where each key came from."""

    reader: Reader
    base: Path
    defaults: Mapping
    entry: Mapping
    index: int
    merged: dict

    @property
    def where(self) -> tuple:
        return ("job", self.index)

    @property
    def what(self) -> str:
        return f"job {self.entry['name']!r}"

    def origin(self, key: str) -> tuple:
        """The location of `key`: the job's own, or the defaults' it inherited."""
        return self.where + (key,) if key in self.entry else ("defaults", key)

    def error(self, key_or_where: str | tuple, message: str) -> GanzipError:
        where = self.origin(key_or_where) if isinstance(key_or_where, str) else key_or_where
        return self.reader.error(where, f"{self.what}{message}")


def _merge(defaults: Mapping, entry: Mapping) -> dict:
    """The job's keys over the defaults'; run length, widths and seeds replace the defaults' as a whole."""
    merged = dict(defaults)
    for group in (("steps", "epochs"), ("width", "widths"), ("seed", "seeds")):
        if any(k in entry for k in group):
            for k in group:
                merged.pop(k, None)
    for key, value in entry.items():
        if key in ("set", "arch_opts") and key in merged:
            continue  # merged by _overrides and _arch_opts
        merged[key] = value
    return merged


def _overrides(e: _Entry) -> list[str]:
    """The defaults' `set`, then the job's."""
    overrides: list[str] = []
    for source, where in ((e.defaults, ("defaults", "set")), (e.entry, e.where + ("set",))):
        if "set" in source:
            try:
                overrides += overrides_from(source["set"])
            except ValueError as exc:
                raise e.error(where, f": set: {exc}") from None
    return overrides


def _arch_opts(e: _Entry) -> dict[str, Any]:
    """The defaults' `arch_opts`, updated by the job's."""
    arch_opts: dict[str, Any] = {}
    for source, where in ((e.defaults, ("defaults", "arch_opts")), (e.entry, e.where + ("arch_opts",))):
        if "arch_opts" in source:
            try:
                arch_opts.update(parse_arch_opts(source["arch_opts"]))
            except GanzipError as exc:
                raise e.error(where, f": arch_opts: {exc}") from None
    return arch_opts


def _files(e: _Entry) -> tuple[Path, str, Path | None]:
    """The teacher, the data (a folder or builtin:NAME) and the target folder, each checked to exist."""
    for key in ("model", "data"):
        if key not in e.merged:
            raise e.error(e.where, f" has no {key}: add {key} = \"...\" to the job or to [defaults]")
    if "steps" in e.merged and "epochs" in e.merged:
        raise e.error("epochs", ": give steps or epochs, not both")
    model = resolve_path(e.base, e.merged["model"])
    if not model.is_file():
        raise e.error("model", f": model file {model} does not exist")
    data = e.merged["data"]
    if not is_builtin(data):
        data_path = resolve_path(e.base, data)
        if not data_path.exists():
            raise e.error("data", f": data folder {data_path} does not exist "
                                  "(give a folder, or builtin:NAME for a built-in task)")
        data = str(data_path)
    else:
        try:
            get_task(data)
        except GanzipError as exc:
            raise e.error("data", f": {exc}") from None
    target = None
    if "target" in e.merged:
        target = resolve_path(e.base, e.merged["target"])
        if not target.exists():
            raise e.error("target", f": target folder {target} does not exist")
    return model, data, target


def _arch(e: _Entry, arch_opts: Mapping[str, Any]) -> str | None:
    """The architecture: a zoo name with known options, or package.module:callable allowed by --trust-code."""
    arch = e.merged.get("arch")
    if arch is None:
        return None
    if not isinstance(arch, str) or not arch:
        raise e.error("arch", f": arch must be a zoo name or package.module:callable, got {arch!r}")
    if ":" in arch:
        try:  # a manifest often comes from someone else: its code runs only with the user's --trust-code
            trust.check_name(arch, trust.Origin(source=f"manifest {e.reader.path.name}"))
        except GanzipError as exc:
            raise e.error("arch", f": {exc}") from None
        if not e.reader.trust_code:
            raise e.error("arch", f": arch = {arch!r} imports and runs code named by this manifest"
                                  + (f" with options {dict(arch_opts)}" if arch_opts else "")
                                  + "; check it, then pass --trust-code to allow it")
        return arch
    if arch not in models.list_models():
        raise e.error("arch", f": unknown architecture {arch!r}{suggest(arch, models.list_models())}; "
                              f"choose one of {', '.join(models.list_models('generator'))} "
                              "or package.module:callable")
    valid = models.model_options(arch)
    bad = sorted(set(arch_opts) - set(valid))
    if bad:
        raise e.error("arch_opts", f": {arch} has no option {', '.join(bad)}; valid options: {', '.join(valid)}")
    return arch


def _recipe(e: _Entry, overrides: list[str]) -> tuple[str, int]:
    """The recipe (a name, or a .toml path resolved) and the image size it trains at with the overrides."""
    recipe = e.merged.get("recipe", "crd")
    if recipe.endswith(".toml"):
        recipe_path = resolve_path(e.base, recipe)
        if not recipe_path.is_file():
            raise e.error("recipe", f": recipe file {recipe_path} does not exist")
        recipe = str(recipe_path)
    try:
        resolve_recipe(recipe)
    except GanzipError as exc:
        raise e.error("recipe", f": {exc}") from None
    size = e.merged.get("size")
    try:
        cfg = resolve_recipe(recipe, overrides + ([f"train.size={size}"] if size is not None else []))
    except GanzipError as exc:
        where_set = e.where + ("set",) if "set" in e.entry else ("defaults", "set")
        raise e.error(where_set if overrides else e.origin("size"), f": {exc}") from None
    return recipe, cfg.train.size


def _check_scalars(e: _Entry) -> None:
    """Counts at least 1, seeds and intervals at least 0, a known device and init."""
    for key in ("steps", "epochs", "size", "batch_size", "round_to"):
        if key in e.merged and e.merged[key] < 1:
            raise e.error(key, f": {key} must be at least 1, got {e.merged[key]}")
    for key in ("seed", "checkpoint_every", "eval_every"):
        if key in e.merged and e.merged[key] < 0:
            raise e.error(key, f": {key} must be >= 0, got {e.merged[key]}")
    if not _DEVICE_RE.match(e.merged.get("device", "auto")):
        raise e.error("device", f": device must be auto, cpu or cuda[:N], got {e.merged['device']!r}")
    if e.merged.get("init", "scratch") not in ("scratch", "inherit"):
        raise e.error("init", f": init must be scratch or inherit, got {e.merged['init']!r}")


def _widths(e: _Entry) -> list[float]:
    if "widths" in e.merged:
        widths, key = e.merged["widths"], "widths"
        if not widths:
            raise e.error(key, ": widths is empty")
    else:
        widths, key = [e.merged.get("width", 0.25)], "width"
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not (0 < w <= 1):
            raise e.error(key, f": each width must be a number in (0, 1], got {w!r}")
    if len(set(widths)) != len(widths):
        raise e.error(key, f": widths has repeated values {widths}")
    return widths


def _seeds(e: _Entry) -> list[int | None]:
    if "seed" in e.merged and "seeds" in e.merged:
        raise e.error("seeds", ": give seed or seeds, not both")
    if "seeds" not in e.merged:
        return [e.merged.get("seed")]
    seeds = e.merged["seeds"]
    if not seeds:
        raise e.error("seeds", ": seeds is empty: list at least one seed, e.g. seeds = [0, 1, 2]")
    for sd in seeds:
        if isinstance(sd, bool) or not isinstance(sd, int) or sd < 0:
            raise e.error("seeds", f": each seed must be a non-negative integer, got {sd!r}")
    if len(set(seeds)) != len(seeds):
        raise e.error("seeds", f": seeds has repeated values {seeds}")
    return seeds


def expand(reader: Reader, base: Path, defaults: Mapping, entry: Mapping, index: int) -> list[Job]:
    """One [[job]] entry -> one `Job` per width and seed, every setting checked (errors name the line)."""
    e = _Entry(reader, base, defaults, entry, index, _merge(defaults, entry))
    overrides, arch_opts = _overrides(e), _arch_opts(e)
    model, data, target = _files(e)
    arch = _arch(e, arch_opts)
    recipe, image_size = _recipe(e, overrides)
    _check_scalars(e)
    widths, seeds = _widths(e), _seeds(e)
    m = e.merged
    jobs = []
    for w in widths:
        group = entry["name"] if len(widths) == 1 else f"{entry['name']}@{width_label(w)}"
        for sd in seeds:
            jobs.append(Job(
                name=f"{group}@s{sd}" if "seeds" in m else group, model=model, data=data, width=float(w), arch=arch,
                arch_opts=arch_opts, target=target, recipe=recipe, overrides=overrides, steps=m.get("steps"),
                epochs=m.get("epochs"), size=m.get("size"), batch_size=m.get("batch_size"), seed=sd,
                device=m.get("device", "auto"), init=m.get("init", "scratch"), round_to=m.get("round_to", 1),
                checkpoint_every=m.get("checkpoint_every"), eval_every=m.get("eval_every"),
                line=reader.loc.line(*e.where), image_size=image_size, group=group if "seeds" in m else None,
            ))
    return jobs


__all__ = ["JOB_KEYS", "Job", "Manifest", "expand", "load_manifest", "overrides_from", "width_label"]

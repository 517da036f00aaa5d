"""Recipes: named, data-only training configurations.

A recipe is a TOML table of sections (``[train]``, ``[crd]``,
``[perceptual]``, ``[adversarial]``, ``[discriminator]``, ...) whose keys are
the fields of :mod:`ganzip.config`. Built-in presets live in
``ganzip/presets/*.toml`` (the repository's top-level ``recipes/`` points
there). A preset may say ``extends = "crd"`` to start from another recipe.

Three ways to add a recipe, all data, never executed configuration:

* ``register_recipe("name", path_to_toml)`` or the decorator form
  ``@register_recipe("name")`` on a function returning a dict;
* an installed package's entry point in the ``ganzip.recipes`` group whose
  object is a path (str/Path) to a TOML file or a function returning a dict;
* a path to a TOML file given where a recipe name is expected.

``resolve_recipe(name, overrides)`` merges the chain, applies ``--set
section.key=value`` overrides (right-hand sides parsed as TOML values) and
returns a typed :class:`~ganzip.config.RecipeConfig`.
"""
from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any, Callable, Iterable

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from . import losses as _losses  # noqa: F401  (registers the loss terms' sections: gc_feature, features...)
from .config import SECTIONS, RecipeConfig, coerce_value, config_from_dict, section_keys, valid_keys
from .errors import GanzipError
from .tomltext import toml_value as _toml_value
from .values import parse_value

ENTRY_POINT_GROUP = "ganzip.recipes"


@dataclass(frozen=True)
class RecipeSource:
    """Where a recipe comes from and how to read its data."""

    name: str
    load: Callable[[], dict]
    origin: str


_REGISTRY: dict[str, RecipeSource] = {}
_DISCOVERED = False


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise GanzipError(f"recipe file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise GanzipError(f"recipe file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise GanzipError(f"cannot read recipe file {path}: {exc.strerror or exc}") from None


def register_recipe(name: str, source: str | Path | Callable[[], dict] | None = None, *, origin: str | None = None):
    """Register a recipe under ``name``.

    ``source`` is a TOML path or a function returning the recipe dict. Without
    ``source`` this is a decorator for such a function::

        @register_recipe("my-crd")
        def my_crd():
            return {"extends": "crd", "crd": {"weight": 10.0}}
    """
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise GanzipError(f"recipe names are non-empty words, got {name!r}")

    def _add(src):
        if callable(src):
            fn = src
            label = origin or f"function {getattr(src, '__module__', '?')}.{getattr(src, '__qualname__', '?')}"
            _REGISTRY[name] = RecipeSource(name, lambda: _call_recipe_fn(name, fn), label)
        else:
            path = Path(src)
            _REGISTRY[name] = RecipeSource(name, lambda: _read_toml(path), origin or str(path))
        return src

    if source is None:
        return _add
    _add(source)
    return source


def _call_recipe_fn(name: str, fn: Callable[[], Any]) -> dict:
    data = fn()
    if isinstance(data, (str, Path)):
        return _read_toml(Path(data))
    if not isinstance(data, dict):
        raise GanzipError(f"recipe {name!r}: its function returned {type(data).__name__}, expected a dict")
    return copy.deepcopy(data)


def presets_dir() -> Path:
    """The folder holding the built-in ``*.toml`` presets."""
    return Path(str(resources.files("ganzip") / "presets"))


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    for path in sorted(presets_dir().glob("*.toml")):
        _REGISTRY.setdefault(path.stem, RecipeSource(path.stem, (lambda p=path: _read_toml(p)), f"builtin {path.name}"))
    try:
        eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception:  # a broken installed distribution must not break ganzip
        eps = ()
    for ep in eps:
        if ep.name in _REGISTRY:
            warnings.warn(f"recipe entry point {ep.name!r} ({ep.value}) is shadowed by an existing recipe", stacklevel=2)
            continue
        _REGISTRY[ep.name] = RecipeSource(ep.name, (lambda ep=ep: _load_entry_point(ep)), f"entry point {ep.value}")


def _load_entry_point(ep) -> dict:
    try:
        obj = ep.load()
    except Exception as exc:
        raise GanzipError(f"recipe entry point {ep.name!r} ({ep.value}) failed to load: {exc}") from None
    if isinstance(obj, (str, Path)):
        return _read_toml(Path(obj))
    if callable(obj):
        return _call_recipe_fn(ep.name, obj)
    raise GanzipError(f"recipe entry point {ep.name!r} must name a TOML path or a function returning a dict")


def list_recipes() -> list[str]:
    """Names of all registered recipes (built-in, registered, entry points), sorted."""
    _discover()
    return sorted(_REGISTRY)


def recipe_info(name: str) -> dict:
    """``{"name", "description", "origin"}`` for a registered recipe."""
    _discover()
    src = _get_source(name)
    try:
        description = _merged(name, ()).get("description", "")
    except GanzipError as exc:  # a broken third-party recipe must not hide the others
        description = f"(unusable: {exc})"
    return {"name": name, "description": str(description), "origin": src.origin}


def _get_source(name: str) -> RecipeSource:
    _discover()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.endswith(".toml"):
        path = Path(name)
        return RecipeSource(path.stem, lambda: _read_toml(path), str(path))
    raise GanzipError(f"unknown recipe {name!r}; valid recipes: {', '.join(list_recipes())} (or a path to a .toml file)")


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _merged(name: str, chain: tuple[str, ...]) -> dict:
    if name in chain:
        raise GanzipError(f"recipe {name!r} extends itself: {' -> '.join(chain + (name,))}")
    data = _get_source(name).load()
    if not isinstance(data, dict):
        raise GanzipError(f"recipe {name!r} is not a table of sections")
    parent = data.get("extends")
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise GanzipError(f"recipe {name!r}: extends must be a recipe name, got {parent!r}")
    return _deep_merge(_merged(parent, chain + (name,)), data)


# ---------------------------------------------------------------- --set


def _split_list(text: str) -> list[str]:
    body = text.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    items = [item.strip().strip("'\"").strip() for item in body.split(",")]
    return [item for item in items if item]


def parse_override(text: str) -> tuple[str, str, Any]:
    """Split ``section.key=value`` into ``(section, key, typed_value)``.

    Raises GanzipError (listing the valid keys) for an unknown key and for a
    value that does not fit the key's type.
    """
    if not isinstance(text, str):
        raise GanzipError(f"--set expects section.key=value, got {type(text).__name__}")
    key, sep, rhs = text.partition("=")
    if not sep:
        raise GanzipError(f"--set expects section.key=value, got {text[:60]!r}")
    key = key.strip()
    section, dot, sub = key.partition(".")
    if not dot or section not in SECTIONS or sub not in section_keys(section):
        raise GanzipError(f"unknown recipe key {key[:60]!r}; valid keys: {', '.join(valid_keys())}")
    hint = section_keys(section)[sub]
    value = parse_value(rhs)
    if hint is str and not isinstance(value, str):
        value = rhs.strip()  # e.g. --set perceptual.weights=2024-01-01.pth parses as a date
    elif getattr(hint, "__origin__", None) is list and isinstance(value, str):
        value = _split_list(value)  # --set discriminator.fakes=teacher,student
    return section, sub, coerce_value(key, value, hint)


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    """Return a copy of the recipe dict with each ``section.key=value`` applied in order."""
    out = copy.deepcopy(data)
    if isinstance(overrides, str):
        overrides = [overrides]
    for item in overrides:
        section, key, value = parse_override(item)
        table = out.setdefault(section, {})
        if not isinstance(table, dict):
            raise GanzipError(f"recipe section [{section}] must be a table")
        table[key] = value
    return out


def resolve_recipe(name: str | RecipeConfig = "crd", overrides: Iterable[str] = ()) -> RecipeConfig:
    """Resolve a recipe name (or TOML path) plus ``--set`` overrides into a typed config.

    >>> cfg = resolve_recipe("crd", ["crd.weight=10", "train.steps=100"])
    >>> cfg.crd.weight, cfg.train.steps
    (10.0, 100)
    """
    if isinstance(name, RecipeConfig):
        data = name.to_dict()
        label = name.name
    else:
        data = _merged(name, ())
        label = _get_source(name).name
    data = apply_overrides(data, overrides)
    data.pop("extends", None)
    data["name"] = label
    return config_from_dict(data)


# ---------------------------------------------------------------- output


def to_toml(cfg: RecipeConfig | dict) -> str:
    """Write a resolved recipe as TOML (``tomllib.loads`` reads it back to the same dict)."""
    data = cfg.to_dict() if isinstance(cfg, RecipeConfig) else cfg
    lines = []
    tables = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for key, table in tables:
        lines.append("")
        lines.append(f"[{key}]")
        for sub, value in table.items():
            lines.append(f"{sub} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def to_json(cfg: RecipeConfig) -> str:
    """The resolved recipe as indented JSON."""
    return json.dumps(cfg.to_dict(), indent=2) + "\n"


__all__ = [
    "ENTRY_POINT_GROUP",
    "RecipeConfig",
    "apply_overrides",
    "list_recipes",
    "parse_override",
    "parse_value",
    "presets_dir",
    "recipe_info",
    "register_recipe",
    "resolve_recipe",
    "to_json",
    "to_toml",
]

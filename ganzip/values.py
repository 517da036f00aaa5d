"""Typed values from ``key=value`` command-line text: the one parser for ``--set`` and ``--arch-opt``.

Both flags read the right-hand side of ``key=value`` into a Python value, in one
of two styles that keep what each flag has always accepted:

* ``TOML`` (``--set``, batch manifests): the text is a TOML value (``3``,
  ``2.5e-4``, ``true``, ``[1, 2]``, ``"x"``); anything else is the bare
  string, stripped, so ``--set adversarial.mode=hinge`` needs no quotes.
* ``OPTION`` (``--arch-opt``): the words ``true/yes/on`` and ``false/no/off``
  in any case are booleans, Python's ``int()`` and ``float()`` literals are
  numbers, and anything else is the text as given (``none`` stays a string).
"""
from __future__ import annotations

from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from .errors import GanzipError

TOML = "toml"
OPTION = "option"
STYLES = (TOML, OPTION)
TRUE_WORDS = ("true", "yes", "on")
FALSE_WORDS = ("false", "no", "off")


def parse_value(text: str, style: str = TOML) -> Any:
    """Parse the right-hand side of ``key=value`` in ``style`` (:data:`TOML` or :data:`OPTION`).

    TOML: ``3`` -> 3, ``2.5e-4`` -> 0.00025, ``true`` -> True, ``[1, 2]`` -> [1, 2],
    ``"x"`` -> 'x', ``hinge`` -> 'hinge'. OPTION: ``3`` -> 3, ``0.5`` -> 0.5,
    ``Yes`` -> True, ``none`` -> 'none'.
    """
    if style == OPTION:
        return _option_value(text)
    if style != TOML:
        raise ValueError(f"unknown value style {style!r}: use one of {STYLES}")
    return _toml_value(text)


def _toml_value(text: str) -> Any:
    if not isinstance(text, str):
        raise GanzipError(f"--set values are strings, got {type(text).__name__}")
    text = text.strip()
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise GanzipError("--set values may not contain control characters (newlines, tabs, ...)")
    if not text:
        return ""
    try:
        doc = tomllib.loads(f"v = {text}")
    except Exception:  # TOMLDecodeError, and ValueError/RecursionError on pathological input
        return text
    if set(doc) != {"v"}:
        return text
    return doc["v"]


def _option_value(text: str) -> Any:
    low = text.strip().lower()
    if low in TRUE_WORDS:
        return True
    if low in FALSE_WORDS:
        return False
    return number_or_text(text)


def number_or_text(text: str) -> Any:
    """``text`` as an int, else a float, else unchanged (a CSV cell, an option's value)."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text

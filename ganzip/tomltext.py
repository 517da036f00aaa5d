"""TOML as text: the reader (tomllib, or tomli on Python 3.10) and the one writer of a single value.

`toml_value` writes the right-hand side of ``key = VALUE`` (or of ``--set
section.key=VALUE``), so that ``tomllib`` reads back the same value.
"""
from __future__ import annotations

import json
from typing import Any

from .errors import GanzipError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


class TomlValueError(GanzipError, TypeError):
    """A value TOML cannot hold (a dict, None, an object): raised by `toml_value`."""


def toml_value(value: Any) -> str:
    """A scalar or a list of them as TOML text.

    >>> toml_value(0.5), toml_value(True), toml_value("a\\"b"), toml_value([1, float("inf")])
    ('0.5', 'true', '"a\\\\"b"', '[1, inf]')
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # inf, -inf and nan are TOML's spellings too
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TomlValueError(f"cannot write {type(value).__name__} as TOML")


__all__ = ["TomlValueError", "toml_value", "tomllib"]

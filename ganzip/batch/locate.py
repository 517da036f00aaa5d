"""Where a table or a key was written in a TOML document, for ``file:line`` error messages.

tomllib reports no positions for valid documents. The locator walks the
lines only to find where each statement starts: each statement's text is
handed to tomllib, which says what the header or key is and how many lines
the value spans. Values are never interpreted here.
"""
from __future__ import annotations

from typing import Mapping

from ..tomltext import tomllib


def _parses(text: str) -> dict | None:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return None


def _header(line: str) -> tuple[tuple, bool] | None:
    """``[a.b]`` -> (("a", "b"), False); ``[[job]]`` -> (("job",), True); anything else -> None."""
    if not line.startswith("["):
        return None
    doc = _parses(line)
    if not doc:
        return None
    path: tuple = ()
    node: object = doc
    while isinstance(node, dict) and len(node) == 1:
        key, node = next(iter(node.items()))
        path += (key,)
    return path, isinstance(node, list)


def _statement(lines: list[str], start: int) -> tuple[str | None, int]:
    """The first key of the statement starting at `start` and the index of its last line."""
    for end in range(start, len(lines)):
        doc = _parses("\n".join(lines[start:end + 1]))
        if doc is not None:
            return (next(iter(doc)) if doc else None), end
    return None, start  # not a statement on its own: skip the line


class TomlLocator:
    """Find the line of a table, an array-of-tables entry or a key in TOML text.

    Table headers (``[defaults]``, ``[[job]]``, ``[job.set]``) and the first
    segment of ``key = value`` statements are recorded per table. Lines are 1-based.

    >>> loc = TomlLocator('[[job]]\\nname = "a"\\n[[job]]\\nname = "b"\\nwidht = 1\\n')
    >>> loc.line("job", 1, "widht"), loc.line("job", 1), loc.line("job", 0, "name")
    (5, 3, 2)
    """

    def __init__(self, text: str):
        self.keys: dict[tuple, int] = {}  # (table path..., key) -> line
        self.headers: dict[tuple, int] = {}  # table path -> line
        counts: dict[tuple, int] = {}
        table: tuple = ()
        lines = text.splitlines()
        index = 0
        while index < len(lines):
            stripped = lines[index].strip()
            number = index + 1
            index += 1
            if not stripped or stripped.startswith("#"):
                continue
            header = _header(stripped)
            if header is not None:
                table = self._enter(header, counts, number)
                continue
            key, last = _statement(lines, number - 1)
            if key is not None:
                self.keys.setdefault(table + (key,), number)
            index = last + 1

    def _enter(self, header: tuple[tuple, bool], counts: dict[tuple, int], number: int) -> tuple:
        path, is_array = header
        if is_array:
            entry = counts.get(path, 0)
            counts[path] = entry + 1
            table = path + (entry,)
        else:
            table = self._resolve(path, counts)
            if len(table) > 1:  # [job.set] also marks the key "set" of the enclosing table
                self.keys.setdefault(table, number)
        self.headers.setdefault(table, number)
        return table

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


__all__ = ["TomlLocator"]

"""What an earlier run left in an output folder that no longer describes the new one.

Two cases:

* ``compress --overwrite`` replaces ``OUT/student.safetensors`` but ``ganzip
  export`` had written ``OUT/student.onnx`` (and ``.onnx.json``, ``.int8.onnx``,
  ...) beside it. Those files belong to the old student, yet the new report's
  per-backend latency table times them (``ganzip.backends.find_exports`` finds
  every export named after the student). :func:`export_leftovers` lists them
  and :func:`clear_exports` removes those ganzip wrote (``ganzip.rundir``'s
  ledger); a file ganzip did not write is kept, and named in a warning.
* ``batch --latency-repeats 0`` (or ``--no-latency``) rewrites the leaderboard
  from scratch, so latencies measured by an earlier run of the same finished
  jobs become empty. :func:`carry_latencies` copies them from the previous
  ``leaderboard.json`` for jobs whose student file has not changed since.
"""
from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Iterable, Mapping, MutableMapping, Sequence

from . import rundir
from .backends import BACKEND_SUFFIXES

# Suffixes `ganzip export` gives its files (export.SUFFIXES, and .int8 variants), beyond the backends' list.
_EXPORT_SUFFIXES = (".onnx", ".pt2", ".pte", ".tflite", ".mlpackage", ".torchscript.pt")
STUDENT_FILES = ("student.safetensors", "student_last.safetensors")
LATENCY_KEYS = ("teacher_latency_ms", "student_latency_ms", "speedup", "backend_threads")


def _stem(name: str) -> str:
    return name[: -len(".safetensors")] if name.endswith(".safetensors") else Path(name).stem


def export_leftovers(out: str | Path, students: Iterable[str] = STUDENT_FILES) -> list[Path]:
    """Exports (and their ``.json`` reports) beside the students in ``out``, as ``ganzip export`` names them."""
    out = Path(out)
    suffixes = set(BACKEND_SUFFIXES.values())
    suffixes |= set(_EXPORT_SUFFIXES) | {".int8" + s for s in _EXPORT_SUFFIXES}
    found = []
    for student in students:
        stem = _stem(student)
        for suffix in sorted(suffixes):
            for name in (stem + suffix, stem + suffix + ".json"):
                p = out / name
                if p.exists() or p.is_symlink():
                    found.append(p)
    return list(dict.fromkeys(found))


def clear_exports(out: str | Path, students: Iterable[str] = STUDENT_FILES) -> tuple[list[Path], list[str]]:
    """Remove the exports of the old students that ganzip wrote; returns (removed, warnings for those kept)."""
    out = Path(out)
    removed, warnings = [], []
    for p in export_leftovers(out, students):
        rel = p.relative_to(out)
        if not rundir.owned(out, rel):
            warnings.append(f"{p} was not written by ganzip (or was changed since), so it is kept, but it is not "
                            "an export of the new student: remove it, or re-export with `ganzip export --overwrite`")
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        removed.append(p)
    return removed, warnings


def _latency_keys(row: Mapping) -> list[str]:
    return [k for k in row if k in LATENCY_KEYS or k.endswith("_latency_ms")]


def carry_latencies(rows: Sequence[MutableMapping], previous: str | Path) -> int:
    """Fill unmeasured latencies of ``rows`` from the earlier ``leaderboard.json`` at ``previous``.

    For a run that measured no latency (``--latency-repeats 0``). A row takes
    the earlier values only when its job was skipped (finished earlier, same
    settings), names the same student file, and that file is no newer than
    the earlier leaderboard; it is marked ``latency_from`` with that
    leaderboard's date. Returns how many rows took earlier values.
    """
    previous = Path(previous)
    try:
        old = json.loads(previous.read_text())
        written = previous.stat().st_mtime
    except (OSError, ValueError, UnicodeDecodeError):
        return 0
    jobs = old.get("jobs") if isinstance(old, dict) else None
    if not isinstance(jobs, list):
        return 0
    by_name = {j.get("job"): j for j in jobs if isinstance(j, dict)}
    carried = 0
    for row in rows:
        before = by_name.get(row.get("job"))
        student = row.get("student")
        if row.get("status") != "skipped" or not before or before.get("student") != student or not student:
            continue
        try:
            if Path(student).stat().st_mtime > written:
                continue
        except OSError:
            continue
        keys = [k for k in _latency_keys(before) if before.get(k) is not None and row.get(k) is None]
        if not keys:
            continue
        for k in keys:
            row[k] = before[k]
        row["latency_from"] = old.get("created") or "an earlier leaderboard"
        carried += 1
    return carried

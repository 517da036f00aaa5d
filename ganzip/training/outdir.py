"""The OUT folder of a compress run: its files, what may be cleared, the run marker, fingerprints.

``ganzip.rundir`` keeps the folder's lock and ledger; this module decides,
touching nothing until asked, whether OUT starts fresh, resumes or is refused.
"""
from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Mapping

from .. import io as gio
from .. import leftovers, rundir
from ..errors import GanzipError

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_JSON = "state.json"
RUN_MARKER = "run.json"
TRAIN_LOG = "train_log.csv"
SAMPLES = "samples.png"
STUDENT = "student.safetensors"
STUDENT_LAST = "student_last.safetensors"
# Files a compress run writes into OUT (removed by --overwrite / --no-resume).
OWNED_FILES = (RUN_MARKER, TRAIN_LOG, SAMPLES, STUDENT, STUDENT_LAST, "report.json", "report.md", "report.html")
OWNED_DIRS = (CHECKPOINT_DIR, "tensorboard", "images", "outputs")

def _is_atomic_temp(path: Path) -> bool:
    """A leftover of an interrupted ganzip.io write: ``.NAME.XXXXXXXX.tmp``."""
    return path.is_file() and path.name.startswith(".") and path.name.endswith(".tmp")


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and all(_is_atomic_temp(p) or p.name in rundir.BOOKKEEPING for p in path.iterdir())


def read_run_marker(out: Path) -> dict | None:
    """The ``run.json`` a compress run keeps in OUT, or None when absent or not ganzip's."""
    path = out / RUN_MARKER
    if not path.exists():
        return None
    try:
        marker = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def prepare_out(out: Path, *, resume: bool, overwrite: bool) -> str:
    """Decide what to do with ``out`` and clear it if needed: returns ``"fresh"`` or ``"resume"``."""
    mode, clear = plan_out(out, resume=resume, overwrite=overwrite)
    if clear:
        clear_out(out)
    return mode


def plan_out(out: Path, *, resume: bool, overwrite: bool) -> tuple[str, bool]:
    """Decide what to do with ``out``, touching nothing: ``(mode, clear)``.

    * missing or empty: fresh;
    * holds a finished run: error, unless ``overwrite`` (then cleared);
    * holds an unfinished run with a checkpoint: resume, unless ``resume`` is
      False (then cleared and started over);
    * holds files ganzip did not write: error.

    The caller clears only after every input is loaded and checked.
    """
    rundir.check_path(out)
    if out.exists() and not out.is_dir():
        raise GanzipError(f"--out {out} is a file, not a folder: choose a folder path")
    if not out.exists():
        return "fresh", False
    if _is_empty_dir(out):
        return "fresh", True
    marker = read_run_marker(out)
    if marker is None or marker.get("kind") != "ganzip-compress":
        raise GanzipError(
            f"--out {out} already exists and holds files ganzip did not write: choose a new or empty folder"
        )
    if marker.get("status") == "finished":
        if not overwrite:
            raise GanzipError(
                f"--out {out} holds a finished run (see {out / 'report.md'}): pass --overwrite to replace it, "
                "or choose another --out"
            )
        return "fresh", True
    has_ckpt = (out / CHECKPOINT_DIR / CHECKPOINT_JSON).exists()
    if resume and has_ckpt:
        return "resume", False
    return "fresh", True


def check_inputs_outside(out: Path, *, model=None, data=None, target=None, clearing: bool = False) -> None:
    """Inputs and outputs must not overlap: outputs would become training images, or clearing would delete an input."""
    o = out.resolve()
    for flag, value in (("--data", data), ("--target", target)):
        if isinstance(value, (str, Path)) and not str(value).startswith("builtin:") and Path(value).exists():
            d = Path(value).resolve()
            if o == d or o.is_relative_to(d):
                raise GanzipError(f"--out {out} is inside {flag} {value}: its outputs would be read as training "
                                  "images; choose an --out outside the data folder")
            if d.is_relative_to(o):
                raise GanzipError(f"{flag} {value} is inside --out {out}: choose an --out that holds no inputs")
    if clearing and isinstance(model, (str, Path)):
        m = Path(model).resolve()
        if m.is_relative_to(o):
            raise GanzipError(f"the model {model} is inside --out {out}, which this run would clear: "
                              "copy the model elsewhere, or choose another --out")


def clear_out(out: Path) -> list[str]:
    """Remove what an earlier compress run wrote into ``out`` (and nothing else).

    That includes what ``ganzip export`` wrote beside the old students
    (student.onnx, ...): they are not the new student's. Returns warnings for
    such files ganzip did not write, which are kept.
    """
    for path in out.iterdir():
        if _is_atomic_temp(path):
            with contextlib.suppress(OSError):
                path.unlink()
    for name in OWNED_FILES:
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()
    for name in OWNED_DIRS:
        shutil.rmtree(out / name, ignore_errors=True)
    return leftovers.clear_exports(out)[1]


def write_run_marker(out: Path, status: str, info: Mapping) -> None:
    """Record in OUT that a run is ``running`` or ``finished`` (``info``: recipe, seed, ...)."""
    gio.atomic_write_json(out / RUN_MARKER, {"kind": "ganzip-compress", "status": status, **info})


def finish_run(out: Path, info: Mapping) -> None:
    """The end of a run whose outputs are written: mark it finished, then drop its checkpoint (the outputs replace it)."""
    write_run_marker(out, "finished", info)
    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)


def fingerprint_diff(old: Mapping, new: Mapping) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:4]) or "unknown differences"

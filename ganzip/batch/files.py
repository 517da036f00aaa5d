"""The batch's own files in a job's folder (compress.log, error.txt, done.json) and what they say about the job.

Every launcher writes and reads them the same way, so that skipping,
resuming and the changed-settings check do not depend on where a job ran.
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from .. import io as gio
from .. import rundir
from ..engine import STUDENT, read_run_marker
from ..errors import GanzipError
from .schema import Job

DONE_MARKER = "done.json"
ERROR_FILE = "error.txt"
LOG_FILE = "compress.log"
BATCH_FILES = (DONE_MARKER, ERROR_FILE, LOG_FILE)


def job_state(job: Job, folder: Path) -> tuple[str, str | None]:
    """("done" | "changed" | "todo", message) for a job's folder."""
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


def clean_batch_files(folder: Path) -> None:
    """Remove the batch's own files from a job folder; a same-named file ganzip did not write stops the job."""
    existing = rundir.check_replaceable(folder, BATCH_FILES, overwrite=True, what="batch", flag="job folder")
    rundir.remove_owned(folder, existing)
    if folder.is_dir() and {p.name for p in folder.iterdir()} <= set(rundir.BOOKKEEPING):
        for name in rundir.BOOKKEEPING:  # the engine starts afresh in a missing or empty folder
            with contextlib.suppress(FileNotFoundError):
                (folder / name).unlink()
        folder.rmdir()


def write_batch_file(path: Path, text: str) -> None:
    """Write one of the batch's own files and note it in the folder's ledger (never over a user's file)."""
    if path.exists() and not rundir.owned(path.parent, path.name):
        return  # clean_batch_files refused the job already; its error is in the leaderboard
    gio.atomic_write_text(path, text)
    rundir.record(path.parent, [path.name])


def record_finished(job: Job, folder: Path, seconds: float) -> None:
    """Write ``done.json``: the settings a finished job ran with (what later runs compare against)."""
    write_batch_file(folder / DONE_MARKER, json.dumps({
        "name": job.name, "spec": job.spec(), "spec_hash": job.spec_hash(),
        "seconds": round(seconds, 2), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }, indent=2, default=str) + "\n")


def describe_exception(exc: BaseException) -> str:
    """The leaderboard's one line for an exception: a GanzipError's message, else ``Type: first line``."""
    if isinstance(exc, GanzipError):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


__all__ = ["BATCH_FILES", "DONE_MARKER", "ERROR_FILE", "LOG_FILE", "clean_batch_files", "describe_exception",
           "job_state", "record_finished", "write_batch_file"]

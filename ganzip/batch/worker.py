"""One job run through the library: `compress()` called, the outcome recorded as structured data.

The same code runs a job in this process (the ``inprocess`` launcher) and in
a worker process, ``python -m ganzip.jobrun JOB.json`` (the ``subprocess``,
``torchrun``, Ray and SLURM launchers). Nothing rebuilds a command line:
the job travels as JSON (``OUT/_batch/<job>/job.json``, see `write_job_file`)
and the worker calls `ganzip.engine.compress` with `Job.compress_kwargs`.

How the job ended is recorded by the code that ran it, never recovered from
its output: ``OUT/<job>/done.json`` when it finished, ``OUT/<job>/error.txt``
(the error line, then the traceback) when it failed, and, for a worker,
``OUT/_batch/<job>/outcome.json``::

    {"status": "failed", "seconds": 3.1,
     "error": {"type": "GanzipError", "message": "...", "line": "...", "traceback_file": ".../error.txt"}}

A worker killed from outside (Ctrl-C, ``scancel``, a time limit, a lost
node) records nothing: the job is then *interrupted*, and the next run
resumes it from the checkpoint in its folder. A worker's output goes to
``OUT/_batch/<job>/log.txt``. ``OUT/<job>/`` itself holds only what
`compress` writes while it runs, so that the engine recognises the folder
as its own and resumes in it.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Mapping

from .. import io as gio
from ..engine import compress
from ..errors import GanzipError
from .files import ERROR_FILE, clean_batch_files, describe_exception, record_finished, write_batch_file
from .schema import Job

BATCH_DIR = "_batch"  # OUT/_batch: job names start with a letter or digit, so this cannot be a job's folder
JOB_FILE = "job.json"
OUTCOME_FILE = "outcome.json"
WORKER_LOG = "log.txt"


def state_dir(root: Path, name: str) -> Path:
    """``OUT/_batch/<job>``: the job as JSON, its worker's log and its outcome."""
    return Path(root) / BATCH_DIR / name


# ====================================================================== the job as JSON


def job_to_dict(job: Job) -> dict:
    """A `Job` as JSON-able data (paths as strings); `job_from_dict` reads it back."""
    out = {}
    for f in dataclasses.fields(job):
        value = getattr(job, f.name)
        out[f.name] = str(value) if isinstance(value, Path) else value
    return out


def job_from_dict(data: Mapping[str, Any]) -> Job:
    known = {f.name: f for f in dataclasses.fields(Job)}
    kw = {}
    for key, value in data.items():
        if key not in known:
            continue  # written by a newer ganzip: ignore rather than fail the job
        if value is not None and "Path" in str(known[key].type):
            value = Path(value)
        kw[key] = value
    return Job(**kw)


def write_job_file(job: Job, folder: Path, root: Path, *, quiet: bool = False) -> Path:
    """Write ``OUT/_batch/<job>/job.json`` and clear the outcome of an earlier attempt; returns the file.

    `quiet`: the worker shows no progress lines (the local launchers' default).
    """
    sdir = state_dir(root, job.name)
    sdir.mkdir(parents=True, exist_ok=True)
    (sdir / OUTCOME_FILE).unlink(missing_ok=True)
    path = sdir / JOB_FILE
    gio.atomic_write_json(path, {"job": job_to_dict(job), "folder": str(folder), "root": str(root), "quiet": quiet})
    return path


def read_outcome(sdir: Path) -> dict | None:
    """The structured outcome a worker recorded in `sdir`, or None when it recorded none."""
    try:
        data = json.loads((Path(sdir) / OUTCOME_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ====================================================================== running one job


def failure(exc: BaseException, traceback_file: Path | None) -> dict:
    """A failure as structured data: the exception's type and message, the leaderboard's line, the traceback file."""
    return {"type": type(exc).__name__, "message": str(exc).strip(), "line": describe_exception(exc),
            "traceback_file": None if traceback_file is None else str(traceback_file)}


def interrupted(reason: str) -> dict:
    """The outcome of a job stopped from outside before it finished (it resumes next run)."""
    return {"status": "interrupted", "error": {"type": "Interrupted", "message": reason, "line": reason,
                                               "traceback_file": None}}


def compress_job(job: Job, folder: Path, quiet: bool, main: bool = True) -> None:
    """Run `job` into `folder` through `ganzip.engine.compress`; raise when it wrote no student."""
    result = compress(str(job.model), **job.compress_kwargs(folder), quiet=quiet)
    if main and result.student_path is None:
        raise GanzipError("the run stopped before its last step (no student was written)")


def attempt(job: Job, folder: Path, run: Callable[[], None], main: bool = True) -> dict:
    """Call `run` (one try at `job`) and record how it ended; returns the outcome.

    Finished: ``done.json``. Failed: ``error.txt`` with the error line and the
    traceback, and the failure as data. Ctrl-C and SystemExit pass through:
    an interrupted job records nothing and resumes next time. Under torchrun
    only rank 0 (`main`) records; another rank's failure is raised.
    """
    started = time.perf_counter()
    try:
        run()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - a failed job is recorded, the batch goes on
        if not main:
            raise
        error_file = folder / ERROR_FILE
        error = failure(exc, error_file)
        write_batch_file(error_file, f"{error['line']}\n\n{traceback.format_exc()}")
        return {"status": "failed", "seconds": round(time.perf_counter() - started, 2), "error": error}
    seconds = time.perf_counter() - started
    if main:
        record_finished(job, folder, seconds)
    return {"status": "finished", "seconds": round(seconds, 2)}


def run_job_file(job_file: str | os.PathLike) -> dict:
    """Run the job in ``job.json`` through `compress` and record its outcome; returns the outcome.

    Under torchrun every rank trains; only rank 0 records. The job's earlier
    batch files are removed first, as the local launcher does, so the
    engine finds a folder it owns (and resumes from its checkpoint).
    """
    spec = json.loads(Path(job_file).read_text())
    job, folder, root = job_from_dict(spec["job"]), Path(spec["folder"]), Path(spec["root"])
    quiet = bool(spec.get("quiet", False))
    main = int(os.environ.get("RANK", "0")) == 0
    if main:
        clean_batch_files(folder)
    outcome = attempt(job, folder, lambda: compress_job(job, folder, quiet, main), main)
    if main:
        gio.atomic_write_json(state_dir(root, job.name) / OUTCOME_FILE, outcome)
    return outcome


# ====================================================================== the worker process


def worker_argv(job_file: Path, nproc: int = 1, python: str | None = None) -> list[str]:
    """The worker's argument list: one process, or torchrun with `nproc` processes on this node.

    ``--standalone`` picks a free rendezvous port, so several jobs can run side by side.
    """
    python = python or sys.executable
    if nproc > 1:
        return [python, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
                "-m", "ganzip.jobrun", str(job_file)]
    return [python, "-m", "ganzip.jobrun", str(job_file)]


def launch(job_file: Path, nproc: int = 1, threads: int | None = None,
           env_extra: Mapping[str, str] | None = None) -> dict:
    """Run a worker for `job_file` in a new process, its output appended to the job's log; returns the outcome.

    `threads`: the CPUs the job was given (per process); torch's threads
    follow it, so jobs sharing a node do not oversubscribe its cores.
    The outcome is the one the worker recorded. A worker that ends without
    recording one was stopped from outside (a signal, torchrun losing a
    rank: the job is interrupted) or died before it could (a failure whose
    only record is the log).
    """
    job_file = Path(job_file)
    sdir = job_file.parent
    (sdir / OUTCOME_FILE).unlink(missing_ok=True)
    argv = worker_argv(job_file, nproc)
    env = {**os.environ, **(env_extra or {}), "PYTHONUNBUFFERED": "1"}
    if threads is not None and threads >= 1:
        env["OMP_NUM_THREADS"] = str(max(1, threads // max(1, nproc)))
    log_file = sdir / WORKER_LOG
    returncode = _run_logged(argv, env, log_file)
    outcome = read_outcome(sdir)
    if outcome is not None:
        return outcome
    if _killed(returncode, log_file):
        how = f"signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
        return interrupted(f"the worker was stopped ({how}) before the job finished: it resumes from its "
                           f"checkpoint on the next run (log: {log_file})")
    line = f"the job's worker exited with code {returncode} before recording an outcome: see {log_file}"
    outcome = {"status": "failed", "error": {"type": "WorkerExit", "message": line, "line": line,
                                             "traceback_file": str(log_file)}}
    gio.atomic_write_json(sdir / OUTCOME_FILE, outcome)
    return outcome


def _run_logged(argv: list[str], env: Mapping[str, str], log_file: Path) -> int:
    """Run `argv` with its output appended to `log_file`; stop it with this process. Returns its exit code."""
    with open(log_file, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S%z')} on {os.uname().nodename}: "
                  f"{' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen([*_IGNORE_USR2, *argv], stdout=log, stderr=subprocess.STDOUT, env=dict(env))
        try:
            return proc.wait()
        except BaseException:
            proc.terminate()  # this wrapper is being stopped: stop the worker with it
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise


def _killed(returncode: int, log_file: Path) -> bool:
    """Did a signal end the worker (itself, a shell's 128+N, or one of torchrun's ranks)?

    torchrun reports a rank that a signal ended in its own summary; that
    summary, not the job's output, is what the log's tail is read for.
    """
    if returncode < 0 or returncode >= 128:
        return True
    try:
        with open(log_file, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 4000))
            tail = fh.read().decode(errors="replace")
    except OSError:
        return False
    return "exitcode  : -" in tail or "SignalException" in tail


# A tiny exec shim (not preexec_fn: the wrapper may have threads, a Ray worker does) that
# * ignores SLURM's warning signal before a time limit or preemption (SIGUSR2): it is for the submitit
#   wrapper, which requeues the job; an ignored signal stays ignored across exec, also in torchrun's
#   ranks, and the worker trains on until SLURM stops it;
# * asks Linux to stop the worker when the wrapper dies (a cancelled Ray task is killed outright),
#   so no orphaned training outlives its task.
_IGNORE_USR2 = [sys.executable, "-c", "import os, signal, sys\n"
                "signal.signal(signal.SIGUSR2, signal.SIG_IGN)\n"
                "try:\n    import ctypes; ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
                "except (OSError, AttributeError):\n    pass\n"
                "os.execv(sys.argv[1], sys.argv[1:])"]


__all__ = ["BATCH_DIR", "JOB_FILE", "OUTCOME_FILE", "WORKER_LOG", "attempt", "compress_job", "failure",
           "interrupted", "job_from_dict", "job_to_dict", "launch", "read_outcome", "run_job_file", "state_dir",
           "worker_argv", "write_job_file"]

"""One batch job on a cluster node: the job as JSON in, `compress()` run, the outcome recorded on disk.

The Ray and SLURM launchers do not rebuild a command line. They write the
job (a `ganzip.batch.Job`) as JSON into ``OUT/_batch/<job>/job.json`` and
start a worker process on the node, ``python -m ganzip.jobrun JOB.json``,
or ``python -m torch.distributed.run ... -m ganzip.jobrun JOB.json`` when
the job uses several GPUs. The worker calls the same `ganzip.engine.compress`
as the local launcher and records how the job ended, as the local launcher
does: ``OUT/<job>/done.json`` when it finished, ``OUT/<job>/error.txt`` (the
error line, then the traceback) when it failed, and, as structured data,
``OUT/_batch/<job>/outcome.json``::

    {"status": "failed", "seconds": 3.1,
     "error": {"type": "GanzipError", "message": "...", "line": "...", "traceback_file": ".../error.txt"}}

A worker killed by the cluster (``scancel``, a time limit, a lost node)
records nothing: the job is then *interrupted*, and the next run resumes it
from the checkpoint in its folder. Its output (plain progress lines, see
`ganzip.progress`) goes to ``OUT/_batch/<job>/log.txt``, one file per job.
``OUT/<job>/`` itself holds only what `compress` writes, so that the engine
recognises the folder as its own and resumes in it.
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
from typing import Any, Mapping

from . import batch
from . import io as gio
from .engine import compress

BATCH_DIR = "_batch"  # OUT/_batch: job names start with a letter or digit, so this cannot be a job's folder
JOB_FILE = "job.json"
OUTCOME_FILE = "outcome.json"
WORKER_LOG = "log.txt"


def state_dir(root: Path, name: str) -> Path:
    """``OUT/_batch/<job>``: the job as JSON, its log and its outcome."""
    return Path(root) / BATCH_DIR / name


def job_to_dict(job: batch.Job) -> dict:
    """A `Job` as JSON-able data (paths as strings); `job_from_dict` reads it back."""
    out = {}
    for f in dataclasses.fields(job):
        value = getattr(job, f.name)
        out[f.name] = str(value) if isinstance(value, Path) else value
    return out


def job_from_dict(data: Mapping[str, Any]) -> batch.Job:
    known = {f.name: f for f in dataclasses.fields(batch.Job)}
    kw = {}
    for key, value in data.items():
        if key not in known:
            continue  # written by a newer ganzip: ignore rather than fail the job
        if value is not None and "Path" in str(known[key].type):
            value = Path(value)
        kw[key] = value
    return batch.Job(**kw)


def write_job_file(job: batch.Job, folder: Path, root: Path) -> Path:
    """Write ``OUT/_batch/<job>/job.json`` and clear the outcome of an earlier attempt; returns the file."""
    sdir = state_dir(root, job.name)
    sdir.mkdir(parents=True, exist_ok=True)
    (sdir / OUTCOME_FILE).unlink(missing_ok=True)
    path = sdir / JOB_FILE
    gio.atomic_write_json(path, {"job": job_to_dict(job), "folder": str(folder), "root": str(root)})
    return path


def read_outcome(sdir: Path) -> dict | None:
    try:
        data = json.loads((Path(sdir) / OUTCOME_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def failure(exc: BaseException, traceback_file: Path | None) -> dict:
    """A failure as structured data: the exception's type and message, the leaderboard's line, the traceback file."""
    message = str(exc).strip()
    return {"type": type(exc).__name__, "message": message, "line": batch._describe_exception(exc),
            "traceback_file": None if traceback_file is None else str(traceback_file)}


def run_job_file(job_file: str | os.PathLike) -> dict:
    """Run the job in ``job.json`` through `compress` and record its outcome; returns the outcome.

    Under torchrun every rank trains; only rank 0 records. The job's earlier
    batch files are removed first, as the local launcher does, so the
    engine finds a folder it owns (and resumes from its checkpoint).
    """
    spec = json.loads(Path(job_file).read_text())
    job, folder, root = job_from_dict(spec["job"]), Path(spec["folder"]), Path(spec["root"])
    sdir = state_dir(root, job.name)
    main = int(os.environ.get("RANK", "0")) == 0
    if main:
        batch._clean_batch_files(folder)
    started = time.perf_counter()
    try:
        result = compress(str(job.model), **job.compress_kwargs(folder), quiet=False)
        if main and result.student_path is None:
            raise batch.GanzipError("the run stopped before its last step (no student was written)")
    except (KeyboardInterrupt, SystemExit):
        raise  # killed or stopped: nothing recorded, the job is interrupted and resumes next time
    except BaseException as exc:  # noqa: BLE001 - the failure is recorded for the leaderboard
        seconds = time.perf_counter() - started
        if not main:
            raise
        error_file = folder / batch.ERROR_FILE
        line = batch._describe_exception(exc)
        batch._write_batch_file(error_file, f"{line}\n\n{traceback.format_exc()}")
        outcome = {"status": "failed", "seconds": round(seconds, 2), "error": failure(exc, error_file)}
        gio.atomic_write_json(sdir / OUTCOME_FILE, outcome)
        return outcome
    seconds = time.perf_counter() - started
    outcome = {"status": "finished", "seconds": round(seconds, 2)}
    if main:
        batch.record_finished(job, folder, seconds)
        gio.atomic_write_json(sdir / OUTCOME_FILE, outcome)
    return outcome


def worker_argv(job_file: Path, nproc: int = 1, python: str | None = None) -> list[str]:
    """The worker's argument list: one process, or torchrun with `nproc` processes on this node."""
    python = python or sys.executable
    if nproc > 1:
        return [python, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
                "-m", "ganzip.jobrun", str(job_file)]
    return [python, "-m", "ganzip.jobrun", str(job_file)]


def interrupted(reason: str) -> dict:
    return {"status": "interrupted", "error": {"type": "Interrupted", "message": reason, "line": reason,
                                               "traceback_file": None}}


def launch(job_file: Path, nproc: int = 1, threads: int | None = None,
           env_extra: Mapping[str, str] | None = None) -> dict:
    """Run a worker for `job_file` in a new process, its output appended to the job's log; returns the outcome.

    `threads`: the CPUs the job was given (per process); torch's threads
    follow it, so jobs sharing a node do not oversubscribe its cores.
    A worker that ends without recording an outcome was stopped from
    outside (a signal, torchrun losing a rank): the job is interrupted.
    """
    job_file = Path(job_file)
    sdir = job_file.parent
    (sdir / OUTCOME_FILE).unlink(missing_ok=True)
    argv = worker_argv(job_file, nproc)
    env = {**os.environ, **(env_extra or {}), "PYTHONUNBUFFERED": "1"}
    if threads is not None and threads >= 1:
        env["OMP_NUM_THREADS"] = str(max(1, threads // max(1, nproc)))
    with open(sdir / WORKER_LOG, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S%z')} on {os.uname().nodename}: "
                  f"{' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen([*_IGNORE_USR2, *argv], stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            returncode = proc.wait()
        except BaseException:
            proc.terminate()  # this wrapper is being stopped: stop the worker with it
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    outcome = read_outcome(sdir)
    if outcome is not None:
        return outcome
    log_file = sdir / WORKER_LOG
    if _killed(returncode, log_file):
        how = f"signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
        return interrupted(f"the worker was stopped ({how}) before the job finished: it resumes from its "
                           f"checkpoint on the next run (log: {log_file})")
    line = f"the job's worker exited with code {returncode} before recording an outcome: see {log_file}"
    outcome = {"status": "failed", "error": {"type": "WorkerExit", "message": line, "line": line,
                                             "traceback_file": str(log_file)}}
    gio.atomic_write_json(sdir / OUTCOME_FILE, outcome)
    return outcome


def _killed(returncode: int, log_file: Path) -> bool:
    """Did a signal end the worker (itself, a shell's 128+N, or one of torchrun's ranks)?"""
    if returncode < 0 or returncode >= 128:
        return True
    try:
        with open(log_file, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 4000))
            tail = fh.read().decode(errors="replace")
    except OSError:
        return False
    return "exitcode  : -" in tail or "SignalException" in tail  # torchrun's report of a rank ended by a signal


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


def main(argv: list[str] | None = None) -> int:
    from .errors import CLI_WORDING

    CLI_WORDING.set(True)  # a job's errors read like the batch command's, whatever runs it
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m ganzip.jobrun OUT/_batch/<job>/job.json", file=sys.stderr)
        return 2
    outcome = run_job_file(args[0])
    if outcome["status"] != "finished":
        print(f"error: {outcome['error']['line']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["job_from_dict", "job_to_dict", "launch", "read_outcome", "run_job_file", "state_dir", "worker_argv",
           "write_job_file"]

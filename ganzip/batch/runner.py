"""Run a manifest's jobs on this machine and write the leaderboard.

`run_batch` runs the jobs in order, skips finished ones, resumes interrupted
ones (the engine resumes from the checkpoint in the job's folder), records
failures and goes on, then writes ``leaderboard.md``, ``.csv`` and ``.json``
into the output folder. Every job goes through `ganzip.engine.compress`:
in this process, or in a worker process that reads the job as JSON
(`ganzip.batch.worker`), pinned to its GPUs; the worker's structured
outcome, not its output, says how the job ended.
"""
from __future__ import annotations

import os
import queue
import re
import shlex
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .. import rundir
from ..errors import GanzipError
from .files import ERROR_FILE, LOG_FILE, clean_batch_files, job_state, write_batch_file
from .leaderboard import LEADERBOARD_FILES, leaderboard_rows, write_leaderboard
from .manifest import load_manifest
from .schema import Job, Manifest
from ..leftovers import carry_latencies
from .worker import JOB_FILE, WORKER_LOG, attempt, compress_job, launch, state_dir, worker_argv, write_job_file

LAUNCHERS = ("auto", "inprocess", "subprocess", "torchrun")


# ====================================================================== workers and GPUs


def parse_gpus(text: str | Sequence[str] | None) -> list[str]:
    """'0,1,3' -> ['0', '1', '3'] (device indices or GPU UUIDs, as CUDA_VISIBLE_DEVICES takes them)."""
    if text is None:
        return []
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text)]
    items = [t for t in items if t]
    bad = [t for t in items if not re.match(r"^[A-Za-z0-9-]+$", t)]
    if bad or not items:
        raise GanzipError(f"--gpus takes comma-separated device numbers such as 0,1,2,3, got {text!r}")
    if len(set(items)) != len(items):
        raise GanzipError(f"--gpus lists a device twice: {text!r}")
    return items


def plan_workers(gpus: Sequence[str], nproc_per_node: int = 1) -> list[dict[str, str]]:
    """One worker per group of `nproc_per_node` GPUs; each gets its CUDA_VISIBLE_DEVICES.

    No GPUs: one worker that leaves the environment alone.

    >>> plan_workers(["0", "1", "2", "3"], 2)
    [{'CUDA_VISIBLE_DEVICES': '0,1'}, {'CUDA_VISIBLE_DEVICES': '2,3'}]
    """
    if nproc_per_node < 1:
        raise GanzipError(f"--nproc-per-node must be at least 1, got {nproc_per_node}")
    if not gpus:
        return [{}]
    if len(gpus) % nproc_per_node:
        raise GanzipError(f"--gpus lists {len(gpus)} devices, which do not split into groups of "
                          f"--nproc-per-node {nproc_per_node}")
    return [{"CUDA_VISIBLE_DEVICES": ",".join(gpus[i:i + nproc_per_node])}
            for i in range(0, len(gpus), nproc_per_node)]


def launch_mode(launcher: str, gpus: Sequence[str], nproc_per_node: int) -> str:
    """The launcher `auto` stands for (inprocess, or subprocess with GPUs), its flags checked."""
    if launcher not in LAUNCHERS:
        raise GanzipError(f"unknown launcher {launcher!r}: use {', '.join(LAUNCHERS)}")
    mode = launcher if launcher != "auto" else ("subprocess" if gpus else "inprocess")
    if mode == "inprocess" and gpus:
        raise GanzipError("--gpus runs jobs in separate processes: use --launcher subprocess or torchrun")
    if mode == "inprocess" and nproc_per_node != 1:
        raise GanzipError("--nproc-per-node needs --launcher torchrun")
    return mode


# ====================================================================== results


@dataclass
class JobOutcome:
    """How one job ended: finished (ran now), skipped (finished earlier), failed, interrupted (stopped
    from outside; it resumes next run), or pending (not reached)."""

    job: Job
    status: str
    folder: Path
    error: str | None = None
    seconds: float | None = None
    row: dict = field(default_factory=dict)


@dataclass
class BatchResult:
    """What `run_batch` hands back: every job's outcome and the leaderboard files."""

    manifest: Path
    out: Path
    jobs: list[JobOutcome]
    leaderboard: dict[str, Path]

    def count(self, status: str) -> int:
        return sum(1 for j in self.jobs if j.status == status)

    @property
    def failed(self) -> list[JobOutcome]:
        return [j for j in self.jobs if j.status == "failed"]


def plan_jobs(m: Manifest, root: Path, say: Callable[[str], None]) -> tuple[list[JobOutcome], list[JobOutcome]]:
    """Every job's outcome, skipped and changed ones settled; returns (all outcomes, those still to run).

    Every launcher starts from this, so skipping finished jobs and refusing
    to reuse a finished run with other settings work the same on all of them.
    """
    outcomes = [JobOutcome(job=j, status="pending", folder=root / j.name) for j in m.jobs]
    todo: list[JobOutcome] = []
    for oc in outcomes:
        state, message = job_state(oc.job, oc.folder)
        if state == "done":
            oc.status = "skipped"
            say(f"[skip] {oc.job.name}: finished earlier ({oc.folder})")
        elif state == "changed":
            oc.status, oc.error = "failed", message
            say(f"[fail] {oc.job.name}: {message}")
        else:
            todo.append(oc)
    return outcomes, todo


def apply_outcome(oc: JobOutcome, outcome: Mapping, say: Callable[[str], None]) -> None:
    """Copy a recorded outcome (status, seconds, structured error) into the job's `JobOutcome`; announce it."""
    status = outcome.get("status")
    oc.seconds = outcome.get("seconds", oc.seconds)
    if status == "finished":
        oc.status, oc.error = "finished", None
        say(f"[done] {oc.job.name} ({oc.seconds or 0:.0f} s)")
        return
    error = outcome.get("error") or {}
    oc.status = "interrupted" if status == "interrupted" else "failed"
    oc.error = error.get("line") or error.get("message") or "unknown error"
    say(f"[{'stop' if oc.status == 'interrupted' else 'fail'}] {oc.job.name}: {oc.error}")


def finish_batch(outcomes: Sequence[JobOutcome], root: Path, manifest: Path, *, latency_repeats: int = 0,
                 latency_device: str = "cpu") -> dict[str, Path]:
    """Measure every row from the files on disk and write the leaderboard (every launcher ends here)."""
    rows = leaderboard_rows(outcomes, latency=latency_repeats > 0, repeats=latency_repeats, device=latency_device)
    if latency_repeats == 0:  # keep what an earlier run measured for jobs that did not change
        carry_latencies(rows, root / "leaderboard.json")
    for oc, row in zip(outcomes, rows):
        oc.row = row
    return write_leaderboard(root, manifest, rows,
                             latency_info={"device": latency_device, "repeats": latency_repeats})


# ====================================================================== running one job here


def _run_inprocess(job: Job, folder: Path, quiet: bool) -> None:
    compress_job(job, folder, quiet)


def _run_worker(job: Job, folder: Path, root: Path, nproc: int, env_extra: Mapping[str, str], quiet: bool) -> dict:
    """Run `job` in a worker process (torchrun with `nproc` > 1); its log becomes ``OUT/<job>/compress.log``."""
    job_file = write_job_file(job, folder, root, quiet=quiet)
    log = job_file.parent / WORKER_LOG
    start = log.stat().st_size if log.exists() else 0
    outcome = launch(job_file, nproc, env_extra=env_extra)
    try:
        with open(log, "rb") as fh:
            fh.seek(start)
            text = fh.read().decode(errors="replace")
    except FileNotFoundError:
        text = ""
    write_batch_file(folder / LOG_FILE, text)
    if outcome.get("status") != "finished" and not (folder / ERROR_FILE).exists():
        error = outcome.get("error") or {}  # the worker died before it could record its own error.txt
        env = "".join(f"{k}={v}\n" for k, v in env_extra.items())
        write_batch_file(folder / ERROR_FILE, f"{error.get('line')}\n\n{env}\n{text}")
    return outcome


def _execute(oc: JobOutcome, root: Path, mode: str, env_extra: Mapping[str, str], nproc_per_node: int,
             quiet: bool) -> dict:
    """Run one job with the chosen launcher; returns its structured outcome."""
    try:
        clean_batch_files(oc.folder)
    except GanzipError as exc:  # a file of the user's where the batch writes its own: the job is refused
        write_batch_file(oc.folder / ERROR_FILE, f"{exc}\n\n")
        return {"status": "failed", "error": {"type": type(exc).__name__, "message": str(exc), "line": str(exc),
                                              "traceback_file": None}}
    if mode == "inprocess":
        return attempt(oc.job, oc.folder, lambda: _run_inprocess(oc.job, oc.folder, quiet))
    nproc = nproc_per_node if mode == "torchrun" else 1
    return _run_worker(oc.job, oc.folder, root, nproc, env_extra, quiet)


def _run_pool(todo: list[JobOutcome], workers: list[dict[str, str]],
              announce: Callable[[JobOutcome, Mapping[str, str]], None],
              run_one: Callable[[JobOutcome, Mapping[str, str]], None]) -> None:
    """Hand jobs, in manifest order, to whichever worker (GPU group) is free next.

    Each worker is a thread that starts one job process at a time with its
    CUDA_VISIBLE_DEVICES; taking the next job and announcing it happen under
    one lock, so jobs start in manifest order.
    """
    jobs: queue.Queue = queue.Queue()
    for oc in todo:
        jobs.put(oc)
    stop = threading.Event()
    dispatch = threading.Lock()

    def worker(env_extra: dict[str, str]) -> None:
        while not stop.is_set():
            with dispatch:
                try:
                    oc = jobs.get_nowait()
                except queue.Empty:
                    return
                announce(oc, env_extra)
            run_one(oc, env_extra)

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(timeout=0.5)
    except KeyboardInterrupt:
        stop.set()  # running jobs finish (their processes got the signal too); no new ones start
        raise


# ====================================================================== the batch


def run_batch(manifest: str | os.PathLike | Manifest, out: str | os.PathLike | None = None, *,
              gpus: str | Sequence[str] | None = None, launcher: str = "auto", nproc_per_node: int = 1,
              latency: bool = True, latency_repeats: int = 5, latency_device: str = "cpu", quiet: bool = True,
              echo: Callable[[str], None] | None = None, trust_code: bool = False) -> BatchResult:
    """Run every job of a manifest and write the leaderboard.

    Args:
        manifest: a path (read with `load_manifest`) or a `Manifest`.
        out: output folder (overrides the manifest's `out`); each job writes into `out/<job name>`.
        gpus: "0,1,..." or a list: jobs spread over these GPUs, one worker per
            group of `nproc_per_node`, each pinned with CUDA_VISIBLE_DEVICES.
        launcher: "inprocess" (this process, one job after another), "subprocess"
            (a worker process per job, ``python -m ganzip.jobrun``), "torchrun"
            (the worker under ``torchrun --nproc-per-node N``) or "auto"
            (inprocess, or subprocess when `gpus` are given).
        latency, latency_repeats, latency_device: time every teacher and
            student for the leaderboard (median of repeats, after the jobs ran,
            one model at a time).
        quiet: no progress bars from the jobs.
        echo: called with one line per job event (the CLI prints them).
        trust_code: allow jobs whose arch is package.module:callable (see `load_manifest`).

    Jobs already finished are skipped; interrupted ones resume from their
    checkpoint; a failing job is recorded (its error line in the leaderboard,
    the traceback in `out/<job>/error.txt`) and the run goes on.
    """
    m = manifest if isinstance(manifest, Manifest) else load_manifest(manifest, out, trust_code=trust_code)
    root = Path(out) if out is not None else m.out
    say = echo or (lambda _line: None)
    gpu_list = parse_gpus(gpus)
    mode = launch_mode(launcher, gpu_list, nproc_per_node)
    workers = plan_workers(gpu_list, nproc_per_node if mode == "torchrun" else 1)
    if latency_repeats < 0:
        raise GanzipError(f"--latency-repeats must be >= 0, got {latency_repeats}")

    rundir.check_path(root)
    with rundir.lock(root):  # a second batch on this OUT stops here, before it touches a job
        rundir.check_replaceable(root, LEADERBOARD_FILES, overwrite=True, what="batch")  # before hours of jobs
        outcomes = _run_jobs(m, root, mode, workers, nproc_per_node, quiet, say)
        paths = finish_batch(outcomes, root, m.path, latency_repeats=latency_repeats if latency else 0,
                             latency_device=latency_device)
    return BatchResult(manifest=m.path, out=root, jobs=outcomes, leaderboard=paths)


def _run_jobs(m: Manifest, root: Path, mode: str, workers: list[dict[str, str]], nproc_per_node: int, quiet: bool,
              say: Callable[[str], None]) -> list[JobOutcome]:
    """Run the jobs not finished yet, one worker at a time or in a pool; an interrupt records what finished."""
    outcomes, todo = plan_jobs(m, root, say)

    def announce(oc: JobOutcome, env_extra: Mapping[str, str]) -> None:
        pinned = f" on GPU {env_extra['CUDA_VISIBLE_DEVICES']}" if env_extra else ""
        say(f"[run]  {oc.job.name}{pinned}")

    def run_one(oc: JobOutcome, env_extra: Mapping[str, str]) -> None:
        t0 = time.perf_counter()
        outcome = _execute(oc, root, mode, env_extra, nproc_per_node, quiet)
        apply_outcome(oc, {**outcome, "seconds": time.perf_counter() - t0}, say)

    try:
        if mode == "inprocess" or len(workers) == 1:
            for oc in todo:
                announce(oc, workers[0])
                run_one(oc, workers[0])
        else:
            _run_pool(todo, workers, announce, run_one)
    except KeyboardInterrupt:
        finish_batch(outcomes, root, m.path)  # record what finished, quickly; unfinished jobs resume next time
        raise
    return outcomes


def _compress_call(job: Job, folder: Path) -> str:
    """The library call a job makes, as Python: ``compress('G.pth', data=..., width=0.25, ...)``."""
    kwargs = {k: v for k, v in job.compress_kwargs(folder).items() if v not in (None, [], {})}
    return f"compress({str(job.model)!r}, " + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")"


def dry_run_lines(m: Manifest, launcher: str = "auto", *, gpus: str | Sequence[str] | None = None,
                  nproc_per_node: int = 1, gpus_per_job: int = 0) -> list[str]:
    """What ``ganzip batch --dry-run`` prints: the jobs, each with the compress call or worker command it runs."""
    inprocess = False
    if launcher in ("ray", "slurm"):
        nproc = max(1, gpus_per_job)
        what = f"each a {launcher} {'task' if launcher == 'ray' else 'array task'} running:"
    else:
        gpu_list = parse_gpus(gpus)
        mode = launch_mode(launcher, gpu_list, nproc_per_node)
        workers = plan_workers(gpu_list, nproc_per_node if mode == "torchrun" else 1)
        nproc, inprocess = (nproc_per_node if mode == "torchrun" else 1), mode == "inprocess"
        pinned = " pinned to " + " | ".join(w["CUDA_VISIBLE_DEVICES"] for w in workers) if gpu_list else ""
        what = f"{len(workers)} worker(s){pinned}"
    lines = [f"{len(m.jobs)} job(s) from {m.path} into {m.out}; {what}"]
    for job in m.jobs:
        if inprocess:
            command = _compress_call(job, m.out / job.name)
        else:
            argv = worker_argv(state_dir(m.out, job.name) / JOB_FILE, nproc)
            command = " ".join(shlex.quote(str(a)) for a in argv)
        lines.append(f"- {job.name} (line {job.line}): {command}")
        if job.arch and ":" in job.arch:
            lines.append(f"  warning: runs code from {job.arch} (allowed by --trust-code)")
    return lines


__all__ = ["BatchResult", "dry_run_lines", "JobOutcome", "LAUNCHERS", "apply_outcome", "finish_batch", "launch_mode", "parse_gpus",
           "plan_jobs", "plan_workers", "run_batch"]

"""`ganzip batch` on a cluster: each job a Ray task, or one task of a SLURM job array (through submitit).

Both launchers start where the local one does (`ganzip.batch.plan_jobs`:
finished jobs are skipped, a finished run with other settings is refused)
and end where it does (`ganzip.batch.finish_batch`: the leaderboard is
measured from the files on disk). In between, each job to run is written as
JSON (`ganzip.batch.worker.write_job_file`) and a worker on a node runs it
through `ganzip.engine.compress` (`ganzip.batch.worker.launch`), under
torchrun when the job has several GPUs. The worker records the outcome in the job's folders,
so the leaderboard, ``--status`` and a later rerun read the same files
whichever machine ran the job.

Ray and submitit are optional extras (``pip install 'ganzip[ray]'``,
``'ganzip[slurm]'``).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from . import io as gio
from . import rundir
from .batch.cluster import load as _load
from .batch.cluster import missing as _missing
from .batch.cluster import parse_slurm_opts, parse_time, shared_paths
from .batch.cluster import say_or_silent as _say
from .batch.files import clean_batch_files, job_state
from .batch.runner import BatchResult, JobOutcome, apply_outcome, finish_batch, plan_jobs
from .batch.schema import Manifest
from .batch.worker import (BATCH_DIR, JOB_FILE, OUTCOME_FILE, WORKER_LOG, interrupted, launch, read_outcome,
                           state_dir, write_job_file)
from .errors import GanzipError

SLURM_RECORD = "slurm.json"  # OUT/_batch/slurm.json: the submitted array, for --status and --wait
_QUEUED = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
           "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "PREEMPTED", "STOPPED"}


def _require(module: str, extra: str):
    try:
        return __import__(module)
    except ImportError:
        raise GanzipError(f"--launcher {extra} needs {module}, which is not installed: "
                          f"pip install 'ganzip[{extra}]'") from None






def _leaderboard(outcomes, root, m, latency, latency_repeats, latency_device) -> dict[str, Path]:
    repeats = latency_repeats if latency else 0
    if repeats < 0:
        raise GanzipError(f"--latency-repeats must be >= 0, got {latency_repeats}")
    return finish_batch(outcomes, root, m.path, latency_repeats=repeats, latency_device=latency_device)








# ====================================================================== Ray


def _ray_job(job_file: str, nproc: int, cpus: float) -> dict:
    """A Ray task: run one job's worker on this node (Ray has set CUDA_VISIBLE_DEVICES to its GPUs)."""
    return launch(Path(job_file), nproc, threads=max(1, int(cpus)))


def _ray_probe(paths: Sequence[str], token: str) -> dict:
    return {"node": socket.gethostname(), "missing": _missing(paths), "token": os.path.exists(token)}


def _connect_ray(ray, address: str | None) -> bool:
    """Connect to (or start) a Ray cluster; returns True when this call started the connection."""
    if address == "auto":
        address = _find_ray_address(ray)
    if address:
        host, port = _host_port(address)
        try:
            socket.create_connection((host, port), timeout=5).close()
        except OSError as exc:
            raise GanzipError(f"--address {address}: cannot reach a Ray cluster there ({exc.strerror or exc}); "
                              "start one with `ray start --head`, or check the address and port") from None
    if ray.is_initialized():
        return False  # this process is already connected (ray.init by the caller): use that cluster
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    try:
        ray.init(address=address or "local", **kwargs)  # "local": a new cluster on this machine
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = f"--address {address}" if address else "a local Ray cluster"
        raise GanzipError(f"{where}: cannot connect ({first}); start one with `ray start --head`, "
                          "or leave out --address to start a local one") from None
    return True


def _find_ray_address(ray) -> str:
    """What ``--address auto`` means to Ray: $RAY_ADDRESS, else the cluster `ray start` last started here."""
    found = os.environ.get("RAY_ADDRESS") or None
    if not found:
        try:
            from ray._private.services import canonicalize_bootstrap_address

            found = canonicalize_bootstrap_address("auto")
        except Exception:  # noqa: BLE001 - a private helper; without it "auto" finds nothing
            found = None
    if not found or found == "auto":
        raise GanzipError("--address auto: no running Ray cluster found on this machine (no $RAY_ADDRESS, nothing "
                          "started by `ray start`): start one with `ray start --head`, or give HOST:PORT")
    return found


def _host_port(address: str) -> tuple[str, int]:
    rest = address.split("://", 1)[1] if "://" in address else address
    host, _, port = rest.rpartition(":")
    default = 10001 if address.startswith("ray://") else 6379
    if not host:
        return rest, default
    try:
        return host, int(port)
    except ValueError:
        raise GanzipError(f"--address {address}: give auto, HOST:PORT or ray://HOST:PORT") from None


def _check_feasible(ray, gpus: float, cpus: float) -> None:
    """Refuse, naming the resource, a job that no node of the cluster can run (Ray would wait forever)."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    offers = [(n.get("Resources", {}).get("CPU", 0), n.get("Resources", {}).get("GPU", 0)) for n in nodes]
    if any(c >= cpus and g >= gpus for c, g in offers):
        return
    most_cpu = max((c for c, _ in offers), default=0)
    most_gpu = max((g for _, g in offers), default=0)
    missing = []
    if gpus > most_gpu:
        missing.append(f"--gpus-per-job {gpus:g} GPU(s), but the largest node offers {most_gpu:g}")
    if cpus > most_cpu:
        missing.append(f"--cpus-per-job {cpus:g} CPU(s), but the largest node offers {most_cpu:g}")
    if not missing:
        missing.append(f"{cpus:g} CPU(s) and {gpus:g} GPU(s) together, which no single node offers")
    raise GanzipError(f"no node of the Ray cluster ({len(nodes)} node(s)) can run a job: it asks for "
                      f"{'; '.join(missing)}: lower the request or add nodes")


def _check_visible(ray, m: Manifest, root: Path, todo: Sequence[JobOutcome]) -> None:
    """Every node must see the manifest folder, OUT and the jobs' files; ask each node (one tiny task each)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    root.mkdir(parents=True, exist_ok=True)
    token = root / BATCH_DIR / f".probe-{uuid.uuid4().hex[:12]}"
    gio.atomic_write_text(token, "written by the ganzip batch driver; every node must see it\n")
    probe = ray.remote(_ray_probe)
    paths = shared_paths(m, root, todo)
    try:
        refs = [probe.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(paths, str(token)) for n in ray.nodes() if n.get("Alive")]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=120)
        for answer in ray.get(ready):
            if answer["missing"] or not answer["token"]:
                what = answer["missing"][0] if answer["missing"] else f"OUT ({root})"
                raise GanzipError(f"the Ray node {answer['node']} cannot see {what}: put the manifest folder, "
                                  "its files and OUT on storage that every node shares (see docs/batch.md)")
    finally:
        token.unlink(missing_ok=True)


def run_on_ray(manifest: str | os.PathLike | Manifest, out: str | os.PathLike | None = None, *,
               address: str | None = None, gpus_per_job: float = 0, cpus_per_job: float = 1,
               latency: bool = True, latency_repeats: int = 5, latency_device: str = "cpu",
               echo: Callable[[str], None] | None = None) -> BatchResult:
    """Run every job of a manifest as a Ray task, then write the leaderboard.

    Args:
        address: an existing cluster (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``);
            None starts a local one (or uses the one this process is connected to).
        gpus_per_job, cpus_per_job: what each task asks Ray for; a job with
            more than one GPU runs under torchrun with one process per GPU.
        latency, latency_repeats, latency_device, echo: as in `ganzip.batch.run_batch`.

    The skip/resume/changed-settings rules, the failure records and the
    leaderboard are those of the local launcher. A task lost with its node
    is recorded as interrupted and resumes from its checkpoint next time.
    """
    say = _say(echo)
    if gpus_per_job < 0 or cpus_per_job <= 0:
        raise GanzipError(f"--gpus-per-job must be >= 0 and --cpus-per-job > 0, got {gpus_per_job} and {cpus_per_job}")
    if gpus_per_job > 1 and gpus_per_job != int(gpus_per_job):
        raise GanzipError(f"--gpus-per-job above 1 must be a whole number (one torchrun process each), got {gpus_per_job}")
    ray = _require("ray", "ray")
    m, root = _load(manifest, out)
    with rundir.lock(root):  # one coordinator per OUT: a second one stops here, before it submits a task
        outcomes, todo = plan_jobs(m, root, say)
        if todo:
            _ray_tasks(ray, address, m, root, outcomes, todo, gpus_per_job, cpus_per_job, say)
        paths = _leaderboard(outcomes, root, m, latency, latency_repeats, latency_device)
    return BatchResult(manifest=m.path, out=root, jobs=outcomes, leaderboard=paths)


def _ray_tasks(ray, address, m: Manifest, root: Path, outcomes, todo, gpus: float, cpus: float, say) -> None:
    """Connect (or start) Ray, check the cluster can run the jobs, run them; an interrupt records what finished."""
    started = _connect_ray(ray, address)
    try:
        _check_feasible(ray, gpus, cpus)
        _check_visible(ray, m, root, todo)
        _run_ray_tasks(ray, root, todo, gpus, cpus, say)
    except KeyboardInterrupt:
        finish_batch(outcomes, root, m.path)  # what finished; the others resume next time
        raise
    finally:
        if started:
            ray.shutdown()


def _run_ray_tasks(ray, root: Path, todo: Sequence[JobOutcome], gpus: float, cpus: float,
                   say: Callable[[str], None]) -> None:
    nproc = int(gpus) if gpus >= 1 else 1
    # max_retries: Ray reruns a task whose worker or node died (never one that raised); the rerun resumes.
    task = ray.remote(_ray_job).options(num_cpus=cpus, num_gpus=gpus, max_retries=1)
    refs = {}
    for oc in todo:
        clean_batch_files(oc.folder)
        refs[task.remote(str(write_job_file(oc.job, oc.folder, root)), nproc, cpus)] = oc
        say(f"[run]  {oc.job.name} as a Ray task ({cpus:g} CPU, {gpus:g} GPU; log: "
            f"{state_dir(root, oc.job.name) / WORKER_LOG})")
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the task's worker or node was lost
                    outcome = read_outcome(state_dir(root, refs[ref].job.name)) or interrupted(
                        f"the Ray task was lost ({type(exc).__name__}): it resumes from its checkpoint on the next run")
                apply_outcome(refs[ref], outcome, say)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise


# ====================================================================== SLURM



class SlurmTask:
    """What each array task runs (pickled by submitit): the job's worker, requeued on preemption.

    On SLURM's warning signal before a time limit or preemption, submitit
    calls `checkpoint` and requeues the task. The requeued task runs the
    same job file, so it lands in the same folder and the engine resumes
    from the last checkpoint there.
    """

    def __init__(self, nproc: int = 1):
        self.nproc = nproc

    def __call__(self, job_file: str) -> dict:
        cpus = os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("SLURM_CPUS_ON_NODE") or "1"
        return launch(Path(job_file), self.nproc, threads=int(cpus) if cpus.isdigit() else 1)

    def checkpoint(self, job_file: str):
        import submitit

        return submitit.helpers.DelayedSubmission(SlurmTask(self.nproc), job_file)


@dataclass
class SlurmSubmission:
    """A submitted array: SLURM's id for each job, and the record written to ``OUT/_batch/slurm.json``."""

    out: Path
    array_id: str | None
    job_ids: dict[str, str] = field(default_factory=dict)
    outcomes: list[JobOutcome] = field(default_factory=list)


def _check_sbatch() -> None:
    if shutil.which("sbatch") is None:
        raise GanzipError("--launcher slurm needs SLURM's sbatch on PATH, and none was found: run ganzip batch on "
                          "a node that submits jobs (a login node), or use --launcher ray or the local launcher")


def submit_slurm(manifest: str | os.PathLike | Manifest, out: str | os.PathLike | None = None, *,
                 partition: str | None = None, time_limit: str | None = None, gpus_per_job: int = 0,
                 cpus_per_job: int | None = None, array_parallelism: int | None = None,
                 slurm_opts: Sequence[str] = (), echo: Callable[[str], None] | None = None) -> SlurmSubmission:
    """Submit the jobs still to run as one SLURM job array (one array task per job), through submitit.

    Finished jobs are skipped and changed ones refused, as with the local
    launcher. Follow the array with `slurm_status` / `wait_slurm`
    (``ganzip batch MANIFEST --status`` / ``--wait``).
    """
    say = _say(echo)
    minutes = parse_time(time_limit) if time_limit is not None else None
    extra = parse_slurm_opts(slurm_opts)
    if gpus_per_job < 0 or (cpus_per_job is not None and cpus_per_job < 1):
        raise GanzipError(f"--gpus-per-job must be >= 0 and --cpus-per-job >= 1, got {gpus_per_job}, {cpus_per_job}")
    if array_parallelism is not None and array_parallelism < 1:
        raise GanzipError(f"--array-parallelism must be at least 1, got {array_parallelism}")
    _check_sbatch()
    submitit = _require("submitit", "slurm")
    m, root = _load(manifest, out)
    outcomes, todo = plan_jobs(m, root, say)
    sub = SlurmSubmission(out=root, array_id=None, outcomes=outcomes)
    if not todo:
        _write_record(root, m, sub, [])
        return sub
    job_files = []
    for oc in todo:
        clean_batch_files(oc.folder)
        job_files.append(str(write_job_file(oc.job, oc.folder, root)))
    executor = submitit.SlurmExecutor(folder=root / BATCH_DIR / "slurm" / "%j", max_num_timeout=10)
    params: dict[str, Any] = {"job_name": f"ganzip-{m.path.stem}", "time": None, "ntasks_per_node": 1,
                              "stderr_to_stdout": True, "signal_delay_s": 120}
    if partition:
        params["partition"] = partition
    if gpus_per_job:
        params["gpus_per_node"] = gpus_per_job
    if cpus_per_job:
        params["cpus_per_task"] = cpus_per_job
    if array_parallelism:
        params["array_parallelism"] = array_parallelism
    additional = dict(extra)
    if minutes is not None:
        additional.setdefault("time", str(minutes))
    if additional:
        params["additional_parameters"] = additional
    executor.update_parameters(**params)
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            jobs = executor.map_array(SlurmTask(max(1, gpus_per_job)), job_files)  # sbatch's stderr: in the error
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError,
            subprocess.CalledProcessError, OSError) as exc:
        raise GanzipError(f"sbatch refused the job array: {_sbatch_reason(exc)}") from None
    for oc, job in zip(todo, jobs):
        sub.job_ids[oc.job.name] = str(job.job_id)
        say(f"[submit] {oc.job.name}: SLURM job {job.job_id} (log: {state_dir(root, oc.job.name) / WORKER_LOG})")
    sub.array_id = str(jobs[0].job_id).split("_")[0]
    _write_record(root, m, sub, [oc.job.name for oc in todo])
    return sub


def _sbatch_reason(exc: BaseException) -> str:
    text = " ".join(str(getattr(exc, "stderr", "") or exc).split())
    match = re.search(r"sbatch: error: (.+?)(?= sbatch: error:|$)", text)
    return (match.group(1) if match else text)[:400] or type(exc).__name__


def _write_record(root: Path, m: Manifest, sub: SlurmSubmission, names: Sequence[str]) -> None:
    gio.atomic_write_json(root / BATCH_DIR / SLURM_RECORD, {
        "manifest": str(m.path), "array": sub.array_id, "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "jobs": {n: sub.job_ids[n] for n in names},
    })


def _read_record(root: Path) -> dict:
    path = root / BATCH_DIR / SLURM_RECORD
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise GanzipError(f"{path} is unreadable ({exc}): submit the manifest again with --launcher slurm") from None


def _squeue(job_ids: Sequence[str]) -> dict[str, str]:
    """SLURM's state of each job still in the queue ("12_0" -> "RUNNING"); jobs that left it are absent."""
    if not job_ids:
        return {}
    arrays = sorted({j.split("_")[0] for j in job_ids})
    try:
        proc = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(arrays)], capture_output=True,
                              text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GanzipError(f"cannot ask SLURM for the jobs' state (squeue: {exc})") from None
    if proc.returncode != 0 and "Invalid job id" not in proc.stderr:
        raise GanzipError(f"squeue failed: {' '.join(proc.stderr.split())[:300]}")
    states = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


@dataclass
class JobStatus:
    """One job's state for ``--status``: its outcome (status, error), SLURM's id and state, its last log line."""

    outcome: JobOutcome
    slurm_id: str | None = None
    queue_state: str | None = None
    last_line: str = ""


def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 2000))
            lines = [ln.strip() for ln in fh.read().decode(errors="replace").replace("\r", "\n").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln]
    return lines[-1] if lines else ""


def job_statuses(manifest: str | os.PathLike | Manifest, out: str | os.PathLike | None = None) -> list[JobStatus]:
    """Every job's state, from the files on disk and (for a SLURM submission) SLURM's queue.

    finished / skipped / failed / interrupted come from the job's folders,
    exactly as the leaderboard reads them; a job still in SLURM's queue is
    ``queued`` or ``running``; a Ray job whose worker started but recorded
    nothing yet is ``started``; one never submitted is ``pending``.
    """
    m, root = _load(manifest, out)
    record = _read_record(root)
    submitted: dict[str, str] = record.get("jobs", {}) if isinstance(record.get("jobs"), dict) else {}
    if submitted:
        _check_sbatch()
    queue = _squeue(list(submitted.values()))
    out_list = []
    for job in m.jobs:
        oc = JobOutcome(job=job, status="pending", folder=root / job.name)
        st = JobStatus(outcome=oc, slurm_id=submitted.get(job.name))
        sdir = state_dir(root, job.name)
        st.last_line = _last_line(sdir / WORKER_LOG)
        state, message = job_state(job, oc.folder)
        if st.slurm_id is not None and st.slurm_id in queue:
            st.queue_state = queue[st.slurm_id]
            oc.status = "running" if st.queue_state in ("RUNNING", "COMPLETING") else "queued"
        elif state == "done":
            outcome = read_outcome(sdir)
            oc.status = "finished" if job.name in submitted else "skipped"
            oc.seconds = (outcome or {}).get("seconds")
        elif state == "changed":
            oc.status, oc.error = "failed", message
        elif (sdir / OUTCOME_FILE).is_file():
            apply_outcome(oc, read_outcome(sdir) or {}, lambda _l: None)
        elif st.slurm_id is not None:
            oc.status = "interrupted"
            oc.error = ("stopped by the cluster before it finished (scancel, time limit, lost node): "
                        "it resumes from its checkpoint on the next run")
        elif (sdir / JOB_FILE).is_file():
            oc.status = "started"  # a Ray or local run: running now, or stopped before it finished
        out_list.append(st)
    return out_list


def wait_slurm(manifest: str | os.PathLike | Manifest, out: str | os.PathLike | None = None, *,
               poll_seconds: float = 15.0, latency: bool = True, latency_repeats: int = 5,
               latency_device: str = "cpu", echo: Callable[[str], None] | None = None) -> BatchResult:
    """Wait until no job of the submission is queued or running, then write the leaderboard from disk."""
    say = _say(echo)
    m, root = _load(manifest, out)
    if not _read_record(root):
        raise GanzipError(f"nothing was submitted into {root}: run ganzip batch {m.path} --launcher slurm first")
    seen: dict[str, str] = {}
    while True:
        statuses = job_statuses(m, root)
        for st in statuses:
            oc = st.outcome
            if seen.get(oc.job.name) != oc.status:
                seen[oc.job.name] = oc.status
                if oc.status in ("finished", "failed", "interrupted"):
                    apply_outcome(oc, {"status": oc.status, "seconds": oc.seconds, "error": {"line": oc.error}}, say)
                elif oc.status == "running":
                    say(f"[run]  {oc.job.name} (SLURM job {st.slurm_id})")
        if not any(st.outcome.status in ("queued", "running") for st in statuses):
            break
        time.sleep(poll_seconds)
    outcomes = [st.outcome for st in statuses]
    paths = _leaderboard(outcomes, root, m, latency, latency_repeats, latency_device)
    return BatchResult(manifest=m.path, out=root, jobs=outcomes, leaderboard=paths)


__all__ = ["JobStatus", "apply_outcome", "SlurmSubmission", "SlurmTask", "job_statuses", "parse_slurm_opts", "parse_time",
           "run_on_ray", "submit_slurm", "wait_slurm"]

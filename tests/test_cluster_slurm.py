"""`ganzip batch --launcher slurm` on a real single-node SLURM started by the test (no mocks).

The test writes a minimal slurm.conf into a temporary folder, starts
`munged` with a generated key, `slurmctld` and `slurmd` on localhost
(Debian's slurm-wlm and munge packages; `.ci/run` installs them), and
submits through submitit. Without those programs the tests are skipped,
naming the packages.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ganzip import launchers
from ganzip.engine import CHECKPOINT_DIR, CHECKPOINT_JSON
from ganzip.errors import GanzipError
from ganzip.jobrun import BATCH_DIR

from .cluster_jobs import LONG_MANIFEST, attempts, check_first_run, make_experiment

pytest.importorskip("submitit", reason="submitit is not installed: pip install 'ganzip[slurm]'")
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch")
MISSING = [d for d in DAEMONS if shutil.which(d) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"no {', '.join(MISSING)}: "
                                                      "apt-get install slurm-wlm munge (.ci/run does)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SLURM_CONF = """\
ClusterName=ganziptest
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser={user}
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 RealMemory=500 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A running single-node SLURM; yields its folder. Skips, with the daemons' own error, if it cannot start."""
    if os.geteuid() != 0:
        pytest.skip("slurmd must run as root to start jobs as the submitting user")
    root = Path(tmp_path_factory.mktemp("slurm"))
    for sub in ("munge", "state", "spool"):
        (root / sub).mkdir(mode=0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = root / "slurm.conf"
    conf.write_text(SLURM_CONF.format(root=root, ctld_port=_free_port(), slurmd_port=_free_port(), user="root"))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    procs: list[subprocess.Popen] = []

    def start(argv: list[str], log: str) -> None:
        procs.append(subprocess.Popen(argv, env=env, stdout=open(root / log, "wb"), stderr=subprocess.STDOUT))

    start(["munged", "--foreground", "--force", f"--socket={root}/munge/munge.socket", f"--key-file={key}",
           f"--pid-file={root}/munge/munged.pid", f"--log-file={root}/munge/munged.log",
           f"--seed-file={root}/munge/seed"], "munged.out")
    _until(lambda: (root / "munge" / "munge.socket").exists(), 20)
    start(["slurmctld", "-D", "-i"], "slurmctld.out")
    start(["slurmd", "-D", "-N", "localhost"], "slurmd.out")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)  # sbatch, squeue and scancel of this test find the cluster
    try:
        def idle() -> bool:
            if any(p.poll() is not None for p in procs):
                return True
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=env)
            return out.stdout.strip() == "idle"

        ok = _until(idle, 60) and all(p.poll() is None for p in procs)
        if not ok:
            logs = " | ".join(f"{n}: {(root / n).read_text(errors='replace').strip()[-400:]}"
                              for n in ("munged.out", "slurmctld.out", "slurmd.out", "slurmctld.log", "slurmd.log")
                              if (root / n).exists())
            pytest.skip(f"SLURM did not start in this sandbox: {logs}")
        yield root
    finally:
        queued = subprocess.run(["squeue", "-h", "-o", "%A"], capture_output=True, text=True, env=env).stdout.split()
        if queued:  # stop this cluster's jobs before its daemons, so no worker outlives the test
            subprocess.run(["scancel", *sorted(set(queued))], env=env, check=False)
            _until(lambda: not subprocess.run(["squeue", "-h"], capture_output=True, text=True, env=env).stdout.strip(),
                   30)
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def _queue_state(job_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True).stdout


def _until(check, seconds: float, every: float = 0.5) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return bool(check())


@pytest.fixture(scope="module")
def first_run(slurm, tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm-batch")
    manifest = make_experiment(root)
    sub = launchers.submit_slurm(manifest, root / "out", time_limit="00:10:00")
    result = launchers.wait_slurm(manifest, root / "out", poll_seconds=1, latency_repeats=1)
    return root, manifest, sub, result


def test_three_jobs_run_as_a_slurm_array_to_a_leaderboard_with_the_failure_recorded(first_run):
    root, _, sub, result = first_run
    ids = list(sub.job_ids.values())
    assert ids == [f"{sub.array_id}_{i}" for i in range(3)]  # one array, one task per job
    check_first_run(root / "out")
    assert [oc.status for oc in result.jobs] == ["finished", "finished", "failed"]
    record = json.loads((root / "out" / BATCH_DIR / "slurm.json").read_text())
    assert record["jobs"] == sub.job_ids


def test_status_reports_each_job_from_disk_once_the_array_ended(first_run, cli):
    root, manifest, _, _ = first_run
    res = cli("batch", manifest, "--out", root / "out", "--status")
    assert res.exit_code == 0, res.stderr
    lines = {ln.split()[0]: ln for ln in res.stdout.splitlines()}
    assert lines["kd@w0.25"].split()[1] == "finished" and lines["broken"].split()[1] == "failed"
    assert "do not fit" in lines["broken"]


def test_a_slurm_rerun_submits_only_the_failed_job(first_run):
    root, manifest, _, _ = first_run
    again = launchers.submit_slurm(manifest, root / "out")
    assert list(again.job_ids) == ["broken"]
    result = launchers.wait_slurm(manifest, root / "out", poll_seconds=1, latency=False)
    assert [oc.status for oc in result.jobs] == ["skipped", "skipped", "failed"]
    assert [attempts(root / "out", j) for j in ("kd@w0.25", "kd@w0.5", "broken")] == [1, 1, 2]


def test_a_requeued_job_resumes_in_its_folder_and_a_cancelled_one_on_the_rerun(slurm, tmp_path):
    manifest = make_experiment(tmp_path, LONG_MANIFEST)
    out = tmp_path / "out"
    log = out / BATCH_DIR / "long" / "log.txt"
    sub = launchers.submit_slurm(manifest, out)
    state = out / "long" / CHECKPOINT_DIR / CHECKPOINT_JSON
    assert _until(state.is_file, 240, every=0.1), log.read_text()[-2000:]

    # Preemption: SLURM stops the running job and queues it again (StartTime=now skips SLURM's
    # requeue delay). The same array task runs the same job file, in the same folder, and resumes.
    job_id = sub.job_ids["long"]
    subprocess.run(["scontrol", "requeue", job_id], check=True, capture_output=True)
    assert _until(lambda: "PENDING" in _queue_state(job_id), 60, every=0.2)
    subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], check=True, capture_output=True)
    assert _until(lambda: "compress kd-pixel: resuming at step" in log.read_text(), 180, every=0.1), \
        log.read_text()[-2000:]
    assert attempts(out, "long") == 2

    # scancel: nothing requeues it; the job is interrupted and the next run resumes it.
    subprocess.run(["scancel", job_id], check=True)
    saved = json.loads(state.read_text())["step"]
    result = launchers.wait_slurm(manifest, out, poll_seconds=1, latency=False)
    long = result.jobs[0]
    assert long.status == "interrupted", long.error
    assert "resumes from its checkpoint" in long.error and not (out / "long" / "error.txt").exists()
    assert json.loads((out / "leaderboard.json").read_text())["jobs"][0]["status"] == "interrupted"

    again = launchers.submit_slurm(manifest, out)
    assert list(again.job_ids) == ["long"]
    result = launchers.wait_slurm(manifest, out, poll_seconds=1, latency=False)
    assert result.jobs[0].status == "finished", result.jobs[0].error
    report = json.loads((out / "long" / "report.json").read_text())
    assert report["training"]["resumed_from"] >= saved > 0
    assert report["training"]["steps"] == 400 and attempts(out, "long") == 3


def test_more_gpus_than_the_nodes_have_is_sbatchs_one_line(slurm, cli, tmp_path):
    manifest = make_experiment(tmp_path)
    line = cli("batch", manifest, "--out", tmp_path / "gpu-out", "--launcher", "slurm", "--gpus-per-job", 8) \
        .assert_user_error("sbatch refused the job array")
    assert "gres" in line.lower() or "node configuration" in line.lower(), line


def test_a_time_that_does_not_parse_is_one_line(cli, tmp_path):
    manifest = make_experiment(tmp_path)
    cli("batch", manifest, "--launcher", "slurm", "--time", "90 minutes").assert_user_error("--time", "HH:MM:SS")
    cli("batch", manifest, "--launcher", "slurm", "--time", "1:75:00").assert_user_error("below 60")
    assert launchers.parse_time("04:00:00") == 240 and launchers.parse_time("1-00:00") == 1440


def test_no_sbatch_on_path_is_one_line(cli, monkeypatch, tmp_path):
    manifest = make_experiment(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without SLURM's programs
    cli("batch", manifest, "--launcher", "slurm").assert_user_error("needs SLURM's sbatch on PATH")


def test_without_submitit_the_error_names_the_install_command(cli, monkeypatch, tmp_path):
    manifest = make_experiment(tmp_path)
    monkeypatch.setitem(sys.modules, "submitit", None)  # what a missing package looks like to `import submitit`
    cli("batch", manifest, "--launcher", "slurm").assert_user_error("pip install 'ganzip[slurm]'")

"""`ganzip batch --launcher ray` on a real local Ray cluster started by the test (no mocks).

The cluster is `ray.init(num_cpus=2)` in this process; a second one, for
the "workers cannot see the files" case, is `ray start --head` in its own
mount namespace where the experiment folder is hidden under an empty tmpfs.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ganzip import launchers
from ganzip.errors import GanzipError

from .cluster_jobs import attempts, check_first_run, make_experiment

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'ganzip[ray]'")


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def first_run(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    manifest = make_experiment(root)
    events: list[str] = []
    result = launchers.run_on_ray(manifest, root / "out", cpus_per_job=1, latency_repeats=1, echo=events.append)
    return root, manifest, result, events


def test_three_jobs_run_as_ray_tasks_to_a_leaderboard_with_the_failure_recorded(first_run):
    root, _, result, events = first_run
    check_first_run(root / "out")
    assert [oc.status for oc in result.jobs] == ["finished", "finished", "failed"]
    assert sum(e.startswith("[run]") and "Ray task" in e for e in events) == 3


def test_a_rerun_on_ray_skips_the_finished_jobs_and_retries_the_failed_one(first_run):
    root, manifest, _, _ = first_run
    again = launchers.run_on_ray(manifest, root / "out", latency=False)
    assert [oc.status for oc in again.jobs] == ["skipped", "skipped", "failed"]
    assert [attempts(root / "out", j) for j in ("kd@w0.25", "kd@w0.5", "broken")] == [1, 1, 2]


def test_more_gpus_than_any_node_offers_is_refused_naming_the_gpus(first_run):
    root, manifest, _, _ = first_run
    with pytest.raises(GanzipError, match=r"gpus_per_job=1 GPU\(s\), but the largest node offers 0"):
        launchers.run_on_ray(manifest, root / "out", gpus_per_job=1, latency=False)
    with pytest.raises(GanzipError, match=r"cpus_per_job=64 CPU\(s\), but the largest node offers 2"):
        launchers.run_on_ray(manifest, root / "out", cpus_per_job=64, latency=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_address_is_one_line(first_run, cli):
    _, manifest, _, _ = first_run
    line = cli("batch", manifest, "--launcher", "ray", "--address", f"127.0.0.1:{_free_port()}").assert_user_error(
        "cannot reach a Ray cluster", "ray start --head")
    assert "--address 127.0.0.1:" in line


def test_address_auto_with_no_cluster_running_is_one_line(first_run, cli, monkeypatch, tmp_path):
    _, manifest, _, _ = first_run
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{_free_port()}")  # where `auto` looks first: nothing there
    cli("batch", manifest, "--launcher", "ray", "--address", "auto").assert_user_error("cannot reach a Ray cluster")


def test_without_ray_the_error_names_the_install_command(first_run, cli, monkeypatch):
    _, manifest, _, _ = first_run
    monkeypatch.setitem(sys.modules, "ray", None)  # what a missing package looks like to `import ray`
    cli("batch", manifest, "--launcher", "ray").assert_user_error("pip install 'ganzip[ray]'")


def _can_hide_folders() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs none /mnt"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_hide_folders(), reason="needs unshare -m and mount (root) to hide a folder from workers")
def test_a_manifest_folder_the_workers_cannot_see_is_refused(tmp_path):
    manifest = make_experiment(tmp_path)
    port = _free_port()
    ray_bin = str(Path(sys.executable).parent / "ray")
    current = Path("/tmp/ray/ray_current_cluster")  # `ray start` records itself here for address="auto"
    before = current.read_bytes() if current.is_file() else None
    # Token authentication is not what this test is about; a head started in another mount namespace
    # and a driver outside it do not always agree on the token, so both run without it.
    no_token = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": ""}
    # A Ray head whose processes live in their own mount namespace, with the experiment folder hidden.
    head = subprocess.Popen(
        ["unshare", "-m", "sh", "-c", f'mount -t tmpfs none "{tmp_path}" && exec "{ray_bin}" start --head --block '
         f"--port {port} --num-cpus 1 --include-dashboard false --disable-usage-stats"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, env=no_token)
    try:
        said = []
        for line in head.stdout:  # `ray start` says so once the head (GCS and raylet) is up
            said.append(line)
            if "Ray runtime started" in line:
                break
        assert head.poll() is None, "".join(said)[-2000:]
        threading.Thread(target=head.stdout.read, daemon=True).start()  # keep its pipe drained
        res = subprocess.run([sys.executable, "-m", "ganzip", "batch", str(manifest), "--launcher", "ray",
                              "--address", f"127.0.0.1:{port}", "--latency-repeats", "0"],
                             capture_output=True, text=True, timeout=240,
                             env=no_token)
        errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
        assert res.returncode == 2, res.stderr[-3000:]
        assert len(errors) == 1 and "cannot see" in errors[0] and "storage that every node shares" in errors[0]
        assert "Traceback" not in res.stderr
        assert not (tmp_path / "manifest-runs" / "kd@w0.25").exists()  # nothing ran
    finally:
        os.killpg(head.pid, 15)
        head.wait(timeout=60)
        if before is None:
            current.unlink(missing_ok=True)  # leave no pointer to the stopped cluster behind
        else:
            current.write_bytes(before)


def test_the_job_json_round_trips_every_field(tmp_path):
    from ganzip import batch
    from ganzip.jobrun import job_from_dict, job_to_dict

    job = batch.Job(name="a", model=tmp_path / "G.pth", data="builtin:day2night", width=0.5, arch="resnet_6blocks",
                    arch_opts={"ngf": 8}, target=tmp_path, overrides=["crd.weight=10"], steps=5, seed=3)
    back = job_from_dict(json.loads(json.dumps(job_to_dict(job))))
    assert back == job and back.spec_hash() == job.spec_hash()

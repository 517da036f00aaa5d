"""The worker every cluster launcher starts: the job as JSON in, `compress()` run, the outcome on disk."""
from __future__ import annotations

import json

import pytest
import torch

from ganzip import batch
from ganzip.jobrun import OUTCOME_FILE, launch, write_job_file

from .cluster_jobs import MANIFEST, attempts, make_experiment


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_a_multi_process_job_runs_its_worker_under_torchrun_and_records_once(tmp_path):
    m = batch.load_manifest(make_experiment(tmp_path, MANIFEST))
    job = m.jobs[0]
    folder = tmp_path / "out" / job.name
    job_file = write_job_file(job, folder, tmp_path / "out")
    assert json.loads(job_file.read_text())["job"]["name"] == job.name
    outcome = launch(job_file, nproc=2, threads=2)  # two gloo processes on the CPU, as two GPUs would be
    assert outcome["status"] == "finished", (job_file.parent / "log.txt").read_text()[-3000:]
    report = json.loads((folder / "report.json").read_text())
    assert report["training"]["world_size"] == 2
    assert json.loads((folder / "done.json").read_text())["spec_hash"] == job.spec_hash()
    assert json.loads((job_file.parent / OUTCOME_FILE).read_text())["status"] == "finished"
    assert attempts(tmp_path / "out", job.name) == 1

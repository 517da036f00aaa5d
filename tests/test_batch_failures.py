"""A failed batch job is recorded as data by the code that ran it, never read back from its output.

The teacher here is a user's factory (a module written by the test, allowed
with trust_code) that raises, or kills its process; at exit it prints a
misleading ``error:`` line to stderr, the kind of text a parser of the
output would have taken for the reason.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from ganzip import batch, models
from ganzip.engine import compress

from .test_batch import FAST, write

MODULE = '''
import atexit, os, sys

def _mislead():
    if "jobrun" in sys.argv[0]:  # only in the worker process, not in the test's own
        print("error: CUDA out of memory (misleading text printed at exit)", file=sys.stderr, flush=True)

atexit.register(_mislead)

def make(ngf=4):
    if ngf == 5:
        os._exit(3)  # dies before anything can be recorded
    raise ValueError(f"the real reason: make(ngf={ngf}) refuses to build")
'''


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("failures")
    write(tmp_path / "code" / "misleading_gen_xyz.py", MODULE)
    torch.manual_seed(0)
    torch.save(models.create("resnet_6blocks", ngf=4).state_dict(), tmp_path / "G.pth")
    jobs = "".join(f'[[job]]\nname = "{name}"\narch_opts = {{ngf = {ngf}}}\n' for name, ngf in (("raises", 4),
                                                                                               ("dies", 5)))
    manifest = write(tmp_path / "m.toml", '[defaults]\nmodel = "G.pth"\narch = "misleading_gen_xyz:make"\n'
                                          f'data = "builtin:day2night"\nsize = 32\nsteps = 1\nset = {FAST}\n' + jobs)
    with pytest.MonkeyPatch.context() as mp:  # the module is importable here and in the workers
        mp.syspath_prepend(str(tmp_path / "code"))
        mp.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "code"), os.environ.get("PYTHONPATH", "")]))
        result = batch.run_batch(manifest, tmp_path / "out", launcher="subprocess", latency=False, trust_code=True)
        yield tmp_path, manifest, result


def _in_process_error(tmp_path: Path) -> BaseException:
    """What compress itself raises for the first job, called directly (the independent reference)."""
    with pytest.raises(Exception) as info:
        compress(str(tmp_path / "G.pth"), arch="misleading_gen_xyz:make", arch_opts={"ngf": 4},
                 data="builtin:day2night", size=32, steps=1, out=tmp_path / "direct", quiet=True)
    return info.value


def test_a_workers_failure_is_its_exception_as_data_whatever_its_stderr_says(experiment):
    tmp_path, _, result = experiment
    expected = _in_process_error(tmp_path)
    raises, dies = result.jobs
    assert (raises.status, dies.status) == ("failed", "failed")

    outcome = json.loads((tmp_path / "out" / "_batch" / "raises" / "outcome.json").read_text())
    error = outcome["error"]
    assert error["type"] == type(expected).__name__
    assert error["message"] == str(expected).strip() and "the real reason: make(ngf=4)" in error["message"]
    assert raises.error == error["line"] and "misleading" not in raises.error
    trace = Path(error["traceback_file"])
    assert trace == tmp_path / "out" / "raises" / "error.txt"
    assert "Traceback (most recent call last)" in trace.read_text() and "refuses to build" in trace.read_text()
    # the misleading line is in the user's log, as written, and nowhere in the record
    assert "misleading text printed at exit" in (tmp_path / "out" / "raises" / "compress.log").read_text()


def test_a_worker_that_dies_without_a_record_is_a_failure_pointing_at_its_log(experiment):
    tmp_path, _, result = experiment
    dies = result.jobs[1]
    outcome = json.loads((tmp_path / "out" / "_batch" / "dies" / "outcome.json").read_text())
    assert outcome["error"]["type"] == "WorkerExit" and "exited with code 3" in outcome["error"]["message"]
    assert Path(outcome["error"]["traceback_file"]).is_file()
    assert dies.error == outcome["error"]["line"] and "misleading" not in dies.error
    assert (tmp_path / "out" / "dies" / "error.txt").read_text().startswith(dies.error)


def test_in_process_and_worker_failures_are_the_same_record(experiment):
    root, manifest, first = experiment
    only_raises = write(root / "one.toml", manifest.read_text().split('[[job]]\nname = "dies"')[0])
    here = batch.run_batch(only_raises, root / "here", latency=False, trust_code=True)
    there = first.jobs[0]  # the same job, run by a worker process
    assert here.jobs[0].status == there.status == "failed"
    assert here.jobs[0].error == there.error and "the real reason" in here.jobs[0].error
    assert "Traceback" in (root / "here" / "raises" / "error.txt").read_text()

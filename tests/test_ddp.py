"""Data-parallel training: two CPU processes (gloo) launched by torchrun agree, and only rank 0 writes."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import ganzip

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")

WORKER = textwrap.dedent("""
    import json, os, sys
    import torch
    import ganzip.io as gio

    rank = int(os.environ["RANK"])
    results = sys.argv[1]
    writes = []
    if rank != 0:  # record every file a non-zero rank would write through ganzip.io
        original = gio.atomic_open
        def spy(path, mode="wb"):
            writes.append(str(path))
            return original(path, mode)
        gio.atomic_open = spy

    from ganzip import engine, models
    from safetensors.torch import save_file

    torch.manual_seed(1)  # the same random-weight teacher on every rank
    teacher = models.create("resnet_6blocks", ngf=8)
    result = engine.compress(
        teacher, data=sys.argv[2], width=0.25, recipe="crd", out=sys.argv[3], size=64, steps=4, device="cpu",
        overrides=["crd.patch_size=16", "perceptual.weight=0", "discriminator.ndf=8", "eval.max_images=2"],
        checkpoint_every=2, eval_every=2, log_every=1, quiet=True, evaluate=False,
    )
    save_file({k: v.contiguous() for k, v in result.train.last_state.items()}, f"{results}/rank{rank}.safetensors")
    with open(f"{results}/rank{rank}.json", "w") as fh:
        json.dump({"writes": writes, "student_path": str(result.student_path), "steps": result.train.steps}, fh)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    from ganzip.data import make_dataset

    root = tmp_path_factory.mktemp("ddp")
    data = root / "data"
    make_dataset("solid2striped", data, n=10, size=64, progress=False)
    script = root / "worker.py"
    script.write_text(WORKER)
    results, out = root / "results", root / "out"
    results.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GANZIP_OFFLINE": "1",
           "PYTHONPATH": str(Path(ganzip.__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), str(script), str(results), str(data), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return results, out


def test_ranks_end_with_identical_parameters(ddp_run):
    from safetensors.torch import load_file

    results, _ = ddp_run
    a, b = load_file(str(results / "rank0.safetensors")), load_file(str(results / "rank1.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_every_rank_runs_every_step(ddp_run):
    results, _ = ddp_run
    infos = [json.loads((results / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["steps"] for i in infos] == [4, 4]


def test_only_rank_zero_writes(ddp_run):
    results, out = ddp_run
    rank0 = json.loads((results / "rank0.json").read_text())
    rank1 = json.loads((results / "rank1.json").read_text())
    assert rank1["writes"] == [] and rank1["student_path"] == "None"
    assert rank0["student_path"].endswith("student.safetensors")
    assert (out / "student.safetensors").exists() and (out / "train_log.csv").exists()
    rows = (out / "train_log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]

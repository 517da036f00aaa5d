"""Crash safety: SIGKILL and resume, no half-written files, disk full and permission denied.

The kill tests run the real CLI in subprocesses (`python -m ganzip compress`)
and SIGKILL them at chosen moments; the disk tests make `os.replace` fail
in-process at the N-th checkpoint write. The teacher is a random-weight ngf-4
ResNet saved inside the test (no pretrained weights exist here); the data are
32 px random PNGs (unpaired, so the discriminator trains too) with 8 px CRD
patches.
"""
from __future__ import annotations

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import ganzip

ROOT = Path(ganzip.__file__).resolve().parents[1]
STEPS, EVERY = 24, 3
RUN = ["--arch", "resnet_6blocks", "--arch-opt", "ngf=4", "--size", "32", "--set", "crd.patch_size=8",
       "--set", "perceptual.weight=0", "--set", "discriminator.ndf=4", "--set", "eval.max_images=2",
       "--device", "cpu", "--quiet", "--offline"]


def record(request, line: str) -> None:
    """With GANZIP_RECORD_ERRORS=FILE, append the user's line to FILE (regenerates docs/reliability.md)."""
    path = os.environ.get("GANZIP_RECORD_ERRORS")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"test": request.node.name, "line": line}) + "\n")


def unreadable_files(out: Path) -> list[str]:
    """Every .safetensors, .json, .csv and .png under OUT that does not parse completely."""
    from PIL import Image
    from safetensors import safe_open

    bad = []
    for p in sorted(out.rglob("*")):
        if not p.is_file():
            continue
        try:
            if p.suffix == ".safetensors":
                with safe_open(str(p), framework="pt") as fh:
                    for k in fh.keys():
                        fh.get_tensor(k)
            elif p.suffix == ".json":
                json.loads(p.read_text())
            elif p.suffix == ".csv":
                rows = list(csv.reader(p.read_text().splitlines()))
                assert all(len(r) == len(rows[0]) for r in rows)
            elif p.suffix == ".png":
                with Image.open(p) as im:
                    im.load()
        except Exception as exc:  # noqa: BLE001 - any failure to parse is the finding
            bad.append(f"{p.relative_to(out)}: {type(exc).__name__}: {exc}")
    return bad


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


# ---------------------------------------------------------------- SIGKILL a real `ganzip compress`


class Victim:
    """Runs one `python -m ganzip compress` command again and again, killing it when told."""

    def __init__(self, cmd: list[str], out: Path):
        self.cmd, self.out = cmd, out
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "GANZIP_OFFLINE": "1",
                    "PYTHONPATH": str(ROOT)}
        self.ckpt = out / "checkpoint"
        self.state = self.ckpt / "state.json"

    def start(self) -> subprocess.Popen:
        return subprocess.Popen(self.cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def kill_when(self, ready, timeout: float = 240.0) -> dict:
        """Start, poll `ready()` every ~2 ms, SIGKILL as soon as it is true; describe what was left."""
        proc = self.start()
        deadline = time.time() + timeout
        fired = False
        while proc.poll() is None and time.time() < deadline:
            if ready():
                proc.send_signal(signal.SIGKILL)
                fired = True
                break
            time.sleep(0.002)
        _, err = proc.communicate()
        assert fired, f"the run ended (rc {proc.returncode}) before the kill moment: {err[-2000:]}"
        step = json.loads(self.state.read_text())["step"] if self.state.exists() else None
        return {"returncode": proc.returncode, "step": step, "unreadable": unreadable_files(self.out),
                "tmp_seen": getattr(ready, "tmp_seen", False)}

    def run_to_end(self) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd, env=self.env, capture_output=True, text=True, timeout=600)


class _CheckpointWriteStarts:
    """True once a checkpoint write is under way: a temp file appears or state.json is replaced."""

    def __init__(self, ckpt: Path):
        self.ckpt = ckpt
        self.mtime = (ckpt / "state.json").stat().st_mtime_ns
        self.tmp_seen = False

    def __call__(self) -> bool:
        try:
            names = os.listdir(self.ckpt)
            if any(n.endswith(".tmp") for n in names):
                self.tmp_seen = True
                return True
            return (self.ckpt / "state.json").stat().st_mtime_ns != self.mtime
        except FileNotFoundError:
            return False


@pytest.fixture(scope="module")
def kill_scenario(teacher_file, data_dir, tmp_path_factory):
    """An uninterrupted run and a run SIGKILLed three times, then finished; both from the same command.

    Kill 1: as soon as OUT/run.json exists (the run has just started: teacher
    and data loaded, no checkpoint yet). Kill 2: as soon as the first
    checkpoint exists. Kill 3: the moment the next checkpoint write starts
    (a temp file appears, or state.json is replaced).
    """
    base = tmp_path_factory.mktemp("kill")

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "ganzip", "compress", str(teacher_file), "--data", str(data_dir),
                "--out", str(out), *RUN, "--steps", str(STEPS), "--checkpoint-every", str(EVERY),
                "--eval-every", "6", "--log-every", "1"]

    reference = Victim(command(base / "whole"), base / "whole")
    victim = Victim(command(base / "killed"), base / "killed")
    ref_proc = reference.start()  # runs beside the victim (each on one thread)
    kills = [victim.kill_when(lambda: (victim.out / "run.json").exists())]
    kills.append(victim.kill_when(victim.state.exists))
    kills.append(victim.kill_when(_CheckpointWriteStarts(victim.ckpt)))
    final = victim.run_to_end()
    ref_out, ref_err = ref_proc.communicate(timeout=600)
    assert ref_proc.returncode == 0, ref_err[-3000:]
    assert final.returncode == 0, final.stderr[-3000:]
    return {"whole": reference.out, "killed": victim.out, "kills": kills, "final": final}


def test_every_kill_is_a_sigkill_that_lands_before_the_end(kill_scenario):
    kills = kill_scenario["kills"]
    assert [k["returncode"] for k in kills] == [-signal.SIGKILL] * 3
    assert kills[0]["step"] in (None, EVERY)  # before the first checkpoint, unless the poller was starved
    assert kills[1]["step"] is not None and kills[1]["step"] % EVERY == 0
    assert kills[2]["step"] >= kills[1]["step"]


def test_no_file_is_half_written_after_any_kill(kill_scenario):
    for i, kill in enumerate(kill_scenario["kills"], 1):
        assert kill["unreadable"] == [], f"after kill {i}: {kill['unreadable']}"


def test_the_killed_run_resumes_from_its_last_checkpoint(kill_scenario):
    last = kill_scenario["kills"][-1]["step"]
    final = kill_scenario["final"]
    assert f"resumed from the checkpoint at step {last} of {STEPS}" in final.stderr
    report = json.loads((kill_scenario["killed"] / "report.json").read_text())
    assert report["training"]["resumed_from"] == last and report["training"]["steps"] == STEPS


def test_the_resumed_run_ends_with_the_same_student_as_an_uninterrupted_one(kill_scenario):
    for name in ("student.safetensors", "student_last.safetensors"):
        whole = _tensors(kill_scenario["whole"] / name)
        killed = _tensors(kill_scenario["killed"] / name)
        assert whole.keys() == killed.keys()
        for key in whole:
            assert torch.equal(whole[key], killed[key]), f"{name}: {key}"


def test_the_resumed_run_logs_the_same_losses_as_an_uninterrupted_one(kill_scenario):
    # Fails when kill 2 lands between the checkpoint and the train_log.csv write (see the next test).
    whole = (kill_scenario["whole"] / "train_log.csv").read_text()
    killed = (kill_scenario["killed"] / "train_log.csv").read_text()
    assert len(whole.splitlines()) == STEPS + 1 and whole == killed


def test_a_finished_killed_run_leaves_only_parsable_outputs(kill_scenario):
    out = kill_scenario["killed"]
    assert unreadable_files(out) == []
    assert not (out / "checkpoint").exists()
    assert json.loads((out / "run.json").read_text())["status"] == "finished"


def test_a_kill_between_a_checkpoint_and_its_log_loses_no_log_rows(cli, teacher_file, data_dir, tmp_path,
                                                                   monkeypatch):
    # Deterministic version of the window kill 2 can hit: the process dies right after the checkpoint
    # is saved, before train_log.csv is rewritten. Defect: engine._train's checkpoint() saves the
    # checkpoint first and the log second, so the resumed run's log silently lacks rows 1..N.
    # Fix: write the log before save_checkpoint (the resume reads only rows <= the checkpoint's step).
    from ganzip.training import trainlog

    real = trainlog.write_log

    def die_once(path, rows):
        monkeypatch.setattr(trainlog, "write_log", real)
        raise KeyboardInterrupt  # stands in for SIGKILL at this exact point

    monkeypatch.setattr(trainlog, "write_log", die_once)
    out = tmp_path / "o"
    args = ["compress", teacher_file, "--data", data_dir, "--out", out, *RUN, "--steps", "4",
            "--checkpoint-every", "2", "--eval-every", "0", "--log-every", "1"]
    assert cli(*args).exit_code == 130
    res = cli(*args)
    assert res.exit_code == 0, res.stderr
    steps = [int(r.split(",")[0]) for r in (out / "train_log.csv").read_text().splitlines()[1:]]
    assert steps == [1, 2, 3, 4]


# ---------------------------------------------------------------- the atomic writer under SIGKILL

_WRITER = """
import sys
from ganzip.io import atomic_write_bytes
path, size = sys.argv[1], int(sys.argv[2])
blocks = [b"A" * size, b"B" * size]
print("ready", flush=True)
i = 0
while True:
    atomic_write_bytes(path, blocks[i % 2])
    i += 1
"""


def test_a_file_written_atomically_is_whole_after_sigkill_at_random_moments(tmp_path):
    target, size = tmp_path / "blob.bin", 1 << 21
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = np.random.default_rng(0)
    for delay in rng.uniform(0.02, 0.4, size=5):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target), str(size)], env=env,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(float(delay))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if target.exists():
            data = target.read_bytes()
            assert len(data) == size and data in (b"A" * size, b"B" * size)
    assert target.exists()


def test_an_error_inside_an_atomic_write_leaves_the_old_file_and_no_temp(tmp_path):
    from ganzip.io import atomic_open, atomic_write_text

    target = tmp_path / "report.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(target, "wb") as fh:
            fh.write(b"half of the new con")
            raise RuntimeError("crash in the middle")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_atomic_writes_respect_the_umask_like_open_does(tmp_path):
    # Defect: ganzip/io.py atomic_open writes through tempfile.mkstemp, which creates files 0600, and the
    # rename keeps that mode: student.safetensors and the reports are unreadable to the group and others.
    from ganzip.io import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "atomic.txt", "x")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "atomic.txt").stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777


def test_out_holding_only_a_temp_file_from_a_killed_first_write_starts_fresh(cli, teacher_file, data_dir, tmp_path):
    # A SIGKILL during the very first atomic write (run.json) leaves OUT with just `.run.json.XXXX.tmp`.
    # Defect: engine.prepare_out counts that file as "files ganzip did not write" and refuses OUT forever.
    out = tmp_path / "o"
    out.mkdir()
    (out / ".run.json.k2j4h1x0.tmp").write_bytes(b'{"kind": "ganzip-com')
    res = cli("compress", teacher_file, "--data", data_dir, "--out", out, *RUN, "--steps", "2")
    assert res.exit_code == 0, res.stderr
    assert (out / "student.safetensors").is_file()


# ---------------------------------------------------------------- disk full, permission denied


class FailingReplace:
    """`os.replace` that raises OSError(code) on the `nth` rename onto a file whose name starts with `prefix`."""

    def __init__(self, code: int, prefix: str, nth: int):
        self.code, self.prefix, self.nth, self.seen = code, prefix, nth, 0
        self.real = os.replace

    def __call__(self, src, dst, *args, **kwargs):
        if Path(dst).name.startswith(self.prefix):
            self.seen += 1
            if self.seen == self.nth:
                raise OSError(self.code, os.strerror(self.code), str(dst))
        return self.real(src, dst, *args, **kwargs)


def _compress(cli, teacher_file, data_dir, out, *extra):
    return cli("compress", teacher_file, "--data", data_dir, "--out", out, *RUN, "--steps", "6",
               "--checkpoint-every", "2", "--eval-every", "3", *extra)


CASES = [
    # (errno, file whose write fails, the message's fix)
    ("ENOSPC", "state-", "no space left on the device while writing", "free some space or choose another --out"),
    ("ENOSPC", "state.json", "no space left on the device while writing", "free some space or choose another --out"),
    ("EACCES", "state.json", "permission denied writing", "choose a writable --out folder"),
]


@pytest.mark.parametrize("code,prefix,what,fix", CASES, ids=[f"{c[0]}-{c[1].rstrip('-')}" for c in CASES])
def test_a_failed_checkpoint_write_is_one_clear_line_and_keeps_the_last_checkpoint(
        cli, teacher_file, data_dir, tmp_path, monkeypatch, request, code, prefix, what, fix):
    from ganzip.engine import load_checkpoint

    out = tmp_path / "o"
    monkeypatch.setattr(os, "replace", FailingReplace(getattr(errno, code), prefix, nth=2))  # the step-4 checkpoint
    line = _compress(cli, teacher_file, data_dir, out).assert_user_error(what, fix)
    record(request, line)
    assert str(out / "checkpoint") in line
    monkeypatch.undo()
    tensors, state = load_checkpoint(out / "checkpoint")
    assert state["step"] == 2 and any(k.startswith("student.") for k in tensors)
    assert not [p.name for p in out.rglob("*.tmp")]
    assert not (out / "student.safetensors").exists()


def test_after_a_disk_full_error_the_run_resumes_from_the_kept_checkpoint(cli, teacher_file, data_dir, tmp_path,
                                                                          monkeypatch):
    out = tmp_path / "o"
    monkeypatch.setattr(os, "replace", FailingReplace(errno.ENOSPC, "state-", nth=3))  # the last checkpoint
    _compress(cli, teacher_file, data_dir, out).assert_user_error("no space left")
    monkeypatch.undo()  # space freed
    res = _compress(cli, teacher_file, data_dir, out)
    assert res.exit_code == 0, res.stderr
    assert "resumed from the checkpoint at step 4 of 6" in res.stderr
    assert unreadable_files(out) == []


def test_a_disk_full_error_on_the_final_student_keeps_the_last_checkpoint(cli, teacher_file, data_dir, tmp_path,
                                                                          monkeypatch, request):
    from ganzip.engine import load_checkpoint

    out = tmp_path / "o"
    monkeypatch.setattr(os, "replace", FailingReplace(errno.ENOSPC, "student.safetensors", nth=1))
    line = _compress(cli, teacher_file, data_dir, out).assert_user_error("no space left")
    record(request, line)
    assert "student.safetensors" in line
    monkeypatch.undo()
    _, state = load_checkpoint(out / "checkpoint")
    assert state["step"] == 6
    res = _compress(cli, teacher_file, data_dir, out)
    assert res.exit_code == 0, res.stderr
    assert "resumed from the checkpoint at step 6 of 6" in res.stderr
    assert (out / "student.safetensors").is_file()

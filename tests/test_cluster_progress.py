"""Progress that reads well in a cluster log: plain periodic lines when stderr is not a terminal.

The clock is a counter the test advances, so the cadence is checked exactly;
the end-to-end check runs `ganzip compress` with stderr piped to a file.
"""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import pytest

from ganzip.progress import PlainProgress, format_seconds, progress_bar

from .cluster_jobs import DEMO_TEACHER, make_experiment


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(total: int, seconds_per_step: float, initial: int = 0) -> list[str]:
    clock, out = Clock(), io.StringIO()
    bar = PlainProgress(total, initial=initial, desc="compress crd", file=out, clock=clock)
    for step in range(initial, total):
        clock.now += seconds_per_step
        bar.set_postfix({"loss": f"{1 / (step + 1):.3g}"}, refresh=False)
        bar.update(1)
    bar.close()
    return out.getvalue().splitlines()


def test_a_fast_run_prints_one_line_every_5_percent():
    lines = run(800, 0.01)
    assert len(lines) == 20
    assert lines[0] == "compress crd: step 40/800 (5%) 100 step/s ETA 8s loss=0.025"
    assert lines[-1].startswith("compress crd: step 800/800 (100%) 100 step/s took 8s")


def test_a_slow_run_prints_a_line_every_30_seconds():
    lines = run(1000, 2.0)  # 5% = 50 steps = 100 s, so the 30 s rule decides
    steps = [int(re.search(r"step (\d+)/", ln).group(1)) for ln in lines]
    assert steps[:3] == [15, 30, 45] and steps[-1] == 1000
    assert lines[0] == "compress crd: step 15/1000 (2%) 2 s/step ETA 32m50s loss=0.0667"


def test_a_resumed_run_counts_its_rate_from_the_resume():
    lines = run(100, 0.5, initial=90)
    assert lines[0] == "compress crd: resuming at step 90/100"
    assert lines[1].startswith("compress crd: step 95/100 (95%) 2 step/s ETA 2s")


def test_no_carriage_returns_and_nothing_when_disabled():
    out = io.StringIO()
    bar = PlainProgress(10, file=out, disable=True)
    bar.update(10)
    bar.close()
    assert out.getvalue() == ""
    assert "\r" not in "\n".join(run(50, 1.0))


def test_a_terminal_gets_tqdm_and_a_pipe_gets_plain_lines(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("GANZIP_PROGRESS", raising=False)
    from tqdm import tqdm

    assert isinstance(progress_bar(10, file=Tty()), tqdm)
    assert isinstance(progress_bar(10, file=io.StringIO()), PlainProgress)
    monkeypatch.setenv("GANZIP_PROGRESS", "lines")
    assert isinstance(progress_bar(10, file=Tty()), PlainProgress)


def test_format_seconds():
    assert [format_seconds(s) for s in (5, 65, 3600 + 180)] == ["5s", "1m05s", "1h03m"]


def test_a_piped_compress_writes_whole_progress_lines(tmp_path):
    make_experiment(tmp_path)
    with open(tmp_path / "err.log", "wb") as err:
        proc = subprocess.run([sys.executable, "-m", "ganzip", "compress", str(DEMO_TEACHER), "--data",
                               str(tmp_path / "pngs"), "--recipe", "kd-pixel", "--size", "32", "--steps", "40",
                               "--device", "cpu", "--set", "perceptual.weight=0", "--set", "eval.max_images=2",
                               "--set", "eval.samples=0", "--out", str(tmp_path / "out")],
                              stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, "OMP_NUM_THREADS": "1"})
    text = (tmp_path / "err.log").read_text()
    assert proc.returncode == 0, text[-2000:]
    assert "\r" not in text
    steps = re.findall(r"^compress kd-pixel: step (\d+)/40 \(\d+%\) .*(?:ETA|took) ", text, flags=re.M)
    assert steps == [str(s) for s in range(2, 41, 2)]  # every 5% of 40 steps

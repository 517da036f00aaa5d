"""The manifest the cluster tests run on Ray and on SLURM, and the checks both share.

Three jobs from the demo teacher shipped with ganzip (a real trained
generator file): two widths that finish in a few steps at 32 px, and one
that must fail (the teacher's weights declared as a narrower network).
Data is a folder of random 32 px PNGs made in the test.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

import ganzip
from ganzip.jobrun import BATCH_DIR, OUTCOME_FILE, WORKER_LOG

DEMO_TEACHER = Path(ganzip.__file__).resolve().parent / "assets" / "demo_teacher.safetensors"
FAST = '["perceptual.weight=0", "discriminator.ndf=8", "eval.max_images=2", "eval.samples=0"]'

MANIFEST = f"""
[defaults]
model = "{DEMO_TEACHER}"
data = "pngs"
size = 32
steps = 3
device = "cpu"
recipe = "kd-pixel"
checkpoint_every = 0
eval_every = 0
set = {FAST}

[[job]]
name = "kd"
widths = [0.25, 0.5]

[[job]]
name = "broken"              # the demo teacher is ngf 16: its weights do not fit ngf 8
arch = "resnet_6blocks"
arch_opts = {{ngf = 8}}
"""

# One job long enough to be stopped mid-run, checkpointing every 10 steps.
LONG_MANIFEST = f"""
[[job]]
name = "long"
model = "{DEMO_TEACHER}"
data = "pngs"
size = 32
steps = 400
device = "cpu"
recipe = "kd-pixel"
checkpoint_every = 10
eval_every = 0
set = {FAST}
"""


def make_experiment(root: Path, text: str = MANIFEST) -> Path:
    """Random PNGs (6 train, 2 test per domain) and the manifest in `root`; returns the manifest path."""
    rng = np.random.default_rng(0)
    for sub, n in (("trainA", 6), ("trainB", 6), ("testA", 2), ("testB", 2)):
        (root / "pngs" / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "pngs" / sub / f"{i}.png")
    path = root / "manifest.toml"
    path.write_text(text)
    return path


def attempts(out: Path, job: str) -> int:
    """How many times a worker started for `job` (each start opens a header in its log)."""
    log = out / BATCH_DIR / job / WORKER_LOG
    return log.read_text().count("\n=== ") if log.is_file() else 0


def check_first_run(out: Path) -> dict:
    """The leaderboard and the failure record of the 3-job manifest's first run; returns leaderboard.json."""
    from ganzip.student import load_student

    board = json.loads((out / "leaderboard.json").read_text())
    status = {r["job"]: r["status"] for r in board["jobs"]}
    assert status == {"kd@w0.25": "finished", "kd@w0.5": "finished", "broken": "failed"}, board["jobs"]
    assert "2 finished now, 0 finished earlier, 1 failed" in (out / "leaderboard.md").read_text()
    for row in board["jobs"][:2]:
        student = load_student(Path(row["student"]))
        assert row["student_params"] == sum(p.numel() for p in student.parameters())
        assert row["teacher_macs"] > row["student_macs"] > 0
        assert json.loads((out / row["job"] / "done.json").read_text())["name"] == row["job"]
    narrow, wide = board["jobs"][0], board["jobs"][1]
    assert narrow["student_params"] < wide["student_params"]
    broken = board["jobs"][2]
    assert "do not fit" in broken["error"] and "ngf=16" in broken["error"]
    # the failure as structured data, and its traceback file
    outcome = json.loads((out / BATCH_DIR / "broken" / OUTCOME_FILE).read_text())
    assert outcome["status"] == "failed" and outcome["error"]["type"] == "GanzipError"
    assert outcome["error"]["line"] == broken["error"]
    trace = Path(outcome["error"]["traceback_file"]).read_text()
    assert trace.splitlines()[0] == broken["error"] and "Traceback (most recent call last)" in trace
    # each job's log in its own folder: plain progress lines, no carriage-return frames
    log = (out / BATCH_DIR / "kd@w0.25" / WORKER_LOG).read_text()
    assert "compress kd-pixel: step 3/3 (100%)" in log and "\r" not in log
    return board

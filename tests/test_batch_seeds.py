"""`seeds = [...]` in a batch manifest: expansion, refused values (with file:line), mean ± std in the leaderboard.

Teachers are random-weight tiny zoo generators saved inside the test (no
pretrained weights exist here); data is a folder of random PNGs.
"""
from __future__ import annotations

import csv
import json
import statistics

import pytest
import torch

from ganzip import batch, models
from ganzip.errors import GanzipError

from .test_batch import FAST, manifest_error, random_pngs, write

HEAD = '[defaults]\nmodel = "G.pth"\ndata = "builtin:day2night"\nset = ["perceptual.weight=0"]\n'


def test_seeds_expand_like_widths_and_each_job_gets_its_seed(tmp_path):
    write(tmp_path / "G.pth", "x")
    m = batch.load_manifest(write(tmp_path / "m.toml", HEAD + 'seeds = [0, 1, 2]\n'
                                  '[[job]]\nname = "a"\nwidths = [0.25, 0.5]\n'
                                  '[[job]]\nname = "b"\nseeds = [7, 3]\n'
                                  '[[job]]\nname = "c"\nseed = 5\n'))
    names = [(j.name, j.seed, j.width, j.group) for j in m.jobs]
    assert names == [
        ("a@w0.25@s0", 0, 0.25, "a@w0.25"), ("a@w0.25@s1", 1, 0.25, "a@w0.25"), ("a@w0.25@s2", 2, 0.25, "a@w0.25"),
        ("a@w0.5@s0", 0, 0.5, "a@w0.5"), ("a@w0.5@s1", 1, 0.5, "a@w0.5"), ("a@w0.5@s2", 2, 0.5, "a@w0.5"),
        ("b@s7", 7, 0.25, "b"), ("b@s3", 3, 0.25, "b"),
        ("c", 5, 0.25, None),  # a job's own seed replaces the defaults' seeds
    ]
    assert m.jobs[1].compress_kwargs(tmp_path / "o")["seed"] == 1  # the job runs with its own seed


@pytest.mark.parametrize("value, fragment", [
    ("[]", "seeds is empty"),
    ("[0, 1.5]", "non-negative integer, got 1.5"),
    ('[0, "1"]', "non-negative integer, got '1'"),
    ("[true]", "non-negative integer, got True"),
    ("[-1]", "non-negative integer, got -1"),
    ("[0, 1, 0]", "repeated values"),
])
def test_bad_seeds_are_errors_naming_file_and_line(tmp_path, value, fragment):
    write(tmp_path / "G.pth", "x")
    msg = manifest_error(tmp_path, HEAD + '\n[[job]]\nname = "a"\n\nseeds = ' + value + "\n")
    assert msg.startswith(f"{tmp_path / 'm.toml'}:9:"), msg
    assert fragment in msg


def test_bad_seeds_in_defaults_name_the_defaults_line(tmp_path):
    write(tmp_path / "G.pth", "x")
    msg = manifest_error(tmp_path, HEAD + 'seeds = [2, 2]\n[[job]]\nname = "a"\n')
    assert msg.startswith(f"{tmp_path / 'm.toml'}:5:") and "repeated" in msg


def test_seed_and_seeds_together_are_refused(tmp_path):
    write(tmp_path / "G.pth", "x")
    msg = manifest_error(tmp_path, HEAD + '[[job]]\nname = "a"\nseed = 1\nseeds = [1, 2]\n')
    assert ":8:" in msg and "not both" in msg


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    torch.manual_seed(0)  # a random-weight teacher: no pretrained generator exists here
    torch.save(models.create("resnet_6blocks", ngf=8).state_dict(), root / "G.pth")
    random_pngs(root / "pngs")
    manifest = write(root / "m.toml", f"""
[defaults]
data = "pngs"
size = 64
steps = 2
device = "cpu"
checkpoint_every = 0
eval_every = 0
set = {FAST}

[[job]]
name = "g"
model = "G.pth"
arch = "resnet_6blocks"
arch_opts = {{ngf = 8}}
recipe = "kd-pixel"
seeds = [0, 1]
""")
    result = batch.run_batch(manifest, root / "out", latency=False)
    return root, result


def test_a_two_seed_batch_gives_mean_and_std_over_its_seeds(two_seeds):
    root, result = two_seeds
    board = json.loads(result.leaderboard["json"].read_text())
    assert [r["job"] for r in board["jobs"]] == ["g@s0", "g@s1"]
    reports = [json.loads((root / "out" / f"g@s{s}" / "report.json").read_text()) for s in (0, 1)]
    assert [r["seed"] for r in reports] == [0, 1]  # each job really ran with its own seed
    (group,) = board["over_seeds"]
    assert group["job"] == "g" and group["count"] == 2 and group["seeds"] == [0, 1]
    # independent of the leaderboard: the students' own reports
    psnr = [r["metrics"]["student"]["psnr_to_teacher"]["mean"] for r in reports]
    assert psnr[0] != psnr[1]
    entry = group["metrics"]["psnr_to_teacher"]
    assert entry["mean"] == pytest.approx(statistics.mean(psnr), rel=1e-9)
    assert entry["std"] == pytest.approx(statistics.stdev(psnr), rel=1e-9) and entry["n"] == 2
    holdout = [r["training"]["best_holdout"]["holdout_psnr"] for r in reports]
    assert group["metrics"]["holdout_psnr"]["mean"] == pytest.approx(statistics.mean(holdout), rel=1e-9)


def test_the_markdown_and_csv_show_mean_plus_minus_std_and_the_seed_count(two_seeds):
    _, result = two_seeds
    md = result.leaderboard["md"].read_text()
    assert "## Mean ± std over seeds" in md
    line = next(ln for ln in md.splitlines() if ln.startswith("| g | 2 |"))
    assert "±" in line
    rows = list(csv.DictReader(result.leaderboard["seeds_csv"].read_text().splitlines()))
    assert rows[0]["job"] == "g" and rows[0]["seeds"] == "2"
    board = json.loads(result.leaderboard["json"].read_text())
    assert float(rows[0]["psnr_to_teacher_std"]) == pytest.approx(
        board["over_seeds"][0]["metrics"]["psnr_to_teacher"]["std"], rel=1e-6)


def test_mean_std_uses_the_sample_standard_deviation():
    assert batch.mean_std([1.0, 2.0, 4.0]) == pytest.approx({"mean": 7 / 3, "std": statistics.stdev([1, 2, 4]), "n": 3})
    assert batch.mean_std([3.0])["std"] is None

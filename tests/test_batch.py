"""`ganzip batch`: manifests, job launching, failures that do not stop the run, leaderboards.

Teachers are random-weight tiny zoo generators saved inside the tests (no
pretrained weights exist here); data is a folder of random 64 px PNGs made in
the test; runs take a few steps with the perceptual term off (no VGG-16
weights here).
"""
from __future__ import annotations

import csv
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganzip import batch, models
from ganzip.batch import runner, worker
from ganzip.errors import GanzipError

FAST = '["perceptual.weight=0", "crd.patch_size=16", "discriminator.ndf=8", "eval.max_images=4", "eval.samples=0"]'


def random_pngs(root: Path) -> Path:
    """An unpaired dataset of random 64 px images: 6 training and 2 test images per domain."""
    rng = np.random.default_rng(0)
    for sub, n in (("trainA", 6), ("trainB", 6), ("testA", 2), ("testB", 2)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / sub / f"{i}.png")
    return root


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def manifest_error(tmp_path, text: str) -> str:
    path = write(tmp_path / "m.toml", text)
    with pytest.raises(GanzipError) as info:
        batch.load_manifest(path)
    return str(info.value)


# ---------------------------------------------------------------- reading manifests


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path):
    write(tmp_path / "exp" / "weights" / "G.pth", "x")
    (tmp_path / "exp" / "images").mkdir()
    m = batch.load_manifest(write(tmp_path / "exp" / "m.toml", '[[job]]\nname = "a"\nmodel = "weights/G.pth"\n'
                                  'data = "images"\nset = {"perceptual.weight" = 0}\n'))
    job = m.jobs[0]
    assert job.model == (tmp_path / "exp" / "weights" / "G.pth").resolve()
    assert Path(job.data) == (tmp_path / "exp" / "images").resolve()
    assert m.out == (tmp_path / "exp" / "m-runs").resolve()


def test_defaults_apply_and_jobs_override_them(tmp_path):
    write(tmp_path / "G.pth", "x")
    m = batch.load_manifest(write(tmp_path / "m.toml", """
        out = "results"
        [defaults]
        model = "G.pth"
        data = "builtin:day2night"
        steps = 100
        set = {"perceptual.weight" = 0}
        arch_opts = {ngf = 8}
        [[job]]
        name = "a"
        [[job]]
        name = "b"
        epochs = 2
        set = ["crd.weight=10"]
        arch_opts = ["norm=batch"]
        """.replace("\n        ", "\n")))
    a, b = m.jobs
    assert (a.steps, a.epochs, b.steps, b.epochs) == (100, None, None, 2)
    assert a.overrides == ["perceptual.weight=0"]
    assert b.overrides == ["perceptual.weight=0", "crd.weight=10"]
    assert b.arch_opts == {"ngf": 8, "norm": "batch"}
    assert m.out == (tmp_path / "results").resolve()


def test_unknown_key_names_its_line_and_suggests_the_spelling(tmp_path):
    write(tmp_path / "G.pth", "x")
    msg = manifest_error(tmp_path, '[[job]]\nname = "a"\nmodel = "G.pth"\ndata = "builtin:day2night"\n\n'
                                   '[[job]]\nname = "b"\nwidht = 0.5\n')
    assert msg.startswith(f"{tmp_path / 'm.toml'}:8:")
    assert "unknown key 'widht'" in msg and "did you mean 'width'" in msg


def test_missing_model_file_names_the_line_it_came_from(tmp_path):
    msg = manifest_error(tmp_path, '[defaults]\ndata = "builtin:day2night"\nmodel = "nowhere/G.pth"\n\n'
                                   '[[job]]\nname = "a"\n')
    assert ":3:" in msg and "nowhere/G.pth" in msg and "does not exist" in msg


def test_missing_data_folder_names_its_line(tmp_path):
    write(tmp_path / "G.pth", "x")
    msg = manifest_error(tmp_path, '[[job]]\nname = "a"\nmodel = "G.pth"\n\n\ndata = "datasets/h2z"\n')
    assert ":6:" in msg and "datasets/h2z" in msg


def test_duplicate_job_names_name_the_second_line(tmp_path):
    write(tmp_path / "G.pth", "x")
    job = '[[job]]\nname = "same"\nmodel = "G.pth"\ndata = "builtin:day2night"\nset = ["perceptual.weight=0"]\n'
    msg = manifest_error(tmp_path, job + "\n" + job)
    assert ":8:" in msg and "duplicate job name 'same'" in msg


def test_names_cannot_use_the_at_sign_that_width_expansion_adds(tmp_path):
    write(tmp_path / "G.pth", "x")
    text = ('[defaults]\nmodel = "G.pth"\ndata = "builtin:day2night"\n'
            '[[job]]\nname = "g"\nwidths = [0.25, 0.5]\n[[job]]\nname = "g@w0.5"\n')
    msg = manifest_error(tmp_path, text)
    assert ":8:" in msg and "'@' is added" in msg


def test_a_single_job_table_is_told_to_use_double_brackets(tmp_path):
    msg = manifest_error(tmp_path, '[job]\nname = "a"\n')
    assert ":1:" in msg and "[[job]]" in msg


def test_wrong_types_and_bad_set_keys_name_their_lines(tmp_path):
    write(tmp_path / "G.pth", "x")
    head = '[[job]]\nname = "a"\nmodel = "G.pth"\ndata = "builtin:day2night"\n'
    assert ":5:" in manifest_error(tmp_path, head + 'steps = "ten"\n')
    msg = manifest_error(tmp_path, head + 'set = {"crd.wieght" = 3}\n')
    assert ":5:" in msg and "crd.wieght" in msg
    msg = manifest_error(tmp_path, head + 'arch = "resnet_9block"\n')
    assert ":5:" in msg and "resnet_9blocks" in msg


def test_invalid_toml_reports_tomllibs_position(tmp_path):
    msg = manifest_error(tmp_path, '[[job]]\nname = "a\n')
    assert "not valid TOML" in msg and "line 2" in msg


def test_reading_a_manifest_imports_no_code_it_names(tmp_path):
    write(tmp_path / "G.pth", "x")
    m = batch.load_manifest(write(tmp_path / "m.toml", '[[job]]\nname = "a"\nmodel = "G.pth"\n'
                                  'data = "builtin:day2night"\narch = "not_a_real_module_xyz:build"\n'
                                  'set = ["perceptual.weight=0"]\n'), trust_code=True)
    assert m.jobs[0].arch == "not_a_real_module_xyz:build"  # only a string until the job runs
    assert "not_a_real_module_xyz" not in sys.modules


# ---------------------------------------------------------------- launching


def _job(tmp_path, **kw) -> batch.Job:
    base = dict(name="g@w0.25", model=tmp_path / "G.pth", data="builtin:day2night", width=0.25,
                arch="resnet_6blocks", arch_opts={"ngf": 8}, overrides=["crd.weight=10"], steps=5, size=64)
    base.update(kw)
    return batch.Job(**base)


def test_torchrun_runs_the_jobs_worker_which_reads_the_job_as_json(tmp_path):
    job = _job(tmp_path)
    argv = worker.worker_argv(tmp_path / "job.json", nproc=4, python="/py")
    assert argv == ["/py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "4", "-m",
                    "ganzip.jobrun", str(tmp_path / "job.json")]
    job_file = worker.write_job_file(job, tmp_path / "out" / job.name, tmp_path / "out")
    again = worker.job_from_dict(json.loads(job_file.read_text())["job"])
    assert again == job and again.compress_kwargs(tmp_path) == job.compress_kwargs(tmp_path)


def test_compress_accepts_every_keyword_a_job_builds(tmp_path):
    import inspect

    from ganzip.engine import compress

    job = _job(tmp_path, target=tmp_path, seed=3, batch_size=2, checkpoint_every=0, eval_every=0)
    kwargs = job.compress_kwargs(tmp_path)
    bound = inspect.signature(compress).bind(str(job.model), **kwargs)  # binds only; nothing runs
    assert bound.arguments["width"] == 0.25 and bound.arguments["steps"] == 5
    assert bound.arguments["overrides"] == ["crd.weight=10"] and bound.arguments["seed"] == 3
    assert bound.arguments["arch_opts"] == {"ngf": 8}  # typed values, never strings parsed again


def test_workers_are_pinned_to_gpu_groups():
    assert batch.plan_workers([]) == [{}]
    assert batch.plan_workers(["0", "1"]) == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    assert batch.plan_workers(batch.parse_gpus("0,1,2,3"), 2) == [{"CUDA_VISIBLE_DEVICES": "0,1"},
                                                                 {"CUDA_VISIBLE_DEVICES": "2,3"}]
    with pytest.raises(GanzipError, match="groups"):
        batch.plan_workers(["0", "1", "2"], 2)
    with pytest.raises(GanzipError, match="twice"):
        batch.parse_gpus("0,0")


def test_jobs_spread_over_gpus_one_at_a_time_per_worker(tmp_path, monkeypatch):
    write(tmp_path / "G.pth", "x")
    jobs = "".join(f'[[job]]\nname = "j{i}"\n' for i in range(5))
    m = batch.load_manifest(write(tmp_path / "m.toml", '[defaults]\nmodel = "G.pth"\ndata = "builtin:day2night"\n'
                                  'set = ["perceptual.weight=0"]\n' + jobs))
    lock = threading.Lock()
    running: dict[str, str] = {}
    seen: list[tuple[str, str]] = []

    def fake_launch(job_file, nproc=1, threads=None, env_extra=None):  # stands in for the worker process
        name = json.loads(Path(job_file).read_text())["job"]["name"]
        gpu = env_extra["CUDA_VISIBLE_DEVICES"]
        with lock:
            assert gpu not in running.values(), "two jobs on one GPU"
            running[name] = gpu
            seen.append((name, gpu))
        time.sleep(0.05)
        with lock:
            del running[name]
        if name == "j3":
            return {"status": "failed", "error": {"type": "GanzipError", "message": "broken on purpose",
                                                  "line": "broken on purpose", "traceback_file": None}}
        return {"status": "finished", "seconds": 0.05}

    monkeypatch.setattr(runner, "launch", fake_launch)
    events: list[str] = []
    result = batch.run_batch(m, tmp_path / "out", gpus="0,1", latency=False, echo=events.append)
    started = [e.split()[1] for e in events if e.startswith("[run]")]
    assert started == ["j0", "j1", "j2", "j3", "j4"]  # dispatched in manifest order
    assert sorted(name for name, _ in seen) == started  # each ran exactly once
    assert {gpu for _, gpu in seen} == {"0", "1"}
    assert [oc.status for oc in result.jobs] == ["finished", "finished", "finished", "failed", "finished"]
    assert result.jobs[3].error == "broken on purpose"


def test_an_unexpected_exception_is_recorded_with_its_type_and_traceback(tmp_path, monkeypatch):
    write(tmp_path / "G.pth", "x")
    m = batch.load_manifest(write(tmp_path / "m.toml", '[defaults]\nmodel = "G.pth"\ndata = "builtin:day2night"\n'
                                  'set = ["perceptual.weight=0"]\n[[job]]\nname = "a"\n[[job]]\nname = "b"\n'))

    def boom(job, folder, quiet):
        if job.name == "a":
            raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(runner, "_run_inprocess", boom)
    result = batch.run_batch(m, tmp_path / "out", latency=False)
    assert result.jobs[0].error == "RuntimeError: CUDA error: device-side assert triggered"
    assert result.jobs[1].status == "finished"  # the batch went on
    text = (tmp_path / "out" / "a" / "error.txt").read_text()
    assert "Traceback (most recent call last)" in text and 'raise RuntimeError("CUDA error' in text


# ---------------------------------------------------------------- running (the "done when")


MANIFEST = f"""
[defaults]
data = "pngs"
size = 64
steps = 3
device = "cpu"
checkpoint_every = 0
eval_every = 0
set = {FAST}

[[job]]
name = "resnet"
model = "resnet.pth"
arch = "resnet_6blocks"
arch_opts = {{ngf = 8}}
width = 0.5

[[job]]
name = "mobile"
model = "mobile.pth"
arch = "mobile_resnet_9blocks"
arch_opts = {{ngf = 8}}
width = 0.5
recipe = "kd-pixel"

[[job]]
name = "broken"              # weights of an ngf-8 network declared as ngf 4
model = "resnet.pth"
arch = "resnet_6blocks"
arch_opts = {{ngf = 4}}
"""


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    torch.manual_seed(0)
    torch.save(models.create("resnet_6blocks", ngf=8).state_dict(), root / "resnet.pth")
    torch.save(models.create("mobile_resnet_9blocks", ngf=8).state_dict(), root / "mobile.pth")
    random_pngs(root / "pngs")
    manifest = write(root / "manifest.toml", MANIFEST)
    result = batch.run_batch(manifest, root / "out", latency_repeats=1)
    files = {k: p.read_text() for k, p in result.leaderboard.items()}
    return root, manifest, result, files


def test_a_batch_finishes_two_jobs_and_records_the_broken_one(first_run):
    _, _, result, files = first_run
    board = json.loads(files["json"])
    status = {r["job"]: r["status"] for r in board["jobs"]}
    assert status == {"resnet": "finished", "mobile": "finished", "broken": "failed"}
    broken = next(r for r in board["jobs"] if r["job"] == "broken")
    assert "do not fit" in broken["error"] and "ngf" in broken["error"]
    for row in board["jobs"][:2]:
        assert row["teacher_macs"] > row["student_macs"] > 0 and row["macs_ratio"] > 2
        assert row["teacher_params"] > row["student_params"] > 0
        assert row["student_latency_ms"] > 0 and Path(row["student"]).is_file()


def test_the_failed_job_keeps_its_traceback_in_error_txt(first_run):
    root, _, _, _ = first_run
    text = (root / "out" / "broken" / "error.txt").read_text()
    assert text.splitlines()[0].startswith("the weights in resnet.pth do not fit")
    assert "Traceback (most recent call last)" in text


def test_the_leaderboard_is_written_as_markdown_and_csv(first_run):
    _, _, _, files = first_run
    rows = list(csv.DictReader(files["csv"].splitlines()))
    assert [r["job"] for r in rows] == ["resnet", "mobile", "broken"]
    assert rows[2]["status"] == "failed" and rows[2]["teacher_macs"] == ""
    md = files["md"]
    assert "2 finished now, 0 finished earlier, 1 failed" in md
    assert "| resnet | finished |" in md and "## Errors" in md and "**broken**" in md


def test_running_again_skips_finished_jobs_and_retries_the_failed_one(first_run, monkeypatch):
    root, manifest, first, _ = first_run
    ran: list[str] = []
    real = runner._run_inprocess
    monkeypatch.setattr(runner, "_run_inprocess", lambda job, folder, quiet: (ran.append(job.name), real(job, folder, quiet)))
    again = batch.run_batch(manifest, root / "out", latency=False)
    assert ran == ["broken"]
    assert [oc.status for oc in again.jobs] == ["skipped", "skipped", "failed"]
    assert again.jobs[0].row["student_macs"] == first.jobs[0].row["student_macs"]


def test_a_finished_job_whose_settings_changed_is_not_silently_reused(first_run, tmp_path):
    root, manifest, _, _ = first_run
    changed = write(root / "changed.toml", manifest.read_text().replace("width = 0.5\nrecipe", "width = 0.75\nrecipe"))
    result = batch.run_batch(batch.load_manifest(changed), root / "out", latency=False)
    mobile = next(oc for oc in result.jobs if oc.job.name == "mobile")
    assert mobile.status == "failed" and "width" in mobile.error and "other settings" in mobile.error


def test_a_torchscript_teacher_is_recorded_as_a_failure_that_says_why(first_run, tmp_path):
    root, _, _, _ = first_run
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(models.create("resnet_6blocks", ngf=4).eval(), torch.zeros(1, 3, 64, 64))
        traced.save(str(tmp_path / "G_scripted.pt"))
    manifest = write(tmp_path / "m.toml", f'[[job]]\nname = "ts"\nmodel = "G_scripted.pt"\n'
                                          f'data = "{root / "pngs"}"\nsize = 64\nsteps = 1\nset = {FAST}\n')
    result = batch.run_batch(manifest, tmp_path / "out", latency=False)
    assert result.jobs[0].status == "failed"
    assert "TorchScript teacher cannot be pruned" in result.jobs[0].error


def test_a_users_own_module_callable_is_a_teacher_source(first_run, tmp_path, monkeypatch):
    root, _, _, _ = first_run
    write(tmp_path / "code" / "tinygen_batch_mod.py",
          "from ganzip.models.resnet import ResnetGenerator\n\n"
          "def make(ngf=8):\n    return ResnetGenerator(ngf=ngf, n_blocks=2)\n")
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    import tinygen_batch_mod

    torch.manual_seed(0)
    torch.save(tinygen_batch_mod.make(ngf=8).state_dict(), tmp_path / "mine.pth")
    manifest = write(tmp_path / "m.toml", f'[[job]]\nname = "mine"\nmodel = "mine.pth"\n'
                                          f'arch = "tinygen_batch_mod:make"\narch_opts = {{ngf = 8}}\n'
                                          f'data = "{root / "pngs"}"\nrecipe = "kd-pixel"\nsize = 64\nsteps = 2\n'
                                          f'checkpoint_every = 0\neval_every = 0\nset = {FAST}\n')
    result = batch.run_batch(manifest, tmp_path / "out", latency=False, trust_code=True)
    row = result.jobs[0].row
    assert result.jobs[0].status == "finished", result.jobs[0].error
    assert row["arch"] == "tinygen_batch_mod:make" and row["teacher_params"] > row["student_params"]


def test_the_cli_prints_the_leaderboard_and_exits_1_when_a_job_failed(first_run, cli):
    root, manifest, _, _ = first_run
    res = cli("batch", manifest, "--out", root / "out", "--latency-repeats", 0)
    assert res.exit_code == 1
    assert "| resnet | skipped |" in res.stdout and "[skip] resnet" in res.stderr


def test_a_second_batch_on_the_same_out_stops_before_it_touches_a_job(first_run, cli, tmp_path):
    from ganzip import rundir

    _, manifest, _, _ = first_run
    out = tmp_path / "busy"
    with rundir.lock(out):  # another `ganzip batch` is running on OUT
        with pytest.raises(GanzipError, match="in use by another ganzip run"):
            batch.run_batch(manifest, out, latency=False)
        res = cli("batch", manifest, "--out", out, "--latency-repeats", 0)
        res.assert_user_error("--out", "in use by another ganzip run", "choose another --out")
        assert sorted(p.name for p in out.iterdir()) == [rundir.LOCK_FILE]  # no job folder, no leaderboard
    assert not out.exists()  # the holder created it and wrote nothing


def test_dry_run_lists_jobs_and_their_commands(first_run, cli):
    root, manifest, _, _ = first_run
    res = cli("batch", manifest, "--dry-run", "--launcher", "torchrun", "--nproc-per-node", 2)
    assert res.exit_code == 0, res.stderr
    assert "3 job(s)" in res.stdout
    assert "-m torch.distributed.run --standalone --nproc-per-node 2 -m ganzip.jobrun" in res.stdout


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_a_job_runs_under_torchrun_on_the_cpu(tmp_path):
    torch.manual_seed(0)
    torch.save(models.create("resnet_6blocks", ngf=4).state_dict(), tmp_path / "G.pth")
    random_pngs(tmp_path / "pngs")
    manifest = write(tmp_path / "m.toml", f"""
[[job]]
name = "ddp"
model = "G.pth"
arch = "resnet_6blocks"
arch_opts = {{ngf = 4}}
data = "pngs"
recipe = "kd-pixel"
size = 64
steps = 2
device = "cpu"
checkpoint_every = 0
eval_every = 0
set = {FAST}
""")
    result = batch.run_batch(manifest, tmp_path / "out", launcher="torchrun", nproc_per_node=2, latency=False)
    log = (tmp_path / "out" / "ddp" / "compress.log").read_text() if (tmp_path / "out" / "ddp" / "compress.log").exists() else ""
    assert result.jobs[0].status == "finished", (result.jobs[0].error, log[-2000:])
    report = json.loads((tmp_path / "out" / "ddp" / "report.json").read_text())
    assert report["training"]["world_size"] == 2


def test_the_documented_example_manifest_is_valid():
    example = Path(__file__).resolve().parents[1] / "docs" / "examples" / "manifest.toml"
    m = batch.load_manifest(example)
    assert [j.name for j in m.jobs] == ["demo-crd@w0.25", "demo-crd@w0.5", "demo-kd"]
    assert m.jobs[0].overrides == ["perceptual.weight=0", "crd.weight=10", "train.batch_size=2"]
    assert m.jobs[2].round_to == 4 and m.jobs[2].recipe == "kd-pixel"
    assert all(j.model.is_file() for j in m.jobs)

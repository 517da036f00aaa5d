"""Nothing the user had is lost, one run per output folder, and hand-edited files never give a traceback.

Each case checks the exit code, the single line, and that the user's files are
byte-identical afterwards (a hash of every file under the folders involved).
The rows are listed in docs/reliability.md ("Data safety").
"""
from __future__ import annotations

import hashlib
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

from ganzip import models
from ganzip.io import save_safetensors_atomic
from ganzip.student import build_student, save_student

GEN = ["--arch", "resnet_6blocks", "--arch-opt", "ngf=4"]
FAST = ["--size", "32", "--set", "crd.patch_size=8", "--set", "perceptual.weight=0", "--set", "discriminator.ndf=4",
        "--set", "eval.max_images=2", "--steps", "2", "--device", "cpu", "--quiet", "--offline", "--eval-every", "0"]


def snapshot(*roots: Path) -> dict[str, str]:
    """SHA-256 of every regular file under `roots` (what 'byte-identical' is checked against)."""
    out = {}
    for root in roots:
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in paths:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _png(path: Path, side: int = 32, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    torch.manual_seed(0)
    teacher = models.create("resnet_6blocks", ngf=4)
    from safetensors.torch import save_file

    save_file(teacher.state_dict(), str(root / "teacher.safetensors"))
    for d in ("trainA", "trainB"):
        for i in range(6):
            _png(root / "data" / d / f"{i}.png", seed=i + (10 if d == "trainB" else 0))
    return root


def compress(files: Path, out: Path, *extra, model=None, data=None):
    return ["compress", model or files / "teacher.safetensors", *GEN, "--data", data or files / "data", "--out", out,
            *FAST, *extra]


@pytest.fixture(scope="module")
def finished(files, tmp_path_factory):
    from click.testing import CliRunner

    from ganzip.cli import main

    out = tmp_path_factory.mktemp("finished") / "run"
    res = CliRunner().invoke(main, [str(a) for a in compress(files, out)], obj={"debug": False})
    assert res.exit_code == 0, res.output
    return out


# ---------------------------------------------------------------- 3. inputs checked before OUT is cleared


@pytest.mark.parametrize("flag", ["--overwrite", "--no-resume"])
def test_a_typo_in_the_data_leaves_a_finished_run_untouched(flag, files, finished, cli, tmp_path):
    before = snapshot(finished)
    cli(*compress(files, finished, flag, data=tmp_path / "typo")).assert_user_error()
    assert snapshot(finished) == before


def test_overwrite_never_deletes_the_model_it_reads(files, finished, cli):
    before = snapshot(finished)
    model = finished / "student.safetensors"
    cli("compress", model, "--data", files / "data", "--out", finished, "--overwrite", *FAST).assert_user_error(
        "inside --out")
    assert snapshot(finished) == before


# ---------------------------------------------------------------- 4. batch


def test_batch_never_deletes_job_files_it_did_not_write(files, cli, tmp_path):
    out = tmp_path / "runs"
    job = out / "j"
    job.mkdir(parents=True)
    for name in ("compress.log", "error.txt", "done.json"):
        (job / name).write_text(f"the user's own {name}\n")
    (out / "leaderboard.md").write_text("my notes\n")
    before = snapshot(out)
    manifest = tmp_path / "m.toml"
    manifest.write_text(f'[[job]]\nname = "j"\nmodel = "{files / "teacher.safetensors"}"\narch = "resnet_6blocks"\n'
                        f'arch_opts = {{ngf = 4}}\ndata = "{files / "data"}"\nsize = 32\nsteps = 1\n')
    cli("batch", manifest, "--out", out).assert_user_error("leaderboard.md", "not written by ganzip")
    assert snapshot(out) == before
    (out / "leaderboard.md").unlink()
    before = snapshot(out)
    res = cli("batch", manifest, "--out", out, "--latency-repeats", "0")
    assert res.exit_code == 1  # the job is refused, recorded, and the user's files stay
    assert "not written by ganzip" in json.loads((out / "leaderboard.json").read_text())["jobs"][0]["error"]
    assert {k: v for k, v in snapshot(out).items() if "/j/" in k} == before


# ---------------------------------------------------------------- 5. eval and export follow compress's rules


def test_export_refuses_to_replace_a_file_it_did_not_write(finished, files, cli):
    teacher = files / "teacher.safetensors"
    before = snapshot(teacher)
    for extra in ([], ["--overwrite"]):
        cli("export", finished / "student.safetensors", "--out", teacher, "--size", "32", "--no-latency",
            *extra).assert_user_error("not written by ganzip")
    assert snapshot(teacher) == before


def test_export_replaces_its_own_output_only_with_overwrite(finished, cli, tmp_path):
    out = tmp_path / "s.onnx"
    args = ("export", finished / "student.safetensors", "--out", out, "--size", "32", "--no-latency")
    assert cli(*args).exit_code == 0
    before = snapshot(out)
    cli(*args).assert_user_error("--overwrite")
    assert snapshot(out) == before
    assert cli(*args, "--overwrite").exit_code == 0


def test_eval_refuses_to_replace_the_users_report(finished, files, cli, tmp_path):
    out = tmp_path / "eval"
    (out / "images").mkdir(parents=True)
    (out / "report.md").write_text("my own report\n")
    (out / "images" / "mine.png").write_bytes(b"png")
    before = snapshot(out)
    for extra in ([], ["--overwrite"]):
        cli("eval", finished / "student.safetensors", "--data", files / "data", "--size", "32", "--out", out,
            "--no-lpips", "--no-latency", "--quiet", "--offline", *extra).assert_user_error("not written by ganzip")
    assert snapshot(out) == before


# ---------------------------------------------------------------- 6. one run per OUT


def test_a_second_run_into_the_same_out_is_refused_naming_the_first(files, tmp_path):
    out = tmp_path / "busy"
    argv = [sys.executable, "-m", "ganzip", *[str(a) for a in compress(files, out)]]
    argv[argv.index("--steps") + 1] = "400"
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (out / "run.json").exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.2)
        assert (out / "run.json").exists(), first.stderr.read() if first.poll() is not None else "no run.json"
        second = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"PID {first.pid}" in lines[0], second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 143, err
    assert "resume" in err.strip().splitlines()[-1]  # SIGTERM: one line, resumable


# ---------------------------------------------------------------- 7, 8. data folders


def test_out_inside_the_data_folder_is_refused(files, cli, tmp_path):
    data = tmp_path / "data"
    for i in range(4):
        _png(data / f"{i}.png", seed=i)
    before = snapshot(data)
    cli(*compress(files, data / "out", data=data)).assert_user_error("inside --data")
    assert snapshot(data) == before and not (data / "out").exists()


def test_a_fifo_named_like_an_image_is_skipped_not_opened(files, cli, tmp_path):
    data = tmp_path / "data"
    for i in range(4):
        _png(data / f"{i}.png", seed=i)
    os.mkfifo(data / "pipe.png")
    from ganzip.data import open_dataset

    ds = open_dataset(str(data), split="train", size=32)
    assert len(ds) == 4 and "regular file" in ds.skip_summary()


def test_unreadable_files_are_named_as_unreadable(tmp_path, monkeypatch):
    data = tmp_path / "data"
    _png(data / "0.png")
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if str(p).endswith("0.png") else real(p, mode))
    from ganzip.data import open_dataset
    from ganzip.errors import GanzipError

    with pytest.raises(GanzipError, match="cannot be read"):
        open_dataset(str(data), split="train", size=32)


# ---------------------------------------------------------------- 10. runs that look fine but are not


def test_an_interrupted_data_make_is_refused(cli, tmp_path, monkeypatch):
    from ganzip.data import procedural

    real = procedural.generate
    calls = {"n": 0}

    def full_disk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(procedural, "generate", full_disk)
    out = tmp_path / "e2s"
    with pytest.raises(OSError):
        procedural.make_dataset("edges2shapes", out, n=300, size=64, progress=False)
    monkeypatch.setattr(procedural, "generate", real)
    from ganzip.data import open_dataset
    from ganzip.errors import GanzipError

    with pytest.raises(GanzipError, match="incomplete"):
        open_dataset(str(out), split="train", size=64)
    cli("data", "info", out).assert_user_error("incomplete")


def test_a_checkpoint_past_its_run_is_refused(files, cli, tmp_path):
    import ganzip

    out = tmp_path / "run"
    ganzip.compress(files / "teacher.safetensors", arch="resnet_6blocks", arch_opts={"ngf": 4}, data=files / "data",
                    out=out, size=32, steps=4, max_steps=2, checkpoint_every=1, eval_every=0, quiet=True, offline=True,
                    device="cpu", overrides=["crd.patch_size=8", "perceptual.weight=0", "discriminator.ndf=4", "eval.max_images=2"])
    state = out / "checkpoint" / "state.json"
    data = json.loads(state.read_text())
    data["step"] = 10**12
    state.write_text(json.dumps(data))
    before = snapshot(out)
    cli(*compress(files, out, "--steps", "4")).assert_user_error("damaged", "--no-resume")
    assert snapshot(out) == before
    state.write_text("[1, 2")
    cli(*compress(files, out, "--steps", "4")).assert_user_error("--no-resume")


def test_arch_opt_for_a_generator_file_is_not_silently_dropped(cli, tmp_path):
    from ganzip.teacher import save_generator

    path = save_generator(models.create("resnet_6blocks", ngf=4), tmp_path / "g.safetensors")
    cli("profile", path, "--arch-opt", "ngf=8", "--size", "32").assert_user_error("--arch-opt")


# ---------------------------------------------------------------- hand-edited files: one line, no traceback


def _student(tmp_path) -> Path:
    return save_student(build_student(models.create("resnet_6blocks", ngf=4), 0.5, size=32), tmp_path / "s.safetensors")


def _edit(path: Path, key: str, value: str) -> None:
    from safetensors.torch import load_file, safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    meta[key] = value
    save_safetensors_atomic(load_file(str(path)), path, metadata=meta)


def _structure_with(path: Path, change) -> str:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        layers = json.loads(fh.metadata()["ganzip.structure"])
    change(layers)
    return json.dumps(layers)


STUDENT_EDITS = {
    "spec-is-a-list": ("ganzip.teacher_spec", lambda p: json.dumps(["resnet_6blocks"])),
    "spec-is-a-string": ("ganzip.teacher_spec", lambda p: json.dumps("resnet_6blocks")),
    "spec-without-arch": ("ganzip.teacher_spec", lambda p: json.dumps({"opts": {}})),
    "spec-not-json": ("ganzip.teacher_spec", lambda p: "{arch: resnet"),
    "structure-not-json": ("ganzip.structure", lambda p: "}}"),
    "structure-is-a-list": ("ganzip.structure", lambda p: "[]"),
    "huge-shape": ("ganzip.structure", lambda p: _structure_with(
        p, lambda L: L["model.1"]["tensors"].__setitem__("weight", [100000, 100000, 1, 1]))),
    "negative-shape": ("ganzip.structure", lambda p: _structure_with(
        p, lambda L: L["model.1"]["tensors"].__setitem__("weight", [-4, 3, 7, 7]))),
    "deep-nesting": ("ganzip.structure", lambda p: "[" * 100000 + "]" * 100000),
    "dunder-class": ("ganzip.structure", lambda p: _structure_with(
        p, lambda L: L["model.1"]["attrs"].__setitem__("__class__", 3))),
    "dunder-dict": ("ganzip.structure", lambda p: _structure_with(
        p, lambda L: L["model.1"]["attrs"].__setitem__("__dict__", 3))),
    "missing-structure": ("ganzip.structure", None),
    "ngf-minus-one": ("ganzip.teacher_spec", lambda p: json.dumps({"arch": "resnet_6blocks", "opts": {"ngf": -1}})),
}


@pytest.mark.parametrize("case", sorted(STUDENT_EDITS))
def test_a_hand_edited_student_is_one_line(case, tmp_path, cli):
    path = _student(tmp_path)
    key, make = STUDENT_EDITS[case]
    if make is None:
        from safetensors.torch import load_file, safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = {k: v for k, v in fh.metadata().items() if k != key}
        save_safetensors_atomic(load_file(str(path)), path, metadata=meta)
    else:
        _edit(path, key, make(path))
    before = snapshot(path)
    cli("export", path, "--size", "32", "--no-latency", "--out", tmp_path / "x.onnx").assert_user_error()
    assert snapshot(path) == before and not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("spec", [{"arch": ["resnet_6blocks"], "opts": {}}, {"arch": "resnet_6blocks", "opts": {"ngf": -1}},
                                  {"arch": "resnet_6blocks", "opts": "ngf=4"}, {"arch": "resnet_9blocks", "opts": {"ngf": 1000}}],
                         ids=["arch-list", "ngf-minus-one", "opts-string", "ngf-1000"])
def test_a_hand_edited_generator_file_is_one_line(spec, tmp_path, cli):
    path = tmp_path / "g.safetensors"
    save_safetensors_atomic(models.create("resnet_6blocks", ngf=4).state_dict(), path,
                            metadata={"ganzip.format": "generator", "ganzip.arch_spec": json.dumps(spec)})
    cli("profile", path, "--size", "32", "--repeats", "1").assert_user_error()


@pytest.mark.parametrize("args,fragment", [
    (["--arch", "resnet_6blocks", "--arch-opt", "ngf=-1"], "out of range"),
    (["--arch", "resnet_6blocks", "--arch-opt", "ngf=1e9"], "whole number"),
    (["--arch", "resnet_6blocks", "--arch-opt", "ngf=0"], "out of range"),
    (["--arch", "resnet_6blocks", "--size", "100000"], "--size"),
    (["--arch", "resnet_6blocks", "--size", "-5"], "--size"),
    (["--arch", "resnet_6blocks", "--repeats", "-1"], "--repeats"),
    (["--arch", "resnet_6blocks", "--width", "0.25", "--round-to", "100000"], "round-to"),
], ids=["ngf-minus-one", "ngf-1e9", "ngf-zero", "size-huge", "size-negative", "repeats-negative", "round-to-huge"])
def test_profile_bad_numbers_are_one_line(args, fragment, cli):
    line = cli("profile", *args).assert_user_error(fragment)
    assert "e+0" not in line  # no "width of at least 1.56e+03" for a width that must be <= 1


@pytest.mark.parametrize("size", ["8", "16", "100000"])
def test_compress_sizes_that_cannot_work_are_one_line(size, files, cli, tmp_path):
    argv = compress(files, tmp_path / "o")
    argv[argv.index("--size") + 1] = size
    argv += ["--set", "crd.patch_size=4"]
    cli(*argv).assert_user_error("--size")
    assert not (tmp_path / "o").exists()


def test_a_path_component_over_255_bytes_is_one_line(files, cli, tmp_path):
    cli(*compress(files, tmp_path / ("x" * 300))).assert_user_error("255")


def test_a_dangling_symlink_out_says_where_it_points(files, cli, tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    cli(*compress(files, tmp_path / "link")).assert_user_error("symbolic link", "gone")


def test_deeply_nested_toml_is_one_line(cli, tmp_path):
    recipe = tmp_path / "deep.toml"
    recipe.write_text("x = " + "[" * 50000 + "]" * 50000 + "\n")
    cli("recipes", "show", recipe).assert_user_error()
    manifest = tmp_path / "m.toml"
    manifest.write_text("x = " + "[" * 50000 + "]" * 50000 + "\n")
    cli("batch", manifest, "--dry-run").assert_user_error()


def test_assets_import_of_a_folder_is_one_line(cli, tmp_path):
    cli("assets", "import", tmp_path).assert_user_error("folder")


def test_a_read_only_ganzip_home_does_not_suggest_a_missing_flag(tmp_path, monkeypatch):
    import errno

    from ganzip.io import atomic_write_bytes
    from ganzip.errors import GanzipError

    monkeypatch.setenv("GANZIP_HOME", str(tmp_path / "home"))
    import ganzip.io as gio

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(gio.tempfile, "mkstemp", denied)  # as a read-only home does, even for root
    with pytest.raises(GanzipError) as err:
        atomic_write_bytes(tmp_path / "home" / "fid_stats" / "x.npz", b"x")  # where fid caches statistics
    assert "--out" not in str(err.value) and "GANZIP_HOME" in str(err.value)
    with pytest.raises(GanzipError, match="writable"):  # an output folder still names the flag
        atomic_write_bytes(tmp_path / "elsewhere" / "x.npz", b"x")


def test_export_tolerance_nan_blames_the_flag(finished, cli, tmp_path):
    cli("export", finished / "student.safetensors", "--tolerance", "nan", "--out", tmp_path / "x.onnx",
        "--size", "32").assert_user_error("--tolerance")

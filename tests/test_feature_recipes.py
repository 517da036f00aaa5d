"""The feature-level recipes end to end on the CPU: a generator class defined in the tests
(tests/skipnet.py), "auto" taps, the maps' place in the checkpoint (not in the student), exact resume, and
the refusals of bad layer names.

Teachers are random-weight generators built in the tests (no pretrained weights exist here).
"""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

from ganzip import compress, recipes
from ganzip.errors import GanzipError
from ganzip.student import build_student, load_student
from ganzip.training import outdir, state
from ganzip.training.loop import train
from ganzip.training.options import DataBundle, RunOptions
from ganzip.training.plan import plan_losses
from ganzip.training.setup import build_discriminator, discriminator_ndf

from .skipnet import SkipNet

SIZE = 64
FAST = ["perceptual.weight=0", "discriminator.ndf=8", "eval.max_images=2", "crd.patch_size=16"]
FEATURE_RECIPES = ["gc-feature", "cat-ka", "crd-ka", "crd-gc"]
AUTO_TAPS = ["down.2", "blocks.0", "blocks.1", "up.2"]


def teacher():
    torch.manual_seed(0)  # random weights: no pretrained generator exists here
    return SkipNet().eval()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from ganzip.data import make_dataset

    root = tmp_path_factory.mktemp("data") / "s2s"
    make_dataset("solid2striped", root, n=8, size=SIZE, progress=False)
    return root


def log_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("recipe", FEATURE_RECIPES)
def test_each_feature_recipe_trains_end_to_end_and_records_its_taps(recipe, data_dir, tmp_path):
    res = compress(teacher(), data=data_dir, recipe=recipe, size=SIZE, steps=2, overrides=FAST, out=tmp_path / recipe,
                   quiet=True, offline=True, checkpoint_every=0, eval_every=0)
    assert res.student_path.exists() and res.report_path.exists()
    term = "gc_feature" if "gc" in recipe else "kernel_alignment"
    assert term in res.train.plan.weights
    taps = res.report["training"]["feature_taps"]
    assert [t["layer"] for t in taps] == AUTO_TAPS
    assert {t["layer"]: (t["teacher_channels"], t["student_channels"]) for t in taps}["blocks.0"] == (32, 8)
    assert all(row[term] != "" for row in log_rows(res.train_log))
    md, html = (res.report_path.with_suffix(ext).read_text() for ext in (".md", ".html"))
    block = {t["layer"]: t for t in taps}["blocks.0"]
    shapes = "×".join(map(str, block["teacher"])), "×".join(map(str, block["student"]))
    assert "## Feature taps" in md and f"| blocks.0 | {shapes[0]} | {shapes[1]} |" in md
    assert "<h2>Feature taps</h2>" in html and all(s in html for s in shapes)
    assert "feature_taps" not in md  # the table, not the raw list in the Training section


@pytest.mark.parametrize("recipe,term", [("cat-ka", "kernel_alignment"), ("gc-feature", "gc_feature")])
def test_a_class_defined_here_distils_on_auto_taps_and_reloads_without_the_maps(recipe, term, data_dir, tmp_path):
    out = tmp_path / recipe
    res = compress(teacher(), data=data_dir, recipe=recipe, size=SIZE, steps=12, batch_size=2,
                   overrides=FAST + ["train.lr=2e-3", "kd_pixel.weight=1"], out=out, quiet=True, offline=True,
                   evaluate=False, checkpoint_every=0, eval_every=0, log_every=1)
    assert [t["layer"] for t in res.train.taps] == AUTO_TAPS
    values = [float(r[term]) for r in log_rows(res.train_log)]
    assert sum(values[-3:]) < sum(values[:3]), values  # the feature term falls as the student learns
    with safe_open(str(res.student_path), "pt") as f:
        keys = list(f.keys())
    assert not any("maps" in k or k.startswith("terms.") for k in keys)
    student = load_student(res.student_path, arch=f"{SkipNet.__module__}:SkipNet")
    assert set(student.state_dict()) == set(keys)
    assert student.blocks[0].body[0].out_channels == 8
    assert not any(m._forward_hooks for m in res.train.student.modules())  # the hooks came off


def run(recipe, bundle, out, *sets, max_steps=None, mode="fresh", checkpoint_every=0):
    cfg = recipes.resolve_recipe(recipe, FAST + [f"train.size={SIZE}"] + list(sets))
    t = teacher()
    plan = plan_losses(cfg, has_targets=True, paired=False)
    student = build_student(t, 0.25, seed=cfg.train.seed)
    D = build_discriminator(cfg, 3, 3, cfg.train.seed) if plan.use_discriminator else None
    opts = RunOptions(out=Path(out), checkpoint_every=checkpoint_every, eval_every=0, log_every=1, quiet=True,
                      max_steps=max_steps)
    return train(t, student, D, bundle, cfg, opts, plan, run_info={"mode": mode, "fingerprint": {"x": 1}})


@pytest.fixture(scope="module")
def bundle():
    from ganzip.data import ProceduralDataset

    ds = ProceduralDataset("solid2striped", n=6, size=SIZE, seed=3)
    return DataBundle(train=ds, holdout=None, has_b=True, paired=False)


def test_the_maps_live_in_the_checkpoint_and_a_killed_gc_feature_run_resumes_bit_exact(bundle, tmp_path):
    sets = ["train.steps=4", "discriminator.fakes=[\"teacher\", \"student\"]"]
    whole = run("gc-feature", bundle, tmp_path / "whole", *sets)
    part = run("gc-feature", bundle, tmp_path / "split", *sets, max_steps=2, checkpoint_every=2)
    assert part.steps == 2
    tensors, _ = state.load_checkpoint(tmp_path / "split" / outdir.CHECKPOINT_DIR)
    maps = sorted(k for k in tensors if k.startswith("terms.gc_feature.maps."))
    assert maps == [f"terms.gc_feature.maps.{i}.{p}" for i in range(4) for p in ("bias", "weight")]
    assert not any("maps" in k for k in part.last_state)
    resumed = run("gc-feature", bundle, tmp_path / "split", *sets, mode="resume")
    assert resumed.resumed_from == 2 and resumed.steps == 4
    for key, value in whole.last_state.items():
        assert torch.equal(value, resumed.last_state[key]), key
    a = (tmp_path / "whole" / outdir.TRAIN_LOG).read_text()
    b = (tmp_path / "split" / outdir.TRAIN_LOG).read_text()
    assert a == b and "gc_feature" in a.splitlines()[0]


def test_recipes_without_feature_terms_register_no_hook(bundle, tmp_path, monkeypatch):
    from ganzip.training import taps

    def refuse(*a, **k):
        raise AssertionError("taps resolved for a recipe without feature terms")

    monkeypatch.setattr(taps, "resolve_taps", refuse)
    res = run("kd-pixel", bundle, tmp_path, "train.steps=1")
    assert res.taps == []


def test_named_layers_replace_auto_and_kernel_alignment_over_the_batch_needs_two_images(bundle, tmp_path):
    res = run("cat-ka", bundle, tmp_path / "named", "train.steps=1", 'features.layers=["blocks.1"]')
    assert [t["layer"] for t in res.taps] == ["blocks.1"] and res.taps[0]["reason"] == "named"
    with pytest.raises(GanzipError, match=r"over = \"batch\".*batch size 1"):
        run("cat-ka", bundle, tmp_path / "b", "train.steps=1", "kernel_alignment.over=batch")


def test_a_bad_layer_name_exits_2_with_one_line_naming_the_nearest(cli, data_dir, tmp_path):
    from safetensors.torch import save_file

    from ganzip import models

    torch.manual_seed(0)
    path = tmp_path / "t.safetensors"
    save_file(models.create("resnet_6blocks", ngf=4).state_dict(), str(path))
    res = cli("compress", str(path), "--arch", "resnet_6blocks", "--arch-opt", "ngf=4", "--data", str(data_dir),
              "--recipe", "cat-ka", "--size", str(SIZE), "--steps", "1", "--out", str(tmp_path / "o"), "--quiet",
              "--set", 'features.layers=["model.99"]', *[a for s in FAST for a in ("--set", s)])
    res.assert_user_error("no module 'model.99' in the teacher or the student", "nearest: model.9")


def test_discriminator_width_scales_the_recipes_ndf():
    cfg = recipes.resolve_recipe("crd", ["discriminator.width=0.5"])
    assert discriminator_ndf(cfg.discriminator) == 32
    D = build_discriminator(cfg, 3, 3, 0)
    assert next(m for m in D.modules() if isinstance(m, nn.Conv2d)).out_channels == 32
    with pytest.raises(GanzipError, match="discriminator.width must be > 0"):
        recipes.resolve_recipe("crd", ["discriminator.width=0"])


def test_taps_train_under_bf16_autocast_and_channels_last(bundle, tmp_path):
    res = run("crd-gc", bundle, tmp_path, "train.steps=2", "train.amp=bf16", "train.channels_last=on")
    assert [row["gc_feature"] for row in res.log if "gc_feature" in row] and len(res.taps) == 4


DDP_WORKER = """
import os, sys
import torch
from safetensors.torch import save_file
from ganzip import engine
sys.path.insert(0, sys.argv[3])
from skipnet import SkipNet

torch.manual_seed(0)
result = engine.compress(SkipNet(), data=sys.argv[1], width=0.25, recipe="gc-feature", out=sys.argv[2], size=64,
                         steps=3, device="cpu", overrides=["discriminator.ndf=8", "eval.max_images=2"],
                         checkpoint_every=0, eval_every=0, log_every=1, quiet=True, evaluate=False)
rank = os.environ["RANK"]
save_file({k: v.contiguous() for k, v in result.train.last_state.items()}, f"{sys.argv[2]}/../rank{rank}.safetensors")
"""


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_gc_feature_under_torchrun_keeps_the_ranks_identical(data_dir, tmp_path):
    import os
    import socket
    import subprocess
    import sys

    from safetensors.torch import load_file

    import ganzip

    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GANZIP_OFFLINE": "1",
           "PYTHONPATH": str(Path(ganzip.__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(port), str(script), str(data_dir), str(tmp_path / "out"), str(Path(__file__).parent)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    a, b = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_feature_recipes_resolve_in_a_fresh_process_without_importing_the_losses_first():
    import subprocess
    import sys

    code = ("from ganzip.recipes import resolve_recipe\n"
            "cfg = resolve_recipe('cat-ka')\n"
            "print(cfg.section('kernel_alignment').weight, cfg.section('features').layers)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["1.0", "['auto']"]

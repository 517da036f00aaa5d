"""The engine's loss terms, checked from outside: one training step recomputed by hand.

What each step must do (spec section 3): the student's adversarial gradient
flows through the frozen D; D's parameters move by D's own loss only; the
crd.rows/columns/patches switches decide which relations the loss holds.
Then end-to-end runs of the crd-paired and rkd-instance recipes and of
``--init inherit``. Teachers are random-weight zoo generators built here (no
pretrained weights exist); images are the built-in procedural tasks.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from ganzip import engine, recipes
from ganzip.student import build_student

from .reference_crd import crd_direct, rkd_instance_direct
from .test_engine import FAST, MemoryImages, teacher_net

LR = 2e-4


@pytest.fixture(scope="module")
def images():
    from ganzip.data import ProceduralDataset

    ds = ProceduralDataset("solid2striped", n=10, size=64, seed=3)
    return ds.__getitems__(list(range(10)))


@pytest.fixture
def bundle(images):
    return engine.DataBundle(train=MemoryImages(images[:8]), holdout=None, has_b=True, paired=False)


def first_batch(bundle, cfg):
    """The batch the engine reads at step 0 (its order is a function of the seed)."""
    order = engine.BatchOrder(len(bundle.train), cfg.train.batch_size, cfg.train.seed, engine.ddp.DistEnv())
    loader = engine._Loader(bundle.train, order, 0, cfg.train.seed, pin=False)
    _, batch = next(iter(loader.iterate(0, 1)))
    return batch


def one_step(recipe, bundle, tmp_path, *sets, teacher=None, d_hooks=None):
    """Train one step; hand back the models before and after, and the engine's logged row."""
    cfg = recipes.resolve_recipe(recipe, FAST + ["train.steps=2", "train.batch_size=2"] + list(sets))
    teacher = teacher or teacher_net()
    plan = engine.plan_losses(cfg, has_targets=True, paired=False)
    student = build_student(teacher, 0.25, seed=cfg.train.seed)
    D = engine.build_discriminator(cfg, 3, 3, cfg.train.seed) if plan.use_discriminator else None
    before = (copy.deepcopy(student), copy.deepcopy(D))
    if d_hooks is not None:
        for p in D.parameters():
            p.register_hook(lambda g, p=p: d_hooks.append(p))
    opts = engine.RunOptions(out=tmp_path, checkpoint_every=0, eval_every=0, log_every=1, quiet=True, max_steps=1)
    result = engine.train(teacher, student, D, bundle, cfg, opts, plan, run_info={"mode": "fresh"})
    return cfg, teacher, before, (student, D), result


def adam_first_step(params, grads, lr=LR, eps=1e-8):
    """What Adam's first step does to each parameter: -lr * g / (|g| + eps) (bias-corrected moments)."""
    return [p.detach() - lr * g / (g.abs() + eps) for p, g in zip(params, grads)]


def lsgan(pred, real: bool):
    return F.mse_loss(pred, torch.full_like(pred, 1.0 if real else 0.0))


def test_d_moves_by_its_own_loss_and_the_student_by_the_adversarial_term_through_frozen_d(bundle, tmp_path):
    hooks: list = []
    # crd.weight=0: the student's only term is the adversarial one, so its whole step comes through D
    cfg, teacher, (s0, d0), (s1, d1), result = one_step("crd", bundle, tmp_path, "crd.weight=0", d_hooks=hooks)
    assert set(result.plan.weights) == {"adversarial"}
    batch = first_batch(bundle, cfg)
    x, real = batch["A"], batch["B"]
    with torch.no_grad():
        t_out = teacher(x)
    # D: 0.5 * (lsgan(D(real), 1) + lsgan(D(teacher), 0)), with D as it was before the step
    loss_d = 0.5 * (lsgan(d0(real), True) + lsgan(d0(t_out), False))
    d_params = list(d0.parameters())
    expected_d = adam_first_step(d_params, torch.autograd.grad(loss_d, d_params))
    for got, want in zip(d1.parameters(), expected_d):
        torch.testing.assert_close(got.detach(), want, atol=LR * 1e-2, rtol=0)
    # each D parameter received exactly one gradient (D's loss), none from the student's loss
    assert len(hooks) == len(d_params)
    assert all(p.requires_grad for p in d1.parameters())  # unfrozen again after the student's step
    # the student: lsgan(D_before(S(x)), 1); its gradient passes through D
    s_params = list(s0.parameters())
    loss_s = lsgan(d0(s0.train()(x)), True)
    grads = torch.autograd.grad(loss_s, s_params)
    assert any(g.abs().max() > 0 for g in grads)
    for got, want in zip(s1.parameters(), adam_first_step(s_params, grads)):
        torch.testing.assert_close(got.detach(), want, atol=LR * 1e-2, rtol=0)


@pytest.mark.parametrize("switches", [("rows",), ("columns",), ("patches",), ("rows", "patches"),
                                      ("rows", "columns", "patches")])
def test_the_crd_switches_decide_the_engines_loss(bundle, tmp_path, switches):
    sets = [f"crd.{g}={'true' if g in switches else 'false'}" for g in ("rows", "columns", "patches")]
    cfg, teacher, (s0, _), _, result = one_step("crd-no-d", bundle, tmp_path, *sets)
    x = first_batch(bundle, cfg)["A"]
    with torch.no_grad():
        expected = cfg.crd.weight * crd_direct(s0.train()(x).double(), teacher(x).double(),
                                               patch_size=cfg.crd.patch_size, granularities=switches)
    assert result.log[0]["crd"] == pytest.approx(float(expected), rel=1e-4)


def test_rkd_instance_term_is_the_relations_across_the_batch(bundle, tmp_path):
    cfg, teacher, (s0, _), _, result = one_step("rkd-instance", bundle, tmp_path, "train.batch_size=4")
    x = first_batch(bundle, cfg)["A"]
    with torch.no_grad():
        expected = cfg.rkd.weight * rkd_instance_direct(s0.train()(x).double(), teacher(x).double())
    assert result.log[0]["rkd"] == pytest.approx(float(expected), rel=1e-4)


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def paired_dir(tmp_path_factory):
    from ganzip.data import make_dataset

    root = tmp_path_factory.mktemp("paired") / "edges"
    make_dataset("edges2shapes", root, n=8, size=64, progress=False)
    return root


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory):
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("t") / "teacher.safetensors"
    save_file(teacher_net().state_dict(), str(path))  # random weights: no pretrained generator here
    return path


def compress(teacher_path, data, out, recipe, *sets, **kw):
    return engine.compress(str(teacher_path), arch="resnet_6blocks", arch_opts=["ngf=8"], data=str(data),
                           width=0.25, recipe=recipe, size=64, out=out, device="cpu", quiet=True, offline=True,
                           overrides=["perceptual.weight=0", "crd.patch_size=16", "discriminator.ndf=8",
                                      "eval.max_images=2", "eval.samples=0", *sets],
                           checkpoint_every=0, eval_every=1, **kw)


@pytest.mark.parametrize("recipe, terms, d_fakes", [
    ("crd-paired", {"crd", "adversarial"}, ["teacher"]),
    ("rkd-instance", {"rkd", "adversarial"}, ["teacher"]),
])
def test_recipe_runs_end_to_end(teacher_path, paired_dir, tmp_path, recipe, terms, d_fakes):
    res = compress(teacher_path, paired_dir, tmp_path / recipe, recipe, steps=2, batch_size=3)
    report = json.loads(res.report_path.read_text())
    assert res.student_path.is_file() and report["training"]["steps"] == 2
    assert set(report["losses_active"]) >= terms and set(res.train.plan.weights) >= terms
    assert res.train.plan.d_fakes == d_fakes
    assert all(torch.isfinite(torch.tensor(row[t])) for row in res.train.log for t in terms if t in row)
    cfg = recipes.resolve_recipe(recipe)
    assert report["recipe"]["adversarial"]["mode"] == cfg.adversarial.mode  # the recipe's own settings ran
    if recipe == "crd-paired":
        assert res.train.plan.conditional and report["recipe"]["discriminator"]["conditional"]
    assert report["metrics"]["student"]["psnr_to_target"]["count"] > 0  # measured on the paired test split


def test_init_inherit_starts_from_the_teachers_own_channels(teacher_path, paired_dir, tmp_path, cli):
    from ganzip.loading import load_generator
    from ganzip.student import load_student

    out = tmp_path / "inherit"
    # a learning rate of 1e-12: after one step the student still holds the inherited weights
    res = cli("compress", teacher_path, "--arch", "resnet_6blocks", "--arch-opt", "ngf=8", "--data", paired_dir,
              "--width", "0.5", "--init", "inherit", "--size", "64", "--steps", "1", "--out", out, "--offline",
              "--set", "perceptual.weight=0", "--set", "crd.patch_size=16", "--set", "discriminator.ndf=8",
              "--set", "train.lr=1e-12", "--set", "eval.samples=0", "--quiet")
    assert res.exit_code == 0, (res.stdout, res.stderr, res.exception)
    teacher = load_generator(str(teacher_path), arch="resnet_6blocks", arch_opts={"ngf": 8})
    student = load_student(out / "student_last.safetensors")
    assert student.ganzip_student["init"] == "inherit"
    t1, s1 = teacher.model[1].weight, student.model[1].weight
    assert s1.shape[0] == t1.shape[0] // 2
    for row in s1:  # every filter is one of the teacher's (moved by at most ~lr)
        assert min((row - t).abs().max() for t in t1) < 1e-9
    # a scratch student's filters are none of them
    scratch = build_student(teacher, 0.5, init="scratch")
    assert all(min((row - t).abs().max() for t in t1) > 1e-3 for row in scratch.model[1].weight)

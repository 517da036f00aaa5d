"""The training loop: schedule, checkpoints without pickle, exact resume, loss plans, NaN handling.

Teachers are random-weight zoo generators built inside the tests (no pretrained
weights exist here); images are the built-in procedural task, rendered once.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from ganzip import engine, models, recipes
from ganzip.errors import GanzipError, NonFiniteLossError
from ganzip.student import build_student


SIZE = 64
FAST = ["train.size=64", "crd.patch_size=16", "perceptual.weight=0", "discriminator.ndf=8", "eval.max_images=4"]


class MemoryImages(Dataset):
    """Pre-rendered items with a seeded per-(epoch, index) flip, like the real datasets."""

    kind = "unpaired"

    def __init__(self, items, augment=True, seed=0):
        self.items, self.augment, self.seed, self.epoch = items, augment, seed, 0

    def __len__(self):
        return len(self.items)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __getitem__(self, i):
        item = dict(self.items[i])
        if self.augment and np.random.default_rng([self.seed, self.epoch, i]).random() < 0.5:
            item = {k: (v.flip(-1) if torch.is_tensor(v) else v) for k, v in item.items()}
        return item


@pytest.fixture(scope="module")
def images():
    from ganzip.data import ProceduralDataset

    ds = ProceduralDataset("solid2striped", n=14, size=SIZE, seed=3)
    return ds.__getitems__(list(range(14)))


@pytest.fixture
def bundle(images):
    return engine.DataBundle(train=MemoryImages(images[:12]), holdout=MemoryImages(images[12:], augment=False),
                             has_b=True, paired=False)


def teacher_net(ngf=8, dropout=False):
    torch.manual_seed(1)
    return models.create("resnet_6blocks", ngf=ngf, use_dropout=dropout).eval()


def run(recipe, bundle, out, *sets, teacher=None, max_steps=None, checkpoint_every=0, eval_every=0, mode="fresh"):
    cfg = recipes.resolve_recipe(recipe, FAST + list(sets))
    teacher = teacher or teacher_net()
    plan = engine.plan_losses(cfg, has_targets=True, paired=False)
    student = build_student(getattr(teacher, "net", teacher), 0.25, seed=cfg.train.seed)
    D = engine.build_discriminator(cfg, 3, 3, cfg.train.seed) if plan.use_discriminator else None
    opts = engine.RunOptions(out=Path(out), checkpoint_every=checkpoint_every, eval_every=eval_every, log_every=1,
                             quiet=True, max_steps=max_steps)
    return engine.train(teacher, student, D, bundle, cfg, opts, plan, run_info={"mode": mode, "fingerprint": {"x": 1}})


# ---------------------------------------------------------------- pieces


def test_lr_is_constant_then_decays_linearly_to_zero():
    f = engine.linear_decay(100, 0.5)
    assert [f(s) for s in (0, 49, 50)] == [1.0, 1.0, 1.0]
    assert f(75) == pytest.approx(0.5)
    assert f(99) == pytest.approx(0.02)
    assert f(100) == 0.0


def test_optimizer_state_round_trips_through_safetensors_and_json(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, betas=(0.5, 0.999))
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
    tensors, structure = engine.flatten_optimizer(opt, "optim")
    engine.save_checkpoint(tmp_path, {**tensors, **{f"net.{k}": v for k, v in net.state_dict().items()}},
                           {"format": engine.CHECKPOINT_FORMAT, "step": 3, "structure": structure})
    t2, state = engine.load_checkpoint(tmp_path)
    json.dumps(state)  # the structure is plain JSON
    net2 = torch.nn.Linear(4, 3)
    net2.load_state_dict({k[4:]: v for k, v in t2.items() if k.startswith("net.")})
    opt2 = torch.optim.Adam(net2.parameters(), lr=1.0)
    opt2.load_state_dict(engine.unflatten_optimizer(t2, state["structure"]))
    x = torch.randn(5, 4)
    for o, n in ((opt, net), (opt2, net2)):
        o.zero_grad()
        n(x).pow(2).sum().backward()
        o.step()
    assert torch.equal(net.weight, net2.weight) and torch.equal(net.bias, net2.bias)
    assert opt2.param_groups[0]["betas"] == (0.5, 0.999)


def test_checkpoint_files_are_safetensors_and_json_only(tmp_path):
    engine.save_checkpoint(tmp_path, {"a": torch.ones(2)}, {"format": engine.CHECKPOINT_FORMAT, "step": 1})
    engine.save_checkpoint(tmp_path, {"a": torch.zeros(2)}, {"format": engine.CHECKPOINT_FORMAT, "step": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state-000000002.safetensors", "state.json"]
    tensors, state = engine.load_checkpoint(tmp_path)
    assert state["step"] == 2 and torch.equal(tensors["a"], torch.zeros(2))


def test_rng_states_restore_exactly():
    device = torch.device("cpu")
    tensors, meta = engine.capture_rng(device)
    assert all(t.dtype == torch.uint8 for t in tensors.values())
    json.dumps(meta)
    first = (torch.rand(3), np.random.rand(3), random.random())
    engine.restore_rng(tensors, json.loads(json.dumps(meta)), device)
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1]) and first[2] == second[2]


def test_holdout_psnr_is_on_the_unit_scale():
    a = torch.zeros(2, 3, 8, 8)
    b = a + 0.2  # 0.1 on the [0, 1] scale: 20 dB
    assert torch.allclose(engine.psnr(a, b), torch.full((2,), 20.0), atol=1e-4)


def test_batch_order_is_a_function_of_the_step():
    from ganzip.distributed import DistEnv

    a = engine.BatchOrder(10, 3, seed=5, env=DistEnv())
    seq = [a.batch(s) for s in range(9)]
    b = engine.BatchOrder(10, 3, seed=5, env=DistEnv())
    assert [b.batch(s) for s in (7, 2, 8)] == [seq[7], seq[2], seq[8]]
    assert a.steps_per_epoch == 3  # 10 images, batches of 3, the incomplete batch dropped
    assert len(set(sum(seq[:3], []))) == 9  # no image twice in an epoch
    assert seq[:3] != seq[3:6]  # a new order every epoch


def test_too_few_images_for_a_batch_is_a_clear_error():
    from ganzip.distributed import DistEnv

    with pytest.raises(GanzipError, match="fewer than one batch"):
        engine.BatchOrder(3, 4, seed=0, env=DistEnv())


# ---------------------------------------------------------------- loss plans


def test_no_target_images_disables_the_adversarial_term_with_a_warning():
    plan = engine.plan_losses(recipes.resolve_recipe("crd"), has_targets=False, paired=False)
    assert "adversarial" not in plan.weights and not plan.use_discriminator
    assert plan.weights == {"crd": 25.0, "perceptual": 1.0}
    assert any("adversarial term is disabled" in w for w in plan.warnings)


def test_crd_uses_teacher_fakes_and_an_adversarial_student():
    plan = engine.plan_losses(recipes.resolve_recipe("crd"), has_targets=True, paired=False)
    assert plan.weights["adversarial"] == 1.0 and plan.d_fakes == ["teacher"] and plan.needs_teacher


def test_scratch_needs_target_images():
    with pytest.raises(GanzipError, match="target="):
        engine.plan_losses(recipes.resolve_recipe("scratch"), has_targets=False, paired=False)


def test_scratch_uses_ground_truth_for_pairs_and_identity_otherwise():
    cfg = recipes.resolve_recipe("scratch")
    paired = engine.plan_losses(cfg, has_targets=True, paired=True)
    unpaired = engine.plan_losses(cfg, has_targets=True, paired=False)
    assert set(paired.weights) == {"adversarial", "ground_truth"} and not paired.needs_teacher
    assert set(unpaired.weights) == {"adversarial", "identity"} and unpaired.d_fakes == ["student"]


def test_conditional_discriminator_needs_pairs():
    with pytest.raises(GanzipError, match="conditional"):
        engine.plan_losses(recipes.resolve_recipe("crd-paired"), has_targets=True, paired=False)


def test_rkd_instance_needs_three_images_per_batch():
    with pytest.raises(GanzipError, match="batch"):
        engine.plan_losses(recipes.resolve_recipe("rkd-instance", ["train.batch_size=2"]), has_targets=True, paired=False)


def test_size_not_divisible_by_the_patch_names_both_fixes():
    with pytest.raises(GanzipError) as err:
        engine.check_size(recipes.resolve_recipe("crd", ["train.size=100"]))
    assert "overrides=['crd.patch_size=" in str(err.value) and "size=" in str(err.value)


# ---------------------------------------------------------------- OUT folder


def test_out_with_unrelated_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(GanzipError, match="did not write"):
        engine.prepare_out(tmp_path, resume=True, overwrite=False)


def test_finished_run_is_not_overwritten_without_overwrite(tmp_path):
    engine.write_run_marker(tmp_path, "finished", {})
    (tmp_path / engine.STUDENT).write_bytes(b"x")
    for resume in (True, False):
        with pytest.raises(GanzipError, match="overwrite=True"):
            engine.prepare_out(tmp_path, resume=resume, overwrite=False)
    assert engine.prepare_out(tmp_path, resume=False, overwrite=True) == "fresh"
    assert not (tmp_path / engine.STUDENT).exists()


def test_unfinished_run_with_a_checkpoint_resumes_unless_told_not_to(tmp_path):
    engine.write_run_marker(tmp_path, "running", {})
    engine.save_checkpoint(tmp_path / engine.CHECKPOINT_DIR, {"a": torch.ones(1)},
                           {"format": engine.CHECKPOINT_FORMAT, "step": 1})
    assert engine.prepare_out(tmp_path, resume=True, overwrite=False) == "resume"
    assert engine.prepare_out(tmp_path, resume=False, overwrite=False) == "fresh"
    assert not (tmp_path / engine.CHECKPOINT_DIR).exists()


# ---------------------------------------------------------------- training


def test_crd_term_decreases(bundle, tmp_path):
    result = run("crd-no-d", bundle, tmp_path, "train.steps=40", "train.lr=1e-3", teacher=teacher_net(ngf=16))
    crd = [row["crd"] for row in result.log]
    assert len(crd) == 40
    assert np.mean(crd[-10:]) < 0.8 * np.mean(crd[:10])


def test_train_log_and_checkpoint_are_written(bundle, tmp_path):
    result = run("crd", bundle, tmp_path, "train.steps=4", checkpoint_every=2, eval_every=2)
    rows = (tmp_path / engine.TRAIN_LOG).read_text().splitlines()
    assert rows[0].startswith("step,epoch,lr,loss") and len(rows) == 5
    assert {"adversarial", "crd", "d_real", "d_fake_teacher", "holdout_psnr"} <= set(rows[0].split(","))
    _, state = engine.load_checkpoint(tmp_path / engine.CHECKPOINT_DIR)
    assert state["step"] == 4 and result.best_step in (2, 4)


def test_interrupted_and_resumed_run_ends_with_the_same_student(bundle, tmp_path):
    # Dropout in the generators and a discriminator step on student fakes exercise every RNG stream.
    sets = ["train.steps=6", "discriminator.fakes=[\"teacher\", \"student\"]"]
    kw = dict(teacher=teacher_net(dropout=True), checkpoint_every=3, eval_every=2)
    whole = run("crd", bundle, tmp_path / "whole", *sets, **kw)
    part = run("crd", bundle, tmp_path / "split", *sets, max_steps=3, **kw)
    assert part.steps == 3
    resumed = run("crd", bundle, tmp_path / "split", *sets, mode="resume", **kw)
    assert resumed.resumed_from == 3 and resumed.steps == 6
    for key, value in whole.last_state.items():
        assert torch.equal(value, resumed.last_state[key]), key
    assert whole.best_step == resumed.best_step
    a = (tmp_path / "whole" / engine.TRAIN_LOG).read_text()
    b = (tmp_path / "split" / engine.TRAIN_LOG).read_text()
    assert a == b


class _NaNAfter(torch.nn.Module):
    """A teacher whose outputs turn NaN from its n-th call on."""

    def __init__(self, net, n):
        super().__init__()
        self.net, self.n, self.calls = net, n, 0

    def forward(self, x):
        self.calls += 1
        y = self.net(x)
        return y * float("nan") if self.calls > self.n else y


def test_nan_loss_stops_naming_the_term_and_keeps_the_last_checkpoint(bundle, tmp_path):
    teacher = _NaNAfter(teacher_net(), 3)
    data = engine.DataBundle(train=bundle.train, holdout=None, has_b=True)
    with pytest.raises(NonFiniteLossError) as err:
        run("crd-no-d", data, tmp_path, "train.steps=6", teacher=teacher, checkpoint_every=2)
    assert "'crd'" in str(err.value) and "step 4" in str(err.value)
    assert err.value.exit_code == 2
    _, state = engine.load_checkpoint(tmp_path / engine.CHECKPOINT_DIR)
    assert state["step"] == 2


def test_fidelity_to_the_teacher_beats_the_scratch_recipe(bundle, tmp_path):
    # Same budget (40 steps), compared after the last step: best-of selection would let `scratch`
    # pick its least-trained state, which is closest to the (random-weight) teacher by accident.
    teacher = teacher_net(ngf=16)
    sets = ["train.steps=40", "train.lr=1e-3"]
    crd = run("crd", bundle, tmp_path / "crd", *sets, teacher=teacher, eval_every=10)
    scratch = run("scratch", bundle, tmp_path / "scratch", *sets, teacher=teacher, eval_every=10)
    assert crd.last_metrics["holdout_psnr"] > scratch.last_metrics["holdout_psnr"] + 1.0
    assert crd.last_metrics["holdout_l1"] < scratch.last_metrics["holdout_l1"]

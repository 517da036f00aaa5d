"""The loss registry drives training: a term defined only in this file trains through a TOML recipe.

The terms here are registered by the tests (and removed after each), named in a
recipe file and run through ``compress``; the teacher is a random-weight zoo
generator and the images the built-in procedural task (no pretrained weights).
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

from ganzip import engine, recipes
from ganzip.errors import GanzipError
from ganzip.losses import registry
from ganzip.student import build_student
from ganzip.training import trainlog

from .test_engine import FAST, MemoryImages, teacher_net


@dataclass
class MeanAbsConfig:
    """Section [mean_abs]: weight * mean |S(x) - T(x)| * scale."""

    weight: float = 0.0
    scale: float = 1.0


class MeanAbs(nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, inputs: registry.TermInputs) -> torch.Tensor:
        return (inputs.student_out - inputs.teacher_out).abs().mean() * self.scale


@dataclass
class LearnedGainConfig:
    """Section [learned_gain]: a term with a parameter of its own, |g * S(x) - T(x)|."""

    weight: float = 0.0


class LearnedGain(nn.Module):
    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(0.5))

    def forward(self, inputs: registry.TermInputs) -> torch.Tensor:
        return (self.gain * inputs.student_out - inputs.teacher_out).abs().mean()


@pytest.fixture
def mean_abs():
    spec = registry.register_term(registry.TermSpec(
        "mean_abs", MeanAbsConfig, lambda section, ctx: MeanAbs(section.scale), needs_teacher=True))
    yield spec
    registry.unregister_term("mean_abs")


@pytest.fixture
def learned_gain():
    spec = registry.register_term(registry.TermSpec(
        "learned_gain", LearnedGainConfig, lambda section, ctx: LearnedGain(), needs_teacher=True))
    yield spec
    registry.unregister_term("learned_gain")


@pytest.fixture(scope="module")
def images():
    from ganzip.data import ProceduralDataset

    ds = ProceduralDataset("solid2striped", n=10, size=64, seed=3)
    return ds.__getitems__(list(range(10)))


def bundle_of(images):
    return engine.DataBundle(train=MemoryImages(images[:8]), holdout=MemoryImages(images[8:], augment=False),
                             has_b=True, paired=False)


def recipe_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "with_term.toml"
    path.write_text('extends = "crd"\ndescription = "crd plus a term defined in a test"\n' + body)
    return path


def log_rows(out: Path) -> list[dict]:
    with open(out / engine.TRAIN_LOG, newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_term_defined_in_a_test_trains_through_a_toml_recipe(mean_abs, images, tmp_path):
    path = recipe_file(tmp_path, "[mean_abs]\nweight = 2.0\nscale = 3.0\n")
    res = engine.compress(teacher_net(), data=bundle_of(images), recipe=str(path), overrides=FAST, steps=4,
                          batch_size=2, out=tmp_path / "run", log_every=1, eval_every=0, quiet=True,
                          evaluate=False, device="cpu", offline=True)
    assert res.config.section("mean_abs") == MeanAbsConfig(weight=2.0, scale=3.0)
    assert res.train.plan.weights["mean_abs"] == 2.0
    rows = log_rows(tmp_path / "run")
    assert len(rows) == 4 and "mean_abs" in rows[0]
    values = [float(r["mean_abs"]) for r in rows]
    assert all(math.isfinite(v) and v > 0 for v in values) and len(set(values)) > 1
    # the loop adds the weighted term: the logged loss is the sum of the logged student terms
    for r in rows:
        parts = sum(float(r[k]) for k in res.train.plan.weights)
        assert float(r["loss"]) == pytest.approx(parts, rel=1e-4)
    # the recipe, with its new section, is what the student file records
    with safe_open(str(res.student_path), "pt") as f:
        assert '"mean_abs": {"scale": 3.0, "weight": 2.0}' in f.metadata()["ganzip.recipe_config"]


def test_the_weighted_term_is_the_unweighted_loss_times_its_weight(mean_abs, images, tmp_path):
    # Independent computation: the step-0 value of mean |S(x) - T(x)| from the batch the loop reads.
    cfg = recipes.resolve_recipe("crd", FAST + ["train.steps=1", "train.batch_size=2", "mean_abs.weight=2.5",
                                                "mean_abs.scale=1.0"])
    bundle = bundle_of(images)
    teacher = teacher_net()
    student = build_student(teacher, 0.25, seed=cfg.train.seed)
    order = engine.BatchOrder(len(bundle.train), 2, cfg.train.seed, engine.ddp.DistEnv())
    _, batch = next(iter(engine._Loader(bundle.train, order, 0, cfg.train.seed, pin=False).iterate(0, 1)))
    with torch.no_grad():
        expected = 2.5 * float((student(batch["A"].clone()) - teacher(batch["A"].clone())).abs().mean())
    plan = engine.plan_losses(cfg, has_targets=True, paired=False)
    D = engine.build_discriminator(cfg, 3, 3, cfg.train.seed)
    opts = engine.RunOptions(out=tmp_path, checkpoint_every=0, eval_every=0, log_every=1, quiet=True)
    result = engine.train(teacher, student, D, bundle, cfg, opts, plan, run_info={"mode": "fresh"})
    assert result.log[0]["mean_abs"] == pytest.approx(expected, rel=1e-5)


def test_a_term_with_parameters_learns_is_checkpointed_and_resumes_exactly(learned_gain, images, tmp_path):
    sets = FAST + ["train.steps=4", "train.batch_size=2", "learned_gain.weight=1.0"]
    cfg = recipes.resolve_recipe("crd", sets)
    plan = engine.plan_losses(cfg, has_targets=True, paired=False)

    def run(out, mode="fresh", max_steps=None):
        teacher = teacher_net()
        student = build_student(teacher, 0.25, seed=cfg.train.seed)
        D = engine.build_discriminator(cfg, 3, 3, cfg.train.seed)
        opts = engine.RunOptions(out=out, checkpoint_every=2, eval_every=0, log_every=1, quiet=True,
                                 max_steps=max_steps)
        return engine.train(teacher, student, D, bundle_of(images), cfg, opts, plan,
                            run_info={"mode": mode, "fingerprint": {"x": 1}})

    part = run(tmp_path / "split", max_steps=2)
    tensors, state = engine.load_checkpoint(tmp_path / "split" / engine.CHECKPOINT_DIR)
    gain = tensors["terms.learned_gain.gain"]
    assert float(gain) != 0.5  # optimized with the student: Adam moved it
    assert len(state["optimizers"]["student"]["param_groups"]) == 2
    assert not any(k.startswith("learned_gain") or "gain" in k for k in part.student.state_dict())
    resumed = run(tmp_path / "split", mode="resume")
    whole = run(tmp_path / "whole")
    for key, value in whole.last_state.items():
        assert torch.equal(value, resumed.last_state[key]), key
    assert (tmp_path / "whole" / engine.TRAIN_LOG).read_text() == (tmp_path / "split" / engine.TRAIN_LOG).read_text()


def test_recipes_without_registered_terms_keep_one_parameter_group(images, tmp_path):
    cfg = recipes.resolve_recipe("crd", FAST + ["train.steps=1", "train.batch_size=2"])
    plan = engine.plan_losses(cfg, has_targets=True, paired=False)
    teacher = teacher_net()
    opts = engine.RunOptions(out=tmp_path, checkpoint_every=1, eval_every=0, log_every=1, quiet=True)
    engine.train(teacher, build_student(teacher, 0.25, seed=0), engine.build_discriminator(cfg, 3, 3, 0),
                 bundle_of(images), cfg, opts, plan, run_info={"mode": "fresh"})
    tensors, state = engine.load_checkpoint(tmp_path / engine.CHECKPOINT_DIR)
    assert len(state["optimizers"]["student"]["param_groups"]) == 1
    assert not any(k.startswith("terms.") for k in tensors)
    columns = list(trainlog.read_log(tmp_path / engine.TRAIN_LOG, 1)[0])
    assert columns[:8] == ["step", "epoch", "lr", "loss", "adversarial", "crd", "d_real", "d_fake_teacher"]


def test_an_unknown_term_in_a_recipe_is_a_one_line_error(tmp_path, cli):
    path = recipe_file(tmp_path, "[mean_abs]\nweight = 1.0\n")  # not registered in this test
    with pytest.raises(GanzipError, match=r"unknown recipe section 'mean_abs'; valid sections: .*crd"):
        recipes.resolve_recipe(str(path))
    res = cli("recipes", "show", str(path))
    res.assert_user_error("unknown recipe section 'mean_abs'")


def test_ganzips_own_terms_cannot_be_replaced_and_keep_their_order():
    assert [t.name for t in registry.terms()][:7] == [
        "adversarial", "crd", "rkd", "perceptual", "kd_pixel", "ground_truth", "identity"]
    with pytest.raises(GanzipError, match="ganzip's own"):
        registry.register_term(registry.TermSpec("crd", MeanAbsConfig, lambda s, ctx: MeanAbs(1.0)))
    with pytest.raises(GanzipError, match="weight"):
        registry.register_term(registry.TermSpec("no_weight", dict, lambda s, ctx: MeanAbs(1.0)))

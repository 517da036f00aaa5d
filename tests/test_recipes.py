"""Recipes: presets, the typed config, --set overrides, third-party recipes."""
from __future__ import annotations

import json
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from pathlib import Path

import pytest

from ganzip import recipes
from ganzip.config import RecipeConfig
from ganzip.errors import GanzipError

BUILTINS = ["crd", "crd-always-update", "crd-no-d", "crd-paired", "kd-pixel", "rkd-instance", "scratch"]


def test_builtin_presets_are_listed():
    assert set(BUILTINS) <= set(recipes.list_recipes())


@pytest.mark.parametrize("name", BUILTINS)
def test_every_preset_resolves_to_a_typed_config(name):
    cfg = recipes.resolve_recipe(name)
    assert isinstance(cfg, RecipeConfig)
    assert cfg.name == name
    assert cfg.description


def test_crd_has_the_paper_unpaired_defaults():
    cfg = recipes.resolve_recipe("crd")
    from ganzip.engine import crd_patch_size

    # k = 32 at the paper's 256 px (patch_size 0: the same 8 x 8 grid at any output side)
    assert (cfg.crd.weight, cfg.perceptual.weight, cfg.train.batch_size, crd_patch_size(cfg, 256)) == (25.0, 1.0, 1, 32)
    assert cfg.adversarial.mode == "lsgan" and cfg.adversarial.weight == 1.0
    assert cfg.discriminator.enabled and cfg.discriminator.fakes == ["teacher"]
    assert (cfg.train.lr, cfg.train.beta1, cfg.train.beta2, cfg.train.epochs) == (2e-4, 0.5, 0.999, 100)
    assert (cfg.crd.distance, cfg.crd.angle) == (1.0, 2.0)


def test_crd_paired_has_the_pix2pix_defaults_and_an_adversarial_student():
    cfg = recipes.resolve_recipe("crd-paired")
    assert (cfg.crd.weight, cfg.perceptual.weight, cfg.train.batch_size) == (2.5, 1.0, 4)
    assert cfg.adversarial.mode == "hinge" and cfg.adversarial.weight > 0
    assert cfg.discriminator.conditional


def test_table6_ablations_differ_from_crd_only_in_the_discriminator():
    base = recipes.resolve_recipe("crd").to_dict()
    always = recipes.resolve_recipe("crd-always-update").to_dict()
    no_d = recipes.resolve_recipe("crd-no-d").to_dict()
    assert always["discriminator"]["fakes"] == ["teacher", "student"]
    assert no_d["adversarial"]["weight"] == 0.0 and not no_d["discriminator"]["enabled"]
    for other in (always, no_d):
        changed = {k for k in base if base[k] != other[k]} - {"name", "description"}
        assert changed <= {"discriminator", "adversarial"}


def test_baselines_turn_off_distillation_terms():
    scratch = recipes.resolve_recipe("scratch")
    assert scratch.crd.weight == scratch.perceptual.weight == scratch.kd_pixel.weight == 0
    assert scratch.discriminator.fakes == ["student"]
    kd = recipes.resolve_recipe("kd-pixel")
    assert kd.kd_pixel.weight > 0 and kd.crd.weight == 0 and not kd.discriminator.enabled
    rkd = recipes.resolve_recipe("rkd-instance")
    assert rkd.rkd.weight > 0 and rkd.crd.weight == 0 and rkd.train.batch_size >= 3


def test_set_overrides_are_typed_from_toml_values():
    cfg = recipes.resolve_recipe("crd", [
        "crd.weight=10", "train.steps=7", "train.augment=false", "adversarial.mode=hinge",
        "discriminator.fakes=[\"teacher\", \"student\"]", "perceptual.weights=\"/x/vgg.pth\"",
    ])
    assert cfg.crd.weight == 10.0 and isinstance(cfg.crd.weight, float)
    assert cfg.train.steps == 7 and cfg.train.augment is False
    assert cfg.adversarial.mode == "hinge"
    assert cfg.discriminator.fakes == ["teacher", "student"]
    assert cfg.perceptual.weights == "/x/vgg.pth"


def test_set_accepts_bare_lists_and_strings():
    cfg = recipes.resolve_recipe("crd", ["discriminator.fakes=teacher,student", "perceptual.weights=vgg16-397923af.pth"])
    assert cfg.discriminator.fakes == ["teacher", "student"]
    assert cfg.perceptual.weights == "vgg16-397923af.pth"


def test_later_set_wins():
    assert recipes.resolve_recipe("crd", ["crd.weight=1", "crd.weight=2"]).crd.weight == 2.0


def test_unknown_recipe_lists_the_valid_ones():
    with pytest.raises(GanzipError) as err:
        recipes.resolve_recipe("crdd")
    assert "crd-paired" in str(err.value) and "scratch" in str(err.value)


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(GanzipError) as err:
        recipes.resolve_recipe("crd", ["crd.wieght=3"])
    assert "crd.weight" in str(err.value) and "train.steps" in str(err.value)


@pytest.mark.parametrize("item, words", [
    ("train.steps=1.5", "integer"),
    ("crd.weight=abc", "number"),
    ("train.augment=1", "true or false"),
    ("adversarial.mode=wgan", "lsgan"),
    ("discriminator.fakes=[\"teacher\", \"ghost\"]", "allowed"),
    ("crd.weight=-1", ">= 0"),
    ("crd.weight=nan", "finite"),
    ("crdweight", "section.key=value"),
])
def test_bad_values_are_clear_errors(item, words):
    with pytest.raises(GanzipError) as err:
        recipes.resolve_recipe("crd", [item])
    assert words in str(err.value)


def test_recipe_hash_tracks_training_settings_only():
    a = recipes.resolve_recipe("crd")
    assert a.hash() == recipes.resolve_recipe("crd").hash()
    assert a.hash() != recipes.resolve_recipe("crd", ["crd.weight=10"]).hash()


def test_toml_output_reads_back_to_the_same_config():
    cfg = recipes.resolve_recipe("crd-paired", ["perceptual.weights=C:\\w\\vgg \"16\".pth"])
    again = tomllib.loads(recipes.to_toml(cfg))
    assert again == cfg.to_dict()
    assert json.loads(recipes.to_json(cfg)) == cfg.to_dict()


def test_a_toml_path_is_a_recipe(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('extends = "crd"\ndescription = "mine"\n[crd]\nweight = 3.0\n')
    cfg = recipes.resolve_recipe(str(path))
    assert cfg.name == "mine" and cfg.crd.weight == 3.0 and cfg.perceptual.weight == 1.0


def test_unknown_key_in_a_recipe_file_is_an_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[crd]\nwieght = 3.0\n")
    with pytest.raises(GanzipError, match="crd.wieght"):
        recipes.resolve_recipe(str(path))


@pytest.fixture
def scratch_registry(monkeypatch):
    """Recipes registered by a test vanish after it."""
    recipes.list_recipes()
    monkeypatch.setattr(recipes, "_REGISTRY", dict(recipes._REGISTRY))


def test_extends_cycle_is_an_error(scratch_registry):
    recipes.register_recipe("cyc-a", lambda: {"extends": "cyc-b"})
    recipes.register_recipe("cyc-b", lambda: {"extends": "cyc-a"})
    with pytest.raises(GanzipError, match="extends itself"):
        recipes.resolve_recipe("cyc-a")
    assert "unusable" in recipes.recipe_info("cyc-a")["description"]  # listing survives a broken recipe


def test_register_recipe_decorator_adds_a_data_recipe(scratch_registry):
    @recipes.register_recipe("test-decorated")
    def _mine():
        return {"extends": "crd", "crd": {"weight": 5.0}}

    assert "test-decorated" in recipes.list_recipes()
    assert recipes.resolve_recipe("test-decorated").crd.weight == 5.0


def test_entry_point_recipes_are_discovered(tmp_path, monkeypatch):
    # A fake installed distribution: a dist-info folder declaring two ganzip.recipes entry points,
    # one naming a TOML path (a module attribute), one naming a function returning a dict.
    pkg = tmp_path / "thirdparty_recipes.py"
    toml_path = tmp_path / "third.toml"
    toml_path.write_text('extends = "crd"\ndescription = "third"\n[crd]\nweight = 7.0\n')
    pkg.write_text(
        f"PATH = {str(toml_path)!r}\n"
        "def make():\n    return {'extends': 'crd-paired', 'description': 'fn', 'crd': {'weight': 1.5}}\n"
    )
    dist = tmp_path / "thirdparty_recipes-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-recipes\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[ganzip.recipes]\nthird-toml = thirdparty_recipes:PATH\nthird-fn = thirdparty_recipes:make\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(recipes, "_DISCOVERED", False)
    monkeypatch.setattr(recipes, "_REGISTRY", dict(recipes._REGISTRY))
    assert {"third-toml", "third-fn"} <= set(recipes.list_recipes())
    assert recipes.resolve_recipe("third-toml").crd.weight == 7.0
    fn = recipes.resolve_recipe("third-fn")
    assert fn.crd.weight == 1.5 and fn.train.batch_size == 4
    assert "entry point" in recipes.recipe_info("third-fn")["origin"]


def test_top_level_recipes_folder_holds_the_presets():
    root = Path(__file__).resolve().parents[1]
    names = {p.stem for p in (root / "recipes").glob("*.toml")}
    assert set(BUILTINS) <= names
    assert names == {p.stem for p in recipes.presets_dir().glob("*.toml")}


# ---------------------------------------------------------------- the `ganzip recipes` command


def test_recipes_command_lists_every_recipe_with_its_description(cli):
    res = cli("recipes")
    assert res.exit_code == 0
    for name in BUILTINS:
        assert any(line.startswith(name + " ") for line in res.stdout.splitlines()), name
    assert "Table 6" in res.stdout


def test_recipes_show_prints_the_resolved_recipe_as_toml(cli):
    res = cli("recipes", "show", "crd-no-d", "--set", "crd.weight=3")
    assert res.exit_code == 0
    shown = tomllib.loads(res.stdout)
    assert shown == recipes.resolve_recipe("crd-no-d", ["crd.weight=3"]).to_dict()


def test_recipes_show_json(cli):
    res = cli("recipes", "show", "crd-paired", "--format", "json")
    assert res.exit_code == 0 and json.loads(res.stdout)["crd"]["weight"] == 2.5


def test_recipes_show_unknown_recipe_is_a_user_error(cli):
    cli("recipes", "show", "nope").assert_user_error("valid recipes", "crd")


def test_crd_precision_is_a_recipe_key_that_reaches_the_loss():
    from ganzip import engine

    cfg = recipes.resolve_recipe("crd", ["crd.precision=float32", "perceptual.weight=0"])
    plan = engine.plan_losses(cfg, has_targets=False, paired=False)
    assert engine._Losses(cfg, plan, offline=True, out_side=64).crd.precision == "float32"
    with pytest.raises(GanzipError, match="precision"):
        recipes.resolve_recipe("crd", ["crd.precision=float16"])

"""The one typed configuration of a compression run.

A recipe (``recipes/*.toml``, see ``ganzip.recipes``) is plain data. It is
resolved into a :class:`RecipeConfig`: nested dataclasses with one section
per concern (training schedule, each loss term, the discriminator, the
held-out evaluation). Defaults are the paper's unpaired CycleGAN settings
(``docs/recipes.md`` and ``../shared/spec/method.md`` section 5).

The config is passed down explicitly; nothing reads a global.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field

from .errors import GanzipError


@dataclass
class TrainConfig:
    """Optimisation schedule. ``steps`` > 0 wins over ``epochs``."""

    steps: int = 0
    epochs: int = 100
    batch_size: int = 1  # per process under torchrun
    size: int = 256
    seed: int = 0
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    decay_start: float = 0.5  # fraction of the run at constant lr; then linear decay to 0
    augment: bool = True
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | bf16 | off
    channels_last: str = "auto"  # auto (on for CUDA) | on | off
    deterministic: str = "auto"  # auto (on for CPU) | on | off


@dataclass
class CRDConfig:
    """Content relationship distillation (spec section 2); weight = lambda_CRD."""

    weight: float = 25.0
    patch_size: int = 0  # k in output pixels; 0: the paper's 32 at a 256-px output, scaled (output side / 8)
    rows: bool = True
    columns: bool = True
    patches: bool = True
    distance: float = 1.0
    angle: float = 2.0
    precision: str = "auto"  # auto: exact float64 path on the CPU, float32 path elsewhere (docs/crd.md)


@dataclass
class PerceptualConfig:
    """OMGD perceptual loss on VGG-16 (spec section 4); weight = lambda_per.

    ``weights`` is a path to VGG-16 weights; empty means the asset registry
    (``ganzip.assets``) looks them up in local caches.
    """

    weight: float = 1.0
    style: float = 1e4
    feature: float = 10.0
    weights: str = ""


@dataclass
class RKDConfig:
    """Instance-level relational KD across the images of a batch (paper Table 3)."""

    weight: float = 0.0
    distance: float = 1.0
    angle: float = 2.0


@dataclass
class KDPixelConfig:
    """Pixel loss between student and teacher outputs."""

    weight: float = 0.0
    loss: str = "l1"  # l1 | l2


@dataclass
class GroundTruthConfig:
    """Pixel loss to the ground truth; used only with aligned A|B pairs."""

    weight: float = 0.0
    loss: str = "l1"


@dataclass
class IdentityConfig:
    """CycleGAN's identity term ``|S(b) - b|`` on target images; unpaired data only."""

    weight: float = 0.0


@dataclass
class AdversarialConfig:
    """The student's adversarial term ``weight * gan_loss(D(S(x)), real)``."""

    mode: str = "lsgan"  # lsgan | hinge | vanilla
    weight: float = 1.0  # 0 = no adversarial term for the student


@dataclass
class DiscriminatorConfig:
    """The online discriminator (spec section 3).

    ``fakes`` lists what D is shown as fake when it takes a step: ``teacher``
    outputs (CRD's updating-freezing), also ``student`` outputs (the
    always-updating ablation), or only ``student`` (training without a
    teacher). ``fallback`` says what happens when there are no real target
    images: ``disable`` drops the adversarial term (and records a warning),
    ``error`` stops.
    """

    enabled: bool = True
    fakes: list[str] = field(default_factory=lambda: ["teacher"])
    conditional: bool = False  # pix2pix-style D on cat(input, image); needs aligned pairs
    arch: str = "patchgan"
    ndf: int = 64
    width: float = 1.0  # D's channels relative to ndf: ndf_used = round(ndf * width) (GCC: a weaker D for a small G)
    n_layers: int = 3
    norm: str = "instance"
    lr: float = 2e-4
    fallback: str = "disable"  # disable | error


@dataclass
class EvalConfig:
    """Periodic fidelity-to-teacher check on a held-out split of the training data.

    ``select`` is the metric that picks the kept student (``docs/evaluation.md``):
    ``kid`` or ``fid`` (Inception features of the student's outputs against
    the teacher's, on the held-out inputs), ``lpips`` (AlexNet) or ``psnr``
    to the teacher; ``auto`` takes the most faithful one whose weights are
    present (kid, then lpips, then psnr) and the report says when it fell
    back. ``inception_weights`` / ``alexnet_weights`` are explicit files
    (empty: looked up by ``ganzip.assets``).
    """

    holdout: float = 0.05  # fraction of the training images held out
    max_images: int = 32
    samples: int = 4  # rows in samples.png
    select: str = "auto"  # auto | kid | fid | lpips | psnr
    inception_weights: str = ""
    alexnet_weights: str = ""


# Keys added after 0.1.0, left out of a resolved recipe while at their default: recipe
# hashes (resume fingerprints, batch markers, student metadata) of 0.1.0 runs still match.
LATER_KEYS = {("discriminator", "width"): 1.0}


@dataclass
class RecipeConfig:
    """A fully resolved recipe. Build it with ``ganzip.recipes.resolve_recipe``."""

    name: str = "custom"
    description: str = ""
    train: TrainConfig = field(default_factory=TrainConfig)
    crd: CRDConfig = field(default_factory=CRDConfig)
    perceptual: PerceptualConfig = field(default_factory=PerceptualConfig)
    rkd: RKDConfig = field(default_factory=RKDConfig)
    kd_pixel: KDPixelConfig = field(default_factory=KDPixelConfig)
    ground_truth: GroundTruthConfig = field(default_factory=GroundTruthConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # Sections of loss terms registered at run time (``ganzip.losses.registry``): name -> section dataclass.
    # Only the sections a recipe names are here; they follow the typed sections in :meth:`to_dict`.
    extra_sections: dict[str, typing.Any] = field(default_factory=dict, repr=False)

    def section(self, name: str):
        """The section ``name``: a typed one, a registered term's as given, or that term's defaults."""
        if name in _TYPED:
            return getattr(self, name)
        if name in self.extra_sections:
            return self.extra_sections[name]
        if name in SECTIONS:
            return SECTIONS[name]()
        raise GanzipError(f"unknown recipe section {name!r}; valid sections: {', '.join(SECTIONS)}")

    def __getattr__(self, name: str):
        """A registered term's section reads like a typed one: ``cfg.features.layers``."""
        if name.startswith("_") or name == "extra_sections" or name not in SECTIONS:
            raise AttributeError(name)
        return self.section(name)

    # -- conversions -------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain nested dict (JSON/TOML-ready)."""
        d = {f.name: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
             for f in dataclasses.fields(self) if f.name != "extra_sections" for v in [getattr(self, f.name)]}
        d.update({name: dataclasses.asdict(sec) for name, sec in self.extra_sections.items()})
        for (section, key), default in LATER_KEYS.items():
            if d.get(section, {}).get(key) == default:
                del d[section][key]
        return d

    def training_dict(self) -> dict:
        """The parts that decide the trained weights (everything but name/description)."""
        d = self.to_dict()
        d.pop("name")
        d.pop("description")
        return d

    def hash(self) -> str:
        """sha256 (hex, first 16 chars) of the canonical JSON of :meth:`training_dict`."""
        blob = json.dumps(self.training_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def total_steps(self, steps_per_epoch: int) -> int:
        """Number of optimisation steps: ``train.steps`` or ``epochs * steps_per_epoch``."""
        if self.train.steps > 0:
            return self.train.steps
        return self.train.epochs * steps_per_epoch


# Section name -> its dataclass (type hints resolved: annotations are strings here). The typed sections
# come first, in RecipeConfig's order; register_section appends the sections of registered loss terms.
SECTIONS: dict[str, type] = {
    name: hint for name, hint in typing.get_type_hints(RecipeConfig).items()
    if name not in ("name", "description", "extra_sections")
}
_TYPED = frozenset(SECTIONS)
META_KEYS = ("name", "description", "extends")


def register_section(name: str, cls: type) -> None:
    """Let recipes and ``--set`` name section ``name``, read into dataclass ``cls`` (a loss term's settings).

    A typed section registers as itself (no change); another class for a taken name is an error.
    """
    if not dataclasses.is_dataclass(cls) or not isinstance(cls, type):
        raise GanzipError(f"the section of {name!r} must be a dataclass type, got {cls!r}")
    if not name.isidentifier() or name in META_KEYS or name == "extra_sections":
        raise GanzipError(f"{name!r} cannot name a recipe section: use a lower-case word")
    if name in SECTIONS and SECTIONS[name] is not cls and name in _TYPED:
        raise GanzipError(f"recipe section {name!r} is ganzip's own ({SECTIONS[name].__name__}): choose another name")
    SECTIONS[name] = cls


def unregister_section(name: str) -> None:
    """Remove a section added by :func:`register_section` (typed sections stay)."""
    if name not in _TYPED:
        SECTIONS.pop(name, None)


def term_sections() -> list[str]:
    """Sections that carry a loss weight (``weight``), in SECTIONS order."""
    return [name for name, cls in SECTIONS.items() if "weight" in {f.name for f in dataclasses.fields(cls)}]

_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("crd", "precision"): ("auto", "float64", "float32"),
    ("train", "amp"): ("auto", "bf16", "off"),
    ("train", "channels_last"): ("auto", "on", "off"),
    ("train", "deterministic"): ("auto", "on", "off"),
    ("kd_pixel", "loss"): ("l1", "l2"),
    ("ground_truth", "loss"): ("l1", "l2"),
    ("adversarial", "mode"): ("lsgan", "hinge", "vanilla"),
    ("discriminator", "norm"): ("instance", "batch", "none"),
    ("discriminator", "fallback"): ("disable", "error"),
    ("eval", "select"): ("auto", "kid", "fid", "lpips", "psnr"),
}
_LIST_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("discriminator", "fakes"): ("teacher", "student"),
}


def section_keys(section: str) -> dict[str, typing.Any]:
    """Field name -> type hint for one section."""
    cls = SECTIONS[section]
    return typing.get_type_hints(cls)


def valid_keys() -> list[str]:
    """Every ``section.key`` a recipe or ``--set`` may name."""
    return [f"{s}.{k}" for s in SECTIONS for k in section_keys(s)]


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def coerce_value(key: str, value, hint) -> typing.Any:
    """Check and convert one value to the field's type; GanzipError when it does not fit."""
    origin = typing.get_origin(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise GanzipError(f"{key} expects true or false, got {_short(value)}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise GanzipError(f"{key} expects an integer, got {_short(value)}")
        if abs(value) > 2**62:
            raise GanzipError(f"{key} = {_short(value)} is out of range")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GanzipError(f"{key} expects a number, got {_short(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise GanzipError(f"{key} expects a finite number, got {_short(value)}")
        return value
    if hint is str:
        if isinstance(value, str):
            return value
        raise GanzipError(f"{key} expects a string, got {_short(value)}")
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, str):  # a single name is a one-element list
            value = [value] if value else []
        if not isinstance(value, list):
            raise GanzipError(f"{key} expects a list, got {_short(value)}")
        return [coerce_value(f"{key}[]", v, item) for v in value]
    raise GanzipError(f"{key}: unsupported type {hint!r}")  # pragma: no cover


def _check_choices(cfg: RecipeConfig) -> None:
    for (sec, key), choices in _CHOICES.items():
        val = getattr(getattr(cfg, sec), key)
        if val not in choices:
            raise GanzipError(f"{sec}.{key} = {val!r} is not one of: {', '.join(choices)}")
    for (sec, key), choices in _LIST_CHOICES.items():
        vals = getattr(getattr(cfg, sec), key)
        bad = [v for v in vals if v not in choices]
        if bad:
            raise GanzipError(f"{sec}.{key} has {bad!r}; allowed items: {', '.join(choices)}")
        if len(set(vals)) != len(vals):
            raise GanzipError(f"{sec}.{key} lists an item twice: {vals!r}")


def _check_ranges(cfg: RecipeConfig) -> None:
    t = cfg.train
    checks = [
        (t.steps >= 0, "train.steps must be >= 0 (0 means: use train.epochs)"),
        (t.epochs >= 0, "train.epochs must be >= 0"),
        (t.steps > 0 or t.epochs > 0, "train.steps or train.epochs must be positive"),
        (t.batch_size >= 1, "train.batch_size must be >= 1"),
        (t.size >= 8, "train.size must be >= 8 pixels"),
        (t.lr > 0, "train.lr must be > 0"),
        (0 <= t.beta1 < 1 and 0 <= t.beta2 < 1, "train.beta1 and train.beta2 must be in [0, 1)"),
        (0 <= t.decay_start <= 1, "train.decay_start must be a fraction in [0, 1]"),
        (cfg.crd.patch_size >= 0, "crd.patch_size must be >= 0 (0: output side / 8, the paper's 32 at 256 px)"),
        (cfg.discriminator.lr > 0, "discriminator.lr must be > 0"),
        (cfg.discriminator.ndf >= 1 and cfg.discriminator.n_layers >= 0, "discriminator.ndf >= 1 and n_layers >= 0"),
        (cfg.discriminator.width > 0, "discriminator.width must be > 0 (a fraction of discriminator.ndf)"),
        (0 < cfg.eval.holdout < 1, "eval.holdout must be a fraction in (0, 1)"),
        (cfg.eval.max_images >= 1, "eval.max_images must be >= 1"),
        (cfg.eval.samples >= 0, "eval.samples must be >= 0"),
    ]
    for name in term_sections():
        checks.append((cfg.section(name).weight >= 0, f"{name}.weight must be >= 0"))
    for ok, msg in checks:
        if not ok:
            raise GanzipError(msg)


def config_from_dict(data: dict, name: str | None = None) -> RecipeConfig:
    """Build a :class:`RecipeConfig` from a (merged) recipe dict.

    Unknown sections or keys raise GanzipError listing the valid ones.
    """
    if not isinstance(data, dict):
        raise GanzipError(f"a recipe must be a table of sections, got {type(data).__name__}")
    kwargs: dict[str, typing.Any] = {}
    extra: dict[str, typing.Any] = {}
    for key, value in data.items():
        if key in ("name", "description"):
            if not isinstance(value, str):
                raise GanzipError(f"recipe {key} must be a string, got {_short(value)}")
            kwargs[key] = value
            continue
        if key == "extends":
            continue  # already merged by the recipe loader
        if key not in SECTIONS:
            raise GanzipError(
                f"unknown recipe section {key!r}; valid sections: {', '.join(SECTIONS)} (and name, description, extends)"
            )
        if not isinstance(value, dict):
            raise GanzipError(f"recipe section [{key}] must be a table, got {_short(value)}")
        hints = section_keys(key)
        fields = {}
        for sub, v in value.items():
            if sub not in hints:
                raise GanzipError(
                    f"unknown recipe key {key}.{sub}; valid keys in [{key}]: {', '.join(hints)}"
                )
            fields[sub] = coerce_value(f"{key}.{sub}", v, hints[sub])
        (kwargs if key in _TYPED else extra)[key] = SECTIONS[key](**fields)
    if name is not None:
        kwargs["name"] = name
    cfg = RecipeConfig(**kwargs, extra_sections=extra)
    _check_choices(cfg)
    _check_ranges(cfg)
    return cfg

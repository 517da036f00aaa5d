"""Students: the teacher's own architecture with every channel group scaled by `width`.

`build_student` uses torch-pruning's dependency graph, so residual adds, U-Net
concatenations, transposed and depthwise convolutions stay consistent. The
result is a plain `nn.Module`. `save_student` writes it as safetensors with
its structure (per-layer channel configuration and the teacher's architecture
spec) in the metadata; `load_student` rebuilds it from that, without pickle and
without torch-pruning.
"""
from __future__ import annotations

import copy
import warnings
import json
import math
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from .devices import resolve_device
from . import trust
from .errors import GanzipError, in_stage
from .io import save_safetensors_atomic
from .models import init_weights

FORMAT_VERSION = "1"
INITS = ("scratch", "inherit")
# Constructor-level attributes that torch-pruning rewrites when it removes channels.
_CHANNEL_ATTRS = ("in_channels", "out_channels", "groups", "num_features", "in_features", "out_features",
                  "num_channels", "num_groups", "normalized_shape", "embed_dim")
_PRUNABLE = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def _spec_of(model: nn.Module) -> dict[str, Any]:
    spec = getattr(model, "ganzip_spec", None)
    if spec:
        return {"arch": spec["arch"], "opts": dict(spec.get("opts", {}))}
    cls = type(model)
    return {"arch": f"{cls.__module__}:{cls.__qualname__}", "opts": {}}


def _output_layers(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """The last weighted layer to run: it produces the image, so its outputs stay untouched."""
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: order.append(mod))
             for m in model.modules() if isinstance(m, _PRUNABLE)]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return order[-1:]


def _check_width(model: nn.Module, width: float, round_to: int, ignored: list[nn.Module]) -> None:
    if not isinstance(width, (int, float)) or math.isnan(width) or not (0.0 < width <= 1.0):
        raise GanzipError(f"--width must be in (0, 1], got {width}: for example --width 0.25 keeps a quarter of the channels")
    if round_to < 1:
        raise GanzipError(f"--round-to must be a positive integer, got {round_to}")
    for name, m in model.named_modules():
        if isinstance(m, _PRUNABLE) and m not in ignored:
            c = m.out_channels if hasattr(m, "out_channels") else m.out_features
            kept = kept_channels(c, width, round_to)
            if kept < 1 and round_to > c:
                raise GanzipError(f"--round-to {round_to} is larger than layer {name}'s {c} channels: "
                                  f"use a --round-to of at most {kept_round_to(c, width)}")
            if kept < 1:
                need = max(round_to, 1) / c
                raise GanzipError(
                    f"--width {width} leaves layer {name} with no channels (it has {c}); "
                    f"use a width of at least {need:.3g}" + (f" or a smaller --round-to" if round_to > 1 else "")
                )


def _sync_norm_features(model: nn.Module, example: torch.Tensor) -> None:
    """Non-affine norms have no tensors for torch-pruning to cut; set their num_features from the data."""
    seen: dict[nn.Module, int] = {}
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase) and m.weight is None]
    hooks = [m.register_forward_pre_hook(lambda mod, inp: seen.__setitem__(mod, inp[0].shape[1])) for m in norms]
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model(example)
    finally:
        for h in hooks:
            h.remove()
    for m, c in seen.items():
        m.num_features = c


def kept_round_to(channels: int, width: float) -> int:
    """The largest --round-to that still keeps a channel of a `channels`-wide layer at `width`."""
    return max(1, int(math.floor(width * channels)))


def kept_channels(channels: int, width: float, round_to: int = 1) -> int:
    """Channels a group keeps: floor(width × channels), rounded down to a multiple of round_to."""
    kept = int(channels * width + 1e-9)
    if round_to > 1:
        kept -= kept % round_to
    return kept


@in_stage("building the student")
def build_student(teacher: nn.Module, width: float, init: str = "scratch", round_to: int = 1,
                  example_input: torch.Tensor | None = None, size: int | None = None,
                  seed: int = 0) -> nn.Module:
    """A copy of `teacher` with every prunable channel group scaled to `width`.

    Args:
        teacher: any generator (not modified).
        width: fraction of channels kept, in (0, 1]; 0.25 gives the paper's students.
        init: "inherit" keeps the teacher's largest-magnitude channels and their weights;
            "scratch" re-initialises the student (N(0, 0.02), as CycleGAN does).
        round_to: keep channel counts at multiples of this (8 suits many accelerators).
        example_input: an input for tracing; by default 1×C×size×size zeros.
        size: side of the tracing input (default: the model's `min_size` or 64).
        seed: seeds the scratch initialisation.
    """
    import torch_pruning as tp

    if init not in INITS:
        raise GanzipError(f"unknown --init {init!r}: use scratch or inherit")
    if isinstance(teacher, torch.jit.ScriptModule):
        raise GanzipError("a TorchScript teacher cannot be pruned: load its state dict with --arch instead")
    student = copy.deepcopy(teacher).cpu().eval()
    for p in student.parameters():  # torch-pruning skips frozen parameters; a frozen teacher must still shrink
        p.requires_grad_(True)
    if hasattr(teacher, "ganzip_spec"):
        student.ganzip_spec = copy.deepcopy(teacher.ganzip_spec)
    from .metrics.cost import infer_in_channels

    if example_input is None:
        s = size or getattr(teacher, "min_size", 64)
        example_input = torch.zeros(1, infer_in_channels(teacher), s, s)
    example_input = example_input.cpu()
    ignored = _output_layers(student, example_input)
    _check_width(student, width, round_to, ignored)
    if width < 1.0:
        pruner = tp.pruner.MetaPruner(
            student, example_input,
            importance=tp.importance.MagnitudeImportance(p=2),
            pruning_ratio=(1.0 - width) - 1e-9,  # so exact products floor to themselves
            ignored_layers=ignored,
            round_to=round_to if round_to > 1 else None,
            global_pruning=False,
        )
        pruner.step()
        del pruner
        _sync_norm_features(student, example_input)
    with torch.no_grad():
        out_t = teacher.cpu().eval()(example_input) if example_input.device.type == "cpu" else None
        out_s = student(example_input)
    if out_t is not None and out_t.shape != out_s.shape:
        raise GanzipError(f"pruning changed the output shape ({tuple(out_t.shape)} -> {tuple(out_s.shape)}); this architecture cannot be width-scaled uniformly")
    if init == "scratch":
        g = torch.Generator().manual_seed(seed)
        init_weights(student, generator=g)
    student.ganzip_student = {"width": width, "round_to": round_to, "init": init}
    return student


# ---------------------------------------------------------------- structure (no pickle)

def describe(model: nn.Module) -> dict[str, Any]:
    """Per-module channel attributes and tensor shapes: enough to rebuild the student's skeleton."""
    layers: dict[str, Any] = {}
    for name, m in model.named_modules():
        tensors = {k: list(v.shape) for k, v in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False)) if v is not None}
        attrs = {a: getattr(m, a) for a in _CHANNEL_ATTRS if hasattr(m, a) and isinstance(getattr(m, a), (int, tuple, list))}
        if tensors or attrs:
            layers[name] = {"type": type(m).__name__, "attrs": {k: list(v) if isinstance(v, tuple) else v for k, v in attrs.items()}, "tensors": tensors}
    return layers


def _apply_structure(model: nn.Module, layers: Mapping[str, Any]) -> None:
    modules = dict(model.named_modules())
    for name, info in layers.items():
        m = modules.get(name)
        if m is None or type(m).__name__ != info["type"]:
            raise GanzipError(f"the student's structure does not match its architecture at {name or '<root>'}: "
                              "was it saved by another ganzip or architecture version?")
        for attr, value in info["attrs"].items():
            setattr(m, attr, tuple(value) if isinstance(getattr(m, attr, None), tuple) else value)
        for tname, shape in info["tensors"].items():
            if tname in m._parameters and m._parameters[tname] is not None:
                m._parameters[tname] = nn.Parameter(torch.empty(shape), requires_grad=m._parameters[tname].requires_grad)
            elif tname in m._buffers and m._buffers[tname] is not None:
                m._buffers[tname] = torch.empty(shape, dtype=m._buffers[tname].dtype)


def save_student(student: nn.Module, path: str | Path, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write the student as safetensors; structure and provenance go into the metadata."""
    path = Path(path)
    info = getattr(student, "ganzip_student", {})
    meta = {
        "ganzip.format": "student",
        "ganzip.format_version": FORMAT_VERSION,
        "ganzip.teacher_spec": json.dumps(_spec_of(student), sort_keys=True),
        "ganzip.structure": json.dumps(describe(student), sort_keys=True),
        "ganzip.student": json.dumps(info, sort_keys=True),
    }
    from . import __version__

    meta["ganzip.version"] = __version__
    for k, v in (metadata or {}).items():
        meta[str(k)] = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
    save_safetensors_atomic(student.state_dict(), path, metadata=meta)
    return path


def read_student_metadata(path: str | Path) -> dict[str, str]:
    from .loading import read_safetensors

    _, meta = read_safetensors(Path(path))
    return meta


def _read_structure(meta: Mapping[str, str], path: Path) -> tuple[dict, dict]:
    """The teacher spec and per-layer structure a student file claims, validated as data."""
    what = f"student {path.name}"
    try:
        spec = json.loads(meta["ganzip.teacher_spec"])
        layers = json.loads(meta["ganzip.structure"])
    except (KeyError, ValueError, RecursionError) as exc:
        kind = "nested too deeply" if isinstance(exc, RecursionError) else f"{exc.__class__.__name__}: {str(exc)[:80]}"
        raise GanzipError(f"{path} has damaged ganzip metadata ({kind}): re-save it with ganzip") from None
    if not isinstance(spec, dict) or "arch" not in spec:
        raise GanzipError(f"{path} has damaged ganzip metadata: its teacher spec is not a table with an arch")
    if not isinstance(spec["arch"], str) or not spec["arch"]:
        raise GanzipError(f"{path} has damaged ganzip metadata: its architecture is a {type(spec['arch']).__name__}, not a name")
    spec = {"arch": spec["arch"], "opts": trust.check_opts(spec.get("opts", {}), what)}
    if not isinstance(layers, dict):
        raise GanzipError(f"{path} has damaged ganzip metadata: its structure is a {type(layers).__name__}, not a table of layers")
    shapes = {}
    for name, info in layers.items():
        if (not isinstance(info, dict) or not isinstance(info.get("type"), str)
                or not isinstance(info.get("attrs", {}), dict) or not isinstance(info.get("tensors", {}), dict)):
            raise GanzipError(f"{path} has damaged ganzip metadata at layer {str(name)[:60]!r}: expected type, attrs and tensors")
        for attr, value in info.get("attrs", {}).items():
            values = value if isinstance(value, list) else [value]
            if attr not in _CHANNEL_ATTRS or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**31 for v in values):
                raise GanzipError(f"{path} has damaged ganzip metadata at layer {str(name)[:60]!r}: "
                                  f"attribute {str(attr)[:40]!r} = {str(value)[:40]} is not a channel count")
        for tname, shape in info.get("tensors", {}).items():
            shapes[f"{name}.{tname}"] = shape
        info.setdefault("attrs", {})
        info.setdefault("tensors", {})
    trust.check_numel(shapes, what)
    return spec, layers


@in_stage("loading the student")
def load_student(path: str | Path, device="cpu", arch: str | None = None, arch_opts: Mapping[str, Any] | None = None,
                 trust_code: bool = False) -> nn.Module:
    """Rebuild a student saved by `save_student`, in eval mode.

    A student cut from a user's class (`package.module:callable`) needs that
    module imported; pass `arch` equal to the recorded one to confirm it, so
    that loading a file never imports code the user did not name. A student of
    a factory function also needs the recorded options confirmed
    (`arch_opts`), or `trust_code=True` (see docs/security.md).
    """
    from .loading import build_arch, read_safetensors

    path = Path(path)
    if not path.exists():
        raise GanzipError(f"no such file: {path}")
    tensors, meta = read_safetensors(path)
    if meta.get("ganzip.format") != "student":
        raise GanzipError(f"{path} is not a ganzip student (no structure metadata): load it with arch= instead")
    spec, layers = _read_structure(meta, path)
    trust.confirm(spec["arch"], arch, spec["opts"], f"student {path.name}", keyword="--arch")
    origin = trust.Origin(source=f"student {path.name}", user_opts=dict(arch_opts or {}), trust_code=trust_code)
    with torch.device("meta"):
        skeleton_ok = True
        try:
            model = build_arch(spec["arch"], spec["opts"], origin=origin)
        except GanzipError:
            raise
        except Exception:
            skeleton_ok = False
    if not skeleton_ok:
        model = build_arch(spec["arch"], spec["opts"], origin=origin)
    model = model.to_empty(device="cpu")
    _apply_structure(model, layers)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise GanzipError(f"{path} does not match its recorded structure: {str(exc).splitlines()[0]}") from exc
    model.ganzip_spec = spec
    try:
        info = json.loads(meta.get("ganzip.student", "{}"))
    except (ValueError, RecursionError):
        info = None
    model.ganzip_student = info if isinstance(info, dict) else {}
    return model.to(resolve_device(device)).eval()

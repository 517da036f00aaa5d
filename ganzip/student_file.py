"""A student on disk: its structure described as data, saved as safetensors, rebuilt without pickle.

`save_student` writes the weights with the teacher's architecture spec and the
per-layer channel configuration (`describe`) in the metadata; `load_student`
builds the architecture on the meta device, applies that structure, and loads
the weights, without torch-pruning.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from . import formats, trust
from ._version import __version__
from .devices import resolve_device
from .errors import GanzipError, in_stage
from .io import save_safetensors_atomic
from .models import build as build_arch

FORMAT_VERSION = "1"
# Constructor-level attributes that torch-pruning rewrites when it removes channels.
_CHANNEL_ATTRS = ("in_channels", "out_channels", "groups", "num_features", "in_features", "out_features",
                  "num_channels", "num_groups", "normalized_shape", "embed_dim")


def _spec_of(model: nn.Module) -> dict[str, Any]:
    spec = getattr(model, "ganzip_spec", None)
    if spec:
        return {"arch": spec["arch"], "opts": dict(spec.get("opts", {}))}
    cls = type(model)
    return {"arch": f"{cls.__module__}:{cls.__qualname__}", "opts": {}}


# ---------------------------------------------------------------- structure (no pickle)

def describe(model: nn.Module) -> dict[str, Any]:
    """Per-module channel attributes and tensor shapes: enough to rebuild the student's skeleton."""
    layers: dict[str, Any] = {}
    for name, m in model.named_modules():
        tensors = {k: list(v.shape) for k, v in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False)) if v is not None}
        # Only plain instance attributes: a read-only property (smp encoders' out_channels) is derived, not stored.
        attrs = {a: m.__dict__[a] for a in _CHANNEL_ATTRS if isinstance(m.__dict__.get(a), (int, tuple, list))}
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
            try:
                setattr(m, attr, tuple(value) if isinstance(getattr(m, attr, None), tuple) else value)
            except AttributeError:  # a read-only property: the tensor shapes below rebuild the layer
                pass
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
        formats.FORMAT_KEY: formats.STUDENT,
        formats.FORMAT_VERSION_KEY: FORMAT_VERSION,
        "ganzip.teacher_spec": json.dumps(_spec_of(student), sort_keys=True),
        "ganzip.structure": json.dumps(describe(student), sort_keys=True),
        "ganzip.student": json.dumps(info, sort_keys=True),
    }
    meta[formats.VERSION_KEY] = __version__
    for k, v in (metadata or {}).items():
        meta[str(k)] = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
    save_safetensors_atomic(student.state_dict(), path, metadata=meta)
    return path


def read_student_metadata(path: str | Path) -> dict[str, str]:
    _, meta = formats.read(Path(path))
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
    path = Path(path)
    if not path.exists():
        raise GanzipError(f"no such file: {path}")
    tensors, meta = formats.read(path)
    if formats.kind_of(meta) != formats.STUDENT:
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

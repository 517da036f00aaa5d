"""Feature taps: the intermediate feature maps of teacher and student, layer by layer.

Students come from torch-pruning (``ganzip.student``), so every student module
keeps the name of its teacher module and a tap is just a module name, the same
in both models. :class:`FeatureTaps` registers one forward hook per tapped
module and model, once; the hooks store an output only inside
:meth:`FeatureTaps.recording`, so evaluation and export forwards cost a flag
check, and :meth:`FeatureTaps.remove` takes every hook away (no hook at all is
registered when no loss term asks for features).

``features.layers = ["auto"]`` picks the layers by :func:`auto_layers`, whose
rule works on any generator, a user's own class included:

1. *Blocks*: a module that combines what its children compute itself (a
   residual add ``x + f(x)``, a concatenation skip ``cat([x, f(x)])``, any
   output that is not one of its children's outputs). Only the outermost
   blocks count (the residual blocks of a trunk, not the layers inside
   them), except that a block nested in another one at a different
   resolution counts too (each level of a U-Net).
2. *Resolution changes*: after a module whose output side differs from its
   input side by 1.5x or more (a strided conv, a transposed conv, an
   upsampling), the last module of its run of same-sized siblings (so the
   conv's norm and activation are included), stopping before a block.
3. Never the generator's output nor a map shaped like it (the last conv
   before the output activation: that is the image, for output-level terms),
   never a module called more than once per forward; only 4-D outputs.

The candidates are ordered by when their forward ends (depth along the
computation) and at most ``max_taps`` (8) are kept, spread evenly from the
first to the last. For CycleGAN's ResNet this gives the two downsampling
stages, the residual blocks, and the upsampling stages; GAN Compression taps
``model.9`` and blocks 3, 6 and 9 of the same network by hand.
"""
from __future__ import annotations

import contextlib
import difflib
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import torch
from torch import nn

from .errors import GanzipError

AUTO = "auto"
MAX_TAPS = 8
RESOLUTION_STEP = 1.5  # a side that grows or shrinks by this factor is a resolution change


@dataclass(frozen=True)
class Tap:
    """One tapped layer: its module name, (C, H, W) in teacher and student, and why it was chosen."""

    name: str
    teacher: tuple[int, int, int]
    student: tuple[int, int, int]
    reason: str  # "block", "resolution" or "named"
    copy: bool = False  # an in-place op changes the output later in the forward: store a copy

    def describe(self) -> dict:
        return {"layer": self.name, "teacher": list(self.teacher), "student": list(self.student),
                "teacher_channels": self.teacher[0], "student_channels": self.student[0], "reason": self.reason}


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel wrappers (hooks go on it, names match)."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


# ---------------------------------------------------------------------- one dry forward, recorded


@dataclass
class _Call:
    name: str
    order: int  # when its forward ended
    calls: int
    in_side: tuple[int, int] | None
    shape: tuple[int, ...] | None  # None: not a tensor
    out_id: int | None
    out_version: int | None
    merge: bool  # the output comes from an op joining two computed tensors (add, cat, mul...)
    mutated: bool = False  # an in-place op changed the output after the module returned it


def _spatial(t) -> tuple[int, int] | None:
    return (int(t.shape[-2]), int(t.shape[-1])) if isinstance(t, torch.Tensor) and t.dim() == 4 else None


def _is_merge(tensor: torch.Tensor, params: set[int]) -> bool:
    """True when ``tensor`` was made by an op with two or more inputs that are computed, not parameters."""
    fn = tensor.grad_fn
    if fn is None:
        return False
    computed = 0
    for nxt, _ in fn.next_functions:
        if nxt is None:
            continue
        var = getattr(nxt, "variable", None)
        if var is not None and id(var) in params:
            continue
        computed += 1
    return computed >= 2


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags.items():
            m.training = flag


def _example_for(model: nn.Module, example: torch.Tensor) -> torch.Tensor:
    p = next(model.parameters(), None)
    if p is None:
        return example
    return example.to(device=p.device, dtype=p.dtype if p.dtype.is_floating_point else example.dtype)


def trace_calls(model: nn.Module, example: torch.Tensor) -> dict[str, _Call]:
    """Run ``model`` once on ``example`` and record every named module's output.

    The forward runs in eval mode (no BatchNorm statistics move, training flags
    are restored), with the global RNG streams saved and restored, and tracks
    gradients through the input only (parameters are left as they are) so that
    each output says which op made it. Key ``""`` holds the model's output.
    """
    model = unwrap(model)
    calls: dict[str, _Call] = {}
    keep: dict[str, torch.Tensor] = {}  # outputs stay alive, so their ids are unique during the trace
    params = {id(p) for p in model.parameters()}
    counter = [0]

    def hook_for(name: str):
        def hook(module, args, output):
            counter[0] += 1
            if name in calls:
                calls[name].calls += 1
                return
            tensor = output if isinstance(output, torch.Tensor) else None
            first = args[0] if args else None
            calls[name] = _Call(
                name, counter[0], 1, _spatial(first),
                tuple(int(s) for s in tensor.shape) if tensor is not None else None,
                id(tensor) if tensor is not None else None, tensor._version if tensor is not None else None,
                tensor is not None and _is_merge(tensor, params))
            if tensor is not None:
                keep[name] = tensor

        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in model.named_modules()]
    x = _example_for(model, example)
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        with _eval_mode(model), torch.enable_grad(), torch.random.fork_rng(devices=devices):
            x = x.detach().requires_grad_(True).clone()  # not a leaf: in-place input scaling (RCAN) stays legal
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    for name, tensor in keep.items():
        calls[name].mutated = tensor._version != calls[name].out_version
    if not isinstance(out, torch.Tensor):
        raise GanzipError(f"feature taps need a model that returns one image tensor, got {type(out).__name__}")
    return calls


def _children(model: nn.Module) -> dict[str, list[str]]:
    kids: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        kids[name] = [prefix + c for c, _ in module.named_children()]
    return kids


def _is_block(rec: _Call, kids: Sequence[str], calls: Mapping[str, _Call]) -> bool:
    """The module joins tensors itself (a residual add, a concatenation), not one of its children."""
    if rec.shape is None or len(rec.shape) != 4 or not rec.merge:
        return False
    ran = [calls[k] for k in kids if k in calls and calls[k].out_id is not None]
    return not any(k.out_id == rec.out_id and k.out_version == rec.out_version for k in ran)


def _spatial_of(rec: _Call) -> tuple[int, ...] | None:
    return rec.shape[-2:] if rec.shape is not None and len(rec.shape) == 4 else None


def _changes_resolution(rec: _Call) -> bool:
    side = _spatial_of(rec)
    if side is None or rec.in_side is None:
        return False
    ratios = [max(a, b) / max(1, min(a, b)) for a, b in zip(side, rec.in_side)]
    return max(ratios) >= RESOLUTION_STEP


def _parent(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def _candidates(model: nn.Module, calls: Mapping[str, _Call]) -> list[tuple[str, str]]:
    out_rec = calls[""]
    kids = _children(model)
    single = {n: r for n, r in calls.items() if n and r.calls == 1}

    blocks = [n for n, r in single.items() if _is_block(r, kids.get(n, []), single)]
    block_set = set(blocks)
    kept = [n for n in blocks
            if all(_spatial_of(single[b]) != _spatial_of(single[n]) for b in blocks if n.startswith(b + "."))]

    stages = []
    for n, rec in single.items():
        if not _changes_resolution(rec):
            continue
        siblings = sorted((single[k] for k in kids.get(_parent(n), []) if k in single and single[k].order > rec.order),
                          key=lambda r: r.order)
        end = rec
        for sib in siblings:
            if sib.name in block_set or _spatial_of(sib) != _spatial_of(rec):
                break
            end = sib
        stages.append(end.name)

    chosen: dict[str, str] = {}
    seen: set[tuple] = {(out_rec.out_id, out_rec.out_version)}
    for name in sorted(set(kept) | set(stages), key=lambda n: single[n].order):
        rec = single[name]
        key = (rec.out_id, rec.out_version)
        if _spatial_of(rec) is None or key in seen or rec.shape == out_rec.shape:
            continue
        seen.add(key)
        chosen[name] = "block" if name in block_set else "resolution"
    return list(chosen.items())


def candidate_layers(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """Every layer the ``"auto"`` rule accepts, in the order their forwards end: (name, reason)."""
    model = unwrap(model)
    return _candidates(model, trace_calls(model, example))


def spread(items: Sequence, k: int) -> list:
    """At most ``k`` of ``items``, evenly spaced from the first to the last (both kept)."""
    n = len(items)
    if n <= k:
        return list(items)
    if k == 1:
        return [items[n - 1]]
    picks = sorted({int(i * (n - 1) / (k - 1) + 0.5) for i in range(k)})
    return [items[i] for i in picks]


def auto_layers(model: nn.Module, example: torch.Tensor, max_taps: int = MAX_TAPS) -> list[tuple[str, str]]:
    """The ``"auto"`` taps of ``model`` (see the module docstring): at most ``max_taps`` (name, reason)."""
    return spread(candidate_layers(model, example), max_taps)


def _auto_from(model: nn.Module, calls: Mapping[str, _Call], max_taps: int) -> list[tuple[str, str]]:
    return spread(_candidates(model, calls), max_taps)


# ---------------------------------------------------------------------- checking a choice against both models


def _nearest(name: str, names: Sequence[str], n: int = 3) -> str:
    near = difflib.get_close_matches(name, list(names), n=n, cutoff=0.3) or list(names)[:n]
    return ", ".join(near) if near else "(none)"


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def resolve_taps(teacher: nn.Module, student: nn.Module, layers: Sequence[str], example: torch.Tensor,
                 max_taps: int = MAX_TAPS) -> list[Tap]:
    """Check ``layers`` (module names, or ``["auto"]``) against both models and return the taps.

    One dry forward of each model on ``example`` (a 1xCxHxW image at the
    training size) finds the shapes. Raises GanzipError (one line, with the
    nearest valid names) for a name in neither model, a module missing from
    one of them, not run or run twice per forward, a non-4-D output, or a
    teacher/student pair whose spatial sizes differ.
    """
    teacher, student = unwrap(teacher), unwrap(student)
    layers = list(layers)
    if not layers:
        raise GanzipError('features.layers is empty: name modules, or use "auto"')
    t_calls, s_calls = trace_calls(teacher, example), trace_calls(student, example)
    if layers == [AUTO]:
        picked = _auto_from(teacher, t_calls, max_taps)
        if not picked:
            four_d = [n for n, r in t_calls.items() if n and r.shape is not None and len(r.shape) == 4][:5]
            raise GanzipError("features.layers = \"auto\" found no residual block, U-Net level or resolution "
                              f"change in the teacher: name modules with --set features.layers=[...] "
                              f"(4-D layers: {', '.join(four_d) or 'none'})")
    else:
        if AUTO in layers:
            raise GanzipError('features.layers: "auto" stands alone; list module names or use "auto" only')
        if len(set(layers)) != len(layers):
            raise GanzipError(f"features.layers names a layer twice: {layers!r}")
        picked = [(n, "named") for n in layers]
    return [_check_tap(name, reason, teacher, student, t_calls, s_calls) for name, reason in picked]


def _check_tap(name, reason, teacher, student, t_calls, s_calls) -> Tap:
    t_names = [n for n, _ in teacher.named_modules() if n]
    s_names = {n for n, _ in student.named_modules() if n}
    four_d = [n for n, r in t_calls.items() if n and r.shape is not None and len(r.shape) == 4 and r.calls == 1]
    if name not in t_names and name not in s_names:
        raise GanzipError(f"features.layers: no module {name!r} in the teacher or the student; "
                          f"nearest: {_nearest(name, t_names)}")
    for model_name, names in (("teacher", set(t_names)), ("student", s_names)):
        if name not in names:
            raise GanzipError(f"features.layers: {name!r} is not a module of the {model_name}; "
                              f"layers in both: {_nearest(name, [n for n in t_names if n in s_names])}")
    for model_name, calls in (("teacher", t_calls), ("student", s_calls)):
        rec = calls.get(name)
        if rec is None:
            raise GanzipError(f"features.layers: {name!r} does not run in the {model_name}'s forward; "
                              f"nearest that do: {_nearest(name, four_d)}")
        if rec.calls > 1:
            raise GanzipError(f"features.layers: {name!r} runs {rec.calls} times per forward in the {model_name}, "
                              f"so its output is ambiguous; nearest: {_nearest(name, [n for n in four_d if n != name])}")
        if rec.shape is None or len(rec.shape) != 4:
            what = "no tensor" if rec.shape is None else f"a {len(rec.shape)}-D tensor ({_shape_text(rec.shape)})"
            raise GanzipError(f"features.layers: {name!r} outputs {what} in the {model_name}; taps need 4-D "
                              f"feature maps (N, C, H, W): nearest 4-D layers: {_nearest(name, four_d)}")
    t_shape, s_shape = t_calls[name].shape[1:], s_calls[name].shape[1:]
    if t_shape[1:] != s_shape[1:]:
        same = [n for n in four_d if n in s_calls and s_calls[n].shape is not None and len(s_calls[n].shape) == 4
                and s_calls[n].shape[2:] == t_calls[n].shape[2:]]
        raise GanzipError(f"features.layers: {name!r} is {_shape_text(t_shape[1:])} in the teacher but "
                          f"{_shape_text(s_shape[1:])} in the student (spatial sizes must agree); "
                          f"layers that agree: {_nearest(name, same)}")
    return Tap(name, tuple(t_shape), tuple(s_shape), reason, t_calls[name].mutated or s_calls[name].mutated)


def describe_taps(taps: Sequence[Tap]) -> list[dict]:
    """The taps as report rows: layer, (C, H, W) in teacher and student, channels, reason."""
    return [t.describe() for t in taps]


def taps_text(taps: Sequence[Tap]) -> str:
    """Lines for the console: one per tap, ``name  CxHxW (teacher) -> C' (student)``."""
    width = max((len(t.name) for t in taps), default=0)
    rows = [f"  {t.name:<{width}}  teacher {_shape_text(t.teacher):>12}  student {_shape_text(t.student):>12}  "
            f"({t.reason})" for t in taps]
    return "\n".join([f"feature taps ({len(taps)}):"] + rows)


# ---------------------------------------------------------------------- the hooks used in training


class FeatureTaps:
    """Forward hooks on the tapped modules of teacher and student.

    Registered once (:meth:`attach`); they store outputs only inside
    :meth:`recording`, which also clears what the previous step stored.
    :meth:`pairs` gives ``{layer: (student_feature, teacher_feature)}`` of the
    last recorded forward; the teacher's are detached. :meth:`remove` takes
    every hook off (call it before the student is copied, saved or exported).
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, taps: Sequence[Tap]):
        self.taps = list(taps)
        self.names = [t.name for t in self.taps]
        self._teacher, self._student = unwrap(teacher), unwrap(student)
        self._store: dict[str, dict[str, torch.Tensor]] = {"teacher": {}, "student": {}}
        self._recording = False
        self._handles: list = []

    def attach(self) -> "FeatureTaps":
        if self._handles:
            return self
        for side, model in (("teacher", self._teacher), ("student", self._student)):
            modules = dict(model.named_modules())
            for name in self.names:
                self._handles.append(modules[name].register_forward_hook(self._hook(side, name)))
        return self

    def _hook(self, side: str, name: str):
        store = self._store[side]
        copy = next(t.copy for t in self.taps if t.name == name)

        def hook(module, args, output):
            if self._recording:
                out = output.detach() if side == "teacher" else output
                store[name] = out.clone() if copy else out

        return hook

    @contextlib.contextmanager
    def recording(self) -> Iterator["FeatureTaps"]:
        """Store the tapped outputs of the forwards run inside; what an earlier step stored is dropped."""
        self.clear()
        self._recording = True
        try:
            yield self
        finally:
            self._recording = False

    def clear(self) -> None:
        for store in self._store.values():
            store.clear()

    def pairs(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
        """``{layer: (student, teacher)}`` in tap order; None unless both models ran while recording."""
        s, t = self._store["student"], self._store["teacher"]
        if any(n not in s or n not in t for n in self.names):
            return None
        return {n: (s[n], t[n]) for n in self.names}

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.clear()

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def describe(self) -> list[dict]:
        return describe_taps(self.taps)

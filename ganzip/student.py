"""Students: the teacher's own architecture with every channel group scaled by `width`.

`build_student` uses torch-pruning's dependency graph, so residual adds, U-Net
concatenations, transposed and depthwise convolutions stay consistent. Layers
tied to the image, and groups that torch-pruning cannot follow or that break
the student, stay at full width and are recorded with their reason; the
student is checked to run and to keep the teacher's output shape. The
result is a plain `nn.Module`. `save_student` writes it as safetensors with
its structure (per-layer channel configuration and the teacher's architecture
spec) in the metadata; `load_student` rebuilds it from that, without pickle and
without torch-pruning.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

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


def _check_width(width: float, round_to: int) -> None:
    if not isinstance(width, (int, float)) or math.isnan(width) or not (0.0 < width <= 1.0):
        raise GanzipError(f"--width must be in (0, 1], got {width}: for example --width 0.25 keeps a quarter of the channels")
    if round_to < 1:
        raise GanzipError(f"--round-to must be a positive integer, got {round_to}")


def _sync_norm_features(model: nn.Module, example: torch.Tensor) -> None:
    """Non-affine norms have no tensors for torch-pruning to cut; set their num_features from the data."""
    seen: dict[nn.Module, int] = {}
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase) and m.weight is None]
    hooks = [m.register_forward_pre_hook(lambda mod, inp: seen.__setitem__(mod, inp[0].shape[1])) for m in norms]
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model(example)
    except Exception:  # a broken student is reported by _verify, with the layer
        pass
    finally:
        for h in hooks:
            h.remove()
    for m, c in seen.items():
        m.num_features = c


_CATS = (torch.cat, torch.concat, torch.concatenate)
_MAX_TRIES = 48  # rebuilds while looking for the groups that break a student


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    line = lines[0] if lines else ""
    return f"{type(exc).__name__}: {line[:160]}"


class _CatRecorder(TorchFunctionMode):
    """Records, for every torch.cat of a forward pass, the channels each input really had.

    torch-pruning infers those sizes by walking the graph backwards without
    memoisation; on dense graphs (a 23-block RRDB: every residual add doubles
    the paths) the walk exceeds its budget of 500 visits, gives up with None
    and `update_concat_index_mapping` fails adding None. The sizes are known
    exactly at trace time, so ganzip records them instead of inferring them.
    """

    def __init__(self):
        super().__init__()
        self.cats: dict[Any, tuple[int, list[int], list[Any]]] = {}
        self.pruned = 0  # groups pruned so far

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in _CATS and isinstance(out, torch.Tensor) and out.grad_fn is not None:
            tensors = list(args[0] if args else kwargs.get("tensors", ()))
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            fns = [f for f, _ in out.grad_fn.next_functions]
            if isinstance(dim, int) and len(fns) == len(tensors):
                dim %= out.ndim
                self.cats[out.grad_fn] = (dim, [int(t.shape[dim]) for t in tensors], fns)
        return out


@contextlib.contextmanager
def _exact_concats():
    """Within the block, torch-pruning maps concatenations with the recorded sizes."""
    from torch_pruning.dependency import index_mapping as im

    recorder = _CatRecorder()
    original, original_all = im.update_concat_index_mapping, im.update_index_mapping
    done: dict[int, int] = {}

    def exact(graph, cat_node):
        info = recorder.cats.get(cat_node.grad_fn)
        if info is None or not _map_concat(cat_node, *info, im._ConcatIndexMapping):
            return original(graph, cat_node)

    def once_per_prune(graph):
        # torch-pruning re-derives every index mapping before each group it forms (O(groups x nodes));
        # the mappings only change when a group is pruned, which `recorder.pruned` counts.
        if done.get(id(graph)) != recorder.pruned:
            original_all(graph)
            done[id(graph)] = recorder.pruned

    im.update_concat_index_mapping, im.update_index_mapping = exact, once_per_prune
    try:
        yield recorder
    finally:
        im.update_concat_index_mapping, im.update_index_mapping = original, original_all


def _map_concat(cat_node, dim: int, sizes: list[int], fns: list[Any], mapping_cls) -> bool:
    if dim != 1:
        return True  # not a channel concatenation: no index mapping, as torch-pruning does
    plan = getattr(cat_node, "_ganzip_plan", None)
    if plan is None:  # which input sits where, and the dependencies to map: fixed for the graph's life
        where: dict[Any, int] = {}
        for i, f in enumerate(fns):
            if f is not None:
                where.setdefault(f, i)
        if any(n.grad_fn not in where for n in cat_node.inputs):
            return False
        plan = []
        for in_node in cat_node.inputs:
            back = next((d for d in cat_node.dependencies if d.target is in_node), None)
            fwd = next((d for d in in_node.dependencies if d.target is cat_node), None)
            plan.append((where[in_node.grad_fn], back, fwd))
        cat_node._ganzip_plan = plan
    if cat_node.module.concat_sizes is None or len(cat_node.module.concat_sizes) != len(sizes):
        cat_node.module.concat_sizes = list(sizes)  # later calls see the sizes as pruning has left them
    current = tuple(cat_node.module.concat_sizes)
    if getattr(cat_node, "_ganzip_mapped", None) == current:
        return True  # mapped for these sizes already
    offsets = [0]
    for c in current:
        offsets.append(offsets[-1] + c)
    cat_node.module.offsets = offsets
    cat_node._ganzip_mapped = current
    if not cat_node.enable_index_mapping:
        return True
    for i, back, fwd in plan:
        span = offsets[i:i + 2]
        if back is not None:
            back.index_mapping[1] = mapping_cls(offset=span, reverse=True)
        if fwd is not None:
            fwd.index_mapping[1] = mapping_cls(offset=span, reverse=False)
    return True


def _out_channels(m: nn.Module) -> int:
    return m.out_channels if hasattr(m, "out_channels") else m.out_features


def _run_order(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the weighted layers in the order they first run on `example`."""
    names = {m: n for n, m in model.named_modules()}
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: order.append(names[mod]))
             for m in model.modules() if isinstance(m, _PRUNABLE)]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return list(dict.fromkeys(order))


def _tied_layers(model: nn.Module, example: torch.Tensor, out_shape, width: float, round_to: int) -> dict[str, str]:
    """Layers that stay at full width, and why: the output layer and layers on the image's channels."""
    mods = dict(model.named_modules())
    order = _run_order(model, example)
    image = {int(example.shape[1]), int(out_shape[1])}
    tied: dict[str, str] = {}
    if order:
        tied[order[-1]] = "writes the output image"
    for name in order:
        c = _out_channels(mods[name])
        if name in tied:
            continue
        if c in image:
            tied[name] = f"has the image's {c} channels (it works on the image itself)"
        elif kept_channels(c, width, round_to) < 1:
            rounding = f" and --round-to {round_to}" if round_to > 1 else ""
            tied[name] = f"has {c} channels, which --width {width}{rounding} would leave with none"
    return tied


def _buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_buffers()}


def _restore_buffers(model: nn.Module, saved: Mapping[str, torch.Tensor]) -> None:
    bufs = dict(model.named_buffers())
    with torch.no_grad():
        for k, v in saved.items():
            if k in bufs and bufs[k].shape == v.shape:
                bufs[k].copy_(v)


def _run(model: nn.Module, x: torch.Tensor, training: bool):
    """Forward `x` in a mode; returns (output, None) or (None, (modules running, last finished, message))."""
    names = {m: n for n, m in model.named_modules()}
    stack: list[str] = []
    done = [""]

    def pre(mod, inp):
        stack.append(names.get(mod, ""))

    def post(mod, inp, out):
        if stack:
            stack.pop()
        done[0] = names.get(mod, "")

    hooks = [h for m in model.modules() for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]
    saved = _buffers(model) if training else {}
    try:
        model.train(training)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return model(x), None
    except Exception as exc:  # any failure of a user's model: located, then handled by the caller
        return None, (list(stack), done[0], _first_line(exc))
    finally:
        for h in hooks:
            h.remove()
        model.eval()
        if saved:
            _restore_buffers(model, saved)


def _reference_shapes(teacher: nn.Module, example: torch.Tensor) -> dict[bool, tuple]:
    """Output shape of the teacher in each mode it runs in (train mode on a batch of two)."""
    shapes = {}
    for training in (False, True):
        x = example if not training else example.expand(2, *example.shape[1:]).contiguous()
        y, failure = _run(teacher, x, training)
        if failure is None and isinstance(y, torch.Tensor):
            shapes[training] = tuple(y.shape)
    if False not in shapes:
        raise GanzipError(f"the teacher fails on a {tuple(example.shape)} input before any pruning: check --size, --in-channels")
    return shapes


def _verify(student: nn.Module, example: torch.Tensor, shapes: Mapping[bool, tuple]):
    """None if the student runs and matches the teacher's output shape in every mode the teacher runs in."""
    for training, shape in shapes.items():
        x = example if not training else example.expand(2, *example.shape[1:]).contiguous()
        y, failure = _run(student, x, training)
        if failure is not None:
            return failure
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        if got != shape:
            return [], "", f"output {got} instead of the teacher's {shape}"
    return None


def _prune(teacher: nn.Module, example: torch.Tensor, width: float, round_to: int, keep: Mapping[str, str],
           train_trace: bool, untraceable: dict[str, str]) -> tuple[nn.Module, list[tuple[str, set[str]]]]:
    """One torch-pruning pass on a copy of `teacher`; returns it and the groups pruned (root, members).

    Groups torch-pruning cannot rank are skipped and named in `untraceable`.
    """
    import torch_pruning as tp

    student = copy.deepcopy(teacher).cpu().eval()
    for p in student.parameters():  # torch-pruning skips frozen parameters; a frozen teacher must still shrink
        p.requires_grad_(True)
    mods = dict(student.named_modules())
    names = {m: n for n, m in mods.items()}
    groups: list[tuple[str, set[str]]] = []
    if width >= 1.0:
        return student, groups
    saved = _buffers(student)
    with _exact_concats() as recorder, warnings.catch_warnings():
        warnings.simplefilter("ignore")

        def forward(model, x):
            if train_trace:  # re-parameterised layers compute their eval weights from the train branches
                model.train()
                x = x.expand(2, *x.shape[1:]).contiguous()
            with recorder:
                return model(x)

        importance = _SafeImportance(tp.importance.MagnitudeImportance(p=2))
        try:
            pruner = tp.pruner.MetaPruner(
                student, example,
                importance=importance,
                pruning_ratio=(1.0 - width) - 1e-9,  # so exact products floor to themselves
                ignored_layers=[mods[n] for n in keep if n in mods],
                round_to=round_to if round_to > 1 else None,
                global_pruning=False,
                forward_fn=forward,
            )
        except Exception as exc:  # the tracer meets what it cannot follow: the user's model, not ganzip
            raise GanzipError(f"torch-pruning cannot trace this model's channel structure ({_first_line(exc)}); "
                              "nothing was pruned: report the architecture to ganzip") from exc
        student.eval()
        _restore_buffers(student, saved)
        for group in pruner.step(interactive=True):
            members = {names[d.target.module] for d, _ in group if d.target.module in names}
            root = names.get(group[0].dep.target.module)
            recorder.pruned += 1
            try:
                group.prune()
            except Exception as exc:  # torch-pruning could not apply its own group: rebuild without it
                raise _PruneFailure(root or "", _first_line(exc)) from exc
            if root is not None:
                groups.append((root, members))
    del pruner
    for module, message in importance.broken.items():
        if module in names:
            untraceable[names[module]] = f"torch-pruning cannot follow its channels ({message})"
    _sync_norm_features(student, example)
    return student, groups


class _PruneFailure(Exception):
    def __init__(self, root: str, message: str):
        super().__init__(message)
        self.root, self.message = root, message


class _SafeImportance:
    """Magnitude importance that skips (and records) groups whose index mapping is wrong."""

    def __init__(self, inner):
        self.inner = inner
        self.broken: dict[nn.Module, str] = {}

    def __call__(self, group, **kwargs):
        try:
            return self.inner(group, **kwargs)
        except Exception as exc:  # an index out of range: torch-pruning mis-mapped a slice or split
            self.broken[group[0].dep.target.module] = _first_line(exc)
            return None


def _culprits(stack: list[str], last_done: str, groups, level: int) -> list[str]:
    """Roots of the pruned groups touching where a forward broke; each `level` looks one module wider."""
    scopes = [n for n in reversed(stack) if n] + ([last_done] if last_done else [])
    if not stack or stack[-1] == "":  # broke in the model's own forward: start from the last layer that ran
        scopes = ([last_done] if last_done else []) + [n for n in reversed(stack) if n]
    scopes.append("")
    hits: list[str] = []
    for scope in scopes:
        found = [root for root, members in groups
                 if any(scope == "" or m == scope or m.startswith(scope + ".") for m in members)]
        if found:
            hits.append(found)
    if not hits:
        return []
    return hits[min(level, len(hits) - 1)]


def _search(teacher, example, width, round_to, tied, shapes, train_trace, twins=True):
    """Prune, check, leave the breaking groups at full width, and retry.

    With `twins`, once a layer breaks in a second block of the same class, it is
    left whole in every block of that class: one rebuild per class, not per block.
    """
    keep = dict(tied)
    seen: dict[tuple, int] = {}
    owners: set = set()
    for _ in range(_MAX_TRIES):
        untraceable: dict[str, str] = {}
        try:
            student, groups = _prune(teacher, example, width, round_to, keep, train_trace, untraceable)
        except _PruneFailure as exc:
            if not exc.root or exc.root in keep:
                return None, keep, exc.message
            keep[exc.root] = f"torch-pruning failed to prune it ({exc.message})"
            continue
        keep.update((k, v) for k, v in untraceable.items() if k not in keep)
        failure = _verify(student, example, shapes)
        if failure is None:
            return student, keep, None
        stack, last_done, message = failure
        sig = (tuple(stack), last_done, message)
        level = seen.get(sig, 0)
        seen[sig] = level + 1
        roots = [r for r in _culprits(stack, last_done, groups, level) if r not in keep]
        if not roots:
            return None, keep, message
        for r in roots:
            keep[r] = f"pruning it broke the student ({message})"
        if twins:  # the second block of a class that breaks the same way: leave that layer in all of them
            repeated = [r for r in roots if _owner_key(teacher, r) in owners]
            owners.update(_owner_key(teacher, r) for r in roots)
            for twin, r in _twins(teacher, repeated).items():
                keep.setdefault(twin, f"the same layer as {r} in a block of the same class")
    return None, keep, f"still broken after {_MAX_TRIES} rebuilds"


def _owner_key(model: nn.Module, name: str):
    parent, _, leaf = name.rpartition(".")
    owner = model.get_submodule(parent) if parent else None
    return (type(owner), leaf) if owner is not None else None


def _twins(model: nn.Module, roots: list[str]) -> dict[str, str]:
    """The same child layer in every other instance of the block class that owns each root."""
    mods = dict(model.named_modules())
    out: dict[str, str] = {}
    for r in roots:
        parent, _, leaf = r.rpartition(".")
        owner = mods.get(parent) if parent else None
        if owner is None or type(owner).__module__.startswith("torch.nn"):
            continue  # a Sequential or ModuleList says nothing about what its items are
        for name, m in mods.items():
            if name != parent and type(m) is type(owner) and f"{name}.{leaf}" in mods and f"{name}.{leaf}" not in roots:
                out.setdefault(f"{name}.{leaf}", r)
    return out


def _trace_input(teacher: nn.Module, in_ch: int, size: int | None) -> torch.Tensor:
    """A small input for tracing (16 px if the model runs on it): channels do not depend on the side, cost does."""
    full = size or getattr(teacher, "min_size", 64)
    for s in dict.fromkeys((min(full, 16), min(full, 32), min(full, 64), full)):
        x = torch.zeros(1, in_ch, s, s)
        y, failure = _run(teacher, x, False)
        if failure is None and isinstance(y, torch.Tensor):
            return x
    return torch.zeros(1, in_ch, full, full)


def _nothing_prunable(model: nn.Module, width: float, round_to: int, keep: Mapping[str, str],
                      message: str | None) -> GanzipError:
    named = "; ".join(f"{n} {r}" for n, r in list(keep.items())[:3])
    more = f" (and {len(keep) - 3} more)" if len(keep) > 3 else ""
    why = f"; the last attempt failed with {message}" if message else ""
    widest = max((_out_channels(m) for m in model.modules() if isinstance(m, _PRUNABLE)), default=1)
    fix = (f"; use --round-to {kept_round_to(widest, width)} or less"
           if round_to > 1 and kept_channels(widest, width, round_to) < 1 else "")
    return GanzipError(f"--width {width}: nothing in this model can be pruned: every layer stays at full width "
                       f"({named}{more}){why}{fix}")


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
                  seed: int = 0, in_channels: int | None = None) -> nn.Module:
    """A copy of `teacher` with every prunable channel group scaled to `width`.

    Layers tied to the image (the output layer, layers with the image's channel
    count such as a depthwise conv or a mean shift on the input) stay at full
    width. After pruning, the student must run in eval and train mode and give
    the teacher's output shape; where a channel group breaks it (channel splits,
    slices, re-parameterised blocks), that group is left at full width and the
    student rebuilt, so the result is the most compression found that runs.
    `student.ganzip_student["unpruned"]` lists each layer left, and why;
    ``["params_ratio"]`` is the ratio reached. Raises GanzipError only when
    nothing can be pruned.

    Args:
        teacher: any generator (not modified).
        width: fraction of channels kept, in (0, 1]; 0.25 gives the paper's students.
        init: "inherit" keeps the teacher's largest-magnitude channels and their weights;
            "scratch" re-initialises the student (N(0, 0.02), as CycleGAN does).
        round_to: keep channel counts at multiples of this (8 suits many accelerators).
        example_input: an input for tracing; by default 1×C×s×s zeros at a small side s.
        size: the largest side to trace at (default: the model's `min_size` or 64).
        seed: seeds the scratch initialisation.
        in_channels: the image channels the teacher takes (default: inferred).
    """
    from .metrics.cost import infer_in_channels

    if init not in INITS:
        raise GanzipError(f"unknown --init {init!r}: use scratch or inherit")
    if isinstance(teacher, torch.jit.ScriptModule):
        raise GanzipError("a TorchScript teacher cannot be pruned: load its state dict with --arch instead")
    _check_width(width, round_to)
    reference = teacher.cpu().eval()
    if example_input is None:
        in_ch = in_channels or infer_in_channels(reference, size=size)
        example_input = _trace_input(reference, in_ch, size)
    example_input = example_input.cpu()
    in_ch = int(example_input.shape[1])
    shapes = _reference_shapes(reference, example_input)
    tied = _tied_layers(reference, example_input, shapes[False], width, round_to)
    student, keep, message = _search(reference, example_input, width, round_to, tied, shapes, train_trace=False)
    if student is None or (width < 1.0 and count_params(student) >= count_params(reference)):
        student, keep, message = _search(reference, example_input, width, round_to, tied, shapes, train_trace=False,
                                         twins=False)  # generalising to every block may have been too much
    trace = "eval"
    if len(keep) > len(tied):  # something broke: a trace in train mode may follow more (re-parameterised layers)
        other, other_keep, other_message = _search(reference, example_input, width, round_to, tied, shapes, train_trace=True)
        if other is not None and (student is None or count_params(other) < count_params(student)):
            student, keep, message, trace = other, other_keep, other_message, "train"
    teacher_params = count_params(reference)
    if student is None or (width < 1.0 and count_params(student) >= teacher_params):
        raise _nothing_prunable(reference, width, round_to, keep, message)
    if hasattr(teacher, "ganzip_spec"):
        student.ganzip_spec = copy.deepcopy(teacher.ganzip_spec)
    if init == "scratch":
        g = torch.Generator().manual_seed(seed)
        init_weights(student, generator=g)
    student.ganzip_student = {
        "width": width, "round_to": round_to, "init": init, "in_channels": in_ch, "trace": trace,
        "params_ratio": round(teacher_params / max(count_params(student), 1), 4),
        "unpruned": [{"layer": n, "reason": r} for n, r in keep.items()],
    }
    return student


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


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


def check_batch_size(model: nn.Module, batch_size: int, in_channels: int | None = None, size: int = 32) -> None:
    """Refuse, in one line, a batch size the model cannot train at.

    A BatchNorm after global pooling (an ASPP pooling branch) sees one value per
    channel at batch size 1 and fails in train mode; say so before training.
    """
    from .metrics.cost import infer_in_channels

    if batch_size != 1:
        return
    model = model.cpu()
    c = in_channels or infer_in_channels(model)
    s = max(size, getattr(model, "min_size", 0) or 0)
    _, at_one = _run(model, torch.zeros(1, c, s, s), training=True)
    if at_one is None:
        return
    _, at_two = _run(model, torch.zeros(2, c, s, s), training=True)
    if at_two is None:
        stack, _, message = at_one
        where = next((n for n in reversed(stack) if n), "the model")
        raise GanzipError(f"training at batch size 1 fails at {where} ({message}): a BatchNorm after global "
                          "pooling needs more than one image per step; use --batch-size 2")

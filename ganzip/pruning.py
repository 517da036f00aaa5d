"""Channel pruning with torch-pruning: cut a copy of the teacher to a width, and find the groups that break it.

`ganzip.student.build_student` drives this: `_search` prunes, checks the student
runs and keeps the teacher's output shape, leaves the groups that break it at
full width, and retries. torch-pruning is imported only when a student is
pruned, so loading a saved student never needs it.
"""
from __future__ import annotations

import contextlib
import copy
import math
import warnings
from typing import Any, Mapping

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from .errors import GanzipError

_PRUNABLE = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


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

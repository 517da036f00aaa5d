"""MACs of a model that cannot be traced again (a TorchScript archive), counted as it runs.

torchprofile counts MACs from a fresh ``torch.jit.trace`` of the model, and a
ScriptModule (scripted or traced, loaded from a ``.pt`` archive) cannot be
traced again. Its ops still reach the dispatcher, so here one forward runs
under a ``TorchDispatchMode`` that records every op with the shapes of its
inputs and outputs, and each record goes to torchprofile's own handler for
that op. The counting rules are therefore torchprofile's, op for op (its
convention for transposed convolutions, normalisation and element-wise
products included), and a test checks that the two counts agree on eager
models of every zoo family.

The dispatcher sees ops after composite ones are decomposed (``linear`` as
``addmm``, ``instance_norm`` as a batch norm, ``matmul`` as ``mm``/``bmm``);
``_ALIASES`` names the torchprofile operator each decomposed op counts as,
and ``_WEIGHT_AT`` where a normalisation op keeps its weight.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torchprofile.handlers import HANDLER_MAP
from torchprofile.ir import Node, Variable

_ALIASES = {
    "aten::convolution": "aten::_convolution",
    "aten::mm": "aten::matmul",
    "aten::native_batch_norm": "aten::batch_norm",
    "aten::_native_batch_norm_legit": "aten::batch_norm",
    "aten::_native_batch_norm_legit_no_training": "aten::batch_norm",
    "aten::native_layer_norm": "aten::layer_norm",
    "aten::native_group_norm": "aten::group_norm",
    "aten::_adaptive_avg_pool2d": "aten::adaptive_avg_pool2d",
    "aten::_adaptive_avg_pool3d": "aten::adaptive_avg_pool3d",
    "aten::grid_sampler_2d": "aten::grid_sampler",
}
# torchprofile's norm handler reads the weight at input 1 (batch and instance
# norm) or 2 (layer and group norm, after the shape / group count); the
# dispatcher's group norm keeps it at 1, so it is moved to where the handler looks.
_WEIGHT_AT = {"aten::native_group_norm": 1}


def _variable(value: Any) -> Variable:
    if isinstance(value, torch.Tensor):
        return Variable(name="", dtype=str(value.dtype).replace("torch.", ""), shape=list(value.shape))
    return Variable(name="", dtype=type(value).__name__, shape=None, value=value)


def _node(name: str, args: tuple, kwargs: dict, out: Any) -> Node | None:
    target = _ALIASES.get(name, name)
    if HANDLER_MAP.get(target) is None:
        return None
    inputs = [_variable(a) for a in args] + [_variable(v) for v in kwargs.values()]
    if name in _WEIGHT_AT:
        weight = inputs.pop(_WEIGHT_AT[name])
        inputs.insert(2, weight)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return Node(operator=target, attributes={}, inputs=inputs, outputs=[_variable(o) for o in outs], scope="")


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.macs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        node = _node(func._schema.name, args, kwargs, out)
        if node is not None:
            self.macs += int(HANDLER_MAP[node.operator](node))
        return out


@torch.no_grad()
def count_macs_by_dispatch(model: nn.Module, example: torch.Tensor) -> int:
    """torchprofile's MAC count of ``model(example)``, taken from the ops as they run rather than from a trace."""
    recorder = _Recorder()
    with recorder:
        model(example)
    return recorder.macs


def needs_dispatch_count(model: nn.Module) -> bool:
    """True for models that torchprofile cannot trace again: TorchScript modules, or models holding one."""
    return any(isinstance(m, torch.jit.ScriptModule) for m in model.modules())  # modules() yields the model itself first


__all__ = ["count_macs_by_dispatch", "needs_dispatch_count"]

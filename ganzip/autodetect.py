"""Recognise a state dict's architecture with spandrel (``--arch auto``), and rebuild it from its spec.

spandrel (MIT, an optional extra: ``pip install 'ganzip[spandrel]'``) is the
loader that image-restoration tools use for model files: from the keys and
shapes of a state dict it tells the architecture (ESRGAN/Real-ESRGAN RRDBNet,
Real-ESRGAN's SRVGGNetCompact, SwinIR, SPAN, DRUNet, NAFNet, LaMa ...) and
its hyperparameters, and loads the weights (converting the key layouts of
the architecture's several forks).

:func:`detect` turns such a state dict into a :class:`SpandrelGenerator`
whose ``ganzip_spec`` is ``{"arch": "spandrel/<ID>", "opts": {...}}``, the
architecture id and its constructor hyperparameters as plain JSON data.
:func:`build` rebuilds the same module from that spec (used by
``ganzip.loading.build_arch``, hence by ``load_student``); it only ever
instantiates classes of spandrel's own registry, never an import named by a
file.
"""
from __future__ import annotations

import enum
import inspect
import typing
from typing import Any, Mapping

import torch
import torch.nn as nn

from .errors import GanzipError

PREFIX = "spandrel/"
WRAP = "ganzip_"  # options of the wrapper, recorded beside the network's hyperparameters
INSTALL_HINT = "pip install 'ganzip[spandrel]'"


def is_spandrel_arch(arch: str | None) -> bool:
    """True for the architecture names :func:`detect` records (``spandrel/ESRGAN``)."""
    return isinstance(arch, str) and arch.startswith(PREFIX)


def _spandrel(why: str):
    try:
        import spandrel
    except ImportError:
        raise GanzipError(f"{why} needs the spandrel package: {INSTALL_HINT} "
                          "(or name the architecture with --arch NAME|package.module:callable)") from None
    return spandrel


class SpandrelGenerator(nn.Module):
    """A spandrel network seen the way ganzip sees generators: images in [-1, 1] in and out.

    spandrel's networks take and give images in [0, 1]; this module maps
    ganzip's [-1, 1] to that range and back, so teacher, student, losses and
    metrics all keep the CycleGAN convention. Inpainting networks (spandrel's
    masked models) take the image and the mask as separate arguments; here
    the mask is the last of the input channels (1 = inpaint). Networks that
    return a tuple give their first element (the image).

    Attributes: ``net`` (the spandrel module), ``in_channels``, ``out_channels``,
    ``scale`` (output side / input side), ``masked``.
    """

    def __init__(self, net: nn.Module, *, in_channels: int, out_channels: int, scale: int, masked: bool = False):
        super().__init__()
        self.net = net
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.scale = int(scale)
        self.masked = bool(masked)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x01 = (x + 1) * 0.5
        if self.masked:
            y = self.net(x01[:, :-1], (x01[:, -1:] > 0.5).to(x01.dtype))
        else:
            y = self.net(x01)
        if isinstance(y, (tuple, list)):
            y = y[0]
        return y * 2 - 1


# ---------------------------------------------------------------- hyperparameters as JSON


def _to_json(value: Any, where: str) -> Any:
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return [_to_json(v, where) for v in value]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _to_json(v, where) for k, v in value.items()}
    raise GanzipError(f"{where} = {type(value).__name__} cannot be recorded as plain data: "
                      "load this model with --arch package.module:callable instead")


def _from_json(cls: type, opts: Mapping[str, Any]) -> dict[str, Any]:
    """JSON lists back to tuples where the constructor's default is a tuple."""
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return dict(opts)
    out = {}
    for key, value in opts.items():
        default = params[key].default if key in params else None
        if isinstance(value, list) and isinstance(default, tuple):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        out[key] = value
    return out


def _spec_opts(hyper: Mapping[str, Any], wrap: Mapping[str, Any], arch: str) -> dict[str, Any]:
    opts = {str(k): _to_json(v, f"{arch} option {k}") for k, v in dict(hyper).items()}
    opts.update({f"{WRAP}{k}": v for k, v in wrap.items()})
    return opts


# ---------------------------------------------------------------- the registry's classes


def _classes(architecture) -> list[type]:
    """The module classes an architecture of spandrel's registry builds (one, or a Union)."""
    found: list[type] = []
    for base in getattr(type(architecture), "__orig_bases__", ()):
        for arg in typing.get_args(base):
            for cls in (typing.get_args(arg) or (arg,)):
                if isinstance(cls, type) and issubclass(cls, nn.Module) and cls not in found:
                    found.append(cls)
    return found


def _arch_name(architecture, cls: type) -> str:
    classes = _classes(architecture)
    if len(classes) == 1 and classes[0] is cls:
        return f"{PREFIX}{architecture.id}"
    return f"{PREFIX}{architecture.id}/{cls.__name__}"


def _find_class(arch: str) -> type:
    spandrel = _spandrel(f"the architecture {arch}")
    arch_id, _, cls_name = arch[len(PREFIX):].partition("/")
    support = next((s for s in spandrel.MAIN_REGISTRY.architectures() if s.architecture.id == arch_id), None)
    if support is None:
        raise GanzipError(f"spandrel {spandrel.__version__} has no architecture {arch_id!r} (from {arch}): "
                          "install the spandrel version the model was made with")
    classes = _classes(support.architecture)
    if cls_name:
        classes = [c for c in classes if c.__name__ == cls_name]
    if len(classes) != 1:
        raise GanzipError(f"spandrel's {arch_id} does not name one module class for {arch}: "
                          "install the spandrel version the model was made with")
    return classes[0]


# ---------------------------------------------------------------- public


def build(arch: str, opts: Mapping[str, Any] | None = None) -> SpandrelGenerator:
    """Rebuild the module :func:`detect` described: ``arch`` = ``spandrel/ID``, ``opts`` = its hyperparameters.

    The wrapper's own settings (channels, scale, mask) travel in ``opts`` as
    ``ganzip_in_channels``, ``ganzip_out_channels``, ``ganzip_scale`` and
    ``ganzip_masked`` (flat, like every recorded option); everything else is
    passed to the class.
    """
    opts = dict(opts or {})
    wrap = {k[len(WRAP):]: opts.pop(k) for k in list(opts) if k.startswith(WRAP)}
    cls = _find_class(arch)
    try:
        net = cls(**_from_json(cls, opts))
    except TypeError as exc:
        raise GanzipError(f"spandrel's {cls.__name__} does not take the recorded options ({exc}): "
                          "install the spandrel version the model was made with") from None
    model = SpandrelGenerator(net, in_channels=wrap.get("in_channels", 3), out_channels=wrap.get("out_channels", 3),
                              scale=wrap.get("scale", 1), masked=wrap.get("masked", False))
    model.ganzip_spec = {"arch": arch, "opts": _spec_opts(getattr(net, "hyperparameters", opts), wrap, arch)}
    return model


def detect(state: Mapping[str, torch.Tensor], source: str = "the checkpoint") -> SpandrelGenerator:
    """Recognise and load ``state`` with spandrel; GanzipError in one line when spandrel does not know it."""
    spandrel = _spandrel("--arch auto")
    try:
        descriptor = spandrel.ModelLoader(device="cpu").load_from_state_dict(dict(state))
    except spandrel.UnsupportedModelError:
        raise GanzipError(
            f"spandrel {spandrel.__version__} does not recognise the architecture of {source}: name it with "
            "--arch NAME (a zoo name, see `ganzip models`) or --arch package.module:callable"
        ) from None
    except Exception as exc:  # a known layout whose tensors do not fit it
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise GanzipError(f"spandrel took {source} for a known architecture but could not load it ({first}): "
                          "name the architecture with --arch") from None
    net = descriptor.model
    arch = _arch_name(descriptor.architecture, type(net))
    hyper = getattr(net, "hyperparameters", None)
    if not isinstance(hyper, Mapping):
        raise GanzipError(f"spandrel's {arch} does not record its hyperparameters, so a student could not be "
                          "rebuilt from its file: name the architecture with --arch package.module:callable")
    masked = type(descriptor).__name__ == "MaskedImageModelDescriptor"
    wrap = {"in_channels": int(descriptor.input_channels) + (1 if masked else 0),
            "out_channels": int(descriptor.output_channels), "scale": int(descriptor.scale), "masked": masked}
    model = SpandrelGenerator(net, **wrap)
    model.ganzip_spec = {"arch": arch, "opts": _spec_opts(hyper, wrap, arch)}
    req = descriptor.size_requirements
    model.size_requirements = {"minimum": int(req.minimum), "multiple_of": int(req.multiple_of), "square": bool(req.square)}
    return model.eval()


__all__ = ["PREFIX", "SpandrelGenerator", "build", "detect", "is_spandrel_arch"]

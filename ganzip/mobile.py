"""Converters to on-device formats: ExecuTorch (.pte), TFLite/LiteRT (.tflite) and Core ML (.mlpackage).

Each converter takes an eval-mode generator and a static example input and
returns what `ganzip.export` writes; `ganzip.export` verifies the file in its
own runtime (`ganzip.backends`). The packages are optional extras:

* ExecuTorch: ``pip install 'ganzip[mobile]'``. The graph is captured with
  `torch.export`, lowered to the XNNPACK backend; INT8 goes through the PT2E
  flow (`prepare_pt2e` / `convert_pt2e` with XNNPACK's symmetric per-channel
  quantizer, calibrated on the user's images) before lowering.
* TFLite: ``pip install 'ganzip[tflite]'`` (litert-torch; it pins torch below
  2.15). Inputs and outputs are NHWC, the convention of TFLite runtimes.
  LiteRT cannot legalize a transposed convolution with ``output_padding``, so
  each `nn.ConvTranspose2d` is swapped for `PaddingFreeConvTranspose2d`: the
  same weights without padding, then cropped, which is exact.
* Core ML: ``pip install 'ganzip[coreml]'`` (coremltools, ``mlprogram``).
  Predictions need macOS; on Linux only the program's structure is checked.
"""
from __future__ import annotations

import copy
import json
import re
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .backends import _first_line, _quiet_fds, missing_extra, quiet_torch_logs
from .errors import GanzipError

_ATEN_OP = re.compile(r"(aten[.:]{1,2}[A-Za-z0-9_]+)|fx node ([A-Za-z0-9_]+)|'(mhlo\.[A-Za-z0-9_]+)'|'(tfl\.[A-Za-z0-9_]+)'")


def operator_in(message: str) -> str | None:
    """The first operator an exporter's error names (aten::fft_fft2, mhlo.convolution...)."""
    m = _ATEN_OP.search(message)
    if not m:
        return None
    op = next(g for g in m.groups() if g)
    return op.replace("torch._ops.", "").replace(".default", "")


def unsupported(fmt: str, exc: BaseException, alternatives: str) -> GanzipError:
    """The one-line error for an operator (or a model) the target format cannot express."""
    text = str(exc)
    op = operator_in(text)
    if op:
        return GanzipError(f"{fmt} cannot express the operator {op} used by this model; "
                           f"export with {alternatives} instead, or replace that layer")
    return GanzipError(f"{fmt} conversion failed: {_first_line(exc)}; try {alternatives}, or --debug for the traceback")


def capture(model: nn.Module, example: torch.Tensor, dynamic: bool = False):
    """`torch.export.export` of the model on the example (batch/height/width dynamic with `dynamic`)."""
    dynamic_shapes = None
    if dynamic:
        auto = torch.export.Dim.AUTO
        dynamic_shapes = ({0: auto, 2: auto, 3: auto},)
        example = example.repeat(2, 1, 1, 1)  # a batch of 1 would be specialised to 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes, strict=False)
    except Exception as exc:
        raise GanzipError(f"torch.export cannot capture this model: {_first_line(exc)}; "
                          "try --format onnx or torchscript, or --debug for the traceback") from exc


# ---------------------------------------------------------------- ExecuTorch


def _import_executorch():
    quiet_torch_logs()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # importlib.resources deprecations inside executorch
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower
    except Exception as exc:  # ImportError, or a wheel built against another torch
        raise missing_extra("--format executorch", "executorch", exc) from None
    return to_edge_transform_and_lower, XnnpackPartitioner


def executorch_versions() -> dict:
    import importlib.metadata as md

    out = {"torch": torch.__version__}
    for name in ("executorch", "torchao"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def to_executorch(model: nn.Module, example: torch.Tensor, calibration: torch.Tensor | None = None) -> bytes:
    """A .pte program lowered to XNNPACK; INT8 through PT2E when `calibration` images are given."""
    to_edge_transform_and_lower, XnnpackPartitioner = _import_executorch()
    if calibration is not None:
        try:
            from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
                XNNPACKQuantizer,
                get_symmetric_quantization_config,
            )
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        except Exception as exc:
            raise missing_extra("--format executorch --int8", "executorch", exc) from None
        graph = capture(model, example).module()
        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                prepared = prepare_pt2e(graph, quantizer)
                with torch.no_grad():
                    for x in calibration:
                        prepared(x[None])
                model = convert_pt2e(prepared)
        except Exception as exc:
            raise unsupported("PT2E quantization for ExecuTorch", exc, "--format onnx --int8") from exc
    ep = capture(model, example)
    try:
        with warnings.catch_warnings(), _quiet_fds():
            warnings.simplefilter("ignore")
            program = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch()
    except Exception as exc:
        raise unsupported("ExecuTorch", exc, "--format pt2 (torch.export keeps every ATen operator)") from exc
    return program.buffer


# ---------------------------------------------------------------- TFLite / LiteRT


class PaddingFreeConvTranspose2d(nn.Module):
    """`nn.ConvTranspose2d` computed without padding, then cropped: exactly the same output.

    LiteRT cannot legalize a transposed convolution that pads (``output_padding``,
    as in every CycleGAN/pix2pix upsampler); a padding-free one it can.
    """

    def __init__(self, ct: nn.ConvTranspose2d):
        super().__init__()
        if ct.padding_mode != "zeros" or isinstance(ct.padding, str):
            raise GanzipError("TFLite export supports transposed convolutions with zero padding only")
        self.ct = ct

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.ct
        y = F.conv_transpose2d(x, c.weight, c.bias, c.stride, 0, 0, c.groups, c.dilation)
        sizes = [(x.shape[2 + i] - 1) * c.stride[i] - 2 * c.padding[i] + c.dilation[i] * (c.kernel_size[i] - 1)
                 + c.output_padding[i] + 1 for i in range(2)]
        y = y[:, :, c.padding[0]:c.padding[0] + sizes[0], c.padding[1]:c.padding[1] + sizes[1]]
        short = (sizes[1] - y.shape[3], sizes[0] - y.shape[2])
        if short[0] > 0 or short[1] > 0:  # output_padding beyond the full output: zeros plus bias
            y = F.pad(y, (0, short[0], 0, short[1]))
            if c.bias is not None:
                mask = torch.zeros_like(y[:1, :1])
                mask[..., y.shape[2] - short[1]:, :] = 1
                mask[..., :, y.shape[3] - short[0]:] = 1
                y = y + mask * c.bias.view(1, -1, 1, 1)
        return y


def tflite_ready(model: nn.Module) -> nn.Module:
    """A copy of the model with every padded transposed convolution made padding-free."""
    model = copy.deepcopy(model)
    for name, child in list(model.named_modules()):
        for attr, sub in list(child.named_children()):
            if isinstance(sub, nn.ConvTranspose2d) and (any(sub.padding) or any(sub.output_padding)):
                setattr(child, attr, PaddingFreeConvTranspose2d(sub))
    return model


def _import_litert():
    quiet_torch_logs()
    try:
        with warnings.catch_warnings(), _quiet_fds():
            warnings.simplefilter("ignore")
            import litert_torch
    except Exception as exc:
        raise missing_extra("--format tflite", "litert", exc) from None
    return litert_torch


def to_tflite(model: nn.Module, example: torch.Tensor, nhwc: bool = True,
              calibration: torch.Tensor | None = None) -> bytes:
    """A .tflite flatbuffer (NHWC input/output with `nhwc`); INT8 with LiteRT's PT2E quantizer."""
    litert_torch = _import_litert()
    model = tflite_ready(model).eval()
    sample = example
    if nhwc:
        model = litert_torch.to_channel_last_io(model, args=[0], outputs=[0]).eval()
        sample = example.permute(0, 2, 3, 1).contiguous()
    kwargs = {}
    try:
        with warnings.catch_warnings(), _quiet_fds():
            warnings.simplefilter("ignore")
            if calibration is not None:
                from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
                from litert_torch.quantize.quant_config import QuantConfig
                from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

                quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
                graph = torch.export.export(model, (sample,), strict=False).module()
                prepared = prepare_pt2e(graph, quantizer)
                with torch.no_grad():
                    for x in calibration:
                        prepared(x[None].permute(0, 2, 3, 1).contiguous() if nhwc else x[None])
                model = convert_pt2e(prepared, fold_quantize=False)
                kwargs["quant_config"] = QuantConfig(pt2e_quantizer=quantizer)
            edge = litert_torch.convert(model, (sample,), **kwargs)
            return edge.model_content()
    except GanzipError:
        raise
    except Exception as exc:
        raise unsupported("TFLite (LiteRT)", exc, "--format pt2 (torch.export keeps every ATen operator) or executorch") from exc


# ---------------------------------------------------------------- Core ML


def _import_coremltools():
    try:
        import logging

        logging.getLogger("coremltools").setLevel(logging.ERROR)  # untested-torch and macOS-only-proxy chatter
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import coremltools as ct
    except Exception as exc:
        raise missing_extra("--format coreml", "coremltools", exc) from None
    return ct


def to_coreml(model: nn.Module, example: torch.Tensor, path: Path, precision: str = "fp16",
              meta: dict | None = None) -> None:
    """Write an ``mlprogram`` .mlpackage (a folder) at `path`, FP16 or FP32 compute, `meta` as user metadata."""
    ct = _import_coremltools()
    ep = capture(model, example)
    try:
        with warnings.catch_warnings(), _quiet_fds():
            warnings.simplefilter("ignore")
            ml = ct.convert(ep.run_decompositions({}), convert_to="mlprogram",
                            inputs=[ct.TensorType(name="input", shape=tuple(example.shape), dtype=np.float32)],
                            outputs=[ct.TensorType(name="output", dtype=np.float32)],
                            compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
                            minimum_deployment_target=ct.target.iOS16)
            for key, value in (meta or {}).items():
                ml.user_defined_metadata[f"ganzip.{key}"] = value if isinstance(value, str) else json.dumps(value)
            ml.save(str(path))
    except Exception as exc:
        raise unsupported("Core ML", exc, "--format pt2 (torch.export keeps every ATen operator)") from exc


def coreml_structure(path: Path) -> dict:
    """The converted program's interface and operations, read back from the .mlpackage on disk."""
    ct = _import_coremltools()
    from coremltools.proto import FeatureTypes_pb2

    try:
        spec = ct.utils.load_spec(str(path))
    except Exception as exc:
        raise GanzipError(f"the Core ML package {path} could not be read back: {_first_line(exc)}") from exc
    dtypes = {v: k for k, v in FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.items()}

    def feature(f):
        arr = f.type.multiArrayType
        return {"name": f.name, "shape": list(arr.shape), "dtype": dtypes.get(arr.dataType, str(arr.dataType))}

    ops: dict[str, int] = {}
    for fn in spec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            for op in block.operations:
                ops[op.type] = ops.get(op.type, 0) + 1
    return {"model_type": spec.WhichOneof("Type"), "spec_version": spec.specificationVersion,
            "inputs": [feature(f) for f in spec.description.input],
            "outputs": [feature(f) for f in spec.description.output], "operations": dict(sorted(ops.items()))}


def coreml_predict(path: Path, x: torch.Tensor) -> torch.Tensor:
    """Run the package with Core ML (macOS only)."""
    ct = _import_coremltools()
    ml = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
    out = ml.predict({"input": x.numpy()})
    return torch.from_numpy(next(iter(out.values())))

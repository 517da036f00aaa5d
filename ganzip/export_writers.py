"""Writing an exported file in each format ganzip can verify: TorchScript and ONNX (the on-device ones are in `ganzip.mobile`).

ONNX's exporter errors become one-line `GanzipError`s that name the operator
and the opset that gained it; the deployment contract goes into the file's
``metadata_props``.
"""
from __future__ import annotations

import contextlib
import io
import json
import re
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from . import io as gio
from .backends import _quiet_fds
from .errors import GanzipError


@contextlib.contextmanager
def _silence_native_output():
    """Swallow what the exporter prints from C++ straight to fds 1 and 2 (graph dumps on failure), and its warnings."""
    with _quiet_fds() as redirected, warnings.catch_warnings():
        if redirected:
            warnings.simplefilter("ignore")
        yield


def _first_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


_UNSUPPORTED = re.compile(r"operator '([^']+)' to ONNX opset version (\d+) is not supported")


def _onnx_error(exc: BaseException, opset: int) -> GanzipError:
    msg = _first_line(exc)
    m = _UNSUPPORTED.search(str(exc))
    if m:
        op = m.group(1)
        later = re.search(r"added in version (\d+)", str(exc))
        hint = f" (ONNX gained it in opset {later.group(1)}: try --opset {later.group(1)})" if later else ""
        return GanzipError(
            f"ONNX opset {opset} cannot express the operator {op} used by this model{hint}; "
            "export with --format torchscript instead, or replace that layer"
        )
    return GanzipError(f"ONNX export failed: {msg}; try --format torchscript, or --debug for the traceback")


def _export_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    if isinstance(model, torch.jit.ScriptModule):
        scripted = model
    else:
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarnings are caught by the check below
                scripted = torch.jit.trace(model, example, check_trace=False)
        except Exception as exc:
            raise GanzipError(f"TorchScript tracing failed: {_first_line(exc)}; try --format onnx, or --debug") from exc
    with gio.atomic_open(path, "wb") as fh, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
        torch.jit.save(scripted, fh)


def _require_onnx() -> None:
    """The exporter needs `onnx`; the check needs `onnxruntime`. Say so before any work."""
    missing = []
    for name in ("onnx", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise GanzipError(f"ONNX export needs {' and '.join(missing)}: pip install {' '.join(missing)} "
                          "(or export with --format torchscript)")


def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path, dynamic: bool, opset: int,
                 meta: dict | None = None) -> None:
    dynamic_axes = None
    if dynamic:
        axes = {0: "batch", 2: "height", 3: "width"}
        dynamic_axes = {"input": axes, "output": axes}
    buf = io.BytesIO()
    try:
        with torch.no_grad(), _silence_native_output():
            torch.onnx.export(model, (example,), buf, dynamo=False, opset_version=opset,
                              input_names=["input"], output_names=["output"], dynamic_axes=dynamic_axes,
                              do_constant_folding=True)
    except GanzipError:
        raise
    except Exception as exc:  # UnsupportedOperatorError, SymbolicValueError, tracing errors...
        raise _onnx_error(exc, opset) from exc
    gio.atomic_write_bytes(path, _with_onnx_metadata(buf.getvalue(), meta) if meta else buf.getvalue())


def _with_onnx_metadata(data: bytes, meta: dict) -> bytes:
    """The ONNX model with `meta` as metadata_props."""
    import onnx

    proto = onnx.load_from_string(data)
    set_onnx_metadata(proto, meta)
    return proto.SerializeToString()


def set_onnx_metadata(proto, meta: dict) -> None:
    """Record the deployment contract as ONNX metadata_props: keys `ganzip.KEY`, values JSON unless strings."""
    props = {p.key: p for p in proto.metadata_props}
    for key, value in meta.items():
        text = value if isinstance(value, str) else json.dumps(value)
        if f"ganzip.{key}" in props:
            props[f"ganzip.{key}"].value = text
        else:
            entry = proto.metadata_props.add()
            entry.key, entry.value = f"ganzip.{key}", text
    proto.producer_name = "ganzip"

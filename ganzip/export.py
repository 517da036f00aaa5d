"""Export a generator (usually a ganzip student) to ONNX or TorchScript, verified.

`export_model` writes the file atomically, then loads it back and checks that
it reproduces the PyTorch model on random inputs from a few seeds (max
absolute difference within `tolerance`, 1e-4 by default). An export that does
not match, or that ONNX cannot express, is a `GanzipError` saying what to do.

* TorchScript: `torch.jit.trace` of the eval-mode model, checked with the
  reloaded archive.
* ONNX: the TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`,
  opset 17), which needs no extra package and handles these convolutional
  generators; checked with onnxruntime, which also gives the exported model's
  latency (median of repeats).

``--dynamic`` makes batch, height and width dynamic axes (ONNX) and also checks
another batch size and, when the model accepts it, another image size.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import re
import statistics
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from . import io as gio
from . import rundir
from .errors import GanzipError, in_stage

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
OPSET = 17
TOLERANCE = 1e-4
SEEDS = (0, 1, 2)


@dataclass
class ExportResult:
    """What `export_model` / `export` hand back.

    `checks` lists every comparison made: input shape, seed and the max
    absolute difference to the PyTorch model. `latency_ms` is the exported
    model's median forward time (onnxruntime for ONNX, the reloaded archive for
    TorchScript) on one 1×C×size×size input; `eager_latency_ms` the PyTorch
    model's on the same input and device, for comparison.
    """

    path: Path
    format: str
    size: int
    dynamic: bool
    opset: int | None
    max_abs_diff: float
    tolerance: float
    checks: list[dict] = field(default_factory=list)
    runtime: str = ""
    latency_ms: float | None = None
    eager_latency_ms: float | None = None
    bytes: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def default_output(source, fmt: str) -> Path:
    """`student.safetensors` -> `student.onnx` / `student.torchscript.pt` beside it."""
    src = Path(source)
    stem = src.name
    for suffix in (".safetensors", ".pth", ".pt", ".ckpt", ".bin", ".onnx"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return src.with_name(stem + SUFFIXES[fmt])


# ---------------------------------------------------------------- helpers


@contextlib.contextmanager
def _silence_native_output():
    """Swallow what the exporter prints from C++ straight to fds 1 and 2 (graph dumps on failure)."""
    saved = []
    try:
        sink = tempfile.TemporaryFile()
        for fd in (1, 2):
            saved.append((fd, os.dup(fd)))
            os.dup2(sink.fileno(), fd)
    except OSError:  # no real fds (some embedded interpreters): let the output through
        for fd, dup in saved:
            os.dup2(dup, fd)
            os.close(dup)
        yield
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for fd, dup in saved:
            os.dup2(dup, fd)
            os.close(dup)
        sink.close()


def _first_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def _inputs(in_channels: int, shape_hw: tuple[int, int], batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Generator inputs live in [-1, 1]; a clipped normal also hits the extremes.
    return torch.randn(batch, in_channels, *shape_hw, generator=g).clamp_(-1, 1)


def _check_shapes(model: nn.Module, in_channels: int, size: int, dynamic: bool) -> list[tuple[int, int, int]]:
    """(batch, height, width) inputs to compare on; the extra ones only with `dynamic`."""
    shapes = [(1, size, size)]
    if dynamic:
        shapes.append((2, size, size))
        other = size // 2 if size // 2 >= getattr(model, "min_size", 16) else size * 2
        x = torch.zeros(1, in_channels, other, other)
        try:
            with torch.inference_mode():
                model(x)
        except Exception:
            pass  # the architecture only takes some sizes: check the batch axis alone
        else:
            shapes.append((1, other, other))
    return shapes


def _median_ms(fn, warmup: int, repeats: int) -> float:
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        fn()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1000.0)
    return float(statistics.median(times))


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


# ---------------------------------------------------------------- formats


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


def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path, dynamic: bool, opset: int) -> None:
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
    gio.atomic_write_bytes(path, buf.getvalue())


def _onnx_session(path: Path):
    try:
        import onnxruntime as ort
    except ImportError:
        raise GanzipError(
            "onnxruntime is needed to check the exported ONNX model: pip install onnxruntime "
            "(or export with --format torchscript)"
        ) from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise GanzipError(f"onnxruntime cannot load the exported model: {_first_line(exc)}") from exc


def _is_student_file(source) -> bool:
    path = Path(source)
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("ganzip.format") == "student"
    except Exception:  # not readable as safetensors: load_generator gives the clear error
        return False


# ---------------------------------------------------------------- public


@in_stage("exporting")
def export_model(model: nn.Module, out: str | os.PathLike, format: str = "onnx", size: int = 256,
                 dynamic: bool = False, tolerance: float = TOLERANCE, seeds=SEEDS, opset: int = OPSET,
                 latency: bool = True, repeats: int = 10, warmup: int = 2, in_channels: int | None = None) -> ExportResult:
    """Export `model` to `out` as ONNX or TorchScript and verify it.

    Args:
        model: a generator (eval mode is set; the model is moved to the CPU).
        out: the file to write (atomically).
        format: "onnx" or "torchscript".
        size: side of the square example input (and of the checked inputs).
        dynamic: dynamic batch/height/width axes (ONNX; TorchScript traces are
            shape-generic for these convolutional models and are checked the same way).
        tolerance: largest allowed max absolute difference to the PyTorch model.
        seeds: one random input per seed is compared.
        opset: ONNX opset version.
        latency: also time the exported model (and the eager one) on the CPU.
        repeats, warmup: timed runs (the median is reported) and untimed ones.

    Raises GanzipError when the export fails, when ONNX cannot express an
    operator, or when the exported model differs from the PyTorch one.
    """
    from .metrics.cost import infer_in_channels

    if format not in FORMATS:
        raise GanzipError(f"unknown export format {format!r}: use onnx or torchscript")
    if not isinstance(size, int) or size < 1:
        raise GanzipError(f"--size must be a positive integer, got {size!r}")
    if repeats < 1:
        raise GanzipError(f"--repeats must be at least 1, got {repeats}")
    if format == "onnx":
        _require_onnx()
    out = Path(out)
    if out.is_dir():
        raise GanzipError(f"--out {out} is a folder: give a file path such as {out / ('student' + SUFFIXES[format])}")
    model = model.cpu().eval()
    c = in_channels or infer_in_channels(model)
    example = _inputs(c, (size, size), 1, seed=12345)
    try:
        with torch.inference_mode():
            reference_out = model(example)
    except Exception as exc:
        raise GanzipError(f"the model failed on a 1x{c}x{size}x{size} input ({_first_line(exc)}); check --size") from exc
    if not isinstance(reference_out, torch.Tensor):
        raise GanzipError(f"the model returned {type(reference_out).__name__}, not a tensor: only image-to-image generators can be exported")

    # Written under a temporary name and renamed only once verified: a failed
    # check leaves no file that looks like a usable export.
    staging = out.with_name(f".{out.name}.unverified")
    try:
        result = _export_and_verify(model, staging, out, format, c, example, size, dynamic, tolerance, seeds,
                                    opset, latency, repeats, warmup)
        try:
            os.replace(staging, out)
        except OSError as exc:
            raise GanzipError(gio.os_error_message(exc, out)) from exc
    finally:
        with contextlib.suppress(OSError):
            staging.unlink()
    result.path = out
    return result


def _export_and_verify(model, path: Path, final: Path, format, c, example, size, dynamic, tolerance, seeds, opset,
                       latency, repeats, warmup) -> ExportResult:
    if format == "torchscript":
        _export_torchscript(model, example, path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                loaded = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as exc:
            raise GanzipError(f"the TorchScript export could not be loaded back: {_first_line(exc)}") from exc

        def run_exported(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return loaded(x)

        runtime = f"torch.jit {torch.__version__}"
        used_opset = None
    else:
        _export_onnx(model, example, path, dynamic, opset)
        session = _onnx_session(path)
        input_name = session.get_inputs()[0].name

        def run_exported(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(session.run(None, {input_name: x.numpy()})[0])

        import onnxruntime

        runtime = f"onnxruntime {onnxruntime.__version__} (CPUExecutionProvider)"
        used_opset = opset

    checks = []
    for batch, h, w in _check_shapes(model, c, size, dynamic):
        for seed in seeds:
            x = _inputs(c, (h, w), batch, seed)
            with torch.inference_mode():
                expected = model(x)
            try:
                got = run_exported(x)
            except Exception as exc:
                raise GanzipError(
                    f"the exported model failed on a {batch}x{c}x{h}x{w} input ({_first_line(exc)})"
                    + ("" if dynamic else "; pass --dynamic to allow other input shapes")
                ) from exc
            if got.shape != expected.shape:
                raise GanzipError(f"the exported model returns shape {tuple(got.shape)}, the PyTorch model {tuple(expected.shape)}")
            diff = float((got.float() - expected.float()).abs().max())
            checks.append({"shape": [batch, c, h, w], "seed": seed, "max_abs_diff": diff})
            if not diff <= tolerance:  # also catches NaN
                raise GanzipError(
                    f"the exported {format} model differs from the PyTorch model by {diff:.3g} (max abs) on a "
                    f"{batch}x{c}x{h}x{w} input (seed {seed}), more than the tolerance {tolerance:g}: the model likely "
                    "has data-dependent control flow or Python-side computation that the trace froze, "
                    f"so nothing was written to {final}"
                )

    result = ExportResult(path=final, format=format, size=size, dynamic=dynamic, opset=used_opset,
                          max_abs_diff=max(ch["max_abs_diff"] for ch in checks), tolerance=tolerance, checks=checks,
                          runtime=runtime, bytes=path.stat().st_size)
    if latency:
        x = _inputs(c, (size, size), 1, seed=0)
        result.latency_ms = _median_ms(lambda: run_exported(x), warmup, repeats)
        with torch.inference_mode():
            result.eager_latency_ms = _median_ms(lambda: model(x), warmup, repeats)
    return result


def export(source, out: str | os.PathLike | None = None, format: str = "onnx", *, arch: str | None = None,
           arch_opts=None, trust_pickle: bool = False, size: int = 256, dynamic: bool = False,
           tolerance: float = TOLERANCE, seeds=SEEDS, opset: int = OPSET, latency: bool = True,
           repeats: int = 10, overwrite: bool = False) -> ExportResult:
    """Load a student (or anything `ganzip.load_generator` accepts) and export it verified.

    `out` defaults to the source's name with `.onnx` or `.torchscript.pt`. An
    existing `out` is replaced only with `overwrite`, and only when ganzip
    wrote it (see `ganzip.rundir`). See `export_model` for the other
    arguments and the checks made.
    """
    from .loading import load_generator

    if format not in FORMATS:
        raise GanzipError(f"unknown export format {format!r}: use onnx or torchscript")
    if isinstance(tolerance, (int, float)) and not (math.isfinite(tolerance) and tolerance > 0):
        raise GanzipError(f"--tolerance must be a positive number such as 1e-4, got {tolerance}")
    if isinstance(source, nn.Module) and out is None:
        raise GanzipError("give an output path when exporting a module")
    target = Path(out) if out is not None else default_output(source, format)
    rundir.check_path(target)
    if not isinstance(source, nn.Module) and target.resolve() == Path(source).resolve():
        raise GanzipError(f"--out {target} is the input file itself: choose another output path")
    if not target.is_dir():
        rundir.check_replaceable(target.parent, [target.name], overwrite=overwrite, what="export")
    if isinstance(source, nn.Module):
        model = source
    elif _is_student_file(source):
        from .student import load_student

        # load_student itself, so that --arch confirms a student cut from package.module:callable
        from .loading import parse_arch_opts

        model = load_student(source, device="cpu", arch=arch, arch_opts=parse_arch_opts(arch_opts))
    else:
        model = load_generator(source, arch=arch, arch_opts=arch_opts, trust_pickle=trust_pickle, device="cpu")
    result = export_model(model, target, format=format, size=size, dynamic=dynamic, tolerance=tolerance, seeds=seeds,
                          opset=opset, latency=latency, repeats=repeats)
    rundir.record(target.parent, [target.name])
    return result

"""Run and time exported generator files in their own runtimes.

One `Runner` per exported file: ONNX (onnxruntime), ``.pt2`` (torch.export),
``.pte`` (ExecuTorch's Python runtime), ``.tflite`` (the LiteRT interpreter)
and TorchScript. A runner takes and returns NCHW float tensors whatever the
file's own layout (TFLite files take NHWC), so export checks, ``ganzip
profile --backend`` and the latency columns of ``ganzip eval`` and the batch
leaderboard all measure the same thing.

`find_exports` lists the exported files that sit beside a student
(``student.onnx``, ``student.int8.onnx``, ``student.pte`` ...) and
`backend_latencies` times each of them.
"""
from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .errors import GanzipError

# backend name -> file suffix, beside a student named NAME.safetensors
BACKEND_SUFFIXES = {
    "onnx": ".onnx",
    "onnx-int8": ".int8.onnx",
    "pt2": ".pt2",
    "executorch": ".pte",
    "executorch-int8": ".int8.pte",
    "tflite": ".tflite",
    "tflite-int8": ".int8.tflite",
}
# What each optional runtime needs, for the error that names the install line.
EXTRAS = {
    "onnxruntime": "pip install 'ganzip[export]'",
    "executorch": "pip install 'ganzip[mobile]'",
    "litert": "pip install 'ganzip[tflite]'",
    "coremltools": "pip install 'ganzip[coreml]'",
}


@dataclass
class Runner:
    """An exported model ready to run: ``run(x)`` maps an NCHW tensor to an NCHW tensor."""

    run: Callable[[torch.Tensor], torch.Tensor]
    runtime: str
    backend: str
    threads: int
    layout: str = "NCHW"
    io_quantization: dict | None = None  # integer input/output of a fully-quantized TFLite file


def missing_extra(what: str, package: str, exc: BaseException | None = None) -> GanzipError:
    """The one-line error for an optional runtime that is not installed."""
    detail = f" ({_first_line(exc)})" if exc is not None and not isinstance(exc, ModuleNotFoundError) else ""
    return GanzipError(f"{what} needs {package}, which is not installed{detail}: {EXTRAS[package]}")


def _first_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def package_version(name: str) -> str:
    import importlib.metadata as md

    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "?"


def quiet_torch_logs() -> None:
    """torchao's import logs a pytree deprecation through torch's logger; it is not the user's concern."""
    import logging

    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)


def backend_of(path: str | os.PathLike) -> str | None:
    """The backend name of an exported file from its suffix (None when unknown)."""
    name = Path(path).name
    for backend, suffix in sorted(BACKEND_SUFFIXES.items(), key=lambda kv: -len(kv[1])):
        if name.endswith(suffix):
            return backend
    if name.endswith(".torchscript.pt"):
        return "torchscript"
    return None


def default_threads(threads: int | None) -> int:
    return int(threads) if threads else (os.cpu_count() or 1)


@contextlib.contextmanager
def torch_threads(n: int):
    """Run a block with `n` torch intra-op threads, then restore the caller's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    """An onnxruntime CPU session with `threads` intra-op threads (all cores when None)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise missing_extra("running an ONNX model", "onnxruntime") from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = default_threads(threads)
    opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise GanzipError(f"onnxruntime cannot load {path}: {_first_line(exc)}") from exc


def _onnx_runner(path: Path, threads: int, backend: str) -> Runner:
    import onnxruntime

    session = onnx_session(path, threads)
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: x.detach().cpu().float().numpy()})[0])

    return Runner(run, f"onnxruntime {onnxruntime.__version__} (CPUExecutionProvider)", backend, threads)


def _pt2_runner(path: Path, threads: int) -> Runner:
    try:
        module = torch.export.load(str(path)).module()
    except Exception as exc:
        raise GanzipError(f"torch.export.load cannot read {path}: {_first_line(exc)}") from exc

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch_threads(threads), torch.inference_mode():
            return module(x)

    return Runner(run, f"torch.export {torch.__version__}", "pt2", threads)


def _executorch_runner(path: Path, threads: int, backend: str) -> Runner:
    quiet_torch_logs()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "This API is experimental", importlib.resources deprecations
            from executorch.extension.pybindings import portable_lib
            from executorch.runtime import Runtime
    except Exception as exc:  # ImportError, or a wheel built for another torch
        raise missing_extra("running an ExecuTorch .pte", "executorch", exc) from None
    try:
        # XNNPACK's threadpool is process-wide: size it before the program is loaded, never while it runs.
        if portable_lib._threadpool_get_thread_count() != threads:
            portable_lib._unsafe_reset_threadpool(threads)
        with _quiet_fds():
            method = Runtime.get().load_program(str(path)).load_method("forward")
    except Exception as exc:
        raise GanzipError(f"ExecuTorch cannot load {path}: {_first_line(exc)}") from exc

    def run(x: torch.Tensor) -> torch.Tensor:
        return method.execute([x.detach().cpu().float().contiguous()])[0]

    return Runner(run, f"ExecuTorch {package_version('executorch')} runtime (XNNPACK)", backend, threads)


def _tflite_runner(path: Path, threads: int, backend: str, layout: str | None = None) -> Runner:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except Exception as exc:
        raise missing_extra("running a .tflite file", "litert", exc) from None
    try:
        with _quiet_fds():
            interp = Interpreter(model_path=str(path), num_threads=threads)
            interp.allocate_tensors()
    except Exception as exc:
        raise GanzipError(f"the LiteRT interpreter cannot load {path}: {_first_line(exc)}") from exc
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    nhwc = (layout or _tflite_layout(path)) == "NHWC"

    import numpy as np

    def quantized(detail) -> tuple[float, int] | None:
        if np.dtype(detail["dtype"]).kind not in "iu":
            return None
        scale, zero = detail["quantization"]
        return float(scale), int(zero)

    in_q, out_q = quantized(inp), quantized(out)

    def run(x: torch.Tensor) -> torch.Tensor:
        a = x.detach().cpu().float()
        if nhwc:
            a = a.permute(0, 2, 3, 1)
        a = a.contiguous().numpy()
        if in_q:  # a fully-integer model: quantize the input with the file's own scale and zero point
            info = np.iinfo(inp["dtype"])
            a = np.clip(np.round(a / in_q[0] + in_q[1]), info.min, info.max).astype(inp["dtype"])
        interp.set_tensor(inp["index"], a)
        interp.invoke()
        y = interp.get_tensor(out["index"]).copy()
        if out_q:
            y = (y.astype(np.float32) - out_q[1]) * out_q[0]
        y = torch.from_numpy(y)
        return y.permute(0, 3, 1, 2) if nhwc else y

    runner = Runner(run, f"LiteRT {package_version('ai-edge-litert')} interpreter",
                    backend, threads, "NHWC" if nhwc else "NCHW")
    if in_q or out_q:
        runner.io_quantization = {"input": {"dtype": np.dtype(inp["dtype"]).name, "scale": in_q[0], "zero_point": in_q[1]}
                                  if in_q else None,
                                  "output": {"dtype": np.dtype(out["dtype"]).name, "scale": out_q[0],
                                             "zero_point": out_q[1]} if out_q else None}
    return runner


def _tflite_layout(path: Path) -> str:
    """NHWC unless the sidecar JSON written by `ganzip export` says otherwise."""
    sidecar = Path(str(path) + ".json")
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return json.loads(sidecar.read_text()).get("contract", {}).get("layout", "NHWC")
    return "NHWC"


def _torchscript_runner(path: Path, threads: int) -> Runner:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
            module = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:
        raise GanzipError(f"the TorchScript file {path} could not be loaded: {_first_line(exc)}") from exc

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch_threads(threads), torch.inference_mode():
            return module(x)

    return Runner(run, f"torch.jit {torch.__version__}", "torchscript", threads)


def load_runner(path: str | os.PathLike, threads: int | None = None, backend: str | None = None,
                layout: str | None = None) -> Runner:
    """Load an exported file in its runtime (`backend` defaults to the one its suffix names).

    `layout` ("NHWC"/"NCHW") overrides the TFLite layout read from the JSON beside the file.
    """
    path = Path(path)
    if not path.exists():
        raise GanzipError(f"no such file: {path}")
    backend = backend or backend_of(path)
    n = default_threads(threads)
    if backend in ("onnx", "onnx-int8"):
        return _onnx_runner(path, n, backend)
    if backend == "pt2":
        return _pt2_runner(path, n)
    if backend in ("executorch", "executorch-int8"):
        return _executorch_runner(path, n, backend)
    if backend in ("tflite", "tflite-int8"):
        return _tflite_runner(path, n, backend, layout)
    if backend == "torchscript":
        return _torchscript_runner(path, n)
    raise GanzipError(f"{path}: not an exported model ganzip can run (expected one of "
                      f"{', '.join(sorted(set(BACKEND_SUFFIXES.values())))}, .torchscript.pt)")


def median_ms(fn: Callable[[], object], warmup: int = 2, repeats: int = 10) -> float:
    """Median wall time of `fn()` in milliseconds over `repeats` runs after `warmup` untimed ones."""
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        fn()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1000.0)
    return float(statistics.median(times))


def time_runner(runner: Runner, x: torch.Tensor, warmup: int = 2, repeats: int = 10) -> dict:
    """{"backend", "latency_ms", "threads", "runtime", "layout"} for one input."""
    return {"backend": runner.backend, "latency_ms": median_ms(lambda: runner.run(x), warmup, repeats),
            "threads": runner.threads, "runtime": runner.runtime, "layout": runner.layout}


def example_input(size: int, in_channels: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, in_channels, size, size, generator=g).clamp_(-1, 1)


def _stem(student: Path) -> str:
    name = student.name
    for suffix in (".safetensors", ".pth", ".pt", ".ckpt", ".bin"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def find_exports(student: str | os.PathLike) -> dict[str, Path]:
    """Exported files beside `student` named after it: {"onnx": student.onnx, "onnx-int8": ...}."""
    student = Path(student)
    stem = _stem(student)
    found = {}
    for backend, suffix in BACKEND_SUFFIXES.items():
        p = student.with_name(stem + suffix)
        if p.is_file():
            found[backend] = p
    return found


def backend_latencies(student: str | os.PathLike, size: int = 256, threads: int | None = 1, warmup: int = 2,
                      repeats: int = 5, in_channels: int = 3) -> dict[str, dict]:
    """Time every exported file beside `student`: {backend: {"latency_ms", "threads", "runtime", "path"}}.

    A file whose runtime is missing or that fails is recorded with an
    ``"error"`` instead of a latency, so a report is written whatever one
    backend does.
    """
    out = {}
    for backend, path in find_exports(student).items():
        try:
            runner = load_runner(path, threads, backend)
            entry = time_runner(runner, example_input(_input_shape(path) or size, in_channels), warmup, repeats)
        except Exception as exc:  # noqa: BLE001 - a broken export must not stop the report
            entry = {"backend": backend, "latency_ms": None, "threads": default_threads(threads),
                     "error": _first_line(exc)}
        entry["path"] = str(path)
        out[backend] = entry
    return out


def profile_backend(model: str | os.PathLike | None, backend: str, size: int = 256, threads: int | None = 1,
                    warmup: int = 2, repeats: int = 10) -> dict:
    """Time one backend: `model` is the exported file itself, or a student with that export beside it."""
    if model is None:
        raise GanzipError("--backend needs MODEL: the exported file, or the student it was exported from")
    path = Path(model)
    if backend_of(path) != backend:
        found = find_exports(path).get(backend) if path.suffix == ".safetensors" else None
        if found is None:
            raise GanzipError(f"{path} is not a {backend} export and has none beside it (expected "
                              f"{path.with_name(_stem(path) + BACKEND_SUFFIXES[backend])}): run ganzip export first")
        path = found
    runner = load_runner(path, threads, backend)
    shape = _input_shape(path)
    x = example_input(size if shape is None else shape, 3)
    out = time_runner(runner, x, warmup, repeats)
    out["path"] = str(path)
    return out


def _input_shape(path: Path) -> int | None:
    """The static side recorded in the JSON beside an export (the file only takes that size)."""
    with contextlib.suppress(OSError, ValueError, AttributeError, TypeError, IndexError):
        shape = json.loads(Path(str(path) + ".json").read_text())["contract"]["input_shape"]
        side = shape[1] if shape[-1] in (1, 3) and shape[1] not in (1, 3) else shape[-1]
        return int(side) if isinstance(side, int) else None
    return None


def latency_columns(student: str | os.PathLike, size: int = 256, threads: int | None = 1,
                    repeats: int = 5) -> dict[str, float | None]:
    """Flat leaderboard columns: {"onnx_latency_ms": ..., "onnx-int8_latency_ms": ..., "backend_threads": n}."""
    found = backend_latencies(student, size=size, threads=threads, repeats=repeats)
    cols: dict[str, float | None] = {f"{b}_latency_ms": e.get("latency_ms") for b, e in found.items()}
    if found:
        cols["backend_threads"] = default_threads(threads)
    return cols


def backend_table(cost: dict) -> dict:
    """The report table of per-backend latency: eager PyTorch, then every exported file found."""
    rows = []
    student = cost.get("student") or {}
    if student.get("latency_ms") is not None:
        rows.append(["eager (PyTorch)", student["latency_ms"], "-", cost.get("device", "cpu"), "-"])
    for backend, e in (cost.get("backends") or {}).items():
        rows.append([backend, e.get("latency_ms") if e.get("latency_ms") is not None else "-",
                     str(e.get("threads", "-")), e.get("runtime") or e.get("error", "-"), Path(e["path"]).name])
    return {"title": "Latency per backend", "header": ["backend", "latency (ms)", "threads", "runtime", "file"],
            "rows": rows, "note": f"Median after warm-up at {cost.get('size', '?')}x{cost.get('size', '?')}, batch 1, "
                                  "on this machine's CPU; eager uses the evaluation device and thread settings."}


@contextlib.contextmanager
def _quiet_fds():
    """Swallow what native code prints straight to fds 1 and 2; yields whether it could."""
    import tempfile

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
        yield False
        return
    try:
        yield True
    finally:
        for fd, dup in saved:
            os.dup2(dup, fd)
            os.close(dup)
        sink.close()

"""Export a generator (usually a ganzip student) to a deployable file, verified in its own runtime.

`export_model` writes the file under a temporary name, loads it back in the
format's runtime and checks that it reproduces the PyTorch model on random
inputs from a few seeds (max absolute difference within `tolerance`, 1e-4 by
default); only then is it renamed into place. An export that does not match,
or that the format cannot express, is a `GanzipError` saying what to do.

* ONNX: the TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`,
  opset 17), checked with onnxruntime. ``int8=True`` quantizes it with
  onnxruntime's static post-training quantization (`ganzip.quantize`).
* pt2: a `torch.export` ExportedProgram (`torch.export.save`), checked with
  `torch.export.load`. The PyTorch-native format.
* executorch / tflite / coreml: on-device formats (`ganzip.mobile`), each an
  optional extra, checked with ExecuTorch's runtime and the LiteRT
  interpreter; Core ML predictions need macOS, so on Linux only the
  converted program's structure, shapes and dtypes are checked.
* torchscript: `torch.jit.trace`, for old runtimes (deprecated by PyTorch).

Shapes are static (1xCxSxS at `size`), as phone runtimes want; ``dynamic``
makes batch, height and width dynamic (ONNX, pt2) and also checks another
batch size and, when the model accepts it, another image size. The
deployment contract (input/output names, layout, value range, shape) goes
into the file's metadata where the format has some (ONNX metadata_props,
the .pt2 archive) and always into the JSON written beside the file.

INT8 exports (onnx, executorch, tflite) are checked against quality instead
of a tolerance: PSNR/SSIM (LPIPS when AlexNet is installed) of the INT8
model's images to the FP32 student's, on held-out calibration images; a
PSNR below `min_psnr` writes nothing.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from . import formats, mobile, rundir
from . import io as gio
from ._version import __version__
from .backends import default_threads, load_runner, median_ms, torch_threads
from .errors import GanzipError, in_stage
from .export_checks import (INPUT_NAME, OUTPUT_NAME, _check_coreml_structure, _check_min_psnr, _compare, _inputs,
                            _int8_report, _tree_bytes)
from .export_writers import _export_onnx, _export_torchscript, _first_line, _require_onnx, set_onnx_metadata
from .loading import load_generator, parse_arch_opts
from .metrics.cost import infer_in_channels
from .quantize import DEFAULT_CALIBRATION_IMAGES, DEFAULT_MIN_PSNR, calibration_images as read_calibration
from .quantize import float_operators, operator_counts, quantize_onnx
from .student_file import load_student

FORMATS = ("onnx", "pt2", "executorch", "tflite", "coreml", "torchscript")
SUFFIXES = {"onnx": ".onnx", "pt2": ".pt2", "executorch": ".pte", "tflite": ".tflite", "coreml": ".mlpackage",
            "torchscript": ".torchscript.pt"}
INT8_FORMATS = ("onnx", "executorch", "tflite")
OPSET = 17
TOLERANCE = 1e-4
SEEDS = (0, 1, 2)


@dataclass
class ExportResult:
    """What `export_model` / `export` hand back (and what the JSON beside the file holds).

    `checks` lists every comparison made: input shape, seed and the max
    absolute difference to the PyTorch model (for an INT8 export, of the FP32
    graph it was quantized from; ONNX only). `latency_ms` is the exported
    model's median forward time in its runtime on one 1×C×size×size input,
    with `threads` threads; `eager_latency_ms` the PyTorch model's on the
    same input. `quantization` is the INT8 report (calibration, fidelity to the
    FP32 student and to the teacher, FP32/INT8 latency and sizes, operators
    left in float). `contract` is the deployment contract recorded in the
    file. `numerical_check` is False when the runtime could not run here
    (Core ML off macOS); `notes` says why.
    """

    path: Path
    format: str
    size: int
    dynamic: bool
    opset: int | None
    max_abs_diff: float | None
    tolerance: float
    checks: list[dict] = field(default_factory=list)
    runtime: str = ""
    latency_ms: float | None = None
    eager_latency_ms: float | None = None
    bytes: int = 0
    int8: bool = False
    threads: int | None = None
    contract: dict = field(default_factory=dict)
    quantization: dict | None = None
    numerical_check: bool = True
    structure: dict | None = None
    notes: list[str] = field(default_factory=list)
    versions: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def default_output(source, fmt: str, int8: bool = False) -> Path:
    """`student.safetensors` -> `student.onnx` / `student.int8.onnx` / `student.pte` ... beside it."""
    src = Path(source)
    stem = src.name
    for suffix in (".safetensors", ".pth", ".pt", ".ckpt", ".bin", ".onnx"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return src.with_name(stem + (".int8" if int8 else "") + SUFFIXES[fmt])


def sidecar_path(out: str | os.PathLike) -> Path:
    """The JSON report written beside an exported file: `student.int8.onnx` -> `student.int8.onnx.json`."""
    out = Path(out)
    return out.with_name(out.name + ".json")


def _shape(channels: int, size: int, dynamic: bool, layout: str, scale: int = 1) -> list:
    h, w = ("height", "width") if scale == 1 else (f"{scale}*height", f"{scale}*width")
    if layout == "NHWC":
        return ["batch", h, w, channels] if dynamic else [1, size * scale, size * scale, channels]
    return ["batch", channels, h, w] if dynamic else [1, channels, size * scale, size * scale]


def contract(in_channels: int, size: int, dynamic: bool, layout: str = "NCHW", precision: str = "fp32",
             out_channels: int | None = None, scale: int = 1) -> dict:
    """The deployment contract of an exported generator: what a runtime must feed it and gets back.

    ``out_channels`` and ``scale`` describe the output (a x4 super-resolution
    model returns 4x the input side); by default it has the input's shape.
    """
    out_channels = in_channels if out_channels is None else out_channels
    return {"input": INPUT_NAME, "output": OUTPUT_NAME, "layout": layout,
            "input_shape": _shape(in_channels, size, dynamic, layout),
            "output_shape": _shape(out_channels, size, dynamic, layout, scale), "scale": scale,
            "value_range": [-1.0, 1.0], "dtype": "float32", "precision": precision,
            "color": "RGB" if in_channels == 3 else f"{in_channels} channels",
            "preprocess": "x = pixel / 127.5 - 1 (uint8 RGB to [-1, 1])", "postprocess": "pixel = (y + 1) * 127.5",
            "producer": f"ganzip {__version__}"}


def _is_student_file(source) -> bool:
    path = Path(source)
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    return formats.is_kind(path, formats.STUDENT)  # unreadable: load_generator gives the clear error


def _fp32_weight_bytes(model: nn.Module) -> int:
    return sum(p.numel() * 4 for p in model.parameters()) + sum(b.numel() * 4 for b in model.buffers())


# ---------------------------------------------------------------- public


def _preflight(format: str, int8: bool, calibration, dynamic: bool) -> None:
    """Refuse impossible combinations and name missing extras before any work is done."""
    if format not in FORMATS:
        raise GanzipError(f"unknown export format {format!r}: use one of {', '.join(FORMATS)}")
    if int8 and format not in INT8_FORMATS:
        raise GanzipError(f"--int8 is not available with --format {format}: use --format onnx, executorch or tflite "
                          "with --int8")
    if int8 and not calibration:
        raise GanzipError("--int8 needs calibration images: --calibration DIR (the student's input images) "
                          "or --calibration builtin:NAME")
    if dynamic and format in ("executorch", "tflite", "coreml"):
        raise GanzipError(f"--format {format} exports static shapes only: drop --dynamic (or use --format onnx or pt2)")
    if format == "onnx":
        _require_onnx()
    elif format == "executorch":
        mobile._import_executorch()
    elif format == "tflite":
        mobile._import_litert()
    elif format == "coreml":
        mobile._import_coremltools()


@in_stage("exporting")
def export_model(model: nn.Module, out: str | os.PathLike, format: str = "onnx", size: int = 256,
                 dynamic: bool = False, tolerance: float = TOLERANCE, seeds=SEEDS, opset: int = OPSET,
                 latency: bool = True, repeats: int = 10, warmup: int = 2, in_channels: int | None = None, *,
                 int8: bool = False, calibration: str | None = None, calibration_images: int | None = None,
                 min_psnr: float | None = None, teacher: nn.Module | None = None, threads: int | None = None,
                 precision: str = "fp16", nhwc: bool = True) -> ExportResult:
    """Export `model` to `out` and verify it in the format's runtime.

    Args:
        model: a generator (eval mode is set; the model is moved to the CPU).
        out: the file to write (renamed into place only once verified).
        format: one of `FORMATS`.
        size: side of the square example input (and of the checked inputs); the
            exported shape is 1xCxSxS unless `dynamic`.
        dynamic: dynamic batch/height/width axes (ONNX, pt2).
        tolerance: largest allowed max absolute difference to the PyTorch model (FP32).
        seeds: one random input per seed is compared.
        opset: ONNX opset version.
        latency: also time the exported model (and the eager one) on the CPU.
        repeats, warmup: timed runs (the median is reported) and untimed ones.
        int8: post-training INT8 quantization (onnx, executorch, tflite), calibrated on
            `calibration` (a folder of input images or ``builtin:NAME``, `calibration_images` of them).
        min_psnr: an INT8 model whose PSNR to the FP32 student is below this (dB) is not written (default 30).
        teacher: also report the INT8 model's fidelity to this generator.
        threads: runtime threads for the checks and latencies (all cores when None).
        precision: Core ML compute precision, "fp16" or "fp32".
        nhwc: TFLite input/output in NHWC (the TFLite convention); NCHW otherwise.

    Raises GanzipError when the export fails, when the format cannot express
    an operator, when the exported model differs from the PyTorch one, or
    when an INT8 model falls below `min_psnr`.
    """
    _preflight(format, int8, calibration, dynamic)
    if not isinstance(size, int) or size < 1:
        raise GanzipError(f"--size must be a positive integer, got {size!r}")
    if repeats < 1:
        raise GanzipError(f"--repeats must be at least 1, got {repeats}")
    if precision not in ("fp16", "fp32"):
        raise GanzipError(f"--precision must be fp16 or fp32, got {precision!r}")
    out = Path(out)
    if out.is_dir() and format != "coreml":
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
    calib = held = calib_info = None
    if int8:
        calib, held, calib_info = read_calibration(calibration, size, calibration_images or DEFAULT_CALIBRATION_IMAGES)
        if calib.shape[1] != c:
            raise GanzipError(f"--calibration images have {calib.shape[1]} channels, the model takes {c}")
        if teacher is not None:
            teacher = teacher.cpu().eval()
    opts = dict(format=format, c=c, example=example, size=size, dynamic=dynamic, tolerance=tolerance, seeds=seeds,
                opset=opset, latency=latency, repeats=repeats, warmup=warmup, threads=default_threads(threads),
                int8=int8, calib=calib, held=held, calib_info=calib_info, teacher=teacher,
                min_psnr=DEFAULT_MIN_PSNR if min_psnr is None else min_psnr, precision=precision, nhwc=nhwc,
                reference_out=reference_out)

    # Written under a temporary name and renamed only once verified: a failed
    # check leaves no file that looks like a usable export.
    staging = out.with_name(f".{out.name}.unverified" + (".mlpackage" if format == "coreml" else ""))
    try:
        result = _export_and_verify(model, staging, out, **opts)
        try:
            _replace(staging, out)
        except OSError as exc:
            raise GanzipError(gio.os_error_message(exc, out)) from exc
    finally:
        _remove(staging)
        _remove(staging.with_name(staging.name + ".fp32"))
    result.path = out
    gio.atomic_write_json(sidecar_path(out), result.to_dict())
    return result


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def _replace(staging: Path, out: Path) -> None:
    """Rename the verified file (or .mlpackage folder) over `out`."""
    if staging.is_dir():
        old = out.with_name(f".{out.name}.old")
        _remove(old)
        if out.exists():
            os.replace(out, old)
        os.replace(staging, out)
        _remove(old)
    else:
        os.replace(staging, out)


def _export_and_verify(model, path: Path, final: Path, *, format, c, example, size, dynamic, tolerance, seeds, opset,
                       latency, repeats, warmup, threads, int8, calib, held, calib_info, teacher, min_psnr, precision,
                       nhwc, reference_out) -> ExportResult:
    layout = "NHWC" if format == "tflite" and nhwc else "NCHW"
    with torch.no_grad():
        probe = model(example.clone())
    geometry = {"out_channels": int(probe.shape[1]), "scale": max(1, int(probe.shape[-1]) // int(example.shape[-1]))}
    meta = contract(c, size, dynamic, layout=layout, precision="int8" if int8 else
                    ("fp16" if format == "coreml" and precision == "fp16" else "fp32"), **geometry)
    result = ExportResult(path=final, format=format, size=size, dynamic=dynamic, opset=None, max_abs_diff=None,
                          tolerance=tolerance, int8=int8, threads=threads, contract=meta)
    result.versions = {"torch": torch.__version__}
    if format == "coreml":
        return _export_coreml(model, path, final, result, meta, example=example, reference_out=reference_out,
                              precision=precision, c=c, size=size, seeds=seeds, tolerance=tolerance)
    fp32_bytes = _fp32_weight_bytes(model)
    fp32_label = f"PyTorch eager {torch.__version__}"
    runner, fp32_runner, onnx_ops = _write(model, path, final, result, meta, format=format, c=c, example=example,
                                           size=size, dynamic=dynamic, tolerance=tolerance, seeds=seeds, opset=opset,
                                           threads=threads, int8=int8, calib=calib, nhwc=nhwc, layout=layout)
    if fp32_runner is not None:
        fp32_bytes, fp32_label = path.with_name(path.name + ".fp32").stat().st_size, fp32_runner.runtime

    result.runtime = runner.runtime
    if not int8:
        result.checks = _compare(runner.run, model, c, size, dynamic, seeds, tolerance, format, final)
    if result.checks:
        result.max_abs_diff = max(ch["max_abs_diff"] for ch in result.checks)
    result.bytes = path.stat().st_size
    if int8:
        report = _int8_report(model, runner, fp32_runner, fp32_label, held, calib_info, teacher, c, size, warmup,
                              repeats, fp32_bytes, result.bytes, latency)
        report.update(onnx_ops)
        report["method"] = INT8_METHODS[format]
        report["min_psnr"] = min_psnr
        result.quantization = report
        _check_min_psnr(report, min_psnr, final)
    if latency:
        x = _inputs(c, (size, size), 1, seed=0)
        result.latency_ms = median_ms(lambda: runner.run(x), warmup, repeats)
        with torch_threads(threads), torch.inference_mode():
            result.eager_latency_ms = median_ms(lambda: model(x), warmup, repeats)
    return result


INT8_METHODS = {
    "onnx": ("onnxruntime quantize_static: QDQ, per-channel symmetric INT8 weights, UINT8 "
             "activations, MinMax calibration"),
    "executorch": "PT2E (torchao prepare_pt2e/convert_pt2e), XNNPACKQuantizer symmetric per-channel",
    "tflite": "litert-torch PT2EQuantizer, symmetric per-channel",
}


def _write(model, path: Path, final: Path, result: ExportResult, meta: dict, *, format, c, example, size, dynamic,
           tolerance, seeds, opset, threads, int8, calib, nhwc, layout):
    """Write `path` in `format` and load it in its runtime: (runner, FP32 ONNX runner or None, ONNX operator report)."""
    runner = fp32_runner = None
    onnx_ops: dict = {}
    if format == "torchscript":
        _export_torchscript(model, example, path)
        runner = load_runner(path, threads, "torchscript")
    elif format == "onnx":
        import onnxruntime

        result.opset = opset
        result.versions["onnxruntime"] = onnxruntime.__version__
        if not int8:
            _export_onnx(model, example, path, dynamic, opset, meta)
            runner = load_runner(path, threads, "onnx")
        else:
            fp32 = path.with_name(path.name + ".fp32")
            _export_onnx(model, example, fp32, dynamic, opset, contract(c, size, dynamic, out_channels=meta["output_shape"][1], scale=meta["scale"]))
            fp32_runner = load_runner(fp32, threads, "onnx")
            result.checks = _compare(fp32_runner.run, model, c, size, dynamic, seeds, tolerance, format, final)
            quantize_onnx(fp32, path, calib)
            import onnx

            proto = onnx.load(str(path))
            set_onnx_metadata(proto, meta)
            gio.atomic_write_bytes(path, proto.SerializeToString())
            runner = load_runner(path, threads, "onnx-int8")
            onnx_ops = {"float_operators": float_operators(path), "operators": operator_counts(path)}
    elif format == "pt2":
        ep = mobile.capture(model, example, dynamic)
        buf = io.BytesIO()
        try:
            torch.export.save(ep, buf, extra_files={"ganzip.json": json.dumps(meta)})
        except Exception as exc:
            raise GanzipError(f"torch.export.save failed: {_first_line(exc)}") from exc
        gio.atomic_write_bytes(path, buf.getvalue())
        runner = load_runner(path, threads, "pt2")
    elif format == "executorch":
        gio.atomic_write_bytes(path, mobile.to_executorch(model, example, calib if int8 else None))
        runner = load_runner(path, threads, "executorch-int8" if int8 else "executorch")
        result.versions.update(mobile.executorch_versions())
    elif format == "tflite":
        gio.atomic_write_bytes(path, mobile.to_tflite(model, example, nhwc=nhwc, calibration=calib if int8 else None))
        runner = load_runner(path, threads, "tflite-int8" if int8 else "tflite", layout=layout)
        if runner.io_quantization:
            meta["io_quantization"] = runner.io_quantization
            meta["dtype"] = "int8 (quantize the [-1, 1] input with io_quantization.input)"
    else:  # pragma: no cover - _preflight rejects it
        raise GanzipError(f"unknown export format {format!r}")
    return runner, fp32_runner, onnx_ops


def _export_coreml(model, path: Path, final: Path, result: ExportResult, meta: dict, *, example, reference_out,
                   precision, c, size, seeds, tolerance) -> ExportResult:
    mobile.to_coreml(model, example, path, precision, meta)
    result.structure = mobile.coreml_structure(path)
    _check_coreml_structure(result.structure, example, reference_out, path)
    result.runtime = "coremltools (structure only)"
    if sys.platform == "darwin":
        def run_coreml(x):
            return mobile.coreml_predict(path, x)

        result.checks = _compare(run_coreml, model, c, size, False, seeds, max(tolerance, 5e-2 if precision == "fp16" else 1e-3),
                                 format, final)
        result.max_abs_diff = max(ch["max_abs_diff"] for ch in result.checks)
        result.runtime = "Core ML (macOS, CPU only)"
    else:
        result.numerical_check = False
        result.notes.append("numerical check NOT run: Core ML predictions need macOS (coremltools ships no "
                            "Core ML runtime for Linux); checked only the program's structure, input/output "
                            "names, shapes and dtypes. Run ganzip export on a Mac to compare outputs.")
    result.bytes = _tree_bytes(path)
    return result


def export(source, out: str | os.PathLike | None = None, format: str = "onnx", *, arch: str | None = None,
           arch_opts=None, trust_pickle: bool = False, size: int = 256, dynamic: bool = False,
           tolerance: float = TOLERANCE, seeds=SEEDS, opset: int = OPSET, latency: bool = True,
           repeats: int = 10, int8: bool = False, calibration: str | None = None,
           calibration_images: int | None = None, min_psnr: float | None = None, teacher=None,
           teacher_arch: str | None = None, threads: int | None = None, precision: str = "fp16",
           nhwc: bool = True, overwrite: bool = False) -> ExportResult:
    """Load a student (or anything `ganzip.load_generator` accepts) and export it verified.

    `out` defaults to the source's name with the format's suffix
    (`default_output`). `teacher` is a generator file (with `teacher_arch`
    for bare weights) or module whose images the INT8 report also compares
    against. An existing `out` (and its JSON report) is replaced only with
    `overwrite`, and only when ganzip wrote it (see `ganzip.rundir`). See
    `export_model` for the other arguments and the checks made.
    """
    _preflight(format, int8, calibration, dynamic)
    if isinstance(tolerance, (int, float)) and not (math.isfinite(tolerance) and tolerance > 0):
        raise GanzipError(f"--tolerance must be a positive number such as 1e-4, got {tolerance}")
    if isinstance(source, nn.Module) and out is None:
        raise GanzipError("give an output path when exporting a module")
    target = Path(out) if out is not None else default_output(source, format, int8)
    rundir.check_path(target)
    if not isinstance(source, nn.Module) and target.resolve() == Path(source).resolve():
        raise GanzipError(f"--out {target} is the input file itself: choose another output path")
    owned_names = [target.name, sidecar_path(target).name]
    if not target.is_dir():
        rundir.check_replaceable(target.parent, owned_names, overwrite=overwrite, what="export")
    if isinstance(source, nn.Module):
        model = source
    elif _is_student_file(source):
        # load_student itself, so that --arch confirms a student cut from package.module:callable
        model = load_student(source, device="cpu", arch=arch, arch_opts=parse_arch_opts(arch_opts))
    else:
        model = load_generator(source, arch=arch, arch_opts=arch_opts, trust_pickle=trust_pickle, device="cpu")
    if teacher is not None and not isinstance(teacher, nn.Module):
        teacher = load_generator(teacher, arch=teacher_arch, trust_pickle=trust_pickle, device="cpu")
    result = export_model(model, target, format=format, size=size, dynamic=dynamic, tolerance=tolerance, seeds=seeds,
                          opset=opset, latency=latency, repeats=repeats, int8=int8, calibration=calibration,
                          calibration_images=calibration_images, min_psnr=min_psnr, teacher=teacher, threads=threads,
                          precision=precision, nhwc=nhwc)
    rundir.record(target.parent, [n for n in owned_names if (target.parent / n).exists()])
    return result

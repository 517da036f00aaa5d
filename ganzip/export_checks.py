"""Checks of an exported file against the PyTorch model it came from.

FP32 exports must reproduce the model within a tolerance on seeded random
inputs (`_compare`); INT8 exports are measured instead by their fidelity to
the FP32 student (and the teacher), latency and size (`_int8_report`); a
Core ML package off macOS is checked for its structure only.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from .backends import median_ms, torch_threads
from .errors import GanzipError
from .export_writers import _first_line
from .quantize import fidelity, load_lpips_if_present, run_batch

INPUT_NAME, OUTPUT_NAME = "input", "output"


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


def _compare(run_exported, model, c, size, dynamic, seeds, tolerance, format, final) -> list[dict]:
    """Max abs difference of the exported model to the PyTorch one on one input per seed (and shape)."""
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
    return checks


def _int8_report(model, int8_runner, fp32_runner, fp32_label, held, calib_info, teacher, c, size, warmup, repeats,
                 fp32_bytes, int8_bytes, latency: bool) -> dict:
    """Fidelity of the INT8 model to the FP32 student (and the teacher), latencies and sizes."""
    def eager(x):
        with torch_threads(int8_runner.threads), torch.inference_mode():
            return model(x)

    lp, lp_missing = load_lpips_if_present()
    fp32_out = run_batch(eager, held)
    try:
        int8_out = run_batch(int8_runner.run, held)
    except Exception as exc:
        raise GanzipError(f"the INT8 model failed in {int8_runner.runtime}: {_first_line(exc)}") from exc
    report = {"calibration": calib_info, "to_fp32": fidelity(fp32_out, int8_out, lp)}
    if lp is None:
        report["lpips_missing"] = f"LPIPS not measured: {lp_missing}"
    if teacher is not None:
        with torch.inference_mode():
            t_out = run_batch(teacher, held)
        if t_out.shape != int8_out.shape:
            raise GanzipError(f"the teacher returns shape {tuple(t_out.shape[1:])}, the student "
                              f"{tuple(int8_out.shape[1:])}: give the student's own teacher")
        report["to_teacher"] = {"int8": fidelity(t_out, int8_out, lp), "fp32": fidelity(t_out, fp32_out, lp)}
    report["bytes"] = {"fp32": fp32_bytes, "int8": int8_bytes,
                       "ratio": (fp32_bytes / int8_bytes) if int8_bytes else None,
                       "fp32_is": "the FP32 ONNX file" if fp32_runner is not None else
                       "the FP32 weights (4 bytes per parameter and buffer)"}
    if latency:
        x = _inputs(c, (size, size), 1, seed=0)
        fp32_run = fp32_runner.run if fp32_runner is not None else eager
        lat = {"fp32_ms": median_ms(lambda: fp32_run(x), warmup, repeats),
               "int8_ms": median_ms(lambda: int8_runner.run(x), warmup, repeats),
               "threads": int8_runner.threads, "fp32_runtime": fp32_label, "int8_runtime": int8_runner.runtime,
               "warmup": warmup, "repeats": repeats, "statistic": "median"}
        lat["speedup"] = lat["fp32_ms"] / lat["int8_ms"]
        report["latency"] = lat
    return report


def _check_min_psnr(report: dict, min_psnr: float | None, final: Path) -> None:
    measured = report["to_fp32"]["psnr"]
    if min_psnr is not None and not measured >= min_psnr:
        raise GanzipError(
            f"INT8 fidelity check failed: {measured:.2f} dB PSNR to the FP32 student is below --min-psnr "
            f"{min_psnr:g}, so nothing was written to {final}; try more typical --calibration images, "
            "or export without --int8")


def _fp32_weight_bytes(model: nn.Module) -> int:
    return sum(p.numel() * 4 for p in model.parameters()) + sum(b.numel() * 4 for b in model.buffers())


def _tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _check_coreml_structure(structure: dict, example: torch.Tensor, reference_out: torch.Tensor, path: Path) -> None:
    """The converted program takes and returns what the PyTorch model does (names, shapes, float dtypes)."""
    problems = []
    if structure["model_type"] != "mlProgram":
        problems.append(f"model type {structure['model_type']}, not an mlProgram")
    ins, outs = structure["inputs"], structure["outputs"]
    if [i["name"] for i in ins] != [INPUT_NAME] or ins[0]["shape"] != list(example.shape):
        problems.append(f"inputs {ins}, expected one {INPUT_NAME!r} of shape {list(example.shape)}")
    if len(outs) != 1 or outs[0]["shape"] not in ([], list(reference_out.shape)):
        problems.append(f"outputs {outs}, expected one of shape {list(reference_out.shape)}")
    for f in ins + outs:
        if f["dtype"] not in ("FLOAT32", "FLOAT16"):
            problems.append(f"{f['name']} has dtype {f['dtype']}")
    if not structure["operations"]:
        problems.append("the program has no operations")
    if problems:
        raise GanzipError(f"the Core ML package does not match the model: {problems[0]}; nothing was written")

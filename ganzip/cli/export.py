"""`ganzip export`: a student (or any generator) to ONNX, pt2, ExecuTorch, TFLite, Core ML or TorchScript, verified."""
from __future__ import annotations

import click

from . import main
from .common import echo_json, model_options

FORMAT_HELP = (
    "onnx (onnxruntime), pt2 (torch.export, the PyTorch-native format), executorch (.pte for XNNPACK; "
    "ganzip[mobile]), tflite (LiteRT, NHWC; ganzip[tflite]), coreml (.mlpackage mlprogram; ganzip[coreml]), "
    "torchscript (DEPRECATED by PyTorch: only for old runtimes; use pt2)."
)


@main.command("export")
@click.argument("student", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["onnx", "pt2", "executorch", "tflite", "coreml", "torchscript"]),
              default="onnx", show_default=True, help=FORMAT_HELP)
@click.option("--size", type=int, default=None,
              help="Side of the square input: the file takes 1x3xSIZExSIZE unless --dynamic "
                   "(default: the student's training size, else 256).")
@click.option("--dynamic", is_flag=True, help="Dynamic batch, height and width (onnx, pt2); also checks other shapes.")
@click.option("--out", default=None, type=click.Path(),
              help="Output file (default: beside STUDENT, as NAME.onnx, NAME.int8.onnx, NAME.pte, ...).")
@model_options
@click.option("--int8", is_flag=True, help="INT8 post-training quantization (onnx, executorch, tflite), checked "
              "against the FP32 student's quality.")
@click.option("--calibration", default=None, metavar="DIR|builtin:NAME",
              help="Images to calibrate --int8 on: the student's own inputs, preprocessed as in training.")
@click.option("--calibration-images", type=int, default=64, show_default=True, help="How many calibration images.")
@click.option("--min-psnr", type=float, default=30.0, show_default=True,
              help="With --int8: refuse to write a model whose PSNR to the FP32 student is below this (dB).")
@click.option("--teacher", default=None, type=click.Path(dir_okay=False),
              help="With --int8: also report the fidelity to this teacher.")
@click.option("--teacher-arch", default=None, metavar="NAME|MODULE:CALLABLE", help="--arch for a bare-weights --teacher.")
@click.option("--precision", type=click.Choice(["fp16", "fp32"]), default="fp16", show_default=True,
              help="Core ML compute precision.")
@click.option("--nchw", is_flag=True, help="TFLite: keep NCHW input/output instead of the TFLite convention NHWC.")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset version.")
@click.option("--tolerance", type=float, default=1e-4, show_default=True,
              help="Largest allowed max-abs difference between the exported (FP32) and the PyTorch model.")
@click.option("--threads", type=int, default=None, help="Runtime threads for checks and latency (default: all cores).")
@click.option("--repeats", type=int, default=10, show_default=True, help="Timed runs for the latency (median).")
@click.option("--no-latency", is_flag=True, help="Skip the latency measurement.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier export at --out (only a file ganzip wrote).")
def export_cmd(student, fmt, size, dynamic, out, arch, arch_opts, trust_pickle, int8, calibration, calibration_images,
               min_psnr, teacher, teacher_arch, precision, nchw, opset, tolerance, threads, repeats, no_latency,
               as_json, overwrite):
    """Export STUDENT to a deployable file and check that it matches.

    STUDENT is a ganzip student (OUT/student.safetensors) or anything
    `ganzip compress` accepts as a teacher (with --arch for bare weights).
    The exported model is run in its own runtime and compared with the
    PyTorch one on random inputs from three seeds; the file is written only
    when every max-abs difference is within --tolerance. With --int8 the
    check is the INT8 model's PSNR to the FP32 student on held-out images
    (at least --min-psnr). A JSON report is written beside the file
    (NAME.onnx.json). Latency is the median of --repeats CPU runs.

    \b
    Examples:
      ganzip export h2z-crd/student.safetensors --format onnx
      ganzip export h2z-crd/student.safetensors --int8 --calibration datasets/horse2zebra
      ganzip export h2z-crd/student.safetensors --format pt2 --dynamic
      ganzip export h2z-crd/student.safetensors --format executorch --int8 --calibration builtin:edges2shapes
      ganzip export h2z-crd/student.safetensors --format tflite --size 256
      ganzip export latest_net_G.pth --arch resnet_9blocks --format onnx --json
    """
    from ..export import export, sidecar_path
    from ..sizing import resolve_size

    size, size_warning = resolve_size(student, size)
    if size_warning:
        click.echo(f"warning: {size_warning}", err=True)

    result = export(student, out=out, format=fmt, arch=arch, arch_opts=arch_opts, trust_pickle=trust_pickle,
                    size=size, dynamic=dynamic, tolerance=tolerance, opset=opset, latency=not no_latency,
                    repeats=repeats, int8=int8, calibration=calibration, calibration_images=calibration_images,
                    min_psnr=min_psnr, teacher=teacher, teacher_arch=teacher_arch, threads=threads,
                    precision=precision, nhwc=not nchw, overwrite=overwrite)
    if as_json:
        echo_json(result.to_dict())
        return
    for line in format_result(result):
        click.echo(line)
    click.echo(f"report:   {sidecar_path(result.path)}")


def format_result(result) -> list[str]:
    """The human summary of an ExportResult."""
    c = result.contract
    shape = "x".join(map(str, c.get("input_shape", [])))
    lines = [f"exported: {result.path} ({result.format}{' INT8' if result.int8 else ''}, {result.bytes / 1e6:.2f} MB, "
             f"input {c.get('input', 'input')} {shape} {c.get('layout', 'NCHW')} in [-1, 1])"]
    if result.format == "torchscript":
        lines.append("note:     TorchScript is deprecated by PyTorch; prefer --format pt2 (torch.export)")
    if result.checks:
        shapes = sorted({"x".join(map(str, ch["shape"])) for ch in result.checks})
        what = "FP32 graph before quantization: " if result.int8 else ""
        lines.append(f"verified: {what}max abs difference {result.max_abs_diff:.2g} <= {result.tolerance:g} "
                     f"on {len(result.checks)} random inputs ({', '.join(shapes)}) in {result.runtime}")
    if result.structure:
        s = result.structure
        io = "; ".join(f"{f['name']} {'x'.join(map(str, f['shape']))} {f['dtype']}" for f in s["inputs"] + s["outputs"])
        lines.append(f"verified: structure only: {s['model_type']}, {sum(s['operations'].values())} operations, {io}")
    for note in result.notes:
        lines.append(f"NOTE:     {note}")
    q = result.quantization
    if q:
        f = q["to_fp32"]
        lp = f"LPIPS {f['lpips']:.4f}" if f.get("lpips") is not None else "LPIPS not measured (no AlexNet)"
        ssim = f"SSIM {f['ssim']:.4f}, " if f.get("ssim") is not None else ""
        lines.append(f"int8:     PSNR {f['psnr']:.2f} dB (>= --min-psnr {q['min_psnr']:g}), {ssim}{lp} to the FP32 "
                     f"student on {q['calibration']['evaluated_on']}; calibrated on {q['calibration']['images']} images")
        if "to_teacher" in q:
            t = q["to_teacher"]
            lines.append(f"teacher:  PSNR {t['int8']['psnr']:.2f} dB INT8, {t['fp32']['psnr']:.2f} dB FP32 to the teacher")
        b = q["bytes"]
        lines.append(f"size:     {b['fp32'] / 1e6:.2f} MB FP32 -> {b['int8'] / 1e6:.2f} MB INT8 ({b['ratio']:.2f}x smaller)")
        if "latency" in q:
            lat = q["latency"]
            lines.append(f"speed:    {lat['fp32_ms']:.2f} ms FP32 ({lat['fp32_runtime']}) -> {lat['int8_ms']:.2f} ms "
                         f"INT8, {lat['speedup']:.2f}x, {lat['threads']} thread(s), median of {lat['repeats']}")
        for op, info in q.get("float_operators", {}).items():
            lines.append(f"float:    {op} x{info['count']}: {info['why']}")
    elif result.latency_ms is not None:
        lines.append(f"latency:  {result.latency_ms:.2f} ms exported ({result.runtime}), "
                     f"{result.eager_latency_ms:.2f} ms PyTorch eager, {shape} on the CPU, {result.threads} thread(s)")
    return lines

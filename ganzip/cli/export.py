"""`ganzip export`: a student (or any generator) to ONNX or TorchScript, verified."""
from __future__ import annotations

import click

from . import main
from .common import echo_json, model_options


@main.command("export")
@click.argument("student", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript"]), default="onnx", show_default=True,
              help="onnx (checked with onnxruntime) or torchscript (torch.jit.trace).")
@click.option("--size", type=int, default=256, show_default=True, help="Side of the square example input.")
@click.option("--dynamic", is_flag=True, help="Dynamic batch, height and width (ONNX); also checks other shapes.")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="Output file (default: beside STUDENT, as NAME.onnx or NAME.torchscript.pt).")
@model_options
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset version.")
@click.option("--tolerance", type=float, default=1e-4, show_default=True,
              help="Largest allowed max-abs difference between the exported and the PyTorch model.")
@click.option("--repeats", type=int, default=10, show_default=True, help="Timed runs for the latency (median).")
@click.option("--no-latency", is_flag=True, help="Skip the latency measurement.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier export at --out (only a file ganzip wrote).")
def export_cmd(student, fmt, size, dynamic, out, arch, arch_opts, trust_pickle, opset, tolerance, repeats,
               no_latency, as_json, overwrite):
    """Export STUDENT to ONNX or TorchScript and check that it matches.

    STUDENT is a ganzip student (OUT/student.safetensors) or anything
    `ganzip compress` accepts as a teacher (with --arch for bare weights).
    The exported model is compared with the PyTorch one on random inputs from
    three seeds; the file is written only when every max-abs difference is
    within --tolerance. Latency is the median of --repeats CPU runs of the
    exported model (onnxruntime for ONNX) and of the PyTorch model.

    \b
    Examples:
      ganzip export h2z-crd/student.safetensors --format onnx --dynamic
      ganzip export h2z-crd/student.safetensors --format torchscript --size 256 --out g.pt
      ganzip export latest_net_G.pth --arch resnet_9blocks --format onnx --json
    """
    from ..export import export

    result = export(student, out=out, format=fmt, arch=arch, arch_opts=arch_opts, trust_pickle=trust_pickle,
                    size=size, dynamic=dynamic, tolerance=tolerance, opset=opset, latency=not no_latency,
                    repeats=repeats, overwrite=overwrite)
    if as_json:
        echo_json(result.to_dict())
        return
    shapes = sorted({"x".join(map(str, c["shape"])) for c in result.checks})
    click.echo(f"exported: {result.path} ({result.format}, {result.bytes / 1e6:.2f} MB"
               + (", dynamic batch/height/width" if result.dynamic and result.format == "onnx" else "") + ")")
    click.echo(f"verified: max abs difference {result.max_abs_diff:.2g} <= {result.tolerance:g} "
               f"on {len(result.checks)} random inputs ({', '.join(shapes)})")
    if result.latency_ms is not None:
        click.echo(f"latency:  {result.latency_ms:.2f} ms exported ({result.runtime}), "
                   f"{result.eager_latency_ms:.2f} ms PyTorch eager, 1x{result.checks[0]['shape'][1]}x{size}x{size} on the CPU")

"""`ganzip profile`: MACs, parameters and latency of a teacher and its student."""
from __future__ import annotations

import click

from ..metrics.cost import format_macs, format_params
from . import main
from .common import device_option, echo_json, model_options


@main.command("profile")
@click.argument("model", required=False, type=click.Path(dir_okay=False))
@model_options
@click.option("--width", type=float, default=None, help="Also build a student keeping this fraction of channels (0 < W <= 1).")
@click.option("--round-to", type=int, default=1, show_default=True, help="Round student channel counts down to a multiple of this.")
@click.option("--size", type=int, default=256, show_default=True, help="Side of the square input image.")
@click.option("--repeats", type=int, default=10, show_default=True, help="Timed forward passes (the median is reported).")
@click.option("--no-latency", is_flag=True, help="Count MACs and parameters only.")
@click.option("--in-channels", type=int, default=None, metavar="N",
              help="Image channels the model takes (default: guessed from its first convolution).")
@device_option
@click.option("--backend", type=click.Choice(["onnx", "onnx-int8", "pt2", "executorch", "executorch-int8", "tflite",
                                             "tflite-int8"]), default=None,
              help="Time an exported file in its runtime instead: MODEL is the file, or a student with the export beside it.")
@click.option("--threads", type=int, default=1, show_default=True, help="Runtime threads with --backend.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: {\"teacher\": {...}, \"student\": {...}}.")
def profile_cmd(model, arch, arch_opts, trust_pickle, width, round_to, size, repeats, no_latency, in_channels, device,
                backend, threads, as_json):
    """Count MACs and parameters and time a generator (and its student).

    MACs follow the paper's convention (torchprofile). Latency is the median of
    --repeats forward passes after a warm-up, on --device.

    \b
    Examples:
      ganzip profile --arch resnet_9blocks                         # zoo model, fresh weights
      ganzip profile --arch mobile_resnet_9blocks --width 0.25 --json
      ganzip profile latest_net_G.pth --arch resnet_9blocks --width 0.25
    """
    if backend:
        from ..backends import profile_backend

        info = profile_backend(model, backend, size=size, threads=threads, repeats=repeats)
        if as_json:
            echo_json(info)
        else:
            click.echo(f"{info['backend']}: {info['latency_ms']:.2f} ms median of {repeats} after warm-up, "
                       f"{info['threads']} thread(s), 1x3x{size}x{size}, {info['runtime']} ({info['path']})")
        return
    from ..profiling import profile

    result = profile(model, arch=arch, arch_opts=arch_opts, trust_pickle=trust_pickle, width=width,
                     round_to=round_to, size=size, device=device, latency=not no_latency, repeats=repeats,
                     in_channels=in_channels)
    if as_json:
        echo_json(result)
        return
    click.echo(format_profile(result))


def format_profile(result: dict) -> str:
    def ms(v):
        return "-" if v is None else f"{v:.1f} ms"

    rows = [("", "MACs", "params", "latency")]
    t = result["teacher"]
    rows.append(("teacher", format_macs(t["macs"]), format_params(t["params"]), ms(t["latency_ms"])))
    if "student" in result:
        s = result["student"]
        rows.append(("student", format_macs(s["macs"]), format_params(s["params"]), ms(s["latency_ms"])))
        r = result["ratios"]
        rows.append(("ratio", f"{r['macs']:.2f}x", f"{r['params']:.2f}x", "-" if r["latency"] is None else f"{r['latency']:.2f}x"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))) for row in rows]
    for u in result.get("unpruned", []):  # what the student keeps at the teacher's width, and why
        lines.append(f"full width: {u['layer']}: {u['reason']}")
    return "\n".join(lines)

"""`ganzip eval`: FID/KID, LPIPS, PSNR, SSIM and cost of a student (and its teacher), with reports."""
from __future__ import annotations

import shlex
import sys

import click

from . import main
from .common import device_option, echo_json, model_options


@main.command("eval")
@click.argument("student", type=click.Path(dir_okay=False))
@click.option("--teacher", default=None, type=click.Path(dir_okay=False),
              help="The teacher generator, to compare cost, FID (ΔFID) and fidelity (LPIPS/PSNR/SSIM to it).")
@model_options
@click.option("--data", required=True, metavar="DIR|builtin:NAME",
              help="Evaluation images: a dataset folder (its test split, else val) or builtin:NAME.")
@click.option("--target", default=None, metavar="DIR", type=click.Path(file_okay=False),
              help="Real target-domain images for FID (default: the dataset's own {split}B images or B halves).")
@click.option("--real-stats", default=None, metavar="FILE.npz", type=click.Path(dir_okay=False),
              help="Precomputed FID statistics (keys mu, sigma), e.g. a published horse2zebra_B.npz.")
@click.option("--split", default=None, help="Dataset split to evaluate (default: test, else val).")
@click.option("--direction", type=click.Choice(["AtoB", "BtoA"]), default="AtoB", show_default=True)
@click.option("--size", type=int, default=None,
              help="Image side the models run at (default: the student's training size from its metadata, else 256).")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--max-images", type=int, default=None, help="Evaluate only the first N images.")
@device_option
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Write report.json, report.md, report.html and sample PNGs here.")
@click.option("--save-images", is_flag=True, help="Also write every output as PNG under OUT/outputs/.")
@click.option("--inception-weights", default=None, metavar="FILE", type=click.Path(dir_okay=False),
              help="pt_inception-2015-12-05-6726825d.pth (else looked up; see `ganzip assets`).")
@click.option("--lpips-weights", default=None, metavar="FILE", type=click.Path(dir_okay=False),
              help="alexnet-owt-7be5be79.pth, the LPIPS backbone (else looked up).")
@click.option("--no-lpips", is_flag=True, help="Skip LPIPS (no AlexNet weights needed).")
@click.option("--no-kid", is_flag=True, help="Skip KID.")
@click.option("--no-fid", is_flag=True, help="Skip FID and KID (no Inception weights needed); the report says so.")
@click.option("--allow-missing", is_flag=True,
              help="Go on when a pretrained file is missing: the metric is recorded as unavailable, with the reason.")
@click.option("--fid-dims", type=click.Choice(["64", "192", "768", "2048"]), default="2048", show_default=True,
              help="Inception feature size. 2048 is the FID protocol; smaller is only for quick smoke runs.")
@click.option("--no-latency", is_flag=True, help="Count MACs and parameters but do not time the models.")
@click.option("--offline", is_flag=True, help="Never download pretrained files.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
@click.option("--overwrite", is_flag=True,
              help="Replace the reports and images an earlier ganzip run wrote into --out (never other files).")
def eval_cmd(student, teacher, arch, arch_opts, trust_pickle, data, target, real_stats, split, direction, size,
             batch_size, max_images, device, out, save_images, inception_weights, lpips_weights, no_lpips, no_kid,
             fid_dims, no_latency, offline, quiet, as_json, overwrite, no_fid, allow_missing):
    """Evaluate STUDENT (and --teacher) on a dataset: quality, fidelity and cost.

    FID follows the pytorch-fid protocol with the pt_inception-2015-12-05
    weights, which must be available locally (`ganzip assets`). With
    --teacher, the report shows both models side by side like the paper's
    Table 1 (MACs, parameters, FID, ΔFID, LPIPS to the teacher, latency).

    \b
    Examples:
      ganzip eval out/student.safetensors --teacher G.pth --arch resnet_9blocks \\
          --data datasets/horse2zebra --real-stats horse2zebra_B.npz --out eval-h2z
      ganzip eval student.safetensors --data datasets/edges2shoes --json
    """
    from ..evaluation import evaluate
    from ..report_tables import terminal_summary
    from ..sizing import resolve_size

    command = "ganzip " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else None
    size, size_warning = resolve_size(student, size)
    if size_warning:
        click.echo(f"warning: {size_warning}", err=True)
    result = evaluate(student, teacher=teacher, data=data, target=target, size=size, batch_size=batch_size,
                      device=device, out=out, inception_weights=inception_weights, alexnet_weights=lpips_weights,
                      real_stats=real_stats, offline=offline, progress=not quiet, max_images=max_images,
                      arch=arch, arch_opts=arch_opts, trust_pickle=trust_pickle, split=split, direction=direction,
                      kid=not no_kid, lpips=not no_lpips, fid=not no_fid, allow_missing=allow_missing, fid_dims=int(fid_dims), latency=not no_latency, save_images=save_images,
                      command=command, overwrite=overwrite)
    if as_json:
        echo_json(result.to_dict())
        return
    click.echo(terminal_summary(result.to_dict(), printed={size_warning}))


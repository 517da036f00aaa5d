"""`ganzip demo`: compress the shipped teacher on the CPU and write a report."""
from __future__ import annotations

import click

from . import main
from .common import device_option


@main.command("demo")
@click.option("--out", default="ganzip-demo", show_default=True, type=click.Path(file_okay=False),
              help="Output folder: report.json/.md/.html, samples.png and one folder per recipe.")
@click.option("--compare", is_flag=True,
              help="Also train the scratch and kd-pixel baselines (and, without VGG-16, the plain crd recipe) "
                   "on the same budget and compare them with crd.")
@click.option("--steps", type=int, default=None, help="Training steps of every student (default 800).")
@click.option("--batch-size", type=int, default=None, help="Images per step (default 4).")
@click.option("--eval-images", type=int, default=100, show_default=True,
              help="Held-out test images every student is measured on.")
@click.option("--device", default="cpu", show_default=True, metavar="cpu|auto|cuda",
              help="Where to train; the demo is sized for the CPU.")
@click.option("--threads", type=int, default=None,
              help="CPU threads for torch (default: one per core); 1 is steadier on a machine shared with other jobs.")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Train every student with seeds 0..N-1: the report adds mean ± std over the seeds and a "
                   "paired comparison of crd with each other student.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo_cmd(out, compare, steps, batch_size, eval_images, device, threads, seeds, quiet):
    """Compress ganzip's own small teacher at width 0.25 with the crd recipe.

    The teacher (a ResNet generator trained by `ganzip train` on the built-in
    edges2shapes task, shipped in the package) is distilled on that task's
    images, on the CPU, in a few minutes; nothing is downloaded. OUT/report.html
    shows the teacher's and the student's cost, the student's fidelity to the
    teacher and to the ground truth, and sample images. Pretrained files
    that are missing (VGG-16, Inception, AlexNet) are listed in the report
    with what was used instead.

    \b
    Examples:
      ganzip demo
      ganzip demo --compare --out demo-compare     # crd vs scratch vs kd-pixel
      ganzip demo --steps 100 --out quick-demo
      ganzip demo --compare --seeds 3 --out demo-seeds   # mean ± std over 3 seeds
    """
    from ..demo import run_demo

    result = run_demo(out, compare=compare, steps=steps, batch_size=batch_size, eval_images=eval_images,
                      device=device, threads=threads, quiet=quiet, seeds=seeds)
    header = result.report["tables"][0]["header"]
    rows = result.report["tables"][0]["rows"]
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    for r in [header] + rows:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    for table in result.report["tables"][1:]:
        if table["title"].startswith(("Mean ± std", "crd against")) or "paired over seeds" in table["title"]:
            click.echo(f"\n{table['title']}")
            tw = [max(len(str(r[i])) for r in [table["header"]] + table["rows"]) for i in range(len(table["header"]))]
            for r in [table["header"]] + table["rows"]:
                click.echo("  ".join(str(c).ljust(w) for c, w in zip(r, tw)).rstrip())
    for u in result.report.get("unavailable", []):
        click.echo(f"note: {u['asset']} not found: {u['needed_for']} unavailable; {u['instead']}", err=True)
    click.echo(f"report: {result.report_paths['html']}  ({result.seconds:.0f} s, {result.cpu_seconds:.0f} CPU s)")

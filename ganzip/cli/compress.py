"""`ganzip compress`: distil a teacher generator into a width-scaled student."""
from __future__ import annotations

import json

import click

from . import main
from .common import device_option, model_options


@main.command("compress")
@click.argument("model", type=click.Path(dir_okay=False))
@model_options
@click.option("--width", type=float, default=0.25, show_default=True,
              help="Fraction of the teacher's channels the student keeps (the paper: 0.25).")
@click.option("--recipe", default="crd", show_default=True,
              help="Recipe name (see `ganzip recipes`) or a .toml file.")
@click.option("--data", required=True, metavar="DIR|builtin:NAME",
              help="Training images: trainA/trainB, A/B, A|B pairs, a flat folder, or builtin:NAME.")
@click.option("--target", default=None, metavar="DIR",
              help="Real target-domain images for the discriminator when --data has no B domain.")
@click.option("--direction", type=click.Choice(["AtoB", "BtoA"]), default="AtoB", show_default=True,
              help="BtoA swaps the dataset's A and B (A|B halves, trainA/trainB): for CycleGAN's G_B "
                   "or a BtoA pix2pix model (facades label2photo).")
@click.option("--size", type=int, default=None, help="Training image side (default: the recipe's, 256).")
@click.option("--steps", type=int, default=None, help="Optimisation steps (overrides the recipe's epochs).")
@click.option("--epochs", type=int, default=None, help="Epochs over the training images (default: the recipe's, 100).")
@click.option("--batch-size", type=int, default=None, help="Images per step and process (default: the recipe's).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a recipe setting, repeatable (see `ganzip recipes show NAME`).")
@click.option("--out", default="ganzip-out", show_default=True, metavar="DIR",
              help="Output folder: student.safetensors, report.json/.md/.html, samples.png, train_log.csv.")
@click.option("--in-channels", type=int, default=None, metavar="N",
              help="Image channels the model takes (default: guessed from its first convolution).")
@device_option
@click.option("--seed", type=int, default=None, help="Random seed (default: the recipe's, 0).")
@click.option("--init", "init", type=click.Choice(["scratch", "inherit"]), default="scratch", show_default=True,
              help="Student start: fresh weights, or the teacher's largest channels.")
@click.option("--round-to", type=int, default=1, show_default=True, help="Round student channel counts down to a multiple of this.")
@click.option("--checkpoint-every", type=int, default=500, show_default=True, help="Checkpoint every N steps (0: only at the end).")
@click.option("--eval-every", type=int, default=500, show_default=True,
              help="Check fidelity to the teacher on held-out training images every N steps (0: only at the end).")
@click.option("--log-every", type=int, default=10, show_default=True, help="Write a train_log.csv row every N steps.")
@click.option("--workers", type=int, default=0, show_default=True, help="Data-loading worker processes.")
@click.option("--no-resume", is_flag=True, help="Start over even if --out holds a checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace a finished run in --out.")
@click.option("--tensorboard", is_flag=True, help="Also log scalars for TensorBoard (OUT/tensorboard).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--vgg-weights", type=click.Path(dir_okay=False), default=None,
              help="VGG-16 weights for the perceptual loss (same as --set perceptual.weights=FILE).")
@click.option("--inception-weights", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="pt_inception-2015-12-05-6726825d.pth for KID selection and the final FID/KID "
                   "(same as --set eval.inception_weights=FILE; else looked up, see `ganzip assets`).")
@click.option("--real-stats", type=click.Path(dir_okay=False), default=None, metavar="FILE.npz",
              help="Precomputed FID statistics (keys mu, sigma) for the final evaluation, as in `ganzip eval`.")
@click.option("--offline", is_flag=True, help="Never download pretrained files (VGG-16, Inception).")
def compress_cmd(model, arch, arch_opts, trust_pickle, width, recipe, data, target, size, steps, epochs, batch_size,
                 overrides, out, in_channels, device, seed, init, round_to, checkpoint_every, eval_every, log_every, workers,
                 no_resume, overwrite, tensorboard, quiet, vgg_weights, inception_weights, real_stats, offline,
                 direction):
    """Distil MODEL into a student with WIDTH of its channels, following a recipe.

    Runs the recipe's losses (CRD by default: content-relationship
    distillation, a perceptual loss and an online discriminator), checkpoints
    into --out and resumes from there when run again. The student that is
    closest to the teacher on held-out training images is kept as
    OUT/student.safetensors; OUT/report.md summarises the run.

    The default recipe needs VGG-16 weights (see `ganzip assets`); without
    them use --recipe crd-novgg, which anchors the student's colours with an
    L1 to the teacher instead (plain CRD with --set perceptual.weight=0 is
    blind to colour). A plan (cost, steps, loss terms, splits, warnings) is
    printed before the first step.

    \b
    Examples:
      ganzip compress horse2zebra.pth --arch resnet_9blocks --data datasets/horse2zebra --out h2z-crd
      ganzip compress G.pth --arch unet_256 --arch-opt norm=batch --recipe crd-paired --data edges2shoes
      ganzip compress G.pth --arch resnet_9blocks --data builtin:solid2striped --size 64 --steps 2000 \\
          --recipe crd-novgg
      torchrun --nproc-per-node 4 -m ganzip compress G.pth --arch resnet_9blocks --data DIR
    """
    from ..engine import compress
    from ..training.runplan import printed_warnings

    if vgg_weights is not None:
        overrides = (*overrides, f"perceptual.weights={json.dumps(str(vgg_weights))}")
    if inception_weights is not None:
        overrides = (*overrides, f"eval.inception_weights={json.dumps(str(inception_weights))}")
    if real_stats is not None:
        from ..metrics.fid import load_stats

        load_stats(real_stats)  # a bad file stops here, not after hours of training
    result = compress(
        model, arch=arch, arch_opts=arch_opts, trust_pickle=trust_pickle, width=width, recipe=recipe, data=data,
        target=target, size=size, steps=steps, epochs=epochs, batch_size=batch_size, overrides=overrides, out=out,
        device=device, seed=seed, init=init, round_to=round_to, checkpoint_every=checkpoint_every,
        eval_every=eval_every, log_every=log_every, workers=workers, resume=not no_resume, overwrite=overwrite,
        tensorboard=tensorboard, quiet=quiet, offline=offline, in_channels=in_channels, direction=direction,
        real_stats=None if real_stats is None else str(real_stats),
    )
    if result.student_path is None:  # ranks other than 0 under torchrun
        return
    printed = printed_warnings(result.report)  # the plan block said these before step 1
    for warning in result.warnings:
        if warning not in printed:
            click.echo(f"warning: {warning}", err=True)
    t = result.train
    if t.resumed_from is not None:  # the plan block said it too, before step 1 (not with --quiet)
        click.echo(f"resumed from the checkpoint at step {t.resumed_from} of {t.total_steps}", err=True)
    best = ""
    if t.best_step and t.selection:
        col = t.selection["column"]
        best = f" (best at step {t.best_step} by held-out {t.selection['metric']}: {t.best_metrics.get(col, float('nan')):.4g})"
    click.echo(f"student: {result.student_path}{best}")
    if result.report_path is not None:
        click.echo(f"report:  {result.report_path}")

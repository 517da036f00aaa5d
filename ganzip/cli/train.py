"""`ganzip train`: train a generator from scratch (a teacher) with ganzip's own engine."""
from __future__ import annotations

import click

from . import main
from .common import device_option


@main.command("train")
@click.option("--arch", required=True, metavar="NAME|MODULE:CALLABLE",
              help="Architecture: a zoo name (see `ganzip models`) or package.module:callable.")
@click.option("--arch-opt", "arch_opts", multiple=True, metavar="KEY=VALUE",
              help="Architecture option, repeatable (e.g. --arch-opt ngf=16).")
@click.option("--data", required=True, metavar="builtin:TASK|DIR",
              help="Training images; paired data (A|B, or builtin:edges2shapes / labels2shapes) gives a real objective.")
@click.option("--direction", type=click.Choice(["AtoB", "BtoA"]), default="AtoB", show_default=True,
              help="BtoA swaps the dataset's A and B (A|B halves, trainA/trainB): for CycleGAN's G_B "
                   "or a BtoA pix2pix model (facades label2photo).")
@click.option("--recipe", default="scratch", show_default=True,
              help="A recipe without teacher terms (scratch: L1 100 to the ground truth + PatchGAN for pairs).")
@click.option("--size", type=int, default=None, help="Training image side (default: the recipe's, 256).")
@click.option("--steps", type=int, default=None, help="Optimisation steps (default: the recipe's epochs).")
@click.option("--batch-size", type=int, default=None, help="Images per step (default: the recipe's, 1).")
@click.option("--seed", type=int, default=None, help="Seeds the initialisation, the data order and the augmentation (default 0).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a recipe setting, repeatable (see `ganzip recipes show scratch`).")
@click.option("--out", default="ganzip-teacher", show_default=True, type=click.Path(file_okay=False),
              help="Output folder: teacher.safetensors, teacher.json, train_log.csv, checkpoint/.")
@device_option
@click.option("--checkpoint-every", type=int, default=500, show_default=True, help="Checkpoint every N steps (0: only at the end).")
@click.option("--log-every", type=int, default=10, show_default=True, help="Write a train_log.csv row every N steps.")
@click.option("--no-resume", is_flag=True, help="Start over even if --out holds a checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace a finished run in --out.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_cmd(arch, arch_opts, data, direction, recipe, size, steps, batch_size, seed, overrides, out, device, checkpoint_every,
              log_every, no_resume, overwrite, quiet):
    """Train a generator from scratch on --data and save it as a teacher.

    Uses the engine's training loop with the scratch recipe: for paired data,
    pix2pix's objective (100 x L1 to the ground truth + a conditional
    PatchGAN); for unpaired data only the GAN and identity terms, which is a
    weak objective. OUT/teacher.safetensors records its architecture, so
    `ganzip compress OUT/teacher.safetensors` needs no --arch;
    OUT/teacher.json records the command, the seed and PSNR/SSIM/L1 to the
    ground truth on held-out images, trained against untrained.

    \b
    Examples:
      ganzip train --arch resnet_6blocks --arch-opt ngf=16 --data builtin:edges2shapes \\
          --size 64 --steps 1500 --batch-size 4 --out my-teacher
      ganzip train --arch unet_256 --arch-opt norm=batch --data datasets/facades --steps 40000
    """
    from ..teacher import train_teacher

    result = train_teacher(arch, data, arch_opts=list(arch_opts), steps=steps, size=size, batch_size=batch_size,
                           seed=seed, recipe=recipe, overrides=list(overrides), out=out, device=device,
                           checkpoint_every=checkpoint_every, log_every=log_every, resume=not no_resume,
                           overwrite=overwrite, quiet=quiet,
                           direction=direction)
    metrics = result.metrics
    if "trained" in metrics:
        tr, un = metrics["trained"], metrics["untrained"]
        click.echo(f"held-out PSNR to ground truth: {tr['psnr']:.2f} dB (untrained: {un['psnr']:.2f} dB); "
                   f"sharpness {tr['sharpness']:.2f} of the ground truth's (1 = as detailed, below = blurred)")
    elif "unavailable" in metrics:
        click.echo(f"no held-out metrics: {metrics['unavailable']}", err=True)
    click.echo(f"teacher: {result.path}")
    click.echo(f"provenance: {result.out / 'teacher.json'}")

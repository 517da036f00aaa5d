"""`ganzip data`: built-in procedural datasets and a look at dataset folders."""
from __future__ import annotations

import click

from . import main
from .common import echo_json


@main.group("data")
def data_group():
    """Make built-in datasets and inspect dataset folders.

    \b
    Examples:
      ganzip data list
      ganzip data make edges2shapes datasets/e2s --n 2000 --size 64
      ganzip data info datasets/horse2zebra
    """


@data_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(as_json):
    """List the built-in procedural tasks (usable as --data builtin:NAME, no files needed).

    \b
    Example:
      ganzip compress G.pth --arch resnet_9blocks --data builtin:day2night --size 64
    """
    from ..data import list_tasks

    tasks = list_tasks()
    if as_json:
        echo_json([{"name": t.name, "kind": t.kind, "description": t.description} for t in tasks])
        return
    for t in tasks:
        click.echo(f"{t.name:15s} {t.kind:9s} {t.description}")


@data_group.command("make")
@click.argument("name")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--n", "n", type=click.IntRange(min=1), default=1000, show_default=True, help="Training images.")
@click.option("--size", type=click.IntRange(64, 256), default=256, show_default=True, help="Image side in pixels (64-256).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed: same seed, same images.")
@click.option("--n-test", type=click.IntRange(min=0), default=None, help="Test images (default: n/10, at least 1).")
@click.option("--n-val", type=click.IntRange(min=0), default=None, help="Validation images, paired tasks only (default: --n-test).")
@click.option("--overwrite", is_flag=True, help="Write into OUT even if it is not empty.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def make_cmd(name, out, n, size, seed, n_test, n_val, overwrite, quiet, as_json):
    """Write built-in task NAME to folder OUT as PNGs in the pytorch-CycleGAN-and-pix2pix layout.

    Paired tasks give train/, val/, test/ of A|B images (input on the left);
    unpaired tasks give trainA/, trainB/, testA/, testB/. OUT then works as
    --data OUT anywhere, and with the reference repositories' --dataroot.

    \b
    Examples:
      ganzip data make edges2shapes datasets/e2s --n 2000 --size 64
      ganzip data make day2night datasets/d2n --n 500 --n-test 100 --seed 1
    """
    from ..data import make_dataset

    summary = make_dataset(name, out, n=n, size=size, seed=seed, n_test=n_test, n_val=n_val,
                           overwrite=overwrite, progress=not quiet)
    if as_json:
        echo_json(summary)
        return
    counts = ", ".join(f"{k} {v}" for k, v in summary["counts"].items())
    click.echo(f"wrote {summary['files']} PNGs ({summary['kind']}, {size}x{size}: {counts}) to {out} "
               f"in {summary['seconds']:.1f} s")


@data_group.command("info")
@click.argument("source", metavar="DIR|builtin:NAME")
@click.option("--verify", is_flag=True, help="Decode every image (finds corrupt files; slower).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info_cmd(source, verify, as_json):
    """Show how ganzip reads a dataset: its layout, splits, image counts and skipped files.

    \b
    Example:
      ganzip data info datasets/horse2zebra
    """
    from ..data import inspect_source

    info = inspect_source(source, verify=verify)
    if as_json:
        echo_json(info)
        return
    click.echo(f"{info['source']}: {info['kind']}" + (f" built-in task: {info['description']}" if info["builtin"] else ""))
    for split, entry in info["splits"].items():
        if info["builtin"]:
            click.echo(f"  {split:5s} {entry['images']} images by default (`ganzip data make --n N` writes any number)")
            continue
        for side, d in entry.items():
            line = f"  {split:5s} {side}: {d['folder']}: {d['images']} images"
            if d.get("error"):
                line += f" ({d['error']})"
            elif d.get("skipped"):
                line += f"; {d['skip_summary']}"
            click.echo(line)

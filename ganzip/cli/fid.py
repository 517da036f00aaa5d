"""`ganzip fid`: FID (and KID) between two image folders or a folder and a statistics file."""
from __future__ import annotations

import os

import click

from . import main
from .common import device_option, echo_json


@main.command("fid")
@click.argument("source_a", metavar="DIR_A", type=click.Path())
@click.argument("source_b", metavar="[DIR_B|STATS.npz]", required=False, type=click.Path(exists=True))
@click.option("--inception-weights", default=None, metavar="FILE", type=click.Path(dir_okay=False),
              help="pt_inception-2015-12-05-6726825d.pth (else looked up; see `ganzip assets`).")
@click.option("--kid", is_flag=True, help="Also compute KID (mean and std over 100 subsets).")
@click.option("--dims", type=click.Choice(["64", "192", "768", "2048"]), default="2048", show_default=True,
              help="Inception feature size; 2048 (pool3) is the FID protocol.")
@click.option("--batch-size", type=int, default=50, show_default=True)
@click.option("--num-workers", type=click.IntRange(min=0), default=None, metavar="N",
              help="Image-reading threads (default: min(8, CPUs); 0 reads in one thread).")
@device_option
@click.option("--save-stats", default=None, metavar="OUT.npz", type=click.Path(),
              help="Write the statistics (mu, sigma) of DIR_A to OUT.npz instead of computing a FID; "
                   "pytorch-fid's order `--save-stats DIR OUT.npz` works too.")
@click.option("--no-cache", is_flag=True, help="Do not read or write cached folder statistics.")
@click.option("--offline", is_flag=True, help="Never download pretrained files.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def fid_cmd(source_a, source_b, inception_weights, kid, dims, batch_size, num_workers, device, save_stats, no_cache,
            offline, quiet, as_json):
    """FID between DIR_A and DIR_B (either may be a .npz of mu/sigma), like `python -m pytorch_fid`.

    Images are read as pytorch-fid reads them (the files directly in the
    folder, converted to RGB, resized to 299 by the network). Statistics of
    folders are cached in $GANZIP_HOME/fid_stats, keyed by the files' names,
    sizes and times and by the Inception weights.

    \b
    Examples:
      ganzip fid eval-h2z/outputs/student datasets/horse2zebra/testB   # after eval --save-images --out eval-h2z
      ganzip fid fakes/ horse2zebra_B.npz --kid --json
      ganzip fid datasets/horse2zebra/testB --save-stats zebra.npz
      ganzip fid --save-stats datasets/horse2zebra/testB zebra.npz      # pytorch-fid's order
    """
    from ..errors import GanzipError
    from ..metrics import fid as fidm

    workers = None if num_workers is None else max(1, num_workers)
    if save_stats:
        if source_b is not None:
            raise GanzipError("--save-stats takes one folder: ganzip fid DIR --save-stats OUT.npz")
        if os.path.isdir(save_stats) and not os.path.isdir(source_a):  # pytorch-fid: --save-stats DIR OUT.npz
            source_a, save_stats = save_stats, source_a
        if not os.path.isdir(source_a):
            raise GanzipError(f"{source_a}: no such folder of images (ganzip fid DIR --save-stats OUT.npz)")
        if os.path.isdir(save_stats):
            raise GanzipError(f"--save-stats {save_stats} is a folder: give the .npz file to write")
        notes: list[str] = []
        with fidm.collect_warnings(notes):
            ext = fidm.load_inception(inception_weights, dims=int(dims), device=device, offline=offline)
            stats = fidm.folder_statistics(source_a, ext, batch_size=batch_size, progress=not quiet,
                                           cache=not no_cache, num_workers=workers)
            fidm.check_sample_size(stats.count, stats.dims, source_a)
        fidm.save_stats(save_stats, stats)
        result = {"saved": save_stats, "count": stats.count, "dims": stats.dims, "weights": ext.weights,
                  "warnings": notes}
        if as_json:
            echo_json(result)
        else:
            for w in notes:
                click.echo(f"warning: {w}", err=True)
            click.echo(f"saved statistics of {stats.count} images ({stats.dims}-d) to {save_stats}")
        return
    if source_b is None:
        raise GanzipError("give two folders (or a folder and a .npz), or one folder with --save-stats OUT.npz")
    if not os.path.exists(source_a):
        raise GanzipError(f"{source_a}: no such folder or .npz statistics file")
    result = fidm.compute_fid(source_a, source_b, weights=inception_weights, dims=int(dims), batch_size=batch_size,
                              device=device, kid=kid, progress=not quiet, offline=offline, cache=not no_cache,
                              num_workers=workers)
    if as_json:
        echo_json(result.to_dict())
        return
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)
    click.echo(f"FID: {result.fid:.4f}")
    if result.kid_mean is not None:
        click.echo(f"KID: {result.kid_mean:.6f} ± {result.kid_std:.6f}")

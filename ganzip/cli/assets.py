"""`ganzip assets`: which pretrained files ganzip uses, where it looks, and installing them."""
from __future__ import annotations

from pathlib import Path

import click

from .. import assets
from ..errors import GanzipError
from . import main
from .common import echo_json


@main.group("assets", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--no-verify", is_flag=True, help="Do not hash the files that are present.")
@click.pass_context
def assets_cmd(ctx, as_json, no_verify):
    """List the pretrained files (FID Inception, AlexNet, VGG-16): hash, where ganzip looks, present or not.

    ganzip never downloads silently and works offline. Put a file in place with
    `ganzip assets import FILE` (the hash is checked), pass it explicitly
    (--inception-weights FILE, --lpips-weights FILE), or set $GANZIP_HOME.

    \b
    Examples:
      ganzip assets
      ganzip assets import ~/Downloads/pt_inception-2015-12-05-6726825d.pth
    """
    if ctx.invoked_subcommand is not None:
        return
    entries = assets.list_assets(check_hash=not no_verify)
    if as_json:
        echo_json({"ganzip_home": str(assets.ganzip_home()), "assets": entries})
        return
    click.echo(f"GANZIP_HOME: {assets.ganzip_home()}")
    for e in entries:
        if not e["present"]:
            state = "MISSING"
        elif e["verified"] is False:
            state = f"present, WRONG OR UNKNOWN HASH: {e['path']}"
        else:
            state = f"present: {e['path']}" + ("" if e["verified"] else " (not hashed)")
        click.echo("")
        click.echo(f"{e['name']}  {e['filename']}  [{state}]")
        click.echo(f"  {e['description']}")
        click.echo(f"  sha256 {e['sha256']}")
        click.echo(f"  from   {e['url']}")
        click.echo("  looks in (after an explicit " + (e["flag"] or "path") + "):")
        for loc in e["locations"]:
            click.echo(f"    {loc}")


@assets_cmd.command("import")
@click.argument("file", type=click.Path())
@click.option("--name", default=None, help="Which asset this is (default: recognised by hash or file name).")
def import_cmd(file, name):
    """Check FILE's SHA-256 and install it into $GANZIP_HOME/assets/.

    A file whose hash is not the published one is refused (exit 2); to use
    such a file anyway, pass it explicitly (e.g. --inception-weights FILE):
    reports then mark it unverified.
    """
    if Path(file).is_dir():
        raise GanzipError(f"{file} is a folder: give the downloaded weights file itself (for example a .pth)")
    if not Path(file).is_file():
        raise GanzipError(f"no such file: {file}")
    dest = assets.import_asset(file, name=name)
    click.echo(f"installed {dest}")

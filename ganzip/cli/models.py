"""`ganzip models`: the generator zoo."""
from __future__ import annotations

import click

from .. import models
from . import main
from .common import echo_json


@main.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_cmd(as_json):
    """List the zoo architectures and their options (for --arch / --arch-opt)."""
    rows = {name: models.model_options(name) for name in models.list_models()}
    if as_json:
        echo_json(rows)
        return
    for name, opts in rows.items():
        doc = (models.registry._MODELS[name].__doc__ or "").strip().splitlines()[0]
        click.echo(f"{name:24s} {doc}")
        click.echo(" " * 25 + "options: " + ", ".join(f"{k}={v}" for k, v in opts.items()))

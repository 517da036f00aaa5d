"""`ganzip recipes`: list the training recipes; `ganzip recipes show NAME` prints one resolved."""
from __future__ import annotations

import click

from ..recipes import list_recipes, recipe_info, resolve_recipe, to_json, to_toml
from . import main


@main.group("recipes", invoke_without_command=True)
@click.pass_context
def recipes_cmd(ctx):
    """List the recipes `ganzip compress --recipe` accepts.

    A recipe is a TOML file of loss weights and training settings (see
    docs/recipes.md). The built-in presets ship inside the package (this
    list; `ganzip recipes show NAME > my.toml` copies one to edit); installed
    packages add more through the `ganzip.recipes` entry-point group.

    \b
    Examples:
      ganzip recipes
      ganzip recipes show crd
      ganzip recipes show crd-paired --set crd.weight=5 --format json
    """
    if ctx.invoked_subcommand is not None:
        return
    infos = [recipe_info(name) for name in list_recipes()]
    width = max(len(i["name"]) for i in infos)
    for info in infos:
        click.echo(f"{info['name'].ljust(width)}  {info['description']}")


@recipes_cmd.command("show")
@click.argument("name")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override one setting, repeatable (value parsed as a TOML value: 3, 2.5e-4, true, [\"a\"], text).")
@click.option("--format", "fmt", type=click.Choice(["toml", "json"]), default="toml", show_default=True)
def show_cmd(name, overrides, fmt):
    """Print recipe NAME (a name or a .toml path) fully resolved, with --set applied.

    \b
    Example:
      ganzip recipes show crd --set train.steps=2000 > my-crd.toml
      ganzip compress model.pth --arch resnet_9blocks --recipe my-crd.toml --data DIR
    """
    cfg = resolve_recipe(name, overrides)
    click.echo(to_toml(cfg) if fmt == "toml" else to_json(cfg), nl=False)

"""Options shared by several commands, declared once."""
from __future__ import annotations

import functools
import json

import click

from ..devices import DEVICE_CHOICES

ARCH_HELP = ("Architecture of a state-dict file: a zoo name (see `ganzip models`), "
             "package.module:callable for your own class or factory, or auto to recognise it with spandrel "
             "(pip install 'ganzip[spandrel]'; also tried when --arch is left out).")


def model_options(fn):
    """--arch, --arch-opt, --trust-pickle."""
    @click.option("--arch", default=None, metavar="NAME|MODULE:CALLABLE|auto", help=ARCH_HELP)
    @click.option("--arch-opt", "arch_opts", multiple=True, metavar="KEY=VALUE",
                  help="Architecture option, repeatable (e.g. --arch-opt ngf=64 --arch-opt norm=batch).")
    @click.option("--trust-pickle", is_flag=True,
                  help="Allow checkpoints that pickle whole Python objects. Unpickling can run code: only for files you trust.")
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


def device_option(fn):
    return click.option("--device", default="auto", show_default=True, metavar="|".join(DEVICE_CHOICES),
                        help="Where to run: auto picks CUDA when present, else the CPU.")(fn)


def echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))

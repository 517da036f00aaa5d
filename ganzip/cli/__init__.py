"""The `ganzip` command line: a thin layer over the library.

Each command lives in its own module under `ganzip.cli` and registers itself
on `main`. Errors the user can fix (`GanzipError`) print one line and exit 2;
`--debug` (anywhere on the command line) shows the traceback instead.
"""
from __future__ import annotations

import importlib
import os
import sys

import click

from ..errors import CLI_WORDING, GanzipError, Terminated, describe_unexpected

# Modules that define commands. Each one does `@main.command(...)`.
COMMAND_MODULES = (
    "profile",
    "models",
    "recipes",
    "compress",
    "data",
    "export",
    "batch",
    "eval",
    "fid",
    "assets",
    "train",
    "demo",
)


class _Group(click.Group):
    def invoke(self, ctx):
        debug = ctx.obj.get("debug", False) if isinstance(ctx.obj, dict) else False
        wording = CLI_WORDING.set(True)  # messages name this command line's flags
        try:
            return super().invoke(ctx)
        except GanzipError as exc:
            if debug:
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except Terminated:
            if debug:
                raise
            click.echo("terminated (SIGTERM): run the same command again to resume", err=True)
            ctx.exit(143)
        except KeyboardInterrupt:
            if debug:
                raise
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - anything a user's model or data causes: one line, exit 2
            if debug:
                raise
            click.echo(f"error: {describe_unexpected(exc)}", err=True)
            ctx.exit(2)
        finally:
            CLI_WORDING.reset(wording)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="ganzip")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors (also accepted after the command).")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Compress pretrained image-translation GAN generators.

    \b
    Typical flow:
      ganzip profile --arch resnet_9blocks --width 0.25     # what a student costs
      ganzip compress model.pth --arch resnet_9blocks --width 0.25 --data DIR
      ganzip eval OUT/student.safetensors --teacher model.pth --arch resnet_9blocks --data DIR
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = ctx.obj.get("debug", False) or debug


def _load_commands() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}")


def _on_sigterm_stop_like_ctrl_c() -> None:
    """SIGTERM raises `Terminated` (a KeyboardInterrupt), so runs stop at a safe point and resume later."""
    import signal

    def handler(signum, frame):
        raise Terminated()

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        pass


def run(argv: list[str] | None = None) -> None:
    """Console-script entry point. Accepts `--debug` anywhere on the line."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("GANZIP_DEBUG") == "1"
    args = [a for a in args if a != "--debug"]
    _on_sigterm_stop_like_ctrl_c()
    _load_commands()
    main.main(args=args, prog_name="ganzip", obj={"debug": debug})


_load_commands()

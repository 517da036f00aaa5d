"""Errors that reach the user as one clear line (exit code 2)."""
from __future__ import annotations

import contextlib
import contextvars
import functools
import re
from typing import Callable, Iterator, TypeVar

F = TypeVar("F", bound=Callable)


# Set by the command line for the duration of a command: messages then name its flags
# (--arch); otherwise they name the Python keywords (arch=).
CLI_WORDING: contextvars.ContextVar[bool] = contextvars.ContextVar("ganzip_cli_wording", default=False)

_BOOL_FLAGS = {"trust-code", "trust-pickle", "overwrite", "offline", "allow-missing", "dynamic", "debug"}
_FLAG = re.compile(r"--([a-z][a-z0-9-]*)(?:[ =](?![-(])([^\s,;)]+?))?(?=[\s,;)]|:\s|:$|\.\s|\.$|$)")
_ARCH_OPTS = re.compile(r"--arch-opt ([A-Za-z_]\w*)=(\S+?)(?=[\s,;)]|$)((?: --arch-opt [A-Za-z_]\w*=\S+?(?=[\s,;)]|$))*)")


_PROSE = {"must", "is", "are", "was", "to", "and", "or", "with", "for", "instead", "only", "needs", "need", "takes",
          "as", "a", "an", "the", "of", "in", "on", "at", "that", "which", "when", "if", "not", "again", "first",
          "then", "than", "from", "by", "be", "has", "have", "so", "it", "its", "this", "these", "also", "too"}


def _bare(name: str) -> str:
    """A flag named without a value, as its keyword: --trust-code -> trust_code=True, --size -> size."""
    if name in _BOOL_FLAGS:
        return f"{name.replace('-', '_')}=True"
    if name.startswith("no-"):
        return f"{name[3:].replace('-', '_')}=False"
    return name.replace("-", "_")


def _py_value(text: str) -> str:
    try:
        float(text)
        return text
    except ValueError:
        return {"true": "True", "false": "False"}.get(text.lower(), repr(text.strip("'\"")))


def python_wording(message: str) -> str:
    """'pass --arch x:Y --arch-opt ngf=4' -> 'pass arch='x:Y' arch_opts={'ngf': 4}', for library callers."""
    def opts(m: re.Match) -> str:
        pairs = [(m.group(1), m.group(2))] + re.findall(r"--arch-opt ([A-Za-z_]\w*)=(\S+)", m.group(3) or "")
        return "arch_opts={" + ", ".join(f"{k!r}: {_py_value(v)}" for k, v in pairs) + "}"

    def flag(m: re.Match) -> str:
        name, value = m.group(1), m.group(2)
        if value and value.lower() in _PROSE:  # "--seeds must be ...": a sentence goes on, not a value
            return _bare(name) + m.group(0)[len("--" + name):]
        if name == "set" and value:
            return f"overrides=[{value!r}]"
        if name in _BOOL_FLAGS:
            return f"{name.replace('-', '_')}=True" + (f" {value}" if value else "")
        if name.startswith("no-"):
            return f"{name[3:].replace('-', '_')}=False" + (f" {value}" if value else "")
        key = name.replace("-", "_")
        return f"{key}={_py_value(value)}" if value else _bare(name)

    return _FLAG.sub(flag, _ARCH_OPTS.sub(opts, message))


class GanzipError(Exception):
    """Bad input or an unusable environment: the message says what to do.

    The CLI prints it as one line and exits with code 2; `--debug` shows the
    traceback as well. Library callers catch it like any exception; outside
    the CLI the message names Python keywords (``arch=``) instead of flags.
    """

    exit_code = 2

    def __init__(self, *args):
        if args and isinstance(args[0], str) and not CLI_WORDING.get():
            args = (python_wording(args[0]),) + args[1:]
        super().__init__(*args)


class AssetMissingError(GanzipError):
    """A pretrained file (Inception, VGG-16, AlexNet) is not available locally."""


class NonFiniteLossError(GanzipError):
    """A loss term became NaN or inf during training."""


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM (a cluster's scancel, `kill`): stop like Ctrl-C, resumably."""


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Label any exception raised inside with the stage of the work (the innermost label wins).

    The CLI turns an unexpected exception into one line that names this stage.
    """
    try:
        yield
    except BaseException as exc:
        if not hasattr(exc, "ganzip_stage"):
            with contextlib.suppress(AttributeError, TypeError):
                exc.ganzip_stage = name
        raise


def in_stage(name: str) -> Callable[[F], F]:
    """Decorator form of `stage`."""
    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with stage(name):
                return fn(*args, **kwargs)
        return wrapper  # type: ignore[return-value]
    return deco


def describe_unexpected(exc: BaseException) -> str:
    """One line for an exception that is not a GanzipError: the stage, what happened, what to try."""
    where = getattr(exc, "ganzip_stage", None) or "running the command"
    text = " ".join(str(exc).split())
    if len(text) > 240:
        text = text[:237] + "..."
    if isinstance(exc, MemoryError) or "out of memory" in text.lower():
        return (f"out of memory while {where}: try a smaller --size, --batch-size or --width, "
                "or a machine with more memory")
    if isinstance(exc, RecursionError):
        return f"the input is nested too deeply while {where}: check the file"
    return (f"failed while {where}: {type(exc).__name__}: {text or '(no message)'}; "
            "check the model and its options, and run again with --debug for the traceback")

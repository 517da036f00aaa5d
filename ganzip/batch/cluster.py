"""What the Ray and SLURM launchers (`ganzip.launchers`) share: loading, shared paths, the SLURM flags' grammar."""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Callable, Sequence

from ..errors import GanzipError
from .manifest import load_manifest
from .runner import JobOutcome
from .schema import Manifest


def say_or_silent(echo: Callable[[str], None] | None) -> Callable[[str], None]:
    return echo or (lambda _line: None)


def load(manifest, out) -> tuple[Manifest, Path]:
    """A manifest (a path or a `Manifest`) and the output folder its jobs write into."""
    m = manifest if isinstance(manifest, Manifest) else load_manifest(manifest, out)
    root = Path(out).resolve() if out is not None else m.out
    return m, root


def shared_paths(m: Manifest, root: Path, jobs: Sequence[JobOutcome]) -> list[str]:
    """What every node must see: the manifest, OUT, and each job's teacher, data, target and .toml recipe."""
    paths = {str(m.path.resolve()), str(root)}
    for oc in jobs:
        j = oc.job
        paths.add(str(j.model))
        for p in (j.data, j.target, j.recipe if str(j.recipe).endswith(".toml") else None):
            if p is not None and os.sep in str(p):
                paths.add(str(p))
    return sorted(paths)


def missing(paths: Sequence[str]) -> list[str]:
    """Of `paths`, those this machine cannot see (runs on the cluster's nodes)."""
    return [p for p in paths if not os.path.exists(p)]


_TIME_RE = re.compile(r"^(?:(?P<days>\d+)-)?(?P<a>\d+)(?::(?P<b>\d+))?(?::(?P<c>\d+))?$")


def parse_time(text: str) -> int:
    """A SLURM time limit in minutes (rounded up), from SLURM's forms.

    HH:MM:SS, MM:SS, MM, D-HH, D-HH:MM, D-HH:MM:SS.

    >>> parse_time("01:30:00"), parse_time("90"), parse_time("2-00:00:30")
    (90, 90, 2881)
    """
    m = _TIME_RE.match(str(text).strip())
    if m is None:
        raise GanzipError(f"--time {text!r} is not a SLURM time: use HH:MM:SS (e.g. 04:00:00), MM, or D-HH:MM:SS")
    a, b, c = (int(m[k]) if m[k] is not None else None for k in ("a", "b", "c"))
    if m["days"] is not None:
        hours, minutes, seconds = a, b or 0, c or 0
        days = int(m["days"])
    elif c is not None:
        days, hours, minutes, seconds = 0, a, b, c
    else:
        days, hours, minutes, seconds = 0, 0, a, b or 0
    if (m["days"] is not None or c is not None) and minutes >= 60 or seconds >= 60 or (m["days"] and hours >= 24):
        raise GanzipError(f"--time {text!r}: minutes and seconds must be below 60 (hours below 24 after days-)")
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise GanzipError(f"--time {text!r} must be longer than zero")
    return math.ceil(total / 60)


def parse_slurm_opts(items: Sequence[str]) -> dict[str, str]:
    """["mem=32G", "account=vision"] -> {"mem": "32G", "account": "vision"} (sbatch long options)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        key = key.strip().lstrip("-")
        if not sep or not re.match(r"^[a-z][a-z0-9-]*$", key):
            raise GanzipError(f"--slurm-opt {item!r}: give KEY=VALUE with an sbatch long option, e.g. mem=32G")
        out[key] = value.strip()
    return out


def check_flags(launcher, gpus, address, gpus_per_job, cpus_per_job, partition, time_limit, array_parallelism,
                slurm_opts, wait, show_status) -> None:
    """`ganzip batch`'s cluster flags belong to their launcher; say so instead of ignoring one."""
    if launcher in ("ray", "slurm") and gpus:
        raise GanzipError(f"--gpus pins local GPUs; with --launcher {launcher} give --gpus-per-job instead")
    if address and launcher != "ray":
        raise GanzipError("--address is for --launcher ray")
    slurm_only = {"--partition": partition, "--time": time_limit, "--array-parallelism": array_parallelism,
                  "--slurm-opt": slurm_opts or None}
    for flag, value in slurm_only.items():
        if value is not None and launcher != "slurm":
            raise GanzipError(f"{flag} is for --launcher slurm")
    if (gpus_per_job or cpus_per_job) and launcher not in ("ray", "slurm"):
        raise GanzipError("--gpus-per-job and --cpus-per-job are for --launcher ray or slurm")
    if wait and launcher not in ("auto", "slurm"):
        raise GanzipError("--wait follows a SLURM submission: use it alone or with --launcher slurm")
    if show_status and wait:
        raise GanzipError("give --status or --wait, not both")
    if time_limit is not None:
        parse_time(time_limit)
    parse_slurm_opts(slurm_opts)


__all__ = ["check_flags", "load", "missing", "parse_slurm_opts", "parse_time", "say_or_silent", "shared_paths"]

"""Run many compress jobs from one TOML manifest and rank them in a leaderboard.

The package, by stage:

* `schema`: the manifest's keys, the `Job` and `Manifest` they become;
* `locate`: where a key was written, for ``file:line`` errors;
* `manifest`: `load_manifest`, each entry checked and expanded into jobs (widths x seeds);
* `files`: the batch's own files in a job's folder (done.json, error.txt, compress.log);
* `worker`: one job through `ganzip.engine.compress`, its outcome recorded as data;
* `runner`: `run_batch`, the local launchers (in-process, worker processes, torchrun);
* `cluster`: what the Ray and SLURM launchers (`ganzip.launchers`) share;
* `leaderboard`: rows measured from the files on disk, written as md, csv and json.

Every name below stays importable from ``ganzip.batch``.
"""
from __future__ import annotations

from .files import BATCH_FILES, DONE_MARKER, ERROR_FILE, LOG_FILE, record_finished
from .leaderboard import (LEADERBOARD_FILES, leaderboard_columns, leaderboard_rows, mean_std, seed_groups,
                          write_leaderboard)
from .locate import TomlLocator
from .manifest import load_manifest, overrides_from
from .runner import (LAUNCHERS, BatchResult, JobOutcome, apply_outcome, finish_batch, parse_gpus, plan_jobs,
                     plan_workers, run_batch)
from .schema import Job, Manifest, width_label

__all__ = [
    "BATCH_FILES", "BatchResult", "DONE_MARKER", "ERROR_FILE", "Job", "JobOutcome", "LAUNCHERS", "LEADERBOARD_FILES",
    "LOG_FILE", "Manifest", "TomlLocator", "apply_outcome", "finish_batch", "leaderboard_columns", "leaderboard_rows",
    "load_manifest", "mean_std", "overrides_from", "parse_gpus", "plan_jobs", "plan_workers", "record_finished",
    "run_batch", "seed_groups", "width_label", "write_leaderboard",
]

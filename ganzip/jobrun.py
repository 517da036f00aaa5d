"""The batch worker's entry point: ``python -m ganzip.jobrun OUT/_batch/<job>/job.json``.

The job (a `ganzip.batch.Job` as JSON) runs through `ganzip.engine.compress`
and its outcome is recorded as data; see `ganzip.batch.worker`, which holds
the code (and whose names stay importable from here).
"""
from __future__ import annotations

import sys

from .batch.worker import (BATCH_DIR, JOB_FILE, OUTCOME_FILE, WORKER_LOG, attempt, failure, interrupted,
                           job_from_dict, job_to_dict, launch, read_outcome, run_job_file, state_dir, worker_argv,
                           write_job_file)
from .errors import CLI_WORDING


def main(argv: list[str] | None = None) -> int:
    """Run one job file; exit 0 when it finished, 1 when it failed (the outcome file says why)."""
    CLI_WORDING.set(True)  # a job's errors read like the batch command's, whatever runs it
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m ganzip.jobrun OUT/_batch/<job>/job.json", file=sys.stderr)
        return 2
    outcome = run_job_file(args[0])
    if outcome["status"] != "finished":
        print(f"error: {outcome['error']['line']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["BATCH_DIR", "JOB_FILE", "OUTCOME_FILE", "WORKER_LOG", "attempt", "failure", "interrupted",
           "job_from_dict", "job_to_dict", "launch", "main", "read_outcome", "run_job_file", "state_dir",
           "worker_argv", "write_job_file"]

"""`ganzip batch`: run a manifest of compress jobs and write a leaderboard."""
from __future__ import annotations

import click

from . import main
from .common import echo_json


@main.command("batch")
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Output folder (default: the manifest's `out`, else MANIFEST-runs beside it).")
@click.option("--gpus", default=None, metavar="0,1,...",
              help="Spread jobs over these GPUs: one worker process per GPU (or per --nproc-per-node group), "
                   "pinned with CUDA_VISIBLE_DEVICES.")
@click.option("--launcher", type=click.Choice(["auto", "inprocess", "subprocess", "torchrun"]), default="auto",
              show_default=True,
              help="How each job runs: in this process, as `python -m ganzip compress`, or under "
                   "`torchrun --nproc-per-node N`. auto: inprocess, or subprocess with --gpus.")
@click.option("--nproc-per-node", type=int, default=1, show_default=True, help="Processes per job with --launcher torchrun.")
@click.option("--latency-repeats", type=int, default=5, show_default=True,
              help="Timed forward passes per model for the leaderboard (0: no latency).")
@click.option("--latency-device", default="cpu", show_default=True, metavar="cpu|cuda|auto",
              help="Where the leaderboard's latencies are measured.")
@click.option("--dry-run", is_flag=True, help="Check the manifest and list the jobs (and their commands) without running them.")
@click.option("--progress", is_flag=True, help="Show the jobs' progress bars (in-process runs).")
@click.option("--json", "as_json", is_flag=True, help="Print the leaderboard rows as JSON.")
@click.option("--trust-code", is_flag=True,
              help="Allow jobs whose arch is package.module:callable: the manifest then names code that ganzip "
                   "imports and runs. Only for manifests you trust (docs/security.md).")
def batch_cmd(manifest, out, gpus, launcher, nproc_per_node, latency_repeats, latency_device, dry_run, progress,
              as_json, trust_code):
    """Run every job of MANIFEST (TOML) and rank them in a leaderboard.

    Each [[job]] names a teacher (zoo --arch plus weights, package.module:callable
    plus weights, a ganzip generator file; a TorchScript file loads but cannot
    be width-scaled, so its job fails with that reason), its data, one or
    several widths, a recipe and --set overrides; [defaults] applies to all jobs. Relative paths
    are relative to the manifest. Jobs run in order into OUT/<job name>;
    finished jobs are skipped when the batch runs again, interrupted ones
    resume from their checkpoint, and a failing job is recorded (error line
    in the leaderboard, details in OUT/<job>/error.txt) without stopping the
    others. OUT/leaderboard.md, .csv and .json compare teacher and student
    MACs, parameters, latency and metrics. The exit code is 1 when a job
    failed. See docs/batch.md.

    \b
    Examples:
      ganzip batch docs/examples/manifest.toml --dry-run
      ganzip batch experiments.toml --out runs
      ganzip batch experiments.toml --gpus 0,1,2,3
      ganzip batch experiments.toml --launcher torchrun --nproc-per-node 2 --gpus 0,1,2,3
    """
    from ..batch import job_argv, load_manifest, parse_gpus, plan_workers, run_batch

    m = load_manifest(manifest, out, trust_code=trust_code)
    if dry_run:
        gpu_list = parse_gpus(gpus)
        mode = launcher if launcher != "auto" else ("subprocess" if gpu_list else "inprocess")
        workers = plan_workers(gpu_list, nproc_per_node if mode == "torchrun" else 1)
        click.echo(f"{len(m.jobs)} job(s) from {m.path} into {m.out}; "
                   f"{len(workers)} worker(s){' pinned to ' + ' | '.join(w['CUDA_VISIBLE_DEVICES'] for w in workers) if gpu_list else ''}")
        for job in m.jobs:
            folder = m.out / job.name
            if mode == "inprocess":
                command = "ganzip compress " + " ".join(_quote(a) for a in job.compress_args(folder))
            else:
                command = " ".join(_quote(a) for a in job_argv(job, folder, mode, nproc_per_node))
            click.echo(f"- {job.name} (line {job.line}): {command}")
            if job.arch and ":" in job.arch:
                click.echo(f"  warning: runs code from {job.arch} (allowed by --trust-code)")
        return
    result = run_batch(m, out, gpus=gpus, launcher=launcher, nproc_per_node=nproc_per_node,
                       latency=latency_repeats > 0, latency_repeats=latency_repeats, latency_device=latency_device,
                       quiet=not progress, echo=lambda line: click.echo(line, err=True), trust_code=trust_code)
    if as_json:
        echo_json([oc.row for oc in result.jobs])
    else:
        click.echo(result.leaderboard["md"].read_text().rstrip())
        click.echo("")
        click.echo(f"leaderboard: {result.leaderboard['md']} (.csv, .json beside it)")
    if result.failed:
        click.echo(f"{len(result.failed)} job(s) failed; details in OUT/<job>/error.txt", err=True)
        raise SystemExit(1)


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(str(arg))

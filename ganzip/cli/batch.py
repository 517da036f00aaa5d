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
@click.option("--launcher", type=click.Choice(["auto", "inprocess", "subprocess", "torchrun", "ray", "slurm"]),
              default="auto", show_default=True,
              help="How each job runs: in this process, in a worker process (`python -m ganzip.jobrun`), "
                   "under `torchrun --nproc-per-node N`, as a Ray task, or as a task of a SLURM job array. "
                   "auto: inprocess, or subprocess with --gpus.")
@click.option("--nproc-per-node", type=int, default=1, show_default=True, help="Processes per job with --launcher torchrun.")
@click.option("--address", default=None, metavar="auto|HOST:PORT|ray://HOST:PORT",
              help="Ray: an existing cluster (default: start a local one).")
@click.option("--gpus-per-job", type=int, default=0, show_default=True,
              help="Ray/SLURM: GPUs each job asks for; above 1 the job runs under torchrun, one process per GPU.")
@click.option("--cpus-per-job", type=int, default=None, help="Ray/SLURM: CPUs each job asks for (Ray default: 1).")
@click.option("--partition", default=None, help="SLURM: the partition (default: the cluster's default).")
@click.option("--time", "time_limit", default=None, metavar="HH:MM:SS",
              help="SLURM: each job's time limit (also MM or D-HH:MM:SS). A job stopped at its limit resumes on "
                   "the next run.")
@click.option("--array-parallelism", type=int, default=None, help="SLURM: at most this many jobs of the array at once.")
@click.option("--slurm-opt", "slurm_opts", multiple=True, metavar="KEY=VALUE",
              help="SLURM: any other sbatch option, repeatable (e.g. --slurm-opt mem=32G --slurm-opt account=vision).")
@click.option("--status", "show_status", is_flag=True,
              help="Print each job's state (from OUT, and SLURM's queue for a submitted array) and exit.")
@click.option("--wait", "wait", is_flag=True,
              help="SLURM: wait until the submitted array has ended, then write and print the leaderboard "
                   "(with --launcher slurm: submit, then wait).")
@click.option("--latency-repeats", type=int, default=5, show_default=True,
              help="Timed forward passes per model for the leaderboard (0: no latency).")
@click.option("--latency-device", default="cpu", show_default=True, metavar="cpu|cuda|auto",
              help="Where the leaderboard's latencies are measured.")
@click.option("--dry-run", is_flag=True, help="Check the manifest and list the jobs (the compress call or worker command of each) without running them.")
@click.option("--progress", is_flag=True, help="Show the jobs' progress bars (in-process runs).")
@click.option("--json", "as_json", is_flag=True, help="Print the leaderboard rows as JSON.")
@click.option("--trust-code", is_flag=True,
              help="Allow jobs whose arch is package.module:callable: the manifest then names code that ganzip "
                   "imports and runs. Only for manifests you trust (docs/security.md).")
def batch_cmd(manifest, out, gpus, launcher, nproc_per_node, address, gpus_per_job, cpus_per_job, partition,
              time_limit, array_parallelism, slurm_opts, show_status, wait, latency_repeats, latency_device, dry_run,
              progress, as_json, trust_code):
    """Run every job of MANIFEST (TOML) and compare them in a leaderboard (one row per job, in manifest order).

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
      ganzip batch experiments.toml --launcher ray --address auto --gpus-per-job 1
      ganzip batch experiments.toml --launcher slurm --partition gpu --time 04:00:00 --gpus-per-job 1
      ganzip batch experiments.toml --status
      ganzip batch experiments.toml --wait
    """
    from ..batch import load_manifest, run_batch
    from ..batch.cluster import check_flags
    from ..batch.runner import dry_run_lines
    from ..launchers import job_statuses, run_on_ray, submit_slurm, wait_slurm

    check_flags(launcher, gpus, address, gpus_per_job, cpus_per_job, partition, time_limit, array_parallelism,
                slurm_opts, wait, show_status)
    m = load_manifest(manifest, out, trust_code=trust_code)
    say = lambda line: click.echo(line, err=True)  # noqa: E731
    if show_status:
        _print_status(job_statuses(m, out))
        return
    if dry_run and not wait:
        for line in dry_run_lines(m, launcher, gpus=gpus, nproc_per_node=nproc_per_node, gpus_per_job=gpus_per_job):
            click.echo(line)
        return
    if launcher == "ray":
        result = run_on_ray(m, out, address=address, gpus_per_job=gpus_per_job, cpus_per_job=cpus_per_job or 1,
                            latency=latency_repeats > 0, latency_repeats=latency_repeats,
                            latency_device=latency_device, echo=say)
        _print_result(result, as_json)
        return
    if launcher == "slurm" or wait:
        if launcher == "slurm":
            sub = submit_slurm(m, out, partition=partition, time_limit=time_limit, gpus_per_job=gpus_per_job,
                               cpus_per_job=cpus_per_job, array_parallelism=array_parallelism,
                               slurm_opts=slurm_opts, echo=say)
            if not wait:
                click.echo(f"submitted {len(sub.job_ids)} job(s)" + (f" as SLURM array {sub.array_id}" if sub.array_id else "")
                           + f"; follow them with: ganzip batch {m.path} --status (or --wait for the leaderboard)")
                return
        result = wait_slurm(m, out, latency=latency_repeats > 0, latency_repeats=latency_repeats,
                            latency_device=latency_device, echo=say)
        _print_result(result, as_json)
        return
    result = run_batch(m, out, gpus=gpus, launcher=launcher, nproc_per_node=nproc_per_node,
                       latency=latency_repeats > 0, latency_repeats=latency_repeats, latency_device=latency_device,
                       quiet=not progress, echo=say, trust_code=trust_code)
    _print_result(result, as_json)


def _print_status(statuses) -> None:
    width = max(len(st.outcome.job.name) for st in statuses)
    counts: dict[str, int] = {}
    for st in statuses:
        oc = st.outcome
        counts[oc.status] = counts.get(oc.status, 0) + 1
        slurm = f" [SLURM {st.slurm_id}{' ' + st.queue_state if st.queue_state else ''}]" if st.slurm_id else ""
        detail = oc.error if oc.error else (st.last_line if oc.status in ("running", "started") else "")
        click.echo(f"{oc.job.name:<{width}}  {oc.status:<11}{slurm}" + (f"  {detail}" if detail else ""))
    click.echo(", ".join(f"{n} {s}" for s, n in sorted(counts.items())), err=True)


def _print_result(result, as_json: bool) -> None:
    if as_json:
        echo_json([oc.row for oc in result.jobs])
    else:
        click.echo(result.leaderboard["md"].read_text().rstrip())
        click.echo("")
        click.echo(f"leaderboard: {result.leaderboard['md']} (.csv, .json beside it)")
    stopped = result.count("interrupted")
    if stopped:
        click.echo(f"{stopped} job(s) interrupted by the cluster; run the batch again to resume them", err=True)
    if result.failed:
        click.echo(f"{len(result.failed)} job(s) failed; details in OUT/<job>/error.txt", err=True)
    if result.failed or stopped:
        raise SystemExit(1)


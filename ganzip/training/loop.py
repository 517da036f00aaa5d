"""The training loop: iterate, step, sync, check for NaN, log, evaluate on the hold-out, checkpoint.

:func:`train` runs the optimisation (Adam, constant then linearly decayed
learning rate), checkpoints atomically, resumes, averages gradients across
ranks under torchrun, evaluates fidelity to the teacher on a held-out split
and keeps the best student. On the CPU, with deterministic algorithms, a run
interrupted and resumed ends with the same student as an uninterrupted one.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn

from .. import distributed as ddp
from ..config import RecipeConfig
from ..errors import GanzipError, NonFiniteLossError, in_stage
from ..features import FeatureTaps
from ..progress import progress_bar
from . import state as st
from . import trainlog
from .batches import BatchOrder, Loader, target_batch
from .holdout import HoldoutEval, Selection, resolve_selection
from .options import DataBundle, RunOptions
from .outdir import CHECKPOINT_DIR, TRAIN_LOG, fingerprint_diff
from .plan import LossPlan
from .step import TermModules, autocast, deterministic, discriminator_terms, flag, student_terms
from .taps import feature_terms, print_taps, run_taps


@dataclass
class TrainResult:
    """What :func:`train` hands back."""

    student: nn.Module = field(repr=False)  # with the best weights (the last ones when no evaluation ran)
    last_state: dict[str, torch.Tensor] = field(repr=False)
    steps: int
    total_steps: int
    best_step: int | None
    best_metrics: dict[str, float]
    last_metrics: dict[str, float]
    resumed_from: int | None
    plan: LossPlan
    log: list[dict] = field(repr=False)
    seconds: float = 0.0
    step_seconds: list[float] = field(default_factory=list, repr=False)  # per optimisation step, this process
    assets: list[dict] = field(default_factory=list)  # pretrained files the losses used (path, sha256)
    selection: dict | None = None  # Selection.describe() of the metric that picked the student; None: no hold-out
    taps: list[dict] = field(default_factory=list)  # the feature taps (layer, teacher/student shapes); [] unused


@dataclass
class _Progress:
    """What a run has reached: the part of the state that is not in a model or an optimizer."""

    start: int = 0
    best_step: int | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    best_state: dict[str, torch.Tensor] | None = None
    last_metrics: dict[str, float] = field(default_factory=dict)
    log_rows: list[dict] = field(default_factory=list)
    resumed_from: int | None = None


@in_stage("training")
def train(
    teacher: nn.Module,
    student: nn.Module,
    discriminator: nn.Module | None,
    data: DataBundle,
    cfg: RecipeConfig,
    opts: RunOptions,
    plan: LossPlan,
    *,
    env: ddp.DistEnv | None = None,
    run_info: Mapping | None = None,
) -> TrainResult:
    """Distil ``teacher`` into ``student`` following ``cfg``; return the best student.

    Resumes from ``opts.out/checkpoint`` when it exists and
    ``run_info["fingerprint"]`` matches (``compress`` decides). Raises
    :class:`NonFiniteLossError` when a loss term becomes NaN/inf (the last
    good checkpoint stays in place).
    """
    env = env or ddp.DistEnv()
    device = opts.device
    t = cfg.train
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    if deterministic(t.deterministic, device):
        if device.type == "cuda":  # cuBLAS needs this to be reproducible (read when it initialises)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed image size: let cuDNN pick its fastest kernels
    try:
        return _Run(teacher, student, discriminator, data, cfg, opts, plan, env, dict(run_info or {})).run()
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.backends.cudnn.benchmark = prev_bench


class _Run:
    """One call of :func:`train`: the models, optimizers and progress, and the steps that move them."""

    def __init__(self, teacher, student, discriminator, data: DataBundle, cfg: RecipeConfig, opts: RunOptions,
                 plan: LossPlan, env: ddp.DistEnv, run_info: dict):
        self.started = time.perf_counter()
        self.data, self.cfg, self.opts, self.plan, self.env = data, cfg, opts, plan, env
        self.device = device = opts.device
        self.out = Path(opts.out)
        self.ckpt_dir = self.out / CHECKPOINT_DIR
        self.fingerprint = run_info.get("fingerprint")
        self.mode = run_info.get("mode")
        t = cfg.train
        self.channels_last = flag(t.channels_last, device)
        self.mem = torch.channels_last if self.channels_last else torch.contiguous_format
        # [] (and no hook at all) unless a term reads features; compress() resolves them before its plan block
        self.taps = run_info["taps"] if "taps" in run_info else run_taps(cfg, plan, teacher, student)
        self.losses = TermModules(cfg, plan, opts.offline, out_side=data.out_side, device=device,
                                  taps=self.taps).to(device)
        self._place_models(teacher, student, discriminator)
        self.feature_taps = FeatureTaps(self.teacher, self.student, self.taps) if self.taps else None
        self.order = BatchOrder(len(data.train), t.batch_size, t.seed, env)
        self.total = cfg.total_steps(self.order.steps_per_epoch)
        self.stop_at = self.total if opts.max_steps is None else min(self.total, opts.max_steps)
        self._make_optimizers()
        self.holdout = None
        self.selection: Selection | None = None
        if data.holdout is not None and len(data.holdout) > 0:
            self.selection = resolve_selection(cfg, min(len(data.holdout), cfg.eval.max_images), opts.offline)
            self.holdout = HoldoutEval(data.holdout, self.teacher, device, cfg.eval.max_images,
                                       channels_last=self.channels_last, selection=self.selection)
        self.progress = _Progress()
        self.amp = lambda: autocast(device, t.amp)
        self.step_seconds: list[float] = []  # wall time of each optimisation step (data loading excluded)

    def _place_models(self, teacher, student, discriminator) -> None:
        device, mem = self.device, self.mem
        self.teacher = teacher.to(device).eval()  # only ever run under no_grad; its parameters are left as they are
        self.student = student.to(device).train()
        for p in self.student.parameters():  # a student copied from a frozen teacher starts frozen too
            p.requires_grad_(True)
        if self.channels_last:
            self.teacher = self.teacher.to(memory_format=mem)
            self.student = self.student.to(memory_format=mem)
        D = discriminator if self.plan.use_discriminator else None
        if D is not None:
            D = D.to(device).train()
            if self.channels_last:
                D = D.to(memory_format=mem)
        self.D = D

    def _make_optimizers(self) -> None:
        t = self.cfg.train
        betas = (t.beta1, t.beta2)
        self.term_params = self.losses.trainable()
        params = list(self.student.parameters())
        if self.term_params:  # terms that learn (1x1 maps of a feature term): a second group of the student's Adam
            params = [{"params": params}, {"params": [p for ps in self.term_params.values() for p in ps]}]
        self.opt_s = torch.optim.Adam(params, lr=t.lr, betas=betas)
        self.sched_s = torch.optim.lr_scheduler.LambdaLR(self.opt_s, st.linear_decay(self.total, t.decay_start))
        self.opt_d = self.sched_d = None
        if self.D is not None:
            self.opt_d = torch.optim.Adam(self.D.parameters(), lr=self.cfg.discriminator.lr, betas=betas)
            self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, st.linear_decay(self.total, t.decay_start))

    def _learning_terms(self) -> list[tuple[str, nn.Module]]:
        return [(name, getattr(self.losses, name)) for name in self.term_params]

    # ---------------------------------------------------------------- start or resume

    def _begin(self) -> None:
        seed = self.cfg.train.seed
        if self.mode == "resume":
            self._resume()
            return
        st.seed_everything(seed + 1000003 * self.env.rank)
        ddp.broadcast_module(self.student, self.env)
        if self.D is not None:
            ddp.broadcast_module(self.D, self.env)
        for _, module in self._learning_terms():
            ddp.broadcast_module(module, self.env)

    def _read_checkpoint(self) -> tuple[dict, dict]:
        tensors, state = st.load_checkpoint(self.ckpt_dir)
        out, total = self.out, self.total
        if self.fingerprint is not None and state.get("fingerprint") != self.fingerprint:
            diff = fingerprint_diff(state.get("fingerprint") or {}, self.fingerprint)
            raise GanzipError(
                f"{out} holds a checkpoint of a different run ({diff}): pass --no-resume to start over, "
                "or choose another --out"
            )
        if state.get("total_steps") != total:
            raise GanzipError(
                f"{out} holds a checkpoint of a {state.get('total_steps')}-step run but this one has {total} steps: "
                "pass --no-resume to start over, or choose another --out"
            )
        step = state.get("step")
        if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= total or not isinstance(
                state.get("rng"), list):
            raise GanzipError(f"the checkpoint in {self.ckpt_dir} is damaged (step {str(step)[:20]} of {total}): "
                              "pass --no-resume to start over")
        return tensors, state

    def _resume(self) -> None:
        tensors, state = self._read_checkpoint()
        env, p = self.env, self.progress
        try:
            self.student.load_state_dict(st.sub(tensors, "student"))
            for name, module in self._learning_terms():
                module.load_state_dict(st.sub(tensors, f"terms.{name}"))
            self.opt_s.load_state_dict(st.unflatten_optimizer(tensors, state["optimizers"]["student"]))
            self.sched_s.load_state_dict(state["schedulers"]["student"])
            if self.D is not None:
                self.D.load_state_dict(st.sub(tensors, "discriminator"))
                self.opt_d.load_state_dict(st.unflatten_optimizer(tensors, state["optimizers"]["discriminator"]))
                self.sched_d.load_state_dict(state["schedulers"]["discriminator"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise GanzipError(f"the checkpoint in {self.ckpt_dir} is damaged ({exc.__class__.__name__}: "
                              f"{str(exc)[:80]}): pass --no-resume to start over") from None
        best = st.sub(tensors, "best")
        if best:
            p.best_state = {k: v.to(self.device) for k, v in best.items()}
            p.best_step = state["best"]["step"]
            p.best_metrics = state["best"]["metrics"]
        p.last_metrics = state.get("last_metrics", {})
        p.start = p.resumed_from = int(state["step"])
        rng = state["rng"]
        if len(rng) == env.world_size:
            st.restore_rng(st.sub(tensors, f"rng.{env.rank}"), rng[env.rank], self.device)
        else:  # a different number of processes: the data order is kept, the random streams are not
            st.seed_everything(self.cfg.train.seed + 1000003 * env.rank + p.start)
        if env.is_main:
            p.log_rows = trainlog.read_log(self.out / TRAIN_LOG, p.start)

    # ---------------------------------------------------------------- checkpoint

    def _checkpoint(self, step: int) -> None:
        env, p = self.env, self.progress
        rng_t, rng_m = st.capture_rng(self.device)
        all_rng = ddp.gather_objects(({k: v.cpu() for k, v in rng_t.items()}, rng_m), env)
        if env.is_main:
            tensors = st.prefixed(self.student.state_dict(), "student")
            ts, s_struct = st.flatten_optimizer(self.opt_s, "optim.student")
            tensors.update(ts)
            optimizers = {"student": s_struct}
            schedulers = {"student": st.sched_state(self.sched_s)}
            for name, module in self._learning_terms():
                tensors.update(st.prefixed(module.state_dict(), f"terms.{name}"))
            if self.D is not None:
                tensors.update(st.prefixed(self.D.state_dict(), "discriminator"))
                td, d_struct = st.flatten_optimizer(self.opt_d, "optim.discriminator")
                tensors.update(td)
                optimizers["discriminator"] = d_struct
                schedulers["discriminator"] = st.sched_state(self.sched_d)
            if p.best_state is not None:
                tensors.update(st.prefixed(p.best_state, "best"))
            for r, (rt, _) in enumerate(all_rng):
                tensors.update(st.prefixed(rt, f"rng.{r}"))
            state = {
                "format": st.CHECKPOINT_FORMAT, "step": step, "total_steps": self.total,
                "fingerprint": self.fingerprint, "optimizers": optimizers, "schedulers": schedulers,
                "rng": [m for _, m in all_rng], "best": {"step": p.best_step, "metrics": p.best_metrics},
                "last_metrics": p.last_metrics,
            }
            # The log first: a resume keeps the rows up to its checkpoint, so a log that runs
            # ahead is harmless, while one that lags would lose rows for good.
            trainlog.write_log(self.out / TRAIN_LOG, p.log_rows)
            st.save_checkpoint(self.ckpt_dir, tensors, state)
        ddp.barrier(env)

    # ---------------------------------------------------------------- one step

    def _batch(self, step: int, batch: Mapping) -> tuple[torch.Tensor, torch.Tensor | None]:
        data, device, mem = self.data, self.device, self.mem
        x = batch["A"].to(device, non_blocking=True).contiguous(memory_format=mem)
        real = None
        if data.targets is not None:
            real = target_batch(data.targets, step, x.shape[0], self.cfg.train.seed, self.env.rank).to(device)
        elif data.has_b and "B" in batch:
            real = batch["B"].to(device, non_blocking=True)
        if real is not None:
            real = real.contiguous(memory_format=mem)
        return x, real

    def _step(self, step: int, batch: Mapping) -> tuple[list[str], list[float], int, float]:
        """One optimisation step: (term names, their values averaged over ranks, how many are the student's, lr)."""
        env, D = self.env, self.D
        x, real = self._batch(step, batch)
        terms, s_out, t_out = student_terms(self.losses, self.plan, self.student, self.teacher, D, x, real, self.amp,
                                            self.feature_taps)
        loss_s = sum(terms.values())
        self.opt_s.zero_grad(set_to_none=True)
        loss_s.backward()
        d_terms: dict[str, torch.Tensor] = {}
        if D is not None:
            d_terms, loss_d = discriminator_terms(self.losses, self.plan, D, x, real, s_out, t_out, self.amp)
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()

        # ---- one sync: every term (averaged over ranks), checked before any weight moves
        names = list(terms) + list(d_terms)
        values = torch.stack([v.detach().float() for v in list(terms.values()) + list(d_terms.values())])
        values = ddp.all_reduce_mean(values, env).cpu().tolist()
        self._check_finite(names, values, step)
        lr_used = self.opt_s.param_groups[0]["lr"]
        ddp.average_gradients(self.student, env)
        for _, module in self._learning_terms():
            ddp.average_gradients(module, env)
        self.opt_s.step()
        self.sched_s.step()
        if D is not None:
            ddp.average_gradients(D, env)
            self.opt_d.step()
            self.sched_d.step()
        ddp.broadcast_module(self.student, env, buffers_only=True)
        if D is not None:
            ddp.broadcast_module(D, env, buffers_only=True)
        return names, values, len(terms), lr_used

    def _check_finite(self, names: list[str], values: list[float], step: int) -> None:
        bad = [n for n, v in zip(names, values) if not math.isfinite(v)]
        if bad:
            kept = st.last_checkpoint_step(self.ckpt_dir)
            where = (f"the last good checkpoint (step {kept}) is in {self.ckpt_dir}" if kept is not None
                     else "no checkpoint was written yet")
            raise NonFiniteLossError(
                f"loss term {bad[0]!r} became {values[names.index(bad[0])]} at step {step + 1}; training stopped "
                f"and {where}: lower the learning rate (--set train.lr=...) or the {bad[0]} weight, then run again"
            )

    # ---------------------------------------------------------------- log and hold-out

    def _log(self, step: int, scalars: dict, lr_used: float, tb) -> dict | None:
        done = step + 1
        if not self.env.is_main or not (done % max(1, self.opts.log_every) == 0 or done == self.stop_at):
            return None
        row = {"step": done, "epoch": step // self.order.steps_per_epoch, "lr": lr_used,
               "loss": scalars["loss"], **{k: v for k, v in scalars.items() if k != "loss"}}
        self.progress.log_rows.append(row)
        if tb is not None:
            for k, v in scalars.items():
                tb.add_scalar(f"train/{k}", v, done)
        return row

    def _evaluate(self, step: int, row: dict | None, tb) -> None:
        done, p = step + 1, self.progress
        metrics, _ = self.holdout(self.student)
        p.last_metrics = metrics
        if p.best_step is None or self.selection.better(metrics, p.best_metrics):
            p.best_step, p.best_metrics = done, metrics
            p.best_state = st.clone_state(self.student)
        if self.env.is_main:
            if row is None or row["step"] != done:
                row = {"step": done, "epoch": step // self.order.steps_per_epoch}
                p.log_rows.append(row)
            row.update(metrics)
            row.update({"select_metric": self.selection.column, "select_reason": self.selection.reason})
            if tb is not None:
                for k, v in metrics.items():
                    tb.add_scalar(f"holdout/{k}", v, done)

    def _tensorboard(self):
        if not (self.opts.tensorboard and self.env.is_main):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise GanzipError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        return SummaryWriter(log_dir=str(self.out / "tensorboard"), purge_step=self.progress.start + 1)

    # ---------------------------------------------------------------- the run

    def run(self) -> TrainResult:
        self._begin()
        tb = self._tensorboard()
        opts, env, p = self.opts, self.env, self.progress
        t = self.cfg.train
        bar = progress_bar(total=self.total, initial=p.start, disable=opts.quiet or not env.is_main,
                           file=sys.stderr, desc=f"compress {self.cfg.name}", unit="step")
        loader = Loader(self.data.train, self.order, opts.workers, t.seed + env.rank,
                        pin=self.device.type == "cuda")
        if self.feature_taps is not None:
            self.feature_taps.attach()
            if env.is_main and not opts.quiet:
                print_taps(self.taps, feature_terms(self.plan))
        try:
            for step, batch in loader.iterate(p.start, self.stop_at):
                step_started = time.perf_counter()
                names, values, n_student, lr_used = self._step(step, batch)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                self.step_seconds.append(time.perf_counter() - step_started)
                done = step + 1
                scalars = dict(zip(names, values))
                scalars["loss"] = float(sum(values[:n_student]))
                row = self._log(step, scalars, lr_used, tb)
                if env.is_main and not opts.quiet:
                    bar.set_postfix({k: f"{v:.3g}" for k, v in scalars.items()}, refresh=False)
                bar.update(1)
                if self.holdout is not None and ((opts.eval_every > 0 and done % opts.eval_every == 0)
                                                 or done == self.total):
                    self._evaluate(step, row, tb)
                if (opts.checkpoint_every > 0 and done % opts.checkpoint_every == 0) or done == self.stop_at:
                    self._checkpoint(done)
        finally:
            bar.close()
            if tb is not None:
                tb.close()
            if self.feature_taps is not None:  # the student leaves without hooks (saved, evaluated, exported)
                self.feature_taps.remove()
        return self._result()

    def _result(self) -> TrainResult:
        p, sel = self.progress, self.selection
        steps_done = self.stop_at if self.stop_at > p.start else p.start
        last_state = st.clone_state(self.student)
        if p.best_state is not None:
            self.student.load_state_dict(p.best_state)
        self.student.eval()
        return TrainResult(
            student=self.student, last_state=last_state, steps=steps_done, total_steps=self.total,
            best_step=p.best_step, best_metrics=p.best_metrics, last_metrics=p.last_metrics,
            resumed_from=p.resumed_from, plan=self.plan, log=p.log_rows, seconds=time.perf_counter() - self.started,
            step_seconds=self.step_seconds,
            assets=list(self.losses.asset_records) + ([sel.asset] if sel is not None and sel.asset else []),
            selection=sel.describe() if sel is not None else None,
            taps=[tap.describe() for tap in self.taps],
        )


__all__ = ["TrainResult", "train"]

"""What a finished compress run leaves in OUT: the students, the sample grid, the report."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

from .. import io as gio
from ..evaluation import evaluate as run_evaluation
from ..metrics.cost import compare, profile_model
from ..report import compose, write_reports
from ..student import load_student, read_student_metadata, save_student
from .holdout import sample_grid, selection_text
from .loop import TrainResult
from .options import DataBundle
from .outdir import SAMPLES, STUDENT, STUDENT_LAST, TRAIN_LOG
from .plan import LossPlan


def write_outputs(out, cfg, teacher, result: TrainResult, bundle: DataBundle, plan: LossPlan, warnings_, run_info,
                  fingerprint, device, offline, evaluate, data, target, quiet, plan_block=None, real_stats=None,
                  direction="AtoB"):
    """Write the kept and the last student, the samples and (``evaluate``) the reports; return (paths, metrics, report)."""
    student = result.student.cpu().eval()
    meta = {
        "ganzip.recipe": cfg.name, "ganzip.recipe_hash": cfg.hash(), "ganzip.seed": str(cfg.train.seed),
        "ganzip.recipe_config": json.dumps(cfg.to_dict(), sort_keys=True),
        "ganzip.teacher_sha256": fingerprint["teacher_sha256"], "ganzip.steps": str(result.steps),
        "ganzip.best_step": str(result.best_step),
    }
    student_path = save_student(student, out / STUDENT, metadata=meta)
    last = copy.deepcopy(student)
    last.load_state_dict(result.last_state)
    save_student(last, out / STUDENT_LAST, metadata={**meta, "ganzip.best_step": "last"})
    samples_path = _write_samples(out, cfg, teacher, student, bundle)
    extra = _run_description(out, cfg, result, bundle, plan, warnings_, run_info, fingerprint, student_path,
                             samples_path)
    if plan_block is not None:
        extra["plan"] = plan_block
    report_path, metrics, report = None, {}, None
    if evaluate:
        report_path, metrics, report = _final_evaluation(out, cfg, student_path, teacher, data, target, extra,
                                                         device, offline, quiet, real_stats, direction)
    return ({"student": student_path, "report": report_path, "log": out / TRAIN_LOG, "samples": samples_path},
            metrics, report)


def _write_samples(out: Path, cfg, teacher, student, bundle: DataBundle) -> Path | None:
    if not (bundle.holdout is not None and len(bundle.holdout) and cfg.eval.samples > 0):
        return None
    n = min(cfg.eval.samples, len(bundle.holdout))
    x = torch.stack([bundle.holdout[i]["A"] for i in range(n)])
    with torch.no_grad():
        t_out = teacher.cpu().eval()(x)
        s_out = student(x)
    gio.atomic_write_bytes(out / SAMPLES, sample_grid(x, t_out, s_out))
    return out / SAMPLES


def _run_description(out, cfg, result: TrainResult, bundle, plan, warnings_, run_info, fingerprint, student_path,
                     samples_path) -> dict:
    """The report's account of the training run (merged into the evaluation's report)."""
    training = {
        "recipe": cfg.name, "recipe_hash": cfg.hash(), "seed": cfg.train.seed,
        "steps": result.steps, "total_steps": result.total_steps, "resumed_from": result.resumed_from,
        "student_selection": selection_text(result),
        "selection": result.selection,
        "best_step": result.best_step, "best_holdout": result.best_metrics, "last_holdout": result.last_metrics,
        "loss_terms": plan.describe(), "data": bundle.description, "teacher": run_info["teacher"],
        "teacher_sha256": fingerprint["teacher_sha256"], "width": run_info["width"], "init": fingerprint["init"],
        "round_to": fingerprint["round_to"], "world_size": run_info["world_size"],
        "seconds": round(result.seconds, 2), "assets": result.assets,
    }
    if result.taps:
        training["feature_taps"] = result.taps
    paths = {"student": str(student_path), "student_last": str(out / STUDENT_LAST), "train_log": str(out / TRAIN_LOG)}
    if samples_path is not None:
        paths["samples"] = str(samples_path)
    return {"kind": "compress", "recipe": cfg.to_dict(), "recipe_hash": cfg.hash(), "seed": cfg.train.seed,
            "losses_active": dict(plan.weights), "training": training, "warnings": list(warnings_), "paths": paths}


def _final_evaluation(out, cfg, student_path, teacher, data, target, extra, device, offline, quiet, real_stats=None,
                      direction="AtoB"):
    """Hand over to ganzip.evaluation so compress and `ganzip eval` write the same reports.

    Data given as a folder or ``builtin:NAME`` is evaluated on its test (else
    val) split; in-memory data (a :class:`DataBundle`) gets a report of the
    training run and the cost only.
    """
    if isinstance(data, (str, Path)):
        student: Any = str(student_path)
        spec = json.loads(read_student_metadata(student_path).get("ganzip.teacher_spec", "{}"))
        if ":" in spec.get("arch", ""):  # the user named this module for the teacher already
            student = load_student(student_path, arch=spec["arch"], arch_opts=spec.get("opts"))
        res = run_evaluation(student, teacher, str(data), target=target, size=cfg.train.size,
                             device=device, out=out, offline=offline, progress=not quiet, allow_missing=True,
                             inception_weights=cfg.eval.inception_weights or None,
                             alexnet_weights=cfg.eval.alexnet_weights or None, extra=extra, real_stats=real_stats,
                             direction=direction, claim_out=False)  # compress holds OUT's lock
        return out / "report.json", res.metrics, res.to_dict()
    report = _cost_only_report(cfg, load_student(student_path), teacher, device, extra)
    write_reports(out, report)
    return out / "report.json", {}, report


def _cost_only_report(cfg, student, teacher, device, extra: dict) -> dict:
    """The report of a run on in-memory data: cost and the run's account, no image metrics."""
    size = cfg.train.size
    cost = {"size": size, "device": "cpu",
            "student": profile_model(student, size=size, device="cpu", latency=False),
            "teacher": profile_model(teacher.cpu(), size=size, device="cpu", latency=False)}
    cost["ratios"] = compare(cost["teacher"], cost["student"], keys=("macs", "params"))
    return compose(None, {"cost": cost, "metrics": {}, "assets": []}, device=device, extra=extra)


__all__ = ["write_outputs"]

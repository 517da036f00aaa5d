"""Fidelity of the student to the teacher on held-out training images, the selection metric, the sample grid.

The held-out check never draws a random number, so evaluating never changes the training run.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torch.nn as nn

from .. import assets
from ..config import RecipeConfig
from ..errors import AssetMissingError, GanzipError
from ..imaging import display_rgb, sample_grid
from ..metrics import fid as fidm
from ..metrics.fidelity import psnr as psnr01
from ..metrics.kid import mmd2_unbiased
from ..metrics.lpips import load_lpips

def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB between images in [-1, 1], on the [0, 1] scale (``ganzip.metrics.fidelity``)."""
    return psnr01((a.float() + 1) / 2, (b.float() + 1) / 2)


SELECT_METRICS: dict[str, tuple[str, bool]] = {
    "kid": ("holdout_kid", False), "fid": ("holdout_fid", False),
    "lpips": ("holdout_lpips", False), "psnr": ("holdout_psnr", True),
}
_SELECT_ASSET = {"kid": "inception_fid", "fid": "inception_fid", "lpips": "alexnet"}
_SELECT_TEXT = {"kid": "KID", "fid": "FID", "lpips": "LPIPS", "psnr": "PSNR"}


@dataclass
class Selection:
    """Which held-out metric picks the kept student, and why (recorded in the report and train_log.csv)."""

    metric: str  # kid | fid | lpips | psnr
    requested: str  # eval.select as given (auto or a metric)
    reason: str
    fallback: bool = False  # auto could not use its first choice
    weights: Path | None = None  # the pretrained file the metric runs on
    asset: dict | None = None  # its record (path, sha256, verified)

    @property
    def column(self) -> str:
        return SELECT_METRICS[self.metric][0]

    @property
    def higher_is_better(self) -> bool:
        return SELECT_METRICS[self.metric][1]

    def better(self, new: Mapping[str, float], old: Mapping[str, float]) -> bool:
        """``new`` beats ``old`` on the selection metric (old lacking it, e.g. after a change: new wins)."""
        if self.column not in old:
            return True
        a, b = new[self.column], old[self.column]
        return a > b if self.higher_is_better else a < b

    def describe(self) -> dict:
        return {"metric": self.metric, "requested": self.requested, "reason": self.reason,
                "fallback": self.fallback, "column": self.column,
                "better": "higher" if self.higher_is_better else "lower"}


def resolve_selection(cfg: RecipeConfig, holdout_size: int, offline: bool = True) -> Selection:
    """Decide ``eval.select``: an asked-for metric whose weights are missing is a one-line error.

    ``auto`` takes KID when the Inception weights are present (and the hold-out
    has two images), else LPIPS when AlexNet's are, else PSNR.
    """
    ev = cfg.eval
    explicit = {"inception_fid": ev.inception_weights or None, "alexnet": ev.alexnet_weights or None}

    def find(name: str) -> tuple[Path | None, str]:
        spec = assets.get_spec(name)
        try:
            return assets.resolve(name, explicit[name], offline), ""
        except AssetMissingError:
            where = explicit[name] or spec.filename
            return None, f"{where} not found"

    key = {"inception_fid": "eval.inception_weights", "alexnet": "eval.alexnet_weights"}
    if ev.select != "auto":
        metric = ev.select
        if metric == "psnr":
            return Selection("psnr", metric, "asked for (eval.select = psnr)")
        name = _SELECT_ASSET[metric]
        path, why = find(name)
        if path is None:
            spec = assets.get_spec(name)
            raise AssetMissingError(
                f"eval.select = {metric} needs {spec.filename} ({why}): install it with `ganzip assets import FILE`, "
                f"point --set {key[name]}=FILE at it, or choose another eval.select"
            )
        if metric in ("kid", "fid") and holdout_size < 2:
            raise GanzipError(f"eval.select = {metric} compares image sets and needs at least 2 held-out images, "
                              f"got {holdout_size}: raise eval.holdout or use eval.select=lpips|psnr")
        return Selection(metric, metric, f"asked for (eval.select = {metric})", weights=path,
                         asset=assets.asset_record(name, path))
    notes = []
    path, why = find("inception_fid")
    if path is not None and holdout_size >= 2:
        return Selection("kid", "auto", "default: KID, the most faithful metric whose weights are present "
                         "(unbiased on a small hold-out, unlike FID)", weights=path,
                         asset=assets.asset_record("inception_fid", path))
    notes.append(f"KID: {why}" if path is None else f"KID: only {holdout_size} held-out image")
    path, why = find("alexnet")
    if path is not None:
        return Selection("lpips", "auto", f"default fell back to LPIPS ({'; '.join(notes)})", fallback=True,
                         weights=path, asset=assets.asset_record("alexnet", path))
    notes.append(f"LPIPS: {why}")
    return Selection("psnr", "auto", f"default fell back to PSNR ({'; '.join(notes)}; install with "
                     "`ganzip assets import FILE`)", fallback=True)


class HoldoutEval:
    """Fidelity of the student to the teacher on held-out training images.

    Always PSNR and L1; plus the selection metric when it is another one:
    KID or FID between Inception features of the student's and the teacher's
    outputs (uint8, as saved PNGs hold them), or the mean LPIPS.
    Teacher outputs (and their features) are computed once. The student runs
    in eval mode; no random numbers are drawn, so evaluating never changes
    the training run.
    """

    def __init__(self, ds, teacher: nn.Module, device: torch.device, max_images: int, batch_size: int = 8,
                 channels_last: bool = False, selection: Selection | None = None):
        n = min(len(ds), max_images)
        self.inputs = torch.stack([ds[i]["A"] for i in range(n)])
        self.device = device
        self.batch_size = batch_size
        self.channels_last = channels_last
        self.selection = selection or Selection("psnr", "psnr", "asked for (eval.select = psnr)")
        self.teacher_out = self._run(teacher)
        self._inception = self._lpips = self._teacher_feats = None
        metric = self.selection.metric
        if metric in ("kid", "fid"):
            self._inception = fidm.load_inception(self.selection.weights, dims=2048, device=device, offline=True)
            self._teacher_feats = self._features(self.teacher_out)
        elif metric == "lpips":
            self._lpips = load_lpips("alex", self.selection.weights, device=device, offline=True)

    @torch.no_grad()
    def _run(self, model: nn.Module) -> torch.Tensor:
        was = model.training
        model.eval()
        outs = []
        try:
            for i in range(0, len(self.inputs), self.batch_size):
                x = self.inputs[i:i + self.batch_size].to(self.device)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                outs.append(model(x.clone()).float().cpu())  # never let a model change the cached inputs
        finally:
            model.train(was)
        return torch.cat(outs)

    def _features(self, images: torch.Tensor) -> np.ndarray:
        u8 = fidm.to_uint8(images)
        if u8.shape[1] == 1:
            u8 = u8.expand(-1, 3, -1, -1)
        if u8.shape[1] != 3:
            raise GanzipError(f"eval.select = {self.selection.metric} needs RGB or grayscale outputs, the teacher "
                              f"gives {u8.shape[1]} channels: use --set eval.select=psnr")
        return np.concatenate([self._inception(u8[i:i + self.batch_size])
                               for i in range(0, len(u8), self.batch_size)])

    def __call__(self, student: nn.Module) -> tuple[dict[str, float], torch.Tensor]:
        out = self._run(student)
        metrics = {
            "holdout_psnr": float(psnr(out, self.teacher_out).mean()),
            "holdout_l1": float((out - self.teacher_out).abs().mean()),
        }
        metric = self.selection.metric
        if self._inception is not None:
            feats = self._features(out)
            if metric == "kid":  # the unbiased MMD^2 on the whole hold-out (one subset: all of it)
                metrics["holdout_kid"] = mmd2_unbiased(feats.astype(np.float64), self._teacher_feats.astype(np.float64))
            else:
                with warnings.catch_warnings():  # the few-images caveat is docs/evaluation.md's, not each step's
                    warnings.simplefilter("ignore", fidm.MetricWarning)
                    a = fidm.Statistics.from_features(feats, source="student")
                    b = fidm.Statistics.from_features(self._teacher_feats, source="teacher")
                    metrics["holdout_fid"] = fidm.frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
        elif self._lpips is not None:
            values = [self._lpips(out[i:i + self.batch_size].clamp(-1, 1), self.teacher_out[i:i + self.batch_size].clamp(-1, 1))
                      for i in range(0, len(out), self.batch_size)]
            metrics["holdout_lpips"] = float(torch.cat(values).double().mean())
        return metrics, out


def selection_text(result) -> str:
    """One line for reports: which student was kept, by which metric, and why (``result``: a TrainResult)."""
    sel = result.selection
    if sel is None or result.best_step is None:
        return "last step (no held-out evaluation)"
    better = "highest" if sel["better"] == "higher" else "lowest"
    return (f"{better} held-out {_SELECT_TEXT[sel['metric']]} to the teacher (step {result.best_step}); "
            f"{sel['reason']}")

"""Evaluate a student generator (and its teacher): FID/KID, LPIPS, PSNR, SSIM, cost, and reports.

`evaluate` runs both generators over the evaluation split of a dataset, in
batches, and measures:

- FID and KID of each generator's outputs against real target-domain images
  (pytorch-fid protocol; see :mod:`ganzip.metrics.fid`);
- the student's fidelity to the teacher: LPIPS (AlexNet), PSNR, SSIM;
- for paired data, each generator's fidelity to the ground truth;
- MACs, parameters and latency of both (``ganzip.metrics.cost``).

Generated images are quantised to uint8 exactly as a saved PNG would be
(``tensor2im``: ``(x + 1) / 2 * 255``, truncated) before any metric, so the
FID computed in memory equals `ganzip fid` on the written PNGs.

The request is one dataclass, :class:`EvalRequest`; ``evaluate(request)``
runs it, and ``evaluate(student, teacher=..., data=..., ...)`` (the keyword
form users and the API call) builds one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from . import io as gio
from . import report as greport
from . import rundir
from .backends import backend_latencies, backend_table
from .data import is_builtin, open_dataset, open_pairs, resolve_layout
from .devices import resolve_device
from .eval_request import EvalRequest, EvalResult
from .errors import AssetMissingError, GanzipError, in_stage
from .fid_reference import Reference as _Reference
from .fid_reference import reference_stats as _reference_stats
from .fid_reference import rgb3 as _rgb3
from .fid_reference import round_uint8 as _round_uint8
from .data.eval_split import training_split_warning
from .imaging import display_rgb, output_geometry
from .loading import check_image_model, load_generator
from .metrics import fid as fidm
from .metrics import fidelity
from .metrics.cost import compare, infer_in_channels, profile_model
from .metrics.kid import kernel_inception_distance
from .metrics.lpips import load_lpips
from .progress import progress_iter
from .sizing import resolve_size, training_size


# What evaluate writes into `out`; an earlier run's copies are replaced only with overwrite.
EVAL_OUTPUTS = ("report.json", "report.md", "report.html", "images", "outputs")


# ---------------------------------------------------------------- helpers

def _load_model(source: Any, arch, arch_opts, trust_pickle: bool, device) -> torch.nn.Module:
    return load_generator(source, arch=arch, arch_opts=arch_opts, trust_pickle=trust_pickle, device=device)


def _describe_model(source: Any, model: torch.nn.Module, arch: str | None) -> dict:
    spec = getattr(model, "ganzip_spec", None) or {}
    info: dict[str, Any] = {
        "source": str(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__,
        "arch": spec.get("arch") or arch or type(model).__name__,
    }
    if spec.get("opts"):
        info["opts"] = spec["opts"]
    student_info = getattr(model, "ganzip_student", None)
    if student_info:
        info["student"] = student_info
    first = first_layer_channels(model)
    if first is not None:
        info["channels"] = {"first_layer": first}
    return info


def first_layer_channels(model: torch.nn.Module) -> int | None:
    """The output channels of the model's first convolution: a student's real width (its spec's ngf is the teacher's)."""
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            return int(m.out_channels)
    return None


def _png_bytes(u8_chw: torch.Tensor) -> bytes:
    return gio.png_bytes(u8_chw.permute(1, 2, 0).cpu().numpy())


def _unavailable(name: str, exc: Exception, allow_missing: bool, notes: list[str], what: str) -> dict:
    if not allow_missing:
        raise exc
    notes.append(f"{what} not computed: {exc}")
    return {"name": name, "path": None, "sha256": None, "verified": None, "unavailable": str(exc).split(". ")[0]}


def _fid_entry(feats: list[np.ndarray], ref: _Reference | None, kid: bool, who: str) -> dict:
    if ref is None or not feats:
        return {}
    f = np.concatenate(feats)
    stats = fidm.Statistics.from_features(f, source=f"{who} outputs")
    entry: dict[str, Any] = {"fid": fidm.fid_from_stats(stats, ref.stats)}
    if kid:
        if ref.stats.features is None:
            fidm._warn("KID not computed: the reference is a statistics file without per-image features")
        else:
            entry["kid_mean"], entry["kid_std"] = kernel_inception_distance(f, ref.stats.features)
    return entry


# ---------------------------------------------------------------- evaluate

def evaluate(student, teacher=None, data=None, target=None, size: int | None = None, batch_size: int = 8,
             device: str = "auto", out=None, inception_weights=None, alexnet_weights=None, real_stats=None,
             offline: bool = False, progress: bool = True, max_images: int | None = None,
             extra: Mapping[str, Any] | None = None, *, arch: str | None = None, arch_opts=None,
             trust_pickle: bool = False, split: str | None = None, direction: str = "AtoB",
             allow_missing: bool = False, fid_dims: int = 2048, kid: bool = True, lpips: bool = True, fid: bool = True,
             latency: bool = True, grid_images: int = 8, save_images: bool = False,
             command: str | None = None, overwrite: bool = False,
             claim_out: bool = True) -> EvalResult:
    """Evaluate `student` (and `teacher`) on the evaluation split of `data`.

    ``evaluate(EvalRequest(...))`` runs a request as it is; the keyword form
    builds one from these arguments.

    Args:
        student, teacher: an `nn.Module`, a ganzip student .safetensors, or any
            file `ganzip.loading.load_generator` accepts (`arch`/`arch_opts`
            name the architecture of bare state dicts; `trust_pickle` allows
            pickled modules).
        data: a dataset folder (unpaired, paired or plain) or ``builtin:NAME``;
            the split defaults to "test" (else "val").
        target: a folder of real target-domain images for FID (default: the
            dataset's own ``{split}B`` images or target halves).
        real_stats: a .npz with precomputed ``mu``/``sigma`` (e.g. a published
            horse2zebra_B.npz); overrides `target` for FID.
        inception_weights, alexnet_weights: explicit asset files (else looked
            up, see `ganzip.assets`); `offline` forbids any download.
        allow_missing: record a metric whose pretrained file is missing as
            unavailable (with the reason in `warnings`) instead of raising.
        fid, kid, lpips: compute these metrics (a skipped one is recorded in
            the report's warnings).
        size: the image side the models run at; None (the default) takes the
            student's training size from its metadata (else 256), and a size
            that differs from it is kept with a warning (``ganzip.sizing``).
        fid_dims: Inception feature size; 2048 is the protocol, smaller sizes
            are for quick smoke runs only.
        out: folder for report.json/.md/.html and the sample PNGs.
        overwrite: replace the reports and images of an earlier ganzip run in
            `out` (never files ganzip did not write; see `ganzip.rundir`).
        claim_out: lock `out` and check what it holds first (False only for a
            caller that already holds the folder, as compress does).
        extra: more report sections (e.g. compress's ``training``, ``recipe``,
            ``seed``, ``losses_active``), merged into the report.
    """
    if isinstance(student, EvalRequest):
        return run(student)
    args = {k: v for k, v in locals().items() if k in {f.name for f in fields(EvalRequest)}}
    return run(EvalRequest(**args))


def run(request: EvalRequest) -> EvalResult:
    """Run one evaluation request: claim `out` (unless told not to), measure, write the reports."""
    if request.out is None or not request.claim_out:
        return _evaluate(request)
    with rundir.replacing(Path(request.out), EVAL_OUTPUTS, overwrite=request.overwrite, what="eval"):
        return _evaluate(request)


@dataclass
class _Setup:
    """The models, data and metric networks of one evaluation, once loaded."""

    device: torch.device
    student: torch.nn.Module
    teacher: torch.nn.Module | None
    dataset: Any
    split: str
    paired: bool
    in_ch: int
    out_ch: int
    out_side: int
    scale: int
    extractor: Any = None
    lpips: Any = None
    reference: _Reference | None = None
    not_measured: dict = field(default_factory=dict)


@dataclass
class _Outputs:
    """What the generation pass gathered: Inception features, per-image fidelity, the grid, saved files."""

    feats: dict = field(default_factory=lambda: {"student": [], "teacher": []})
    per_image: dict = field(default_factory=dict)
    grid: list = field(default_factory=list)
    saved: dict = field(default_factory=lambda: {"student": [], "teacher": []})
    count: int = 0


@in_stage("evaluating")
def _evaluate(req: EvalRequest) -> EvalResult:
    """The body of `evaluate`, once `out` is claimed."""
    if req.data is None:
        raise GanzipError("evaluate needs data: a dataset folder or builtin:NAME (--data)")
    if req.batch_size < 1:
        raise GanzipError(f"batch size must be at least 1, got {req.batch_size}")
    dev = resolve_device(req.device)
    notes: list[str] = []
    size, size_warning = resolve_size(req.student, req.size)
    req = replace(req, size=size)
    if size_warning:
        notes.append(size_warning)
    asset_records: list[dict] = []
    with fidm.collect_warnings(notes):
        s_model, t_model = _load_models(req, dev)
        setup = _open_data(req, dev, s_model, t_model, notes)
        _load_metric_nets(req, setup, notes, asset_records)
        outputs = _generate(req, setup)
        metrics = _metrics(req, setup, outputs)
        cost = _cost(req, setup)
        paths = _paths(req, outputs)
        sections = {"data": _data_info(req, setup, outputs.count), "models": _models(req, setup), "cost": cost,
                    "metrics": metrics, "assets": asset_records, "warnings": notes,
                    "versions": greport.environment_info(dev), "paths": paths}
    if cost.get("backends"):
        sections["tables"] = [backend_table(cost)]
    report = greport.compose("eval", sections, command=req.command, extra=req.extra)
    if req.out is not None:
        out_dir = Path(req.out)
        rows = _write_grid(out_dir, outputs.grid)
        written = greport.write_reports(out_dir, report, images=rows)
        report["paths"] = {**report.get("paths", {}), **{f"report_{k}": str(v) for k, v in written.items()}}
    return EvalResult(metrics=metrics, cost=cost, paths=report.get("paths", {}), warnings=report["warnings"],
                      assets=asset_records, report=report)


def _load_models(req: EvalRequest, dev) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    s_model = _load_model(req.student, req.arch, req.arch_opts, req.trust_pickle, dev)
    t_model = (_load_model(req.teacher, req.arch, req.arch_opts, req.trust_pickle, dev)
               if req.teacher is not None else None)
    for name, model in (("student", s_model), ("teacher", t_model)):
        if model is not None:
            try:
                check_image_model(model, req.size, device=dev)
            except GanzipError as exc:
                raise GanzipError(f"{name}: {exc} (this model may need another image size than --size {req.size})"
                                  ) from None
    return s_model, t_model


def _open_data(req: EvalRequest, dev, s_model, t_model, notes: list[str]) -> _Setup:
    """The evaluation dataset at the student's input/output geometry."""
    data, size = req.data, req.size
    in_ch = infer_in_channels(s_model)
    out_ch, out_side, scale = output_geometry(s_model, in_ch, size)
    split = req.split
    if split is None:
        split = "test" if is_builtin(data) else resolve_layout(data).eval_split
    warning = training_split_warning(data, split)
    if warning is not None:
        notes.append(warning)
    dataset = None
    if req.target is not None and scale > 1 and not is_builtin(data) and resolve_layout(data).kind == "plain":
        # --data LR_DIR --target HR_DIR: the HR images are the ground truth (matched by file name)
        dataset = open_pairs(data, req.target, size=size, scale=scale, channels=in_ch, target_channels=out_ch,
                             augment=False, n=req.max_images)
    if dataset is None:
        dataset = open_dataset(data, split=split, size=size, augment=False, direction=req.direction,
                               n=req.max_images, channels=in_ch, target_channels=out_ch, target_scale=scale)
    if len(dataset) == 0:
        raise GanzipError(f"{data} ({split}) has no images to evaluate")
    if getattr(dataset, "skipped", 0):
        notes.append(f"{dataset.skipped} files in {data} were skipped: {dataset.skip_summary()}")
    paired = getattr(dataset, "kind", "") == "paired"
    return _Setup(device=dev, student=s_model, teacher=t_model, dataset=dataset, split=split, paired=paired,
                  in_ch=in_ch, out_ch=out_ch, out_side=out_side, scale=scale)


def _load_metric_nets(req: EvalRequest, setup: _Setup, notes: list[str], asset_records: list[dict]) -> None:
    """Inception (FID/KID) and AlexNet (LPIPS), each recorded as used, skipped or unavailable."""
    dev = setup.device
    if not req.fid:
        notes.append("FID and KID skipped (--no-fid)")
        setup.not_measured.update(fid="skipped (--no-fid)", kid="skipped (--no-fid)")
    else:
        try:
            setup.extractor = fidm.load_inception(req.inception_weights, dims=req.fid_dims, device=dev,
                                                  offline=req.offline)
            asset_records.append(setup.extractor.weights)
        except AssetMissingError as exc:
            asset_records.append(_unavailable("inception_fid", exc, req.allow_missing, notes, "FID and KID"))
            setup.not_measured.update(fid=f"unavailable: {asset_records[-1]['unavailable']}",
                                      kid=f"unavailable: {asset_records[-1]['unavailable']}")
    if req.fid and not req.kid:
        setup.not_measured["kid"] = "skipped (--no-kid)"
    if setup.extractor is not None and req.fid_dims != 2048:
        fidm._warn(f"FID uses {req.fid_dims}-d Inception features, not the protocol's 2048: "
                   "values are not comparable to published FIDs")
    if not req.lpips:
        notes.append("LPIPS skipped (--no-lpips)")
        setup.not_measured["lpips"] = "skipped (--no-lpips)"
    if req.lpips and (setup.teacher is not None or setup.paired):
        try:
            setup.lpips = load_lpips("alex", req.alexnet_weights, device=dev, offline=req.offline)
            asset_records.append(setup.lpips.backbone)
        except AssetMissingError as exc:
            asset_records.append(_unavailable("alexnet", exc, req.allow_missing, notes, "LPIPS"))
            setup.not_measured["lpips"] = f"unavailable: {asset_records[-1]['unavailable']}"
    if setup.extractor is not None:
        setup.reference = _reference_stats(setup.extractor, req.data, setup.split, setup.out_side, req.direction,
                                           req.target, req.real_stats, req.batch_size, req.progress, notes)


def _generate(req: EvalRequest, setup: _Setup) -> _Outputs:
    """Run both generators over the dataset, batch by batch, and gather what the metrics need."""
    acc = _Outputs()
    loader = torch.utils.data.DataLoader(setup.dataset, batch_size=req.batch_size, shuffle=False, num_workers=0)
    for batch in progress_iter(loader, desc="evaluate", unit="batch", disable=not req.progress):
        x = batch["A"].to(setup.device)
        with torch.inference_mode():
            outs = {"student": fidm.to_uint8(setup.student(x.clone()))}  # models may scale inputs in place
            if setup.teacher is not None:
                outs["teacher"] = fidm.to_uint8(setup.teacher(x.clone()))
        if "teacher" in outs and outs["teacher"].shape != outs["student"].shape:
            raise GanzipError(f"teacher and student outputs differ in shape: {tuple(outs['teacher'].shape)} vs "
                              f"{tuple(outs['student'].shape)}")
        gt = _round_uint8(batch["B"]).to(setup.device) if setup.paired and "B" in batch else None
        for who, u8 in outs.items():
            if setup.extractor is not None and setup.reference is not None:
                acc.feats[who].append(setup.extractor(_rgb3(u8, who)))
            if gt is not None:
                if gt.shape != u8.shape:
                    raise GanzipError(f"{who} outputs {tuple(u8.shape[1:])} but the ground truth is "
                                      f"{tuple(gt.shape[1:])}: check --size and --direction")
                _fidelity_into(acc.per_image, f"{who}:target", u8, gt, setup.lpips)
        if "teacher" in outs:
            _fidelity_into(acc.per_image, "student:teacher", outs["student"], outs["teacher"], setup.lpips)
        _keep_images(req, acc, x, outs, gt, [Path(p).stem for p in batch["path"]])
        acc.count += x.shape[0]
    return acc


def _keep_images(req: EvalRequest, acc: _Outputs, x, outs: dict, gt, names: list[str]) -> None:
    """The first `grid_images` rows of the sample grid, and (with save_images) every output as a PNG."""
    out_dir = Path(req.out) if req.out is not None else None
    for i in range(x.shape[0]):
        if len(acc.grid) < req.grid_images:
            # the input as shown: RGB (grey repeated, a mask left out), resized to the outputs' size
            shown = display_rgb(x[i:i + 1], outs["student"].shape[-2:])
            row = {"input": _round_uint8(shown)[0].cpu()}
            row.update({who: u8[i].cpu() for who, u8 in outs.items()})
            if gt is not None:
                row["target"] = gt[i].cpu()
            acc.grid.append(row)
        if req.save_images and out_dir is not None:
            for who, u8 in outs.items():
                dest = out_dir / "outputs" / who / f"{acc.count + i:05d}_{names[i]}.png"
                gio.atomic_write_bytes(dest, _png_bytes(u8[i]))
                acc.saved[who].append(str(dest))


def _metrics(req: EvalRequest, setup: _Setup, acc: _Outputs) -> dict:
    metrics: dict[str, Any] = {"student": {}, "count": acc.count, "split": setup.split}
    if setup.teacher is not None:
        metrics["teacher"] = {}
    ref = setup.reference
    if ref is not None:
        metrics["fid_dims"] = req.fid_dims
        metrics["fid_reference"] = ref.info
        for who in metrics.keys() & {"student", "teacher"}:
            metrics[who].update(_fid_entry(acc.feats[who], ref, req.kid, who))
        if "teacher" in metrics and metrics["teacher"].get("fid") is not None:
            metrics["student"]["delta_fid"] = metrics["student"]["fid"] - metrics["teacher"]["fid"]
    for key, values in acc.per_image.items():
        who, other = key.split(":")
        for metric, vals in values.items():
            metrics[who][f"{metric}_to_{other}"] = fidelity.summarize(torch.cat(vals))
    if setup.not_measured:
        metrics["not_measured"] = dict(setup.not_measured)
    return metrics


def _cost(req: EvalRequest, setup: _Setup) -> dict:
    dev, size = setup.device, req.size
    cost: dict[str, Any] = {"size": size, "device": str(dev)}
    cost["student"] = profile_model(setup.student, size=size, device=dev, latency=req.latency)
    if setup.teacher is not None:
        cost["teacher"] = profile_model(setup.teacher, size=size, device=dev, latency=req.latency)
        keys = [k for k in ("macs", "params", "latency_ms") if cost["teacher"].get(k) is not None]
        cost["ratios"] = compare(cost["teacher"], cost["student"], keys)
    if req.latency and isinstance(req.student, (str, os.PathLike)):
        cost["backends"] = backend_latencies(req.student, size=size, threads=1)  # exported files beside the student
    return cost


def _paths(req: EvalRequest, acc: _Outputs) -> dict:
    paths: dict[str, Any] = {}
    if isinstance(req.student, (str, os.PathLike)):
        log = Path(req.student).parent / "train_log.csv"
        if log.is_file():
            paths["train_log"] = str(log.resolve())
    if req.save_images and req.out is not None:
        paths["outputs"] = {who: str(Path(req.out) / "outputs" / who) for who, v in acc.saved.items() if v}
    return paths


def _models(req: EvalRequest, setup: _Setup) -> dict:
    models = {"student": _describe_model(req.student, setup.student, None)}
    if setup.teacher is not None:
        models["teacher"] = _describe_model(req.teacher, setup.teacher, req.arch)
        given = ((req.extra or {}).get("training") or {}).get("teacher")
        if not isinstance(req.teacher, (str, os.PathLike)) and isinstance(given, str):
            models["teacher"]["source"] = given  # compress hands over the loaded module; its file is recorded here
    return models


def _data_info(req: EvalRequest, setup: _Setup, count: int) -> dict:
    info = {"source": str(req.data), "split": setup.split, "kind": getattr(setup.dataset, "kind", None),
            "images": count, "size": req.size, "direction": req.direction,
            "output_size": setup.out_side, "scale": setup.scale, "in_channels": setup.in_ch,
            "out_channels": setup.out_ch}
    trained = training_size(req.student)
    if trained is not None:
        info["training_size"] = trained
    if getattr(setup.dataset, "root_b", None) is not None and req.target is not None and setup.scale > 1:
        info["ground_truth"] = f"{req.target} (paired by file name)"
    return info


def _fidelity_into(store: dict, key: str, a_u8: torch.Tensor, b_u8: torch.Tensor, lp) -> None:
    """Per-image PSNR, SSIM, sharpness (and LPIPS when available) between two uint8 batches, appended to `store[key]`."""
    a, b = a_u8.float() / 255, b_u8.float() / 255
    entry = store.setdefault(key, {})
    entry.setdefault("psnr", []).append(fidelity.psnr(a, b).double().cpu())
    entry.setdefault("ssim", []).append(fidelity.ssim(a, b).double().cpu())
    entry.setdefault("sharpness", []).append(fidelity.sharpness(a, b).double().cpu())
    if lp is not None:
        entry.setdefault("lpips", []).append(lp(_rgb3(a_u8, "model").float() / 127.5 - 1,
                                                _rgb3(b_u8, "model").float() / 127.5 - 1).double())


def _write_grid(out_dir: Path, grid: list[dict[str, torch.Tensor]]) -> list[dict[str, str]]:
    rows = []
    for i, row in enumerate(grid):
        entry = {}
        for col, img in row.items():
            rel = Path("images") / f"{i:02d}_{col}.png"
            gio.atomic_write_bytes(out_dir / rel, _png_bytes(img))
            entry[col] = rel.as_posix()
        rows.append(entry)
    return rows


__all__ = ["evaluate", "run", "EvalRequest", "EvalResult", "first_layer_channels"]

"""Evaluate a student generator (and its teacher): FID/KID, LPIPS, PSNR, SSIM, cost, and reports.

`evaluate` runs both generators over the evaluation split of a dataset, in
batches, and measures:

- FID and KID of each generator's outputs against real target-domain images
  (pytorch-fid protocol, spec section 7; see :mod:`ganzip.metrics.fid`);
- the student's fidelity to the teacher: LPIPS (AlexNet), PSNR, SSIM;
- for paired data, each generator's fidelity to the ground truth;
- MACs, parameters and latency of both (``ganzip.metrics.cost``).

Generated images are quantised to uint8 exactly as a saved PNG would be
(``tensor2im``: ``(x + 1) / 2 * 255``, truncated) before any metric, so the
FID computed in memory equals `ganzip fid` on the written PNGs.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from . import rundir
from .errors import AssetMissingError, GanzipError, in_stage
from .progress import progress_iter


@dataclass
class EvalResult:
    """What `evaluate` measured. `to_dict()` is the report (report.json's content)."""

    metrics: dict
    cost: dict
    paths: dict
    warnings: list[str]
    assets: list[dict] = field(default_factory=list)
    report: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.report)


# ---------------------------------------------------------------- helpers

def _load_model(source: Any, arch, arch_opts, trust_pickle: bool, device) -> torch.nn.Module:
    from .loading import load_generator

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
    return info


def _round_uint8(images: torch.Tensor) -> torch.Tensor:
    """Dataset images in [-1, 1] that came from uint8 files, back to the same uint8 values."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _rgb3(u8: torch.Tensor, what: str) -> torch.Tensor:
    if u8.shape[1] == 3:
        return u8
    if u8.shape[1] == 1:
        return u8.expand(-1, 3, -1, -1)
    raise GanzipError(f"the {what} outputs {u8.shape[1]} channels; FID and LPIPS need RGB (3) or grayscale (1) images")


def _png_bytes(u8_chw: torch.Tensor) -> bytes:
    from PIL import Image

    arr = u8_chw.permute(1, 2, 0).cpu().numpy()
    if arr.shape[2] == 1:
        arr = arr[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


def _unavailable(name: str, exc: Exception, allow_missing: bool, notes: list[str], what: str) -> dict:
    if not allow_missing:
        raise exc
    notes.append(f"{what} not computed: {exc}")
    return {"name": name, "path": None, "sha256": None, "verified": None, "unavailable": str(exc).split(". ")[0]}


class _Reference:
    """The real images FID compares against: statistics plus a description."""

    def __init__(self, stats, info: dict):
        self.stats, self.info = stats, info


def _reference_stats(extractor, data, split, size, direction, target, real_stats, batch_size, progress,
                     notes: list[str]) -> _Reference | None:
    from .data import is_builtin, open_target, resolve_layout
    from .metrics import fid as fidm

    if real_stats is not None:
        stats = fidm.statistics_of(real_stats, extractor)
        return _Reference(stats, {"kind": "statistics file", "source": str(real_stats), "count": stats.count})
    if target is not None:
        stats = fidm.statistics_of(target, extractor, batch_size=batch_size, progress=progress)
        return _Reference(stats, {"kind": "folder", "source": str(target), "count": stats.count})
    folder = None
    if not is_builtin(data):
        layout = resolve_layout(data)
        if layout.kind == "plain":
            notes.append(f"FID not computed: {data} is a plain folder of inputs with no target-domain images; "
                         "pass --target DIR (real target images) or --real-stats FILE")
            return None
        if layout.kind == "unpaired" or layout.separate_pairs:
            folder = layout.folder(split) if direction == "BtoA" else layout.b_folder(split)
            if folder is None:
                notes.append(f"FID not computed: {data} has no {split}B folder; pass --target DIR or --real-stats FILE")
                return None
    if folder is not None:
        stats = fidm.statistics_of(folder, extractor, batch_size=batch_size, progress=progress)
        return _Reference(stats, {"kind": "folder", "source": str(folder), "count": stats.count})
    # A|B images or a built-in task: the target halves/renders, at the evaluation size.
    ds = open_target(data, split=split, size=size, direction=direction)
    feats = []
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)
    for batch in progress_iter(loader, desc="FID reference", disable=not progress, leave=False):
        feats.append(extractor(_rgb3(_round_uint8(batch["B"]), "target data")))
    stats = fidm.Statistics.from_features(np.concatenate(feats), source=f"{data} ({split} targets)",
                                          protocol=extractor.protocol)
    return _Reference(stats, {"kind": "dataset targets", "source": f"{data} ({split})", "count": stats.count,
                              "size": size})


def _fid_entry(feats: list[np.ndarray], ref: _Reference | None, kid: bool, who: str) -> dict:
    from .metrics import fid as fidm
    from .metrics.kid import kernel_inception_distance

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

def evaluate(student, teacher=None, data=None, target=None, size: int = 256, batch_size: int = 8,
             device: str = "auto", out=None, inception_weights=None, alexnet_weights=None, real_stats=None,
             offline: bool = False, progress: bool = True, max_images: int | None = None,
             extra: Mapping[str, Any] | None = None, *, arch: str | None = None, arch_opts=None,
             trust_pickle: bool = False, split: str | None = None, direction: str = "AtoB",
             allow_missing: bool = False, fid_dims: int = 2048, kid: bool = True, lpips: bool = True, fid: bool = True,
             latency: bool = True, grid_images: int = 8, save_images: bool = False,
             command: str | None = None, overwrite: bool = False,
             claim_out: bool = True) -> EvalResult:
    """Evaluate `student` (and `teacher`) on the evaluation split of `data`.

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
    args = {k: v for k, v in locals().items() if k not in ("overwrite", "claim_out")}
    if out is None or not claim_out:
        return _evaluate(**args)
    with rundir.replacing(Path(out), EVAL_OUTPUTS, overwrite=overwrite, what="eval"):
        return _evaluate(**args)


# What evaluate writes into `out`; an earlier run's copies are replaced only with overwrite.
EVAL_OUTPUTS = ("report.json", "report.md", "report.html", "images", "outputs")


@in_stage("evaluating")
def _evaluate(student, teacher=None, data=None, target=None, size: int = 256, batch_size: int = 8,
             device: str = "auto", out=None, inception_weights=None, alexnet_weights=None, real_stats=None,
             offline: bool = False, progress: bool = True, max_images: int | None = None,
             extra: Mapping[str, Any] | None = None, *, arch: str | None = None, arch_opts=None,
             trust_pickle: bool = False, split: str | None = None, direction: str = "AtoB",
             allow_missing: bool = False, fid_dims: int = 2048, kid: bool = True, lpips: bool = True, fid: bool = True,
             latency: bool = True, grid_images: int = 8, save_images: bool = False,
             command: str | None = None) -> EvalResult:
    """The body of `evaluate`, once `out` is claimed."""
    from . import assets
    from .data import is_builtin, open_dataset, resolve_layout
    from .devices import resolve_device
    from .engine import display_rgb
    from .loading import check_image_model
    from .metrics import fid as fidm
    from .metrics import fidelity
    from .metrics.cost import profile_model
    from .report import environment_info, now_iso, write_reports

    if data is None:
        raise GanzipError("evaluate needs data: a dataset folder or builtin:NAME (--data)")
    if batch_size < 1:
        raise GanzipError(f"batch size must be at least 1, got {batch_size}")
    dev = resolve_device(device)
    notes: list[str] = []
    asset_records: list[dict] = []
    with fidm.collect_warnings(notes):
        s_model = _load_model(student, arch, arch_opts, trust_pickle, dev)
        t_model = _load_model(teacher, arch, arch_opts, trust_pickle, dev) if teacher is not None else None
        for name, model in (("student", s_model), ("teacher", t_model)):
            if model is not None:
                try:
                    check_image_model(model, size, device=dev)
                except GanzipError as exc:
                    raise GanzipError(f"{name}: {exc} (this model may need another image size than --size {size})") from None

        from .engine import output_geometry
        from .metrics.cost import infer_in_channels

        in_ch = infer_in_channels(s_model)
        out_ch, out_side, scale = output_geometry(s_model, in_ch, size)
        if split is None:
            split = "test" if is_builtin(data) else resolve_layout(data).eval_split
        dataset = None
        if target is not None and scale > 1 and not is_builtin(data) and resolve_layout(data).kind == "plain":
            from .data import open_pairs

            # --data LR_DIR --target HR_DIR: the HR images are the ground truth (matched by file name)
            dataset = open_pairs(data, target, size=size, scale=scale, channels=in_ch, target_channels=out_ch,
                                 augment=False, n=max_images)
        if dataset is None:
            dataset = open_dataset(data, split=split, size=size, augment=False, direction=direction, n=max_images,
                                   channels=in_ch, target_channels=out_ch, target_scale=scale)
        if len(dataset) == 0:
            raise GanzipError(f"{data} ({split}) has no images to evaluate")
        if getattr(dataset, "skipped", 0):
            notes.append(f"{dataset.skipped} files in {data} were skipped: {dataset.skip_summary()}")
        paired = getattr(dataset, "kind", "") == "paired"

        extractor = None
        if not fid:
            notes.append("FID and KID skipped (--no-fid)")
        else:
            try:
                extractor = fidm.load_inception(inception_weights, dims=fid_dims, device=dev, offline=offline)
                asset_records.append(extractor.weights)
            except AssetMissingError as exc:
                asset_records.append(_unavailable("inception_fid", exc, allow_missing, notes, "FID and KID"))
        if extractor is not None and fid_dims != 2048:
            fidm._warn(f"FID uses {fid_dims}-d Inception features, not the protocol's 2048: "
                       "values are not comparable to published FIDs")

        lp = None
        if not lpips:
            notes.append("LPIPS skipped (--no-lpips)")
        if lpips and (t_model is not None or paired):
            from .metrics.lpips import load_lpips

            try:
                lp = load_lpips("alex", alexnet_weights, device=dev, offline=offline)
                asset_records.append(lp.backbone)
            except AssetMissingError as exc:
                asset_records.append(_unavailable("alexnet", exc, allow_missing, notes, "LPIPS"))

        ref = None
        if extractor is not None:
            ref = _reference_stats(extractor, data, split, out_side, direction, target, real_stats, batch_size,
                                   progress, notes)

        # ---- generate and measure, batch by batch
        feats = {"student": [], "teacher": []}
        per_image: dict[str, list[torch.Tensor]] = {}
        grid: list[dict[str, torch.Tensor]] = []
        saved: dict[str, list[str]] = {"student": [], "teacher": []}
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
        out_dir = Path(out) if out is not None else None
        count = 0
        for batch in progress_iter(loader, desc="evaluate", unit="batch", disable=not progress):
            x = batch["A"].to(dev)
            with torch.inference_mode():
                outs = {"student": fidm.to_uint8(s_model(x.clone()))}  # models may scale inputs in place
                if t_model is not None:
                    outs["teacher"] = fidm.to_uint8(t_model(x.clone()))
            if "teacher" in outs and outs["teacher"].shape != outs["student"].shape:
                raise GanzipError(f"teacher and student outputs differ in shape: {tuple(outs['teacher'].shape)} vs "
                                  f"{tuple(outs['student'].shape)}")
            gt = _round_uint8(batch["B"]).to(dev) if paired and "B" in batch else None
            for who, u8 in outs.items():
                if extractor is not None and ref is not None:
                    feats[who].append(extractor(_rgb3(u8, who)))
                if gt is not None:
                    if gt.shape != u8.shape:
                        raise GanzipError(f"{who} outputs {tuple(u8.shape[1:])} but the ground truth is "
                                          f"{tuple(gt.shape[1:])}: check --size and --direction")
                    _fidelity_into(per_image, f"{who}:target", u8, gt, lp)
            if "teacher" in outs:
                _fidelity_into(per_image, "student:teacher", outs["student"], outs["teacher"], lp)
            names = [Path(p).stem for p in batch["path"]]
            for i in range(x.shape[0]):
                if len(grid) < grid_images:
                    # the input as shown: RGB (grey repeated, a mask left out), resized to the outputs' size
                    shown = display_rgb(x[i:i + 1], outs["student"].shape[-2:])
                    row = {"input": _round_uint8(shown)[0].cpu()}
                    row.update({who: u8[i].cpu() for who, u8 in outs.items()})
                    if gt is not None:
                        row["target"] = gt[i].cpu()
                    grid.append(row)
                if save_images and out_dir is not None:
                    from .io import atomic_write_bytes

                    for who, u8 in outs.items():
                        dest = out_dir / "outputs" / who / f"{count + i:05d}_{names[i]}.png"
                        atomic_write_bytes(dest, _png_bytes(u8[i]))
                        saved[who].append(str(dest))
            count += x.shape[0]

        # ---- metrics
        metrics: dict[str, Any] = {"student": {}, "count": count, "split": split}
        if t_model is not None:
            metrics["teacher"] = {}
        if ref is not None:
            metrics["fid_dims"] = fid_dims
            metrics["fid_reference"] = ref.info
            for who in metrics.keys() & {"student", "teacher"}:
                metrics[who].update(_fid_entry(feats[who], ref, kid, who))
            if "teacher" in metrics and metrics["teacher"].get("fid") is not None:
                metrics["student"]["delta_fid"] = metrics["student"]["fid"] - metrics["teacher"]["fid"]
        for key, values in per_image.items():
            who, other = key.split(":")
            for metric, vals in values.items():
                metrics[who][f"{metric}_to_{other}"] = fidelity.summarize(torch.cat(vals))

        # ---- cost
        cost: dict[str, Any] = {"size": size, "device": str(dev)}
        cost["student"] = profile_model(s_model, size=size, device=dev, latency=latency)
        if t_model is not None:
            cost["teacher"] = profile_model(t_model, size=size, device=dev, latency=latency)
            cost["ratios"] = {k: (cost["teacher"][k] / cost["student"][k]) if cost["student"].get(k) else None
                              for k in ("macs", "params", "latency_ms") if cost["teacher"].get(k) is not None}
        if latency and isinstance(student, (str, os.PathLike)):
            from .backends import backend_latencies

            cost["backends"] = backend_latencies(student, size=size, threads=1)  # exported files beside the student

        paths: dict[str, Any] = {}
        if isinstance(student, (str, os.PathLike)):
            log = Path(student).parent / "train_log.csv"
            if log.is_file():
                paths["train_log"] = str(log.resolve())
        if save_images and out_dir is not None:
            paths["outputs"] = {who: str(out_dir / "outputs" / who) for who, v in saved.items() if v}

        models = {"student": _describe_model(student, s_model, None)}
        if t_model is not None:
            models["teacher"] = _describe_model(teacher, t_model, arch)
        data_info = {"source": str(data), "split": split, "kind": getattr(dataset, "kind", None),
                     "images": count, "size": size, "direction": direction,
                     "output_size": out_side, "scale": scale, "in_channels": in_ch, "out_channels": out_ch}
        if getattr(dataset, "root_b", None) is not None and target is not None and scale > 1:
            data_info["ground_truth"] = f"{target} (paired by file name)"

    report: dict[str, Any] = {
        "schema_version": 1,
        "kind": "eval",
        "created": now_iso(),
    }
    if command:
        report["command"] = command
    report.update({"data": data_info, "models": models, "cost": cost, "metrics": metrics,
                   "assets": asset_records, "warnings": notes, "versions": environment_info(dev), "paths": paths})
    if cost.get("backends"):
        from .backends import backend_table

        report["tables"] = [backend_table(cost)]
    for key, value in (extra or {}).items():
        if key == "warnings":
            report["warnings"] = list(notes) + [w for w in value if w not in notes]
        elif key == "paths" and isinstance(value, Mapping):
            report["paths"] = {**paths, **value}
        elif key == "assets" and isinstance(value, (list, tuple)):
            report["assets"] = asset_records + [a for a in value if a not in asset_records]
        else:
            report[key] = value

    if out_dir is not None:
        rows = _write_grid(out_dir, grid)
        written = write_reports(out_dir, report, images=rows)
        report["paths"] = {**report.get("paths", {}), **{f"report_{k}": str(v) for k, v in written.items()}}
    return EvalResult(metrics=metrics, cost=cost, paths=report.get("paths", {}), warnings=report["warnings"],
                      assets=asset_records, report=report)


def _fidelity_into(store: dict, key: str, a_u8: torch.Tensor, b_u8: torch.Tensor, lp) -> None:
    """Per-image PSNR, SSIM (and LPIPS when available) between two uint8 batches, appended to `store[key]`."""
    from .metrics import fidelity

    a, b = a_u8.float() / 255, b_u8.float() / 255
    entry = store.setdefault(key, {})
    entry.setdefault("psnr", []).append(fidelity.psnr(a, b).double().cpu())
    entry.setdefault("ssim", []).append(fidelity.ssim(a, b).double().cpu())
    if lp is not None:
        entry.setdefault("lpips", []).append(lp(_rgb3(a_u8, "model").float() / 127.5 - 1,
                                                _rgb3(b_u8, "model").float() / 127.5 - 1).double())


def _write_grid(out_dir: Path, grid: list[dict[str, torch.Tensor]]) -> list[dict[str, str]]:
    from .io import atomic_write_bytes

    rows = []
    for i, row in enumerate(grid):
        entry = {}
        for col, img in row.items():
            rel = Path("images") / f"{i:02d}_{col}.png"
            atomic_write_bytes(out_dir / rel, _png_bytes(img))
            entry[col] = rel.as_posix()
        rows.append(entry)
    return rows


__all__ = ["evaluate", "EvalResult"]

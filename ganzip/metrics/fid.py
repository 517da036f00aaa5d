"""Fréchet Inception Distance with the pytorch-fid protocol (spec section 7).

The network is pytorch-fid's own ``InceptionV3`` (with ``use_fid_inception=True``,
so its ``FIDInceptionA/C/E`` blocks), built from a local copy of
``pt_inception-2015-12-05-6726825d.pth`` found by :mod:`ganzip.assets`: the
download call pytorch-fid makes while building the network is redirected to
that file for the duration of the construction. Images go in as uint8,
become float in [0, 1], are resized bilinearly to 299x299 and mapped to
[-1, 1] inside the network (pytorch-fid's ``resize_input`` and
``normalize_input``). Statistics are float64; the Fréchet distance uses
``scipy.linalg.sqrtm`` with pytorch-fid's epsilon fallback and
imaginary-component check, on any SciPy version.

Folders are read as pytorch-fid reads them: the files directly inside the
folder with an image extension, sorted, opened with PIL and converted to
RGB, with no resize before Inception's own. (ganzip also accepts upper-case
extensions, which pytorch-fid skips on case-sensitive file systems.)
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from .. import assets
from ..errors import GanzipError
from ..io import atomic_write_bytes
from .images import IMAGE_EXTENSIONS, list_images, read_image, to_uint8
from .inception import (  # noqa: F401  (BLOCK_INDEX_BY_DIM, PROTOCOL_VERSION: kept importable from here)
    BLOCK_INDEX_BY_DIM, PROTOCOL_VERSION, InceptionFeatures, build_inception, load_inception,
    make_random_inception_weights)
from .kid import kernel_inception_distance
from .warnings import MetricWarning, _warn, collect_warnings


# ---------------------------------------------------------------- statistics

@dataclass
class Statistics:
    """Mean and covariance (float64) of Inception features, and the features when known (for KID)."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int | None = None
    features: np.ndarray | None = None
    source: str = ""
    protocol: dict = field(default_factory=dict)

    @classmethod
    def from_features(cls, features: np.ndarray, source: str = "", protocol: dict | None = None) -> "Statistics":
        act = np.asarray(features, dtype=np.float64)
        if act.shape[0] < 2:
            raise GanzipError(f"{source or 'the image set'}: FID needs at least 2 images, got {act.shape[0]}")
        return cls(mu=np.mean(act, axis=0), sigma=np.cov(act, rowvar=False), count=act.shape[0],
                   features=np.asarray(features, dtype=np.float32), source=source, protocol=dict(protocol or {}))

    @property
    def dims(self) -> int:
        return int(self.mu.shape[0])


def check_sample_size(count: int | None, dims: int, what: str) -> None:
    """Warn when `count` images are too few for a full-rank `dims`-d covariance."""
    if count is not None and count <= dims:
        _warn(f"{what}: {count} images for {dims}-d Inception features. The covariance is singular "
              f"(rank <= {count - 1}); a stable FID needs more than {dims} images (published FIDs use "
              "all test images). Computed anyway, with the epsilon fallback if needed; do not compare "
              "this value with published numbers")


def save_stats(path: str | os.PathLike, stats: Statistics, features: bool = False) -> None:
    """Write `stats` as a pytorch-fid style .npz (keys mu, sigma; plus count and protocol), atomically."""
    arrays = {"mu": stats.mu, "sigma": stats.sigma}
    if stats.count is not None:
        arrays["count"] = np.asarray(stats.count)
    if stats.protocol:
        arrays["protocol"] = np.asarray(json.dumps(stats.protocol, sort_keys=True))
    if features and stats.features is not None:
        arrays["features"] = stats.features
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_stats(path: str | os.PathLike, dims: int | None = None) -> Statistics:
    """Read a .npz with keys mu (d,) and sigma (d, d), e.g. a published horse2zebra_B.npz.

    Checks the shapes (and `dims` when given); no pickles are read.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            if not {"mu", "sigma"} <= keys:
                raise GanzipError(f"{path}: a statistics file needs arrays 'mu' and 'sigma' (found {sorted(keys)})")
            mu = np.asarray(f["mu"], dtype=np.float64)
            sigma = np.asarray(f["sigma"], dtype=np.float64)
            count = int(f["count"]) if "count" in keys else None
            protocol = json.loads(str(f["protocol"])) if "protocol" in keys else {}
            feats = np.asarray(f["features"], dtype=np.float32) if "features" in keys else None
    except GanzipError:
        raise
    except Exception as exc:  # numpy and zipfile raise many types on damaged files (EOFError, BadZipFile, ...)
        raise GanzipError(f"{path}: not a readable .npz statistics file ({exc})") from exc
    d = mu.shape[0] if mu.ndim == 1 else None
    if d is None or sigma.shape != (d, d):
        raise GanzipError(f"{path}: mu must have shape (d,) and sigma (d, d); got {mu.shape} and {sigma.shape}")
    if dims is not None and d != dims:
        raise GanzipError(f"{path}: statistics of {d}-d features, but FID here uses {dims}-d Inception features")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise GanzipError(f"{path}: statistics contain NaN or inf")
    return Statistics(mu=mu, sigma=sigma, count=count, features=feats, source=str(path), protocol=protocol)


def folder_key(files: Iterable[Path], protocol: dict) -> str:
    """Cache key of a folder's statistics: file names, sizes and mtimes, plus the feature protocol."""
    h = hashlib.sha256(json.dumps(protocol, sort_keys=True).encode())
    for p in files:
        st = p.stat()
        h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def stats_cache_dir() -> Path:
    return assets.ganzip_home() / "fid_stats"


def folder_statistics(folder: str | os.PathLike, extractor: InceptionFeatures, batch_size: int = 50,
                      progress: bool = True, cache: bool = True, num_workers: int | None = None) -> Statistics:
    """Statistics of an image folder, cached in `$GANZIP_HOME/fid_stats/` by content and protocol."""
    folder = Path(folder)
    files = list_images(folder)
    protocol = extractor.protocol
    cache_file = None
    if cache:
        key = folder_key(files, protocol)
        cache_file = stats_cache_dir() / f"{folder.name or 'root'}-{key[:24]}.npz"
        if cache_file.is_file():
            try:
                stats = load_stats(cache_file, dims=extractor.dims)
                if stats.protocol == protocol and stats.count == len(files):
                    stats.source = str(folder)
                    return stats
            except GanzipError:
                pass  # a damaged cache entry is recomputed and replaced
    feats = extractor.from_files(files, batch_size=batch_size, progress=progress, num_workers=num_workers,
                                 desc=f"FID {folder.name}")
    stats = Statistics.from_features(feats, source=str(folder), protocol=protocol)
    if cache_file is not None:
        try:
            save_stats(cache_file, stats, features=True)
        except GanzipError as exc:  # a read-only cache must not stop the evaluation
            _warn(f"could not cache FID statistics: {exc}")
    return stats


def statistics_of(source: str | os.PathLike, extractor: InceptionFeatures, batch_size: int = 50,
                  progress: bool = True, cache: bool = True, num_workers: int | None = None) -> Statistics:
    """Statistics of a folder, or read from a .npz statistics file."""
    source = Path(source)
    if source.suffix == ".npz" and not source.is_dir():
        if not source.is_file():
            raise GanzipError(f"{source}: no such statistics file")
        stats = load_stats(source, dims=extractor.dims)
        theirs = stats.protocol.get("weights_sha256")
        if theirs and theirs != extractor.protocol["weights_sha256"]:
            _warn(f"{source} was computed with other Inception weights (sha256 {theirs[:12]}...) than "
                  f"these ({extractor.protocol['weights_sha256'][:12]}...): the FID mixes two networks")
        return stats
    if not source.exists():
        raise GanzipError(f"{source}: no such folder or .npz statistics file")
    return folder_statistics(source, extractor, batch_size=batch_size, progress=progress, cache=cache,
                             num_workers=num_workers)


# ---------------------------------------------------------------- the distance

def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    """scipy's sqrtm on every SciPy: old ones return (root, err) with disp=False, new ones drop disp."""
    from scipy import linalg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "matrix is singular" chatter; finiteness is checked below
        with np.errstate(all="ignore"):
            root = linalg.sqrtm(matrix)  # default disp=True returns the root alone on every version
    if isinstance(root, tuple):
        root = root[0]
    return np.asarray(root)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):
    ``||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2))``.

    As pytorch-fid: if the product's square root is not finite, `eps` is added
    to both diagonals (with a warning); a square root whose diagonal has an
    imaginary part above 1e-3 is an error, a smaller one is dropped.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise GanzipError(f"FID of statistics with different shapes: mu {mu1.shape} vs {mu2.shape}, "
                          f"sigma {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        _warn(f"FID: the covariance product is singular; added {eps} to the diagonals (pytorch-fid's fallback)")
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            m = np.max(np.abs(covmean.imag))
            raise GanzipError(f"FID: the matrix square root has an imaginary component of {m:.3g}; "
                              "the statistics are numerically unusable (too few images?)")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_stats(a: Statistics, b: Statistics) -> float:
    """FID between two :class:`Statistics`, warning when either rests on too few images."""
    for s in (a, b):
        check_sample_size(s.count, s.dims, s.source or "image set")
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


# ---------------------------------------------------------------- two sources, one call

@dataclass
class FIDResult:
    """What `ganzip fid` reports."""

    fid: float | None
    kid_mean: float | None = None
    kid_std: float | None = None
    count_a: int | None = None
    count_b: int | None = None
    dims: int = 2048
    weights: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("fid", "kid_mean", "kid_std", "count_a", "count_b", "dims",
                                               "weights", "warnings")}


def compute_fid(a: str | os.PathLike, b: str | os.PathLike, *, weights: str | os.PathLike | None = None,
                dims: int = 2048, batch_size: int = 50, device: str = "auto", kid: bool = False,
                progress: bool = True, offline: bool | None = None, cache: bool = True,
                extractor: InceptionFeatures | None = None, num_workers: int | None = None) -> FIDResult:
    """FID (and optionally KID) between two folders, or a folder and a .npz statistics file."""
    notes: list[str] = []
    with collect_warnings(notes):
        extractor = extractor or load_inception(weights, dims=dims, device=device, offline=offline)
        sa = statistics_of(a, extractor, batch_size=batch_size, progress=progress, cache=cache,
                           num_workers=num_workers)
        sb = statistics_of(b, extractor, batch_size=batch_size, progress=progress, cache=cache,
                           num_workers=num_workers)
        value = fid_from_stats(sa, sb)
        kid_mean = kid_std = None
        if kid:
            if sa.features is None or sb.features is None:
                _warn("KID needs per-image features; a statistics file holds only mu and sigma, so KID is not computed")
            else:
                kid_mean, kid_std = kernel_inception_distance(sa.features, sb.features)
    return FIDResult(fid=value, kid_mean=kid_mean, kid_std=kid_std, count_a=sa.count, count_b=sb.count,
                     dims=dims, weights=extractor.weights, warnings=notes)


__all__ = [
    "IMAGE_EXTENSIONS", "MetricWarning", "list_images", "read_image", "to_uint8", "build_inception",
    "load_inception", "InceptionFeatures", "Statistics", "save_stats", "load_stats", "folder_statistics",
    "statistics_of", "frechet_distance", "fid_from_stats", "compute_fid", "FIDResult",
    "make_random_inception_weights", "check_sample_size", "collect_warnings",
]

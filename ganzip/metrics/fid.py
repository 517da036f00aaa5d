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

import contextlib
import hashlib
import io
import json
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import assets
from ..errors import GanzipError

IMAGE_EXTENSIONS = frozenset({"bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp"})
BLOCK_INDEX_BY_DIM = {64: 0, 192: 1, 768: 2, 2048: 3}
# Bump when anything that changes the features changes; part of every cache key.
PROTOCOL_VERSION = 1


class MetricWarning(UserWarning):
    """A metric was computed, but its value deserves a caveat (too few images, a fallback, ...)."""


def _warn(message: str) -> None:
    warnings.warn(message, MetricWarning, stacklevel=3)


@contextlib.contextmanager
def collect_warnings(into: list[str]) -> Iterator[list[str]]:
    """Gather ganzip's metric and asset warnings raised inside the block into `into` (each once).

    Other warnings pass through unchanged.
    """
    ours = (MetricWarning, assets.UnverifiedAssetWarning)
    with warnings.catch_warnings(record=True) as caught:
        for category in ours:
            warnings.simplefilter("always", category)
        try:
            yield into
        finally:
            others = []
            for w in caught:
                if issubclass(w.category, ours):
                    if str(w.message) not in into:
                        into.append(str(w.message))
                else:
                    others.append(w)
    for w in others:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


# ---------------------------------------------------------------- images

def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files directly inside `folder`, sorted (pytorch-fid's selection)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GanzipError(f"{folder}: not a folder of images")
    files = sorted(p for p in folder.iterdir() if p.suffix[1:].lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        nested = any(p.is_dir() for p in folder.iterdir())
        hint = " (images in sub-folders are not read: point at the folder that holds them)" if nested else ""
        raise GanzipError(f"{folder} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}){hint}")
    return files


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as an H x W x 3 uint8 array (PIL, converted to RGB)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise GanzipError(f"{path}: cannot read this image ({exc})") from exc


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator images in [-1, 1] (N x C x H x W float) to uint8, as saved PNGs hold them.

    Uses the CycleGAN/pix2pix ``tensor2im`` convention the reference
    evaluations used: ``(x + 1) / 2 * 255`` truncated to an integer.
    """
    x = (images.detach().float().clamp(-1, 1) + 1) / 2.0 * 255.0
    return x.clamp(0, 255).to(torch.uint8)


# ---------------------------------------------------------------- the network

_BUILD_LOCK = threading.Lock()


@contextlib.contextmanager
def _pytorch_fid_reads_local(state_dict: dict) -> Iterator[None]:
    """While building pytorch-fid's InceptionV3, hand it `state_dict` instead of downloading."""
    import pytorch_fid.inception as pfi

    def _local(url, *args, **kwargs):
        if url != pfi.FID_WEIGHTS_URL:
            raise GanzipError(f"pytorch-fid asked for {url}; ganzip only provides the FID Inception weights")
        return state_dict

    with _BUILD_LOCK:
        original = pfi.load_state_dict_from_url
        pfi.load_state_dict_from_url = _local
        try:
            yield
        finally:
            pfi.load_state_dict_from_url = original


@contextlib.contextmanager
def _full_float32() -> Iterator[None]:
    """No TF32 on CUDA while extracting features: FID is defined on float32 activations."""
    if not torch.cuda.is_available():
        yield
        return
    conv, mm = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, mm


def build_inception(state_dict: dict, dims: int = 2048) -> torch.nn.Module:
    """pytorch-fid's ``InceptionV3([block], use_fid_inception=True)`` with `state_dict` as its weights."""
    from pytorch_fid.inception import InceptionV3

    if dims not in BLOCK_INDEX_BY_DIM:
        raise GanzipError(f"FID feature dims must be one of {sorted(BLOCK_INDEX_BY_DIM)}, not {dims}")
    with _pytorch_fid_reads_local(state_dict):
        try:
            model = InceptionV3([BLOCK_INDEX_BY_DIM[dims]], resize_input=True, normalize_input=True,
                                use_fid_inception=True)
        except RuntimeError as exc:  # load_state_dict: missing/unexpected keys or shapes
            detail = " ".join(str(exc).split())[:300]
            raise GanzipError(f"the Inception weights do not fit pytorch-fid's FID Inception: {detail}") from exc
    return model.eval()


@dataclass
class InceptionFeatures:
    """Inception pool features of uint8 images, under the pytorch-fid protocol."""

    model: torch.nn.Module
    dims: int
    device: torch.device
    weights: dict  # asset record of the weights file

    @property
    def protocol(self) -> dict:
        """What determines the features: the cache key of real statistics includes it."""
        return {
            "ganzip_fid_protocol": PROTOCOL_VERSION,
            "weights_sha256": self.weights["sha256"],
            "dims": self.dims,
            "input": "uint8/255, bilinear resize to 299 (align_corners=False), 2x-1",
        }

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """Features (N x dims, float32) of a uint8 batch, N x 3 x H x W (or N x H x W x 3)."""
        if images.dtype != torch.uint8:
            raise TypeError("InceptionFeatures takes uint8 images; use to_uint8() on generator outputs")
        if images.ndim != 4:
            raise ValueError(f"expected a batch N x 3 x H x W, got shape {tuple(images.shape)}")
        if images.shape[1] != 3 and images.shape[-1] == 3:
            images = images.permute(0, 3, 1, 2)
        # contiguous NCHW, as pytorch-fid's ToTensor gives: another memory layout picks other conv kernels
        x = images.contiguous().to(self.device, non_blocking=True).float().div(255)
        with torch.inference_mode(), _full_float32():
            pred = self.model(x)[0]
        if pred.shape[2] != 1 or pred.shape[3] != 1:
            pred = F.adaptive_avg_pool2d(pred, output_size=(1, 1))
        return pred.squeeze(3).squeeze(2).float().cpu().numpy()

    def from_files(self, files: Sequence[os.PathLike], batch_size: int = 50, progress: bool = True,
                   num_workers: int | None = None, desc: str = "FID features") -> np.ndarray:
        """Features of image files, decoded by threads (default: min(8, CPUs)) two batches ahead of the network."""
        from tqdm import tqdm

        num_workers = num_workers or min(8, os.cpu_count() or 1)
        files = list(files)
        out = np.empty((len(files), self.dims), dtype=np.float32)
        batches = [files[i:i + batch_size] for i in range(0, len(files), batch_size)]
        start = 0
        with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool, \
                tqdm(total=len(files), desc=desc, unit="img", disable=not progress, leave=False) as bar:
            pending = [pool.map(read_image, b) for b in batches[:2]]
            for i in range(len(batches)):
                arrays = list(pending.pop(0))
                if i + 2 < len(batches):
                    pending.append(pool.map(read_image, batches[i + 2]))
                for run in _same_size_runs(arrays):
                    batch = torch.from_numpy(np.stack(run)).permute(0, 3, 1, 2)
                    out[start:start + len(run)] = self(batch)
                    start += len(run)
                    bar.update(len(run))
        return out


def _same_size_runs(arrays: list[np.ndarray]) -> Iterator[list[np.ndarray]]:
    """Consecutive images of one size, so a batch can be stacked (pytorch-fid needs one size per batch)."""
    run: list[np.ndarray] = []
    for a in arrays:
        if run and a.shape != run[0].shape:
            yield run
            run = []
        run.append(a)
    if run:
        yield run


def load_inception(weights: str | os.PathLike | None = None, dims: int = 2048, device: str | torch.device = "cpu",
                   offline: bool | None = None) -> InceptionFeatures:
    """Find the FID Inception weights (see :func:`ganzip.assets.resolve`) and build the extractor.

    `weights` is an explicit file (``--inception-weights``); a file whose hash
    is not the published one is used but recorded as unverified.
    """
    from ..devices import resolve_device

    path = assets.resolve("inception_fid", weights, offline)
    record = assets.asset_record("inception_fid", path)
    state_dict = assets.load_state_dict("inception_fid", path)
    dev = resolve_device(device)
    model = build_inception(state_dict, dims).to(dev)
    return InceptionFeatures(model=model, dims=dims, device=dev, weights=record)


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
    from ..io import atomic_write_bytes

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
    from .kid import kernel_inception_distance

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


def make_random_inception_weights(path: str | os.PathLike, seed: int = 0, calibrate: int = 4) -> Path:
    """Write a stand-in for the FID Inception weights: pytorch-fid's FID structure, random weights.

    For tests and benchmarks on machines without the real file. Batch-norm
    statistics are set from `calibrate` random images so features vary with
    the input. FID values computed with it mean nothing; they only let two
    implementations be compared on the same network.
    """
    from pytorch_fid import inception as pfi

    gen = torch.Generator().manual_seed(seed)
    net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.ndim > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            elif name.endswith("bias"):
                p.zero_()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration pass
    # Image-like calibration input: smooth random images (low-resolution noise, upsampled like FID does).
    low = torch.rand(calibrate, 3, 16, 16, generator=gen)
    calib = F.interpolate(low, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    net.train()
    with torch.no_grad():
        net(calib)
    net.eval()
    sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
    from ..io import atomic_open

    path = Path(path)
    with atomic_open(path, "wb") as fh:  # the real asset is a torch .pth file; the stand-in mimics it
        torch.save(sd, fh)
    return path


__all__ = [
    "IMAGE_EXTENSIONS", "MetricWarning", "list_images", "read_image", "to_uint8", "build_inception",
    "load_inception", "InceptionFeatures", "Statistics", "save_stats", "load_stats", "folder_statistics",
    "statistics_of", "frechet_distance", "fid_from_stats", "compute_fid", "FIDResult",
    "make_random_inception_weights", "check_sample_size", "collect_warnings",
]

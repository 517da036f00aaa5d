"""pytorch-fid's FID Inception, built from ganzip's local weights, and the feature extractor around it.

The download call pytorch-fid makes while building the network is redirected
to the file :mod:`ganzip.assets` found, for the duration of the construction.
`make_random_inception_weights` writes a random-weight stand-in for tests.
"""
from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import assets
from ..devices import resolve_device
from ..errors import GanzipError
from ..io import atomic_open
from .images import read_image

BLOCK_INDEX_BY_DIM = {64: 0, 192: 1, 768: 2, 2048: 3}
# Bump when anything that changes the features changes; part of every cache key.
PROTOCOL_VERSION = 1

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
    path = assets.resolve("inception_fid", weights, offline)
    record = assets.asset_record("inception_fid", path)
    state_dict = assets.load_state_dict("inception_fid", path)
    dev = resolve_device(device)
    model = build_inception(state_dict, dims).to(dev)
    return InceptionFeatures(model=model, dims=dims, device=dev, weights=record)


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
    path = Path(path)
    with atomic_open(path, "wb") as fh:  # the real asset is a torch .pth file; the stand-in mimics it
        torch.save(sd, fh)
    return path

"""Property tests of image loading: junk is skipped, never crashes; any valid image loads as 3xSxS in [-1,1]."""
from __future__ import annotations

import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ganzip.data import open_dataset

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _good_png(size=16) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), 128, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _load_all(ds) -> list[torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # corrupt files met while loading are reported as warnings
        return [ds[i]["A"] for i in range(len(ds))]


def _pil_usable(path: Path, decode: bool, min_side: int = 8) -> bool:
    """Whether PIL alone opens `path` (and, with `decode`, decodes all its pixels to RGB) at >= min_side px."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                if min(im.size) < min_side:
                    return False
                if decode:
                    with warnings.catch_warnings():
                        warnings.simplefilter("error", UserWarning)  # PIL warns on some truncated files
                        im.load()
                    im.convert("RGB")
        return True
    except Exception:  # noqa: BLE001 - any failure of PIL means the file is not usable
        return False


def _check_images(images, size):
    for img in images:
        assert img.shape == (3, size, size) and img.dtype == torch.float32
        assert torch.isfinite(img).all() and img.min() >= -1 and img.max() <= 1


# Real file signatures, so random tails reach the format parsers instead of failing identification.
MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"P6\n"]


@settings(max_examples=200, **SETTINGS)
@given(
    magic=st.sampled_from(MAGIC),
    data=st.binary(max_size=2048),
    ext=st.sampled_from([".png", ".jpg", ".jpeg", ".bmp", ".tif", ".webp", ".ppm"]),
)
def test_random_bytes_are_skipped_never_a_crash(magic, data, ext):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "good.png").write_bytes(_good_png())
        (folder / f"junk{ext}").write_bytes(magic + data)
        ds = open_dataset(folder, size=8, augment=False)
        assert len(ds) + ds.skipped == 2
        _check_images(_load_all(ds), 8)


@settings(max_examples=100, **SETTINGS)
@given(
    cut=st.integers(min_value=8, max_value=400),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    fmt=st.sampled_from(["PNG", "JPEG", "BMP", "TIFF"]),
    verify=st.booleans(),
)
def test_damaged_real_images_are_skipped_or_loaded(cut, flips, fmt, verify):
    """A valid file with its tail cut off and some bytes overwritten: skipped at scan or load time, or loaded."""
    buf = io.BytesIO()
    rng = np.random.default_rng(cut)
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(buf, format=fmt)
    raw = bytearray(buf.getvalue())
    raw = raw[: max(8, len(raw) * cut // 400)]
    for pos, value in flips:
        raw[pos % len(raw)] = value
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "a_good.png").write_bytes(_good_png())
        (folder / f"b_damaged.{fmt.lower()}").write_bytes(bytes(raw))
        usable = _pil_usable(folder / f"b_damaged.{fmt.lower()}", decode=verify)
        ds = open_dataset(folder, size=8, augment=False, verify=verify)
        # the count, checked against PIL read directly: with verify the pixels must decode, else the header suffices
        assert (len(ds), ds.skipped) == ((2, 0) if usable else (1, 1))
        _check_images(_load_all(ds), 8)


MODES = {
    # mode: (formats it can be saved in, how to make its pixels from uint8 noise)
    "RGB": (["PNG", "JPEG", "BMP", "TIFF"], lambda a: a),
    "RGBA": (["PNG", "TIFF"], lambda a: np.dstack([a, a[..., :1]])),
    "L": (["PNG", "JPEG", "BMP"], lambda a: a[..., 0]),
    "LA": (["PNG"], lambda a: np.dstack([a[..., 0], a[..., 1]])),
    "1": (["PNG", "BMP"], lambda a: a[..., 0] > 127),
    "P": (["PNG", "BMP"], lambda a: a),
    "CMYK": (["JPEG", "TIFF"], lambda a: np.dstack([a, a[..., :1]])),
    "I;16": (["PNG"], lambda a: a[..., 0].astype(np.uint16) * 257),
    "I": (["TIFF"], lambda a: a[..., 0].astype(np.int32) * 100),
    "F": (["TIFF"], lambda a: a[..., 0].astype(np.float32) / 255),
}


def _make_image(mode: str, arr: np.ndarray, opaque: bool = False) -> Image.Image:
    pixels = MODES[mode][1](arr)
    if opaque and mode in ("RGBA", "LA"):
        pixels = pixels.copy()
        pixels[..., -1] = 255
    if mode == "P":
        return Image.fromarray(pixels).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    if mode == "1":
        return Image.fromarray(pixels).convert("1")
    if mode in ("RGBA", "CMYK", "LA"):
        return Image.frombytes(mode, (arr.shape[1], arr.shape[0]), np.ascontiguousarray(pixels, dtype=np.uint8).tobytes())
    return Image.fromarray(pixels)


@settings(max_examples=120, **SETTINGS)
@given(
    mode=st.sampled_from(sorted(MODES)),
    fmt_index=st.integers(0, 3),
    w=st.integers(8, 48),
    h=st.integers(8, 48),
    size=st.integers(8, 32),
    augment=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_any_small_valid_image_loads_as_rgb_square_in_range(mode, fmt_index, w, h, size, augment, seed):
    formats = MODES[mode][0]
    fmt = formats[fmt_index % len(formats)]
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    img = _make_image(mode, arr)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"img.{fmt.lower()}"
        img.save(path, format=fmt)
        ds = open_dataset(tmp, size=size, augment=augment, seed=seed)
        assert (len(ds), ds.skipped) == (1, 0)
        _check_images([ds[0]["A"]], size)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_keeps_its_content(tmp_path, mode):
    """Not just the right shape: a bright image stays brighter than a dark one after conversion."""
    means = []
    for level in (40, 215):
        arr = np.full((16, 16, 3), level, np.uint8)
        fmt = MODES[mode][0][0]
        folder = tmp_path / f"{level}"
        folder.mkdir()
        _make_image(mode, arr, opaque=True).save(folder / f"x.{fmt.lower()}", format=fmt)
        means.append(open_dataset(folder, size=16, augment=False)[0]["A"].mean().item())
    if mode == "CMYK":  # ink: more of it is darker
        assert means[0] > means[1]
    else:
        assert means[1] > means[0]

"""Atomic file output: write to a temporary file, fsync, then rename.

Nothing ganzip writes is ever half-written: a crash leaves either the old file
or the new one. Disk-full and permission errors become `GanzipError`s that
name the path.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io as _stdio
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

import numpy as np
from PIL import Image
from safetensors.torch import save as safetensors_save

from .errors import GanzipError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _in_ganzip_home(path: Path | str) -> bool:
    """Is `path` under ganzip's own cache ($GANZIP_HOME), where no --out flag applies?"""
    home = os.environ.get("GANZIP_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ganzip")
    try:
        return Path(path).resolve().is_relative_to(Path(home).resolve())
    except (OSError, ValueError):
        return False


def os_error_message(exc: OSError, path: Path | str) -> str:
    if _in_ganzip_home(path):
        fix = "make $GANZIP_HOME writable, or set GANZIP_HOME to a writable folder"
        if exc.errno == errno.ENOSPC:
            return f"no space left on the device while writing {path}: free some space, or set GANZIP_HOME to a folder on another disk"
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"permission denied writing {path} in ganzip's cache: {fix}"
    if exc.errno == errno.ENOSPC:
        return f"no space left on the device while writing {path}: free some space or choose another --out"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"permission denied writing {path}: choose a writable --out folder"
    return f"could not write {path}: {exc.strerror or exc}"


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of `path`; on success fsync and rename it over `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise GanzipError(os_error_message(exc, path)) from exc
    tmp_path = Path(tmp)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs follow the umask like any file
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise GanzipError(os_error_message(exc, path)) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def save_safetensors_atomic(tensors: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Save tensors as safetensors atomically (contiguous CPU copies, metadata as str→str).

    The same tensors and metadata always give the same bytes (see :func:`canonical_safetensors`).
    """
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, canonical_safetensors(safetensors_save(clean, metadata=metadata)))


def canonical_safetensors(blob: bytes) -> bytes:
    """``blob`` with its header's metadata keys sorted, so equal content gives equal bytes.

    The safetensors library writes the metadata map in hash order, which changes
    from one process to the next; sorting it makes a file's SHA-256 a fingerprint
    of its content. Tensor offsets are relative to the data, so only the header
    (and its 8-byte-aligned length) is rewritten.
    """
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + blob[8 + n:]


_HASH_MEMO: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (memoised per path, size and mtime within this process)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_MEMO:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        _HASH_MEMO[key] = digest.hexdigest()
    return _HASH_MEMO[key]


def png_bytes(image, compress_level: int = 6) -> bytes:
    """A PNG file's bytes for ``image``: a uint8 array, H x W (grey) or H x W x C (C = 1, 3 or 4).

    The one PNG encoder of ganzip: sample grids, evaluation outputs and the
    built-in datasets all write through it, so a saved image holds exactly the
    uint8 values the metrics saw.
    """
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise TypeError(f"png_bytes takes uint8 images, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    buf = _stdio.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()

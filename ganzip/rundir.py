"""Output folders: one run at a time, and only ganzip's own files are ever replaced.

Two rules keep what the user had intact:

* **A lock per output folder.** `lock(folder)` takes an OS-level lock
  (`fcntl.flock` on ``.ganzip.lock``) that the kernel releases when the
  process dies, however it dies. A second run into the same folder fails at
  once and names the first run's PID.
* **A ledger of what ganzip wrote.** Every file ganzip writes into a folder is
  recorded, with its SHA-256, in that folder's ``.ganzip-files.json``.
  `check_replaceable` lets a command replace an existing file only when the
  user asked (`--overwrite`) *and* the ledger shows that ganzip wrote exactly
  that content. A file ganzip did not write, or that was edited since, is
  never deleted or overwritten.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path
from typing import Iterable, Iterator

from . import io as gio
from .io import sha256_file
from .errors import GanzipError

LOCK_FILE = ".ganzip.lock"
LEDGER_FILE = ".ganzip-files.json"
BOOKKEEPING = (LOCK_FILE, LEDGER_FILE)


# ---------------------------------------------------------------- lock


class FolderLock:
    """Held while a run writes into `folder`; see `lock`."""

    def __init__(self, folder: Path, created: bool, fh, new_file: bool):
        self.folder, self.created, self._fh, self._new_file = folder, created, fh, new_file

    def release(self) -> None:
        if self._fh is None:
            return
        import fcntl

        if self._new_file:  # unlinked while still held: `lock` checks the inode, so no one can hold a stale one
            with contextlib.suppress(OSError):
                (self.folder / LOCK_FILE).unlink()
        with contextlib.suppress(OSError):
            fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()
        self._fh = None
        if self.created:  # leave no empty folder behind a run that wrote nothing
            with contextlib.suppress(OSError):
                if not any(self.folder.iterdir()):
                    self.folder.rmdir()

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock(folder: str | os.PathLike, flag: str = "--out") -> FolderLock:
    """Take the folder's lock (creating the folder), or fail naming the run that holds it."""
    import fcntl

    folder = Path(folder)
    check_path(folder, flag)
    if folder.exists() and not folder.is_dir():
        raise GanzipError(f"{flag} {folder} is a file, not a folder: choose a folder path")
    created = not folder.exists()
    for _attempt in range(5):
        path = folder / LOCK_FILE
        try:
            folder.mkdir(parents=True, exist_ok=True)
            new_file = not path.exists()
            fh = open(path, "a+")
        except OSError as exc:
            raise GanzipError(gio.os_error_message(exc, folder)) from None
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                fh.close()
                raise GanzipError(gio.os_error_message(exc, path)) from None
            fh.seek(0)
            pid = fh.read().strip() or "unknown"
            fh.close()
            raise GanzipError(f"{flag} {folder} is in use by another ganzip run (PID {pid}): "
                              f"wait for it to finish, or choose another {flag}") from None
        try:
            same = os.fstat(fh.fileno()).st_ino == os.stat(path).st_ino
        except OSError:
            same = False
        if not same:  # the previous holder removed the file as we opened it: take the new one
            fh.close()
            continue
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        return FolderLock(folder, created, fh, new_file)
    raise GanzipError(f"could not lock {flag} {folder}: another run keeps replacing its lock; try again")


def check_path(path: Path, flag: str = "--out") -> None:
    """A path the OS cannot create, caught before any work: over-long names, dangling links."""
    for part in path.parts:
        if len(part.encode("utf-8", "surrogateescape")) > 255:
            raise GanzipError(f"{flag}: the path component {part[:40]}... is {len(part.encode())} bytes long; "
                              "file systems allow 255: choose a shorter name")
    if path.is_symlink() and not path.exists():
        raise GanzipError(f"{flag} {path} is a symbolic link to {os.readlink(path)}, which does not exist: "
                          "remove the link or choose another path")


# ---------------------------------------------------------------- ledger


def _ledger(folder: Path) -> dict[str, str]:
    try:
        data = json.loads((folder / LEDGER_FILE).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return {k: v for k, v in files.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(files, dict) else {}


def record(folder: str | os.PathLike, paths: Iterable[str | os.PathLike]) -> None:
    """Note in the folder's ledger that ganzip wrote these files (their current content)."""
    folder = Path(folder)
    files = _ledger(folder)
    changed = False
    for p in paths:
        p = Path(p)
        full = p if p.is_absolute() else folder / p
        targets = [q for q in full.rglob("*") if q.is_file()] if full.is_dir() else [full]
        for q in targets:
            if q.is_file():
                files[q.relative_to(folder).as_posix()] = sha256_file(q)
                changed = True
    if changed:
        gio.atomic_write_json(folder / LEDGER_FILE, {"kind": "ganzip-files", "files": files})


def owned(folder: str | os.PathLike, rel: str | os.PathLike) -> bool:
    """True when ganzip wrote `folder/rel` and nobody changed it since (for a folder: every file in it)."""
    folder = Path(folder)
    full = folder / rel
    files = _ledger(folder)
    if full.is_symlink():
        return False
    if full.is_dir():
        inside = [q for q in full.rglob("*") if not q.is_dir()]
        return all(owned(folder, q.relative_to(folder)) for q in inside)
    if not full.is_file():
        return not full.exists()
    key = full.relative_to(folder).as_posix()
    return key in files and files[key] == sha256_file(full)


def check_replaceable(folder: str | os.PathLike, names: Iterable[str], *, overwrite: bool, what: str,
                      flag: str = "--out") -> list[Path]:
    """Before any work: the existing outputs among `names`, each one ganzip's and the user's to replace.

    Raises when one exists and `overwrite` is False, or when one exists that
    ganzip did not write (then even `overwrite` does not replace it).
    Returns the existing paths.
    """
    folder = Path(folder)
    existing = [folder / n for n in names if (folder / n).exists() or (folder / n).is_symlink()]
    for path in existing:
        if not owned(folder, path.relative_to(folder)):
            raise GanzipError(f"{what}: {path} exists and was not written by ganzip (or was changed since): "
                              f"ganzip never replaces it; move it away or choose another {flag}")
    if existing and not overwrite:
        shown = ", ".join(p.name for p in existing[:3])
        raise GanzipError(f"{what}: {flag} {folder} already holds {shown} from an earlier ganzip run: "
                          f"pass --overwrite to replace them, or choose another {flag}")
    return existing


def remove_owned(folder: str | os.PathLike, paths: Iterable[Path]) -> None:
    """Delete outputs that `check_replaceable` cleared (only files the ledger shows are ganzip's)."""
    folder = Path(folder)
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            for q in sorted(path.rglob("*"), reverse=True):
                if q.is_file() and owned(folder, q.relative_to(folder)):
                    q.unlink()
                elif q.is_dir():
                    with contextlib.suppress(OSError):
                        q.rmdir()
            with contextlib.suppress(OSError):
                path.rmdir()
        elif path.is_file() and owned(folder, path.relative_to(folder)):
            path.unlink()


@contextlib.contextmanager
def replacing(folder: str | os.PathLike, names: Iterable[str], *, overwrite: bool, what: str,
              flag: str = "--out") -> Iterator[None]:
    """Check, lock, clear ganzip's old outputs, run the body, then record what now exists."""
    folder = Path(folder)
    names = list(names)
    check_path(folder, flag)
    if folder.exists() and not folder.is_dir():
        raise GanzipError(f"{flag} {folder} is a file, not a folder: choose a folder path")
    with lock(folder, flag):
        existing = check_replaceable(folder, names, overwrite=overwrite, what=what, flag=flag)
        remove_owned(folder, existing)
        try:
            yield
        finally:
            record(folder, [n for n in names if (folder / n).exists()])

"""Pretrained files ganzip needs, where it looks for them, and their hashes.

ganzip never downloads weights as a side effect of building a model. Each
pretrained file is described by an :class:`AssetSpec` (file name, published
SHA-256, URL), kept apart from the code that uses it, like timm's
``pretrained_cfg``. :func:`resolve` finds a file in this order:

1. an explicit path (a ``--inception-weights FILE``-style flag);
2. ``$GANZIP_HOME/assets/`` (default ``~/.cache/ganzip/assets/``), where
   ``ganzip assets import FILE`` installs files after checking their hash;
3. the torch hub cache, ``$TORCH_HOME/hub/checkpoints/`` (default
   ``~/.cache/torch/hub/checkpoints/``), where torchvision and pytorch-fid
   leave their downloads;
4. for ``vgg16`` only: timm's Hugging Face cache copy of the same
   torchvision weights (``timm/vgg16.tv_in1k``), which has no published
   hash and is therefore recorded as unverified;
5. a download, only when not offline (``offline=True`` or
   ``GANZIP_OFFLINE=1``) and the host is reachable: announced on stderr with
   its size, source and destination, with a progress bar, atomic and
   hash-checked. ``GANZIP_ASSETS_MIRROR`` serves the files from an internal
   host instead (``$GANZIP_ASSETS_MIRROR/FILENAME``).

A file found in a cache whose hash is wrong is an error (a corrupt or
different file must never stand in for the published one). A file passed
explicitly is used as given, and :func:`asset_record` marks it
``verified: False`` when its hash differs, so reports say so.
"""
from __future__ import annotations

import glob
import hashlib
import os
import shutil
import socket
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

from .errors import AssetMissingError, GanzipError
from .io import atomic_open, sha256_file


class UnverifiedAssetWarning(UserWarning):
    """An explicitly given asset file is used although its hash is not the published one."""


@dataclass(frozen=True)
class AssetSpec:
    """One pretrained file: what it is called, its published hash, where it comes from."""

    name: str
    filename: str
    sha256: str
    url: str
    size: int | None = None
    description: str = ""
    flag: str = ""  # the CLI option that points at this file explicitly
    hash_note: str = ""  # where the hash comes from

    @property
    def hash_is_prefix(self) -> bool:
        return len(self.sha256) < 64


_REGISTRY: dict[str, AssetSpec] = {}


def register_asset(spec: AssetSpec) -> AssetSpec:
    """Add an asset to the registry (a later registration with the same name replaces it)."""
    _REGISTRY[spec.name] = spec
    return spec


register_asset(AssetSpec(
    name="inception_fid",
    filename="pt_inception-2015-12-05-6726825d.pth",
    sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
    url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
    size=95_628_359,
    description="Inception-v3 FID weights (TensorFlow 2015-12-05 graph ported by pytorch-fid)",
    flag="--inception-weights",
    hash_note="pytorch-fid release file; torch-fidelity re-hosts the same bytes under the same 8-digit prefix",
))
register_asset(AssetSpec(
    name="alexnet",
    filename="alexnet-owt-7be5be79.pth",
    sha256="7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
    url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    size=244_408_911,
    description="torchvision AlexNet ImageNet weights (LPIPS backbone)",
    flag="--lpips-weights",
    hash_note="torchvision IMAGENET1K_V1; the 8 digits in the file name are the hash prefix",
))
register_asset(AssetSpec(
    name="vgg16",
    filename="vgg16-397923af.pth",
    sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
    url="https://download.pytorch.org/models/vgg16-397923af.pth",
    size=553_433_881,
    description="torchvision VGG-16 ImageNet weights (the perceptual loss)",
    flag="--vgg-weights",
    hash_note="torchvision IMAGENET1K_V1; the 8 digits in the file name are the hash prefix",
))

# timm publishes torchvision's VGG-16 weights again as safetensors on the HF hub.
_TIMM_HF_REPOS = {"vgg16": "models--timm--vgg16.tv_in1k"}


def get_spec(name: str) -> AssetSpec:
    """The registered spec for `name`; a clear error listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise GanzipError(f"unknown asset {name!r}: known assets are {', '.join(sorted(_REGISTRY))}") from None


def list_asset_names() -> list[str]:
    return sorted(_REGISTRY)


# ---------------------------------------------------------------- locations

def ganzip_home() -> Path:
    """`$GANZIP_HOME`, else `~/.cache/ganzip` (honouring `$XDG_CACHE_HOME`)."""
    env = os.environ.get("GANZIP_HOME")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(cache).expanduser() / "ganzip"


def assets_dir() -> Path:
    return ganzip_home() / "assets"


def torch_hub_checkpoints() -> Path:
    """Where torch.hub keeps downloads: `$TORCH_HOME/hub/checkpoints` (torch's own defaults)."""
    env = os.environ.get("TORCH_HOME")
    if env:
        home = Path(env).expanduser()
    else:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
        home = Path(cache).expanduser() / "torch"
    return home / "hub" / "checkpoints"


def hf_hub_cache() -> Path:
    env = os.environ.get("HF_HUB_CACHE")
    if env:
        return Path(env).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(home).expanduser() / "hub"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(cache).expanduser() / "huggingface" / "hub"


def search_locations(name: str) -> list[Path]:
    """The places ganzip looks for asset `name`, in order (explicit paths come first, not listed)."""
    spec = get_spec(name)
    places = [assets_dir() / spec.filename, torch_hub_checkpoints() / spec.filename]
    if name in _TIMM_HF_REPOS:
        places.append(hf_hub_cache() / _TIMM_HF_REPOS[name] / "snapshots" / "*" / "model.safetensors")
    return places


def _expand(place: Path) -> list[Path]:
    if "*" not in place.name and "*" not in str(place.parent):
        return [place] if place.is_file() else []
    return sorted(Path(p) for p in glob.glob(str(place)) if os.path.isfile(p))


def _is_timm_copy(name: str, path: Path) -> bool:
    repo = _TIMM_HF_REPOS.get(name)
    return bool(repo) and repo in path.parts and path.suffix == ".safetensors"


# ---------------------------------------------------------------- hashing


def hash_matches(spec: AssetSpec, digest: str) -> bool:
    """True when `digest` is the published hash (or starts with the published prefix)."""
    return digest.startswith(spec.sha256) if spec.hash_is_prefix else digest == spec.sha256


def verify(name: str, path: str | os.PathLike) -> bool:
    """Does the file at `path` carry the published hash of asset `name`?"""
    return hash_matches(get_spec(name), sha256_file(path))


def _wrong_hash_message(spec: AssetSpec, path: Path, digest: str) -> str:
    return (f"{path} is not the published {spec.name} file: its SHA-256 is {digest}, expected {spec.sha256}. "
            f"Delete or replace it (ganzip assets import FILE checks a file before installing it), "
            f"or pass a file explicitly with {spec.flag or 'an explicit path'} to use it unverified")


# ---------------------------------------------------------------- resolve

def is_offline(offline: bool | None = None) -> bool:
    """`offline` if given, else whether `GANZIP_OFFLINE` is set to a true value."""
    if offline:
        return True
    return os.environ.get("GANZIP_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


MIRROR_ENV = "GANZIP_ASSETS_MIRROR"


def asset_url(spec: AssetSpec) -> str:
    """Where `spec` is downloaded from: `$GANZIP_ASSETS_MIRROR/FILENAME` when a mirror is set, else its published URL."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return spec.url
    if urllib.parse.urlparse(mirror).scheme not in ("http", "https"):
        raise GanzipError(f"{MIRROR_ENV}={mirror!r} is not an http(s) URL: set it to the folder URL that serves "
                          f"the files, for example http://assets.internal/ganzip/")
    return mirror.rstrip("/") + "/" + urllib.parse.quote(spec.filename)


def _reachable(url: str, timeout: float = 3.0) -> bool:
    parsed = urllib.parse.urlparse(url)
    if not parsed.hostname:
        return False
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _missing_message(spec: AssetSpec, looked: list[Path], why_no_download: str) -> str:
    where = "; ".join(str(p) for p in looked)
    return (f"{spec.filename} ({spec.description}) was not found. Looked in: {where}. "
            f"{why_no_download} Fix: get the file from {spec.url} on a machine with internet, then run "
            f"`ganzip assets import {spec.filename}`, or pass it with {spec.flag or 'an explicit path'} FILE, "
            f"or put it in $GANZIP_HOME/assets/ (now {assets_dir()})")


def download(name: str, timeout: float = 60.0, progress: bool = True) -> Path:
    """Download asset `name` into `$GANZIP_HOME/assets/`, announced, streamed, hash-checked, then renamed.

    The source is the published URL, or `$GANZIP_ASSETS_MIRROR/FILENAME`. A line
    on stderr names the size, source and destination, and a progress bar
    follows. `timeout` bounds every read, so a stalled server ends the
    download. Nothing is left behind unless the whole file arrived with the
    published hash.
    """
    import http.client
    import sys

    from tqdm import tqdm


    spec = get_spec(name)
    url = asset_url(spec)
    dest = assets_dir() / spec.filename
    digest = hashlib.sha256()
    size = f"{spec.size / 1e6:.0f} MB" if spec.size else "size unknown"
    print(f"ganzip: downloading {spec.filename} ({size}) from {url} to {dest}; "
          "--offline or GANZIP_OFFLINE=1 prevents this", file=sys.stderr, flush=True)

    class _HashMismatch(Exception):
        pass

    received = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (http(s) URL checked above)
            total = int(response.headers.get("Content-Length") or spec.size or 0) or None
            with atomic_open(dest, "wb") as fh, tqdm(total=total, unit="B", unit_scale=True, desc=spec.filename,
                                                   file=sys.stderr, disable=not progress, leave=False) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    digest.update(chunk)
                    fh.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                if total is not None and received != total:
                    raise http.client.IncompleteRead(b"", total - received)
                if not hash_matches(spec, digest.hexdigest()):
                    raise _HashMismatch  # atomic_open removes the temp file
    except _HashMismatch:
        raise GanzipError(f"the download of {url} has SHA-256 {digest.hexdigest()}, expected {spec.sha256}: "
                          "not installed; check the mirror, or get the file by hand and run `ganzip assets import`") from None
    except http.client.IncompleteRead:
        raise AssetMissingError(f"the download of {url} stopped after {received:,} bytes (expected {total:,}): "
                                "nothing was installed; try again, or get the file by hand and run "
                                "`ganzip assets import FILE`") from None
    except (OSError, http.client.HTTPException) as exc:
        why = "timed out (the server stopped sending)" if isinstance(exc, TimeoutError) or "timed out" in str(exc) else str(exc)
        raise AssetMissingError(_missing_message(spec, search_locations(name), f"The download from {url} failed: {why}.")) from None
    print(f"ganzip: installed {dest}", file=sys.stderr, flush=True)
    return dest


def resolve(name: str, path: str | os.PathLike | None = None, offline: bool | None = None) -> Path:
    """Find the file for asset `name` (see the module docstring for the order).

    An explicit `path` must exist; it is returned even if its hash differs (a
    warning says so and :func:`asset_record` marks it unverified). Files found
    in the caches must carry the published hash. Raises
    :class:`~ganzip.errors.AssetMissingError` naming the file, the places
    searched and the fix.
    """
    spec = get_spec(name)
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise AssetMissingError(f"{spec.flag or name} {p}: no such file (expected {spec.filename})")
        if not verify(name, p):
            warnings.warn(f"{p} is not the published {spec.filename} (SHA-256 {sha256_file(p)[:12]}... differs): "
                          "used as given and recorded as unverified; numbers computed with it are not "
                          "comparable to published ones", UnverifiedAssetWarning, stacklevel=2)
        return p
    looked = search_locations(name)
    for place in looked:
        for candidate in _expand(place):
            if _is_timm_copy(name, candidate):
                warnings.warn(f"using timm's copy of the torchvision {name} weights, {candidate}: it has no "
                              "published hash, so it is recorded as unverified", UnverifiedAssetWarning, stacklevel=2)
                return candidate
            digest = sha256_file(candidate)
            if not hash_matches(spec, digest):
                raise GanzipError(_wrong_hash_message(spec, candidate, digest))
            return candidate
    if is_offline(offline):
        raise AssetMissingError(_missing_message(spec, looked, "Offline (--offline or GANZIP_OFFLINE=1), so no download."))
    url = asset_url(spec)
    if not _reachable(url):
        raise AssetMissingError(_missing_message(spec, looked, f"{url} is not reachable, so no download."))
    return download(name)


def asset_record(name: str, path: str | os.PathLike) -> dict:
    """A report entry for the file used as asset `name`: {name, path, sha256, verified, ...}."""
    spec = get_spec(name)
    p = Path(path)
    digest = sha256_file(p)
    record = {
        "name": name,
        "path": str(p),
        "sha256": digest,
        "expected_sha256": spec.sha256,
        "verified": hash_matches(spec, digest),
    }
    if _is_timm_copy(name, p):
        record["note"] = "timm's Hugging Face copy of the torchvision weights (no published hash to check)"
    elif spec.hash_is_prefix:
        record["note"] = "checked against the published hash prefix only"
    return record


def load_state_dict(name: str, path: str | os.PathLike, trust_pickle: bool = False) -> dict:
    """Read the tensors of asset file `path` (a .pth via `torch.load(weights_only=True)`, or safetensors).

    timm's safetensors copy of VGG-16 holds the convolutional `features.*`
    tensors under torchvision's names; only those are returned for it.
    """
    import torch

    p = Path(path)
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(p))
        if _is_timm_copy(name, p):
            sd = {k: v for k, v in sd.items() if k.startswith("features.")}
        return sd
    try:
        sd = torch.load(p, map_location="cpu", weights_only=not trust_pickle)
    except Exception as exc:  # unpickling errors come in many types
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        hint = "" if trust_pickle else " (read with weights_only=True: a file that pickles objects is refused)"
        raise GanzipError(f"could not read {p} as {name} weights{hint}: {type(exc).__name__}: {first}") from exc
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise GanzipError(f"{p} does not hold a state dict of tensors (found {type(sd).__name__})")
    return sd


# ---------------------------------------------------------------- listing and import

def status(name: str, check_hash: bool = True) -> dict:
    """Where ganzip looks for `name`, whether it is there, and whether its hash is right."""
    spec = get_spec(name)
    found = None
    verified = None
    for place in search_locations(name):
        hits = _expand(place)
        if hits:
            found = hits[0]
            if check_hash:
                verified = False if _is_timm_copy(name, found) else verify(name, found)
            break
    return {
        "name": name,
        "filename": spec.filename,
        "description": spec.description,
        "sha256": spec.sha256,
        "url": spec.url,
        "flag": spec.flag,
        "locations": [str(p) for p in search_locations(name)],
        "present": found is not None,
        "path": str(found) if found else None,
        "verified": verified,
    }


def list_assets(check_hash: bool = True) -> list[dict]:
    """:func:`status` for every registered asset."""
    return [status(n, check_hash=check_hash) for n in list_asset_names()]


def import_asset(file: str | os.PathLike, name: str | None = None) -> Path:
    """Check `file`'s hash against the registry and copy it into `$GANZIP_HOME/assets/`.

    `name` may be omitted: the file is recognised by its hash, or else by its
    file name. A hash that does not match raises GanzipError (nothing is
    installed). Returns the installed path.
    """

    src = Path(file).expanduser()
    if not src.is_file():
        raise GanzipError(f"{src}: no such file")
    digest = sha256_file(src)
    if name is None:
        by_hash = [s for s in _REGISTRY.values() if hash_matches(s, digest)]
        by_file = [s for s in _REGISTRY.values() if s.filename == src.name]
        if by_hash:
            spec = by_hash[0]
        elif by_file:
            spec = by_file[0]
        else:
            raise GanzipError(f"{src} matches no known asset by hash or file name: pass --name "
                              f"({', '.join(list_asset_names())})")
    else:
        spec = get_spec(name)
    if not hash_matches(spec, digest):
        raise GanzipError(f"{src} has SHA-256 {digest}, but {spec.name} ({spec.filename}) must have {spec.sha256}: "
                          f"not installed. Use the published file, or pass this one explicitly with "
                          f"{spec.flag or 'an explicit path'} to use it unverified")
    dest = assets_dir() / spec.filename
    if dest.is_file() and verify(spec.name, dest):
        return dest
    with open(src, "rb") as fin, atomic_open(dest, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
    return dest


__all__ = [
    "AssetSpec", "UnverifiedAssetWarning", "register_asset", "get_spec", "list_asset_names", "ganzip_home", "assets_dir",
    "torch_hub_checkpoints", "search_locations", "sha256_file", "verify", "resolve", "asset_record",
    "load_state_dict", "status", "list_assets", "import_asset", "download", "is_offline",
]

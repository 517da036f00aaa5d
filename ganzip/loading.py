"""Any checkpoint or class in, an `nn.Module` out.

`load_generator` accepts a state dict (.pth/.pt/.safetensors) with an
architecture, a TorchScript archive, a ganzip student, or (only with
`trust_pickle=True`) a whole pickled module.
"""
from __future__ import annotations

import json
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from . import autodetect, formats, models, trust, values
from .devices import resolve_device
from .errors import GanzipError, in_stage
from .metrics.cost import infer_in_channels
from .models import SPANDREL_PREFIX
from .student_file import load_student

# Keys that checkpoints commonly wrap a generator's state dict in, most specific first.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "netG", "netG_A", "G", "generator", "model", "net", "ema", "params")
_INSTANCE_NORM_LEGACY = ("running_mean", "running_var", "num_batches_tracked")
AUTO = "auto"  # --arch auto: recognise the architecture with spandrel (ganzip.autodetect)


# ---------------------------------------------------------------- arch options

def parse_value(text: str) -> Any:
    """'3' -> 3, '0.5' -> 0.5, 'true' -> True, 'none' -> 'none' (a string), else the string."""
    return values.parse_value(text, values.OPTION)


def parse_arch_opts(items) -> dict[str, Any]:
    """Parse repeated `--arch-opt key=value` strings into a dict of typed values."""
    if isinstance(items, Mapping):
        return dict(items)
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise GanzipError(f"--arch-opt {item!r} is not key=value (for example --arch-opt ngf=64)")
        out[key] = parse_value(value)
    return out


build_arch = models.build  # where it was first defined; `ganzip.models.build` is the one copy


# ---------------------------------------------------------------- reading files

def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("constants.pkl") or "/code/" in n for n in names)


read_safetensors = formats.read  # where it was first defined; `ganzip.formats.read` is the one copy


def read_checkpoint(path: str | Path, trust_pickle: bool = False) -> Any:
    """Read a .pth/.pt/.safetensors/TorchScript file without running untrusted code."""
    path = Path(path)
    if not path.exists():
        raise GanzipError(f"no such file: {path}")
    if path.is_dir():
        raise GanzipError(f"{path} is a folder, not a checkpoint file")
    if path.stat().st_size == 0:
        raise GanzipError(f"{path} is empty (0 bytes): re-download or re-export the checkpoint")
    if path.suffix == ".safetensors":
        return read_safetensors(path)[0]
    if _is_torchscript(path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; ganzip export --format pt2 replaces it
                return torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise GanzipError(f"{path} looks like a TorchScript archive but could not be loaded: {exc}") from exc
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # Only a refused *global* (a class or function reference) means "pickled objects";
        # anything else the weights-only unpickler trips on is a damaged or foreign file.
        if "Unsupported global" not in str(exc) and "GLOBAL" not in str(exc):
            raise GanzipError(f"{path} is not a PyTorch checkpoint or is corrupt ({_first_line(exc)})") from exc
        if not trust_pickle:
            raise GanzipError(
                f"{path} contains pickled Python objects (a whole model, or custom classes), and loading "
                "them can run arbitrary code. Pass --trust-pickle only if you trust where it came from, "
                "or re-save it as a state_dict / safetensors"
            ) from exc
    except Exception as exc:  # the unpickler raises many types on garbage
        raise GanzipError(f"{path} is not a PyTorch checkpoint or is truncated/corrupt ({_first_line(exc)})") from exc
    # trust_pickle: the user vouched for this file.
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False)  # --trust-pickle path
    except Exception as exc:
        raise GanzipError(f"{path} could not be unpickled even with --trust-pickle ({_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    if len(line) > 200:  # torch packs whole essays into one line
        line = line[:197] + "..."
    return f"{exc.__class__.__name__}: {line}".strip()


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """Find the generator's state dict inside common wrappers and strip `module.` prefixes."""
    seen = 0
    while not _is_tensor_dict(obj) and isinstance(obj, Mapping) and seen < 4:
        inner = next((obj[k] for k in WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            nested = [v for v in obj.values() if _is_tensor_dict(v)]
            if len(nested) == 1:
                inner = nested[0]
            else:
                break
        obj = inner
        seen += 1
    if isinstance(obj, Mapping):  # tolerate non-tensor extras (epoch counters...) beside tensors
        obj = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not _is_tensor_dict(obj):
        raise GanzipError(
            "could not find a state dict of tensors in this checkpoint (looked under "
            + ", ".join(WRAPPER_KEYS) + ")"
        )
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def drop_legacy_instance_norm_keys(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old PyTorch saved running_* buffers for InstanceNorm; the CycleGAN repo deletes them on load."""
    expected = set(model.state_dict())
    inorm = {n for n, m in model.named_modules() if isinstance(m, nn.InstanceNorm2d) and not m.track_running_stats}
    out = {}
    for k, v in state.items():
        mod, _, leaf = k.rpartition(".")
        if k not in expected and leaf in _INSTANCE_NORM_LEGACY and mod in inorm:
            continue
        out[k] = v
    return out


def _shapes(sd: Mapping[str, torch.Tensor]) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in sd.items()}


def _mismatch(model_sd: Mapping, state: Mapping) -> tuple[list, list, list]:
    ms, ss = _shapes(model_sd), _shapes(state)
    missing = sorted(set(ms) - set(ss))
    unexpected = sorted(set(ss) - set(ms))
    wrong = sorted(k for k in set(ms) & set(ss) if ms[k] != ss[k])
    return missing, unexpected, wrong


def _suggest(arch: str, opts: Mapping, state: Mapping[str, torch.Tensor]) -> str | None:
    """Try nearby zoo configurations (on the meta device, cheap) and name one that fits."""
    if ":" in arch:
        return None
    first = next((v for k, v in state.items() if v.ndim == 4), None)
    ngfs = {opts.get("ngf", 64)}
    if first is not None:
        ngfs.add(int(first.shape[0]))
    candidates = []
    for name in models.list_models("generator"):
        for norm in models.NORMS:
            for ngf in sorted(ngfs):
                cand = dict(opts, ngf=ngf, norm=norm)
                if name == arch and cand == dict(opts):
                    continue
                candidates.append((name, cand))
    for name, cand in candidates:
        try:
            with torch.device("meta"):
                m = models.create(name, **{k: v for k, v in cand.items() if k in models.model_options(name)})
        except Exception:
            continue
        st = drop_legacy_instance_norm_keys(m, dict(state))
        if not any(_mismatch(m.state_dict(), st)):
            diff = {k: v for k, v in cand.items() if dict(opts).get(k, models.model_options(name).get(k)) != v}
            parts = ([f"--arch {name}"] if name != arch else []) + [f"--arch-opt {k}={v}" for k, v in diff.items()]
            return " ".join(parts) if parts else None
    return None


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor], arch: str = "", opts: Mapping | None = None,
                    source: str = "checkpoint") -> nn.Module:
    state = drop_legacy_instance_norm_keys(model, state)
    missing, unexpected, wrong = _mismatch(model.state_dict(), state)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} of another shape (e.g. {k}: file {tuple(state[k].shape)} vs model {tuple(model.state_dict()[k].shape)})")
        hint = _suggest(arch, opts or {}, state) if arch else None
        fix = f"; it loads with {hint}" if hint else "; check --arch and --arch-opt (norm, ngf, blocks)"
        raise GanzipError(f"the weights in {source} do not fit --arch {arch or '?'}: " + "; ".join(parts) + fix)
    model.load_state_dict(state, strict=True)
    return model


# ---------------------------------------------------------------- public entry point

@in_stage("loading the model")
def load_generator(source, arch: str | None = None, arch_opts=None, trust_pickle: bool = False,
                   device="cpu", trust_code: bool = False) -> nn.Module:
    """Load a generator from anything users bring, in eval mode on `device`.

    Args:
        source: a path (.pth/.pt/.safetensors state dict, TorchScript archive,
            ganzip student safetensors, pickled module) or an `nn.Module`, or
            None to build `arch` with fresh weights.
        arch: a zoo name (`ganzip.models.list_models()`) or
            `package.module:callable`; needed for bare state dicts.
        arch_opts: dict or list of "key=value" strings passed to the architecture.
        trust_pickle: allow unpickling whole objects (can run code: only for trusted files).
        device: "auto", "cpu", "cuda" or a torch.device.
        trust_code: let a file's recorded factory function and its options run
            without confirming each option (see docs/security.md).
    """
    dev = resolve_device(device)
    opts = parse_arch_opts(arch_opts)
    if isinstance(source, nn.Module):
        return source.to(dev).eval()
    if source is None:
        if not arch:
            raise GanzipError("give a model file or --arch NAME to build a model")
        return build_arch(arch, opts).to(dev).eval()
    path = Path(source)
    if path.suffix == ".safetensors" and path.exists() and path.stat().st_size > 0:
        tensors, meta = read_safetensors(path)
        kind = formats.kind_of(meta)
        if kind == formats.STUDENT:
            return load_student(path, device=dev, arch=arch, arch_opts=opts, trust_code=trust_code)
        if kind == formats.GENERATOR and arch == AUTO:
            arch = None  # the file records its architecture: nothing to recognise
        if kind == formats.GENERATOR and (not arch or ":" in arch):
            recorded, file_opts = _recorded_arch(meta, path, arch)
            if opts and not arch:
                raise GanzipError(
                    f"{path.name} records its architecture ({recorded}); --arch-opt would be ignored: "
                    "drop --arch-opt, or pass --arch as well to build another architecture"
                )
            if recorded == arch or not arch:
                origin = trust.Origin(source=f"generator file {path.name}", user_opts=opts, trust_code=trust_code)
                model = build_arch(recorded, {**file_opts, **opts}, origin=origin)
                load_state_into(model, unwrap_state_dict(tensors), recorded, file_opts, source=path.name)
                return model.to(dev).eval()
        obj: Any = tensors
    else:
        obj = read_checkpoint(path, trust_pickle=trust_pickle)
    if isinstance(obj, torch.jit.ScriptModule):
        return obj.to(dev).eval()
    if isinstance(obj, nn.Module):
        return obj.to(dev).eval()
    if not arch or arch == AUTO or arch.startswith(SPANDREL_PREFIX):
        return load_auto(obj, path.name, arch=arch).to(dev).eval()
    state = unwrap_state_dict(obj)
    model = build_arch(arch, opts)
    load_state_into(model, state, arch, opts, source=path.name)
    return model.to(dev).eval()


def load_auto(obj: Any, source: str, arch: str | None = None) -> nn.Module:
    """A bare state dict whose architecture spandrel recognises (``--arch auto``, or no ``--arch`` at all).

    ``obj`` is what the file holds: a state dict, or one wrapped the usual
    ways; BasicSR's releases (Real-ESRGAN...) keep the weights to use under
    ``params_ema``, which wins over ``params``.

    With ``arch`` None a miss (or spandrel not installed) is the usual
    "holds only weights" error; with ``arch="auto"`` the miss says that
    spandrel does not know the file. ``arch="spandrel/ID"`` (as recorded in a
    report) also checks that spandrel finds that architecture.
    """
    if isinstance(obj, Mapping):
        for key in ("params_ema", "params-ema"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    state = unwrap_state_dict(obj)
    if not arch:
        try:
            import spandrel  # noqa: F401
        except ImportError:
            raise GanzipError(
                f"{source} holds only weights: name the architecture with --arch "
                f"({', '.join(models.list_models('generator'))}) or --arch package.module:callable, "
                f"or --arch auto to recognise it ({autodetect.INSTALL_HINT})"
            ) from None
        try:
            return autodetect.detect(state, source)
        except GanzipError:
            raise GanzipError(
                f"{source} holds only weights and spandrel does not recognise them: name the architecture with --arch "
                f"({', '.join(models.list_models('generator'))}) or --arch package.module:callable"
            ) from None
    model = autodetect.detect(state, source)
    found = model.ganzip_spec["arch"]
    if arch not in (AUTO, found):
        raise GanzipError(f"{source} holds a {found} model, not {arch}: pass --arch {found} or --arch auto")
    return model


def _recorded_arch(meta: Mapping[str, str], path: Path, given: str | None = None) -> tuple[str, dict]:
    """The architecture a ganzip ``generator`` file records (``ganzip.teacher.save_generator``)."""
    try:
        spec = json.loads(meta["ganzip.arch_spec"])
        arch, opts = spec["arch"], spec.get("opts", {})
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        raise GanzipError(f"{path} has damaged ganzip metadata ({_first_line(exc)}): load it with --arch") from exc
    what = f"generator file {path.name}"
    opts = trust.check_opts(opts, what)
    trust.confirm(arch, given, opts, f"generator file {path.name}")  # never import code the user did not name
    return arch, opts


MIN_SIZE, MAX_SIZE = 8, 4096


def check_size_value(size: Any, flag: str = "--size") -> int:
    """An image side ganzip can run at: a whole number from 8 to 4096 pixels."""
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise GanzipError(f"{flag} must be a whole number of pixels from {MIN_SIZE} to {MAX_SIZE}, got {size!r} "
                          "(the input image side; for example --size 256)")
    return size


def check_image_model(model: nn.Module, size: int, in_channels: int | None = None, device="cpu") -> None:
    """Raise a clear error unless `model` maps a 1×C×size×size image to an N×C×H×W tensor."""
    check_size_value(size)
    c = in_channels or infer_in_channels(model, size=size)
    x = torch.zeros(1, c, size, size, device=resolve_device(device))
    try:
        with torch.inference_mode():
            y = model(x)
    except Exception as exc:
        guessed = "" if in_channels else f"{c} image channels is a guess: give the right count with --in-channels; "
        raise GanzipError(f"the model failed on a 1x{c}x{size}x{size} input ({_first_line(exc)}); "
                          f"{guessed}check --size, --arch") from exc
    if not isinstance(y, torch.Tensor) or y.ndim != 4:
        kind = type(y).__name__ if not isinstance(y, torch.Tensor) else f"a tensor of shape {tuple(y.shape)}"
        raise GanzipError(f"the model returned {kind}, not an image tensor (N x C x H x W): ganzip needs a generator that maps images to images")

"""What a run is made of before it trains: the resolved recipe, the data, the output geometry, the discriminator."""
from __future__ import annotations

import copy
import hashlib

import torch
import torch.nn as nn

from .. import data as gdata
from ..config import RecipeConfig
from ..errors import GanzipError
from ..models import create, init_weights
from ..recipes import resolve_recipe
from ..imaging import output_geometry
from .options import DataBundle

def module_sha256(model: nn.Module) -> str:
    """SHA-256 over a module's state dict (names and bytes, sorted): the identity of an in-memory teacher."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def resolve_config(recipe, overrides, *, size, steps, epochs, batch_size, seed) -> RecipeConfig:
    """The recipe with ``overrides`` (``--set``) and the ``train.*`` shortcuts applied, checked."""
    if steps is not None and epochs is not None:
        raise GanzipError("give --steps or --epochs, not both")
    flags = list(overrides or ())
    if size is not None:
        flags.append(f"train.size={int(size)}")
    if steps is not None:
        if int(steps) < 1:
            raise GanzipError(f"--steps must be at least 1, got {steps}")
        flags.append(f"train.steps={int(steps)}")
    if epochs is not None:
        if int(epochs) < 1:
            raise GanzipError(f"--epochs must be at least 1, got {epochs}")
        flags += [f"train.epochs={int(epochs)}", "train.steps=0"]
    if batch_size is not None:
        flags.append(f"train.batch_size={int(batch_size)}")
    if seed is not None:
        flags.append(f"train.seed={int(seed)}")
    return resolve_recipe(recipe, flags)


def open_training_data(data, target, cfg: RecipeConfig, *, in_channels: int = 3, out_channels: int | None = None,
                       scale: int = 1, direction: str = "AtoB") -> DataBundle:
    """Open ``data`` (folder or ``builtin:NAME``) and ``target``; split off the held-out images.

    Images are read with the generator's ``in_channels`` (inputs) and
    ``out_channels`` (targets); target images are read at ``scale`` times
    ``train.size``. With ``scale`` > 1, ``--data LR_DIR --target HR_DIR`` are
    paired by file name (``ganzip.data.open_pairs``): the HR images are the
    ground truth and D's real images; when no file name matches, the HR
    images are unpaired real images for D.
    """
    t = cfg.train
    if isinstance(data, DataBundle):
        return data
    out_channels = out_channels or in_channels
    out_side = t.size * scale
    read = dict(channels=in_channels, target_channels=out_channels, target_scale=scale)
    notes = []
    pairs = None
    if target is not None and scale > 1 and not gdata.is_builtin(str(data)) and \
            gdata.resolve_layout(str(data)).kind == "plain":
        pairs = gdata.open_pairs(str(data), str(target), size=t.size, scale=scale, channels=in_channels,
                                 target_channels=out_channels, augment=t.augment, seed=t.seed)
        if pairs is None:
            notes.append(f"no image of {data} has a same-named image in {target}: the {out_side}-px images of "
                         f"{target} are used as unpaired real images (for D and FID), not as ground truth")
    ds = pairs if pairs is not None else gdata.open_dataset(str(data), split="train", size=t.size, augment=t.augment,
                                                            seed=t.seed, direction=direction, **read)
    if len(ds) < 2:
        raise GanzipError(f"--data {data} has {len(ds)} training image(s): at least 2 are needed (one is held out)")
    train_ds, holdout = gdata.holdout_split(ds, cfg.eval.holdout, t.seed)
    kind = getattr(ds, "kind", None)
    sample = train_ds[0]
    has_b = "B" in sample
    paired = has_b and kind == "paired"
    targets = None
    if target is not None and pairs is None:
        targets = gdata.open_dataset(str(target), split="train", size=out_side, augment=t.augment, seed=t.seed + 1,
                                     channels=out_channels)
        if len(targets) == 0:
            raise GanzipError(f"--target {target} holds no images")
    desc = f"{data} ({len(train_ds)} training, {len(holdout)} held-out images"
    if pairs is not None:
        desc += f"; paired by file name with {target}, {t.size}-px inputs, {out_side}-px targets)"
    else:
        desc += f"; {kind})" if kind else ")"
    for source, d in ((data, ds), (target, targets)):
        skipped = getattr(d, "skipped", 0) if d is not None else 0
        if skipped:
            summary = d.skip_summary() if hasattr(d, "skip_summary") else ""
            notes.append(f"{skipped} files in {source} were skipped" + (f": {summary}" if summary else ""))
    return DataBundle(train=train_ds, holdout=holdout, targets=targets, paired=paired, has_b=has_b, description=desc,
                      warnings=notes, out_side=out_side)


def discriminator_ndf(d) -> int:
    """D's base width: ``discriminator.ndf`` scaled by ``discriminator.width``, at least 1."""
    return max(1, int(round(d.ndf * d.width)))


def build_discriminator(cfg: RecipeConfig, in_channels: int, out_channels: int, seed: int) -> nn.Module:
    """The online PatchGAN D, freshly initialised (N(0, 0.02), seeded)."""
    d = cfg.discriminator
    input_nc = out_channels + (in_channels if d.conditional else 0)
    D = create(d.arch, input_nc=input_nc, ndf=discriminator_ndf(d), n_layers=d.n_layers, norm=d.norm)
    init_weights(D, generator=torch.Generator().manual_seed(seed + 7))
    return D


def check_discriminator_size(D: nn.Module, size: int) -> None:
    """Run D once on a blank image of the training size: a PatchGAN too deep for it fails here, not at step 1."""
    first = next((m for m in D.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        return
    D = copy.deepcopy(D)  # a BatchNorm D must not keep statistics of the blank image
    try:
        with torch.no_grad():
            D(torch.zeros(1, first.in_channels, size, size))
    except (ValueError, RuntimeError) as exc:
        ok = next((s for s in (32, 64, 128, 256, 512) if s > size and _d_runs(D, first.in_channels, s)), None)
        raise GanzipError(
            f"--size {size} is too small for the discriminator ({str(exc).splitlines()[0][:80]}): "
            + (f"use --size {ok} or more, " if ok else "")
            + "or a shallower one with --set discriminator.n_layers=N"
        ) from None


def _d_runs(D: nn.Module, channels: int, size: int) -> bool:
    try:
        with torch.no_grad():
            D(torch.zeros(1, channels, size, size))
        return True
    except (ValueError, RuntimeError):
        return False

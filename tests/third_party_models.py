"""Third-party generator architectures, built from their own packages with random weights.

One catalogue serves tests/test_third_party.py (small configurations) and
bench/student_build.py (the published sizes). Each entry names the class as
`--arch package.module:callable` would, so a student cut from it reloads
through `ganzip.load_student(path, arch=...)`. No pretrained weights exist
here: every model has the random initialisation its own class gives it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SP = "spandrel.architectures"


@dataclass(frozen=True)
class Entry:
    name: str
    arch: str
    small: dict[str, Any]          # a few-second configuration for the test suite
    full: dict[str, Any]           # the size the project publishes (for the benchmark)
    structure: str                 # what makes it hard
    in_channels: int = 3
    scale: int = 1                 # output side / input side
    size: int = 32                 # test input side
    tags: tuple[str, ...] = field(default_factory=tuple)


def _smp(encoder: str) -> dict[str, Any]:
    return {"encoder_name": encoder, "encoder_weights": None, "in_channels": 3, "classes": 3, "activation": "tanh"}


CATALOGUE: tuple[Entry, ...] = (
    Entry("ESRGAN RRDBNet (6 blocks)", f"{SP}.ESRGAN:ESRGAN",
          {"num_filters": 16, "num_blocks": 2, "scale": 4}, {"num_filters": 64, "num_blocks": 6, "scale": 4},
          "dense blocks, nearest upsampling", scale=4, size=16),
    Entry("ESRGAN RRDBNet (23 blocks)", f"{SP}.ESRGAN:ESRGAN",
          {"num_filters": 16, "num_blocks": 23, "scale": 4}, {"num_filters": 64, "num_blocks": 23, "scale": 4},
          "deep dense graph (Real-ESRGAN x4plus size)", scale=4, size=16, tags=("deep",)),
    Entry("Real-ESRGAN x2 RRDBNet (pixel-unshuffle)", f"{SP}.ESRGAN:ESRGAN",
          {"in_nc": 12, "num_filters": 16, "num_blocks": 1, "scale": 4, "shuffle_factor": 2},
          {"in_nc": 12, "num_filters": 64, "num_blocks": 23, "scale": 4, "shuffle_factor": 2},
          "pixel-unshuffle before the first conv (12 input channels)", scale=2, size=16),
    Entry("Real-ESRGAN SRVGGNetCompact", f"{SP}.Compact:Compact",
          {"num_feat": 16, "num_conv": 4, "upscale": 4}, {"num_feat": 64, "num_conv": 32, "upscale": 4},
          "PReLU, pixel shuffle, nearest-upsampled input skip", scale=4, size=16),
    Entry("SPAN", f"{SP}.SPAN:SPAN",
          {"num_in_ch": 3, "num_out_ch": 3, "feature_channels": 16, "upscale": 2},
          {"num_in_ch": 3, "num_out_ch": 3, "feature_channels": 48, "upscale": 4},
          "re-parameterised convs (eval conv rebuilt from train branches), attention gate", scale=2, size=16),
    Entry("DRUNet", f"{SP}.DRUNet:DRUNet",
          {"in_nc": 3, "out_nc": 3, "nc": [8, 16, 32, 64], "nb": 1}, {"in_nc": 3, "out_nc": 3, "nb": 4},
          "strided-conv / transposed-conv U-Net with residual skips", size=32),
    Entry("NAFNet", f"{SP}.NAFNet:NAFNet",
          {"width": 8, "middle_blk_num": 1, "enc_blk_nums": [1, 1], "dec_blk_nums": [1, 1]},
          {"width": 32, "middle_blk_num": 12, "enc_blk_nums": [2, 2, 4, 8], "dec_blk_nums": [2, 2, 2, 2]},
          "channel-split gates (x1 * x2), channel attention, pixel-shuffle U-Net", size=32),
    Entry("PLKSR", f"{SP}.PLKSR:PLKSR",
          {"dim": 16, "n_blocks": 2, "upscaling_factor": 2, "kernel_size": 7},
          {"dim": 64, "n_blocks": 28, "upscaling_factor": 4},
          "partial convs on a channel slice, in-place slice writes", scale=2, size=16),
    Entry("RealPLKSR", f"{SP}.PLKSR:RealPLKSR",
          {"dim": 16, "n_blocks": 2, "upscaling_factor": 2, "kernel_size": 7, "norm_groups": 4},
          {"dim": 64, "n_blocks": 28, "upscaling_factor": 4},
          "partial convs, group norm, element-wise attention", scale=2, size=16),
    Entry("SwiftSRGAN", f"{SP}.SwiftSRGAN:SwiftSRGAN",
          {"num_channels": 16, "num_blocks": 2, "upscale_factor": 2}, {"num_channels": 64, "num_blocks": 16, "upscale_factor": 4},
          "depthwise-separable conv on the image, PReLU, batch norm", scale=2, size=16),
    Entry("Real-CUGAN UpCunet2x", f"{SP}.RealCUGAN:UpCunet2x",
          {"in_channels": 3, "out_channels": 3}, {"in_channels": 3, "out_channels": 3},
          "two cascaded U-Nets with squeeze-excitation, cropping", scale=2, size=32),
    Entry("RCAN", f"{SP}.RCAN:RCAN",
          {"scale": 2, "n_resgroups": 2, "n_resblocks": 2, "n_feats": 16, "reduction": 4},
          {"scale": 4, "n_resgroups": 10, "n_resblocks": 20, "n_feats": 64},
          "fixed mean-shift convs on the image, channel attention", scale=2, size=16),
    Entry("DnCNN", f"{SP}.DnCNN:DnCNN",
          {"in_nc": 3, "out_nc": 3, "nc": 16, "nb": 5}, {"in_nc": 3, "out_nc": 3, "nc": 64, "nb": 17},
          "plain conv stack, global residual", size=32),
    Entry("smp Unet / ResNet-18", "segmentation_models_pytorch:Unet",
          {**_smp("resnet18"), "decoder_channels": (32, 16, 16, 8, 8)}, _smp("resnet18"),
          "encoder-decoder; read-only out_channels properties", size=64),
    Entry("smp UnetPlusPlus / MobileNetV2", "segmentation_models_pytorch:UnetPlusPlus",
          {**_smp("mobilenet_v2"), "decoder_channels": (32, 16, 16, 8, 8)}, _smp("mobilenet_v2"),
          "nested dense skips, inverted residuals", size=64),
    Entry("smp FPN / EfficientNet-B0", "segmentation_models_pytorch:FPN",
          {**_smp("efficientnet-b0"), "decoder_pyramid_channels": 64, "decoder_segmentation_channels": 32},
          _smp("efficientnet-b0"),
          "squeeze-excitation, feature pyramid, bilinear upsampling", size=64),
)


def by_name(name: str) -> Entry:
    return next(e for e in CATALOGUE if e.name == name)


def build(entry: Entry, full: bool = False, seed: int = 0):
    """The model through ganzip's own `--arch package.module:callable` path (random weights)."""
    import torch

    from ganzip.loading import build_arch

    torch.manual_seed(seed)
    opts = {k: list(v) if isinstance(v, tuple) else v for k, v in (entry.full if full else entry.small).items()}
    return build_arch(entry.arch, opts).eval()

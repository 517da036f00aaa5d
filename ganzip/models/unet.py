"""The pix2pix U-Net generator, nested exactly as pytorch-CycleGAN-and-pix2pix nests it
(`model.model.1.model.3...`), so its checkpoints load as they are."""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import norm_layer
from .registry import register_model


class UnetSkipConnectionBlock(nn.Module):
    """One level: down-conv, the inner levels, up-conv, then concatenation with the input."""

    def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False,
                 innermost=False, norm=None, use_bias=True, use_dropout=False):
        super().__init__()
        self.outermost = outermost
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, 4, stride=2, padding=1, bias=use_bias)
        downrelu = nn.LeakyReLU(0.2, True)
        uprelu = nn.ReLU(True)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1)
            layers = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, 4, stride=2, padding=1, bias=use_bias)
            layers = [downrelu, downconv, uprelu, upconv, norm(outer_nc)]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1, bias=use_bias)
            layers = [downrelu, downconv, norm(inner_nc), submodule, uprelu, upconv, norm(outer_nc)]
            if use_dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """A U-Net with `num_downs` halvings: a 2**num_downs input shrinks to 1×1 at the bottleneck."""

    def __init__(self, input_nc=3, output_nc=3, num_downs=8, ngf=64, norm="batch", use_dropout=False):
        super().__init__()
        norm_fn, use_bias = norm_layer(norm)
        kw = dict(norm=norm_fn, use_bias=use_bias)
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True, **kw)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, use_dropout=use_dropout, **kw)
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block, **kw)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block, **kw)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block, **kw)
        self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True, **kw)
        self.min_size = 2**num_downs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@register_model("unet_256")
def unet_256(input_nc=3, output_nc=3, ngf=64, norm="batch", use_dropout=False):
    """pix2pix's default generator: 8 downsamplings, for 256×256 images."""
    return UnetGenerator(input_nc, output_nc, 8, ngf, norm, use_dropout)


@register_model("unet_128")
def unet_128(input_nc=3, output_nc=3, ngf=64, norm="batch", use_dropout=False):
    """7 downsamplings, for 128×128 images."""
    return UnetGenerator(input_nc, output_nc, 7, ngf, norm, use_dropout)

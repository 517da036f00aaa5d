"""The CycleGAN ResNet generator (Johnson et al.), with the module nesting of
pytorch-CycleGAN-and-pix2pix so that its `latest_net_G.pth` checkpoints load as they are."""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import norm_layer
from .registry import register_model


class ResnetBlock(nn.Module):
    def __init__(self, dim: int, norm, use_bias: bool, use_dropout: bool):
        super().__init__()
        layers = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=use_bias), norm(dim), nn.ReLU(True)]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=use_bias), norm(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """c7s1-ngf, two stride-2 downsamplings, `n_blocks` residual blocks, two
    transposed-conv upsamplings, c7s1-output, tanh."""

    def __init__(self, input_nc=3, output_nc=3, ngf=64, norm="instance", use_dropout=False, n_blocks=9):
        super().__init__()
        norm_fn, use_bias = norm_layer(norm)
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, bias=use_bias), norm_fn(ngf), nn.ReLU(True)]
        for i in range(2):
            mult = 2**i
            layers += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=use_bias),
                norm_fn(ngf * mult * 2),
                nn.ReLU(True),
            ]
        for _ in range(n_blocks):
            layers.append(ResnetBlock(ngf * 4, norm_fn, use_bias, use_dropout))
        for i in range(2):
            mult = 2 ** (2 - i)
            layers += [
                nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1, bias=use_bias),
                norm_fn(ngf * mult // 2),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@register_model("resnet_9blocks")
def resnet_9blocks(input_nc=3, output_nc=3, ngf=64, norm="instance", use_dropout=False):
    """CycleGAN's default generator (256×256 images): 9 residual blocks."""
    return ResnetGenerator(input_nc, output_nc, ngf, norm, use_dropout, n_blocks=9)


@register_model("resnet_6blocks")
def resnet_6blocks(input_nc=3, output_nc=3, ngf=64, norm="instance", use_dropout=False):
    """CycleGAN's generator for 128×128 images: 6 residual blocks."""
    return ResnetGenerator(input_nc, output_nc, ngf, norm, use_dropout, n_blocks=6)

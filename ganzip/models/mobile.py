"""GAN Compression-style mobile ResNet generator: the CycleGAN ResNet generator whose
residual blocks use separable convolutions (spec §6). Module nesting follows
mit-han-lab/gan-compression's `MobileResnetGenerator` so its state dicts load."""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import norm_layer
from .registry import register_model


class SeparableConv2d(nn.Module):
    """3×3 depthwise conv, non-affine InstanceNorm, then 1×1 pointwise conv, both with biases."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, kernel_size, stride=stride, padding=padding, groups=in_channels, bias=True),
            nn.InstanceNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, 1, bias=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class MobileResnetBlock(nn.Module):
    def __init__(self, dim, norm, dropout_rate=0.0):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), SeparableConv2d(dim, dim), norm(dim), nn.ReLU(True),
            nn.Dropout(dropout_rate),
            nn.ReflectionPad2d(1), SeparableConv2d(dim, dim), norm(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class MobileResnetGenerator(nn.Module):
    def __init__(self, input_nc=3, output_nc=3, ngf=64, norm="instance", dropout_rate=0.0, n_blocks=9):
        super().__init__()
        norm_fn, use_bias = norm_layer(norm)
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, bias=use_bias), norm_fn(ngf), nn.ReLU(True)]
        for i in range(2):
            mult = 2**i
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=use_bias),
                       norm_fn(ngf * mult * 2), nn.ReLU(True)]
        for _ in range(n_blocks):
            layers.append(MobileResnetBlock(ngf * 4, norm_fn, dropout_rate))
        for i in range(2):
            mult = 2 ** (2 - i)
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1, bias=use_bias),
                       norm_fn(ngf * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@register_model("mobile_resnet_9blocks")
def mobile_resnet_9blocks(input_nc=3, output_nc=3, ngf=64, norm="instance", dropout_rate=0.0):
    """GAN Compression's mobile teacher: 9 residual blocks of separable convolutions."""
    return MobileResnetGenerator(input_nc, output_nc, ngf, norm, dropout_rate, n_blocks=9)

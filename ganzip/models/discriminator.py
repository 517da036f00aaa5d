"""The PatchGAN discriminator of pix2pix/CycleGAN (70×70 receptive field at n_layers=3)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import norm_layer
from .registry import register_model


class NLayerDiscriminator(nn.Module):
    def __init__(self, input_nc=3, ndf=64, n_layers=3, norm="batch"):
        super().__init__()
        norm_fn, use_bias = norm_layer(norm)
        seq = [nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1, bias=use_bias),
                    norm_fn(ndf * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2**n_layers, 8)
        seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=use_bias),
                norm_fn(ndf * mult), nn.LeakyReLU(0.2, True),
                nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@register_model("patchgan", kind="discriminator")
def patchgan(input_nc=3, ndf=64, n_layers=3, norm="batch"):
    """PatchGAN: a grid of real/fake logits, one per overlapping patch."""
    return NLayerDiscriminator(input_nc, ndf, n_layers, norm)

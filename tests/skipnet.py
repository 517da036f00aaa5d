"""A generator of no known family, for the feature-tap and feature-recipe tests: a residual trunk and a
concatenation skip around it. Built with random weights (no pretrained generator exists here)."""
from __future__ import annotations

import torch
from torch import nn


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.InstanceNorm2d(c), nn.ReLU(),
                                  nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


class SkipNet(nn.Module):
    """A small encoder-decoder of no known family: residual blocks and a concatenation skip."""

    def __init__(self, c=16, down_stride=2):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(c, 2 * c, 3, stride=down_stride, padding=1), nn.InstanceNorm2d(2 * c),
                                  nn.ReLU())
        self.blocks = nn.Sequential(Residual(2 * c), Residual(2 * c))
        self.up = nn.Sequential(nn.Upsample(scale_factor=down_stride), nn.Conv2d(2 * c, c, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(2 * c, 3, 3, padding=1)

    def forward(self, x):
        s = self.stem(x)
        y = self.up(self.blocks(self.down(s)))
        return torch.tanh(self.head(torch.cat([s, y], 1)))

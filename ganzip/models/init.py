"""CycleGAN's 'normal' initialisation: conv/linear weights N(0, 0.02), biases 0,
BatchNorm weights N(1, 0.02), biases 0."""
from __future__ import annotations

import torch
import torch.nn as nn


@torch.no_grad()
def init_weights(model: nn.Module, gain: float = 0.02, generator: torch.Generator | None = None) -> nn.Module:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            m.weight.normal_(0.0, gain, generator=generator)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)) and m.weight is not None:
            m.weight.normal_(1.0, gain, generator=generator)
            if m.bias is not None:
                m.bias.zero_()
    return model

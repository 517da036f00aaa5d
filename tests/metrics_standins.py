"""Stand-ins for pretrained files, shared by the metric tests (made once per test session).

They have the real files' structure and seeded random weights; numbers
computed with them mean nothing except when compared with a reference
implementation run on the same stand-in.
"""
from __future__ import annotations

from pathlib import Path


def inception_standin(tmp_path_factory) -> Path:
    """pytorch-fid's FID Inception structure with random weights (seed 0), saved as a .pth."""
    from ganzip.metrics.fid import make_random_inception_weights

    path = tmp_path_factory.getbasetemp() / "standins" / "pt_inception_standin_seed0.pth"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        make_random_inception_weights(path, seed=0, calibrate=2)
    return path


def alexnet_standin(tmp_path_factory) -> Path:
    """torchvision AlexNet with random weights (seed 0), saved like alexnet-owt-7be5be79.pth."""
    import torch
    import torchvision

    path = tmp_path_factory.getbasetemp() / "standins" / "alexnet_standin_seed0.pth"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return path

"""An evaluation's request and result: the dataclasses :func:`ganzip.evaluation.evaluate` takes and returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass
class EvalRequest:
    """Everything one evaluation needs; see :func:`evaluate` for what each field means."""

    student: Any
    teacher: Any = None
    data: Any = None
    target: Any = None
    size: int | None = None
    batch_size: int = 8
    device: Any = "auto"
    out: Any = None
    inception_weights: Any = None
    alexnet_weights: Any = None
    real_stats: Any = None
    offline: bool = False
    progress: bool = True
    max_images: int | None = None
    extra: Mapping[str, Any] | None = None
    arch: str | None = None
    arch_opts: Any = None
    trust_pickle: bool = False
    split: str | None = None
    direction: str = "AtoB"
    allow_missing: bool = False
    fid_dims: int = 2048
    kid: bool = True
    lpips: bool = True
    fid: bool = True
    latency: bool = True
    grid_images: int = 8
    save_images: bool = False
    command: str | None = None
    overwrite: bool = False
    claim_out: bool = True


@dataclass
class EvalResult:
    """What `evaluate` measured. `to_dict()` is the report (report.json's content)."""

    metrics: dict
    cost: dict
    paths: dict
    warnings: list[str]
    assets: list[dict] = field(default_factory=list)
    report: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.report)


__all__ = ["EvalRequest", "EvalResult"]

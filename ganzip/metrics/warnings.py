"""The metrics' warnings: `MetricWarning`, and `collect_warnings` to gather them into a report.

In its own module so that every metric (fid, kid, lpips, ...) can warn without importing another.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

from .. import assets


class MetricWarning(UserWarning):
    """A metric was computed, but its value deserves a caveat (too few images, a fallback, ...)."""


def warn(message: str) -> None:
    """Warn with a `MetricWarning`, pointing at the caller of the function that calls this."""
    warnings.warn(message, MetricWarning, stacklevel=3)


@contextlib.contextmanager
def collect_warnings(into: list[str]) -> Iterator[list[str]]:
    """Gather ganzip's metric and asset warnings raised inside the block into `into` (each once).

    Other warnings pass through unchanged.
    """
    ours = (MetricWarning, assets.UnverifiedAssetWarning)
    with warnings.catch_warnings(record=True) as caught:
        for category in ours:
            warnings.simplefilter("always", category)
        try:
            yield into
        finally:
            others = []
            for w in caught:
                if issubclass(w.category, ours):
                    if str(w.message) not in into:
                        into.append(str(w.message))
                else:
                    others.append(w)
    for w in others:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


_warn = warn

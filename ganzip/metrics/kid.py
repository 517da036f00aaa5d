"""Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs").

KID is the squared MMD between Inception features of two image sets under
the polynomial kernel ``k(x, y) = (x.y / d + 1)^3``, estimated without bias
on random subsets (100 subsets of at most 1000 images each, as the KID
paper's code and torch-fidelity do) and reported as mean and standard
deviation over the subsets.
"""
from __future__ import annotations

import warnings

import numpy as np

from ..errors import GanzipError
from .warnings import MetricWarning


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None,
                      coef0: float = 1.0) -> np.ndarray:
    """``(gamma <x_i, y_j> + coef0) ** degree`` with gamma = 1 / dim by default."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (x @ y.T * gamma + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None,
                  coef0: float = 1.0) -> float:
    """Unbiased MMD^2 of two equally sized samples (the diagonal of k(x, x) and k(y, y) left out)."""
    m = x.shape[0]
    if y.shape[0] != m or m < 2:
        raise ValueError("mmd2_unbiased needs two samples of the same size, at least 2")
    kxx = polynomial_kernel(x, x, degree, gamma, coef0)
    kyy = polynomial_kernel(y, y, degree, gamma, coef0)
    kxy = polynomial_kernel(x, y, degree, gamma, coef0)
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2.0 * kxy.sum() / (m * m))


def kernel_inception_distance(features_a: np.ndarray, features_b: np.ndarray, subsets: int = 100,
                              subset_size: int = 1000, degree: int = 3, gamma: float | None = None,
                              coef0: float = 1.0, seed: int = 0) -> tuple[float, float]:
    """KID mean and std over `subsets` random subsets of `subset_size` features from each set.

    The subset size shrinks to the smaller set's size when needed (with a
    warning); each subset is drawn without replacement, with a seeded RNG.
    """
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise GanzipError(f"KID needs two feature matrices of the same width, got {a.shape} and {b.shape}")
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise GanzipError("KID needs at least 2 images in each set")
    if m < subset_size:
        warnings.warn(f"KID: subsets of {m} images instead of {subset_size} (the smaller set has only {m})",
                      MetricWarning, stacklevel=2)
    rng = np.random.RandomState(seed)
    values = np.empty(subsets)
    for i in range(subsets):
        x = a[rng.choice(a.shape[0], m, replace=False)]
        y = b[rng.choice(b.shape[0], m, replace=False)]
        values[i] = mmd2_unbiased(x, y, degree, gamma, coef0)
    return float(values.mean()), float(values.std())


__all__ = ["polynomial_kernel", "mmd2_unbiased", "kernel_inception_distance"]

"""Evaluation metrics.

- :mod:`ganzip.metrics.fid`: FID under the pytorch-fid protocol (spec section 7), statistics caching.
- :mod:`ganzip.metrics.kid`: Kernel Inception Distance (unbiased polynomial-kernel MMD over subsets).
- :mod:`ganzip.metrics.lpips`: LPIPS (AlexNet by default) with the backbone from a local asset.
- :mod:`ganzip.metrics.fidelity`: PSNR and SSIM between two image batches.
- :mod:`ganzip.metrics.cost`: MACs, parameters, latency.

Submodules are imported on use, so `import ganzip.metrics` stays cheap.
"""
from __future__ import annotations

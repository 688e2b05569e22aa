"""Masked PSNR and SSIM: per-pixel maps of one frame pair, averaged over a region, pooled over frames.

Definitions (both on RGB uint8 frames, peak value ``data_range = 255``):

- **PSNR over a region** (:class:`MaskedPSNR`): ``10 * log10(255**2 / MSE)`` where MSE is the mean of the
  squared difference over every channel of every pixel of the region, pooled over all frames given (the
  region's pixels of all frames are one sample, like ``torchmetrics.PeakSignalNoiseRatio`` with ``dim=None``,
  not the mean of per-frame PSNRs). On one frame it equals ``skimage.metrics.peak_signal_noise_ratio`` of the
  region's pixels. Identical pixels give ``inf``.
- **SSIM over a region** (:class:`MaskedSSIM`): the SSIM map of Wang et al. (2004) — Gaussian window
  sigma 1.5 truncated at 3.5 sigma (11 x 11), K1 = 0.01, K2 = 0.03, population covariance, each RGB channel
  separately, frame borders handled by symmetric reflection — averaged over the three channels and over the
  region's pixels of all frames. This map is exactly ``skimage.metrics.structural_similarity(a, b,
  channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  full=True)[1]`` (and equals torchmetrics' SSIM map away from the borders, where torchmetrics pads by
  reflection without repeating the edge pixel). The window of a pixel reaches 5 pixels around it, so pixels
  outside a mask but within 5 px of it see the replaced pixels: ``MetricsConfig.outside_margin`` removes them.

torchmetrics has no masked PSNR/SSIM, so the maps are computed here (with ``scipy.ndimage.gaussian_filter``,
like scikit-image, in float64) and tested against scikit-image; the accumulation follows torchmetrics:
declared sum states, ``update`` / ``compute`` / ``reset``, and ``merge_state`` to combine partial runs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.ndimage import gaussian_filter, maximum_filter
from torchmetrics import Metric

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_RADIUS = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
"""Pixels the SSIM window reaches on each side of its centre (5)."""
DATA_RANGE = 255.0


def _check_pair(preds: np.ndarray, target: np.ndarray) -> None:
    if preds.shape != target.shape or preds.ndim != 3 or preds.shape[2] != 3:
        raise ValueError(f"expected two uint8 (H, W, 3) RGB images of one size, got {preds.shape} and {target.shape}")


def squared_error_map(preds: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-pixel squared error averaged over RGB: float64 (H, W), in squared 0-255 levels.

    preds, target: uint8 (H, W, 3) RGB (any real dtype works; values are in 0-255 levels)."""
    _check_pair(preds, target)
    diff = preds.astype(np.float64) - target.astype(np.float64)
    return np.mean(diff * diff, axis=2)


def ssim_map(preds: np.ndarray, target: np.ndarray, data_range: float = DATA_RANGE) -> np.ndarray:
    """The SSIM map (see the module docstring) averaged over RGB: float64 (H, W), values in [-1, 1].

    preds, target: uint8 (H, W, 3) RGB. Cost: 15 Gaussian filterings of float64 (H, W) images (about 0.7-1 s at
    1280 x 720 on this project's CPU)."""
    _check_pair(preds, target)
    x = preds.astype(np.float64)
    y = target.astype(np.float64)

    def blur(image: np.ndarray) -> np.ndarray:
        return gaussian_filter(image, sigma=(SSIM_SIGMA, SSIM_SIGMA, 0), truncate=SSIM_TRUNCATE, mode="reflect")

    ux, uy = blur(x), blur(y)
    vx = blur(x * x) - ux * ux
    vy = blur(y * y) - uy * uy
    vxy = blur(x * y) - ux * uy
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    ssim = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return ssim.mean(axis=2)


def outside_region(union: np.ndarray, margin: int = 0) -> np.ndarray:
    """bool (H, W): pixels farther than ``margin`` px (Chebyshev distance) from every True pixel of ``union``.

    union: bool (H, W), the union of a frame's masks. margin 0 = simply ``~union``."""
    if margin > 0 and union.any():
        union = maximum_filter(union, size=2 * margin + 1, mode="constant", cval=False)
    return ~union


class _MaskedMapMetric(Metric):
    """Sum of a per-pixel map over masked pixels and the pixel count, pooled over updates."""

    full_state_update = False
    is_differentiable = False

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, values: np.ndarray, mask: np.ndarray) -> None:
        """Add the pixels of ``mask`` (bool (H, W)) of ``values`` (float (H, W) map of one frame)."""
        if values.shape != mask.shape:
            raise ValueError(f"map {values.shape} and mask {mask.shape} differ in shape")
        selected = values[mask]
        self.total += float(selected.sum(dtype=np.float64))
        self.count += int(selected.size)


class MaskedPSNR(_MaskedMapMetric):
    """PSNR in dB over the masked pixels of all updates (pooled MSE; see the module docstring).

    ``update(squared_error, mask)``: squared_error float64 (H, W) from :func:`squared_error_map`, mask bool (H, W).
    ``compute()``: float64 scalar tensor in dB; ``inf`` when every pixel was identical, ``nan`` with no pixels.
    States: ``total`` (sum of squared errors, float64), ``count`` (pixels).
    """

    higher_is_better = True

    def __init__(self, data_range: float = DATA_RANGE, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.data_range = float(data_range)

    def compute(self) -> torch.Tensor:
        if int(self.count) == 0:
            return torch.tensor(math.nan, dtype=torch.float64)
        mse = self.total / self.count
        if float(mse) == 0.0:
            return torch.tensor(math.inf, dtype=torch.float64)
        return 10.0 * torch.log10(self.data_range**2 / mse)


class MaskedSSIM(_MaskedMapMetric):
    """SSIM map averaged over the masked pixels of all updates (see the module docstring).

    ``update(ssim_map, mask)``: the map from :func:`ssim_map` (float64 (H, W)) and a bool (H, W) mask.
    ``compute()``: float64 scalar tensor; ``nan`` with no pixels. States: ``total`` (sum of map values), ``count``.
    """

    higher_is_better = True

    def compute(self) -> torch.Tensor:
        if int(self.count) == 0:
            return torch.tensor(math.nan, dtype=torch.float64)
        return self.total / self.count


def masked_psnr(preds: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB) of one pair of uint8 (H, W, 3) images over the bool (H, W) ``mask``."""
    metric = MaskedPSNR()
    metric.update(squared_error_map(preds, target), mask)
    return float(metric.compute())


def masked_ssim(preds: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """SSIM map of one pair of uint8 (H, W, 3) images averaged over the bool (H, W) ``mask``."""
    metric = MaskedSSIM()
    metric.update(ssim_map(preds, target), mask)
    return float(metric.compute())

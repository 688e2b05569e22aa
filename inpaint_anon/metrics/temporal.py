"""Temporal flicker inside tracked regions, with motion compensation, and the same quantity on the original.

For a track present in frames k - 1 and k (same track id), with masks M_prev and M_cur:

1. motion: ``d = (dx, dy)``, the shift of the centre of the mask's tight box from k - 1 to k, rounded to the
   nearest pixel (``floor(x + 0.5)``);
2. pixels: P = {p in M_cur : p - d inside the frame and in M_prev} (the part of the region seen in both frames
   after alignment);
3. change: for each p in P, ``|I_k(p) - I_{k-1}(p - d)|`` averaged over the RGB channels, in 0-255 levels.

``flicker`` is that change in the anonymized video, averaged over all pixels P of all track pairs of a class
(pooled); ``flicker_orig`` is the same on the original video with the same masks and shifts (the object's
own change: deformation, lighting, compression, sub-pixel motion); ``flicker_ratio = flicker /
flicker_orig`` makes it interpretable: about 1 = the replacement changes from frame to frame like the real
object did, > 1 = it flickers (e.g. independent regeneration per frame), < 1 = it is steadier (e.g. a solid
fill). Box-centre alignment compensates translation only; scale changes and articulation remain in both
numbers, which is why the ratio, not the raw value, is the comparable figure.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torchmetrics import Metric

from inpaint_anon.types import mask_box


def centre_shift(prev_mask: np.ndarray, cur_mask: np.ndarray) -> tuple[int, int] | None:
    """(dx, dy) pixels: the motion of the tight-box centre from ``prev_mask`` to ``cur_mask`` (bool (H, W)),
    rounded; None when either mask is empty."""
    prev_box, cur_box = mask_box(prev_mask), mask_box(cur_mask)
    if prev_box is None or cur_box is None:
        return None
    dx = (cur_box[0] + cur_box[2] - prev_box[0] - prev_box[2]) / 2.0
    dy = (cur_box[1] + cur_box[3] - prev_box[1] - prev_box[3]) / 2.0
    return math.floor(dx + 0.5), math.floor(dy + 0.5)


def track_pair_change(prev_images: tuple[np.ndarray, ...], cur_images: tuple[np.ndarray, ...],
                      prev_mask: np.ndarray, cur_mask: np.ndarray) -> tuple[list[float], int]:
    """Summed motion-compensated change of one track between two frames (see the module docstring).

    prev_images, cur_images: the same number of uint8 (H, W, 3) images of frame k - 1 and k (e.g.
    (anonymized, original)). prev_mask, cur_mask: bool (H, W). Returns (per image pair: the sum over the
    pixels P of the channel-mean absolute difference, in levels; the number of pixels in P)."""
    shift = centre_shift(prev_mask, cur_mask)
    if shift is None:
        return [0.0] * len(cur_images), 0
    dx, dy = shift
    height, width = cur_mask.shape
    ys, xs = np.nonzero(cur_mask)
    py, px = ys - dy, xs - dx
    inside = (py >= 0) & (py < height) & (px >= 0) & (px < width)
    ys, xs, py, px = ys[inside], xs[inside], py[inside], px[inside]
    seen = prev_mask[py, px]
    ys, xs, py, px = ys[seen], xs[seen], py[seen], px[seen]
    sums = []
    for prev, cur in zip(prev_images, cur_images, strict=True):
        diff = np.abs(cur[ys, xs].astype(np.int16) - prev[py, px].astype(np.int16))
        sums.append(float(diff.sum(dtype=np.int64)) / 3.0)
    return sums, int(ys.size)


class TemporalFlicker(Metric):
    """Pooled motion-compensated change inside tracked regions, anonymized and original (module docstring).

    ``update(anonymized_sum, original_sum, pixels)``: the sums and pixel count of :func:`track_pair_change`.
    ``compute()``: float64 Tensor (3,) = (flicker, flicker_orig, flicker_ratio); nan where undefined (no pixel
    pairs; ratio when ``flicker_orig`` is 0). States ``anonymized_sum``, ``original_sum`` (float64), ``pixels``.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("anonymized_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("original_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("pixels", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, anonymized_sum: float, original_sum: float, pixels: int) -> None:
        self.anonymized_sum += float(anonymized_sum)
        self.original_sum += float(original_sum)
        self.pixels += int(pixels)

    def compute(self) -> torch.Tensor:
        if int(self.pixels) == 0:
            return torch.full((3,), math.nan, dtype=torch.float64)
        flicker = self.anonymized_sum / self.pixels
        original = self.original_sum / self.pixels
        ratio = flicker / original if float(original) > 0 else torch.tensor(math.nan, dtype=torch.float64)
        return torch.stack([flicker, original, ratio]).double()

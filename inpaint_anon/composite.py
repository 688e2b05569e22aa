"""Dilation, feathering and blending: which pixels an inpainter fills, and how its fill is pasted back.

All distances are Euclidean, in pixels, from the nearest pixel of a region's mask (``d_i``). Region ``i``
gets a dilation radius

    r_i = dilate + dilate_rel * diag_i        (pixels; diag_i = diagonal of the region's box in pixels,
                                              at most the frame's; a NaN box counts as 0)

and then

    dilated mask_i :  d_i <= r_i
    alpha_i        :  1 where d_i <= r_i, falling linearly to 0 at d_i = r_i + feather
    fill region_i  :  alpha_i > 0             (the dilated mask plus the feather band)

The frame's alpha is the maximum over its regions. So alpha is exactly 1.0 on every pixel of every original
and dilated mask (no original pixel of a detected region can show through the feather); only the added
feather band, outside the dilated mask, ramps from 1 down to 0; and alpha is 0 outside the fill regions,
which are exactly the pixels the inpainter must fill. With ``feather=False`` (or ``feather=0``) alpha is the
hard 0/1 dilated mask and the fill regions are the dilated masks.

Everything is torch, on the device of the masks. Distances are computed on same-size windows around the
regions (a padded crop batch, regions grouped by size into chunks), never on a loop over pixels.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from inpaint_anon.checks import check_float, check_int  # noqa: F401 - re-exported for now
from inpaint_anon.types import Detections, cover_boxes, masks_to_boxes

# Regions are processed in chunks of at most this many same-size windows (sorted by size), which bounds
# the padding wasted when one large region shares a batch with many small ones.
_CHUNK = 8


class Compositor:
    """Grows region masks into fill regions and blends inpainted fills back into frames.

    dilate: pixels added around every mask (int, 0..512).
    dilate_rel: extra growth as a fraction of each region's box diagonal (float, 0..1); 0.02 grows a
        person box of 200 x 400 px by about 9 px more.
    feather: width in pixels of the soft outer edge where alpha ramps from 1 to 0 (int, 0..256; 0 = hard).
    """

    def __init__(self, dilate: int = 4, dilate_rel: float = 0.02, feather: int = 6) -> None:
        self.dilate = check_int("Compositor", "dilate", dilate, 0, 512)
        self.dilate_rel = check_float("Compositor", "dilate_rel", dilate_rel, 0.0, 1.0)
        self.feather = check_int("Compositor", "feather", feather, 0, 256)

    def __repr__(self) -> str:
        return f"Compositor(dilate={self.dilate}, dilate_rel={self.dilate_rel}, feather={self.feather})"

    def radii(self, boxes_xyxy: torch.Tensor) -> torch.Tensor:
        """float32 (N,): dilation radius of each region in pixels, from its float (N, 4) xyxy box.

        (:meth:`fill_and_alpha` then caps it at the radius of a box as large as the frame.)
        """
        boxes = boxes_xyxy.to(torch.float32)
        diag = torch.hypot(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        return self.dilate + self.dilate_rel * diag

    def fill_regions(
        self, masks: torch.Tensor, boxes_xyxy: torch.Tensor | None = None, feather: bool = True
    ) -> torch.Tensor:
        """bool (N, H, W): each mask grown by its dilation (plus the feather width when ``feather``).

        These are exactly the pixels the inpainter must fill (``alpha > 0`` inside them only).
        masks: bool (N, H, W); boxes_xyxy: float (N, 4) boxes whose diagonal sizes the growth (only that:
        the grown masks always contain the whole mask), None -> the masks' tight boxes.
        """
        return self.fill_and_alpha(masks, boxes_xyxy, feather)[0]

    def alpha(
        self, masks: torch.Tensor, boxes_xyxy: torch.Tensor | None = None, feather: bool = True
    ) -> torch.Tensor:
        """float32 (H, W) in [0, 1]: how much of the fill to take at each pixel.

        1.0 on every pixel of the original and dilated masks, a linear ramp across the feather band,
        0 outside :meth:`fill_regions`. ``feather=False``: the hard 0/1 union of the dilated masks.
        N = 0 gives all zeros.
        """
        return self.fill_and_alpha(masks, boxes_xyxy, feather)[1]

    def fill_and_alpha(
        self, masks: torch.Tensor, boxes_xyxy: torch.Tensor | None = None, feather: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both :meth:`fill_regions` (bool (N, H, W)) and :meth:`alpha` (float32 (H, W)) in one pass."""
        if masks.ndim != 3:
            raise ValueError(f"Compositor: masks must be bool (N, H, W), got shape {tuple(masks.shape)}")
        masks = masks.to(torch.bool)
        n, h, w = masks.shape
        if boxes_xyxy is not None and tuple(boxes_xyxy.shape) != (n, 4):
            raise ValueError(
                f"Compositor: boxes_xyxy must be (N, 4) = ({n}, 4), got {tuple(boxes_xyxy.shape)}"
            )
        fill = torch.zeros((n, h, w), dtype=torch.bool, device=masks.device)
        alpha = torch.zeros(h * w, dtype=torch.float32, device=masks.device)
        tight = masks_to_boxes(masks)
        radii = self.radii(tight if boxes_xyxy is None else boxes_xyxy.to(masks.device))
        # A box larger than the frame (or NaN/inf from a broken detector) grows a region no further than
        # the frame's diagonal would.
        largest = self.dilate + self.dilate_rel * math.hypot(h, w)
        radii = torch.nan_to_num(radii, nan=float(self.dilate)).clamp(self.dilate, largest)
        tight = tight.long()
        band = self.feather if feather else 0
        area = (tight[:, 2] - tight[:, 0]) * (tight[:, 3] - tight[:, 1])
        nonempty = torch.nonzero(area > 0).flatten()
        order = nonempty[torch.argsort(area[nonempty], stable=True)]
        for chunk in order.split(_CHUNK) if len(order) else ():
            self._grow_chunk(masks, tight[chunk], radii[chunk], chunk, band, fill, alpha)
        return fill, alpha.view(h, w)

    def prepare(self, detections: Detections, feather: bool = True) -> tuple[Detections, torch.Tensor]:
        """The inpainter's view of a frame's regions, and the frame's alpha.

        Returns detections whose masks are the fill regions and the float32 (H, W) alpha, computed in one
        pass. Boxes: each detection box grown by its dilation (and feather band) and made to contain its fill
        region, so a tracker's smoothed box keeps steadying placement (e.g. a pixelate grid); everything else
        is unchanged.
        """
        fill, alpha = self.fill_and_alpha(detections.masks, detections.boxes_xyxy, feather)
        grow = (self.radii(detections.boxes_xyxy) + (self.feather if feather else 0))[:, None]
        grown = detections.boxes_xyxy + torch.cat([-grow, -grow, grow, grow], dim=1)
        h, w = fill.shape[1:]
        grown = torch.minimum(grown.clamp(min=0), torch.tensor([w, h, w, h], dtype=grown.dtype))
        return replace(detections, masks=fill, boxes_xyxy=cover_boxes(grown, masks_to_boxes(fill))), alpha

    def blend(self, images: torch.Tensor, fills: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W): ``images`` where alpha == 0, ``fills`` where alpha == 1, linear in between.

        images, fills: uint8 (B, 3, H, W) RGB; alphas: float (B, H, W) in [0, 1]. Bytes are exact at
        alpha 0 and 1 (float32 holds 0..255 exactly and ``x + 1 * (f - x) == f``); elsewhere rounded.
        """
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"Compositor.blend: images must be uint8 (B, 3, H, W), got {images.dtype} "
                f"{tuple(images.shape)}"
            )
        if fills.dtype != torch.uint8 or fills.shape != images.shape:
            raise ValueError(
                f"Compositor.blend: fills must be uint8 {tuple(images.shape)} like images, got "
                f"{fills.dtype} {tuple(fills.shape)}"
            )
        b, _, h, w = images.shape
        if tuple(alphas.shape) != (b, h, w) or not alphas.is_floating_point():
            raise ValueError(
                f"Compositor.blend: alphas must be float ({b}, {h}, {w}), got {alphas.dtype} "
                f"{tuple(alphas.shape)}"
            )
        # Only pixels with alpha > 0 change; compute the blend there alone (usually a small part of a frame).
        out = images.clone()
        frame, ys, xs = torch.nonzero(alphas > 0, as_tuple=True)
        a = alphas[frame, ys, xs].to(torch.float32).clamp(max=1.0)[:, None]
        x = images[frame, :, ys, xs].to(torch.float32)
        f = fills[frame, :, ys, xs].to(torch.float32)
        out[frame, :, ys, xs] = (x + a * (f - x)).round_().clamp_(0, 255).to(torch.uint8)
        return out

    def _grow_chunk(
        self,
        masks: torch.Tensor,
        tight: torch.Tensor,
        radii: torch.Tensor,
        regions: torch.Tensor,
        band: int,
        fill: torch.Tensor,
        alpha: torch.Tensor,
    ) -> None:
        """Grow a chunk of regions on windows around them; write into ``fill`` (N, H, W) and ``alpha`` (H*W,).

        tight: int64 (k, 4) tight boxes; radii: float32 (k,); regions: int64 (k,) indices into ``masks``.
        """
        _, h, w = masks.shape
        # Distances are exact up to ``reach`` (every threshold used is below it), so windows need that margin.
        reach = math.ceil(float(radii.max()) + band) + 1
        ys = _window_starts(tight[:, 1], tight[:, 3], reach, h)  # (k, win_h) frame rows
        xs = _window_starts(tight[:, 0], tight[:, 2], reach, w)  # (k, win_w) frame cols
        at = (regions[:, None, None], ys[:, :, None], xs[:, None, :])
        d2 = _squared_distance_to_mask(masks[at], reach)
        r = radii[:, None, None]
        dilated = d2 <= r * r  # the one test of "inside the dilated mask", shared by both feather modes
        a = torch.where(dilated, 1.0, ((r + band - d2.sqrt_()) / max(band, 1)).clamp_(0.0, 1.0))
        fill[at] = a > 0
        alpha.scatter_reduce_(0, (ys[:, :, None] * w + xs[:, None, :]).flatten(), a.flatten(), reduce="amax")


def _window_starts(low: torch.Tensor, high: torch.Tensor, reach: int, size: int) -> torch.Tensor:
    """int64 (k, n): the frame coordinates of same-length windows, one per region, along one axis.

    low, high: int64 (k,) the regions' [low, high) extents. Each window holds its region's extent plus
    ``reach`` pixels on both sides, clipped to [0, size): it is shifted (not cut) at the frame's edges, so
    every coordinate is in the frame and appears once per window.
    """
    length = min(int((high - low).max()) + 2 * reach, size)
    start = (low - reach).clamp(min=0).clamp(max=size - length)
    return start[:, None] + torch.arange(length, device=low.device)


def _squared_distance_to_mask(mask: torch.Tensor, reach: int) -> torch.Tensor:
    """float32 (k, H, W): squared Euclidean distance (pixels^2) from each pixel to the nearest True pixel.

    mask: bool (k, H, W). Exact wherever the distance is at most ``reach``; elsewhere some value greater
    than ``reach ** 2`` (possibly inf). Separable: a min-plus pass along rows then one along columns.
    """
    d2 = torch.where(mask, 0.0, math.inf)
    for dim in (2, 1):
        d2 = _min_plus_pass(d2, reach, dim)
    return d2


def _min_plus_pass(values: torch.Tensor, reach: int, dim: int) -> torch.Tensor:
    """``out[i] = min over |s| <= reach of values[i + s] + s^2`` along ``dim`` (float32, same shape).

    One step of the separable distance transform of Felzenszwalb and Huttenlocher, bounded to ``reach``
    pixels, as 2 * reach shifted in-place minima (O(reach) tensor ops, no loop over pixels).
    """
    out = values.clone()
    size = values.shape[dim]
    for shift in range(1, min(reach, size - 1) + 1):
        cost = float(shift * shift)
        out.narrow(dim, shift, size - shift).clamp_(max=values.narrow(dim, 0, size - shift) + cost)
        out.narrow(dim, 0, size - shift).clamp_(max=values.narrow(dim, shift, size - shift) + cost)
    return out

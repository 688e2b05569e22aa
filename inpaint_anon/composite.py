"""Dilation, feathering, the one paste of fills into frames, and the check that every region was changed.

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

Pasting (:meth:`Compositor.compose`) is the only place where fills reach frames: each pixel of a fill's
window that the fill provides becomes ``x + alpha * (f - x)`` with ``x`` the ORIGINAL pixel and ``f`` the
fill's; a later fill wins where fills overlap; only the fills' windows are read or written.

The guard (:meth:`Compositor.unchanged`): a region counts as changed when the mean absolute difference
between output and input over its (original, not dilated) mask, averaged over the three channels, is at least
``min_change`` (0..255 units). A generator that "succeeds" but returns the region as it was (a broken model,
a VAE that reconstructs its input) falls below it, and the pipeline then obscures the region by a fallback.

Everything is torch, on the device of the masks. Distances are computed on same-size windows around the
regions (a padded crop batch, regions grouped by size into chunks), never on a loop over pixels.

Cost follows the masked area: a frame's alpha is kept as per-region windows (:class:`WindowAlpha`), the
paste and the guard read and write only the fills' windows and the masks' boxes, and no float tensor of the
frame's size is made. (The fill regions stay bool (N, H, W) masks at frame size: the Detections contract.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from inpaint_anon.checks import check_float, check_int  # noqa: F401 - re-exported for now
from inpaint_anon.types import Detections, cover_boxes, masks_to_boxes

if TYPE_CHECKING:  # inpaint_anon.inpaint imports this module (check_int, check_float)
    from inpaint_anon.inpaint.base import RegionFill

# Regions are processed in chunks of at most this many same-size windows (sorted by size), which bounds
# the padding wasted when one large region shares a batch with many small ones.
_CHUNK = 8
# Default of Compositor.min_change, in 0..255 units (mean absolute change over a region's mask and the three
# channels). Measured on scikit-image's astronaut face: an x264 yuv420p re-encode changes it by 3.3 (crf 18)
# to 5.8 (crf 28), about what a VAE that reconstructs its input would; the default blur changes it by 44,
# pixelate by 34; on this project's flat-coloured test objects (32 to 64 px) blur and pixelate change 12-31.
MIN_CHANGE = 8.0

Window = tuple[int, int, int, int]  # (x0, y0, x1, y1) in frame pixels, exclusive ends


@dataclass(frozen=True)
class WindowAlpha:
    """One frame's alpha (float32, [0, 1]) kept as windows around its regions: 0 outside every window, the
    maximum of the tiles where windows overlap.

    height, width: the frame's size in pixels; windows: (x0, y0, x1, y1) per tile, inside the frame;
    tiles: float32 (y1 - y0, x1 - x0) per window, on ``device``.
    """

    height: int
    width: int
    windows: tuple[Window, ...]
    tiles: tuple[torch.Tensor, ...]
    device: torch.device

    @property
    def pixels(self) -> int:
        """Number of float values the tiles hold (the alpha's cost; a dense alpha holds height * width)."""
        return sum(tile.numel() for tile in self.tiles)

    def crop(self, window: Window) -> torch.Tensor:
        """float32 (y1 - y0, x1 - x0): the alpha on ``window`` (x0, y0, x1, y1), inside the frame."""
        x0, y0, x1, y1 = window
        out = torch.zeros((y1 - y0, x1 - x0), dtype=torch.float32, device=self.device)
        for (a0, b0, a1, b1), tile in zip(self.windows, self.tiles, strict=True):
            ix0, iy0, ix1, iy1 = max(x0, a0), max(y0, b0), min(x1, a1), min(y1, b1)
            if ix0 < ix1 and iy0 < iy1:
                view = out[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
                torch.maximum(view, tile[iy0 - b0 : iy1 - b0, ix0 - a0 : ix1 - a0], out=view)
        return out

    def dense(self) -> torch.Tensor:
        """float32 (height, width): the whole frame's alpha (a full-frame tensor: for inspection and tests)."""
        return self.crop((0, 0, self.width, self.height))


# What Compositor.compose takes as alphas: a dense float (B, H, W) tensor, or one WindowAlpha per frame.
Alphas = torch.Tensor | Sequence[WindowAlpha]


class Compositor:
    """Grows region masks into fill regions, pastes inpainted fills into frames, checks regions were changed.

    dilate: pixels added around every mask (int, 0..512).
    dilate_rel: extra growth as a fraction of each region's box diagonal (float, 0..1); 0.02 grows a
        person box of 200 x 400 px by about 9 px more.
    feather: width in pixels of the soft outer edge where alpha ramps from 1 to 0 (int, 0..256; 0 = hard).
    min_change: the least mean absolute change (0..255 units, averaged over a region's mask and the three
        channels) for a region to count as obscured (float, 0..255; 0 turns the guard off); see
        :meth:`unchanged`.
    """

    def __init__(
        self, dilate: int = 4, dilate_rel: float = 0.02, feather: int = 6, min_change: float = MIN_CHANGE
    ) -> None:
        self.dilate = check_int("Compositor", "dilate", dilate, 0, 512)
        self.dilate_rel = check_float("Compositor", "dilate_rel", dilate_rel, 0.0, 1.0)
        self.feather = check_int("Compositor", "feather", feather, 0, 256)
        self.min_change = check_float("Compositor", "min_change", min_change, 0.0, 255.0)

    def __repr__(self) -> str:
        return (f"Compositor(dilate={self.dilate}, dilate_rel={self.dilate_rel}, feather={self.feather}, "
                f"min_change={self.min_change})")

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
        fill, alpha = self.fill_and_window_alpha(masks, boxes_xyxy, feather)
        return fill, alpha.dense()

    def fill_and_window_alpha(
        self, masks: torch.Tensor, boxes_xyxy: torch.Tensor | None = None, feather: bool = True
    ) -> tuple[torch.Tensor, WindowAlpha]:
        """:meth:`fill_regions` (bool (N, H, W)) and the frame's alpha as a :class:`WindowAlpha`, in one pass.

        1. check the inputs; 2. each region's dilation radius (capped at a frame-sized box's);
        3. per chunk of same-size windows (regions sorted by area), the distance to the mask, the dilated mask
           and the feather ramp, on the windows only: one alpha tile per region.
        """
        # 1. Check inputs
        if masks.ndim != 3:
            raise ValueError(f"Compositor: masks must be bool (N, H, W), got shape {tuple(masks.shape)}")
        masks = masks.to(torch.bool)
        n, h, w = masks.shape
        if boxes_xyxy is not None and tuple(boxes_xyxy.shape) != (n, 4):
            raise ValueError(
                f"Compositor: boxes_xyxy must be (N, 4) = ({n}, 4), got {tuple(boxes_xyxy.shape)}"
            )
        # 2. Radii
        fill = torch.zeros((n, h, w), dtype=torch.bool, device=masks.device)
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
        # 3. Grow on windows
        windows: list[Window] = []
        tiles: list[torch.Tensor] = []
        for chunk in order.split(_CHUNK) if len(order) else ():
            self._grow_chunk(masks, tight[chunk], radii[chunk], chunk, band, fill, windows, tiles)
        return fill, WindowAlpha(h, w, tuple(windows), tuple(tiles), masks.device)

    def prepare(self, detections: Detections, feather: bool = True) -> tuple[Detections, torch.Tensor]:
        """:meth:`prepare_windows` with the alpha as a dense float32 (H, W) tensor (a full-frame tensor)."""
        prepared, alpha = self.prepare_windows(detections, feather)
        return prepared, alpha.dense()

    def prepare_windows(self, detections: Detections, feather: bool = True) -> tuple[Detections, WindowAlpha]:
        """The inpainter's view of a frame's regions, and the frame's alpha as windows around them.

        Returns detections whose masks are the fill regions and the frame's :class:`WindowAlpha`, computed in
        one pass. Boxes: each detection box grown by its dilation (and feather band) and made to contain its
        fill region, so a tracker's smoothed box keeps steadying placement (e.g. a pixelate grid); everything
        else is unchanged.
        """
        fill, alpha = self.fill_and_window_alpha(detections.masks, detections.boxes_xyxy, feather)
        grow = (self.radii(detections.boxes_xyxy) + (self.feather if feather else 0))[:, None]
        grown = detections.boxes_xyxy + torch.cat([-grow, -grow, grow, grow], dim=1)
        h, w = fill.shape[1:]
        grown = torch.minimum(grown.clamp(min=0), torch.tensor([w, h, w, h], dtype=grown.dtype))
        return replace(detections, masks=fill, boxes_xyxy=cover_boxes(grown, masks_to_boxes(fill))), alpha

    @staticmethod
    def compose(
        images: torch.Tensor,
        fills: Sequence[RegionFill],
        alphas: Alphas | None = None,
        *,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """uint8 (B, 3, H, W): ``images`` with ``fills`` pasted in, the one paste of the pipeline.

        1. check the inputs (frame index and window of every fill, the alphas' shape);
        2. per fill, on its window only: ``x + alpha * (f - x)`` in float32, rounded, at the pixels the fill
           provides (``x`` from ``images``, never from an earlier fill, so overlapping fills do not compound);
        3. write the windows into ``out`` in list order, so a later fill wins where fills overlap.

        images: uint8 (B, 3, H, W) RGB, the original frames (read only, unless ``out`` is ``images``).
        fills: fills whose ``frame`` indexes ``images`` (moved to its device).
        alphas: the frame alphas of :meth:`prepare_windows` (B :class:`WindowAlpha`) or of :meth:`prepare`
            (float (B, H, W) in [0, 1]), or None for 1 everywhere (a hard paste, e.g. to look at what an
            inpainter returned).
        out: where to write, uint8 (B, 3, H, W) like ``images``, on any device (windows are moved there: e.g.
            the CPU frames of a GPU batch); default a copy of ``images``. May be ``images`` itself, or share
            its memory: every window is read before any is written.
        Bytes are exact at alpha 0 and 1 (float32 holds 0..255 exactly and ``x + 1 * (f - x) == f``);
        elsewhere rounded. Pixels outside every fill's mask are not touched; only the fills' windows are read.
        """
        # 1. Check inputs
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"Compositor.compose: images must be uint8 (B, 3, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        b, _, h, w = images.shape
        _check_alphas(alphas, b, h, w)
        if out is None:
            out = images.clone()
        elif out.dtype != torch.uint8 or out.shape != images.shape:
            raise ValueError(f"Compositor.compose: out must be uint8 {tuple(images.shape)}, "
                             f"got {out.dtype} {tuple(out.shape)}")
        for fill in fills:
            x0, y0, x1, y1 = fill.window
            if not (0 <= fill.frame < b and x1 <= w and y1 <= h):
                raise ValueError(f"Compositor.compose: fill of frame {fill.frame}, window {fill.window} lies "
                                 f"outside the {b} frames of {w}x{h}")
        # 2. Blend every fill's window from the original pixels
        device = images.device
        pasted = []
        for fill in fills:
            x0, y0, x1, y1 = fill.window
            original = images[fill.frame, :, y0:y1, x0:x1]
            rgb = fill.rgb.to(device)
            if alphas is not None:
                a = _alpha_window(alphas, fill.frame, fill.window).to(device=device, dtype=torch.float32)
                x = original.to(torch.float32)
                rgb = (x + a.clamp(max=1.0) * (rgb.to(torch.float32) - x)).round_().clamp_(0, 255).to(torch.uint8)
            pasted.append((fill.frame, (slice(y0, y1), slice(x0, x1)), fill.mask.to(device), rgb))
        # 3. Write them in order
        for frame, (rows, cols), mask, rgb in pasted:
            view = out[frame, :, rows, cols]
            view.copy_(torch.where(mask.to(out.device), rgb.to(out.device), view))
        return out

    def changes(self, images: torch.Tensor, composed: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """float32 (N,) on the CPU: each region's mean absolute change, 0..255 units, over its mask and channels.

        images, composed: uint8 (3, H, W), one frame before and after pasting (on any devices; the windows read
        are moved to the masks'); masks: bool (N, H, W), the regions' masks. Only each mask's bounding box is
        read. An empty mask gives ``inf`` (nothing to hide).
        """
        boxes = masks_to_boxes(masks).long().tolist()
        sums = torch.zeros(len(boxes), dtype=torch.float32, device=masks.device)
        counts = torch.zeros(len(boxes), dtype=torch.float32, device=masks.device)
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            if x1 > x0:
                before = images[:, y0:y1, x0:x1].to(device=masks.device, dtype=torch.int16)
                after = composed[:, y0:y1, x0:x1].to(device=masks.device, dtype=torch.int16)
                diff = (after - before).abs_().sum(dim=0, dtype=torch.float32)
                inside = masks[i, y0:y1, x0:x1]
                sums[i] = diff[inside].sum()
                counts[i] = inside.count_nonzero()
        change = torch.where(counts > 0, sums / (3 * counts.clamp(min=1)), math.inf)
        return change.cpu()

    def unchanged(
        self,
        images: torch.Tensor | Sequence[torch.Tensor],
        composed: torch.Tensor | Sequence[torch.Tensor],
        detections: Sequence[Detections],
    ) -> list[tuple[int, int, float]]:
        """The regions the paste left (nearly) as they were: (frame in batch, region, change) with change, as
        :meth:`changes`, below ``min_change``; empty when ``min_change`` is 0.

        images, composed: uint8 (B, 3, H, W) (or B uint8 (3, H, W) frames) before and after :meth:`compose`;
        detections: B Detections with the regions' original (not dilated) masks.
        """
        if self.min_change == 0:
            return []
        weak = []
        for b, dets in enumerate(detections):
            if len(dets):
                for i, change in enumerate(self.changes(images[b], composed[b], dets.masks).tolist()):
                    if change < self.min_change:
                        weak.append((b, i, change))
        return weak

    def _grow_chunk(
        self,
        masks: torch.Tensor,
        tight: torch.Tensor,
        radii: torch.Tensor,
        regions: torch.Tensor,
        band: int,
        fill: torch.Tensor,
        windows: list[Window],
        tiles: list[torch.Tensor],
    ) -> None:
        """Grow a chunk of regions on windows around them; write into ``fill`` (N, H, W) and append each
        region's window and float32 alpha tile to ``windows`` and ``tiles``.

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
        win_h, win_w = ys.shape[1], xs.shape[1]
        for y0, x0, tile in zip(ys[:, 0].tolist(), xs[:, 0].tolist(), a, strict=True):
            windows.append((x0, y0, x0 + win_w, y0 + win_h))
            tiles.append(tile)


def _check_alphas(alphas: Alphas | None, b: int, h: int, w: int) -> None:
    """ValueError unless ``alphas`` is None, a float (b, h, w) tensor or b WindowAlpha of h x w frames."""
    if alphas is None:
        return
    if isinstance(alphas, torch.Tensor):
        if tuple(alphas.shape) != (b, h, w) or not alphas.is_floating_point():
            raise ValueError(f"Compositor.compose: alphas must be float ({b}, {h}, {w}), "
                             f"got {alphas.dtype} {tuple(alphas.shape)}")
        return
    sizes = [(alpha.height, alpha.width) for alpha in alphas]
    if sizes != [(h, w)] * b:
        raise ValueError(f"Compositor.compose: alphas must be {b} WindowAlpha of {h}x{w} (HxW), got sizes {sizes}")


def _alpha_window(alphas: Alphas, frame: int, window: Window) -> torch.Tensor:
    """float (y1 - y0, x1 - x0): frame ``frame``'s alpha on ``window`` (x0, y0, x1, y1)."""
    if isinstance(alphas, torch.Tensor):
        x0, y0, x1, y1 = window
        return alphas[frame, y0:y1, x0:x1]
    return alphas[frame].crop(window)


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
    than ``reach ** 2`` (possibly inf). On the CPU: OpenCV's exact Euclidean distance transform
    (:func:`_squared_distance_cpu`, linear in the window's pixels); elsewhere separable min-plus passes along
    rows then columns (O(reach) tensor ops over the window). Both give the same integers.
    """
    if mask.device.type == "cpu":
        return _squared_distance_cpu(mask)
    d2 = torch.where(mask, 0.0, math.inf)
    for dim in (2, 1):
        d2 = _min_plus_pass(d2, reach, dim)
    return d2


def _squared_distance_cpu(mask: torch.Tensor) -> torch.Tensor:
    """float32 (k, H, W): exact squared distances to the nearest True pixel of each bool (k, H, W) CPU mask
    (inf for a mask without one).

    ``cv2.distanceTransform`` with ``DIST_L2`` and ``DIST_MASK_PRECISE`` is Felzenszwalb and Huttenlocher's exact
    transform; it returns the float32 root of an integer (a squared distance between pixel centres), so squaring
    and rounding gives that integer back exactly (far beyond any window: float32 keeps 24 bits).
    """
    out = torch.empty(mask.shape, dtype=torch.float32)
    for i, one in enumerate(mask.numpy()):
        if not one.any():
            out[i] = math.inf
            continue
        distance = cv2.distanceTransform(np.logical_not(one).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        out[i] = torch.from_numpy(np.rint(np.square(distance, out=distance), out=distance))
    return out


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

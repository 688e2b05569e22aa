"""Real-time anonymizers: blur, pixelate, solid fill and keyed scramble, batched with torch.

Each returns the fills (:class:`RegionFill`) of every region of every frame of an :class:`InpaintBatch` in
one call, computed on its device ("auto" = cuda if available else cpu; frames and masks are moved there, the
fills stay there). Each fill covers its region's fill mask, on a window that is the mask's bounding box; the
compositor pastes them. Solid fills each region with its colour; scramble returns one fill per frame (region
-1), the union of the frame's fill regions scrambled together (on the union's bounding box: its cost follows
that box, one keyed permutation per frame being the scramble's format). Float work, copies and fills follow
the regions' windows, not the frame (the only frame-size tensors are the bool (N, H, W) masks that come in).
Blur and pixelate share one path:

* all regions of the batch are gathered into one list of masked pixels (``_Regions``); each region's box is
  its ``boxes_xyxy`` (a tracker's smoothed box steadies the placement) grown to contain its fill mask's
  tight box (or the tight box alone when the given one is unusable), so a fill region that grew past its
  detector box (or came with a degenerate box) is still filled entirely;
* ``roi_align`` resamples each region's neighbourhood into a small fixed-size *canonical crop* (with a
  coverage channel, so pixels outside the frame do not count; only a window around the neighbourhood is
  converted to float, never the whole frame), the crops are processed in one batch, and
  each region's window (its fill mask's tight box) reads its values back from its region's crop, separably:
  columns first, then rows (``_sample_windows``; the same arithmetic as a per-pixel bilinear gather, but with
  the coordinates computed once per column and row, not per pixel);
* ``_region_fills`` keeps the values at the masked pixels of each window, one fill per region, ordered by
  box area (ties: region order), so that where regions overlap the largest region (the coarsest fill) is
  pasted last and wins, and the output is deterministic on every device.

Fail closed: a region whose processed values are not finite (which a region inside the frame cannot
produce, but a bug or a bad device kernel could) is filled with :data:`FALLBACK_RGB` (black) instead and
reported as a :class:`Fallback`; a region is never left as it was.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from inpaint_anon.checks import check_bool, check_float, check_int
from inpaint_anon.device import resolve_device
from inpaint_anon.errors import ConfigError
from inpaint_anon.inpaint.base import Fallback, InpaintBatch, Inpainter, InpaintOutput, RegionFill
from inpaint_anon.scramble import (
    SCHEME,
    ScrambledPixelsWriter,
    key_fingerprint,
    key_tag,
    new_nonce,
    nonce_hex,
    scramble_chw,
    video_key,
)
from inpaint_anon.types import cover_boxes, masks_to_boxes

FALLBACK_RGB = (0, 0, 0)
# Blur sigma per pixel of a region's shorter side at strength 1: a 100 px face gets sigma 15 px.
BLUR_SIGMA_PER_SIDE = 0.15
BLUR_MIN_SIGMA = 1.0  # pixels
# Canonical-crop pixels per blur sigma along a region's shorter side (sets the crop size from the strength).
_BLUR_CROP_PER_SIGMA = 2.5


@dataclass
class _Regions:
    """Every region of a batch, flattened (M regions, P masked pixels), on one device.

    frame: int64 (M,) index of the region's frame in the batch; index: int64 (M,) its index in that frame's
    Detections; ids: int64 (M,) its track id (or ``index`` before tracking); boxes: float32 (M, 4) xyxy boxes
    (the given boxes grown to contain the fill masks); tight: int64 (M, 4) tight xyxy boxes of the fill masks
    (exclusive right/bottom; zeros for an empty mask); class_names: M names.
    masks: M bool (y1 - y0, x1 - x0) fill masks on their tight boxes; pixels: the number of masked pixels.
    """

    frame: torch.Tensor
    index: torch.Tensor
    ids: torch.Tensor
    boxes: torch.Tensor
    tight: torch.Tensor
    class_names: list[str]
    masks: list[torch.Tensor]
    pixels: int

    def __len__(self) -> int:
        return int(self.frame.numel())


class _TorchInpainter(Inpainter):
    """An inpainter that runs on one torch device ("auto" = cuda if available else cpu)."""

    def __init__(self, device: str | torch.device = "auto") -> None:
        self._device = resolve_device(device)

    @property
    def device(self) -> torch.device:
        return self._device


class _RegionInpainter(_TorchInpainter):
    """Shared driver of blur and pixelate: gather the regions, compute a value per masked pixel, paste."""

    def __call__(self, batch: InpaintBatch) -> InpaintOutput:
        images = batch.images.to(self._device)
        regions = _collect_regions(batch, self._device)
        if regions.pixels == 0:
            return InpaintOutput()
        values = self._values(images, regions)
        fills, bad = _region_fills(regions, values)
        fallbacks = [
            Fallback(
                frame_index=batch.frame_indices[int(regions.frame[m])],
                region=int(regions.index[m]),
                class_name=regions.class_names[m],
                used="solid",
                reason=f"{self.name}: non-finite values in the processed region",
            )
            for m in torch.nonzero(bad).flatten().tolist()
        ]
        return InpaintOutput(fills=fills, fallbacks=fallbacks)

    @abstractmethod
    def _values(self, images: torch.Tensor, regions: _Regions) -> list[torch.Tensor]:
        """M float32 (3, y1 - y0, x1 - x0) in 0..255: the fill of each region on its tight box (only the masked
        pixels count; a non-finite one marks a failed region).

        images: uint8 (B, 3, H, W) on the inpainter's device.
        """


class SolidInpainter(_TorchInpainter):
    """Fills every region with one colour.

    color: RGB, three integers 0..255. device: "auto", "cpu", "cuda"...
    """

    name = "solid"

    def __init__(self, color: Sequence[int] = (0, 0, 0), device: str | torch.device = "auto") -> None:
        super().__init__(device)
        if (
            isinstance(color, (str, bytes))
            or not isinstance(color, Sequence)
            or len(color) != 3
            or not all(
                isinstance(c, numbers.Integral) and not isinstance(c, bool) and 0 <= c <= 255 for c in color
            )
        ):
            raise ConfigError(
                f"SolidInpainter color={color!r} is invalid; use three integers 0..255 (R, G, B)"
            )
        self.color = tuple(int(c) for c in color)

    def __call__(self, batch: InpaintBatch) -> InpaintOutput:
        for detections in batch.detections:
            _check_mask_size(detections.masks, batch.images)
        return InpaintOutput(fills=solid_fills(batch, self.color, device=self._device))


class BlurInpainter(_RegionInpainter):
    """Gaussian blur of each region from its own neighbourhood, with a sigma that scales with its size.

    strength: multiplies the sigma, which is ``0.15 * strength * shorter side of the region's box`` pixels
    (at least 1 px): at the default a face or a person becomes a smooth blob (range 0.05..10).
    Each region's box plus a 3-sigma margin is resampled to an S x S canonical crop (S from the strength,
    32..256) by ``roi_align`` (area averaging), blurred there with its own separable Gaussian (sigma in crop
    pixels, per axis) in one grouped convolution, then read back bilinearly at every masked pixel.
    Pixels outside the frame are left out of the average (normalized convolution on a coverage channel).
    """

    name = "blur"

    def __init__(self, strength: float = 1.0, device: str | torch.device = "auto") -> None:
        super().__init__(device)
        self.strength = check_float("BlurInpainter", "strength", strength, 0.05, 10.0)
        fraction = BLUR_SIGMA_PER_SIDE * self.strength
        self.crop_size = min(max(math.ceil(_BLUR_CROP_PER_SIGMA * (1 + 6 * fraction) / fraction), 32), 256)

    def _values(self, images: torch.Tensor, regions: _Regions) -> list[torch.Tensor]:
        boxes = regions.boxes
        sides = torch.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        sigma = (BLUR_SIGMA_PER_SIDE * self.strength * sides).clamp(min=BLUR_MIN_SIGMA)
        margin = 3 * sigma[:, None]
        rois = torch.cat([boxes[:, :2] - margin, boxes[:, 2:] + margin], dim=1)
        size = self.crop_size
        crops = _canonical_crops(images, regions.frame, rois, (size, size))
        # Sigma in crop pixels along y and x; below half a crop pixel a blur means nothing (and would
        # let the coverage of crop pixels just outside the frame underflow to 0).
        sigma_y = (sigma * size / (rois[:, 3] - rois[:, 1])).clamp(min=0.5)
        sigma_x = (sigma * size / (rois[:, 2] - rois[:, 0])).clamp(min=0.5)
        blurred = _unpremultiply(_gaussian_blur_per_region(crops, sigma_y, sigma_x))
        return _sample_windows(blurred, rois, regions, bilinear=True)


class PixelateInpainter(_RegionInpainter):
    """Mosaic: each region is averaged over square blocks on its own grid, anchored to its box's top-left.

    blocks: number of blocks along the region's longer side (1..256); the block side is longer side /
        blocks pixels, so a region is cut into about blocks x (blocks * shorter / longer) blocks. Blocks
        are averaged over all their pixels inside the frame (the region's and its surroundings'). Keep
        blocks small: a region not much larger than ``blocks`` pixels stays nearly as it was.
    noise: standard deviation (0..255 units) of Gaussian noise added to each block's colour, per channel.
    seed: the noise of a region is a pure function of (seed, region id), region id = its track id when the
        detections are tracked, else its index; a tracked object keeps its noise pattern in every frame.
    """

    name = "pixelate"

    def __init__(
        self, blocks: int = 8, noise: float = 0.0, seed: int = 0, device: str | torch.device = "auto"
    ) -> None:
        super().__init__(device)
        self.blocks = check_int("PixelateInpainter", "blocks", blocks, 1, 256)
        self.noise = check_float("PixelateInpainter", "noise", noise, 0.0, 255.0)
        self.seed = check_int("PixelateInpainter", "seed", seed, 0, 2**63 - 1)

    def _values(self, images: torch.Tensor, regions: _Regions) -> list[torch.Tensor]:
        boxes = regions.boxes
        longer = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])[:, None]
        # A square of side `longer` from the box's top-left corner: a blocks x blocks grid of square blocks.
        rois = torch.cat([boxes[:, :2], boxes[:, :2] + longer], dim=1)
        means = _unpremultiply(_canonical_crops(images, regions.frame, rois, (self.blocks, self.blocks)))
        if self.noise > 0:
            means = means + self.noise * self.block_noise(regions.ids).to(means.device)
        return _sample_windows(means, rois, regions, bilinear=False)

    def block_noise(self, region_ids: torch.Tensor) -> torch.Tensor:
        """float32 (M, 3, blocks, blocks) standard normal noise, a pure function of (seed, region id), on CPU.

        One seeded ``torch.Generator`` per region (a short loop per region, not per pixel); generated on the
        CPU so that the pattern is the same on every device.
        """
        noise = []
        for region_id in region_ids.tolist():
            digest = hashlib.blake2b(
                f"{self.seed}/{region_id}".encode(), digest_size=8, person=b"ia-pixnoise"
            ).digest()
            generator = torch.Generator().manual_seed(int.from_bytes(digest, "big") >> 1)
            noise.append(torch.randn((3, self.blocks, self.blocks), generator=generator))
        return torch.stack(noise)


class ScrambleInpainter(_TorchInpainter):
    """Keyed, reversible scramble of each frame's fill regions (see :mod:`inpaint_anon.scramble`).

    key: secret of at least 128 bits (hex string of >= 32 hex digits, or bytes of any length >= 16); make one
        with ``python -c "import secrets; print(secrets.token_hex(32))"``.
    hide_colors: also add a keyed offset mod 256 to every value (hides the colour histogram; default).
    nonce: public per-video nonce (hex, >= 8 bytes); None draws a fresh one (:func:`new_nonce`), exposed as
        ``nonce``. Frames are scrambled with ``video_key(key, nonce)``, so one secret can serve many videos.
        The keystream is a function of (key, nonce, frame index): one instance (one nonce) scrambles one video:
        :meth:`start_video` refuses a second one (the command line builds one per run).
    The scrambled area of a frame is the union of its fill regions, scrambled with the frame's index as
    tweak. ``feather = False``: the compositor pastes it with hard edges, so :func:`unscramble` with the
    same mask restores the frame exactly; ``lossless = True``: that holds only on a lossless output (FFV1).
    :meth:`record_pixels` records those masks (what ``python -m inpaint_anon.unscramble`` needs).
    """

    name = "scramble"
    feather = False
    lossless = True

    def __init__(
        self, key: str | bytes, hide_colors: bool = True, nonce: str | bytes | None = None,
        device: str | torch.device = "auto",
    ) -> None:
        super().__init__(device)
        self.key_fingerprint = key_fingerprint(key)
        self.nonce = new_nonce() if nonce is None else nonce_hex(nonce)
        self.hide_colors = check_bool("inpainter.hide_colors", hide_colors)
        self._key = video_key(key, self.nonce)
        self._tag = key_tag(key, self.nonce, self.hide_colors)
        self._videos = 0
        self._recorder: ScrambledPixelsWriter | None = None

    def __repr__(self) -> str:
        return (f"ScrambleInpainter(key=<fingerprint {self.key_fingerprint}>, nonce={self.nonce!r}, "
                f"hide_colors={self.hide_colors})")

    def start_video(self) -> None:
        """One video per instance: a second one would be scrambled with the same keystream (same key and nonce)."""
        if self._videos:
            raise ConfigError("this ScrambleInpainter already scrambled a video, and a second one would reuse its "
                              "keystream; make a new ScrambleInpainter (a fresh nonce) for each video")
        self._videos += 1

    def run_record(self) -> dict[str, Any]:
        """``{"scramble": {scheme, nonce, key_fingerprint, hide_colors}}``: public, safe for run.json."""
        return {"scramble": {"scheme": SCHEME, "nonce": self.nonce, "key_fingerprint": self.key_fingerprint,
                             "hide_colors": self.hide_colors}}

    def record_pixels(self, path: str | Path, height: int, width: int) -> ScrambledPixelsWriter:
        """Record from now on the exact pixels scrambled in each frame (frames of ``height`` x ``width`` px) to
        ``path``; the caller commits the returned writer with the frame count after a successful run, or aborts it.
        """
        self._recorder = ScrambledPixelsWriter(
            path, nonce=self.nonce, key_fingerprint=self.key_fingerprint, tag=self._tag,
            hide_colors=self.hide_colors, height=height, width=width,
        )
        return self._recorder

    def __call__(self, batch: InpaintBatch) -> InpaintOutput:
        """One fill per frame with regions (region -1): the union of its fill regions, scrambled together,
        on the union's bounding box. With a recorder open, each frame's union is recorded as well."""
        fills, recorded, unions = [], [], []
        for b, (detections, index) in enumerate(zip(batch.detections, batch.frame_indices, strict=True)):
            if not len(detections):
                continue
            masks = _frame_masks(detections.masks, batch.images, self._device)
            boxes = masks_to_boxes(masks)
            boxes = boxes[boxes[:, 2] > boxes[:, 0]]
            if not len(boxes):
                continue
            x0, y0 = (int(v) for v in boxes[:, :2].amin(dim=0).tolist())
            x1, y1 = (int(v) for v in boxes[:, 2:].amax(dim=0).tolist())
            # The union on its box only (uint8 max: the same as bool any, far faster on the CPU). Its pixels come
            # in the same raster order as in the whole frame, so the scramble is the whole frame's, on the box.
            rows, cols = slice(y0, y1), slice(x0, x1)
            window_mask = masks[:, rows, cols].view(torch.uint8).amax(dim=0).bool()
            scrambled = scramble_chw(batch.images[b, :, rows, cols].to(self._device), window_mask, self._key, index,
                                     self.hide_colors)
            fills.append(RegionFill(b, -1, (x0, y0, x1, y1), scrambled, window_mask))
            if self._recorder is not None and not self._recorder.closed:
                union = torch.zeros(masks.shape[1:], dtype=torch.bool, device=masks.device)
                union[rows, cols] = window_mask
                recorded.append(index)
                unions.append(union)
        self._record(recorded, unions)
        return InpaintOutput(fills=fills)

    def _record(self, frame_indices: Sequence[int], unions: Sequence[torch.Tensor]) -> None:
        """Hand each frame's scrambled pixel set (bool (H, W) masks ``unions``) to the recorder, if one is open;
        frames not given are recorded as empty."""
        if self._recorder is None or self._recorder.closed:
            return
        for index, mask in zip(frame_indices, unions, strict=True):
            self._recorder.write(index, mask)


def solid_fills(
    batch: InpaintBatch,
    color: Sequence[int],
    regions: Sequence[tuple[int, int]] | None = None,
    device: torch.device | None = None,
) -> list[RegionFill]:
    """One fill per region: ``color`` (RGB 0..255) on its fill mask, on the mask's bounding box.

    regions: (frame in batch, region index) pairs, in paste order; None = every region of every frame.
    device: where the fills are made (default the batch's images' device). Empty masks get no fill.
    """
    device = batch.images.device if device is None else device
    if regions is None:
        regions = [(b, i) for b, dets in enumerate(batch.detections) for i in range(len(dets))]
    rgb = torch.tensor(tuple(color), dtype=torch.uint8, device=device)[:, None, None]
    boxes: dict[int, list[list[int]]] = {}
    fills = []
    for b, i in regions:
        masks = batch.detections[b].masks
        if b not in boxes:
            boxes[b] = masks_to_boxes(masks).long().tolist()
        x0, y0, x1, y1 = boxes[b][i]
        if x1 > x0:
            mask = masks[i, y0:y1, x0:x1].to(device=device, dtype=torch.bool)
            fills.append(RegionFill(b, i, (x0, y0, x1, y1), rgb.expand(3, *mask.shape), mask))
    return fills


def _check_mask_size(masks: torch.Tensor, images: torch.Tensor) -> None:
    """ValueError unless (N, H, W) ``masks`` are at the frame size of uint8 (B, 3, H, W) ``images``."""
    if tuple(masks.shape[1:]) != tuple(images.shape[2:]):
        raise ValueError(
            f"fill masks of size {tuple(masks.shape[1:])} do not match the frames "
            f"{tuple(images.shape[2:])}; detections must be at frame resolution"
        )


def _frame_masks(masks: torch.Tensor, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """bool (N, H, W) masks on ``device``, checked to be at the frame size of uint8 (B, 3, H, W) images."""
    _check_mask_size(masks, images)
    return masks.to(device=device, dtype=torch.bool)


def _collect_regions(batch: InpaintBatch, device: torch.device) -> _Regions:
    """All regions of ``batch`` as one :class:`_Regions` on ``device`` (a loop over frames, not regions)."""
    frame, index, ids, class_names, windows, given_boxes, tight = [], [], [], [], [], [], []
    count = 0
    for b, detections in enumerate(batch.detections):
        n = len(detections)
        if n == 0:
            continue
        masks = _frame_masks(detections.masks, batch.images, device)
        boxes = masks_to_boxes(masks).long()
        windows += [masks[i, y0:y1, x0:x1] for i, (x0, y0, x1, y1) in enumerate(boxes.tolist())]
        tight.append(boxes)
        frame.append(torch.full((n,), b, dtype=torch.int64, device=device))
        index.append(torch.arange(n, device=device))
        ids.append(index[-1] if detections.track_ids is None else detections.track_ids.to(device))
        given_boxes.append(detections.boxes_xyxy.to(device))
        class_names += [detections.names.get(c, str(c)) for c in detections.class_ids.tolist()]
        count += n
    if count == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        no_boxes = torch.zeros((0, 4), device=device)
        return _Regions(empty, empty, empty, no_boxes, no_boxes.long(), [], [], 0)
    tight = torch.cat(tight)
    return _Regions(
        frame=torch.cat(frame),
        index=torch.cat(index),
        ids=torch.cat(ids),
        boxes=cover_boxes(torch.cat(given_boxes), tight.to(torch.float32)),
        tight=tight,
        class_names=class_names,
        masks=windows,
        pixels=sum(int(window.count_nonzero()) for window in windows),
    )


def _canonical_crops(
    images: torch.Tensor, frame: torch.Tensor, rois: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """float32 (M, 4, h, w): each roi resampled to ``size`` = (h, w) by area-averaging ``roi_align``.

    images: uint8 (B, 3, H, W); frame: int64 (M,) batch index of each roi; rois: float32 (M, 4) xyxy in
    pixel-edge coordinates (pixel x covers [x, x + 1)). Channels 0..2 are the colour (0..255) times the
    coverage, channel 3 the coverage: the fraction of each crop pixel that lies inside the frame.
    Only a window around each roi is converted to float (:func:`_roi_windows`), never a whole frame.
    """
    crops = torch.zeros((len(rois), 4, *size), dtype=torch.float32, device=images.device)
    windows = _roi_windows(rois, images.shape[2], images.shape[3])
    for m, (b, (x0, y0, x1, y1)) in enumerate(zip(frame.tolist(), windows.tolist(), strict=True)):
        if x1 <= x0 or y1 <= y0:
            continue  # a roi wholly outside the frame: coverage 0 (its values become non-finite: fallback)
        planes = torch.empty((1, 4, y1 - y0, x1 - x0), dtype=torch.float32, device=images.device)
        planes[0, :3] = images[b, :, y0:y1, x0:x1]  # one conversion pass, window only
        planes[0, 3] = 1.0
        # Shifting by the integer window origin is exact in float32 (0 <= origin <= every shifted coordinate
        # or the origin is 0), so roi_align sees the same roi sizes and bins as on the whole frame.
        shifted = rois[m] - torch.tensor([x0, y0, x0, y0], dtype=rois.dtype, device=rois.device)
        indexed = torch.cat([shifted.new_zeros(1), shifted])[None]
        crops[m] = roi_align(planes, indexed, output_size=size, spatial_scale=1.0, sampling_ratio=-1,
                             aligned=True)[0]
    return crops


def _roi_windows(rois: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """int64 (M, 4) xyxy: the frame pixels ``roi_align`` can read for each roi (float32 (M, 4) xyxy rois).

    With ``aligned=True`` samples lie in [x0 - 0.5, x1 - 0.5) and bilinear reads the two pixels around
    each, so [floor(x0) - 1, ceil(x1) + 1) (clipped to the frame) holds them all with a pixel to spare;
    where the window is not cut by the frame's edge, no sample comes near its border, so the result is the
    whole frame's. Windows of rois outside the frame are empty (x1 <= x0 or y1 <= y0).
    """
    low = (rois[:, :2].floor() - 1).clamp(min=0)
    high = rois[:, 2:].ceil() + 1
    high = torch.minimum(high, torch.tensor([width, height], dtype=high.dtype, device=high.device))
    return torch.cat([low, high], dim=1).nan_to_num(0.0).long()


def _unpremultiply(crops: torch.Tensor) -> torch.Tensor:
    """float32 (M, 3, h, w) colour of (M, 4, h, w) colour*coverage + coverage crops (NaN/inf where 0)."""
    return crops[:, :3] / crops[:, 3:]


def _gaussian_blur_per_region(
    crops: torch.Tensor, sigma_y: torch.Tensor, sigma_x: torch.Tensor
) -> torch.Tensor:
    """float32 (M, C, h, w): crops blurred by separable Gaussians, sigma (crop pixels, (M,)) per region/axis.

    One grouped ``conv2d`` per axis (a kernel per region and channel), zero padding; the kernel radius is
    3 * the largest sigma.
    """
    m, c, h, w = crops.shape
    radius = max(1, math.ceil(3 * float(torch.maximum(sigma_y, sigma_x).max())))
    taps = torch.arange(-radius, radius + 1, device=crops.device, dtype=torch.float32)
    flat = crops.reshape(1, m * c, h, w)
    for sigma, shape, padding in ((sigma_y, (-1, 1), (radius, 0)), (sigma_x, (1, -1), (0, radius))):
        kernel = torch.exp(-0.5 * (taps[None, :] / sigma[:, None]) ** 2)
        kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)
        flat = F.conv2d(flat, kernel.reshape(m * c, 1, *shape), padding=padding, groups=m * c)
    return flat.reshape(m, c, h, w)


def _sample_windows(
    crops: torch.Tensor, rois: torch.Tensor, regions: _Regions, bilinear: bool
) -> list[torch.Tensor]:
    """M float32 (C, y1 - y0, x1 - x0): each region's values on its tight box, read from its crop.

    crops: float32 (M, C, h, w) covering ``rois`` (M, 4) xyxy. A pixel's centre (x + 0.5, y + 0.5) maps to
    crop coordinates; ``bilinear`` interpolates between crop-pixel centres (edges replicated), otherwise the
    crop pixel containing it is taken (nearest). The map is separable (x gives the crop column, y the row), so
    the crop is first read at the window's columns (all crop rows), then at its rows: per pixel, the same
    products and sums as a bilinear gather, in the same order.
    """
    _, _, h, w = crops.shape
    device = crops.device
    windows = []
    for m, (x0, y0, x1, y1) in enumerate(regions.tight.tolist()):
        roi, crop = rois[m], crops[m]
        xs = torch.arange(x0, x1, device=device)
        ys = torch.arange(y0, y1, device=device)
        u = (xs + 0.5 - roi[0]) / (roi[2] - roi[0]) * w
        v = (ys + 0.5 - roi[1]) / (roi[3] - roi[1]) * h
        if not bilinear:
            cols, rows = u.floor().long().clamp_(0, w - 1), v.floor().long().clamp_(0, h - 1)
            windows.append(crop[:, rows][:, :, cols])
            continue
        u, v = u - 0.5, v - 0.5
        u0, v0 = u.floor(), v.floor()
        fu, fv = u - u0, (v - v0)[:, None]
        c0, c1 = u0.long().clamp(0, w - 1), (u0.long() + 1).clamp(0, w - 1)
        r0, r1 = v0.long().clamp(0, h - 1), (v0.long() + 1).clamp(0, h - 1)
        across = crop[:, :, c0] * (1 - fu) + crop[:, :, c1] * fu  # (C, h, window width)
        windows.append(across[:, r0] * (1 - fv) + across[:, r1] * fv)
    return windows


def _region_fills(regions: _Regions, values: Sequence[torch.Tensor]) -> tuple[list[RegionFill], torch.Tensor]:
    """One fill per non-empty region from its float (3, h, w) ``values`` on its tight box (kept at its masked
    pixels, 0 elsewhere), and bool (M,) flags of the regions that had a non-finite value at a masked pixel
    (filled with :data:`FALLBACK_RGB` instead).

    Fills are ordered by the area of the regions' boxes (ties: region order), so the compositor pastes the
    largest region last and it wins where regions overlap. Each fill's window is its mask's tight box.
    """
    device = regions.boxes.device
    bad = torch.zeros(len(regions), dtype=torch.bool, device=device)
    fallback = torch.tensor(FALLBACK_RGB, dtype=torch.float32, device=device)[:, None, None]
    boxes = regions.boxes
    order = torch.argsort((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), stable=True).tolist()
    frames, indices, tight = regions.frame.tolist(), regions.index.tolist(), regions.tight.tolist()
    fills = []
    for m in order:
        mask, window = regions.masks[m], values[m]
        if not bool(mask.any()):
            continue
        if bool((mask & ~torch.isfinite(window).all(dim=0)).any()):
            bad[m] = True
            window = fallback.expand_as(window)
        pixels = window.round().clamp_(0, 255).to(torch.uint8)
        rgb = torch.where(mask, pixels, torch.zeros((), dtype=torch.uint8, device=device))
        fills.append(RegionFill(frames[m], indices[m], tuple(tight[m]), rgb, mask))
    return fills, bad

"""Mask and box geometry of the tracking stage: boxes moved and interpolated, masks stored as crops (patches)
and warped from one box onto another, dilated, united and pasted back into frames.

Boxes are float64 (4,) xyxy in frame pixels and may lie partly or wholly outside the frame (an object that
enters or leaves keeps its full extent: the motion is not clipped, only the pasted mask is); masks are bool
(H, W) at frame resolution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from inpaint_anon.types import mask_box


def interpolate_box(box_a: Sequence[float], box_b: Sequence[float], fraction: float) -> np.ndarray:
    """float64 (4,) xyxy box ``fraction`` of the way from ``box_a`` (0.0) to ``box_b`` (1.0), both xyxy pixels."""
    a, b = np.asarray(box_a, dtype=np.float64), np.asarray(box_b, dtype=np.float64)
    return (1.0 - fraction) * a + fraction * b


def shift_box(box: np.ndarray, velocity: np.ndarray, frames: float) -> np.ndarray:
    """float64 (4,) xyxy ``box`` moved by ``velocity`` (dx, dy pixels per frame) times ``frames``."""
    dx, dy = velocity * frames
    return box + np.array([dx, dy, dx, dy])


def box_centre(box: np.ndarray) -> np.ndarray:
    """float64 (2,) centre (x, y) of an xyxy box."""
    return (np.asarray(box[:2], dtype=np.float64) + np.asarray(box[2:], dtype=np.float64)) / 2


def box_size(box: np.ndarray) -> float:
    """The longer side of an xyxy box, pixels (0.0 for a degenerate box): the unit of ``Tracker.max_speed``."""
    return float(max(box[2] - box[0], box[3] - box[1], 0.0))


def clip_box(box: np.ndarray, height: int, width: int) -> np.ndarray:
    """float64 (4,) xyxy ``box`` cut to a frame of ``height`` x ``width`` (degenerate when wholly outside)."""
    return np.clip(np.asarray(box, dtype=np.float64), 0.0, [width, height, width, height])


@dataclass(frozen=True)
class MaskPatch:
    """A bool mask stored as its crop: ``pixels[y, x]`` is frame pixel ``(y0 + y, x0 + x)``; may lie partly
    outside the frame (clipped when pasted)."""

    pixels: np.ndarray
    x0: int
    y0: int

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> MaskPatch:
        """The crop of bool (H, W) ``mask`` to its bounding box (a 0 x 0 patch for an empty mask)."""
        box = mask_box(mask)
        if box is None:
            return cls(np.zeros((0, 0), dtype=bool), 0, 0)
        x0, y0, x1, y1 = box
        return cls(np.ascontiguousarray(mask[y0:y1, x0:x1]), x0, y0)

    @property
    def empty(self) -> bool:
        return self.pixels.size == 0

    def warp(self, src_box: np.ndarray, dst_box: np.ndarray) -> MaskPatch:
        """This mask moved by the map taking xyxy ``src_box`` onto ``dst_box`` (translation + per-axis scale).

        Scaling resizes with area averaging and keeps every pixel with any coverage, so thin parts survive."""
        if self.empty:
            return self
        height, width = self.pixels.shape
        src_w, src_h = max(src_box[2] - src_box[0], 1.0), max(src_box[3] - src_box[1], 1.0)
        scale_x, scale_y = (dst_box[2] - dst_box[0]) / src_w, (dst_box[3] - dst_box[1]) / src_h
        scale_x, scale_y = (s if s > 0 else 1.0 for s in (scale_x, scale_y))  # degenerate box: translate only
        x0 = round(dst_box[0] + (self.x0 - src_box[0]) * scale_x)
        y0 = round(dst_box[1] + (self.y0 - src_box[1]) * scale_y)
        new_w, new_h = max(1, round(width * scale_x)), max(1, round(height * scale_y))
        pixels = self.pixels
        if (new_w, new_h) != (width, height):
            pixels = cv2.resize(pixels.astype(np.float32), (new_w, new_h), interpolation=cv2.INTER_AREA) > 0
        return MaskPatch(pixels, int(x0), int(y0))

    def pad_edges(self, left: int, top: int, right: int, bottom: int) -> MaskPatch:
        """This mask extended by that many pixels on each side, each new row/column a copy of the outermost one
        (the hidden part of an object cut by the frame border, assumed to continue as it was cut)."""
        if self.empty or not any((left, top, right, bottom)):
            return self
        pixels = np.pad(self.pixels, ((top, bottom), (left, right)), mode="edge")
        return MaskPatch(pixels, self.x0 - left, self.y0 - top)

    def dilate(self, radius: float, within: tuple[int, int] | None = None) -> MaskPatch:
        """This mask grown by ``radius`` pixels: every pixel within Euclidean distance ``radius`` of it (exact,
        by a distance transform, so the cost does not grow with the radius).

        within: (height, width) of the frame: only pixels inside it are computed and returned (mask pixels
            outside it still count), so a large radius costs at most about the frame."""
        if self.empty or radius <= 0:
            return self if within is None else self.crop(*within)
        height, width = self.pixels.shape
        reach = math.floor(radius)
        x0, y0, x1, y1 = self.x0 - reach, self.y0 - reach, self.x0 + width + reach, self.y0 + height + reach
        if within is not None:
            frame_h, frame_w = within
            xs, ys = (self.x0, self.x0 + width), (self.y0, self.y0 + height)
            corners = np.array([[x, y] for x in xs for y in ys], dtype=np.float64)
            farthest = np.linalg.norm(corners - np.clip(corners, 0, [frame_w, frame_h]), axis=1).max()
            if radius >= math.hypot(frame_h, frame_w) + farthest:  # every frame pixel is within reach of the mask
                return MaskPatch(np.ones((frame_h, frame_w), dtype=bool), 0, 0)
            x0, y0 = max(x0, -reach), max(y0, -reach)  # mask pixels farther than the radius from the frame
            x1, y1 = min(x1, frame_w + reach), min(y1, frame_h + reach)  # cannot reach it
        if x1 <= x0 or y1 <= y0:
            return MaskPatch(np.zeros((0, 0), dtype=bool), 0, 0)
        canvas = MaskPatch(self.pixels, self.x0 - x0, self.y0 - y0).paste(y1 - y0, x1 - x0)
        if not canvas.any():
            return MaskPatch(np.zeros((0, 0), dtype=bool), 0, 0)
        distance = cv2.distanceTransform((~canvas).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        grown = MaskPatch.from_mask(distance <= radius)
        grown = MaskPatch(grown.pixels, grown.x0 + x0, grown.y0 + y0)
        return grown if within is None else grown.crop(*within)

    def crop(self, height: int, width: int) -> MaskPatch:
        """The part of this mask inside a frame of ``height`` x ``width``, cropped to its bounding box."""
        h, w = self.pixels.shape
        if self.x0 >= 0 and self.y0 >= 0 and self.x0 + w <= width and self.y0 + h <= height:
            return self
        fx0, fy0 = max(self.x0, 0), max(self.y0, 0)
        fx1, fy1 = min(self.x0 + w, width), min(self.y0 + h, height)
        if fx1 <= fx0 or fy1 <= fy0:
            return MaskPatch(np.zeros((0, 0), dtype=bool), 0, 0)
        inside = MaskPatch.from_mask(self.pixels[fy0 - self.y0 : fy1 - self.y0, fx0 - self.x0 : fx1 - self.x0])
        return MaskPatch(inside.pixels, inside.x0 + fx0, inside.y0 + fy0)

    @staticmethod
    def union(patches: Sequence[MaskPatch]) -> MaskPatch:
        """The pixels covered by any of ``patches``."""
        patches = [p for p in patches if not p.empty]
        if len(patches) <= 1:
            return patches[0] if patches else MaskPatch(np.zeros((0, 0), dtype=bool), 0, 0)
        x0, y0 = min(p.x0 for p in patches), min(p.y0 for p in patches)
        x1 = max(p.x0 + p.pixels.shape[1] for p in patches)
        y1 = max(p.y0 + p.pixels.shape[0] for p in patches)
        pixels = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        for p in patches:
            h, w = p.pixels.shape
            pixels[p.y0 - y0 : p.y0 - y0 + h, p.x0 - x0 : p.x0 - x0 + w] |= p.pixels
        return MaskPatch(pixels, x0, y0)

    def paste(self, height: int, width: int) -> np.ndarray:
        """bool (height, width): this mask in a frame of that size (parts outside the frame are cut)."""
        frame = np.zeros((height, width), dtype=bool)
        h, w = self.pixels.shape
        fx0, fy0 = max(self.x0, 0), max(self.y0, 0)
        fx1, fy1 = min(self.x0 + w, width), min(self.y0 + h, height)
        if fx1 > fx0 and fy1 > fy0:
            frame[fy0:fy1, fx0:fx1] = self.pixels[fy0 - self.y0 : fy1 - self.y0, fx0 - self.x0 : fx1 - self.x0]
        return frame


def warp_mask(
    mask: np.ndarray, src_box: Sequence[float], dst_box: Sequence[float], dilate: float = 0
) -> np.ndarray:
    """bool (H, W): bool (H, W) ``mask`` moved from xyxy ``src_box`` to ``dst_box`` (translate + scale), then
    grown by ``dilate`` pixels; what falls outside the frame is cut. The geometry of held, interpolated and
    backfilled masks."""
    patch = MaskPatch.from_mask(np.asarray(mask, dtype=bool))
    moved = patch.warp(np.asarray(src_box, dtype=np.float64), np.asarray(dst_box, dtype=np.float64))
    return moved.dilate(dilate, within=mask.shape).paste(*mask.shape)

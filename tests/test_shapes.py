"""Mask geometry (inpaint_anon/detect/shapes.py): grown boxes, box masks, upright and turned ellipses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inpaint_anon.detect.shapes import (
    MIN_SEMI_AXIS,
    box_masks,
    clip_boxes,
    covering_factor,
    ellipse_masks,
    eye_line_angles,
    grow_boxes,
)


def reference_ellipse(box: list[float], height: int, width: int) -> np.ndarray:
    """bool (H, W): pixel centres inside the ellipse inscribed in ``box`` (xyxy), written out independently."""
    x1, y1, x2, y2 = box
    cx, cy, ax, ay = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    return ((xs - cx) / ax) ** 2 + ((ys - cy) / ay) ** 2 <= 1.0


def principal_axis_degrees(mask: torch.Tensor) -> float:
    """Angle in degrees, in [0, 180), of the major axis of a bool (H, W) mask (second moments; y down)."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    x, y = xs.double() - xs.double().mean(), ys.double() - ys.double().mean()
    mu20, mu02, mu11 = (x * x).mean(), (y * y).mean(), (x * y).mean()
    return math.degrees(0.5 * math.atan2(2 * mu11, mu20 - mu02)) % 180.0


def landmarks_with_eye_line(centre: tuple[float, float], degrees: float, eye_gap: float) -> torch.Tensor:
    """(1, 5, 2) landmarks whose eyes lie ``eye_gap`` pixels apart on a line at ``degrees`` (y down)."""
    cx, cy = centre
    dx = math.cos(math.radians(degrees)) * eye_gap / 2
    dy = math.sin(math.radians(degrees)) * eye_gap / 2
    points = [[cx - dx, cy - dy], [cx + dx, cy + dy], [cx, cy + 5], [cx - dx, cy + 15], [cx + dx, cy + 15]]
    return torch.tensor([points], dtype=torch.float32)


def test_grow_boxes_pushes_each_side_out_like_deface() -> None:
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0]])  # 20 wide, 40 tall
    # deface's scale_bb with mask_scale 1.3: x +- 0.3 * 20, y +- 0.3 * 40, so 1.6x per axis about the centre.
    assert grow_boxes(boxes, 1.3)[0].tolist() == pytest.approx([4.0, 8.0, 36.0, 72.0])
    assert grow_boxes(boxes, 1.0).tolist() == boxes.tolist()


def test_upright_ellipse_masks_exactly_the_pixels_inside_the_grown_box_ellipse() -> None:
    boxes = torch.tensor([[20.0, 10.0, 50.0, 50.0], [60.3, 5.7, 71.9, 30.2]])
    masks = ellipse_masks(boxes, None, 64, 96, scale=1.3)
    assert masks.dtype == torch.bool and tuple(masks.shape) == (2, 64, 96)
    for mask, grown in zip(masks, grow_boxes(boxes, 1.3).tolist()):
        expected = reference_ellipse(grown, 64, 96)
        assert expected.sum() > 100
        assert np.array_equal(mask.numpy(), expected)  # every pixel inside is masked, none outside
    # Zero angles are the upright ellipse too.
    assert torch.equal(ellipse_masks(boxes, torch.zeros(2), 64, 96, scale=1.3), masks)


@pytest.mark.parametrize("degrees", [-35.0, 20.0, 40.0])
def test_turned_ellipse_follows_the_eye_line_and_still_covers_the_upright_one(degrees: float) -> None:
    box = torch.tensor([[70.0, 60.0, 130.0, 140.0]])  # 60 x 80: a face, taller than wide
    landmarks = landmarks_with_eye_line((100.0, 90.0), degrees, eye_gap=30.0)
    angles = eye_line_angles(landmarks, box)
    assert angles.tolist() == pytest.approx([math.radians(degrees)], abs=1e-5)
    turned = ellipse_masks(box, angles, 200, 200, scale=1.3)[0]
    upright = ellipse_masks(box, None, 200, 200, scale=1.3)[0]
    # The long axis (the face's height) stands perpendicular to the eye line.
    assert principal_axis_degrees(turned) == pytest.approx((degrees + 90.0) % 180.0, abs=1.5)
    assert principal_axis_degrees(upright) == pytest.approx(90.0, abs=0.5)
    # Turning never uncovers a pixel: the turned ellipse contains the upright one (deface's mask), enlarged by
    # the covering factor and no more (its area is k^2 times the upright one's).
    assert bool((upright & ~turned).any()) is False
    k = covering_factor(torch.tensor([48.0]), torch.tensor([64.0]), angles).item()  # grown box 96 x 128
    assert 1.0 < k < 1.25
    assert turned.sum().item() == pytest.approx(k**2 * upright.sum().item(), rel=0.03)


def test_covering_factor_is_the_smallest_that_contains_the_upright_ellipse() -> None:
    semi_x, semi_y = torch.tensor([30.0, 30.0, 30.0, 20.0]), torch.tensor([40.0, 40.0, 40.0, 20.0])
    angles = torch.tensor([0.0, math.pi / 2, 0.6, 0.9])
    factor = covering_factor(semi_x, semi_y, angles)
    assert factor[0].item() == pytest.approx(1.0)
    assert factor[1].item() == pytest.approx(40.0 / 30.0)  # a quarter turn must stretch the short axis to 40
    assert factor[3].item() == pytest.approx(1.0)  # a circle needs nothing
    # Points on the upright ellipse's outline lie inside the turned one scaled by the factor, and the
    # farthest touches it (the factor is not larger than needed).
    t = torch.linspace(0, 2 * math.pi, 3601)
    x, y = 30.0 * torch.cos(t), 40.0 * torch.sin(t)
    a, k = 0.6, factor[2].item()
    along = (x * math.cos(a) + y * math.sin(a)) / (30.0 * k)
    across = (y * math.cos(a) - x * math.sin(a)) / (40.0 * k)
    reach = along**2 + across**2
    assert reach.max().item() == pytest.approx(1.0, abs=1e-4)


def test_eye_line_angles_ignore_eye_order_and_stay_upright_for_profiles() -> None:
    box = torch.tensor([[0.0, 0.0, 40.0, 50.0]] * 3)
    level = landmarks_with_eye_line((20.0, 20.0), 25.0, eye_gap=20.0)[0]
    swapped = level[[1, 0, 2, 4, 3]]
    profile = landmarks_with_eye_line((20.0, 20.0), 60.0, eye_gap=2.0)[0]  # eyes 2 px apart: 5% of the width
    angles = eye_line_angles(torch.stack([level, swapped, profile]), box)
    assert angles.tolist() == pytest.approx([math.radians(25.0), math.radians(25.0), 0.0], abs=1e-5)


def test_masks_of_a_face_at_the_frame_border_stop_at_the_frame() -> None:
    # A face whose grown box reaches past the left and top edges: the mask is the in-frame part of the
    # ellipse drawn on a larger canvas, nothing is lost and nothing is drawn outside.
    box = torch.tensor([[-12.0, -8.0, 20.0, 30.0]])
    pad = 40
    frame = ellipse_masks(box, torch.tensor([0.3]), 48, 64, scale=1.3)[0]
    canvas = ellipse_masks(box + pad, torch.tensor([0.3]), 48 + 2 * pad, 64 + 2 * pad, scale=1.3)[0]
    assert tuple(frame.shape) == (48, 64)
    assert torch.equal(frame, canvas[pad : pad + 48, pad : pad + 64])
    assert bool(frame[0, 0]) and bool(frame[:, 0].any()) and bool(frame[0, :].any())
    boxed = box_masks(box, 48, 64, scale=1.3)[0]
    assert tuple(boxed.shape) == (48, 64) and torch.equal(boxed, torch.ones(48, 64, dtype=torch.bool) & boxed)
    # Grown: x -21.6 .. 29.6, y -19.4 .. 41.4, so columns 0..29 and rows 0..41 of the frame.
    assert boxed[:42, :30].all() and not boxed[42:].any() and not boxed[:, 30:].any()
    assert clip_boxes(box, 48, 64).tolist() == [[0.0, 0.0, 20.0, 30.0]]


def test_box_masks_cover_every_pixel_the_grown_box_touches() -> None:
    boxes = torch.tensor([[10.5, 4.2, 20.0, 9.9]])  # grown by 1.3: 7.65, 2.61, 22.85, 11.49
    mask = box_masks(boxes, 16, 32, scale=1.3)[0]
    expected = torch.zeros(16, 32, dtype=torch.bool)
    expected[2:12, 7:23] = True
    assert torch.equal(mask, expected)


def test_a_tiny_face_still_masks_the_pixel_under_it() -> None:
    boxes = torch.tensor([[5.1, 7.2, 5.3, 7.4], [0.0, 0.0, 0.2, 0.2]])
    masks = ellipse_masks(boxes, torch.tensor([0.7, 0.0]), 12, 12, scale=1.3)
    assert bool(masks[0, 7, 5]) and bool(masks[1, 0, 0])
    assert masks[0].sum().item() <= 9  # a semi-axis of MIN_SEMI_AXIS px reaches no farther than the neighbours
    assert MIN_SEMI_AXIS < 1.0


def test_no_boxes_give_empty_masks_of_frame_size() -> None:
    empty = torch.zeros((0, 4))
    assert tuple(ellipse_masks(empty, None, 5, 7).shape) == (0, 5, 7)
    assert tuple(box_masks(empty, 5, 7).shape) == (0, 5, 7)

"""The shared data types' helpers."""

from __future__ import annotations

import pytest
import torch

from inpaint_anon.types import Detections, cover_boxes, masks_to_boxes


def test_masks_to_boxes_exclusive_edges_and_empty() -> None:
    masks = torch.zeros(2, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 3:7] = True
    assert masks_to_boxes(masks).tolist() == [[3, 2, 7, 5], [0, 0, 0, 0]]


def test_cover_boxes_grows_to_contain_the_tight_box() -> None:
    tight = torch.tensor([[10.0, 10, 20, 20], [10, 10, 20, 20], [10, 10, 20, 20], [0, 0, 0, 0]])
    given = torch.tensor([[12.0, 8, 18, 30], [float("nan"), 0, 1, 1], [5, 5, 5, 9], [1, 1, 9, 9]])
    assert cover_boxes(given, tight).tolist() == [
        [10, 8, 20, 30],  # grown where the given box is smaller than the tight one
        [10, 10, 20, 20],  # NaN: the tight box
        [10, 10, 20, 20],  # no area: the tight box
        [0, 0, 0, 0],  # an empty mask stays empty
    ]


def test_detections_views() -> None:
    masks = torch.zeros(3, 8, 8, dtype=torch.bool)
    masks[:, 1:3, 1:3] = True
    dets = Detections.from_masks(masks, [0, 1, 0], {0: "person", 1: "car"}, track_ids=[4, 5, 6])
    assert len(dets) == 3 and dets[1].class_names == ["car"] and dets[-1].track_ids.tolist() == [6]
    assert dets.by_class("person").track_ids.tolist() == [4, 6]
    assert dets.union_mask().sum() == 4 and Detections.empty(8, 8, dets.names).union_mask().sum() == 0


def _face_landmarks(n: int) -> torch.Tensor:
    """(n, 5, 2) distinct pixel coordinates, so any mix-up of rows shows."""
    return torch.arange(n * 10, dtype=torch.float32).reshape(n, 5, 2)


def test_detections_carry_landmarks_through_views() -> None:
    masks = torch.zeros(3, 8, 8, dtype=torch.bool)
    masks[:, 1:3, 1:3] = True
    landmarks = _face_landmarks(3)
    dets = Detections.from_masks(masks, [0, 0, 0], {0: "face"}, landmarks=landmarks.double())
    assert dets.landmarks.dtype == torch.float32 and dets.landmarks.tolist() == landmarks.tolist()
    assert dets[1].landmarks.tolist() == [landmarks[1].tolist()]
    assert dets[-1].landmarks.tolist() == [landmarks[2].tolist()]
    assert dets[torch.tensor([True, False, True])].landmarks.tolist() == landmarks[[0, 2]].tolist()
    assert dets.by_class("face").landmarks.tolist() == landmarks.tolist()
    moved = dets.to("cpu")
    assert moved.landmarks.device.type == "cpu" and moved.landmarks.tolist() == landmarks.tolist()
    assert Detections.from_masks(masks, [0, 0, 0], {0: "face"}).landmarks is None
    assert Detections.empty(8, 8, {0: "face"}).landmarks is None


def test_detections_reject_landmarks_of_wrong_shape_or_count() -> None:
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"landmarks must be \(N, 5, 2\).*\(2, 10\)"):
        Detections.from_masks(masks, [0, 0], {0: "face"}, landmarks=torch.zeros(2, 10))
    with pytest.raises(ValueError, match="disagree on N: masks has 2"):
        Detections.from_masks(masks, [0, 0], {0: "face"}, landmarks=_face_landmarks(3))

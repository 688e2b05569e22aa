"""The face benchmarks without deface: box matching, the photo clip and its moved ground truth, deface's blurred
regions and the agreement counts, the faces-only pipeline on a tiny photo clip (no face left in the clear), and
``python -m evaluation.bench.faces`` on the hand-checked photos."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evaluation.bench.common import (
    FACES_ONLY,
    PHOTO_SHOTS,
    face_annotations,
    face_truth,
    faces_only_pipeline,
    load_photo,
    photo_clip,
    photo_frames,
    photo_truth,
    photo_views,
)
from evaluation.bench.deface_compare import agreement, deface_region
from evaluation.bench.faces import Found, box_iou, match_faces, score_at
from inpaint_anon.composite import Compositor
from inpaint_anon.detect.faces import FaceDetector
from inpaint_anon.evaluate import evaluate_run
from inpaint_anon.inpaint.fast import BlurInpainter
from inpaint_anon.metrics import MetricsConfig
from inpaint_anon.records import DetectionReader
from inpaint_anon.track import Tracker
from inpaint_anon.types import Detections

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


# -- matching ----------------------------------------------------------------------------------------------


def test_box_iou_values() -> None:
    assert box_iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert box_iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0
    assert box_iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0


def test_matching_is_one_to_one_and_greedy_by_score() -> None:
    truth = [[0, 0, 10, 10], [100, 100, 110, 110]]
    # detection 0 fits truth 0 best but scores lower than detection 1, which takes truth 0 first
    boxes = [[0, 0, 10, 10], [0, 0, 10, 12], [100, 100, 110, 115], [300, 300, 310, 310]]
    scores = [0.6, 0.9, 0.5, 0.95]
    matches = match_faces(boxes, scores, truth, 0.5)
    assert [(d, t) for d, t, _ in matches] == [(1, 0), (2, 1)]
    assert matches[0][2] == pytest.approx(100 / 120) and matches[1][2] == pytest.approx(100 / 150)
    # an IoU of exactly the minimum matches; just below does not
    assert [(d, t) for d, t, _ in match_faces([[0, 0, 10, 10]], [1.0], [[0, 0, 10, 20]], 0.5)] == [(0, 0)]
    assert match_faces([[0, 0, 10, 10]], [1.0], [[0, 0, 10, 21]], 0.5) == []


def test_scores_at_a_threshold() -> None:
    found = [Found(np.array([[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 9, 10]], np.float32),
                   np.array([0.9, 0.3, 0.1], np.float32), [(0, 0, 10, 10), (200, 200, 210, 210)])]
    assert score_at(found, 0.05, 0.5) == {"faces": 2, "detections": 3, "matched": 1, "recall": 0.5,
                                          "precision": round(1 / 3, 4), "mean_iou": 1.0}
    assert score_at(found, 0.95, 0.5) == {"faces": 2, "detections": 0, "matched": 0, "recall": 0.0,
                                          "precision": None, "mean_iou": None}


# -- the photo clip ---------------------------------------------------------------------------------------


def test_photo_clip_views_and_ground_truth() -> None:
    size, n_frames = (640, 360), 9
    views = photo_views(size, n_frames)
    assert [v.photo for v in views] == [shot.photo for shot in PHOTO_SHOTS for _ in range(3)]
    first, last = views[0], views[5]  # the first basketball frame, the last astronaut frame
    assert (first.x0, first.y0, first.scale) == (0.0, 0.0, 1.0)
    assert last.scale == pytest.approx(640 / 260) and (last.x0, last.y0) == pytest.approx((95.0, 123 - 73.125))
    truth = photo_truth(size, n_frames)
    assert truth[0] == face_truth()["basketball1.png"]  # the view shows the photo's top 360 rows as they are
    (astronaut,) = face_truth()["astronaut.jpg"]
    expected = tuple((v - o) * 640 / 260 for v, o in zip(astronaut, (95.0, 49.875, 95.0, 49.875)))
    assert truth[5] == [pytest.approx(expected)]
    assert [len(boxes) for boxes in truth] == [2, 2, 2, 1, 1, 1, 1, 1, 1]
    frame = next(photo_frames(size, n_frames))
    assert np.array_equal(frame, load_photo("basketball1.png")[:360])
    lines = [json.loads(line) for line in face_annotations(truth[:2]).splitlines()]
    assert lines[0] == {"frame": 0, "class": "face", "box": [70.0, 94.0, 104.0, 134.0]} and len(lines) == 4


# -- deface's regions and the agreement ------------------------------------------------------------------------


def test_deface_region_is_the_grown_box_or_its_inscribed_ellipse() -> None:
    # [10, 20, 30, 50] grown by 0.3 of its size on every side: x 4..36, y 11..59
    box = deface_region([10.7, 20.2, 30.9, 50.5, 0.9], 100, 100, 1.3, ellipse=False)
    ys, xs = np.nonzero(box)
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (4, 36, 11, 59) and box.sum() == 32 * 48
    ellipse = deface_region([10, 20, 30, 50, 0.9], 100, 100, 1.3)
    assert ellipse[35, 20] and not ellipse[11, 4] and (ellipse & ~box).sum() == 0 and ellipse.sum() < box.sum()
    # cut at the frame's last row and column (deface clips to size - 1)
    edge = deface_region([80, 80, 100, 100, 0.9], 100, 100, 1.3, ellipse=False)
    assert edge[99].sum() == 0 and edge[:, 99].sum() == 0 and edge[98, 98]


def test_deface_region_matches_skimage_ellipse() -> None:
    draw = pytest.importorskip("skimage.draw")
    rng = np.random.default_rng(0)
    for _ in range(30):
        x1, y1 = rng.uniform(0, 140), rng.uniform(0, 100)
        det = [x1, y1, min(x1 + rng.uniform(2, 60), 160), min(y1 + rng.uniform(2, 60), 120), 0.5]
        expected = np.zeros((120, 160), dtype=bool)
        a, b, c, d = (int(v) for v in det[:4])
        w, h = c - a, d - b
        a, c, b, d = round(a - 0.3 * w), round(c + 0.3 * w), round(b - 0.3 * h), round(d + 0.3 * h)
        b, d, a, c = max(0, b), min(119, d), max(0, a), min(159, c)
        rows, cols = draw.ellipse((d - b) // 2, (c - a) // 2, (d - b) // 2, (c - a) // 2)
        expected[b:d, a:c][rows, cols] = True
        assert np.array_equal(deface_region(det, 120, 160, 1.3), expected), det


def test_agreement_counts_covered_and_overlapping_regions() -> None:
    height, width = 100, 200
    names = {0: "face"}
    big = np.zeros((height, width), dtype=bool)
    big[10:70, 10:70] = True  # covers deface's region of the first box entirely
    far = np.zeros((height, width), dtype=bool)
    far[80:90, 180:190] = True  # far from both deface regions
    ours = [Detections.from_masks(np.stack([big, far]), [0, 0], names), Detections.empty(height, width, names)]
    theirs = [[[25, 25, 45, 45, 0.9], [120, 20, 150, 60, 0.5]], [[25, 25, 45, 45, 0.9]]]
    result = agreement(ours, theirs, mask_scale=1.3, compositor=Compositor())
    assert (result.frames, result.deface_boxes, result.deface_covered, result.deface_covered_by_masks) == (2, 3, 1, 1)
    assert (result.ours_regions, result.ours_overlap) == (2, 1)
    assert result.per_frame == [[2, 1, 2, 1], [1, 0, 0, 0]]
    assert result.shares() == {"deface_covered": round(1 / 3, 4), "deface_covered_by_masks": round(1 / 3, 4),
                               "ours_overlap": 0.5}
    # the compositor's dilation counts for "blurred", not for "inside the masks"
    inner = deface_region([25, 25, 45, 45], height, width, 1.1)  # radius 12 of deface's 16 px: 56 % of it
    assert 0.5 < inner.sum() / deface_region([25, 25, 45, 45], height, width, 1.3).sum() < 0.6
    result = agreement([Detections.from_masks(inner[None], [0], names)], [theirs[1][:1]], mask_scale=1.3,
                       compositor=Compositor())  # dilated by 4 + 0.02 x the diagonal: 4.7 px
    assert (result.deface_covered, result.deface_covered_by_masks) == (1, 0)
    with pytest.raises(ValueError):
        agreement(ours, theirs[:1], mask_scale=1.3, compositor=Compositor())  # frame counts differ


# -- the faces-only pipeline -------------------------------------------------------------------------------


def test_faces_only_pipeline_settings() -> None:
    pipe = faces_only_pipeline("cpu")
    assert isinstance(pipe.detector, FaceDetector) and pipe.detector.model.name == FACES_ONLY["model"]
    assert (pipe.detector.conf, pipe.detector.mask_scale, pipe.detector.mask_shape) == (0.2, 1.3, "ellipse")
    assert pipe.detector.input_size is None and pipe.detector.tile_size is None  # full frames, like deface
    assert pipe.tracker is Tracker and isinstance(pipe.inpainter, BlurInpainter) and pipe.detect_stride == 1
    assert (pipe.compositor.dilate, pipe.compositor.dilate_rel, pipe.compositor.feather) == (4, 0.02, 6)


def test_faces_only_pipeline_blurs_every_face_of_a_photo_clip(tmp_path: Path) -> None:
    """Our side of the deface comparison on a tiny clip: every hand-checked face is inside our masks and none is
    left in the clear (leak rate 0 against the moved ground truth)."""
    clip = tmp_path / "photos.mp4"
    truth = photo_clip(clip, (640, 360), 6)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    output = run_dir / "anon.mp4"
    result = faces_only_pipeline("cpu")(clip, output, preset="ultrafast", record_detections=run_dir / "detections.dets")
    assert result.frames_out == 6
    for (index, detections), boxes in zip(DetectionReader(run_dir / "detections.dets"), truth, strict=True):
        assert set(detections.class_names) == {"face"}
        union = detections.masks.any(dim=0)
        for x1, y1, x2, y2 in boxes:
            inside = union[int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))].float().mean()
            assert inside >= 0.9, (index, (x1, y1, x2, y2), float(inside))
    (run_dir / "run.json").write_text(json.dumps({"input": str(clip), "output": str(output), "config": {}}))
    annotations = tmp_path / "faces.jsonl"
    annotations.write_text(face_annotations(truth))
    document = evaluate_run(run_dir, MetricsConfig(lpips=False, fid=False, annotations=str(annotations)), write=False)
    assert document["counts"]["face"]["annotated"] == 8
    assert document["classes"]["face"]["leak_rate"] == 0.0
    assert document["classes"]["face"]["leak_pixels"] < 0.2


# -- the benchmark script ------------------------------------------------------------------------------------


def test_faces_bench_on_the_hand_checked_photos(tmp_path: Path) -> None:
    out = tmp_path / "faces.json"
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "evaluation.bench.faces", "--thresholds", "0.2", "0.7",
                           "--input-sizes", "full", "160", "--clip-size", "320x180", "--clip-frames", "3",
                           "--clip-every", "1", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "|---" in proc.stdout
    report = json.loads(out.read_text())
    rows = {(r["set"], r["input_size"], r["threshold"]): r for r in report["rows"]}
    assert len(rows) == 8
    full = rows[("photos", "full", 0.2)]
    assert (full["images"], full["faces"], full["detections"], full["matched"]) == (3, 4, 4, 4)
    assert full["recall"] == 1.0 and full["precision"] == 1.0 and 0.7 < full["mean_iou"] < 0.95
    strict = rows[("photos", "full", 0.7)]
    assert strict["matched"] == 3 and strict["recall"] == 0.75  # the profile face scores 0.66
    clip = rows[("photo clip 320x180", "full", 0.2)]
    assert clip["images"] == 3 and clip["faces"] == 4
    assert all(r["ms_per_frame"]["detect"] > 0 for r in report["rows"])

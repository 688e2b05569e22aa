"""Per-class metrics and leak rate for ``face`` and ``plate`` regions: the evaluator treats any class name like the
COCO ones. Tiny generated runs whose record holds face (ellipse) and plate (box) regions, with face/plate box
annotations: solid fill, an unchanged copy, and a run that anonymized the faces only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from inpaint_anon.detect.scripted import ScriptedDetector
from inpaint_anon.detect.shapes import box_masks, ellipse_masks
from inpaint_anon.evaluate import evaluate_run
from inpaint_anon.inpaint.fast import SolidInpainter
from inpaint_anon.metrics import ALL, MetricsConfig
from inpaint_anon.pipeline import AnonymizePipeline
from inpaint_anon.records import DetectionWriter
from inpaint_anon.types import Detections
from tests.clips import make_clip, object_masks

SIZE = (160, 120)
FRAMES = 6
NAMES = {0: "face", 1: "plate"}

pytestmark = pytest.mark.usefixtures("one_thread")


def _tight_box(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def face_box(index: int) -> list[float]:
    """A head-sized box at the top of the clip's walking person (it moves with them)."""
    x1, y1, x2, _ = _tight_box(object_masks(index, SIZE, FRAMES)["person"])
    return [float(x1), float(y1), float(x2), float(y1 + (x2 - x1) * 1.2)]


def plate_box(index: int) -> list[float]:
    """A plate-sized box at the centre of the clip's car."""
    x1, y1, x2, y2 = _tight_box(object_masks(index, SIZE, FRAMES)["car"])
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return [cx - 8.0, cy - 3.0, cx + 8.0, cy + 3.0]


def regions(index: int, classes: tuple[str, ...] = ("face", "plate")) -> dict[str, np.ndarray]:
    """The detector's masks: the face as the ellipse inscribed in its box, the plate as its box."""
    height, width = SIZE[1], SIZE[0]
    found = {}
    if "face" in classes:
        found["face"] = ellipse_masks(torch.tensor([face_box(index)]), None, height, width)[0].numpy()
    if "plate" in classes:
        found["plate"] = box_masks(torch.tensor([plate_box(index)]), height, width)[0].numpy()
    return found


def make_run(root: Path, name: str, clip: Path, classes: tuple[str, ...] | None) -> Path:
    """A run folder (run.json, detections.dets, output video). classes None: the output is an unchanged copy of
    the input, with both classes recorded; else those classes are detected and filled black."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    output = run_dir / "anon.mp4"
    if classes is None:
        shutil.copy(clip, output)
        with DetectionWriter(run_dir / "detections.dets", key={}, names=NAMES) as writer:
            for index in range(FRAMES):
                masks = regions(index)
                writer.write(index, Detections.from_masks(np.stack([masks["face"], masks["plate"]]), [0, 1], NAMES))
    else:
        detector = ScriptedDetector(lambda i: regions(i, classes), NAMES)
        AnonymizePipeline(detector, SolidInpainter(device="cpu"), progress=False)(
            clip, output, record_detections=run_dir / "detections.dets", preset="ultrafast")
    record = {"input": str(clip), "output": str(output), "frames_in": FRAMES, "frames_out": FRAMES, "config": {}}
    (run_dir / "run.json").write_text(json.dumps(record))
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("face_runs")
    clip = make_clip(root / "clip.mp4", n_frames=FRAMES, size=SIZE)
    annotations = root / "gt.jsonl"
    annotations.write_text("".join(
        json.dumps({"frame": i, "class": name, "box": box(i)}) + "\n"
        for i in range(FRAMES) for name, box in (("face", face_box), ("plate", plate_box))))
    return {
        "annotations": annotations,
        "solid": make_run(root, "solid", clip, ("face", "plate")),
        "copy": make_run(root, "copy", clip, None),
        "faces_only": make_run(root, "faces_only", clip, ("face",)),
    }


def evaluate(run_dir: Path, annotations: Path) -> dict[str, Any]:
    """lpips/fid off (networks); ``*_out`` leaves out 12 px around the masks (the compositor's dilated and
    feathered ring, about 11 px here)."""
    config = MetricsConfig(lpips=False, fid=False, annotations=str(annotations), outside_margin=12)
    return evaluate_run(run_dir, config, write=False)


def test_face_and_plate_regions_get_their_own_rows_with_leak_rates(runs: dict[str, Path]) -> None:
    document = evaluate(runs["solid"], runs["annotations"])
    assert list(document["classes"]) == [ALL, "face", "plate"]
    for name in ("face", "plate"):
        row = document["classes"][name]
        assert row["leak_rate"] == 0.0 and row["leak_pixels"] == 0.0, name
        assert row["psnr_in"] < 8 and row["ssim_in"] < 0.05, name  # filled black: nothing like the original
        assert row["psnr_out"] > 30, name  # the rest of the frame is kept
        assert document["counts"][name]["regions"] == FRAMES and document["counts"][name]["annotated"] == FRAMES
        assert document["counts"][name]["track_pairs"] == 0  # no tracker in this run: no flicker pairs
    assert document["counts"][ALL]["annotated"] == 2 * FRAMES
    assert document["classes"][ALL]["leak_rate"] == 0.0


def test_an_unchanged_video_leaks_every_face_and_plate(runs: dict[str, Path]) -> None:
    document = evaluate(runs["copy"], runs["annotations"])
    for name in (ALL, "face", "plate"):
        assert document["classes"][name]["leak_rate"] == 1.0, name
        assert document["classes"][name]["leak_pixels"] == 1.0, name
        assert document["classes"][name]["psnr_in"] == "inf", name


def test_plates_missed_by_a_faces_only_run_leak_while_faces_do_not(runs: dict[str, Path]) -> None:
    document = evaluate(runs["faces_only"], runs["annotations"])
    assert list(document["classes"]) == [ALL, "face", "plate"]
    assert document["classes"]["face"]["leak_rate"] == 0.0
    assert document["classes"]["plate"]["leak_rate"] == 1.0
    assert document["classes"][ALL]["leak_rate"] == 0.5
    assert document["classes"]["plate"]["psnr_in"] is None
    assert "only in the annotations" in document["undefined"]["plate"]["psnr_in"]
    assert document["counts"]["plate"] == {"frames": 0, "regions": 0, "crops": 0, "small_regions": 0,
                                           "track_pairs": 0, "annotated": FRAMES}

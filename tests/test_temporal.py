"""Time in the pipeline: fail-closed hold through detector misses, backfill, detect-every-k-frames, ids, and a
small fast object (a plate moving its own width per frame) that the holds and backfill must follow.

Scripted detectors drop a known object; the clip's ground-truth masks tell where it really is. A frame
leaks when the object's true pixels reach the output in the clear (compared with the decoded input).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest

from inpaint_anon.detect.scripted import ScriptedDetector
from inpaint_anon.inpaint.base import InpaintBatch, InpaintOutput
from inpaint_anon.inpaint.fast import SolidInpainter
from inpaint_anon.pipeline import AnonymizePipeline
from inpaint_anon.track import Tracker
from tests import clips
from tests.clips import make_clip, object_masks

SIZE, N = (160, 120), 30
MAGENTA = (255, 0, 255)
HOLD = 6


def leaked_frames(src: Path, out: Path) -> list[int]:
    return clips.leaked_frames(src, out, SIZE, N)


def missing(frames: set[int], name: str = "person") -> ScriptedDetector:
    """Ground truth, except ``name`` is not detected in ``frames``."""

    def script(i: int) -> dict[str, np.ndarray]:
        return {k: v for k, v in object_masks(i, SIZE, N).items() if not (k == name and i in frames)}

    return ScriptedDetector(script, names=["person", "car"])


def run(tmp_path: Path, detector: ScriptedDetector, tracker=None, stride: int = 1, inpainter=None) -> tuple[Path, Path]:
    src = tmp_path / "in.mp4"
    if not src.exists():
        make_clip(src, n_frames=N, size=SIZE)
    out = tmp_path / f"out{len(list(tmp_path.iterdir()))}.mp4"
    pipe = AnonymizePipeline(detector, inpainter or SolidInpainter(color=MAGENTA, device="cpu"), tracker=tracker,
                             detect_stride=stride, batch_frames=3, progress=False)
    pipe(src, out, crf=0, preset="ultrafast")
    return src, out


TRACKER = partial(Tracker, hold_frames=HOLD, backfill_frames=4, max_gap=HOLD)


@pytest.mark.parametrize("miss", [1, 2, HOLD])
def test_misses_up_to_hold_frames_never_leak(tmp_path: Path, miss: int) -> None:
    detector = missing(set(range(10, 10 + miss)))
    assert leaked_frames(*run(tmp_path, detector, tracker=TRACKER)) == []


def test_without_tracking_the_same_misses_leak(tmp_path: Path) -> None:
    """The control: the scripted misses above really are misses."""
    assert leaked_frames(*run(tmp_path, missing({10, 11}))) == [10, 11]


def test_backfill_covers_frames_before_the_first_detection(tmp_path: Path) -> None:
    detector = missing(set(range(0, 8)))  # the person is there from frame 0 but detected from frame 8 on
    src, out = run(tmp_path, detector, tracker=TRACKER)
    assert leaked_frames(src, out) == list(range(0, 8 - 4)), "frames 4..7 must be backfilled"


def test_detect_every_third_frame_carries_masks_between(tmp_path: Path) -> None:
    detector = missing(set())
    src, out = run(tmp_path, detector, tracker=TRACKER, stride=3)
    assert detector.calls == list(range(0, N, 3))
    assert leaked_frames(src, out) == []


class RecordingSolid(SolidInpainter):
    def __init__(self) -> None:
        super().__init__(color=MAGENTA, device="cpu")
        self.ids: dict[int, dict[str, int]] = {}

    def __call__(self, batch: InpaintBatch) -> InpaintOutput:
        for index, dets in zip(batch.frame_indices, batch.detections):
            self.ids[index] = dict(zip(dets.class_names, dets.track_ids.tolist()))
        return super().__call__(batch)


def test_each_object_keeps_one_track_id_through_a_miss(tmp_path: Path) -> None:
    inpainter = RecordingSolid()
    run(tmp_path, missing({12, 13}), tracker=TRACKER, inpainter=inpainter)
    assert len({ids["person"] for ids in inpainter.ids.values()}) == 1
    assert len({ids["car"] for ids in inpainter.ids.values()}) == 1
    assert sorted(inpainter.ids) == list(range(N))


# -- a small, fast object: a 12x6 plate moving its own width per frame, entering at the left border ----------

PLATE_FRAMES = range(4, 13)  # in view (frame 4: cut by the left border); behind something from frame 13 on


def plate_truth(index: int) -> np.ndarray:
    """bool (H, W): the plate's pixels in frame ``index`` (not drawn in the clip: its place on the background
    must not reach the output unchanged)."""
    mask = np.zeros((SIZE[1], SIZE[0]), dtype=bool)
    if index in PLATE_FRAMES:
        x0 = 12 * index - 54
        mask[70:76, max(x0, 0) : max(x0 + 12, 0)] = True
    return mask


def plate_detector(detected: range) -> ScriptedDetector:
    """Ground truth for the person and car; the plate only in frames ``detected``."""

    def script(i: int) -> dict[str, np.ndarray]:
        masks = dict(object_masks(i, SIZE, N))
        if i in detected:
            masks["plate"] = plate_truth(i)
        return masks

    return ScriptedDetector(script, names=["person", "car", "plate"])


def clear_plate_pixels(src: Path, out: Path) -> dict[int, int]:
    """Frame -> pixels of the plate whose output is within 30 (sum of RGB differences) of the source."""
    from inpaint_anon.video import VideoReader

    clear = {}
    with VideoReader(src) as a, VideoReader(out) as b:
        for before, after in zip(a, b):
            diff = np.abs(before.rgb.astype(int) - after.rgb.astype(int)).sum(axis=-1)
            count = int((diff[plate_truth(before.index)] < 30).sum())
            if count:
                clear[before.index] = count
    return clear


@pytest.mark.parametrize("stride", [1, 3])
def test_small_fast_plate_is_never_shown(tmp_path: Path, stride: int) -> None:
    """Detected in frames 6..10 only (every third frame with stride 3: 6 and 9), in view from frame 4 (entering
    at the border) to 12: the frames before and after are covered where the plate is, and it is one track."""
    inpainter = RecordingSolid()
    src, out = run(tmp_path, plate_detector(range(6, 11)), tracker=partial(Tracker), stride=stride,
                   inpainter=inpainter)
    assert clear_plate_pixels(src, out) == {}
    assert len({ids["plate"] for ids in inpainter.ids.values() if "plate" in ids}) == 1


def test_without_tracking_the_plate_shows_around_its_detections(tmp_path: Path) -> None:
    """The control: the plate really is there in the frames it is missed."""
    src, out = run(tmp_path, plate_detector(range(6, 11)))
    assert sorted(clear_plate_pixels(src, out)) == [4, 5, 11, 12]


def test_stride_without_tracker_is_refused() -> None:
    from inpaint_anon.errors import ConfigError

    with pytest.raises(ConfigError, match="detect_stride=3 needs a tracker"):
        AnonymizePipeline(missing(set()), SolidInpainter(device="cpu"), detect_stride=3)

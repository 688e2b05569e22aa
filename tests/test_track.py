"""Tracker: ids from ultralytics' trackers on our Detections, fail-closed holds, backfill, gap interpolation,
box smoothing, look-ahead latency and memory, argument checks. Ground truth comes from tests.clips."""

from __future__ import annotations

import os

os.environ.setdefault("YOLO_OFFLINE", "1")  # before ultralytics is imported anywhere in this process

import math
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch

from inpaint_anon.detect import ScriptedDetector
from inpaint_anon.errors import ConfigError
from inpaint_anon.track import (
    UNTRACKED_ID_BASE,
    Tracker,
    interpolate_box,
    track_all,
    tracker_defaults,
    warp_mask,
)
from inpaint_anon.track.association import FAR_COST, NEAR_COST, Association, motion_costs
from inpaint_anon.track.geometry import MaskPatch
from inpaint_anon.types import Detections, Frame, masks_to_boxes
from tests.clips import object_masks

SIZE = (160, 120)  # (W, H)
NAMES = {0: "person", 1: "car"}
N_FRAMES = 40  # the person moves about 3 px per frame


def clip_detections(n_frames: int = N_FRAMES, drop: Callable[[int, str], bool] = lambda i, name: False) -> Callable:
    """A ScriptedDetector script: the clip's objects, without those for which ``drop(index, name)`` holds."""

    def script(index: int) -> dict[str, np.ndarray]:
        masks = object_masks(index, SIZE, n_frames)
        return {name: mask for name, mask in masks.items() if not drop(index, name)}

    return script


def detected(script: Callable, n_frames: int) -> Iterator[tuple[int, Detections]]:
    """``(index, Detections)`` for each frame, from a ScriptedDetector running ``script`` on blank frames."""
    detector = ScriptedDetector(script, ["person", "car"])
    blank = np.zeros((SIZE[1], SIZE[0], 3), dtype=np.uint8)
    for index in range(n_frames):
        yield index, detector([Frame(index, None, blank)])[0]


def run(tracker: Tracker, script: Callable, n_frames: int = N_FRAMES) -> list[tuple[int, Detections]]:
    out = list(track_all(tracker, detected(script, n_frames)))
    assert [i for i, _ in out] == list(range(n_frames))
    return out


def uncovered(out: list[tuple[int, Detections]], name: str, n_frames: int = N_FRAMES) -> dict[int, int]:
    """Frame -> count of the object's true pixels not covered by any output region (frames with leaks only)."""
    leaks = {}
    for index, dets in out:
        truth = object_masks(index, SIZE, n_frames)[name]
        missing = int((truth & ~dets.union_mask().numpy()).sum())
        if missing:
            leaks[index] = missing
    return leaks


def ids_of(dets: Detections, class_id: int) -> list[int]:
    return dets.track_ids[dets.class_ids == class_id].tolist()


def rect(x0: int, y0: int, x1: int, y1: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    mask = np.zeros((size[1], size[0]), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


# -- arguments --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"method": "sort"}, "method='sort'"),
        ({"hold_frames": -1}, "hold_frames=-1"),
        ({"hold_frames": 301}, "hold_frames=301"),
        ({"hold_frames": 1.5}, "hold_frames=1.5"),
        ({"hold_frames": True}, "hold_frames=True"),
        ({"backfill_frames": -2}, "backfill_frames=-2"),
        ({"max_gap": 1000}, "max_gap=1000"),
        ({"hold_dilate": -1}, "hold_dilate=-1"),
        ({"max_speed": -0.5}, "max_speed=-0.5"),
        ({"max_speed": 11}, "max_speed=11"),
        ({"max_speed": "fast"}, "max_speed='fast'"),
        ({"max_speed": True}, "max_speed=True"),
        ({"smooth": 1.0}, "smooth=1.0"),
        ({"smooth": -0.1}, "smooth=-0.1"),
        ({"smooth": math.nan}, "smooth=nan"),
        ({"smooth": "0.5"}, "smooth='0.5'"),
        ({"fps": 0}, "fps=0"),
        ({"fps": -30.0}, "fps=-30.0"),
        ({"fps": math.inf}, "fps=inf"),
        ({"fps": math.nan}, "fps=nan"),
        ({"fps": True}, "fps=True"),
        ({"track_hi_thresh": 0.5}, "track_hi_thresh=0.5"),
        ({"tracker_type": "botsort"}, "tracker_type='botsort'"),
        ({"track_high_thresh": 1.5}, "track_high_thresh=1.5"),
        ({"match_thresh": "high"}, "match_thresh='high'"),
        ({"track_buffer": 0}, "track_buffer=0"),
        ({"track_buffer": 2.5}, "track_buffer=2.5"),
        ({"fuse_score": 1}, "fuse_score=1"),
        ({"gmc_method": "none"}, "gmc_method='none'"),  # a botsort setting, unknown to bytetrack
        ({"method": "botsort", "with_reid": True}, "with_reid=True"),
        ({"method": "botsort", "gmc_method": "sparseOptFlow"}, "gmc_method='sparseOptFlow'"),
    ],
)
def test_bad_arguments_raise_config_error_naming_them(kwargs: dict, named: str) -> None:
    with pytest.raises(ConfigError) as err:
        Tracker(**kwargs)
    message = str(err.value)
    assert named in message and "\n" not in message
    assert "use" in message or "accepts" in message or "drop it" in message


def test_settings_come_from_ultralytics_yaml_and_fps_scales_track_buffer() -> None:
    defaults = tracker_defaults("bytetrack")
    assert defaults["track_buffer"] == 30 and "tracker_type" not in defaults
    assert tracker_defaults("botsort")["gmc_method"] == "none"
    assert Tracker(fps=60).tracker_settings["track_buffer"] == 60
    assert Tracker(fps=15, max_gap=20).tracker_settings["track_buffer"] == 21  # an id survives every gap
    tracker = Tracker(method="botsort", new_track_thresh=0.5, fuse_score=False)
    assert tracker.tracker_settings["new_track_thresh"] == 0.5 and tracker.tracker_settings["fuse_score"] is False
    assert Tracker(backfill_frames=3, max_gap=7).delay == 7
    assert Tracker(backfill_frames=7, max_gap=3).delay == 8  # backfill sees one later sighting
    assert Tracker(backfill_frames=0, max_gap=0).delay == 0
    assert "hold_frames=12" in repr(Tracker())


def test_push_errors() -> None:
    empty = Detections.empty(SIZE[1], SIZE[0], NAMES)
    tracker = Tracker()
    tracker.push(3, empty)
    with pytest.raises(ValueError, match="got frame 5 after frame 3"):
        tracker.push(5, empty)
    with pytest.raises(ValueError, match="got frame 3 after frame 3"):
        tracker.push(3, empty)
    with pytest.raises(ValueError, match="masks are 10x10 but earlier frames were 120x160"):
        tracker.push(4, Detections.empty(10, 10, NAMES))
    with pytest.raises(TypeError, match="must be Detections or None"):
        tracker.push(4, [empty])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be an int"):
        tracker.push("4", empty)  # type: ignore[arg-type]
    tracker.flush()
    with pytest.raises(ValueError, match="after flush"):
        tracker.push(4, empty)


def test_frames_before_any_detections_wait_for_the_frame_size() -> None:
    tracker = Tracker(backfill_frames=0, max_gap=2)
    assert tracker.push(0, None) == [] and tracker.push(1, None) == []
    (index, dets), = tracker.push(2, Detections.empty(SIZE[1], SIZE[0], NAMES))
    assert index == 0 and (dets.height, dets.width) == (SIZE[1], SIZE[0]) and len(dets) == 0
    blind = Tracker(backfill_frames=0, max_gap=0)
    with pytest.raises(ValueError, match="frame 0 is due but no Detections have been pushed"):
        blind.push(0, None)


# -- ids --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["bytetrack", "botsort"])
def test_two_crossing_objects_keep_their_ids(method: str) -> None:
    n_frames = 30

    def objects(index: int) -> tuple[np.ndarray, np.ndarray]:
        a = 10 + 4 * index  # rightwards
        b = 130 - 4 * index  # leftwards; the boxes overlap around frame 15
        return rect(a, 30, a + 20, 60), rect(b, 45, b + 20, 75)

    script = lambda index: {"person": list(objects(index))}  # noqa: E731
    out = run(Tracker(method=method, smooth=0.0), script, n_frames)
    owner: dict[int, int] = {}
    for index, dets in out:
        assert len(dets) == 2 and dets.track_ids.dtype == torch.int64
        for region in range(2):
            which = next(k for k, truth in enumerate(objects(index)) if np.array_equal(dets.masks[region], truth))
            assert owner.setdefault(int(dets.track_ids[region]), which) == which, f"id switch at frame {index}"
    assert len(owner) == 2


def test_clip_objects_get_one_id_each_and_stats() -> None:
    tracker = Tracker()
    out = run(tracker, clip_detections())
    assert {tuple(ids_of(d, 0)) for _, d in out} == {(1,)} and {tuple(ids_of(d, 1)) for _, d in out} == {(2,)}
    assert tracker.ids_seen == 2
    assert tracker.stats == {
        "tracks": 2, "untracked": 0, "detected": 2 * N_FRAMES, "held": 0, "interpolated": 0, "backfilled": 0,
    }


def test_stride_k_frames_advance_the_tracker_and_are_interpolated() -> None:
    n_frames, stride = 49, 3  # the last frame is detected

    def stream() -> Iterator[tuple[int, Detections | None]]:
        for index in range(n_frames):
            if index % stride:
                yield index, None
                continue
            masks = object_masks(index, SIZE, n_frames)
            yield index, Detections.from_masks(np.stack([masks["person"], masks["car"]]), [0, 1], NAMES)

    tracker = Tracker()
    out = list(track_all(tracker, stream()))
    assert [i for i, _ in out] == list(range(n_frames))
    assert {tuple(ids_of(d, 0)) for _, d in out} == {(1,)} and {tuple(ids_of(d, 1)) for _, d in out} == {(2,)}
    assert uncovered(out, "person", n_frames) == {} and uncovered(out, "car", n_frames) == {}
    skipped = n_frames - len(range(0, n_frames, stride))
    assert tracker.stats["interpolated"] == 2 * skipped and tracker.stats["held"] == 0


def test_every_raw_detection_appears_in_its_own_frame() -> None:
    """Pass-through settings: the output is exactly the input, including a new object's first (unconfirmed)
    detection, a one-frame false positive and a detection below the tracker's score thresholds."""
    n_frames = 12

    def stream() -> Iterator[tuple[int, Detections]]:
        for index in range(n_frames):
            masks = [rect(10 + 3 * index, 10, 30 + 3 * index, 40)]
            scores = [0.9]
            if index >= 5:  # appears late: unconfirmed on its first frame
                masks.append(rect(100, 60 + index, 130, 90 + index))
                scores.append(0.8)
            if index == 7:  # one-frame false positive and a weak detection
                masks += [rect(60, 5, 70, 15), rect(5, 90, 25, 110)]
                scores += [0.6, 0.05]
            yield index, Detections.from_masks(np.stack(masks), [0] * len(masks), NAMES, scores=scores)

    tracker = Tracker(hold_frames=0, backfill_frames=0, max_gap=0, smooth=0.0)
    pairs = list(stream())
    out = list(track_all(tracker, iter(pairs)))
    for (index, raw), (out_index, dets) in zip(pairs, out):
        assert index == out_index
        assert torch.equal(dets.masks, raw.masks) and torch.equal(dets.scores, raw.scores)
        assert torch.equal(dets.boxes_xyxy, raw.boxes_xyxy)
        assert len(set(dets.track_ids.tolist())) == len(dets)
    assert out[5][1].track_ids[1] == out[6][1].track_ids[1]  # the first detection already has the final id
    assert out[7][1].track_ids[3] >= UNTRACKED_ID_BASE
    assert tracker.stats["untracked"] == 1


def test_empty_frames_give_empty_detections_with_track_ids() -> None:
    tracker = Tracker(backfill_frames=0, max_gap=0)
    (_, dets), = tracker.push(0, Detections.empty(SIZE[1], SIZE[0], NAMES))
    assert len(dets) == 0 and dets.masks.shape == (0, SIZE[1], SIZE[0])
    assert dets.track_ids.dtype == torch.int64 and dets.track_ids.tolist() == [] and dets.names == NAMES


# -- hold -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hold_frames", [1, 4, 12])
def test_hold_covers_every_dropped_frame(hold_frames: int) -> None:
    for dropped in range(1, hold_frames + 1):
        tracker = Tracker(hold_frames=hold_frames, backfill_frames=0, max_gap=0)  # no look-ahead: hold only
        out = run(tracker, clip_detections(drop=lambda i, name, d=dropped: name == "person" and 10 <= i < 10 + d))
        assert uncovered(out, "person") == {}, f"dropped {dropped}"
        assert all(ids_of(dets, 0) == [1] for _, dets in out)
        held = [dets for index, dets in out if 10 <= index < 10 + dropped]
        assert all(float(d.scores[d.class_ids == 0]) == 0.0 for d in held)
        assert tracker.stats["held"] == dropped


def test_hold_stops_after_hold_frames() -> None:
    tracker = Tracker(hold_frames=5, backfill_frames=0, max_gap=3)
    out = run(tracker, clip_detections(drop=lambda i, name: name == "person" and i >= 10))
    assert [index for index, dets in out if ids_of(dets, 0)] == list(range(15))
    assert tracker.stats["held"] == 5 and tracker.stats["interpolated"] == 0
    assert tracker.live_tracks == 1  # the person's track was forgotten


def test_gap_longer_than_max_gap_is_held_not_interpolated() -> None:
    tracker = Tracker(max_gap=2)
    out = run(tracker, clip_detections(drop=lambda i, name: name == "person" and 10 <= i < 15))
    assert uncovered(out, "person") == {}
    assert tracker.stats["held"] == 5 and tracker.stats["interpolated"] == 0


# -- backfill ---------------------------------------------------------------------------------------------


def test_backfill_covers_frames_before_the_first_detection() -> None:
    tracker = Tracker(backfill_frames=3, max_gap=0)
    out = run(tracker, clip_detections(drop=lambda i, name: name == "person" and i < 5))
    assert [index for index, dets in out if ids_of(dets, 0)] == list(range(2, N_FRAMES))
    assert set(uncovered(out, "person")) == {0, 1}
    first_id = ids_of(out[5][1], 0)
    assert all(ids_of(dets, 0) == first_id for _, dets in out[2:])
    assert tracker.stats["backfilled"] == 3


def test_reappearance_after_a_long_gap_is_held_then_backfilled() -> None:
    tracker = Tracker(hold_frames=5, backfill_frames=6, max_gap=8)
    out = run(tracker, clip_detections(drop=lambda i, name: name == "person" and 10 <= i < 30))
    assert set(uncovered(out, "person")) == set(range(15, 24))
    assert tracker.stats["held"] == 5 and tracker.stats["backfilled"] == 6


def test_frames_come_out_delay_frames_late_and_the_buffer_stays_small() -> None:
    tracker = Tracker(backfill_frames=4, max_gap=6)
    emitted = []
    for index, dets in detected(clip_detections(), N_FRAMES):
        out = tracker.push(index, dets)
        assert [i for i, _ in out] == ([index - tracker.delay] if index >= tracker.delay else [])
        assert tracker.pending <= tracker.delay
        emitted += out
    emitted += tracker.flush()
    assert [i for i, _ in emitted] == list(range(N_FRAMES)) and tracker.pending == 0


def test_one_off_detections_are_forgotten() -> None:
    """Memory stays flat: tracks that can cover no future frame are dropped. The boxes jump 4-5 box sizes a
    frame (a steady step of about one box size is one fast object, which the motion gate keeps as one track)."""
    tracker = Tracker(hold_frames=3, backfill_frames=2, max_gap=2)
    for index in range(60):
        x, y = (37 * index) % 140, (23 * index) % 100
        tracker.push(index, Detections.from_masks(rect(x, y, x + 8, y + 8)[None], [0], NAMES))
        assert tracker.live_tracks <= 8
    assert tracker.ids_seen > 30


# -- interpolation ----------------------------------------------------------------------------------------


def test_gap_is_interpolated_between_neighbours() -> None:
    tracker = Tracker(smooth=0.0)
    out = run(tracker, clip_detections(drop=lambda i, name: name == "person" and 10 <= i < 15))
    assert uncovered(out, "person") == {}
    assert all(ids_of(dets, 0) == [1] for _, dets in out)
    before = out[9][1].boxes_xyxy[out[9][1].class_ids == 0][0].numpy()
    after = out[15][1].boxes_xyxy[out[15][1].class_ids == 0][0].numpy()
    for index in range(10, 15):
        dets = out[index][1]
        box = dets.boxes_xyxy[dets.class_ids == 0][0].numpy()
        assert np.all(box >= np.minimum(before, after) - 1e-4) and np.all(box <= np.maximum(before, after) + 1e-4)
        np.testing.assert_allclose(box, interpolate_box(before, after, (index - 9) / 6), atol=1e-4)
        assert float(dets.scores[dets.class_ids == 0]) == 0.0
    assert tracker.stats["interpolated"] == 5 and tracker.stats["held"] == 0


def test_interpolate_box() -> None:
    a, b = [0, 0, 10, 20], [10, 20, 30, 60]
    np.testing.assert_allclose(interpolate_box(a, b, 0.0), a)
    np.testing.assert_allclose(interpolate_box(a, b, 1.0), b)
    np.testing.assert_allclose(interpolate_box(a, b, 0.25), [2.5, 5, 15, 30])


def test_warp_mask_translates_and_scales() -> None:
    mask = rect(10, 10, 20, 30)
    moved = warp_mask(mask, [10, 10, 20, 30], [40, 20, 60, 60])
    np.testing.assert_array_equal(moved, rect(40, 20, 60, 60))
    ellipse = object_masks(0, SIZE, 1)["car"]
    box = masks_to_boxes(torch.from_numpy(ellipse)[None])[0].numpy()
    half = warp_mask(ellipse, box, box / 2)
    assert abs(int(half.sum()) - ellipse.sum() / 4) < 0.1 * ellipse.sum() / 4
    np.testing.assert_array_equal(warp_mask(ellipse, box, box), ellipse)


def test_warp_mask_dilates_clips_and_survives_degenerate_boxes() -> None:
    dot = rect(50, 50, 51, 51)
    grown = warp_mask(dot, [50, 50, 51, 51], [50, 50, 51, 51], dilate=3)
    yy, xx = np.mgrid[: grown.shape[0], : grown.shape[1]]
    np.testing.assert_array_equal(grown, (yy - 50) ** 2 + (xx - 50) ** 2 <= 9)  # a Euclidean disk of radius 3
    edge = warp_mask(rect(0, 0, 10, 10), [0, 0, 10, 10], [-5, -5, 5, 5])
    np.testing.assert_array_equal(edge, rect(0, 0, 5, 5))
    line = rect(20, 20, 21, 40)  # zero-width source box: moved, not scaled
    np.testing.assert_array_equal(warp_mask(line, [20, 20, 20, 40], [30, 20, 30, 40]), rect(30, 20, 31, 40))
    assert not warp_mask(np.zeros((8, 8), dtype=bool), [0, 0, 1, 1], [2, 2, 3, 3], dilate=2).any()


# -- smoothing --------------------------------------------------------------------------------------------


def jittered_track(seed: int = 0) -> list[tuple[int, Detections]]:
    """A 20x30 box moving 2 px per frame right, its position jittered by up to 3 px per frame."""
    rng = np.random.default_rng(seed)
    pairs = []
    for index in range(N_FRAMES):
        dx, dy = rng.integers(-3, 4, size=2)
        x, y = 20 + 2 * index + dx, 40 + dy
        pairs.append((index, Detections.from_masks(rect(x, y, x + 20, y + 30)[None], [0], NAMES)))
    return pairs


def box_jitter(out: list[tuple[int, Detections]]) -> float:
    boxes = np.stack([dets.boxes_xyxy[0].numpy() for _, dets in out])
    return float(np.diff(boxes, axis=0).std(axis=0).mean())


def test_smoothing_reduces_box_jitter_and_never_touches_masks() -> None:
    pairs = jittered_track()
    raw = list(track_all(Tracker(smooth=0.0), iter(pairs)))
    smoothed = list(track_all(Tracker(smooth=0.5), iter(pairs)))
    assert box_jitter(smoothed) < 0.6 * box_jitter(raw)
    for (_, given), (_, dets) in zip(pairs, smoothed):
        assert torch.equal(dets.masks, given.masks)  # masks are never moved or shrunk by smoothing


def test_smoothing_has_no_lag_on_constant_motion() -> None:
    pairs = [(i, Detections.from_masks(rect(10 + 3 * i, 20, 30 + 3 * i, 50)[None], [0], NAMES)) for i in range(30)]
    for (_, given), (_, dets) in zip(pairs, track_all(Tracker(smooth=0.8), iter(pairs))):
        np.testing.assert_allclose(dets.boxes_xyxy.numpy(), given.boxes_xyxy.numpy(), atol=1e-3)


def test_track_all_matches_push_and_flush() -> None:
    pairs = list(detected(clip_detections(drop=lambda i, name: i % 4 == 1), N_FRAMES))
    manual, tracker = [], Tracker()
    for index, dets in pairs:
        manual += tracker.push(index, dets)
    manual += tracker.flush()
    streamed = list(track_all(Tracker(), iter(pairs)))
    assert [i for i, _ in manual] == [i for i, _ in streamed]
    for (_, a), (_, b) in zip(manual, streamed):
        assert torch.equal(a.masks, b.masks) and torch.equal(a.track_ids, b.track_ids)


# -- small, fast objects ----------------------------------------------------------------------------------

EDGE_SIZE = (80, 48)  # (W, H): a 12 px box moving 12 px per frame crosses it in 7 frames
PLATE_W, PLATE_H, PLATE_Y = 12, 6, 20


def plate_box(index: int, phase: int, leftwards: bool) -> tuple[int, int, int, int]:
    """The plate's true xyxy box at frame ``index``: 12x6 px moving its own width (12 px) per frame, entering
    the frame around frame 3 and leaving it around frame 10 (``phase`` px later); mirrored when ``leftwards``."""
    x0 = 12 * index - 42 + phase
    if leftwards:
        x0 = EDGE_SIZE[0] - x0 - PLATE_W
    return x0, PLATE_Y, x0 + PLATE_W, PLATE_Y + PLATE_H


def visible(box: tuple[int, int, int, int], size: tuple[int, int] = EDGE_SIZE) -> np.ndarray:
    """bool (H, W): the part of xyxy ``box`` inside the frame (the box may reach out of it)."""
    mask = np.zeros((size[1], size[0]), dtype=bool)
    x0, y0, x1, y1 = box
    mask[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
    return mask


def plate_stream(phase: int, leftwards: bool, detected: range, stride: int = 1,
                 n_frames: int = 15) -> Iterator[tuple[int, Detections | None]]:
    """Detections of the plate: the detector runs on every ``stride``-th frame and finds the plate only in
    ``detected`` (it is there, partly or wholly, in several frames around them)."""
    for index in range(n_frames):
        if index % stride:
            yield index, None
            continue
        truth = visible(plate_box(index, phase, leftwards))
        found = index in detected and truth.any()
        masks = truth[None] if found else np.zeros((0, EDGE_SIZE[1], EDGE_SIZE[0]), dtype=bool)
        yield index, Detections.from_masks(masks, [0] * len(masks), {0: "plate"})


def plate_leaks(out: list[tuple[int, Detections]], phase: int, leftwards: bool) -> dict[int, int]:
    """Frame -> pixels of the plate's true (visible) box not covered by any output region."""
    leaks = {}
    for index, dets in out:
        missing = int((visible(plate_box(index, phase, leftwards)) & ~dets.union_mask().numpy()).sum())
        if missing:
            leaks[index] = missing
    return leaks


@pytest.mark.parametrize("leftwards", [False, True])
@pytest.mark.parametrize("phase", [-8, -4, 0, 4, 8])
def test_small_fast_object_crossing_the_frame_edge_never_leaks_and_keeps_one_id(phase: int, leftwards: bool) -> None:
    """A 12x6 plate moving its own width per frame is detected in frames 4..8 only; it is partly or wholly in
    view in the 2 frames before and after (entering and leaving across the frame borders; with some phases the
    first or last detection is cut by the border). It used to be split into one-frame tracks whose masks were
    held where it was first/last seen."""
    tracker = Tracker()
    out = list(track_all(tracker, plate_stream(phase, leftwards, range(4, 9))))
    assert [i for i, _ in out] == list(range(15))
    assert plate_leaks(out, phase, leftwards) == {}
    assert {int(i) for _, dets in out for i in dets.track_ids} == {1}
    assert tracker.stats["tracks"] == 1 and tracker.stats["detected"] == 5
    for _, dets in out:  # output boxes stay in the frame even where the motion runs out of it
        boxes = dets.boxes_xyxy.numpy()
        assert np.all(boxes >= 0) and np.all(boxes[:, [0, 2]] <= EDGE_SIZE[0])
        assert np.all(boxes[:, [1, 3]] <= EDGE_SIZE[1])


@pytest.mark.parametrize("leftwards", [False, True])
@pytest.mark.parametrize(("phase", "detected"), [(0, range(4, 9)), (8, range(4, 9)), (-4, range(3, 10)),
                                                 (4, range(3, 10)), (-8, range(3, 13))])
def test_small_fast_object_with_detection_stride_3(phase: int, detected: range, leftwards: bool) -> None:
    """The same plate with the detector run on every third frame: one detection (frame 6) must cover the 2
    frames on each side and the misses around them by the growth for a single sighting (``max_speed``), and
    detections 36 px (3 box sizes) apart are one track, interpolated in between."""
    tracker = Tracker()
    out = list(track_all(tracker, plate_stream(phase, leftwards, detected, stride=3)))
    assert plate_leaks(out, phase, leftwards) == {}
    assert {int(i) for _, dets in out for i in dets.track_ids} == {1}
    in_view = [i for i in detected if i % 3 == 0 and visible(plate_box(i, phase, leftwards)).any()]
    assert tracker.stats["detected"] == len(in_view) >= 1


def test_a_fast_track_missed_at_one_detector_run_keeps_its_id() -> None:
    """Stride 3, a 12x6 plate at 12 px per frame, found at frames 3, 6, 12, 15 (missed at 9): at 12 it is 72 px
    from its last detection, beyond the reach of one interval from there and from the lagging Kalman
    prediction; the constant-velocity extrapolation of its last two detections finds it."""
    size = (240, 48)

    def stream() -> Iterator[tuple[int, Detections | None]]:
        for index in range(20):
            if index % 3:
                yield index, None
                continue
            x = 12 * index
            found = [visible((x, 20, x + 12, 26), size)] if index in (3, 6, 12, 15) else []
            masks = np.stack(found) if found else np.zeros((0, size[1], size[0]), dtype=bool)
            yield index, Detections.from_masks(masks, [0] * len(found), {0: "plate"})

    out = list(track_all(Tracker(), stream()))
    assert {int(i) for _, dets in out for i in dets.track_ids} == {1}
    for index, dets in out[3:18]:
        x = 12 * index
        truth = visible((x, 20, x + 12, 26), size)
        assert not (truth & ~dets.union_mask().numpy()).any(), f"frame {index}"


def test_a_single_sighting_grows_by_max_speed_and_max_speed_0_holds_it_in_place() -> None:
    box = (30, 20, 42, 26)  # 12x6: the growth is 12 px per frame at max_speed 1
    frames = [(i, Detections.from_masks(visible(box)[None], [0], {0: "plate"}) if i == 3 else
               Detections.empty(EDGE_SIZE[1], EDGE_SIZE[0], {0: "plate"})) for i in range(7)]
    yy, xx = np.mgrid[: EDGE_SIZE[1], : EDGE_SIZE[0]]
    gap_x = np.maximum(np.maximum(box[0] - xx, xx - (box[2] - 1)), 0)
    gap_y = np.maximum(np.maximum(box[1] - yy, yy - (box[3] - 1)), 0)
    for max_speed in (1.0, 0.0):
        out = list(track_all(Tracker(max_speed=max_speed, hold_dilate=2, smooth=0.0), iter(frames)))
        for index, dets in out:
            radius = abs(index - 3) * 12 * max_speed + 2 if index != 3 else 0
            expected = gap_x**2 + gap_y**2 <= radius**2
            np.testing.assert_array_equal(dets.union_mask().numpy(), expected, err_msg=f"frame {index}")
            assert dets.track_ids.tolist() == [1]


def test_an_object_entering_cut_by_the_border_is_interpolated_whole() -> None:
    """Detection every other frame, the first cut by the border (frame 4: x -4..8, only 0..8 in view; frame 6:
    20..32): frame 5 follows the whole object (8..20); interpolating the cut box would lag 2 px behind its front
    edge. No dilation, so only the geometry covers it. Also: a second miss after one more detection still
    keeps the id (the Kalman motion of three sightings re-finds it)."""
    phase = -10
    out = list(track_all(Tracker(hold_dilate=0, smooth=0.0), plate_stream(phase, False, range(4, 9), stride=2)))
    assert plate_leaks(out, phase, False) == {}
    assert {int(i) for _, dets in out for i in dets.track_ids} == {1}
    np.testing.assert_allclose(out[5][1].boxes_xyxy.numpy()[0], [8, 20, 20, 26], atol=1e-4)
    out = list(track_all(Tracker(), plate_stream(phase, False, {3, 4, 5, 6, 8, 9, 10})))
    assert plate_leaks(out, phase, False) == {}
    assert {int(i) for _, dets in out for i in dets.track_ids} == {1}


def test_tracks_are_per_class() -> None:
    """ultralytics matches by IoU alone and a matched track takes the detection's class; ours never does: a
    face track missed where a plate is detected stays a face track (held), the plate gets its own id."""
    from ultralytics.trackers import BYTETracker
    from ultralytics.utils import IterableSimpleNamespace

    from inpaint_anon.track.association import BoxesView

    raw = BYTETracker(IterableSimpleNamespace(tracker_type="bytetrack", **tracker_defaults("bytetrack")))
    box = np.array([[20, 10, 40, 30]], dtype=np.float32)
    raw.update(BoxesView(box, np.array([0.9], np.float32), np.array([0.0], np.float32)), None)
    (row,) = raw.update(BoxesView(box, np.array([0.9], np.float32), np.array([1.0], np.float32)), None)
    assert (int(row[4]), int(row[6])) == (1, 1), "ultralytics itself continues a class-0 track on a class-1 box"

    names = {0: "face", 1: "plate"}

    def frame(index: int) -> Detections:
        x = 10 + 4 * index
        if index < 5:
            return Detections.from_masks(rect(x, 10, x + 20, 30)[None], [0], names)
        return Detections.from_masks(rect(x, 10, x + 20, 30)[None], [1], names)  # the face's place, a plate

    out = list(track_all(Tracker(backfill_frames=0), ((i, frame(i)) for i in range(8))))
    for index, dets in out:
        by_class = dict(zip(dets.class_ids.tolist(), dets.track_ids.tolist()))
        assert by_class.get(0) == 1, f"frame {index}: the face track is {by_class}"
        if index >= 5:
            assert by_class[1] == 2


@pytest.mark.parametrize("method", ["bytetrack", "botsort"])
def test_two_classes_crossing_keep_their_ids(method: str) -> None:
    """A face and a plate of the same size, moving 6 px per frame in opposite directions along nearly the same
    line: at the crossing each detection overlaps the other class's predicted box."""
    names = {0: "face", 1: "plate"}

    def boxes(index: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = 10 + 6 * index, 130 - 6 * index
        return rect(a, 40, a + 14, 54), rect(b, 42, b + 14, 56)

    def frame(index: int) -> Detections:
        return Detections.from_masks(np.stack(boxes(index)), [0, 1], names)

    out = list(track_all(Tracker(method=method, smooth=0.0), ((i, frame(i)) for i in range(20))))
    for index, dets in out:
        assert dict(zip(dets.class_ids.tolist(), dets.track_ids.tolist())) == {0: 1, 1: 2}, f"frame {index}"
        for region, class_id in enumerate(dets.class_ids.tolist()):
            assert np.array_equal(dets.masks[region].numpy(), boxes(index)[class_id])


def test_motion_costs_gate_by_distance_relative_to_box_size() -> None:
    track = np.array([[0, 0, 12, 6]], dtype=np.float64)  # size 12 (longer side)
    detections = np.array([
        [0, 0, 12, 6],  # same place
        [12, 0, 24, 6],  # one box size away: within (1 + 0.5) sizes after one frame
        [20, 0, 32, 6],  # 20 px: beyond 18 px after one frame, within 42 px after three
        [0, 0, 60, 30],  # bigger by a factor 5: never by distance
    ])
    one = motion_costs(track, np.array([1]), detections, max_speed=1.0)[0]
    np.testing.assert_allclose(one[:2], [NEAR_COST, NEAR_COST + (FAR_COST - NEAR_COST) * 12 / 18])
    assert one[2] == 1.0 and one[3] == 1.0
    three = motion_costs(track, np.array([3]), detections, max_speed=1.0)[0]
    np.testing.assert_allclose(three[2], NEAR_COST + (FAR_COST - NEAR_COST) * 20 / 42)
    assert three[3] == 1.0
    still = motion_costs(track, np.array([3]), detections, max_speed=0.0)[0]  # only half a box of slack
    assert still[0] == NEAR_COST and still[1] == 1.0


def test_association_forgets_the_ids_of_removed_tracks() -> None:
    association = Association("bytetrack", Tracker(fps=30).tracker_settings)
    for index in range(120):
        x, y = (37 * index) % 140, (23 * index) % 100
        association.update(np.array([[x, y, x + 8, y + 8]], dtype=np.float64), np.array([0.9]), np.array([index % 2]))
    assert association.frame_id == 120
    assert association.known_ids <= 2 * 31  # at most track_buffer + 1 lost tracks per class
    assert sorted(association.backends) == [0, 1]


def test_dilate_is_exact_within_the_frame_for_any_radius() -> None:
    height, width = 30, 40
    patch = MaskPatch(np.ones((3, 5), dtype=bool), -4, 12)  # partly left of the frame
    yy, xx = np.mgrid[:height, :width]
    gap_x, gap_y = np.maximum(np.maximum(-4 - xx, xx - 0), 0), np.maximum(np.maximum(12 - yy, yy - 14), 0)
    for radius in (0, 1, 2.5, 7, 30, 49.9, 80):
        grown = patch.dilate(radius, within=(height, width)).paste(height, width)
        np.testing.assert_array_equal(grown, gap_x**2 + gap_y**2 <= radius**2, err_msg=f"radius {radius}")
    far = MaskPatch(np.ones((2, 2), dtype=bool), -60, 10)  # 59 px left of the frame
    assert not far.dilate(50, within=(height, width)).paste(height, width).any()
    assert far.dilate(200, within=(height, width)).paste(height, width).all()
    assert patch.pad_edges(2, 0, 1, 1).pixels.shape == (4, 8) and patch.pad_edges(2, 0, 1, 1).x0 == -6


# -- the ultralytics internals the adapter relies on ------------------------------------------------------


@pytest.mark.parametrize("method", ["bytetrack", "botsort"])
def test_ultralytics_tracker_internals_used_by_the_adapter(method: str) -> None:
    """inpaint_anon/track/association.py reads ultralytics' tracker state where ultralytics has no public API
    (the id of an unconfirmed new track; advancing a skipped frame by Kalman prediction alone). An ultralytics
    release that changes any of it fails here, naming what changed, instead of silently changing track ids."""
    import ultralytics

    from inpaint_anon.track.association import BoxesView

    def expect(ok: bool, what: str) -> None:
        if not ok:
            pytest.fail(f"ultralytics {ultralytics.__version__} {method}: {what}; inpaint_anon/track/association.py "
                        "relies on it: adapt it, or pin ultralytics-opencv-headless below this version in "
                        "pyproject.toml")

    def view(*boxes: list[float]) -> BoxesView:
        xyxy = np.array(boxes, dtype=np.float32).reshape(-1, 4)
        return BoxesView(xyxy, np.full(len(xyxy), 0.9, np.float32), np.zeros(len(xyxy), np.float32))

    backend = Association(method, Tracker(method=method).tracker_settings).backend(0)
    for name in ("frame_id", "tracked_stracks", "lost_stracks"):
        expect(hasattr(backend, name), f"the tracker has no attribute {name!r}")
    cost_calls: list[tuple[list, list]] = []
    own_costs = backend.get_dists

    def spy(tracks: list, detections: list) -> np.ndarray:
        cost_calls.append((list(tracks), list(detections)))
        return own_costs(tracks, detections)

    backend.get_dists = spy  # the motion gate lives in get_dists: update() must use it for its cost matrices
    expect(callable(getattr(backend, "multi_predict", None)), "the tracker has no multi_predict(tracks) method")
    expect((backend.frame_id, backend.tracked_stracks, backend.lost_stracks) == (0, [], []),
           "a new tracker does not start at frame_id 0 with empty tracked_stracks and lost_stracks lists")

    # frame 1: one detection -> a confirmed track, reported as a row [x1, y1, x2, y2, track_id, score, cls, idx]
    rows = backend.update(view([10, 10, 30, 50]), None)
    expect(backend.frame_id == 1, f"update() left frame_id at {backend.frame_id}, not 1")
    expect(np.shape(rows) == (1, 8), f"update() returned rows of shape {np.shape(rows)}, not (1, 8)")
    expect((int(rows[0][4]), int(rows[0][-1])) == (1, 0), f"update() row {rows[0].tolist()} is not [box, 1, ..., 0]")

    # frame 2: the object moved and a new one appeared first in the list: the new track is unconfirmed, not reported
    rows = backend.update(view([100, 60, 130, 90], [13, 10, 33, 50]), None)
    expect([(int(r[4]), int(r[-1])) for r in rows] == [(1, 1)], f"frame 2 rows {rows.tolist()} are not [id 1 at idx 1]")
    unconfirmed = [t for t in backend.tracked_stracks if not t.is_activated]
    expect(len(unconfirmed) == 1, "a new detection is not kept in tracked_stracks with is_activated=False")
    new = unconfirmed[0]
    expect((new.frame_id, int(new.idx), int(new.track_id)) == (backend.frame_id, 0, 2),
           f"the unconfirmed track has frame_id={new.frame_id}, idx={new.idx}, track_id={new.track_id}; expected "
           f"the tracker's frame_id {backend.frame_id}, its detection index 0 and the next id 2")

    expect(any(len(t) == 1 and len(d) == 2 for t, d in cost_calls),
           "update() did not call get_dists(tracks, detections) with the track pool and the new detections")
    (first,) = [t for t in backend.tracked_stracks if t.is_activated]
    expect(first.frame_id == 2 and np.shape(first.xyxy) == (4,),
           f"a matched track has frame_id={first.frame_id} (not the frame of its last detection, 2) or an xyxy of "
           f"shape {np.shape(first.xyxy)}")

    # a skipped frame: frame_id is advanced by hand and multi_predict moves tracks along their motion
    before, box_before = np.array(first.mean, dtype=np.float64), np.array(first.xyxy, dtype=np.float64)
    backend.frame_id += 1
    backend.multi_predict([first])
    expect(float(first.mean[0]) > before[0], "multi_predict(tracks) did not move a rightward track's Kalman mean right")
    expect(float(first.xyxy[0]) > box_before[0], "a track's xyxy does not follow its Kalman prediction")
    expect(first in backend.tracked_stracks and backend.lost_stracks == [], "multi_predict changed the track pools")
    rows = backend.update(view([19, 10, 39, 50]), None)  # frame 4, 3 px per frame further
    expect(backend.frame_id == 4, f"after a skipped frame update() gave frame_id {backend.frame_id}, not 4")
    expect([(int(r[4]), int(r[-1])) for r in rows] == [(1, 0)], f"after a skipped frame rows are {rows.tolist()}")

    # a missed frame: the track moves to lost_stracks (the adapter predicts those too on skipped frames)
    backend.update(view(), None)
    expect([int(t.track_id) for t in backend.lost_stracks] == [1], "a missed confirmed track is not in lost_stracks")

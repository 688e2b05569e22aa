"""Tracking between detection and anonymization: stable ids, fail-closed holds, gap interpolation, backfill.

The most visible failure of a video anonymizer is a face or plate shown in the clear for a frame or two
when the detector misses it. :class:`Tracker` closes those holes with a small look-ahead buffer:

- **ids**: ultralytics' ``BYTETracker`` or ``BOTSORT`` associates our boxes/scores/classes (from any
  detector), one backend per class (a face track never continues on a plate), with Kalman-predicted boxes
  and a distance gate for small, fast boxes whose IoU is 0 between frames
  (:mod:`~inpaint_anon.track.association`); each returned track is mapped back to its detection index, so the
  mask follows the id. A detection the tracker does not report (a new, still unconfirmed track; a score below
  the tracker's thresholds; a degenerate box) is still emitted in its own frame, with the unconfirmed track's
  id or a fresh id from :data:`UNTRACKED_ID_BASE` on: every raw detection appears in the output (fail closed).
- **hold**: a track missed in a frame keeps its last mask for up to ``hold_frames`` frames, moved along the
  track's velocity (constant-velocity prediction from its last two sightings) and grown by the uncertainty
  of that prediction: ``frames * speed + hold_dilate`` pixels, ``frames`` since the sighting and ``speed``
  the track's speed (pixels per frame). A track seen only once has no velocity: its mask stays in place and
  grows by ``frames * max_speed * size + hold_dilate`` (``size`` the box's longer side), everywhere the
  object can have gone at up to ``max_speed`` box sizes per frame.
- **interpolation**: a track seen at frames ``a`` and ``b`` with ``b - a - 1 <= max_gap`` missing frames in
  between gets, in each of them, the linearly interpolated box and the union of both neighbouring masks
  moved (translated and scaled) to that box, dilated by ``hold_dilate``. It takes precedence over the hold.
- **backfill**: a track first seen at frame ``t`` also covers frames ``t - backfill_frames .. t - 1`` like a
  hold run backwards: its first mask moved back along its velocity (from its first two sightings) and grown
  the same way (by ``max_speed`` box sizes per frame without a second sighting). Backfill looks one frame
  further ahead than ``backfill_frames`` so that even its earliest frame knows the second sighting (with
  detection every ``k`` frames, ``max_gap >= backfill_frames + k`` gives it that).
- **frame borders**: a box that touches the frame border shows only part of its object. For motion, such a
  sighting is given the full extent of the track's nearest sighting clear of that border (the box reaches
  out of the frame, its mask is extended by repeating its border row/column), so velocities, held,
  backfilled and interpolated boxes follow the whole object as it enters or leaves; masks are cut to the
  frame only when pasted (the motion is never clipped). Output boxes are clipped to the frame; a synthetic
  region with no pixel left in the frame is not emitted.
- **smoothing**: only the *boxes* (``boxes_xyxy``, used to place crops and size dilation) are smoothed;
  masks are never moved or shrunk by smoothing (privacy). The smoothed box at frame ``f`` is a weighted
  local linear fit of the track's detected boxes within ``delay`` frames on both sides, weights
  ``smooth ** |frame - f|``: centred (it uses the look-ahead), so constant motion gets no lag, and i.i.d.
  jitter is averaged out. Boxes of held / backfilled regions (outside the track's sightings) are not smoothed.

How it works: :meth:`Tracker.push` runs the association at once and records each detection as a *sighting*
of its track (mask cropped to its bounding box); frames are emitted ``delay = max(backfill_frames + 1,
max_gap)`` frames later (``max_gap`` alone when ``backfill_frames`` is 0), when everything that can decide
their synthetic regions is known: held, interpolated and backfilled regions are made at emission time from
the sightings, so there is no "hold now, replace later" bookkeeping. Latency is ``delay`` frames (12 with
the defaults: 0.4 s at 30 fps); memory is ``delay + 1`` frames of sightings (masks cropped to their boxes)
plus the last two older sightings of each live track.

Synthetic regions keep their track's id and class and have score 0.0; detected regions keep their
detector's score. Output Detections are on the CPU; input ``track_ids`` are ignored (replaced).

The growth can be large (a single sighting held 12 frames at ``max_speed=1`` covers 12 box sizes around it):
that is where such an object can be. Lower ``max_speed`` or ``hold_frames`` / ``backfill_frames`` to trade
coverage for smaller regions.

The association itself (ultralytics' trackers and their settings) lives in :mod:`inpaint_anon.track.association`,
the box and mask geometry in :mod:`inpaint_anon.track.geometry`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from inpaint_anon.checks import check_float, check_int
from inpaint_anon.errors import ConfigError
from inpaint_anon.track.association import METHODS, Association, check_tracker_args
from inpaint_anon.track.geometry import MaskPatch, box_centre, box_size, clip_box, interpolate_box, shift_box
from inpaint_anon.types import Detections

KINDS: tuple[str, ...] = ("detected", "held", "interpolated", "backfilled")
"""How a region of an output frame came about (counted in :attr:`Tracker.stats`)."""

UNTRACKED_ID_BASE = 1 << 40
"""Ids given to detections the association does not report start here, far above ultralytics' ids (1, 2...)."""

_MAX_FRAMES = 300  # upper bound of hold_frames / backfill_frames / max_gap (bounds the buffer's memory)
_REFERENCE_FPS = 30.0  # ultralytics' track_buffer is given in frames at this rate
_MIN_WEIGHT = 1e-6  # smoothing weights below this are ignored
_MAX_SPEED = 10.0  # upper bound of max_speed (box sizes per frame)
_BORDER = 1.0  # a box edge within this many pixels of the frame border touches it


# -- per-track records ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sighting:
    """One detection of a track: frame index, float64 (4,) xyxy box, mask patch, class id, score and the
    detector's float32 (5, 2) landmarks (None when it gives none)."""

    frame: int
    box: np.ndarray
    patch: MaskPatch
    class_id: int
    score: float
    landmarks: np.ndarray | None = None


@dataclass(frozen=True)
class _Extent:
    """Where a sighting's whole object is: float64 (4,) xyxy box and mask patch, both reaching out of the
    frame where the detection was cut by its border (see the module docstring)."""

    box: np.ndarray
    patch: MaskPatch


@dataclass
class _History:
    """A track's recent sightings, in frame order."""

    sightings: list[_Sighting] = field(default_factory=list)

    def at(self, frame: int) -> _Sighting | None:
        return next((s for s in self.sightings if s.frame == frame), None)

    def before(self, frame: int, count: int = 1) -> list[_Sighting]:
        """The last ``count`` sightings before ``frame`` (oldest first)."""
        return [s for s in self.sightings if s.frame < frame][-count:]

    def after(self, frame: int, count: int = 1) -> list[_Sighting]:
        """The first ``count`` sightings after ``frame``."""
        return [s for s in self.sightings if s.frame > frame][:count]

    def trim(self, cutoff: int) -> None:
        """Forget sightings before ``cutoff`` except the last two of them (hold position and velocity)."""
        self.sightings = self.before(cutoff, 2) + [s for s in self.sightings if s.frame >= cutoff]


@dataclass(frozen=True)
class _Region:
    """One region of an output frame: id, class, score, float64 (4,) xyxy box, mask patch and how it came about."""

    track_id: int
    class_id: int
    score: float
    box: np.ndarray
    patch: MaskPatch
    kind: str
    landmarks: np.ndarray | None = None  # float32 (5, 2) of a detected region; None for a synthetic one


@dataclass(frozen=True)
class _Slot:
    """A buffered frame: its index and the track id of each of its detections, in detection order (None when
    the detector did not run on it)."""

    index: int
    track_ids: list[int] | None
    dropped: bool = False


# -- the stage --------------------------------------------------------------------------------------------


class Tracker:
    """Online tracking stage with a look-ahead of ``delay`` frames (see the module docstring).

    method: association backend, one of :data:`METHODS`.
    hold_frames: frames (0..300) a missed track's last mask keeps being emitted (moved and dilated).
    backfill_frames: frames (0..300) before its first detection that a new track also covers.
    max_gap: longest run of missing frames (0..300) between two sightings that is interpolated.
    smooth: box smoothing strength in [0, 1) (0 = off); weight of a sighting ``k`` frames away is ``smooth**k``.
    hold_dilate: pixels (0..512) added around held, interpolated and backfilled masks (the margin).
    max_speed: fastest motion (0..10) assumed for a track seen once, in box sizes (the box's longer side) per
        frame: its held / backfilled mask grows by ``max_speed * size`` pixels per frame. Also the reach of
        the association's distance gate (``max_speed + 0.5`` box sizes per frame since the last detection).
    fps: frame rate of the video (> 0); ultralytics' ``track_buffer`` (frames at 30 fps) is scaled by
        ``fps / 30`` and raised to at least ``max_gap + 1`` so an id survives every gap that is interpolated.
    tracker_args: overrides of ultralytics' ``cfg/trackers/<method>.yaml`` (``track_high_thresh``,
        ``new_track_thresh``, ``match_thresh``, ``track_buffer``...); unknown keys are a ConfigError.

    With detection every ``k`` frames keep ``max_gap`` (or ``hold_frames``) >= ``k - 1``, or skipped frames
    go uncovered. Smoothing uses the look-ahead, so it needs ``delay >= 1``. Detections the association does
    not report get their own id and are held and backfilled like any track (fail closed).
    """

    def __init__(
        self,
        *,
        method: str = "bytetrack",
        hold_frames: int = 12,
        backfill_frames: int = 6,
        max_gap: int = 12,
        smooth: float = 0.5,
        hold_dilate: int = 4,
        max_speed: float = 1.0,
        fps: float = 30.0,
        **tracker_args: Any,
    ) -> None:
        if method not in METHODS:
            raise ConfigError(f"Tracker method={method!r} is unknown; use one of {list(METHODS)}")
        self.method = method
        self.hold_frames = check_int("Tracker", "hold_frames", hold_frames, 0, _MAX_FRAMES)
        self.backfill_frames = check_int("Tracker", "backfill_frames", backfill_frames, 0, _MAX_FRAMES)
        self.max_gap = check_int("Tracker", "max_gap", max_gap, 0, _MAX_FRAMES)
        self.hold_dilate = check_int("Tracker", "hold_dilate", hold_dilate, 0, 512)
        self.max_speed = check_float("Tracker", "max_speed", max_speed, 0.0, _MAX_SPEED)
        if isinstance(smooth, bool) or not isinstance(smooth, (int, float)) or not 0.0 <= smooth < 1.0:
            raise ConfigError(f"Tracker smooth={smooth!r} is invalid; use a number in [0, 1) (0 turns smoothing off)")
        self.smooth = float(smooth)
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0.0 < fps < math.inf:
            raise ConfigError(f"Tracker fps={fps!r} is invalid; use the video's frame rate, a number > 0")
        self.fps = float(fps)
        settings = check_tracker_args(method, tracker_args)
        settings["track_buffer"] = max(round(settings["track_buffer"] * self.fps / _REFERENCE_FPS), self.max_gap + 1)
        self.tracker_settings = settings
        self.delay = max(self.backfill_frames + 1 if self.backfill_frames else 0, self.max_gap)
        self._association = Association(method, settings, self.max_speed)
        self._buffer: deque[_Slot] = deque()
        self._histories: dict[int, _History] = {}
        self._last_index: int | None = None
        self._shape: tuple[int, int] | None = None
        self._names: dict[int, str] = {}
        self._next_untracked = UNTRACKED_ID_BASE
        self._flushed = False
        self._counts = dict.fromkeys(("tracks", "untracked", *KINDS), 0)

    def __repr__(self) -> str:
        return (
            f"Tracker(method={self.method!r}, hold_frames={self.hold_frames}, backfill_frames={self.backfill_frames},"
            f" max_gap={self.max_gap}, smooth={self.smooth}, hold_dilate={self.hold_dilate},"
            f" max_speed={self.max_speed}, fps={self.fps})"
        )

    # -- public ---------------------------------------------------------------------------------------------

    @property
    def ids_seen(self) -> int:
        """Distinct track ids given out so far (tracked and untracked)."""
        return self._counts["tracks"]

    @property
    def stats(self) -> dict[str, int]:
        """Counts for run.json: ``tracks`` (ids given out), ``untracked`` (detections the association did not
        report), and region-frames emitted by kind: ``detected``, ``held``, ``interpolated``, ``backfilled``."""
        return dict(self._counts)

    @property
    def live_tracks(self) -> int:
        """Tracks currently remembered (those that can still cover a frame not yet emitted)."""
        return len(self._histories)

    @property
    def pending(self) -> int:
        """Frames pushed but not yet emitted (at most ``delay`` between calls)."""
        return len(self._buffer)

    def push(self, index: int, detections: Detections | None) -> list[tuple[int, Detections]]:
        """Add frame ``index`` and return the frames that are now final, in order (each ``delay`` frames late).

        index: frame index; frames must be pushed once each, consecutively (any first index).
        detections: the frame's detections, masks bool (N, H, W) at frame size on any device; an empty
            Detections means the detector ran and found nothing; None means it did not run on this frame.
        Returns ``(index, Detections)`` pairs on the CPU whose ``track_ids`` (int64) cover every region.
        """
        self._check_push(index, detections)
        index = self._last_index = int(index)
        if detections is None:
            self._association.skip()
            self._buffer.append(_Slot(index, None))
        else:
            self._buffer.append(_Slot(index, self._record(index, detections.cpu())))
        return self._ready()

    def drop(self, index: int) -> list[tuple[int, Detections]]:
        """Frame ``index`` was dropped before detection (a realtime run): it counts in the tracker's clock like a
        frame without detection, but never comes out (no regions are made for it). Returns the frames that are
        now final, as :meth:`push` does."""
        self._check_push(index, None)
        index = self._last_index = int(index)
        self._association.skip()
        self._buffer.append(_Slot(index, None, dropped=True))
        return self._ready()

    def _ready(self) -> list[tuple[int, Detections]]:
        """Emit the buffered frames beyond the look-ahead (a dropped one only moves the clock on)."""
        emitted = []
        while len(self._buffer) > self.delay:
            slot = self._buffer.popleft()
            if slot.dropped:
                self._forget(slot.index + 1)
            else:
                emitted.append(self._emit(slot))
        return emitted

    def flush(self) -> list[tuple[int, Detections]]:
        """End of stream: the remaining frames, in order. The Tracker takes no more frames afterwards."""
        emitted = [self._emit(slot) for slot in self._buffer if not slot.dropped]
        self._buffer.clear()
        self._flushed = True
        return emitted

    # -- intake ---------------------------------------------------------------------------------------------

    def _check_push(self, index: int, detections: Detections | None) -> None:
        if self._flushed:
            raise ValueError("Tracker.push after flush(); make a new Tracker for the next video")
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"Tracker.push index={index!r} must be an int frame index")
        if self._last_index is not None and index != self._last_index + 1:
            raise ValueError(
                f"Tracker.push got frame {index} after frame {self._last_index}; push every frame once, in order "
                "(None for frames the detector skipped)"
            )
        if detections is not None and not isinstance(detections, Detections):
            raise TypeError(f"Tracker.push detections must be Detections or None, got {type(detections).__name__}")
        if detections is None:
            return
        if self._shape is not None and (detections.height, detections.width) != self._shape:
            raise ValueError(
                f"Tracker.push frame {index}: masks are {detections.height}x{detections.width} but earlier frames "
                f"were {self._shape[0]}x{self._shape[1]} (HxW); use one Tracker per video"
            )

    def _record(self, index: int, detections: Detections) -> list[int]:
        """Associate ``detections`` (CPU) of frame ``index`` and store each as a sighting; returns their ids."""
        self._shape = (detections.height, detections.width)
        self._names.update(detections.names)
        boxes = detections.boxes_xyxy.double().numpy()
        ids = self._association.update(boxes, detections.scores.numpy(), detections.class_ids.numpy())
        masks, class_ids, scores = detections.masks.numpy(), detections.class_ids.tolist(), detections.scores.tolist()
        landmarks = None if detections.landmarks is None else detections.landmarks.numpy()
        for i, (box, class_id, score) in enumerate(zip(boxes, class_ids, scores)):
            if ids[i] < 0:
                ids[i] = self._next_untracked
                self._next_untracked += 1
                self._counts["untracked"] += 1
            track_id = int(ids[i])
            if track_id not in self._histories:
                self._histories[track_id] = _History()
                self._counts["tracks"] += 1
            sighting = _Sighting(index, box, MaskPatch.from_mask(masks[i]), int(class_id), float(score),
                                 None if landmarks is None else landmarks[i])
            self._histories[track_id].sightings.append(sighting)
        return [int(i) for i in ids]

    # -- output ---------------------------------------------------------------------------------------------

    def _emit(self, slot: _Slot) -> tuple[int, Detections]:
        """The final Detections of a buffered frame; then forget what no later frame can need."""
        frame = slot.index
        detected = slot.track_ids or []
        regions = [self._detected_region(track_id, frame) for track_id in detected]
        for track_id in sorted(set(self._histories) - set(detected)):
            region = self._synthetic_region(track_id, frame)
            if region is not None:
                regions.append(region)
        for region in regions:
            self._counts[region.kind] += 1
        self._forget(frame + 1)
        return frame, self._to_detections(frame, regions)

    def _detected_region(self, track_id: int, frame: int) -> _Region:
        sighting = self._histories[track_id].at(frame)
        smoothed = self._smoothed_box(self._histories[track_id], frame)
        box = sighting.box if smoothed is None else smoothed
        return _Region(track_id, sighting.class_id, sighting.score, box, sighting.patch, "detected", sighting.landmarks)

    def _synthetic_region(self, track_id: int, frame: int) -> _Region | None:
        """The held, interpolated or backfilled region of a track missed in ``frame``, or None (not covered, or
        no pixel of it inside the frame)."""
        history = self._histories[track_id]
        earlier, later = history.before(frame, 2), history.after(frame, 2)
        previous, following = (earlier[-1] if earlier else None), (later[0] if later else None)
        if previous is not None and following is not None and following.frame - previous.frame - 1 <= self.max_gap:
            start, end = self._extent(history, previous), self._extent(history, following)
            fraction = (frame - previous.frame) / (following.frame - previous.frame)
            box = interpolate_box(start.box, end.box, fraction)
            patch = MaskPatch.union([start.patch.warp(start.box, box), end.patch.warp(end.box, box)])
            smoothed = self._smoothed_box(history, frame)
            box = box if smoothed is None else smoothed
            return self._synthetic(track_id, previous, box, patch, self.hold_dilate, "interpolated")
        if previous is not None and frame - previous.frame <= self.hold_frames:
            return self._extrapolated(track_id, history, previous, earlier[0] if len(earlier) == 2 else None, frame,
                                      "held")
        if following is not None and following.frame - frame <= self.backfill_frames:
            return self._extrapolated(track_id, history, following, later[1] if len(later) == 2 else None, frame,
                                      "backfilled")
        return None

    def _extrapolated(
        self, track_id: int, history: _History, anchor: _Sighting, other: _Sighting | None, frame: int, kind: str
    ) -> _Region | None:
        """``anchor``'s mask moved to ``frame`` along the velocity between ``anchor`` and ``other`` (the track's
        neighbouring sighting; None: seen once, no velocity) and grown by the prediction's uncertainty."""
        start = self._extent(history, anchor)
        frames = frame - anchor.frame  # negative when backfilling
        if other is None:
            velocity, speed = np.zeros(2), self.max_speed * box_size(start.box)
        else:
            moved = box_centre(self._extent(history, other).box) - box_centre(start.box)
            velocity = moved / (other.frame - anchor.frame)
            speed = float(np.linalg.norm(velocity))
        box = shift_box(start.box, velocity, frames)
        radius = abs(frames) * speed + self.hold_dilate
        return self._synthetic(track_id, anchor, box, start.patch.warp(start.box, box), radius, kind)

    def _synthetic(
        self, track_id: int, source: _Sighting, box: np.ndarray, patch: MaskPatch, radius: float, kind: str
    ) -> _Region | None:
        """A region made from ``source``'s class, score 0.0, ``box`` and ``patch`` grown by ``radius`` pixels and
        cut to the frame; None when nothing of it is inside the frame."""
        grown = patch.dilate(radius, within=self._shape)
        if grown.empty:
            return None
        return _Region(track_id, source.class_id, 0.0, box, grown, kind)

    def _extent(self, history: _History, sighting: _Sighting) -> _Extent:
        """``sighting``'s box and mask with each side cut by the frame border pushed out to the size of the
        track's nearest sighting (in time) clear of that border on that axis; unchanged without one."""
        height, width = self._shape
        box, patch = sighting.box.copy(), sighting.patch
        for axis, extent in ((0, width), (1, height)):
            low, high = box[axis] < _BORDER, box[axis + 2] > extent - _BORDER
            if not (low or high) or (low and high):
                continue
            clear = [s for s in history.sightings if s.box[axis] >= _BORDER and s.box[axis + 2] <= extent - _BORDER]
            if not clear:
                continue
            nearest = min(clear, key=lambda s: abs(s.frame - sighting.frame))
            missing = (nearest.box[axis + 2] - nearest.box[axis]) - (box[axis + 2] - box[axis])
            if missing <= 0 or patch.empty:
                continue
            if low:
                box[axis] -= missing
                start = patch.x0 if axis == 0 else patch.y0
                pad = max(0, start - math.floor(box[axis]))
                patch = patch.pad_edges(pad, 0, 0, 0) if axis == 0 else patch.pad_edges(0, pad, 0, 0)
            else:
                box[axis + 2] += missing
                end = patch.x0 + patch.pixels.shape[1] if axis == 0 else patch.y0 + patch.pixels.shape[0]
                pad = max(0, math.ceil(box[axis + 2]) - end)
                patch = patch.pad_edges(0, 0, pad, 0) if axis == 0 else patch.pad_edges(0, 0, 0, pad)
        return _Extent(box, patch)

    def _smoothed_box(self, history: _History, frame: int) -> np.ndarray | None:
        """float64 (4,) weighted local linear fit at ``frame`` of the track's boxes within ``delay`` frames
        (weights ``smooth ** |k|``); None when smoothing is off or ``frame`` is outside the sightings used."""
        if self.smooth == 0.0:
            return None
        near = [
            s for s in history.sightings
            if abs(s.frame - frame) <= self.delay and self.smooth ** abs(s.frame - frame) >= _MIN_WEIGHT
        ]
        if not near or not near[0].frame <= frame <= near[-1].frame:
            return None
        offsets = np.array([s.frame - frame for s in near], dtype=np.float64)
        weights = self.smooth ** np.abs(offsets)
        boxes = np.stack([s.box for s in near])
        mean_offset = np.average(offsets, weights=weights)
        mean_box = np.average(boxes, axis=0, weights=weights)
        spread = np.sum(weights * (offsets - mean_offset) ** 2)
        if spread == 0.0:
            return mean_box
        slope = (weights * (offsets - mean_offset)) @ (boxes - mean_box) / spread
        return mean_box - slope * mean_offset

    def _forget(self, next_frame: int) -> None:
        """Trim sightings no frame from ``next_frame`` on can use; drop tracks that can cover no such frame."""
        for track_id in list(self._histories):
            history = self._histories[track_id]
            history.trim(next_frame - self.delay)
            latest = history.sightings[-1].frame
            can_hold = next_frame - latest <= self.hold_frames
            can_interpolate = self._last_index + 1 - latest - 1 <= self.max_gap
            if latest < next_frame and not can_hold and not can_interpolate:
                del self._histories[track_id]

    def _to_detections(self, frame: int, regions: list[_Region]) -> Detections:
        if self._shape is None:
            raise ValueError(
                f"Tracker: frame {frame} is due but no Detections have been pushed yet, so its size is unknown; "
                "run the detector on the first frame"
            )
        height, width = self._shape
        masks = np.zeros((len(regions), height, width), dtype=bool)
        for i, region in enumerate(regions):
            masks[i] = region.patch.paste(height, width)
        return Detections(
            masks=torch.from_numpy(masks),
            class_ids=torch.tensor([r.class_id for r in regions], dtype=torch.int64),
            scores=torch.tensor([r.score for r in regions], dtype=torch.float32),
            boxes_xyxy=torch.tensor(
                np.array([clip_box(r.box, height, width) for r in regions]).reshape(-1, 4), dtype=torch.float32
            ),
            names=dict(self._names),
            track_ids=torch.tensor([r.track_id for r in regions], dtype=torch.int64),
            landmarks=_landmarks(regions),
        )


def _landmarks(regions: list[_Region]) -> torch.Tensor | None:
    """float32 (N, 5, 2): the detector's landmarks of the detected regions, NaN rows for the others (held,
    interpolated, backfilled: no landmarks were seen in that frame); None when no region has any."""
    if all(r.landmarks is None for r in regions):
        return None
    nan = np.full((5, 2), np.nan, dtype=np.float32)
    return torch.from_numpy(np.stack([nan if r.landmarks is None else r.landmarks for r in regions]).astype(np.float32))


def track_all(tracker: Tracker, stream: Iterable[tuple[int, Detections | None]]) -> Iterator[tuple[int, Detections]]:
    """Push every ``(index, detections)`` of ``stream`` into ``tracker``, then flush; yields the final frames in
    order (each frame once, ``tracker.delay`` frames after it went in)."""
    for index, detections in stream:
        yield from tracker.push(index, detections)
    yield from tracker.flush()

"""The adapter to ultralytics' trackers: our boxes, scores and classes in, one track id per detection out.

ultralytics' ``BYTETracker`` / ``BOTSORT`` are built for its own ``Results``; :class:`Association` feeds them
plain arrays through the ``Results.boxes``-like view they read, and the settings of their
``cfg/trackers/<method>.yaml`` are checked here (:func:`check_tracker_args`). Two things are added:

- **tracks are per class**: ultralytics matches by box overlap alone and a matched track takes the detection's
  class (``STrack.update`` copies ``cls``), so a face track could continue on a plate. :class:`Association`
  runs one backend per class id and numbers the tracks of all of them in one sequence (1, 2, ...).
- **a motion gate for small, fast objects**: the IoU of a small box moving about its own width per frame is 0
  between frames, and a track seen once has no velocity, so IoU alone splits one plate into one-frame tracks.
  Each backend's ``get_dists`` (its cost matrix of tracks x detections) also accepts, at a cost between
  :data:`NEAR_COST` and :data:`FAR_COST`, every detection whose centre lies within reach of one of the
  track's predicted boxes (:func:`motion_costs`): its Kalman prediction, its last detected box, and that box
  moved on at the velocity between its last two detections (ultralytics' Kalman filter assumes motion small
  relative to the box height, so its velocity lags far behind a plate moving several heights per frame).
  The reach is ``(max_speed * frames + GATE_SLACK)`` box sizes, where a box size is the longer side and
  ``frames`` the frames since the track's last detection, but at most the frames since the previous detector
  run: a lost track is carried by its predictions and the gate covers one detection interval of motion they
  did not foresee, so a long-lost track is not handed to whatever appears near it.
  Boxes whose sizes differ by more than :data:`MAX_SIZE_RATIO` never match by distance. A good IoU match
  costs less than any distance match, so distance only joins what IoU cannot. ultralytics' second pass
  (low-score detections) stays IoU only, and a track seen once that is missed at the next detector run is
  dropped by ultralytics (its next detection starts a new id; the masks are covered regardless).

Besides their public ``update(results, img)``, ``get_dists(tracks, detections)`` and ``multi_predict(tracks)``,
some things need the trackers' state, for which ultralytics has no public API: the id of a new, still
unconfirmed track (read from ``tracked_stracks``: ``is_activated``, ``frame_id``, ``idx``, ``track_id``),
advancing a frame the detector skipped by Kalman prediction alone (``frame_id``, ``tracked_stracks``,
``lost_stracks``), and in the gate each track's id, last detection frame, detection index and predicted box
(``track_id``, ``frame_id``, ``idx``, ``xyxy``).
The ultralytics version is pinned in pyproject.toml, and tests/test_track.py checks these internals with a
message naming what changed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from inpaint_anon.errors import ConfigError

METHODS: tuple[str, ...] = ("bytetrack", "botsort")
"""Association backends: ultralytics' BYTETracker and BOTSORT (without ReID / camera-motion compensation)."""

NEAR_COST, FAR_COST = 0.3, 0.65
"""Cost of a distance match with coincident centres / at the edge of the gate (linear in between). Below the
backends' acceptance thresholds (``match_thresh`` 0.8, 0.7 for unconfirmed tracks) and above the cost of a
good IoU match. A ``match_thresh`` below FAR_COST narrows the gate."""

GATE_SLACK = 0.5
"""Box sizes added to the gate: detection jitter, and the reach of a near-static box when ``max_speed`` is 0."""

MAX_SIZE_RATIO = 4.0
"""Boxes whose longer sides differ by more than this factor are never matched by distance (a box cut by the
frame border can be much smaller than the whole object, hence the wide ratio)."""


@dataclass(frozen=True)
class BoxesView:
    """The ``Results.boxes``-like view ultralytics' trackers read: float32 ``xyxy`` (N, 4), ``conf`` (N,),
    ``cls`` (N,), ``xywh`` (centre, size), boolean indexing and ``len``."""

    xyxy: np.ndarray
    conf: np.ndarray
    cls: np.ndarray

    @property
    def xywh(self) -> np.ndarray:
        return np.concatenate([(self.xyxy[:, :2] + self.xyxy[:, 2:]) / 2, self.xyxy[:, 2:] - self.xyxy[:, :2]], axis=1)

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, index: Any) -> BoxesView:
        return BoxesView(self.xyxy[index], self.conf[index], self.cls[index])


def tracker_defaults(method: str) -> dict[str, Any]:
    """The settings of ultralytics' ``cfg/trackers/<method>.yaml`` (without ``tracker_type``), as a dict."""
    from ultralytics.utils import YAML
    from ultralytics.utils.checks import check_yaml

    settings = dict(YAML.load(check_yaml(f"{method}.yaml")))
    settings.pop("tracker_type", None)
    if method == "botsort":
        settings["gmc_method"] = "none"  # camera-motion compensation needs frames; the Tracker sees only masks
    return settings


_SETTING_RULES: tuple[tuple[type, str, Any], ...] = (
    (bool, "True or False", lambda v: isinstance(v, bool)),
    (int, "an integer >= 1", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1),
    (float, "a number from 0 to 1", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1),
    (str, "a string", lambda v: isinstance(v, str)),
)
"""(type of the yaml default, what is allowed, check) for the backend settings; the first matching type wins."""


def check_tracker_args(method: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The backend's settings: its yaml defaults updated with ``overrides``, each checked by the type of its
    default (thresholds in [0, 1], ``track_buffer`` an int >= 1, flags bool)."""
    settings = tracker_defaults(method)
    for key, value in overrides.items():
        if key not in settings:
            raise ConfigError(f"Tracker got unknown argument {key}={value!r}; {method} accepts {sorted(settings)}")
        allowed, check = next((a, c) for kind, a, c in _SETTING_RULES if isinstance(settings[key], kind))
        if not check(value):
            raise ConfigError(
                f"Tracker {key}={value!r} is invalid; use {allowed} ({method}'s default is {settings[key]!r})"
            )
        settings[key] = value
    if settings.get("with_reid"):
        raise ConfigError("Tracker with_reid=True is not supported (the tracker sees masks, not frames); drop it")
    if settings.get("gmc_method", "none") != "none":
        raise ConfigError(
            f"Tracker gmc_method={settings['gmc_method']!r} is not supported (it needs frames); use 'none'"
        )
    return settings


def motion_costs(
    track_boxes: np.ndarray, frames: np.ndarray, detection_boxes: np.ndarray, max_speed: float
) -> np.ndarray:
    """float64 (T, D) distance-gate costs of T tracks against D detections (module docstring).

    track_boxes: float (T, 4) xyxy, the tracks' predicted boxes; frames: (T,) frames of motion each track may
    have made (>= 1); detection_boxes: float (D, 4) xyxy; max_speed: box sizes per frame (>= 0).
    A pair costs ``NEAR_COST + (FAR_COST - NEAR_COST) * distance / gate`` when the centre distance is within
    the gate ``size * (max_speed * frames + GATE_SLACK)`` (``size`` the larger of the two boxes' longer sides)
    and the sizes are within :data:`MAX_SIZE_RATIO`; 1.0 (no match) otherwise."""
    tracks = np.asarray(track_boxes, dtype=np.float64).reshape(-1, 4)
    found = np.asarray(detection_boxes, dtype=np.float64).reshape(-1, 4)
    track_size = np.maximum(np.maximum(tracks[:, 2] - tracks[:, 0], tracks[:, 3] - tracks[:, 1]), 1e-6)
    found_size = np.maximum(np.maximum(found[:, 2] - found[:, 0], found[:, 3] - found[:, 1]), 1e-6)
    larger = np.maximum(track_size[:, None], found_size[None, :])
    similar = larger / np.minimum(track_size[:, None], found_size[None, :]) <= MAX_SIZE_RATIO
    gate = larger * (max_speed * np.asarray(frames, dtype=np.float64).reshape(-1, 1) + GATE_SLACK)
    track_centres, found_centres = (tracks[:, :2] + tracks[:, 2:]) / 2, (found[:, :2] + found[:, 2:]) / 2
    distance = np.linalg.norm(track_centres[:, None, :] - found_centres[None, :, :], axis=2)
    within = similar & (distance <= gate)
    return np.where(within, NEAR_COST + (FAR_COST - NEAR_COST) * distance / gate, 1.0)


@functools.cache
def backend_class(method: str) -> type:
    """ultralytics' tracker class for ``method`` with the motion gate added to its ``get_dists``; built with
    ``(args, max_speed)``. Made on first use, so ultralytics is imported only when a Tracker is built."""
    from ultralytics.trackers import BOTSORT, BYTETracker

    base = {"bytetrack": BYTETracker, "botsort": BOTSORT}[method]

    class MotionGated(base):  # type: ignore[misc, valid-type]
        """ultralytics' tracker whose cost matrix also takes distance matches within the motion gate."""

        def __init__(self, args: Any, max_speed: float) -> None:
            super().__init__(args)
            self.max_speed = max_speed
            self.previous_update = 0  # frame_id of the previous update (detector run)
            self.measured: dict[int, list[tuple[int, np.ndarray]]] = {}  # track id -> last 2 (frame_id, xyxy)

        def update(self, results: Any, img: np.ndarray | None = None, **kwargs: Any) -> np.ndarray:
            rows = super().update(results, img, **kwargs)
            self.previous_update = self.frame_id
            kept = {}
            for track in [*self.tracked_stracks, *self.lost_stracks]:
                history = self.measured.get(int(track.track_id), [])
                if track.frame_id == self.frame_id:
                    box = np.asarray(results.xyxy[int(track.idx)], dtype=np.float64)
                    history = [*history, (self.frame_id, box)][-2:]
                if history:
                    kept[int(track.track_id)] = history
            self.measured = kept
            return rows

        def references(self, track: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            """float64 (4,) xyxy boxes the gate reaches from: the Kalman prediction, the last detected box, and
            that box moved on at the velocity between the track's last two detections."""
            predicted = np.asarray(track.xyxy, dtype=np.float64)
            history = self.measured.get(int(track.track_id))
            if not history:
                return predicted, predicted, predicted
            last_frame, last = history[-1]
            if len(history) == 1:
                return predicted, last, last
            first_frame, first = history[0]
            velocity = (last - first) / (last_frame - first_frame)
            return predicted, last, last + velocity * (self.frame_id - last_frame)

        def get_dists(self, tracks: list, detections: list) -> np.ndarray:
            dists = super().get_dists(tracks, detections)
            if not len(tracks) or not len(detections):
                return dists
            interval = self.frame_id - self.previous_update
            frames = np.array([max(min(self.frame_id - t.frame_id, interval), 1) for t in tracks])
            found = np.stack([d.xyxy for d in detections])
            references = [self.references(t) for t in tracks]
            gated = np.min([motion_costs(np.stack([r[k] for r in references]), frames, found, self.max_speed)
                            for k in range(3)], axis=0)
            return np.minimum(dists, gated.astype(dists.dtype))

    MotionGated.__name__ = MotionGated.__qualname__ = f"MotionGated{base.__name__}"
    return MotionGated


class Association:
    """ultralytics' BYTETracker / BOTSORT, one per class, with the motion gate, fed with plain boxes; returns
    one track id per detection (ids unique over all classes, 1, 2, ... in order of first detection)."""

    def __init__(self, method: str, settings: dict[str, Any], max_speed: float = 1.0) -> None:
        from ultralytics.utils import IterableSimpleNamespace

        self.method = method
        self.args = IterableSimpleNamespace(tracker_type=method, **settings)
        self.max_speed = float(max_speed)
        self.backends: dict[int, Any] = {}  # class id -> its backend
        self._frames = 0
        self._ids: dict[tuple[int, int], int] = {}  # (class id, backend's track id) -> our id
        self._next_id = 1

    @property
    def frame_id(self) -> int:
        """Frames the association has advanced through (detected or predicted)."""
        return self._frames

    @property
    def known_ids(self) -> int:
        """Track ids still mapped (those of tracks some backend keeps, tracked or lost)."""
        return len(self._ids)

    def backend(self, class_id: int) -> Any:
        """The backend (a :func:`backend_class` instance) of class ``class_id``, made on first use."""
        if class_id not in self.backends:
            backend = backend_class(self.method)(self.args, self.max_speed)
            backend.frame_id = backend.previous_update = self._frames  # in step with the other classes
            self.backends[class_id] = backend
        return self.backends[class_id]

    def update(self, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
        """int64 (N,) track id of each detection (float (N, 4) xyxy boxes, (N,) scores and class ids), or -1
        where the backend gives none. Unconfirmed new tracks count: their id is the one they keep once confirmed."""
        self._frames += 1
        classes = np.asarray(class_ids).astype(np.int64)
        local = np.full(len(classes), -1, dtype=np.int64)
        for class_id in sorted(set(classes.tolist()) | set(self.backends)):
            rows = np.flatnonzero(classes == class_id)
            local[rows] = self._update_class(self.backend(class_id), boxes[rows], scores[rows])
        ids = np.full(len(classes), -1, dtype=np.int64)
        for i in np.flatnonzero(local >= 0):  # detection order, so ids follow first appearance
            key = (int(classes[i]), int(local[i]))
            if key not in self._ids:
                self._ids[key] = self._next_id
                self._next_id += 1
            ids[i] = self._ids[key]
        self._forget_ids()
        return ids

    @staticmethod
    def _update_class(backend: Any, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """The backend's track id of each of one class's detections (-1 where none)."""
        found = BoxesView(boxes.astype(np.float32), scores.astype(np.float32), np.zeros(len(scores), np.float32))
        rows = backend.update(found, None)
        ids = np.full(len(found), -1, dtype=np.int64)
        for row in rows:
            ids[int(row[-1])] = int(row[4])
        for track in backend.tracked_stracks:
            if not track.is_activated and track.frame_id == backend.frame_id and ids[int(track.idx)] < 0:
                ids[int(track.idx)] = int(track.track_id)
        return ids

    def _forget_ids(self) -> None:
        """Drop the id of every track its backend no longer keeps (memory stays flat)."""
        alive = {
            (class_id, int(t.track_id))
            for class_id, backend in self.backends.items()
            for t in [*backend.tracked_stracks, *backend.lost_stracks]
        }
        self._ids = {key: value for key, value in self._ids.items() if key in alive}

    def skip(self) -> None:
        """Advance one frame on which the detector did not run: Kalman predict-only, no track is marked lost."""
        self._frames += 1
        for backend in self.backends.values():
            backend.frame_id += 1
            live = [t for t in backend.tracked_stracks if t.is_activated] + list(backend.lost_stracks)
            if live:
                backend.multi_predict(live)

"""The adapter to ultralytics' trackers: our boxes, scores and classes in, one track id per detection out.

ultralytics' ``BYTETracker`` / ``BOTSORT`` are built for its own ``Results``; :class:`Association` feeds them
plain arrays through the ``Results.boxes``-like view they read, and the settings of their
``cfg/trackers/<method>.yaml`` are checked here (:func:`check_tracker_args`).

Besides their public ``update(results, img)`` and ``multi_predict(tracks)``, two things need the trackers' state,
for which ultralytics has no public API: the id of a new, still unconfirmed track (read from
``tracked_stracks``: ``is_activated``, ``frame_id``, ``idx``, ``track_id``), and advancing a frame the detector
skipped by Kalman prediction alone (``frame_id``, ``tracked_stracks``, ``lost_stracks``). The ultralytics version
is pinned in pyproject.toml, and tests/test_track.py checks these internals with a message naming what changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from inpaint_anon.errors import ConfigError

METHODS: tuple[str, ...] = ("bytetrack", "botsort")
"""Association backends: ultralytics' BYTETracker and BOTSORT (without ReID / camera-motion compensation)."""


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


class Association:
    """ultralytics' BYTETracker / BOTSORT fed with plain boxes; returns one track id per detection."""

    def __init__(self, method: str, settings: dict[str, Any]) -> None:
        from ultralytics.trackers import BOTSORT, BYTETracker
        from ultralytics.utils import IterableSimpleNamespace

        backend = {"bytetrack": BYTETracker, "botsort": BOTSORT}[method]
        self.tracker = backend(IterableSimpleNamespace(tracker_type=method, **settings))

    @property
    def frame_id(self) -> int:
        """Frames the backend has advanced through (detected or predicted)."""
        return int(self.tracker.frame_id)

    def update(self, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
        """int64 (N,) track id of each detection (float (N, 4) xyxy boxes, (N,) scores and class ids), or -1
        where the backend gives none. Unconfirmed new tracks count: their id is the one they keep once confirmed."""
        found = BoxesView(boxes.astype(np.float32), scores.astype(np.float32), class_ids.astype(np.float32))
        rows = self.tracker.update(found, None)
        ids = np.full(len(found), -1, dtype=np.int64)
        for row in rows:
            ids[int(row[-1])] = int(row[4])
        for track in self.tracker.tracked_stracks:
            if not track.is_activated and track.frame_id == self.tracker.frame_id and ids[int(track.idx)] < 0:
                ids[int(track.idx)] = int(track.track_id)
        return ids

    def skip(self) -> None:
        """Advance one frame on which the detector did not run: Kalman predict-only, no track is marked lost."""
        self.tracker.frame_id += 1
        live = [t for t in self.tracker.tracked_stracks if t.is_activated] + list(self.tracker.lost_stracks)
        if live:
            self.tracker.multi_predict(live)


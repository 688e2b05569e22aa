"""Tracking between detection and anonymization (see :mod:`inpaint_anon.track.tracker`).

- :mod:`~inpaint_anon.track.tracker`: the stage, :class:`Tracker` (ids, fail-closed holds and backfill that
  follow each track's motion and grow with its uncertainty, gap interpolation, box smoothing) and
  :func:`track_all`;
- :mod:`~inpaint_anon.track.association`: the adapter to ultralytics' BYTETracker / BOTSORT (one per class,
  with a distance gate for small, fast boxes) and their settings;
- :mod:`~inpaint_anon.track.geometry`: boxes moved and interpolated, masks warped from one box onto another
  and grown (exactly, for any radius).

ultralytics is imported only when a Tracker is built.
"""

from __future__ import annotations

from inpaint_anon.track.association import METHODS, tracker_defaults
from inpaint_anon.track.geometry import interpolate_box, shift_box, warp_mask
from inpaint_anon.track.tracker import KINDS, UNTRACKED_ID_BASE, Tracker, track_all

__all__ = [
    "KINDS",
    "METHODS",
    "UNTRACKED_ID_BASE",
    "Tracker",
    "interpolate_box",
    "shift_box",
    "track_all",
    "tracker_defaults",
    "warp_mask",
]

"""Reversible scramble end to end through the real command lines (tmp placeholder)."""

from __future__ import annotations

from inpaint_anon.detect.scripted import ScriptedDetector
from tests.clips import object_masks


def clip_objects_detector(n_frames: int, width: int, height: int) -> ScriptedDetector:
    """A detector that finds exactly the person and the car of a ``make_clip`` clip of this size and length."""
    return ScriptedDetector(lambda index: object_masks(index, (width, height), n_frames), names=["person", "car"])

"""Detectors: frames in, per-frame Detections (masks at frame resolution) out.

``YoloSegDetector`` is imported lazily, so ``import inpaint_anon.detect`` does not import ultralytics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inpaint_anon.detect.base import Detector
from inpaint_anon.detect.multi import MultiDetector
from inpaint_anon.detect.scripted import ScriptedDetector

if TYPE_CHECKING:
    from inpaint_anon.detect.yolo_seg import YoloSegDetector

__all__ = ["Detector", "MultiDetector", "ScriptedDetector", "YoloSegDetector"]


def __getattr__(name: str) -> Any:
    if name == "YoloSegDetector":
        from inpaint_anon.detect.yolo_seg import YoloSegDetector

        return YoloSegDetector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

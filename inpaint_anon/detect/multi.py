"""MultiDetector: several named detectors (objects, faces, plates) as one, in one class namespace."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from inpaint_anon.detect.base import Detector, check_frames
from inpaint_anon.errors import ConfigError
from inpaint_anon.types import Detections, Frame


class MultiDetector:
    """A :class:`~inpaint_anon.detect.base.Detector` that runs several detectors and merges their detections.

    detectors: name -> detector (e.g. ``{"objects": YoloSegDetector(...), "faces": FaceDetector(...)}``), in the
        order their detections are merged (each frame's regions: the first detector's, then the second's, ...).

    ``names`` is the union of the children's class names, by name, in a stable order (the first detector's
    classes in its id order, then each next one's new names); a class several children report (e.g. ``person``)
    gets one id. Each child's ids are remapped into this table. ``landmarks`` are kept for the rows of children
    that give them, NaN for the other rows of that frame, and None for a frame where no child gives any.
    Each child is called with its own ``batch_size`` frames at a time; ``batch_size`` is the largest of them.
    """

    def __init__(self, detectors: Mapping[str, Detector]) -> None:
        if not isinstance(detectors, Mapping) or not detectors:
            raise ConfigError(f"detectors={detectors!r} is empty; give at least one named detector")
        for key, detector in detectors.items():
            if not isinstance(detector, Detector):
                raise ConfigError(f"detectors.{key}={detector!r} is not a Detector; give an object with names, "
                                  "batch_size and __call__")
        self.detectors: dict[str, Detector] = dict(detectors)
        ids: dict[str, int] = {}
        for detector in self.detectors.values():
            for name in detector.names.values():
                ids.setdefault(name, len(ids))
        self.names: dict[int, str] = {i: name for name, i in ids.items()}
        self.batch_size: int = max(detector.batch_size for detector in self.detectors.values())
        # child id -> merged id, as a lookup table per child
        self._remap: dict[str, torch.Tensor] = {}
        for key, detector in self.detectors.items():
            table = torch.full((max(detector.names) + 1,), -1, dtype=torch.int64)
            for child_id, name in detector.names.items():
                table[child_id] = ids[name]
            self._remap[key] = table

    def __call__(self, frames: Sequence[Frame]) -> list[Detections]:
        """One merged Detections per frame (see the class docstring); masks at each frame's size, on the CPU."""
        frames = check_frames(frames)
        per_child: list[tuple[str, list[Detections]]] = []
        for key, detector in self.detectors.items():
            found: list[Detections] = []
            for start in range(0, len(frames), detector.batch_size):
                found.extend(detector(frames[start:start + detector.batch_size]))
            if len(found) != len(frames):
                raise RuntimeError(f"detectors.{key} returned {len(found)} Detections for {len(frames)} frames")
            per_child.append((key, found))
        return [self._merge(frame, [(key, found[i]) for key, found in per_child]) for i, frame in enumerate(frames)]

    def _merge(self, frame: Frame, parts: list[tuple[str, Detections]]) -> Detections:
        parts = [(key, dets.to("cpu")) for key, dets in parts if len(dets)]
        if not parts:
            return Detections.empty(frame.height, frame.width, self.names)
        class_ids = []
        for key, dets in parts:
            table = self._remap[key]
            if int(dets.class_ids.min()) < 0 or int(dets.class_ids.max()) >= len(table) or bool(
                (table[dets.class_ids] < 0).any()
            ):
                raise RuntimeError(f"detectors.{key} reported class ids {dets.class_ids.tolist()} outside its names "
                                   f"{self.detectors[key].names}")
            class_ids.append(table[dets.class_ids])
        landmarks = None
        if any(dets.landmarks is not None for _, dets in parts):
            landmarks = torch.cat([
                dets.landmarks if dets.landmarks is not None else torch.full((len(dets), 5, 2), float("nan"))
                for _, dets in parts
            ])
        return Detections(
            masks=torch.cat([dets.masks for _, dets in parts]),
            class_ids=torch.cat(class_ids),
            scores=torch.cat([dets.scores for _, dets in parts]),
            boxes_xyxy=torch.cat([dets.boxes_xyxy for _, dets in parts]),
            names=dict(self.names),
            landmarks=landmarks,
        )

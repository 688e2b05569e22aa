"""A Detector that replays given masks: for tests, and for users with precomputed masks."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from inpaint_anon.detect.base import check_frames
from inpaint_anon.errors import ConfigError, InputError
from inpaint_anon.types import Detections, Frame

MaskSpec = np.ndarray | Sequence[np.ndarray]
"""One bool (H, W) mask, a (K, H, W) stack or a list of (H, W) masks (nonzero = region)."""

FrameScript = Mapping[str, MaskSpec] | Detections
"""What the script gives for one frame: class name -> masks, or ready-made Detections (with track_ids...)."""


def _names_table(names: Sequence[str] | Mapping[int, str]) -> dict[int, str]:
    """id -> name table from a list of names (ids 0..K-1) or a mapping; ConfigError on duplicates or none."""
    table = (
        {int(i): str(n) for i, n in names.items()} if isinstance(names, Mapping) else dict(enumerate(names))
    )
    if isinstance(names, str) or not table:
        raise ConfigError(f"ScriptedDetector names={names!r} must be a non-empty list of class names")
    values = list(table.values())
    duplicates = sorted({n for n in values if values.count(n) > 1})
    if duplicates:
        raise ConfigError(f"ScriptedDetector names has duplicates {duplicates}; give each class name once")
    return table


class ScriptedDetector:
    """Detections from a script ``fn(frame_index) -> {class_name: masks}`` (or ``-> Detections``).

    fn: called once per frame given, with that frame's ``Frame.index``. It returns either a mapping class
        name -> one bool (H, W) mask, a (K, H, W) stack or a list of (H, W) masks, at the frame's resolution;
        or a Detections (masks at frame resolution), which is passed through as is (the way to give track_ids
        or scores).
    names: class names (ids 0..K-1) or an id -> name mapping; every class the script uses must be in it.
    batch_size: frames per call the pipeline should send (any number works).

    ``calls`` records the index of every frame the detector was asked about, in order (tests use it to check
    which frames were detected). Empty masks are dropped; boxes are the masks' tight boxes and scores are 1.
    """

    def __init__(
        self,
        fn: Callable[[int], FrameScript],
        names: Sequence[str] | Mapping[int, str],
        batch_size: int = 4,
    ) -> None:
        if not callable(fn):
            raise ConfigError(
                f"ScriptedDetector fn={fn!r} is not callable; give a function frame index -> masks"
            )
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigError(
                f"ScriptedDetector batch_size={batch_size!r} is out of range; use an integer >= 1"
            )
        self.fn = fn
        self.names = _names_table(names)
        self.batch_size = batch_size
        self.calls: list[int] = []
        self._ids = {name: i for i, name in self.names.items()}

    def __call__(self, frames: Sequence[Frame]) -> list[Detections]:
        """One Detections per frame (RGB uint8 (H, W, 3)): the script's answer for that frame's index."""
        detections = []
        for frame in check_frames(frames):
            self.calls.append(frame.index)
            detections.append(self._detections(frame.index, self.fn(frame.index), frame.height, frame.width))
        return detections

    def _detections(self, index: int, script: FrameScript, height: int, width: int) -> Detections:
        if isinstance(script, Detections):
            if (script.height, script.width) != (height, width):
                raise InputError(
                    f"scripted Detections for frame {index} are {script.height}x{script.width} but the frame "
                    f"is {height}x{width} (HxW); give masks at frame resolution"
                )
            if script.names != self.names:
                raise ConfigError(
                    f"scripted Detections for frame {index} have names {script.names} but the detector's are "
                    f"{self.names}; build them with the detector's names"
                )
            return script
        if not isinstance(script, Mapping):
            raise InputError(
                f"scripted detector fn({index}) returned {type(script).__name__}; return a dict "
                "class name -> masks or a Detections"
            )
        masks: list[np.ndarray] = []
        class_ids: list[int] = []
        for name, spec in script.items():
            if name not in self._ids:
                raise ConfigError(
                    f"scripted detections for frame {index} use class {name!r}, which is not in names "
                    f"{list(self.names.values())}; add it to names"
                )
            for mask in self._class_masks(index, name, spec, height, width):
                if mask.any():
                    masks.append(mask)
                    class_ids.append(self._ids[name])
        if not masks:
            return Detections.empty(height, width, self.names)
        return Detections.from_masks(np.stack(masks), class_ids, self.names)

    @staticmethod
    def _class_masks(index: int, name: str, spec: MaskSpec, height: int, width: int) -> list[np.ndarray]:
        """The masks of one class as bool (H, W) arrays; InputError when they are not at frame resolution."""
        stack = [np.asarray(m) for m in spec] if isinstance(spec, (list, tuple)) else [np.asarray(spec)]
        if len(stack) == 1 and stack[0].ndim == 3:
            stack = list(stack[0])
        for mask in stack:
            if mask.shape != (height, width):
                raise InputError(
                    f"scripted mask for frame {index}, class {name!r} has shape {mask.shape} but the frame "
                    f"is ({height}, {width}); give bool masks at frame resolution"
                )
        return [mask.astype(bool) for mask in stack]

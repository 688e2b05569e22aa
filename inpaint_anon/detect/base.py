"""The Detector protocol: frames in, per-frame Detections (masks at frame resolution) out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from inpaint_anon.errors import InputError
from inpaint_anon.types import Detections, Frame


@runtime_checkable
class Detector(Protocol):
    """Finds the regions to anonymize in decoded frames.

    names: class id -> class name of *every* class this detector may report (not only those of one frame);
        ids are the detector's own. Several detectors (objects, faces, plates) are combined by mapping each
        one's ids into one class namespace, so a detector reports no id outside this table, and every returned
        ``Detections.names`` equals it.
    batch_size: how many frames one call should get (>= 1); the pipeline groups frames accordingly, and a
        call with any other number of frames (also 0) still works.

    Detectors key their work by ``Frame.index``, never by counting calls: with ``detector.stride=k`` the
    pipeline gives them only the frames whose index is a multiple of k.
    """

    names: dict[int, str]
    batch_size: int

    def __call__(self, frames: Sequence[Frame]) -> list[Detections]:
        """Detect regions.

        frames: decoded frames (index, pts, rgb uint8 (H, W, 3)), in increasing index order; sizes may differ
            between frames.
        Returns one Detections per frame, in the same order: masks bool (N, H, W) at that frame's size
        (never the model's input size), class ids keys of ``names``, scores in [0, 1], boxes xyxy in frame
        pixels, all on the CPU; ``track_ids`` None (the tracker sets them).
        """
        ...


def check_frames(frames: Sequence[Frame]) -> list[Frame]:
    """``frames`` as a list, each checked to be a :class:`~inpaint_anon.types.Frame` with an RGB uint8 (H, W, 3)
    image; InputError naming the first bad one (bare arrays included: wrap them as ``Frame(index, None, rgb)``)."""
    if isinstance(frames, (np.ndarray, Frame)):
        raise InputError(
            f"the detector was given one {type(frames).__name__}, not a sequence of frames; pass a list of Frame"
        )
    checked = list(frames)
    for position, frame in enumerate(checked):
        if not isinstance(frame, Frame):
            raise InputError(
                f"item {position} given to the detector is {type(frame).__name__}, not a Frame; wrap images as "
                "inpaint_anon.types.Frame(index, pts, rgb)"
            )
        rgb = frame.rgb
        if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3):
            got = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
            raise InputError(
                f"frame {frame.index} given to the detector is {got}; give RGB uint8 arrays of shape (H, W, 3)"
            )
    return checked

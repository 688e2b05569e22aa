"""The Detector protocol: frames in, per-frame Detections (masks at frame resolution) out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from inpaint_anon.types import Detections


@runtime_checkable
class Detector(Protocol):
    """Finds the regions to anonymize.

    names: class id -> class name for every class this detector may report.
    batch_size: how many frames one call should get (the pipeline groups frames accordingly).
    """

    names: dict[int, str]
    batch_size: int

    def __call__(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detect regions.

        images: RGB uint8 arrays, each (H, W, 3); sizes may differ between calls.
        Returns one Detections per image, masks bool (N, H, W) at that image's size, on the CPU.
        """
        ...

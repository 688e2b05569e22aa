"""The Inpainter interface shared by the fast anonymizers and the generative engine."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from inpaint_anon.types import Detections


@dataclass
class InpaintBatch:
    """Consecutive frames and their regions, handed to an Inpainter in one call.

    images: uint8 Tensor (B, 3, H, W), RGB, on the inpainter's device.
    detections: B Detections; ``masks`` are the *fill regions* (already dilated by the compositor, so
        they cover every pixel the compositor will take from the fill), on the same device.
    frame_indices: B frame indices (for keyed or seeded per-frame behaviour).
    """

    images: torch.Tensor
    detections: list[Detections]
    frame_indices: list[int]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"InpaintBatch.images must be uint8 (B, 3, H, W), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if not (len(self.detections) == len(self.frame_indices) == self.images.shape[0]):
            raise ValueError("InpaintBatch: images, detections and frame_indices must have the same length")


@dataclass
class Fallback:
    """A region the inpainter could not fill as asked and filled with a fail-closed fallback instead.

    frame_index, region: which region (index into that frame's Detections).
    class_name: the region's class.
    used: what filled it instead (``"blur"``, ``"solid"``).
    reason: one line, e.g. ``"CUDA out of memory"`` or ``"NaN in decoded crop"``.
    """

    frame_index: int
    region: int
    class_name: str
    used: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class InpaintOutput:
    """images: uint8 Tensor (B, 3, H, W), the frames with every region filled; the compositor takes only
    the pixels under each frame's alpha from it. fallbacks: regions filled by a fallback, if any."""

    images: torch.Tensor
    fallbacks: list[Fallback] = field(default_factory=list)


class Inpainter(ABC):
    """Fills masked regions of frames.

    Subclasses implement :meth:`__call__`. Class attributes tell the pipeline how to treat them:
    ``feather``: False when the fill must be pasted with hard edges (e.g. a reversible scramble, whose
    pixels must be restorable exactly); the compositor then dilates but does not feather.
    ``name``: short name used in logs and run.json.
    ``lossless``: True when the output must be stored losslessly for the fill to keep its promise (a
    reversible scramble); the command line then writes FFV1 in .mkv and refuses a lossy output unless told.
    """

    name: str = "inpainter"
    feather: bool = True
    lossless: bool = False

    def run_record(self) -> dict[str, Any]:
        """Public facts about this inpainter for run.json (merged into its top level); never secrets. Default {}."""
        return {}

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def stages(self) -> tuple[Callable[[Any], Any], ...]:
        """This inpainter's work as consecutive steps the pipeline may run in overlapping threads.

        The first step takes an InpaintBatch, each next one what the previous returned, and the last returns
        an InpaintOutput; running them in order must equal ``self(batch)``. Default: one step, ``self``.
        """
        return (self,)

    @abstractmethod
    def __call__(self, batch: InpaintBatch) -> InpaintOutput:
        """Fill every region of every frame of ``batch``; must never leave a region's pixels as they were."""

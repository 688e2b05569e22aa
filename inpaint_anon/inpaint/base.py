"""The Inpainter interface shared by the fast anonymizers and the generative engine."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from inpaint_anon.timing import Timings
from inpaint_anon.types import Detections


@dataclass
class InpaintBatch:
    """Consecutive frames and their regions, handed to an Inpainter in one call.

    images: uint8 Tensor (B, 3, H, W), RGB, on the inpainter's device.
    detections: B Detections; ``masks`` are the *fill regions* (already dilated by the compositor, so
        they cover every pixel the compositor will take from the fill), on the same device.
    frame_indices: B frame indices (for keyed or seeded per-frame behaviour).
    timings: where the inpainter adds the seconds of its own sub-steps (e.g. ``"unet"``); the pipeline hands
        every batch of a run the same Timings and reports its keys as ``inpaint.<key>``.
    """

    images: torch.Tensor
    detections: list[Detections]
    frame_indices: list[int]
    timings: Timings = field(default_factory=Timings)

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
class RegionFill:
    """The pixels an inpainter provides for one region of one frame of its batch.

    frame: index of the frame in the batch (0..B-1).
    region: index of the region in that frame's Detections, or -1 for a fill covering several regions
        (e.g. a scramble of the union of a frame's regions).
    window: (x0, y0, x1, y1) in frame pixels, exclusive ends, inside the frame; h = y1 - y0, w = x1 - x0.
    rgb: uint8 Tensor (3, h, w), RGB; only its pixels under ``mask`` are used.
    mask: bool Tensor (h, w), the pixels of the window this fill provides.

    The compositor pastes fills in list order: where two fills of a frame overlap, the later one wins.
    """

    frame: int
    region: int
    window: tuple[int, int, int, int]
    rgb: torch.Tensor
    mask: torch.Tensor

    def __post_init__(self) -> None:
        x0, y0, x1, y1 = self.window
        size = (y1 - y0, x1 - x0)
        if not (0 <= x0 < x1 and 0 <= y0 < y1):
            raise ValueError(f"RegionFill.window must be (x0, y0, x1, y1) with x0 < x1, y0 < y1, got {self.window}")
        if self.rgb.dtype != torch.uint8 or tuple(self.rgb.shape) != (3, *size):
            raise ValueError(f"RegionFill.rgb must be uint8 (3, {size[0]}, {size[1]}) for window {self.window}, "
                             f"got {self.rgb.dtype} {tuple(self.rgb.shape)}")
        if self.mask.dtype != torch.bool or tuple(self.mask.shape) != size:
            raise ValueError(f"RegionFill.mask must be bool {size} for window {self.window}, "
                             f"got {self.mask.dtype} {tuple(self.mask.shape)}")


@dataclass
class InpaintOutput:
    """What an inpainter returns for a batch: its fills, and the regions it filled by a fallback.

    fills: the pixels of every region, in paste order (see :class:`RegionFill`); the compositor pastes them
        into the frames, once, under each frame's alpha. A fill must cover every pixel of its region's fill
        mask that the inpainter means to change; a pixel no fill covers keeps its original value.
    fallbacks: regions filled by a fallback, if any.
    """

    fills: list[RegionFill] = field(default_factory=list)
    fallbacks: list[Fallback] = field(default_factory=list)


class Inpainter(ABC):
    """Fills masked regions of frames.

    Subclasses implement :meth:`__call__`. Class attributes tell the pipeline how to treat them:
    ``feather``: False when the fill must be pasted with hard edges (e.g. a reversible scramble, whose
    pixels must be restorable exactly); the compositor then dilates but does not feather.
    ``name``: short name used in logs and run.json.
    ``lossless``: True when the output must be stored losslessly for the fill to keep its promise (a
    reversible scramble); the command line then writes FFV1 in .mkv and refuses a lossy output unless told.
    ``skip_classes``: class names detected (and recorded) but left as they are (``anonymize.<class>=none``): the
    pipeline gives the inpainter no region of these classes, and the compositor neither pastes nor guards them.
    """

    name: str = "inpainter"
    feather: bool = True
    lossless: bool = False
    skip_classes: frozenset[str] = frozenset()

    def run_record(self) -> dict[str, Any]:
        """Public facts about this inpainter for run.json (merged into its top level); never secrets. Default {}."""
        return {}

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def start_video(self) -> None:
        """Called by the pipeline once per video, before its first frame. Default: nothing. An inpainter whose
        fills must differ between videos (a scramble's keystream) refuses a second video here (ConfigError)."""
        return None

    def stages(self) -> tuple[Callable[[Any], Any], ...]:
        """This inpainter's work as consecutive steps the pipeline may run in overlapping threads.

        The first step takes an InpaintBatch, each next one what the previous returned, and the last returns
        an InpaintOutput; running them in order must equal ``self(batch)``. Default: one step, ``self``.
        """
        return (self,)

    @abstractmethod
    def __call__(self, batch: InpaintBatch) -> InpaintOutput:
        """The fills of every region of every frame of ``batch``; must never leave a region's pixels as they were."""

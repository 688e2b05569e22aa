"""Typed data passed between pipeline stages.

Shapes use ``N`` regions, ``H x W`` frame pixels. Images are RGB ``uint8``. Masks are always at frame
resolution (never at the detector's input size), so they line up with frame pixels for compositing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class VideoMeta:
    """What is known about a source before decoding it.

    width, height: display size in pixels, after rotation is applied (frames are delivered upright).
    fps: average frame rate (frames per second); the real timing of each frame is its ``pts``.
    time_base: seconds per ``pts`` unit.
    n_frames: frame count announced by the container, or None when it does not say.
    has_audio: True when the source has at least one audio stream (copied unchanged to the output).
    rotation: clockwise degrees (0, 90, 180, 270) the source asked players to rotate by; already applied.
    duration: seconds, or None when unknown.
    codec: name of the source video codec (``"h264"``, ``"png"`` for an image...).
    is_image: True for a single still image (jpg/png...).
    """

    width: int
    height: int
    fps: Fraction
    time_base: Fraction
    n_frames: int | None = None
    has_audio: bool = False
    rotation: int = 0
    duration: float | None = None
    codec: str = ""
    is_image: bool = False


@dataclass
class Frame:
    """One decoded frame.

    index: 0-based position in decode order.
    pts: presentation timestamp in units of ``VideoMeta.time_base`` (None for images).
    rgb: uint8 array of shape (H, W, 3), RGB, C-contiguous.
    """

    index: int
    pts: int | None
    rgb: np.ndarray

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


def _as_tensor(x: Any, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype)


@dataclass
class Detections:
    """Regions found in one frame, in the style of ultralytics ``Results``: typed views over packed tensors.

    masks: bool Tensor (N, H, W) at frame resolution.
    class_ids: int64 Tensor (N,), keys of ``names``.
    scores: float32 Tensor (N,), confidence in [0, 1].
    boxes_xyxy: float32 Tensor (N, 4), pixel corners (x1, y1, x2, y2) in frame coordinates.
    track_ids: int64 Tensor (N,) of stable ids across frames, or None before tracking.
    names: class id -> class name (the detector's full table, not only the classes present).
    landmarks: float32 Tensor (N, 5, 2) of pixel (x, y) in frame coordinates, or None when the detector gives
        none: eye on the image's left, eye on the image's right, nose tip, mouth corner on the image's left,
        mouth corner on the image's right (face detectors). May lie outside the frame for a face at its border.
    """

    masks: torch.Tensor
    class_ids: torch.Tensor
    scores: torch.Tensor
    boxes_xyxy: torch.Tensor
    names: dict[int, str]
    track_ids: torch.Tensor | None = None
    landmarks: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.masks = _as_tensor(self.masks, torch.bool)
        self.class_ids = _as_tensor(self.class_ids, torch.int64).reshape(-1)
        self.scores = _as_tensor(self.scores, torch.float32).reshape(-1)
        self.boxes_xyxy = _as_tensor(self.boxes_xyxy, torch.float32).reshape(-1, 4)
        if self.track_ids is not None:
            self.track_ids = _as_tensor(self.track_ids, torch.int64).reshape(-1)
        if self.landmarks is not None:
            self.landmarks = _as_tensor(self.landmarks, torch.float32)
            if self.landmarks.ndim != 3 or tuple(self.landmarks.shape[1:]) != (5, 2):
                raise ValueError(
                    f"Detections.landmarks must be (N, 5, 2) pixel (x, y), got shape {tuple(self.landmarks.shape)}"
                )
        n = self.masks.shape[0]
        if self.masks.ndim != 3:
            raise ValueError(f"Detections.masks must be (N, H, W), got shape {tuple(self.masks.shape)}")
        lengths = {len(self.class_ids), len(self.scores), len(self.boxes_xyxy)}
        if self.track_ids is not None:
            lengths.add(len(self.track_ids))
        if self.landmarks is not None:
            lengths.add(len(self.landmarks))
        if lengths != {n}:
            raise ValueError(f"Detections fields disagree on N: masks has {n}, others have {sorted(lengths)}")

    @classmethod
    def empty(cls, height: int, width: int, names: dict[int, str]) -> Detections:
        """No regions in a frame of ``height`` x ``width`` pixels."""
        return cls(
            masks=torch.zeros((0, height, width), dtype=torch.bool),
            class_ids=torch.zeros(0, dtype=torch.int64),
            scores=torch.zeros(0),
            boxes_xyxy=torch.zeros((0, 4)),
            names=dict(names),
        )

    @classmethod
    def from_masks(
        cls,
        masks: torch.Tensor | np.ndarray,
        class_ids: Any,
        names: dict[int, str],
        scores: Any | None = None,
        track_ids: Any | None = None,
        landmarks: Any | None = None,
    ) -> Detections:
        """Build detections from masks alone; boxes are the masks' tight bounding boxes, scores default to 1;
        ``landmarks`` (N, 5, 2) pixel (x, y), when given, are kept as they are."""
        masks = _as_tensor(masks, torch.bool)
        n = masks.shape[0]
        return cls(
            masks=masks,
            class_ids=class_ids,
            scores=torch.ones(n) if scores is None else scores,
            boxes_xyxy=masks_to_boxes(masks),
            names=dict(names),
            track_ids=track_ids,
            landmarks=landmarks,
        )

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def __getitem__(self, index: Any) -> Detections:
        """Select regions by int, slice, index tensor or bool tensor; always returns Detections."""
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        return Detections(
            masks=self.masks[index],
            class_ids=self.class_ids[index],
            scores=self.scores[index],
            boxes_xyxy=self.boxes_xyxy[index],
            names=self.names,
            track_ids=None if self.track_ids is None else self.track_ids[index],
            landmarks=None if self.landmarks is None else self.landmarks[index],
        )

    @property
    def height(self) -> int:
        return int(self.masks.shape[1])

    @property
    def width(self) -> int:
        return int(self.masks.shape[2])

    @property
    def device(self) -> torch.device:
        return self.masks.device

    @property
    def class_names(self) -> list[str]:
        """Class name of each region, in order."""
        return [self.names[int(c)] for c in self.class_ids.tolist()]

    def to(self, device: torch.device | str) -> Detections:
        return replace(
            self,
            masks=self.masks.to(device),
            class_ids=self.class_ids.to(device),
            scores=self.scores.to(device),
            boxes_xyxy=self.boxes_xyxy.to(device),
            track_ids=None if self.track_ids is None else self.track_ids.to(device),
            landmarks=None if self.landmarks is None else self.landmarks.to(device),
        )

    def cpu(self) -> Detections:
        return self.to("cpu")

    def by_class(self, name: str) -> Detections:
        """The regions of one class name (possibly empty)."""
        ids = [i for i, n in self.names.items() if n == name]
        keep = torch.isin(self.class_ids, torch.tensor(ids, dtype=torch.int64, device=self.class_ids.device))
        return self[keep]

    def union_mask(self) -> torch.Tensor:
        """bool Tensor (H, W): pixels covered by any region."""
        if len(self) == 0:
            return torch.zeros((self.height, self.width), dtype=torch.bool, device=self.device)
        return self.masks.any(dim=0)


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight xyxy boxes, float32 (N, 4) with exclusive right/bottom edges, of bool masks (N, H, W).

    Empty masks give all-zero boxes."""
    n = masks.shape[0]
    boxes = torch.zeros((n, 4), dtype=torch.float32, device=masks.device)
    if n == 0:
        return boxes
    # uint8 max, not bool any: the same result, and about 100x faster on the CPU for frame-size masks
    as_bytes = masks.to(torch.bool).view(torch.uint8)
    rows = as_bytes.amax(dim=2).bool()  # (N, H)
    cols = as_bytes.amax(dim=1).bool()  # (N, W)
    nonempty = rows.any(dim=1)
    h, w = masks.shape[1:]
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    y1 = torch.where(rows, ar_h, h).amin(dim=1)
    y2 = torch.where(rows, ar_h, -1).amax(dim=1) + 1
    x1 = torch.where(cols, ar_w, w).amin(dim=1)
    x2 = torch.where(cols, ar_w, -1).amax(dim=1) + 1
    boxes[nonempty] = torch.stack([x1, y1, x2, y2], dim=1)[nonempty].float()
    return boxes


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight box ``(x1, y1, x2, y2)`` (exclusive right/bottom edges, pixels) of a bool (H, W) numpy mask; None if
    empty: :func:`masks_to_boxes` of that one mask, as ints (for code that works on one mask at a time)."""
    mask = np.ascontiguousarray(mask, dtype=bool)
    if mask.size == 0:
        return None
    x1, y1, x2, y2 = (int(v) for v in masks_to_boxes(torch.from_numpy(mask)[None])[0].tolist())
    return None if x2 <= x1 else (x1, y1, x2, y2)


def cover_boxes(boxes: torch.Tensor, tight: torch.Tensor) -> torch.Tensor:
    """float32 (N, 4): each of ``boxes`` grown to contain the matching ``tight`` box (xyxy).

    Where a box is unusable (NaN/inf, or no area) the tight box is used as it is; where a tight box is
    empty (all zeros: an empty mask) it stays empty. Lets a smoothed (tracked) box steady a region's placement
    while it still always covers the region's pixels.
    """
    boxes = boxes.to(device=tight.device, dtype=torch.float32)
    usable = torch.isfinite(boxes).all(dim=1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    nonempty = (tight[:, 2] > tight[:, 0]) & (tight[:, 3] > tight[:, 1])
    grown = torch.cat([torch.minimum(boxes[:, :2], tight[:, :2]), torch.maximum(boxes[:, 2:], tight[:, 2:])], dim=1)
    return torch.where((usable & nonempty)[:, None], grown, tight)


@dataclass
class RunResult:
    """What a finished run produced.

    out_path: the output file (already renamed to its final name).
    meta: the source's VideoMeta.
    frames_in, frames_out: frames decoded and frames written (equal on success, unless a realtime run dropped
        frames before detection: ``realtime['dropped']``).
    timings: stage name -> seconds spent in that stage (stages overlap, so they may add up to more
        than ``wall_seconds``).
    wall_seconds: elapsed time of the whole run.
    metrics: class name -> metric name -> value (filled by the evaluation module).
    events: notable things that happened (fallbacks, padding, warnings) as plain dicts.
    realtime: a realtime run's stats (:meth:`inpaint_anon.realtime.RealtimeStats.summary`), else None.
    whitelist: with a whitelist, per face track id (str) -> {"person", "score", "frames", "shown"}
        (:attr:`inpaint_anon.whitelist.TrackMatcher.record`: names and scores, never embeddings), else None.
    regions: class name -> regions detected in the run: distinct track ids when tracked, else one per region
        per frame (an image's count is its regions).
    """

    out_path: Path
    meta: VideoMeta
    frames_in: int = 0
    frames_out: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    realtime: dict[str, Any] | None = None
    whitelist: dict[str, Any] | None = None
    regions: dict[str, int] = field(default_factory=dict)

    @property
    def fps_processing(self) -> float:
        """Frames written per wall-clock second."""
        return self.frames_out / self.wall_seconds if self.wall_seconds > 0 else 0.0


@dataclass
class PromptEmbeds:
    """CLIP text embeddings of the class prompts, computed once per run.

    cond: class name -> float Tensor (77, D), the embedding of that class's prompt (D = 768 for SD-1.5).
    uncond: float Tensor (77, D), the negative prompt's embedding (classifier-free guidance).
    default: float Tensor (77, D) used for a class with no prompt of its own.
    """

    cond: dict[str, torch.Tensor]
    uncond: torch.Tensor
    default: torch.Tensor

    def for_class(self, name: str) -> torch.Tensor:
        """The (77, D) embedding for regions of class ``name``."""
        return self.cond.get(name, self.default)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> PromptEmbeds:
        return PromptEmbeds(
            cond={k: v.to(device=device, dtype=dtype) for k, v in self.cond.items()},
            uncond=self.uncond.to(device=device, dtype=dtype),
            default=self.default.to(device=device, dtype=dtype),
        )


@dataclass
class SDComponents:
    """The parts of a Stable Diffusion 1.5 (inpainting) model, as diffusers objects.

    vae: ``AutoencoderKL``; unet: ``UNet2DConditionModel`` with 9 input channels (inpainting U-Net: noisy
    latents + mask + masked-image latents) or 4 (plain SD-1.5); scheduler: any diffusers scheduler;
    text_encoder: ``CLIPTextModel`` and tokenizer: ``CLIPTokenizer`` (None when prompts are pre-encoded).
    """

    vae: Any
    unet: Any
    scheduler: Any
    text_encoder: Any | None = None
    tokenizer: Any | None = None

    @classmethod
    def from_pipeline(cls, pipe: Any) -> SDComponents:
        """The components of a diffusers ``StableDiffusionInpaintPipeline`` (or any SD pipeline)."""
        return cls(vae=pipe.vae, unet=pipe.unet, scheduler=pipe.scheduler, text_encoder=pipe.text_encoder,
                   tokenizer=pipe.tokenizer)

    def to_pipeline(self, scheduler: Any | None = None) -> Any:
        """A diffusers ``StableDiffusionInpaintPipeline`` sharing these components (no safety checker), e.g. to
        ``save_pretrained`` them or to compare with diffusers; ``scheduler`` replaces the components' one."""
        from diffusers import StableDiffusionInpaintPipeline

        pipe = StableDiffusionInpaintPipeline(
            vae=self.vae, unet=self.unet, text_encoder=self.text_encoder, tokenizer=self.tokenizer,
            scheduler=self.scheduler if scheduler is None else scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

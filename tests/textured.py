"""Test media for privacy checks: lossless clips whose objects are textured, and the expected fallback pixels.

Random noise under the person and car masks (:func:`tests.clips.object_masks`) makes "changed" meaningful
(a flat object may blur to itself); FFV1 in and out makes every pixel comparable exactly.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from inpaint_anon.composite import Compositor
from inpaint_anon.detect.scripted import ScriptedDetector
from inpaint_anon.inpaint.base import InpaintBatch
from inpaint_anon.inpaint.fast import BlurInpainter
from inpaint_anon.pipeline import AnonymizePipeline
from inpaint_anon.types import Detections, RunResult
from inpaint_anon.video import VideoReader, VideoSettings
from tests.clips import frame_image, object_masks

SIZE = (96, 72)
N = 6
NAMES = ["person", "car"]


def textured_frame(index: int) -> np.ndarray:
    """uint8 (H, W, 3): the synthetic scene with random noise under the person and the car."""
    rgb = frame_image(index, SIZE, N)
    noise = np.random.default_rng(index).integers(0, 256, rgb.shape, dtype=np.uint8)
    for mask in object_masks(index, SIZE, N).values():
        rgb[mask] = noise[mask]
    return rgb


def write_lossless(path: Path, frames: list[np.ndarray]) -> Path:
    """``frames`` (uint8 (H, W, 3), all one size) as FFV1 RGB in ``path`` (.mkv), 24 fps."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=Fraction(24))
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "bgr0"
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def textured_clip(path: Path) -> Path:
    """N textured frames, lossless (FFV1 in .mkv: decodes to exactly :func:`textured_frame`)."""
    return write_lossless(path, [textured_frame(i) for i in range(N)])


def run_lossless(pipe: AnonymizePipeline, source: Path, output: Path) -> RunResult:
    """``pipe(source, output)`` with a lossless (FFV1, exact RGB) encoder, so every output pixel can be compared."""
    return pipe(source, output, video=VideoSettings(codec="ffv1"))


def truth_detector() -> ScriptedDetector:
    """Detects exactly the true masks of :func:`tests.clips.object_masks`."""
    return ScriptedDetector(lambda i: object_masks(i, SIZE, N), names=NAMES)


def truth(index: int) -> Detections:
    masks = torch.from_numpy(np.stack(list(object_masks(index, SIZE, N).values())))
    return Detections.from_masks(masks, [0, 1], dict(enumerate(NAMES)))


def read_all(path: Path) -> list[np.ndarray]:
    with VideoReader(path) as reader:
        return [f.rgb for f in reader]


def fallback_frame(rgb: np.ndarray, dets: Detections, feather: bool = True) -> np.ndarray:
    """What the blur fallback, composited by the default Compositor, makes of frame ``rgb``."""
    compositor = Compositor()
    images = torch.from_numpy(rgb).permute(2, 0, 1)[None].contiguous()
    fill_regions, alpha = compositor.prepare(dets, feather=feather)
    fills = BlurInpainter(device="cpu")(InpaintBatch(images, [fill_regions], [0])).fills
    return compositor.compose(images, fills, alpha[None])[0].permute(1, 2, 0).numpy()


def assert_every_region_pixel_is(expected: np.ndarray, output: np.ndarray, dets: Detections, frame: int) -> None:
    """Every pixel of every region of ``dets`` in ``output`` is within 1 of ``expected`` (float rounding)."""
    for name, mask in zip(dets.class_names, dets.masks.numpy()):
        diff = np.abs(output.astype(int) - expected.astype(int))[mask].max(axis=-1)
        assert (diff <= 1).all(), f"frame {frame} {name}: {int((diff > 1).sum())} of {mask.sum()} pixels not obscured"



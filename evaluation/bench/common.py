"""Shared parts of the benchmark scripts: generated clips, a detector with real cost, timing, reporting."""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from inpaint_anon.composite import Compositor
from inpaint_anon.detect.scripted import ScriptedDetector
from inpaint_anon.inpaint.base import Inpainter
from inpaint_anon.pipeline import AnonymizePipeline
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
    """Write the benchmark's JSON: rows, machine, peak memory, versions."""
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
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


def parse_size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height

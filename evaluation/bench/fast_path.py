"""Fast-path benchmark: end-to-end processing fps and seconds per stage on generated street clips.

Run from the repository root:

    python -m evaluation.bench.fast_path                       # 720p, blur, 120 frames
    python -m evaluation.bench.fast_path --sizes 1280x720 1920x1080 --inpainters blur pixelate

The detector runs the real YOLOv8n-seg architecture (random weights built from its yaml, so the
compute is real) at ``--imgsz``, but returns the clip's ground-truth masks: random weights find
nothing, and anonymizing nothing would flatter the numbers. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inpaint_anon.composite import Compositor
from inpaint_anon.detect.scripted import ScriptedDetector
from inpaint_anon.inpaint import make_inpainter
from inpaint_anon.pipeline import AnonymizePipeline
from tests.clips import make_clip, object_masks

STAGES = ("decode", "detect", "to_device", "composite", "inpaint", "encode")


class ArchitectureTimedDetector(ScriptedDetector):
    """Runs a YOLOv8-seg model on every frame for its cost, then reports the scripted (true) masks."""

    def __init__(self, fn: Any, names: list[str], imgsz: int, batch_size: int, device: str) -> None:
        from inpaint_anon.detect.yolo_seg import YoloSegDetector

        super().__init__(fn, names=names, batch_size=batch_size)
        self.model = YoloSegDetector(weights="yolov8n-seg.yaml", classes=None, imgsz=imgsz,
                                     batch_size=batch_size, device=device)

    def __call__(self, images):  # type: ignore[no-untyped-def, override]
        self.model(images)
        return super().__call__(images)


def bench_one(size: tuple[int, int], n_frames: int, inpainter: str, preset: str, imgsz: int, device: str,
              workdir: Path) -> dict[str, Any]:
    clip = workdir / f"clip_{size[0]}x{size[1]}_{n_frames}.mp4"
    if not clip.exists():
        make_clip(clip, n_frames=n_frames, size=size, fps=25, audio=True)
    detector = ArchitectureTimedDetector(lambda i: object_masks(i, size, n_frames), ["person", "car"],
                                         imgsz=imgsz, batch_size=4, device=device)
    pipe = AnonymizePipeline(detector, make_inpainter(inpainter, device=device), Compositor(), progress=False)
    out = workdir / f"out_{size[0]}x{size[1]}_{inpainter}.mp4"
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    result = pipe(clip, out, preset=preset)
    wall = time.perf_counter() - start
    return {
        "size": f"{size[0]}x{size[1]}",
        "inpainter": inpainter,
        "preset": preset,
        "frames": result.frames_out,
        "wall_s": round(wall, 3),
        "fps": round(result.frames_out / wall, 2),
        "ms_per_frame": {k: round(1000 * result.timings.get(k, 0.0) / result.frames_out, 2) for k in STAGES},
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    head = ["size", "inpainter", "preset", "frames", "fps"] + [f"{s} ms/f" for s in STAGES]
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for r in rows:
        print(" | ".join(str(x) for x in [r["size"], r["inpainter"], r["preset"], r["frames"], r["fps"],
                                          *(r["ms_per_frame"][s] for s in STAGES)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["1280x720"])
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--inpainters", nargs="+", default=["blur"])
    parser.add_argument("--preset", default="medium", help="x264 preset (the run config's default: medium)")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("experiments/bench/fast_path.json"))
    args = parser.parse_args()
    os.environ.setdefault("YOLO_OFFLINE", "1")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size_text in args.sizes:
            size = tuple(int(v) for v in size_text.lower().split("x"))
            for name in args.inpainters:
                rows.append(bench_one(size, args.frames, name, args.preset, args.imgsz, args.device, Path(tmp)))
    print_table(rows)
    report = {
        "benchmark": "fast_path",
        "rows": rows,
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                    "platform": platform.platform()},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

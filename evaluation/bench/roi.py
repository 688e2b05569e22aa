"""ROI benchmark (issue 11, part 1): ms/frame of the prepare, inpaint and compose stages against the masked area.

Run from the repository root:

    python -m evaluation.bench.roi                    # 720p and 1080p, areas 0 / 1 / 10 / 50 %, CPU
    python -m evaluation.bench.roi --full             # and 4K
    python -m evaluation.bench.roi --device cuda --methods blur

Each row times the pipeline's own steps on one batch of ``--batch`` frames (random texture, four square regions
on a 2 x 2 grid whose total area is the given share of the frame): ``AnonymizePipeline._prepare`` (stack the
frames with regions, masks -> fill regions and window alphas), the inpainter, and ``_composite`` (the paste
into the frames and the unchanged-region guard). The peer, in the same run, is the full-frame formula this
replaced ("full" rows): every frame of the batch stacked, dense float (B, H, W) alphas, whole-frame float
planes for blur and pixelate, a copy of the batch for the paste and one more to hand back HWC frames. The 0 %
rows are the other peer: a frame without regions costs nothing beyond decode and encode. Times are the best
of ``--repeats`` runs (the least disturbed by other work on a shared machine). Prints a markdown table and
writes JSON (atomically).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import roi_align

from evaluation.bench.common import parse_size, print_table
from inpaint_anon.atomic import write_atomic
from inpaint_anon.composite import Compositor
from inpaint_anon.device import resolve_device
from inpaint_anon.inpaint import InpaintBatch, fast, make_inpainter
from inpaint_anon.inpaint.base import Inpainter
from inpaint_anon.pipeline import AnonymizePipeline
from inpaint_anon.timing import Timings
from inpaint_anon.types import Detections, Frame

COLUMNS = ["size", "device", "method", "path", "area_pct", "frames"]
NAMES = {0: "face"}
KEY = "0123456789abcdef" * 4


class _NoDetector:
    """The pipeline needs a detector object; these benchmarks hand it detections directly."""

    names = NAMES
    batch_size = 1

    def __call__(self, frames: list[Frame]) -> list[Detections]:
        raise AssertionError("not called")


def frames_and_regions(size: tuple[int, int], area: float, n: int) -> list[tuple[Frame, Detections]]:
    """``n`` random-texture frames of ``size`` (w, h), each with four squares on a 2 x 2 grid covering ``area``
    (0..0.5) of the frame in total (none when 0)."""
    w, h = size
    gen = np.random.default_rng(0)
    pairs = []
    side = int(math.sqrt(area * w * h / 4))
    for index in range(n):
        rgb = gen.integers(0, 256, (h, w, 3), dtype=np.uint8)
        masks = torch.zeros((4 if side else 0, h, w), dtype=torch.bool)
        for i in range(len(masks)):
            cx, cy = (w // 4) * (1 + 2 * (i % 2)), (h // 4) * (1 + 2 * (i // 2))
            masks[i, cy - side // 2 : cy - side // 2 + side, cx - side // 2 : cx - side // 2 + side] = True
        class_ids = torch.zeros(len(masks), dtype=torch.int64)
        pairs.append((Frame(index, index, rgb), Detections.from_masks(masks, class_ids, NAMES)))
    return pairs


def full_frame_canonical_crops(images: torch.Tensor, frame: torch.Tensor, rois: torch.Tensor,
                                size: tuple[int, int]) -> torch.Tensor:
    """The full-frame formula: one float32 (B, 4, H, W) copy of the batch, then roi_align."""
    b, _, h, w = images.shape
    planes = torch.empty((b, 4, h, w), dtype=torch.float32, device=images.device)
    planes[:, :3] = images
    planes[:, 3] = 1.0
    indexed = torch.cat([frame[:, None].to(torch.float32), rois], dim=1)
    return roi_align(planes, indexed, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)


@contextmanager
def _full_frame_crops() -> Iterator[None]:
    windowed = fast._canonical_crops
    fast._canonical_crops = full_frame_canonical_crops
    try:
        yield
    finally:
        fast._canonical_crops = windowed


def _timed(stage: Callable[[], Any], timings: dict[str, list[float]], name: str, sync: Callable[[], None]) -> Any:
    start = time.perf_counter()
    result = stage()
    sync()
    timings.setdefault(name, []).append(time.perf_counter() - start)
    return result


def roi_path(pipe: AnonymizePipeline, pairs: list[tuple[Frame, Detections]], timings: dict[str, list[float]],
             sync: Callable[[], None]) -> None:
    """The pipeline's own prepare / inpaint / composite steps."""
    work = _timed(lambda: pipe._prepare(pairs, Timings()), timings, "prepare", sync)
    _timed(lambda: pipe._run_step(pipe.inpainter.stages()[-1], True, work, []), timings, "inpaint", sync)
    _timed(lambda: pipe._composite(work, []), timings, "compose", sync)


def full_frame_path(pipe: AnonymizePipeline, pairs: list[tuple[Frame, Detections]],
                    timings: dict[str, list[float]], sync: Callable[[], None]) -> None:
    """The full-frame formula of the same steps (what the pipeline did before the ROI path)."""
    inpainter, compositor = pipe.inpainter, pipe.compositor
    if not any(len(d) for _, d in pairs):
        for stage in ("prepare", "inpaint", "compose"):
            timings.setdefault(stage, []).append(0.0)
        return

    def prepare() -> tuple[InpaintBatch, torch.Tensor, list[Detections]]:
        images = torch.from_numpy(np.stack([f.rgb for f, _ in pairs])).permute(0, 3, 1, 2).to(inpainter.device)
        regions = [d.to(inpainter.device) for _, d in pairs]
        fills, alphas = zip(*(compositor.prepare(d, feather=inpainter.feather) for d in regions))
        return InpaintBatch(images, list(fills), [f.index for f, _ in pairs]), torch.stack(alphas), regions

    batch, alphas, regions = _timed(prepare, timings, "prepare", sync)

    def inpaint() -> Any:
        with _full_frame_crops():
            return inpainter(batch)

    output = _timed(inpaint, timings, "inpaint", sync)

    def compose() -> list[np.ndarray]:
        out = compositor.compose(batch.images, output.fills, alphas)
        compositor.unchanged(batch.images, out, regions)
        return [np.ascontiguousarray(image) for image in out.permute(0, 2, 3, 1).cpu().numpy()]

    _timed(compose, timings, "compose", sync)


def make_method(name: str, device: str) -> Inpainter:
    return make_inpainter(name, device=device, **({"key": KEY} if name == "scramble" else {}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="*", default=["1280x720", "1920x1080"], help="frame sizes (WxH)")
    parser.add_argument("--full", action="store_true", help="also 3840x2160")
    parser.add_argument("--areas", nargs="*", type=float, default=[0.0, 0.01, 0.10, 0.50],
                        help="masked share of the frame (0..0.5)")
    parser.add_argument("--methods", nargs="*", default=["blur", "pixelate", "solid", "scramble"])
    parser.add_argument("--batch", type=int, default=4, help="frames per batch (the pipeline's batch_frames)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="auto | cpu | cuda[:N]")
    parser.add_argument("--out", type=Path, default=Path("experiments/bench/roi.json"))
    args = parser.parse_args()

    device = str(resolve_device(args.device))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sizes = [parse_size(s) for s in args.sizes] + ([(3840, 2160)] if args.full else [])
    rows = []
    for size in sizes:
        for area in args.areas:
            pairs = frames_and_regions(size, area, args.batch)
            for method in args.methods:
                pipe = AnonymizePipeline(_NoDetector(), make_method(method, device), Compositor(), progress=False)
                for path, run in (("roi", roi_path), ("full", full_frame_path)):
                    timings: dict[str, list[float]] = {}
                    run(pipe, pairs, {}, sync)  # warm-up
                    for _ in range(args.repeats):
                        run(pipe, pairs, timings, sync)
                    ms = {stage: round(1000 * min(t) / args.batch, 2) for stage, t in timings.items()}
                    ms["total"] = round(sum(ms.values()), 2)
                    rows.append({"size": f"{size[0]}x{size[1]}", "device": device, "method": method, "path": path,
                                 "area_pct": round(100 * area, 1), "frames": args.batch, "ms_per_frame": ms})
                    print(f"done: {size[0]}x{size[1]} {area:.0%} {method} {path} {ms}", flush=True)
    print_table(rows, COLUMNS)
    report = {"benchmark": "roi", "rows": rows, "torch_threads": torch.get_num_threads(),
              "versions": {"torch": torch.__version__}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

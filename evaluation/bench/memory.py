"""Memory over a long video: resident set size (RSS) at start, every ``--every`` frames, and at the end.

Run from the repository root:

    python -m evaluation.bench.memory                                   # 10 000 frames, 320x240, blur
    python -m evaluation.bench.memory --frames 100000 --size 640x360 --every 5000

The clip is generated (``common.generated_clip``: moving person and car, AAC audio) and run through the fast
path: the real YOLOv8n-seg architecture at ``--imgsz`` (random weights; it reports the clip's true objects,
see ``common.ArchitectureTimedDetector``), the default tracker, the chosen fast inpainter, libx264. The
pipeline streams with bounded queues, so RSS should stay flat however long the video is: after a warm-up
(``--warmup`` frames: allocator pools, first-call caches) the growth to the last sample taken while running
and the least-squares slope in MiB per 1000 frames are reported; ``end`` is measured after the run returned.

RSS comes from ``/proc/self/statm`` (Linux), sampled when the detector has been given a multiple of
``--every`` frames: detection runs ahead of encoding by at most a few queues of frames. Prints a markdown
table and writes JSON.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evaluation.bench.common import (
    ArchitectureTimedDetector,
    generated_clip,
    parse_size,
    peak_rss_mib,
    write_report,
)
from inpaint_anon.composite import Compositor
from inpaint_anon.inpaint import make_inpainter
from inpaint_anon.pipeline import AnonymizePipeline
from inpaint_anon.track import Tracker
from inpaint_anon.types import Detections, Frame

PAGE_MIB = os.sysconf("SC_PAGE_SIZE") / 2**20


def rss_mib() -> float:
    """This process's resident set size in MiB, from /proc/self/statm (second field, pages)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_MIB


class SampledDetector(ArchitectureTimedDetector):
    """The benchmark detector, recording RSS each time the frames given to it pass a multiple of ``every``."""

    def __init__(self, *args: Any, every: int, started: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.every, self.started = every, started
        self.frames = 0
        self.samples: list[dict[str, float]] = []

    def __call__(self, frames: Sequence[Frame]) -> list[Detections]:
        found = super().__call__(frames)
        before, self.frames = self.frames, self.frames + len(frames)
        if self.frames // self.every > before // self.every:
            self.samples.append(sample("run", self.frames, self.started))
        return found


def sample(point: str, frames: int, started: float) -> dict[str, Any]:
    return {"point": point, "frames": frames, "seconds": round(time.perf_counter() - started, 2),
            "rss_mib": round(rss_mib(), 1)}


def slope_mib_per_1000(samples: list[dict[str, Any]]) -> float:
    """Least-squares slope of RSS against frames, MiB per 1000 frames (0 with fewer than two samples)."""
    if len(samples) < 2:
        return 0.0
    xs = [s["frames"] for s in samples]
    ys = [s["rss_mib"] for s in samples]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    cov = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys))
    return 1000 * cov / var if var else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--every", type=int, default=1000, help="sample RSS every this many frames")
    parser.add_argument("--warmup", type=int, default=1000, help="frames before growth is measured")
    parser.add_argument("--inpainter", default="blur", help="blur | pixelate | solid | scramble")
    parser.add_argument("--imgsz", type=int, default=160, help="detector input size (cost only)")
    parser.add_argument("--no-tracker", action="store_true", help="run without the tracker")
    parser.add_argument("--preset", default="medium", help="x264 preset (the run config's default: medium)")
    parser.add_argument("--queue-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the generated clip here (default: a tmp dir)")
    parser.add_argument("--max-growth-mib", type=float, default=64.0, help="growth after warm-up still called flat")
    parser.add_argument("--out", type=Path, default=Path("experiments/bench/memory.json"))
    args = parser.parse_args()
    if args.every < 1 or args.frames < 1:
        parser.error("--frames and --every must be >= 1")

    size = parse_size(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        clip = generated_clip(workdir, size, args.frames)
        print(f"clip {clip.name} ready after {time.perf_counter() - started:.1f} s", flush=True)
        started = time.perf_counter()
        samples = [sample("start", 0, started)]  # before any model is built
        kwargs = {"key": "00" * 32} if args.inpainter == "scramble" else {}
        inpainter = make_inpainter(args.inpainter, device=args.device, **kwargs)
        detector = SampledDetector(size, args.frames, imgsz=args.imgsz, batch_size=4, device=args.device,
                                   every=args.every, started=started)
        pipe = AnonymizePipeline(detector, inpainter, Compositor(), tracker=None if args.no_tracker else Tracker,
                                 queue_size=args.queue_size, progress=False)
        samples.append(sample("models built", 0, started))
        out = workdir / f"memory_out_{args.inpainter}.mp4"
        out.unlink(missing_ok=True)
        result = pipe(clip, out, preset=args.preset, overwrite=True)
        samples += detector.samples
        samples.append(sample("end", result.frames_out, started))
        out.unlink(missing_ok=True)

    # while running (the end sample is taken after the pipeline has freed its queues and threads)
    steady = [s for s in samples if s["point"] == "run" and s["frames"] >= args.warmup]
    growth = steady[-1]["rss_mib"] - steady[0]["rss_mib"] if steady else 0.0
    slope = slope_mib_per_1000(steady)
    summary = {
        "frames": result.frames_out,
        "size": args.size,
        "inpainter": args.inpainter,
        "tracker": not args.no_tracker,
        "imgsz": args.imgsz,
        "fps": round(result.frames_out / result.wall_seconds, 2),
        "rss_start_mib": samples[0]["rss_mib"],
        "rss_after_warmup_mib": steady[0]["rss_mib"] if steady else None,
        "rss_last_running_mib": steady[-1]["rss_mib"] if steady else None,
        "rss_end_mib": samples[-1]["rss_mib"],
        "peak_rss_mib": peak_rss_mib(),
        "growth_after_warmup_mib": round(growth, 1),
        "slope_mib_per_1000_frames": round(slope, 3),
        "flat": abs(growth) <= args.max_growth_mib,
    }
    print("| point | frames | seconds | RSS MiB |")
    print("|---|---|---|---|")
    for s in samples:
        print(f"| {s['point']} | {s['frames']} | {s['seconds']} | {s['rss_mib']} |")
    print()
    print("| " + " | ".join(summary) + " |")
    print("|" + "---|" * len(summary))
    print("| " + " | ".join(str(v) for v in summary.values()) + " |")
    write_report(args.out, "memory", samples, summary=summary,
                 settings={"every": args.every, "warmup": args.warmup, "preset": args.preset,
                           "queue_size": args.queue_size, "device": args.device})


if __name__ == "__main__":
    main()

"""Temporal benchmark: frames leaked through detector misses (must be 0) and fps with detect-every-k-frames.

Run from the repository root:

    python -m evaluation.bench.temporal                 # 720p, 120 frames, detector.stride 1 and 3

1. Leaks: a scripted detector misses the person 3 frames in every 10 and the car 2 in every 15; the run
   fills regions solid (so any clear pixel shows) with and without the tracker, and counts the output
   frames in which an object's true pixels are left in the clear (``tests.clips.leaked_frames``).
2. Speed: blur path, real YOLOv8n-seg architecture (random weights) at imgsz 640, tracker on, with the
   detector run on every frame (stride 1) and on every third frame (stride 3).
Prints markdown tables and writes JSON.
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial
from pathlib import Path

from evaluation.bench.common import generated_clip, parse_size, print_table, run_pipeline, write_report
from inpaint_anon.inpaint.fast import BlurInpainter, SolidInpainter
from inpaint_anon.track import Tracker
from tests.clips import leaked_frames, object_masks


def scripted_misses(size: tuple[int, int], n_frames: int):  # type: ignore[no-untyped-def]
    """Ground truth, but the person is missed in frames 10k+4..10k+6 and the car in 15k+7..15k+8."""

    def script(i: int) -> dict:
        masks = object_masks(i, size, n_frames)
        if i % 10 in (4, 5, 6):
            masks.pop("person")
        if i % 15 in (7, 8):
            masks.pop("car")
        return masks

    return script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("experiments/bench/temporal.json"))
    args = parser.parse_args()
    size = parse_size(args.size)
    tracker = partial(Tracker)  # the default config's settings

    leaks, speed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        clip = generated_clip(Path(tmp), size, args.frames)
        for with_tracker in (False, True):
            row = run_pipeline(clip, size, args.frames, SolidInpainter(color=(255, 0, 255), device=args.device),
                               preset="ultrafast", crf=0, imgsz=64, device=args.device,
                               tracker=tracker if with_tracker else None,
                               script=scripted_misses(size, args.frames))
            leaked = leaked_frames(clip, Path(row["output"]), size, args.frames)
            leaks.append({"tracker": with_tracker, "frames": row["frames"], "missed_detections": "person 30%, car 13%",
                          "leaked_frames": len(leaked), "leaked": leaked})
        for stride in (1, 3):
            row = run_pipeline(clip, size, args.frames, BlurInpainter(device=args.device), preset="medium",
                               imgsz=640, device=args.device, tracker=tracker, stride=stride)
            speed.append({**row, "stride": stride})
    print("| tracker | frames | leaked frames |\n|---|---|---|")
    for r in leaks:
        print(f"| {'on' if r['tracker'] else 'off'} | {r['frames']} | {r['leaked_frames']} |")
    print()
    print_table(speed, ["size", "stride", "frames", "fps"])
    write_report(args.out, "temporal", speed, leaks=leaks)


if __name__ == "__main__":
    main()

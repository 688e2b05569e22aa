"""Temporal benchmark: frames leaked through detector misses (must be 0) and fps with detect-every-k-frames.

Run from the repository root:

    python -m evaluation.bench.temporal                 # 720p, 120 frames, detector.stride 1 and 3

    python -m evaluation.bench.temporal --no-speed      # the leak scenarios only (no YOLO timing)

1. Leaks: a scripted detector misses the person 3 frames in every 10 and the car 2 in every 15; the run
   fills regions solid (so any clear pixel shows) with and without the tracker, and counts the output
   frames in which an object's true pixels are left in the clear (``tests.clips.leaked_frames``).
2. Small, fast object: a licence plate (box ``frame width / 32`` x a third of that, 40 x 13 px at 720p)
   crosses the frame left to right at its own width per frame, again and again (one pass every
   :data:`PASS_FRAMES` frames). The detector finds it in bursts of 5 frames with 2 missed frames between
   bursts, and misses it in the 2 frames after it enters at the border and the 2 before it leaves; the
   detector runs on every frame (stride 1) and on every third frame (stride 3). Counted: output frames in
   which any pixel of the plate is left as in the source (its place on the background, the plate is not
   drawn), and track ids given to plates (1 per pass is right).
3. Speed: blur path, real YOLOv8n-seg architecture (random weights) at imgsz 640, tracker on, with the
   detector run on every frame (stride 1) and on every third frame (stride 3).
Prints markdown tables and writes JSON.
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial
from pathlib import Path

import numpy as np

from evaluation.bench.common import generated_clip, parse_size, print_table, run_pipeline, write_report
from inpaint_anon.detect.scripted import ScriptedDetector
from inpaint_anon.inpaint.base import InpaintBatch, InpaintOutput
from inpaint_anon.inpaint.fast import BlurInpainter, SolidInpainter
from inpaint_anon.pipeline import AnonymizePipeline
from inpaint_anon.track import Tracker
from inpaint_anon.video import VideoReader, VideoSettings
from tests.clips import leaked_frames, object_masks

PASS_FRAMES = 40
"""A plate pass starts every this many frames (it needs ``frame width / plate width + 1`` = 33 to cross)."""


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


def plate_box(index: int, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """xyxy of the plate in frame ``index`` (entering at the left border, its own width per frame), or None
    between passes."""
    width, height = size
    plate_w = max(4, width // 32)
    plate_h = max(2, plate_w // 3)
    x0 = plate_w * (index % PASS_FRAMES) - plate_w + plate_w // 2  # the first frame of a pass shows half
    if x0 >= width:
        return None
    y0 = round(0.58 * height)  # between the person (above 0.55) and the car (below 0.67)
    return x0, y0, x0 + plate_w, y0 + plate_h


def plate_mask(index: int, size: tuple[int, int]) -> np.ndarray:
    """bool (H, W): the plate's pixels inside the frame (all False between passes)."""
    mask = np.zeros((size[1], size[0]), dtype=bool)
    box = plate_box(index, size)
    if box is not None:
        x0, y0, x1, y1 = box
        mask[y0:y1, max(x0, 0) : max(x1, 0)] = True
    return mask


def plate_found(index: int, size: tuple[int, int]) -> bool:
    """Whether the scripted detector finds the plate: not in the 2 frames after it enters or the 2 before it
    leaves; in between, bursts of 5 detected frames with 2 missed frames after each."""
    in_view = [i for i in range(PASS_FRAMES) if plate_mask(i, size).any()]
    step = index % PASS_FRAMES
    if step not in in_view or step < in_view[0] + 2 or step > in_view[-1] - 2:
        return False
    return (step - in_view[0] - 2) % 7 < 5


def plate_detector(size: tuple[int, int], n_frames: int) -> ScriptedDetector:
    """The clip's person and car (always found) and the plate where :func:`plate_found`."""

    def script(i: int) -> dict:
        masks = dict(object_masks(i, size, n_frames))
        if plate_found(i, size):
            masks["plate"] = plate_mask(i, size)
        return masks

    return ScriptedDetector(script, names=["person", "car", "plate"])


class PlateIds(SolidInpainter):
    """A solid fill that records the track ids given to plates."""

    def __init__(self, device: str) -> None:
        super().__init__(color=(255, 0, 255), device=device)
        self.ids: set[int] = set()

    def __call__(self, batch: InpaintBatch) -> InpaintOutput:
        for dets in batch.detections:
            if dets.track_ids is not None:
                self.ids.update(int(t) for t, name in zip(dets.track_ids.tolist(), dets.class_names) if name == "plate")
        return super().__call__(batch)


def plate_leaks(clip: Path, out_dir: Path, size: tuple[int, int], n_frames: int, device: str, tracker: bool,
                stride: int) -> dict:
    """One run of the small-fast-object scenario; leaked frames = frames with a plate pixel left in clear."""
    out = out_dir / f"plate_{'t' if tracker else 'n'}_s{stride}.mp4"
    fill = PlateIds(device)
    pipe = AnonymizePipeline(plate_detector(size, n_frames), fill, tracker=partial(Tracker) if tracker else None,
                             detect_stride=stride, batch_frames=4, progress=False)
    pipe(clip, out, video=VideoSettings(crf=0, preset="ultrafast"))
    leaked = []
    with VideoReader(clip) as source, VideoReader(out) as result:
        for before, after in zip(source, result):
            diff = np.abs(before.rgb.astype(int) - after.rgb.astype(int)).sum(axis=-1)
            if (diff[plate_mask(before.index, size)] < 30).any():
                leaked.append(before.index)
    in_view = sum(bool(plate_mask(i, size).any()) for i in range(n_frames))
    passes = len({i // PASS_FRAMES for i in range(n_frames) if plate_mask(i, size).any()})
    found = sum(plate_found(i, size) and i % stride == 0 for i in range(n_frames))  # plain ints: JSON
    return {"tracker": tracker, "stride": stride, "frames_in_view": in_view, "detected_frames": found,
            "passes": passes, "plate_track_ids": len(fill.ids), "leaked_frames": len(leaked), "leaked": leaked}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("experiments/bench/temporal.json"))
    parser.add_argument("--no-speed", action="store_true", help="skip the speed runs (YOLO architecture)")
    args = parser.parse_args()
    size = parse_size(args.size)
    tracker = partial(Tracker)  # the default config's settings

    leaks, plates, speed = [], [], []
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
        for with_tracker, stride in ((False, 1), (True, 1), (True, 3)):
            plates.append(plate_leaks(clip, Path(tmp), size, args.frames, args.device, with_tracker, stride))
        for stride in () if args.no_speed else (1, 3):
            row = run_pipeline(clip, size, args.frames, BlurInpainter(device=args.device), preset="medium",
                               imgsz=640, device=args.device, tracker=tracker, stride=stride)
            speed.append({**row, "stride": stride})
    print("| tracker | frames | leaked frames |\n|---|---|---|")
    for r in leaks:
        print(f"| {'on' if r['tracker'] else 'off'} | {r['frames']} | {r['leaked_frames']} |")
    print()
    print("| small fast plate | stride | frames in view | detected | passes | plate track ids | leaked frames |")
    print("|---|---|---|---|---|---|---|")
    for r in plates:
        print(f"| tracker {'on' if r['tracker'] else 'off'} | {r['stride']} | {r['frames_in_view']} | "
              f"{r['detected_frames']} | {r['passes']} | {r['plate_track_ids']} | {r['leaked_frames']} |")
    if speed:
        print()
        print_table(speed, ["size", "stride", "frames", "fps"])
    write_report(args.out, "temporal", speed, leaks=leaks, small_fast_object=plates)


if __name__ == "__main__":
    main()

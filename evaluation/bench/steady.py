"""Steady fills benchmark: flicker of generated fills, per-frame vs warped init vs warped init + similarity skip.

Run from the repository root:

    python -m evaluation.bench.steady                  # generated street clip, 128x96, 24 frames, tiny model

A result (2 CPU cores, shared): evaluation/bench/results/steady.json.

1. Clip: the generated street clip (``evaluation.bench.common.generated_clip``, H.264), decoded, with its exact
   object masks (``tests.clips.object_masks``) as the detections: person = track 1, car = track 2.
2. Inpainter: the tiny random SD-1.5 inpainting model (``inpaint_anon.inpaint.tiny``) at 64 px crops, 4 steps,
   in batches of 4 frames (``__call__`` per batch: the same fills as the pipeline's threads), three ways: per
   frame (no memory), warped init (``temporal_strength``), and warped init with the similarity skip
   (``reuse_threshold``).
3. Flicker: :mod:`inpaint_anon.metrics.temporal` (motion-compensated change inside each track between
   consecutive frames, and its ratio to the original's) on the frames with the fills pasted at full opacity.
Prints a markdown table and writes JSON (``evaluation.bench.common.write_report``). The tiny model's output is
noise, so the numbers compare the modes with each other, not with a real model's. Per-frame fills flicker here
because the fixed per-track noise is resampled as a crop window changes size; the warm start resumes each track's
own latents from the warm-start timestep, warped with its box, so it is steadier; a batch reads only what batches
<= j - 2 wrote, so the first two batches of a video start from noise (``--batch-frames 1`` shows the warm start
at its best).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluation.bench.common import generated_clip, parse_size, write_report
from inpaint_anon.composite import Compositor
from inpaint_anon.inpaint.base import InpaintBatch
from inpaint_anon.inpaint.diffusion import LatentInpainter
from inpaint_anon.inpaint.tiny import tiny_components
from inpaint_anon.metrics.temporal import TemporalFlicker, track_pair_change
from inpaint_anon.types import Detections, PromptEmbeds
from inpaint_anon.video import VideoReader
from tests.clips import object_masks

NAMES = {0: "person", 2: "car"}
TRACKS = {"person": 1, "car": 2}

MODES: dict[str, dict[str, Any]] = {
    "per frame": {},
    "warped init": {"temporal_strength": 0.5},
    "warped init + skip": {"temporal_strength": 0.5, "reuse_threshold": 0.02},
    "skip only": {"reuse_threshold": 0.02},
}


def tiny_prompts(dim: int = 32) -> PromptEmbeds:
    """Random prompt embeddings for the tiny model (seeded)."""
    g = torch.Generator().manual_seed(1)
    person, car, uncond, default = torch.randn(4, 77, dim, generator=g)
    return PromptEmbeds(cond={"person": person, "car": car}, uncond=uncond, default=default)


def tiny_inpainter(**kwargs: Any) -> LatentInpainter:
    """The tiny 9-channel model at 64 px crops, 4 steps, no guidance, on the CPU; ``kwargs`` override."""
    settings = {"steps": 4, "guidance_scale": 1.0, "resolution": 64, "device": "cpu", "max_batch": 8} | kwargs
    return LatentInpainter(tiny_components(unet_in_channels=9), tiny_prompts(), **settings)


def tracked(masks: dict[str, np.ndarray]) -> Detections:
    """Detections of the named bool (H, W) masks, each with its track id (:data:`TRACKS`)."""
    names = [n for n in masks if masks[n].any()]
    ids = {name: cid for cid, name in NAMES.items()}
    stack = np.stack([masks[n] for n in names]) if names else np.zeros((0, *next(iter(masks.values())).shape), bool)
    return Detections.from_masks(stack, [ids[n] for n in names], NAMES, track_ids=[TRACKS[n] for n in names])


def clip_frames(workdir: Path, size: tuple[int, int], n_frames: int) -> tuple[list[np.ndarray], list[Detections]]:
    """The generated street clip's decoded frames (uint8 (H, W, 3)) and its exact, tracked object masks."""
    clip = generated_clip(workdir, size, n_frames)
    with VideoReader(clip) as reader:
        frames = [frame.rgb for frame in reader]
    return frames, [tracked(object_masks(i, size, n_frames)) for i in range(len(frames))]


def anonymize(inpainter: LatentInpainter, frames: list[np.ndarray], detections: list[Detections],
              batch_frames: int) -> list[np.ndarray]:
    """A new video through ``inpainter`` (``__call__``, ``batch_frames`` frames at a time); the frames with the
    fills pasted at full opacity."""
    inpainter.start_video()
    out = []
    for start in range(0, len(frames), batch_frames):
        images = torch.stack([torch.from_numpy(f).permute(2, 0, 1) for f in frames[start : start + batch_frames]])
        dets = detections[start : start + batch_frames]
        batch = InpaintBatch(images, dets, list(range(start, start + len(dets))))
        pasted = Compositor.compose(batch.images, inpainter(batch).fills)
        out.extend(np.ascontiguousarray(p.permute(1, 2, 0).numpy()) for p in pasted)
    return out


def flicker(anonymized: list[np.ndarray], original: list[np.ndarray], detections: list[Detections]) -> dict[str, float]:
    """The temporal metric (:mod:`inpaint_anon.metrics.temporal`) pooled over every track: flicker and
    flicker_orig in 0-255 levels, flicker_ratio."""
    metric = TemporalFlicker()
    for k in range(1, len(anonymized)):
        prev, cur = detections[k - 1], detections[k]
        prev_ids = [int(t) for t in prev.track_ids]
        for j, track in enumerate(int(t) for t in cur.track_ids):
            if track not in prev_ids:
                continue
            (anon, orig), pixels = track_pair_change(
                (anonymized[k - 1], original[k - 1]), (anonymized[k], original[k]),
                prev.masks[prev_ids.index(track)].numpy(), cur.masks[j].numpy())
            metric.update(anon, orig, pixels)
    value, orig, ratio = (float(v) for v in metric.compute())
    return {"flicker": round(value, 3), "flicker_orig": round(orig, 3), "flicker_ratio": round(ratio, 3)}


def measure(frames: list[np.ndarray], detections: list[Detections], batch_frames: int = 4, resolution: int = 64,
            modes: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per mode: its settings, flicker, reused/warm/fresh region counts, seconds per frame."""
    rows = []
    for mode, settings in (MODES if modes is None else modes).items():
        inpainter = tiny_inpainter(resolution=resolution, **settings)
        start = time.perf_counter()
        out = anonymize(inpainter, frames, detections, batch_frames)
        seconds = time.perf_counter() - start
        counts = inpainter.run_record()["diffusion"]["temporal_regions"]
        rows.append({"mode": mode, **settings, **flicker(out, frames, detections), **counts,
                     "s_per_frame": round(seconds / len(frames), 4)})
    return rows


def print_rows(rows: list[dict[str, Any]]) -> None:
    print("| mode | flicker | flicker_orig | flicker_ratio | fresh | warm | reused | s/frame |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['flicker']} | {r['flicker_orig']} | {r['flicker_ratio']} | {r['fresh']} | "
              f"{r['warm']} | {r['reused']} | {r['s_per_frame']} |")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="128x96")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--batch-frames", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=64, help="crop side of the tiny model (px)")
    parser.add_argument("--out", type=Path, default=Path("experiments/bench/steady.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        frames, detections = clip_frames(Path(tmp), parse_size(args.size), args.frames)
    rows = measure(frames, detections, args.batch_frames, args.resolution)
    print_rows(rows)
    write_report(args.out, "steady", rows, clip={"size": args.size, "frames": len(frames)},
                 model=f"tiny random SD-1.5 inpainting, {args.resolution} px crops, 4 steps, guidance 1",
                 batch_frames=args.batch_frames)
    return rows


if __name__ == "__main__":
    main()

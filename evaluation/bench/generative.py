"""Generative-path benchmark: seconds per frame per stage of the SD-1.5 latent inpainter.

Run from the repository root:

    python -m evaluation.bench.generative                          # inpainter=tiny on CPU, 720p, 12 frames
    python -m evaluation.bench.generative --model stable-diffusion-v1-5/stable-diffusion-inpainting \\
        --steps 4 20 50 --resolution 512                             # real weights (cached), CUDA FP16

``--model random-sd15`` builds the real-size SD-1.5 inpainting architecture with random weights (no
download: timing only). The pipeline overlaps VAE encode / U-Net / VAE decode across batches; the
``inpaint.*`` columns are the inpainter's own step times. Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from evaluation.bench.common import generated_clip, parse_size, print_table, run_pipeline, write_report
from inpaint_anon.inpaint.diffusion import LatentInpainter


def build(model: str, steps: int, resolution: int, device: str, max_batch: int) -> LatentInpainter:
    if model != "random-sd15":
        return LatentInpainter.from_pretrained(model, steps=steps, resolution=resolution, device=device,
                                               max_batch=max_batch)
    from evaluation.bench.random_sd15 import random_sd15_inpainter

    return random_sd15_inpainter(steps=steps, resolution=resolution, device=device, max_batch=max_batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny | random-sd15 | hub id | folder | .safetensors")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--steps", type=int, nargs="+", default=[2])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("experiments/bench/generative.json"))
    args = parser.parse_args()

    size = parse_size(args.size)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clip = generated_clip(Path(tmp), size, args.frames)
        for steps in args.steps:
            inpainter = build(args.model, steps, args.resolution, args.device, args.max_batch)
            row = run_pipeline(clip, size, args.frames, inpainter, preset="medium", imgsz=640, device=args.device)
            rows.append({**row, "model": args.model, "steps": steps, "resolution": args.resolution})
    print_table(rows, ["size", "model", "steps", "resolution", "frames", "s_per_frame"])
    write_report(args.out, "generative", rows)


if __name__ == "__main__":
    main()

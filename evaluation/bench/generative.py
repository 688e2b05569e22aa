"""Generative-path benchmark: seconds per frame of the SD-1.5 latent inpainter, next to diffusers.

Run from the repository root:

    python -m evaluation.bench.generative                          # inpainter=tiny on CPU, 720p, 12 frames
    python -m evaluation.bench.generative --model random-sd15 --resolution 512 --steps 4 20 50   # on a GPU
    python -m evaluation.bench.generative --model stable-diffusion-v1-5/stable-diffusion-inpainting \\
        --steps 4 20 50 --resolution 512                             # real weights (cached), CUDA FP16

``--model random-sd15`` builds the real-size SD-1.5 inpainting architecture with random weights (no
download: timing only). For each step count:

1. ours: the whole pipeline (decode, detection with the real YOLOv8n-seg architecture, tracking off,
   crops, VAE encode / U-Net / VAE decode overlapped across batches, paste, encode): seconds per frame, and
   the ``inpaint.*`` columns, the inpainter's own step times;
2. diffusers: ``StableDiffusionInpaintPipeline`` on the same components (same device and dtype), called once
   per frame with that frame's crops (``LatentInpainter.model_inputs``: the same crops, masks, prompt
   embeddings and seeds) and the same steps; only those calls are timed (no decoding, detection or encoding).

``ratio`` = diffusers seconds per frame / ours (> 1: ours is faster, although ours also decodes, detects and
encodes). Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from evaluation.bench.common import generated_clip, parse_size, print_table, run_pipeline, write_report
from inpaint_anon.detect.scripted import ScriptedDetector
from inpaint_anon.inpaint.base import InpaintBatch
from inpaint_anon.inpaint.diffusion import LatentInpainter
from inpaint_anon.types import SDComponents
from inpaint_anon.video import VideoReader
from tests.clips import object_masks

COLUMNS = ["size", "model", "device", "dtype", "steps", "resolution", "frames", "crops", "s_per_frame",
           "diffusers_s_per_frame", "ratio"]


def build(model: str, steps: int, resolution: int, device: str, max_batch: int) -> LatentInpainter:
    if model != "random-sd15":
        return LatentInpainter.from_pretrained(model, steps=steps, resolution=resolution, device=device,
                                               max_batch=max_batch)
    from evaluation.bench.random_sd15 import random_sd15_inpainter

    return random_sd15_inpainter(steps=steps, resolution=resolution, device=device, max_batch=max_batch)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def diffusers_per_frame(inpainter: LatentInpainter, clip: Path, size: tuple[int, int], n_frames: int
                        ) -> dict[str, Any]:
    """Seconds per frame of ``StableDiffusionInpaintPipeline`` called once per frame on our crops of it."""
    pipe = SDComponents(vae=inpainter.vae, unet=inpainter.unet, scheduler=inpainter.scheduler).to_pipeline()
    detector = ScriptedDetector(lambda i: object_masks(i, size, n_frames), names=["person", "car"])
    uncond = inpainter.prompt_embeds.uncond
    res, seconds, crops_total = inpainter.resolution, 0.0, 0
    with VideoReader(clip) as reader:
        for frame in reader:
            image = torch.from_numpy(frame.rgb).permute(2, 0, 1)[None]
            batch = InpaintBatch(image, detector([frame]), [frame.index])
            crops, masks, cond, generators = inpainter.model_inputs(batch)
            if not len(crops):
                continue
            crops_total += len(crops)
            _sync(inpainter.device)
            start = time.perf_counter()
            pipe(prompt_embeds=cond, negative_prompt_embeds=uncond.expand(len(crops), -1, -1),
                 image=(crops + 1) / 2, mask_image=masks, height=res, width=res, num_inference_steps=inpainter.steps,
                 guidance_scale=inpainter.guidance_scale, strength=inpainter.strength, generator=generators,
                 output_type="pt")
            _sync(inpainter.device)
            seconds += time.perf_counter() - start
    return {"diffusers_s_per_frame": round(seconds / n_frames, 4), "crops": crops_total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny | random-sd15 | hub id | folder | .safetensors")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--steps", type=int, nargs="+", default=[2])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-diffusers", action="store_true", help="skip the diffusers comparison")
    parser.add_argument("--out", type=Path, default=Path("experiments/bench/generative.json"))
    args = parser.parse_args()

    size = parse_size(args.size)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clip = generated_clip(Path(tmp), size, args.frames)
        for steps in args.steps:
            inpainter = build(args.model, steps, args.resolution, args.device, args.max_batch)
            row = run_pipeline(clip, size, args.frames, inpainter, preset="medium", imgsz=640,
                               device=str(inpainter.device))
            row.update(model=args.model, device=str(inpainter.device), dtype=str(inpainter.dtype).split(".")[-1],
                       steps=steps, resolution=args.resolution, crops="", diffusers_s_per_frame="", ratio="")
            if not args.no_diffusers:
                row.update(diffusers_per_frame(inpainter, clip, size, args.frames))
                row["ratio"] = round(row["diffusers_s_per_frame"] / row["s_per_frame"], 3)
            rows.append(row)
            print(f"done: {steps} steps", flush=True)
    print_table(rows, COLUMNS)
    write_report(args.out, "generative", rows)


if __name__ == "__main__":
    main()

"""The GPU check: the generative path at SD-1.5 size next to diffusers, the fast preset's parts one by one, and the
fast path at 1080p, in one table (issue 13 part 6).

On the GPU machine (its own Python 3.12 with torch, transformers, accelerate, peft; no diffusers, PyAV or
ultralytics, and no registry), from the repository root:

    python -m evaluation.bench.gpu_bundle        # HERE, once: the missing cp312 wheels -> .gpu_bundle/ (< 64 MiB)
    bash evaluation/bench/gpu_check.sh           # THERE: installs them with --no-index, runs this module

Smoke test on CPU (the default test run does this, in-process):

    python -m evaluation.bench.gpu_check --device cpu --tiny

Every generative row runs the whole pipeline (decode, a scripted detector giving four regions per frame, tracking
off, crops, VAE encode / U-Net / VAE decode overlapped across batches, paste, encode) on a generated 720p clip; the
model is the real-size SD-1.5 inpainting architecture with random weights (``--tiny``: the tiny test model), in
FP16 on CUDA, at 512^2 crops (``--tiny``: 64^2). A LoRA does not change the cost once fused, so the LCM rows time
random weights with ``LCMScheduler``. Rows:

1. ``diffusers``: ``StableDiffusionInpaintPipeline`` on the same components, called once per frame with that frame's
   crops (the same crops, masks, prompt embeddings and seeds), 20 and 4 steps, guidance 7.5; only those calls are
   timed (no video decode, detection or encode);
2. ``ours``: the same steps and guidance (``ratio`` = diffusers s/frame / ours; the target is >= 5);
3. ``ours lcm``: 4 steps, guidance 1 (no unconditional batch), with the SD VAE and with the tiny VAE (TAESD
   architecture, ``AutoencoderTiny``), and the whole fast preset: tiny VAE, crop buckets 256/384/512 with padded
   batches, steady fills (warped init at 0.5, similarity reuse below 0.02: ``reused`` counts the regions that
   skipped the model), and ``torch.compile`` (``--compile-mode``, default max-autotune). Compilation and warm-up are
   timed apart (``warmup_s``) and not counted in the steady-state columns;
4. ``fast path 1080p``: blur on the GPU, the real YOLOv8n-seg architecture at 640 (random weights, for its cost)
   reporting the clip's true masks, on a generated 1080p clip.

Columns: seconds per frame, frames per second, crops per second (regions filled / wall seconds), peak GPU memory
(MiB allocated during the row), warm-up seconds, and regions the model could not fill (``fallbacks``: NaN/inf, e.g.
random weights overflowing FP16, retried one by one and then blurred; a row with fallbacks is slower than it should
be, and says so). The table is printed and the JSON rewritten after every row
(``--out``; ``$OUT/gpu_check.json`` too when ``$OUT`` is set), so a run stopped by its time limit still reports the
rows it finished; ``--budget-s`` skips the rows left once that many seconds have passed (they are listed as
skipped).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluation.bench.common import generated_clip, print_table, run_pipeline, write_report
from inpaint_anon.composite import Compositor
from inpaint_anon.detect.scripted import ScriptedDetector
from inpaint_anon.device import resolve_device
from inpaint_anon.inpaint.base import InpaintBatch
from inpaint_anon.inpaint.diffusion import LatentInpainter
from inpaint_anon.inpaint.fast import BlurInpainter
from inpaint_anon.pipeline import AnonymizePipeline
from inpaint_anon.types import Detections, PromptEmbeds, SDComponents
from inpaint_anon.video import VideoReader, VideoSettings

COLUMNS = ["row", "steps", "cfg", "vae", "buckets", "compile", "frames", "crops", "s_per_frame", "fps", "crops_per_s",
           "ratio", "peak_cuda_mib", "warmup_s", "fallbacks", "reused"]

REGION_BOXES = ((0.10, 0.30, 0.16, 0.42), (0.30, 0.25, 0.36, 0.37), (0.50, 0.30, 0.62, 0.85), (0.66, 0.55, 0.95, 0.80))
"""The four regions of a street frame, (x0, y0, x1, y1) as fractions of its size: two faces, a person, a car; at 720p
76x86, 76x86, 153x395 and 371x179 pixels. They move right by 0.2 % of the width a frame."""


NAMES = {0: "face", 1: "person", 2: "car"}


def street_regions(index: int, size: tuple[int, int]) -> Detections:
    """The tracked regions of frame ``index`` at ``size`` (W, H): ellipse masks bool (4, H, W) with track ids 1-4
    (so each keeps its noise seed and the temporal rows have tracks to follow)."""
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width]
    shift = 0.002 * index * width
    masks, boxes = [], []
    for x0, y0, x1, y1 in REGION_BOXES:
        cx, cy = (x0 + x1) / 2 * width + shift, (y0 + y1) / 2 * height
        rx, ry = (x1 - x0) / 2 * width, (y1 - y0) / 2 * height
        masks.append(((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1)
        boxes.append((cx - rx, cy - ry, cx + rx, cy + ry))
    return Detections(masks=np.stack(masks), class_ids=[0, 0, 1, 2], scores=[1.0] * 4, boxes_xyxy=boxes,
                      names=NAMES, track_ids=[1, 2, 3, 4])


@dataclass(frozen=True)
class Variant:
    """One generative row: how the inpainter is built."""

    row: str
    steps: int
    guidance_scale: float
    scheduler: str | None = None
    tiny_vae: bool = False
    buckets: tuple[int, ...] | None = None
    batch_sizes: tuple[int, ...] | None = None
    compile: bool = False
    temporal_strength: float | None = None
    reuse_threshold: float | None = None
    diffusers: bool = False  # time StableDiffusionInpaintPipeline per frame instead of ours


def variants(resolution: int, with_compile: bool, steps: tuple[int, int] = (20, 4), lcm_steps: int = 4
             ) -> list[Variant]:
    """The generative rows in order (cheapest first; compile last, it may take minutes to warm up). ``steps``: the
    two step counts of the ours-vs-diffusers rows; ``lcm_steps``: the few-step rows'."""
    lcm = {"steps": lcm_steps, "guidance_scale": 1.0, "scheduler": "LCMScheduler"}
    small = tuple(max(8, resolution * k // 512 // 8 * 8) for k in (256, 384, 512))
    shapes = {"tiny_vae": True, "buckets": small, "batch_sizes": (1, 2, 4, 8)}
    rows = [row for n in steps for row in (Variant("diffusers", n, 7.5, diffusers=True), Variant("ours", n, 7.5))]
    rows += [
        Variant("ours lcm", **lcm),
        Variant("ours lcm + tiny vae", **lcm, tiny_vae=True),
        Variant("ours lcm + tiny vae + buckets", **lcm, **shapes),
        Variant("ours lcm + tiny vae + buckets + steady", **lcm, **shapes, temporal_strength=0.5,
                reuse_threshold=0.02),
    ]
    if with_compile:
        rows.append(Variant("ours fast preset (+ compile)", **lcm, **shapes, compile=True))
    return rows


@dataclass
class Models:
    """The components every row shares (built once), and the prompt embeddings."""

    components: SDComponents
    tiny_vae: torch.nn.Module
    prompts: PromptEmbeds
    resolution: int


def build_models(tiny: bool) -> Models:
    """Real-size SD-1.5 inpainting architecture with random weights (or the tiny test model) and a random tiny VAE
    (``AutoencoderTiny``: TAESD's architecture at full size, or its tiny test version)."""
    if tiny:
        from inpaint_anon.inpaint.tiny import tiny_autoencoder_tiny, tiny_components

        components = tiny_components()
        generator = torch.Generator().manual_seed(0)
        embeds = torch.randn(2, 77, components.unet.config.cross_attention_dim, generator=generator)
        components = SDComponents(vae=components.vae, unet=components.unet, scheduler=components.scheduler)
        return Models(components, tiny_autoencoder_tiny(), _prompts(embeds), resolution=64)
    from diffusers import AutoencoderTiny

    from evaluation.bench.random_sd15 import random_sd15_components

    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        taesd = AutoencoderTiny().eval()  # the default config is TAESD for SD-1.5
    return Models(random_sd15_components(), taesd, _prompts(torch.randn(2, 77, 768, generator=generator)), 512)


def _prompts(embeds: torch.Tensor) -> PromptEmbeds:
    return PromptEmbeds(cond={"face": embeds[0], "person": embeds[0], "car": embeds[0]}, uncond=embeds[1],
                        default=embeds[0])


def make_inpainter(models: Models, variant: Variant, device: str, compile_mode: str) -> LatentInpainter:
    scheduler = models.components.scheduler
    if variant.scheduler is not None:
        from inpaint_anon.inpaint.schedulers import scheduler_class

        scheduler = scheduler_class(variant.scheduler).from_config(scheduler.config)
    vae = models.tiny_vae if variant.tiny_vae else models.components.vae
    components = SDComponents(vae=vae, unet=models.components.unet, scheduler=scheduler)
    return LatentInpainter(
        components, models.prompts, steps=variant.steps, guidance_scale=variant.guidance_scale,
        resolution=models.resolution, max_batch=8, device=device,
        buckets=list(variant.buckets) if variant.buckets else None,
        batch_sizes=list(variant.batch_sizes) if variant.batch_sizes else None,
        compile=variant.compile, compile_mode=compile_mode, temporal_strength=variant.temporal_strength,
        reuse_threshold=variant.reuse_threshold,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def run_ours(inpainter: LatentInpainter, clip: Path, size: tuple[int, int], work: Path, warmup_clip: Path
             ) -> dict[str, Any]:
    """The whole pipeline on ``clip`` with four scripted regions a frame; first a short untimed warm-up run (and, for
    a compiled U-Net, :meth:`LatentInpainter.warmup`: every bucket and batch size compiled), timed apart."""
    detector = ScriptedDetector(lambda i: street_regions(i, size), names=NAMES)
    pipe = AnonymizePipeline(detector, inpainter, Compositor(), tracker=None, batch_frames=4, progress=False)
    device = inpainter.device
    start = time.perf_counter()
    if inpainter.compiled:
        inpainter.warmup()
    pipe(warmup_clip, work / "warmup.mp4", video=VideoSettings(preset="ultrafast"), overwrite=True)
    _sync(device)
    warmup_s = time.perf_counter() - start
    _reset_peak(device)
    start = time.perf_counter()
    result = pipe(clip, work / "ours.mp4", video=VideoSettings(preset="ultrafast"), overwrite=True)
    _sync(device)
    wall = time.perf_counter() - start
    fallbacks = sum(1 for event in result.events if event["event"] == "fallback")
    reused = inpainter.run_record()["diffusion"]["temporal_regions"]["reused"]
    return {"frames": result.frames_out, "crops": len(REGION_BOXES) * result.frames_out, "wall_s": wall,
            "warmup_s": round(warmup_s, 2), "peak_cuda_mib": _peak_mib(device), "fallbacks": fallbacks,
            "reused": reused}


def run_diffusers(inpainter: LatentInpainter, clip: Path, size: tuple[int, int]) -> dict[str, Any]:
    """``StableDiffusionInpaintPipeline`` called once per frame of ``clip`` with our crops of that frame; only those
    calls are timed (after one untimed call)."""
    pipe = SDComponents(vae=inpainter.vae, unet=inpainter.unet, scheduler=inpainter.scheduler).to_pipeline()
    pipe.set_progress_bar_config(disable=True)
    detector = ScriptedDetector(lambda i: street_regions(i, size), names=NAMES)
    uncond, res, device = inpainter.prompt_embeds.uncond, inpainter.resolution, inpainter.device
    calls: list[Callable[[], Any]] = []
    crops_total = 0
    with VideoReader(clip) as reader:
        for frame in reader:
            image = torch.from_numpy(frame.rgb).permute(2, 0, 1)[None]
            crops, masks, cond, generators = inpainter.model_inputs(InpaintBatch(image, detector([frame]),
                                                                                 [frame.index]))
            crops_total += len(crops)
            calls.append(lambda c=crops, m=masks, e=cond, g=generators: pipe(
                prompt_embeds=e, negative_prompt_embeds=uncond.expand(len(c), -1, -1), image=(c + 1) / 2,
                mask_image=m, height=res, width=res, num_inference_steps=inpainter.steps,
                guidance_scale=inpainter.guidance_scale, strength=inpainter.strength, generator=g, output_type="pt"))
    start = time.perf_counter()
    calls[0]()
    _sync(device)
    warmup_s = time.perf_counter() - start
    _reset_peak(device)
    start = time.perf_counter()
    for call in calls:
        call()
    _sync(device)
    return {"frames": len(calls), "crops": crops_total, "wall_s": time.perf_counter() - start,
            "warmup_s": round(warmup_s, 2), "peak_cuda_mib": _peak_mib(device), "fallbacks": 0, "reused": 0}


def generative_row(variant: Variant, measured: dict[str, Any]) -> dict[str, Any]:
    wall, frames = measured.pop("wall_s"), measured["frames"]
    return {
        "row": variant.row, "steps": variant.steps, "cfg": variant.guidance_scale > 1,
        "vae": "tiny" if variant.tiny_vae else "sd", "buckets": "/".join(map(str, variant.buckets or ())) or "-",
        "compile": variant.compile, **measured, "s_per_frame": round(wall / frames, 4),
        "fps": round(frames / wall, 3), "crops_per_s": round(measured["crops"] / wall, 2), "ratio": "",
        "ms_per_frame": {},
    }


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """ratio = diffusers s/frame / ours at the same steps and guidance; the few-step rows are compared with diffusers
    at its most steps (``"x vs diffusers N"``)."""
    reference = {(r["steps"], r["cfg"]): r["s_per_frame"] for r in rows if r["row"] == "diffusers"}
    for r in rows:
        if r["row"].startswith("ours") and (r["steps"], r["cfg"]) in reference:
            r["ratio"] = round(reference[(r["steps"], r["cfg"])] / r["s_per_frame"], 2)
    most = max((r for r in rows if r["row"] == "diffusers"), key=lambda r: r["steps"], default=None)
    for r in rows:
        if r["row"].startswith("ours lcm") and most is not None:
            r["ratio"] = f"{round(most['s_per_frame'] / r['s_per_frame'], 1)} vs diffusers {most['steps']}"


def fast_path_row(work: Path, size: tuple[int, int], frames: int, device: str) -> dict[str, Any]:
    clip = generated_clip(work, size, frames)
    row = run_pipeline(clip, size, frames, BlurInpainter(device=device), preset="ultrafast", imgsz=640, device=device,
                       out_dir=work)
    return {"row": f"fast path {size[1]}p (blur)", "steps": "", "cfg": "", "vae": "", "buckets": "", "compile": "",
            "frames": row["frames"], "crops": "", "s_per_frame": row["s_per_frame"], "fps": row["fps"],
            "crops_per_s": "", "ratio": "", "peak_cuda_mib": row["peak_cuda_mib"], "warmup_s": row["setup_s"],
            "fallbacks": "", "reused": "", "ms_per_frame": row["ms_per_frame"]}


@dataclass
class Report:
    """Rows so far, rewritten to every JSON path after each row."""

    paths: Sequence[Path]
    info: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        add_ratios(self.rows)
        self.write()

    def write(self) -> None:
        for path in self.paths:
            write_report(path, "gpu_check", self.rows, skipped=self.skipped, **self.info)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto | cuda[:N] | cpu")
    parser.add_argument("--tiny", action="store_true", help="the tiny test model at 64^2 (smoke test)")
    parser.add_argument("--frames", type=int, default=None, help="frames per generative row (default 24; tiny: 2)")
    parser.add_argument("--size", default="1280x720", help="the street clip's size (tiny: 160x96)")
    parser.add_argument("--fast-size", default="1920x1080", help="the fast-path clip's size (tiny: 192x108)")
    parser.add_argument("--fast-frames", type=int, default=None, help="fast-path frames (default 300; tiny: 4)")
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                        help="the compiled row: auto = on CUDA only")
    parser.add_argument("--compile-mode", default="max-autotune")
    parser.add_argument("--budget-s", type=float, default=450.0, help="skip the rows left after this many seconds")
    parser.add_argument("--out", type=Path, default=Path("experiments/bench/gpu_check.json"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    started = time.perf_counter()
    device = resolve_device(args.device)
    tiny = args.tiny
    frames = args.frames or (2 if tiny else 24)
    fast_frames = args.fast_frames or (4 if tiny else 300)
    size = (160, 96) if tiny and args.size == "1280x720" else tuple(int(v) for v in args.size.split("x"))
    fast_size = (192, 108) if tiny and args.fast_size == "1920x1080" else tuple(
        int(v) for v in args.fast_size.split("x"))
    with_compile = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    paths = [args.out] + ([Path(os.environ["OUT"]) / "gpu_check.json"] if os.environ.get("OUT") else [])
    info = {"device": str(device), "tiny": tiny, "dtype": "float16" if device.type == "cuda" else "float32",
            "clip": f"{size[0]}x{size[1]}", "regions_per_frame": len(REGION_BOXES)}
    report = Report(paths, info)
    models = build_models(tiny)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clip = generated_clip(work, size, frames)
        warmup_clip = generated_clip(work, size, 2)
        for variant in variants(models.resolution, with_compile, *((2, 1), 2) if tiny else ()):
            if time.perf_counter() - started > args.budget_s:
                report.skipped.append(f"{variant.row} {variant.steps} steps")
                continue
            inpainter = make_inpainter(models, variant, str(device), args.compile_mode)
            measured = (run_diffusers(inpainter, clip, size) if variant.diffusers
                        else run_ours(inpainter, clip, size, work, warmup_clip))
            report.add(generative_row(variant, measured))
            print(f"done: {variant.row}, {variant.steps} steps ({time.perf_counter() - started:.0f} s)", flush=True)
        if time.perf_counter() - started > args.budget_s:
            report.skipped.append("fast path")
        else:
            report.add(fast_path_row(work, fast_size, fast_frames, str(device)))
    report.info["total_s"] = round(time.perf_counter() - started, 1)
    report.write()
    print_table(report.rows, COLUMNS)
    if report.skipped:
        print("skipped (over --budget-s):", ", ".join(report.skipped))
    return report.rows


if __name__ == "__main__":
    main()

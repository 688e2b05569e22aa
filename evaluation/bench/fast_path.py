"""Fast-path benchmark: end-to-end processing fps, milliseconds per frame per stage and peak memory.

Run from the repository root:

    python -m evaluation.bench.fast_path                       # blur, 120 frames at 720p and 1080p, CPU
    python -m evaluation.bench.fast_path --device cuda --inpainters blur pixelate --clip data/street.mp4

Clips are generated (moving person and car, AAC audio) at each of ``--sizes``; ``--clip`` adds real videos.
The detector runs the real YOLOv8n-seg architecture at ``--imgsz`` (random weights, for its cost) and
reports the generated clip's objects as masks (see ``common.ArchitectureTimedDetector``; on a real clip those
masks are the generated clip's, at the real clip's size), so the anonymized area is the same whatever the
weights. Peak memory is the process's peak RSS after each row (it only grows) and, on CUDA, the row's peak of
allocated GPU memory. Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from evaluation.bench.common import generated_clip, parse_size, print_table, run_pipeline, write_report
from inpaint_anon.device import resolve_device
from inpaint_anon.inpaint import make_inpainter
from inpaint_anon.video import probe

COLUMNS = ["clip", "size", "device", "inpainter", "preset", "frames", "fps", "setup_s", "peak_rss_mib",
           "peak_cuda_mib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="*", default=["1280x720", "1920x1080"], help="generated clip sizes")
    parser.add_argument("--frames", type=int, default=120, help="generated clip length")
    parser.add_argument("--clip", type=Path, action="append", default=[], help="also run on this video")
    parser.add_argument("--inpainters", nargs="+", default=["blur"])
    parser.add_argument("--preset", default="medium", help="x264 preset (the run config's default: medium)")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument("--out", type=Path, default=Path("experiments/bench/fast_path.json"))
    args = parser.parse_args()

    device = str(resolve_device(args.device))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clips = [(generated_clip(work, size, args.frames), "generated") for size in map(parse_size, args.sizes)]
        clips += [(path, str(path)) for path in args.clip]
        for clip, name in clips:
            meta = probe(clip)
            size = (meta.width, meta.height)
            for inpainter_name in args.inpainters:
                inpainter = make_inpainter(inpainter_name, device=device)
                row = run_pipeline(clip, size, meta.n_frames or 0, inpainter, preset=args.preset, imgsz=args.imgsz,
                                   device=device, out_dir=work)
                rows.append({"clip": name, "device": device, **row})
                print(f"done: {name} {row['size']} {inpainter_name}", flush=True)
    print_table(rows, COLUMNS)
    write_report(args.out, "fast_path", rows)


if __name__ == "__main__":
    main()

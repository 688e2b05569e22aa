"""Fast-path benchmark: end-to-end processing fps and milliseconds per frame per stage on generated clips.

Run from the repository root:

    python -m evaluation.bench.fast_path                       # 720p, blur, 120 frames
    python -m evaluation.bench.fast_path --sizes 1280x720 1920x1080 --inpainters blur pixelate

The detector runs the real YOLOv8n-seg architecture at ``--imgsz`` but reports the clip's true masks
(see ``common.ArchitectureTimedDetector``). Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from evaluation.bench.common import generated_clip, parse_size, print_table, run_pipeline, write_report
from inpaint_anon.inpaint import make_inpainter


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

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in map(parse_size, args.sizes):
            clip = generated_clip(Path(tmp), size, args.frames)
            for name in args.inpainters:
                inpainter = make_inpainter(name, device=args.device)
                rows.append(run_pipeline(clip, size, args.frames, inpainter, preset=args.preset, imgsz=args.imgsz,
                                         device=args.device))
    print_table(rows, ["size", "inpainter", "preset", "frames", "fps"])
    write_report(args.out, "fast_path", rows)


if __name__ == "__main__":
    main()

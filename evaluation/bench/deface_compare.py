"""Our real-time blur path against deface (CenterFace face blurring), end to end on the same clips.

Run from the repository root:

    python -m evaluation.bench.deface_compare                              # generated 720p clip, 120 frames
    python -m evaluation.bench.deface_compare --clip data/street.mp4 --repeats 3
    python -m evaluation.bench.deface_compare --imgsz 640 320 --stride 1 3    # our speed knobs, one row each

deface runs as a subprocess from its own virtual environment (``--deface-venv``, created with
``pip install deface onnx onnxruntime`` when missing: it brings its own OpenCV build), with options that
give comparable output: blur, audio copied, libx264 preset ``--preset`` at crf ``--crf`` (its default would
be crf 25). It is timed from process start to exit, and its startup (interpreter, imports, model load,
encoder start) separately on a 1-frame clip of the same size, so both a total and a net rate are reported.

Our side is :class:`~inpaint_anon.pipeline.AnonymizePipeline` in this process with the real YOLOv8n-seg
architecture at ``--imgsz`` (random weights, so it reports the generated clip's objects as masks: see
``common.ArchitectureTimedDetector``), the default tracker, :class:`BlurInpainter` and the same encoder
settings; ``--imgsz`` and ``--stride`` (detect every k-th frame, the tracker carries the masks in between) take
several values, one row each. Its setup (building the detector) is timed apart from the run; deface is run at
its defaults (CenterFace on the full-resolution frame, threshold 0.2, mask scale 1.3).

What each detects differs: deface finds faces (none in the generated clip, which has no faces), we segment
whole people and vehicles. Prints a markdown table and writes JSON with the ratios ours / deface.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from evaluation.bench.common import generated_clip, parse_size, print_table, run_pipeline, write_report
from inpaint_anon.inpaint import BlurInpainter
from inpaint_anon.track import Tracker
from inpaint_anon.video import probe

DEFACE_PACKAGES = ("deface", "onnx", "onnxruntime")


def ensure_deface(venv: Path) -> Path:
    """The ``deface`` executable of ``venv``; the venv is created and deface installed into it when missing."""
    executable = venv / "bin" / "deface"
    if executable.exists():
        return executable
    print(f"creating {venv} and installing {' '.join(DEFACE_PACKAGES)} (about a minute)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *DEFACE_PACKAGES], check=True)
    if not executable.exists():
        raise SystemExit(f"pip installed deface but {executable} is missing")
    return executable


def deface_version(executable: Path) -> str:
    done = subprocess.run([str(executable), "--version"], capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).strip().splitlines()[-1] if done.returncode == 0 else "unknown"


def run_deface(executable: Path, clip: Path, out: Path, *, backend: str, crf: int, preset: str) -> float:
    """Seconds from starting ``deface clip -o out`` to its exit (blur, audio kept, libx264 at crf/preset)."""
    ffmpeg_config = {"codec": "libx264", "quality": None, "pixelformat": "yuv420p",
                     "output_params": ["-preset", preset, "-crf", str(crf)]}
    command = [str(executable), str(clip), "-o", str(out), "--backend", backend, "--replacewith", "blur",
               "--keep-audio", "--ffmpeg-config", json.dumps(ffmpeg_config)]
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0 or not out.exists():
        raise SystemExit(f"deface failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}")
    return seconds


def measure_deface(clip: Path, work: Path, deface: Path, args: argparse.Namespace) -> dict[str, Any]:
    """deface on ``clip`` and on a 1-frame clip of the same size, ``args.repeats`` times; medians in seconds."""
    meta = probe(clip)
    one_frame = generated_clip(work, (meta.width, meta.height), 1)
    options = {"backend": args.deface_backend, "crf": args.crf, "preset": args.preset}
    total = [run_deface(deface, clip, work / "deface.mp4", **options) for _ in range(args.repeats)]
    startup = [run_deface(deface, one_frame, work / "deface_one.mp4", **options) for _ in range(args.repeats)]
    return {"total_s": statistics.median(total), "startup_s": statistics.median(startup),
            "runs": {"total_s": total, "startup_s": startup}}


def compare(clip: Path, name: str, work: Path, deface: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per (our detector imgsz, detection stride) on one clip, against deface on the same clip."""
    meta = probe(clip)
    frames = meta.n_frames or 0
    theirs = measure_deface(clip, work, deface, args)
    # the 1-frame run also processes one frame; what is left is startup + shutdown
    total, startup = theirs["total_s"], theirs["startup_s"]
    net = max(total - startup, 1e-9)
    rows = []
    for imgsz in args.imgsz:
        for stride in args.stride:
            ours = [run_pipeline(clip, (meta.width, meta.height), frames, BlurInpainter(device=args.device),
                                 preset=args.preset, crf=args.crf, imgsz=imgsz, device=args.device, tracker=Tracker,
                                 stride=stride, out_dir=work) for _ in range(args.repeats)]
            best = sorted(ours, key=lambda r: r["wall_s"])[len(ours) // 2]  # the median run
            run, setup = best["wall_s"], best["setup_s"]
            row = {
                "clip": name,
                "size": f"{meta.width}x{meta.height}",
                "frames": frames,
                "imgsz": imgsz,
                "stride": stride,
                "ours_fps": round(frames / run, 3),
                "ours_fps_with_setup": round(frames / (run + setup), 3),
                "deface_fps": round(frames / total, 3),
                "deface_fps_net": round(frames / net, 3),
                "deface_total_s": round(total, 3),
                "deface_startup_s": round(startup, 3),
            }
            row["ratio_net"] = round(row["ours_fps"] / row["deface_fps_net"], 3)
            row["ratio_total"] = round(row["ours_fps_with_setup"] / row["deface_fps"], 3)
            row["ms_per_frame"] = best["ms_per_frame"]
            row["runs"] = {"ours": ours, "deface": theirs["runs"]}
            rows.append(row)
    return rows


COLUMNS = ["clip", "size", "frames", "imgsz", "stride", "ours_fps", "deface_fps_net", "ratio_net",
           "ours_fps_with_setup", "deface_fps", "ratio_total", "deface_startup_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1280x720", help="generated clip size; 'none' skips the generated clip")
    parser.add_argument("--frames", type=int, default=120, help="generated clip length")
    parser.add_argument("--clip", type=Path, action="append", default=[], help="also compare on this video")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each side per clip (medians reported)")
    parser.add_argument("--imgsz", type=int, nargs="+", default=[640], help="our detector's input size(s)")
    parser.add_argument("--stride", type=int, nargs="+", default=[1],
                        help="our detection stride(s): detect every k-th frame, the tracker carries masks between")
    parser.add_argument("--crf", type=int, default=18, help="libx264 crf for both (our run config's default)")
    parser.add_argument("--preset", default="medium", help="libx264 preset for both (our run config's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--deface-backend", default="onnxrt", choices=["onnxrt", "opencv", "auto"])
    parser.add_argument("--deface-venv", type=Path, default=Path("experiments/bench/deface-venv"))
    parser.add_argument("--out", type=Path, default=Path("experiments/bench/deface_compare.json"))
    args = parser.parse_args()

    deface = ensure_deface(args.deface_venv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clips: list[tuple[Path, str]] = []
        if args.size.lower() != "none":
            size = parse_size(args.size)
            clips.append((generated_clip(work, size, args.frames), f"generated {args.size}"))
        clips += [(path, str(path)) for path in args.clip]
        for clip, name in clips:
            rows += compare(clip, name, work, deface, args)
            print(f"done: {name}", flush=True)
    print_table(rows, COLUMNS, stage_prefix="ours ")
    write_report(args.out, "deface_compare", rows, deface={"version": deface_version(deface),
                                                           "backend": args.deface_backend},
                 settings={"crf": args.crf, "preset": args.preset, "device": args.device,
                           "repeats": args.repeats},
                 load_average=os.getloadavg())


if __name__ == "__main__":
    main()

"""Our real-time blur paths against deface (CenterFace face blurring), end to end on the same clips.

Run from the repository root:

    python -m evaluation.bench.deface_compare                              # generated and photo clips, 720p
    python -m evaluation.bench.deface_compare --clip data/street.mp4 --repeats 3
    python -m evaluation.bench.deface_compare --imgsz 640 320 --stride 1 3    # our speed knobs, one row each
    python -m evaluation.bench.deface_compare --paths faces --size none       # faces-only, photo clip only
    python -m evaluation.bench.deface_compare --paths faces --face-backend onnxruntime openvino \
        --face-input-size full 640 --face-stride 1 2     # faces-only speed knobs: one row per combination

Clips: a generated street-like clip (``--size``, ``--frames``; no faces), the photo clip (``--photo-size``,
``--photo-frames``: synthetic pan-and-zoom motion over the real photographs of ``data/`` with hand-checked faces,
:func:`~evaluation.bench.common.photo_clip`) and any ``--clip`` video.

deface runs as a subprocess from its own virtual environment (``--deface-venv``, created with
``pip install deface onnx onnxruntime`` when missing: it brings its own OpenCV build), with options that
give comparable output: blur, ``--thresh`` and ``--mask-scale`` as ours, audio copied, libx264 preset
``--preset`` at crf ``--crf`` (its default would be crf 25). It is timed from process start to exit, and its
startup (interpreter, imports, model load, encoder start) separately on a 1-frame clip of the same size, so
both a total and a net rate are reported.

Our side runs :class:`~inpaint_anon.pipeline.AnonymizePipeline` in this process with the same encoder settings,
one row per path (``--paths``):

- ``yolo``: the real YOLOv8n-seg architecture at ``--imgsz`` (random weights, so it reports the generated
  clip's objects as masks: see ``common.ArchitectureTimedDetector``), the default tracker and
  :class:`BlurInpainter`; ``--imgsz`` and ``--stride`` (detect every k-th frame, the tracker carries the masks
  in between) take several values, one row each. It segments whole people and vehicles, not faces: a speed
  comparison only.
- ``faces``: the same task as deface, :func:`~evaluation.bench.common.faces_only_pipeline` (CenterFace on the
  full-resolution frame, ``--face-threshold`` 0.2, ``--mask-scale`` 1.3, ellipse masks, the default tracker,
  blur), with its agreement with deface on that clip: deface's own boxes come from
  ``evaluation/bench/deface_boxes.py`` run by the deface venv's python (``deface.centerface.CenterFace`` on the
  frames deface reads, same threshold), each grown and drawn as deface blurs it (:func:`deface_region`).
  ``deface_covered``: share of deface's regions with >= ``--cover`` (90 %) of their pixels fully blurred by us
  (alpha 1 after the compositor's dilation and feather; ``deface_covered_by_masks`` in the JSON: inside our
  recorded masks, before dilation); ``ours_overlap``: share of our face regions (tracked: held and backfilled
  ones included) that share a pixel with a deface region of that frame. Its speed knobs take several values,
  one row per combination: ``--face-backend`` (CenterFace runtime), ``--face-threads`` (its intra-op threads),
  ``--face-input-size`` (shown as ``imgsz``: longest side CenterFace sees; ``full`` = as deface) and
  ``--face-stride``. Every row prints our per-stage ms per frame (threads overlap: they do not add up to the
  wall time).

Setup (building the detector) is timed apart from our runs. Prints a markdown table and writes JSON with the
ratios ours / deface.
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
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluation.bench.common import (
    faces_only_pipeline,
    generated_clip,
    parse_size,
    photo_clip,
    print_table,
    run_pipeline,
    write_report,
)
from inpaint_anon.composite import Compositor
from inpaint_anon.inpaint import BlurInpainter
from inpaint_anon.records import DetectionReader
from inpaint_anon.track import Tracker
from inpaint_anon.types import Detections, VideoMeta
from inpaint_anon.video import VideoSettings, probe

DEFACE_PACKAGES = ("deface", "onnx", "onnxruntime")
BOXES_SCRIPT = Path(__file__).with_name("deface_boxes.py")


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


def run_deface(executable: Path, clip: Path, out: Path, *, backend: str, crf: int, preset: str, thresh: float,
               mask_scale: float) -> float:
    """Seconds from starting ``deface clip -o out`` to its exit (blur, ``thresh``, ``mask_scale``, ellipses,
    audio kept, libx264 at crf/preset)."""
    ffmpeg_config = {"codec": "libx264", "quality": None, "pixelformat": "yuv420p",
                     "output_params": ["-preset", preset, "-crf", str(crf)]}
    command = [str(executable), str(clip), "-o", str(out), "--backend", backend, "--replacewith", "blur",
               "--thresh", str(thresh), "--mask-scale", str(mask_scale),
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
    options = {"backend": args.deface_backend, "crf": args.crf, "preset": args.preset,
               "thresh": args.face_threshold, "mask_scale": args.mask_scale}
    total = [run_deface(deface, clip, work / "deface.mp4", **options) for _ in range(args.repeats)]
    startup = [run_deface(deface, one_frame, work / "deface_one.mp4", **options) for _ in range(args.repeats)]
    return {"total_s": statistics.median(total), "startup_s": statistics.median(startup),
            "runs": {"total_s": total, "startup_s": startup}}


# --- deface's face regions and our agreement with them ------------------------------------------------------


def deface_boxes(executable: Path, clip: Path, out: Path, *, thresh: float, backend: str) -> list[list[list[float]]]:
    """deface's CenterFace boxes of each frame of ``clip``, ``[x1, y1, x2, y2, score]`` in frame pixels, from
    :mod:`evaluation.bench.deface_boxes` run by the python next to the deface ``executable``."""
    python = executable.parent / "python"
    command = [str(python), str(BOXES_SCRIPT), str(clip), str(out), "--thresh", str(thresh), "--backend", backend]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not out.exists():
        raise SystemExit(f"deface's box dump failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}")
    return json.loads(out.read_text())["frames"]


def deface_region(det: Sequence[float], height: int, width: int, mask_scale: float = 1.3,
                  ellipse: bool = True) -> np.ndarray:
    """bool (H, W): the pixels deface 1.5 blurs for one detection ``[x1, y1, x2, y2, ...]`` in a ``height`` x
    ``width`` frame, as ``deface.deface.anonymize_frame`` draws it: corners truncated to integers, each side
    pushed out by ``(mask_scale - 1)`` of the box size and rounded (``scale_bb``), cut to
    ``[0, width - 1] x [0, height - 1]``, then the box itself or the ellipse ``skimage.draw.ellipse`` inscribes in
    it (centre and radii ``h // 2``, ``w // 2``, strictly inside)."""
    x1, y1, x2, y2 = (int(v) for v in det[:4])
    grow = mask_scale - 1.0
    box_h, box_w = y2 - y1, x2 - x1
    x1, x2 = round(x1 - box_w * grow), round(x2 + box_w * grow)
    y1, y2 = round(y1 - box_h * grow), round(y2 + box_h * grow)
    y1, y2 = max(0, y1), min(height - 1, y2)
    x1, x2 = max(0, x1), min(width - 1, x2)
    region = np.zeros((height, width), dtype=bool)
    if y2 <= y1 or x2 <= x1:
        return region
    if not ellipse:
        region[y1:y2, x1:x2] = True
        return region
    radius_y, radius_x = (y2 - y1) // 2, (x2 - x1) // 2
    if radius_y == 0 or radius_x == 0:
        return region
    rows = np.arange(y2 - y1)[:, None] - radius_y
    cols = np.arange(x2 - x1)[None, :] - radius_x
    region[y1:y2, x1:x2] = (rows / radius_y) ** 2 + (cols / radius_x) ** 2 < 1
    return region


@dataclass
class Agreement:
    """How our face regions and deface's agree over a clip (counts; :meth:`shares` for the ratios).

    deface_boxes: deface's detections (each drawn with :func:`deface_region`); deface_covered /
    deface_covered_by_masks: those with >= ``cover`` of their pixels fully blurred by us (alpha 1) / inside our
    recorded masks; ours_regions: our recorded (tracked) face regions; ours_overlap: those sharing a pixel with
    a deface region of the same frame. per_frame: the same four counts of each frame, ``[deface_boxes,
    deface_covered, ours_regions, ours_overlap]`` (where the two disagree, e.g. at a cut).
    """

    frames: int = 0
    deface_boxes: int = 0
    deface_covered: int = 0
    deface_covered_by_masks: int = 0
    ours_regions: int = 0
    ours_overlap: int = 0
    per_frame: list[list[int]] = field(default_factory=list)

    def shares(self) -> dict[str, float | None]:
        def share(part: int, whole: int) -> float | None:
            return round(part / whole, 4) if whole else None

        return {"deface_covered": share(self.deface_covered, self.deface_boxes),
                "deface_covered_by_masks": share(self.deface_covered_by_masks, self.deface_boxes),
                "ours_overlap": share(self.ours_overlap, self.ours_regions)}


def agreement(ours: Iterable[Detections], theirs: Sequence[Sequence[Sequence[float]]], *, mask_scale: float,
              compositor: Compositor, cover: float = 0.9, ellipse: bool = True) -> Agreement:
    """Compare our recorded detections of each frame (in order) with deface's boxes of the same frames."""
    result = Agreement()
    for detections, boxes in zip(ours, theirs, strict=True):
        height, width = detections.height, detections.width
        masks = detections.masks.to(torch.bool)
        inside = masks.any(dim=0).numpy() if len(masks) else np.zeros((height, width), dtype=bool)
        blurred = (compositor.alpha(masks, detections.boxes_xyxy) >= 1.0).numpy()
        regions = [deface_region(box, height, width, mask_scale, ellipse) for box in boxes]
        regions = [r for r in regions if r.any()]
        theirs_any = np.any(regions, axis=0) if regions else np.zeros((height, width), dtype=bool)
        covered = [bool((region & blurred).sum() >= cover * region.sum()) for region in regions]
        overlap = [bool((mask.numpy() & theirs_any).any()) for mask in masks]
        result.frames += 1
        result.deface_boxes += len(regions)
        result.deface_covered += sum(covered)
        result.deface_covered_by_masks += sum(bool((r & inside).sum() >= cover * r.sum()) for r in regions)
        result.ours_regions += len(masks)
        result.ours_overlap += sum(overlap)
        result.per_frame.append([len(regions), sum(covered), len(masks), sum(overlap)])
    return result


# --- our runs -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaceSetting:
    """One faces-only row's speed knobs: CenterFace ``backend`` and ``threads`` (None: the runtime's default),
    ``input_size`` (longest side the frame is resized to; None: full resolution, as deface) and detection
    ``stride`` (the tracker carries the masks in between)."""

    backend: str = "onnxruntime"
    threads: int | None = None
    input_size: int | None = None
    stride: int = 1


def face_settings(args: argparse.Namespace) -> list[FaceSetting]:
    """Every combination of ``--face-backend``, ``--face-threads``, ``--face-input-size`` and ``--face-stride``."""
    return [FaceSetting(backend, threads, size, stride) for backend in args.face_backend
            for threads in args.face_threads for size in args.face_input_size
            for stride in args.face_stride]


def run_faces_only(clip: Path, work: Path, args: argparse.Namespace, setting: FaceSetting) -> dict[str, Any]:
    """One timed run of :func:`faces_only_pipeline` with ``setting`` on ``clip``; its detections are recorded to
    ``work/faces_only.dets``. Returns wall and setup seconds, ms per frame per stage, the output and the record."""
    start = time.perf_counter()
    pipe = faces_only_pipeline(args.device, conf=args.face_threshold, mask_scale=args.mask_scale,
                               backend=setting.backend, threads=setting.threads, input_size=setting.input_size,
                               stride=setting.stride)
    setup = time.perf_counter() - start
    out, record = work / f"out_{clip.stem}_faces_only.mp4", work / "faces_only.dets"
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    result = pipe(clip, out, video=VideoSettings(crf=args.crf, preset=args.preset), record_detections=record)
    wall = time.perf_counter() - start
    return {"wall_s": round(wall, 3), "setup_s": round(setup, 3), "frames": result.frames_out,
            "ms_per_frame": {k: round(1000 * v / result.frames_out, 2) for k, v in sorted(result.timings.items())},
            "output": str(out), "record": str(record)}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]


def speed_row(clip_name: str, meta: VideoMeta, path: str, imgsz: int | str, stride: int, best: dict[str, Any],
              theirs: dict[str, Any]) -> dict[str, Any]:
    """The common fields of a row: our fps (without and with setup) against deface's (total and net)."""
    frames = meta.n_frames or 0
    total, startup = theirs["total_s"], theirs["startup_s"]
    net = max(total - startup, 1e-9)  # the 1-frame run also processes one frame; what is left is startup
    run, setup = best["wall_s"], best["setup_s"]
    row: dict[str, Any] = {
        "clip": clip_name, "size": f"{meta.width}x{meta.height}", "frames": frames, "ours": path,
        "imgsz": imgsz, "stride": stride,
        "ours_fps": round(frames / run, 3),
        "ours_fps_with_setup": round(frames / (run + setup), 3),
        "deface_fps": round(frames / total, 3),
        "deface_fps_net": round(frames / net, 3),
        "deface_total_s": round(total, 3),
        "deface_startup_s": round(startup, 3),
    }
    row["ratio_net"] = round(row["ours_fps"] / row["deface_fps_net"], 3)
    row["ratio_total"] = round(row["ours_fps_with_setup"] / row["deface_fps"], 3)
    row.update({"deface_boxes": None, "deface_covered": None, "ours_regions": None, "ours_overlap": None})
    row["ms_per_frame"] = best["ms_per_frame"]
    return row


def faces_row(clip: Path, clip_name: str, meta: VideoMeta, work: Path, boxes: list[list[list[float]]],
              theirs: dict[str, Any], args: argparse.Namespace, setting: FaceSetting) -> dict[str, Any]:
    """One faces-only row: speed against deface, and the agreement of the two on this clip (deface's ``boxes``)."""
    runs = [run_faces_only(clip, work, args, setting) for _ in range(args.repeats)]
    best = median_run(runs)
    reader = DetectionReader(best["record"])
    if len(boxes) != reader.n_frames:
        raise SystemExit(f"deface read {len(boxes)} frames of {clip} but our run {reader.n_frames}: the clips "
                         "must decode to the same frames (constant frame rate)")
    agreed = agreement((d for _, d in reader), boxes, mask_scale=args.mask_scale, compositor=Compositor(),
                       cover=args.cover)
    row = speed_row(clip_name, meta, "faces-only", setting.input_size or "full", setting.stride, best, theirs)
    row.update({"backend": setting.backend, "threads": setting.threads or "default"})
    row.update({"deface_boxes": agreed.deface_boxes, "ours_regions": agreed.ours_regions, **agreed.shares()})
    row["setting"] = asdict(setting)
    row["agreement"] = asdict(agreed)
    row["runs"] = {"ours": runs, "deface": theirs["runs"]}
    return row


def compare(clip: Path, name: str, work: Path, deface: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The rows of one clip: one per (our YOLO detector imgsz, detection stride), then the faces-only row, all
    against deface on the same clip."""
    meta = probe(clip)
    theirs = measure_deface(clip, work, deface, args)
    rows = []
    if "yolo" in args.paths:
        for imgsz in args.imgsz:
            for stride in args.stride:
                ours = [run_pipeline(clip, (meta.width, meta.height), meta.n_frames or 0,
                                     BlurInpainter(device=args.device), preset=args.preset, crf=args.crf,
                                     imgsz=imgsz, device=args.device, tracker=Tracker, stride=stride, out_dir=work)
                        for _ in range(args.repeats)]
                row = speed_row(name, meta, "yolov8n-seg", imgsz, stride, median_run(ours), theirs)
                row.update({"backend": "torch", "threads": torch.get_num_threads()})
                row["runs"] = {"ours": ours, "deface": theirs["runs"]}
                rows.append(row)
    if "faces" in args.paths:
        boxes = deface_boxes(deface, clip, work / "deface_boxes.json", thresh=args.face_threshold,
                             backend=args.deface_backend)
        rows += [faces_row(clip, name, meta, work, boxes, theirs, args, setting) for setting in face_settings(args)]
    return rows


COLUMNS = ["clip", "size", "frames", "ours", "backend", "threads", "imgsz", "stride", "ours_fps", "deface_fps_net",
           "ratio_net",
           "ours_fps_with_setup", "deface_fps", "ratio_total", "deface_startup_s", "deface_boxes", "deface_covered",
           "ours_regions", "ours_overlap"]


def optional_int(text: str) -> int | None:
    """An integer, or None for ``default`` / ``full`` / ``none``."""
    return None if text.lower() in ("default", "full", "none") else int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1280x720", help="generated clip size; 'none' skips the generated clip")
    parser.add_argument("--frames", type=int, default=120, help="generated clip length")
    parser.add_argument("--photo-size", default="1280x720", help="photo clip size; 'none' skips the photo clip")
    parser.add_argument("--photo-frames", type=int, default=120, help="photo clip length (three shots)")
    parser.add_argument("--clip", type=Path, action="append", default=[], help="also compare on this video")
    parser.add_argument("--paths", nargs="+", default=["yolo", "faces"], choices=["yolo", "faces"],
                        help="our paths to compare: YOLO blur (speed only) and faces-only blur (same task)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each side per clip (medians reported)")
    parser.add_argument("--imgsz", type=int, nargs="+", default=[640], help="our YOLO detector's input size(s)")
    parser.add_argument("--stride", type=int, nargs="+", default=[1],
                        help="our detection stride(s): detect every k-th frame, the tracker carries masks between")
    parser.add_argument("--face-backend", nargs="+", default=["onnxruntime"],
                        choices=["onnxruntime", "openvino", "auto"], help="faces-only: CenterFace runtime(s)")
    parser.add_argument("--face-threads", nargs="+", type=optional_int, default=[None],
                        help="faces-only: the runtime's intra-op threads ('default': one per core)")
    parser.add_argument("--face-input-size", nargs="+", type=optional_int, default=[None],
                        help="faces-only: longest side frames are resized to for CenterFace ('full': none, as deface)")
    parser.add_argument("--face-stride", type=int, nargs="+", default=[1],
                        help="faces-only: detection stride(s); the tracker carries the masks in between")
    parser.add_argument("--face-threshold", type=float, default=0.2, help="face score threshold of both sides")
    parser.add_argument("--mask-scale", type=float, default=1.3, help="face box growth of both sides")
    parser.add_argument("--cover", type=float, default=0.9,
                        help="share of a deface region's pixels we must blur for it to count as covered")
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
            clips.append((generated_clip(work, parse_size(args.size), args.frames), f"generated {args.size}"))
        if args.photo_size.lower() != "none":
            photos = work / f"photos_{args.photo_size}_{args.photo_frames}.mp4"
            photo_clip(photos, parse_size(args.photo_size), args.photo_frames)
            clips.append((photos, f"photo clip {args.photo_size}"))
        clips += [(path, str(path)) for path in args.clip]
        for clip, name in clips:
            rows += compare(clip, name, work, deface, args)
            print(f"done: {name}", flush=True)
    print_table(rows, COLUMNS, stage_prefix="ours ")
    write_report(args.out, "deface_compare", rows, deface={"version": deface_version(deface),
                                                           "backend": args.deface_backend},
                 settings={"crf": args.crf, "preset": args.preset, "device": args.device,
                           "repeats": args.repeats, "face_threshold": args.face_threshold,
                           "mask_scale": args.mask_scale, "cover": args.cover},
                 load_average=os.getloadavg())


if __name__ == "__main__":
    main()

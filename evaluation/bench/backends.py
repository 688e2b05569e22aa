"""Detector backend benchmark: ms per frame of each backend/precision, and its agreement with FP32 torch.

Run from the repository root:

    python -m evaluation.bench.backends                                  # random yolov8n-seg, imgsz 640, CPU
    python -m evaluation.bench.backends --weights yolov8n-seg.pt --backends onnxruntime:fp32 onnxruntime:int8

Each ``backend:precision`` runs the same model (``--weights``; a ``.yaml`` is built with ``--seed``) on the
repository's photos (``data/*.jpg``, ``data/*.png``, at their own size). Against the FP32 torch model on the
same frames it reports *recall* (reference detections that the candidate finds: same class, box IoU >=
``--match-iou``) and the mean *mask IoU* of those matched pairs, plus ms/frame (median of ``--repeats`` passes
after one warm-up pass). With random weights the agreement numbers say little (scores are all near zero, the
top-k are ties); with the released weights they are the accuracy cost of the export or of INT8.
Exports go to the usual cache (``<cache>/exports``), so a second run only times. Prints a markdown table and
writes JSON.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from evaluation.bench.common import print_table, write_report
from inpaint_anon.device import resolve_device
from inpaint_anon.types import Detections, Frame

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ["backend", "precision", "backend_used", "frames", "ms_frame", "recall", "mask_iou", "matched", "reference",
           "setup_s"]
DEFAULT_RUNS = ("torch:fp32", "onnxruntime:fp32", "onnxruntime:int8", "openvino:fp32", "tensorrt:fp16")


def photo_frames(folder: Path = ROOT / "data") -> list[Frame]:
    """The RGB photos (``*.jpg``, ``*.png``) of ``folder`` as Frames, in name order."""
    paths = sorted([*folder.glob("*.jpg"), *folder.glob("*.png")])
    return [Frame(i, None, np.asarray(Image.open(p).convert("RGB"))) for i, p in enumerate(paths)]


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of boxes xyxy float (N, 4) and (M, 4) -> (N, M)."""
    if len(a) == 0 or len(b) == 0:
        return torch.zeros(len(a), len(b))
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)


def match(reference: Detections, candidate: Detections, min_iou: float = 0.5,
          same_class: bool = True) -> list[tuple[int, int]]:
    """One-to-one pairs (reference index, candidate index) with box IoU >= ``min_iou`` (and the same class when
    ``same_class``): greedy on IoU, the most overlapping pair first (so equal boxes pair up even when scores
    tie), sorted by reference index."""
    iou = box_iou(reference.boxes_xyxy, candidate.boxes_xyxy)
    if same_class:
        same = reference.class_ids[:, None] == candidate.class_ids[None, :]
        iou = torch.where(same, iou, torch.zeros_like(iou))
    pairs: list[tuple[int, int]] = []
    used_ref: set[int] = set()
    used_cand: set[int] = set()
    for flat in torch.argsort(iou.flatten(), descending=True, stable=True).tolist():
        i, j = divmod(flat, iou.shape[1])
        if iou[i, j] < min_iou:
            break
        if i not in used_ref and j not in used_cand:
            pairs.append((i, j))
            used_ref.add(i)
            used_cand.add(j)
    return sorted(pairs)


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """IoU of two bool masks (H, W); 1.0 when both are empty."""
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def agreement(reference: Sequence[Detections], candidate: Sequence[Detections],
              min_iou: float = 0.5) -> dict[str, float]:
    """Recall of ``reference`` detections by ``candidate`` (per frame pairs) and mean mask IoU of the matches.

    Returns ``{"recall": r, "mask_iou": m, "matched": n, "reference": total}``, r and m in [0, 1] (1.0 when the
    reference has no detection; mask_iou 0.0 when nothing matched).
    """
    matched, total, ious = 0, 0, []
    for ref, cand in zip(reference, candidate, strict=True):
        pairs = match(ref, cand, min_iou)
        matched += len(pairs)
        total += len(ref)
        ious += [mask_iou(ref.masks[i], cand.masks[j]) for i, j in pairs]
    return {"recall": matched / total if total else 1.0, "mask_iou": float(np.mean(ious)) if ious else 0.0,
            "matched": matched, "reference": total}


def ms_per_frame(detector: Callable[[Sequence[Frame]], list[Detections]], frames: Sequence[Frame],
                 repeats: int = 3) -> float:
    """Median over ``repeats`` passes of the milliseconds per frame of ``detector`` over ``frames`` one at a time
    (after one warm-up pass)."""
    for frame in frames:
        detector([frame])
    passes = []
    for _ in range(repeats):
        start = time.perf_counter()
        for frame in frames:
            detector([frame])
        passes.append((time.perf_counter() - start) * 1000 / max(1, len(frames)))
    return round(statistics.median(passes), 2)


def build(weights: str, seed: int, **kwargs: Any) -> Any:
    """A YoloSegDetector; a ``.yaml`` build seeded with ``seed`` (the same random weights for every backend)."""
    from inpaint_anon.detect.yolo_seg import YoloSegDetector

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return YoloSegDetector(weights, **kwargs)


def bench(weights: str, runs: Sequence[str], *, imgsz: int, conf: float, device: str, seed: int = 0,
          repeats: int = 3, min_iou: float = 0.5, frames: Sequence[Frame] | None = None) -> list[dict[str, Any]]:
    """One row per ``backend:precision`` in ``runs`` (see the module docstring); a run whose backend cannot be
    used here (ConfigError/WeightsError) gets a row with its ``skipped`` reason."""
    from inpaint_anon.errors import ConfigError, WeightsError

    frames = list(frames) if frames is not None else photo_frames()
    settings = dict(classes=None, conf=conf, imgsz=imgsz, device=device, batch_size=1)
    reference = build(weights, seed, **settings)
    expected = reference(frames)
    rows = []
    for run in runs:
        backend, _, precision = run.partition(":")
        start = time.perf_counter()
        try:
            detector = build(weights, seed, backend=backend, precision=precision or "fp32", **settings)
        except (ConfigError, WeightsError) as error:
            rows.append({"backend": backend, "precision": precision, "skipped": str(error)})
            print(f"skipped {run}: {error}", flush=True)
            continue
        setup = time.perf_counter() - start
        found = detector(frames)
        rows.append({"backend": backend, "precision": precision or "fp32", "backend_used": detector.backend_used,
                     "frames": len(frames), "ms_frame": ms_per_frame(detector, frames, repeats),
                     "setup_s": round(setup, 2),
                     **{k: round(v, 4) for k, v in agreement(expected, found, min_iou).items()},
                     "ms_per_frame": {}})
        print(f"done: {run}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="yolov8n-seg.yaml", help="model (.yaml: seeded random build)")
    parser.add_argument("--backends", nargs="+", default=list(DEFAULT_RUNS), help="backend:precision ...")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--match-iou", type=float, default=0.5)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (on a loaded 2-core machine 1 thread runs torch several times faster)")
    parser.add_argument("--out", type=Path, default=Path("experiments/bench/backends.json"))
    args = parser.parse_args()

    device = str(resolve_device(args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = bench(args.weights, args.backends, imgsz=args.imgsz, conf=args.conf, device=device, seed=args.seed,
                 repeats=args.repeats, min_iou=args.match_iou)
    shown = [r for r in rows if "skipped" not in r]
    print_table(shown, COLUMNS)
    for row in rows:
        if "skipped" in row:
            print(f"skipped {row['backend']}:{row['precision']}: {row['skipped']}")
    write_report(args.out, "backends", rows, weights=args.weights, imgsz=args.imgsz, conf=args.conf, device=device,
                 torch_threads=torch.get_num_threads())


if __name__ == "__main__":
    main()

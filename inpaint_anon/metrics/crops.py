"""Square crops around regions, the inputs of LPIPS and FID.

A region's crop is the square of side ``round(max(box w, box h) * (1 + padding))`` (at least 1 px) centred on
its mask's tight box, shifted to lie inside the frame; a square larger than the frame's shorter side is cut to
that side (the region is then only partly in the crop). Crops keep the pixels around the mask (context), so
the same box cut from the original and the anonymized frame shows the region and its surroundings. Each crop
is resized to ``size`` x ``size`` (bilinear with antialiasing, ``torch.nn.functional.interpolate``) and
rounded back to uint8, so LPIPS and the Inception network see the very same pixels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def square_crop_box(box: tuple[int, int, int, int], height: int, width: int,
                    padding: float) -> tuple[int, int, int, int]:
    """The square crop ``(x1, y1, x2, y2)`` around ``box`` inside an ``height`` x ``width`` frame (module docstring)."""
    x1, y1, x2, y2 = box
    side = max(1, round(max(x2 - x1, y2 - y1) * (1.0 + padding)))
    side = min(side, height, width)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    left = min(max(round(cx - side / 2.0), 0), width - side)
    top = min(max(round(cy - side / 2.0), 0), height - side)
    return left, top, left + side, top + side


def resize_crops(image: np.ndarray, boxes: list[tuple[int, int, int, int]], size: int) -> torch.Tensor:
    """uint8 Tensor (N, 3, size, size): each box of ``image`` (uint8 (H, W, 3) RGB) resized to ``size``."""
    if not boxes:
        return torch.zeros((0, 3, size, size), dtype=torch.uint8)
    out = []
    for x1, y1, x2, y2 in boxes:
        crop = torch.from_numpy(np.ascontiguousarray(image[y1:y2, x1:x2])).permute(2, 0, 1)[None].float()
        resized = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(resized.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)

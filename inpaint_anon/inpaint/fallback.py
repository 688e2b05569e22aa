"""The fail-closed fill: what replaces a region when its inpainter could not fill it.

Privacy fails closed: a region is blurred, and if even the blur fails it is painted solid black.
It is never left as it was.
"""

from __future__ import annotations

import logging

import torch

from inpaint_anon.inpaint.base import InpaintBatch

logger = logging.getLogger(__name__)


def fail_closed_fill(batch: InpaintBatch) -> tuple[torch.Tensor, str]:
    """Fill every region of ``batch`` with a strong blur, or solid black if blurring fails.

    Returns (images uint8 (B, 3, H, W) on the batch's device, the name of what was used:
    ``"blur"`` or ``"solid"``).
    """
    from inpaint_anon.inpaint.fast import BlurInpainter

    try:
        return BlurInpainter(device=str(batch.images.device))(batch).images, "blur"
    except Exception as err:  # noqa: BLE001 - the last resort below cannot fail
        logger.warning("blur fallback failed (%s); regions painted solid black", err)
    images = batch.images.clone()
    for b, dets in enumerate(batch.detections):
        if len(dets):
            images[b][:, dets.union_mask()] = 0
    return images, "solid"

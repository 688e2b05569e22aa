"""The fail-closed fill: what replaces regions an inpainter could not fill.

Privacy fails closed: the regions are filled by a fallback inpainter (a strong blur by default), and if
even that fails they are painted solid black. They are never left as they were.
"""

from __future__ import annotations

import logging

import torch

from inpaint_anon.inpaint.base import InpaintBatch, Inpainter

logger = logging.getLogger(__name__)


def fail_closed_fill(batch: InpaintBatch, fallback: Inpainter | None = None) -> tuple[torch.Tensor, str]:
    """Fill every region of ``batch`` with ``fallback`` (default ``BlurInpainter``), or solid black if it fails.

    Returns (images uint8 (B, 3, H, W) on the batch's device, the name of what filled the regions:
    the fallback's ``name`` or ``"solid"``).
    """
    device = batch.images.device
    try:
        if fallback is None:
            from inpaint_anon.inpaint.fast import BlurInpainter

            fallback = BlurInpainter(device=str(device))
        return fallback(batch).images.to(device), fallback.name
    except Exception as err:  # noqa: BLE001 - the last resort below cannot fail
        logger.warning("fallback failed (%s: %s); regions painted solid black", type(err).__name__, err)
    images = batch.images.clone()
    for image, dets in zip(images, batch.detections):
        image[:, dets.union_mask()] = 0
    return images, "solid"

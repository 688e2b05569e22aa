"""The fail-closed fill: what hides regions an inpainter could not fill, or filled without changing them.

Privacy fails closed: the regions are filled by a fallback inpainter (a strong blur by default), and if
even that fails they are painted solid black. They are never left as they were. Both return fills
(:class:`~inpaint_anon.inpaint.base.RegionFill`) numbered like the batch they were asked for, which the
compositor pastes like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from inpaint_anon.inpaint.base import InpaintBatch, Inpainter, RegionFill
from inpaint_anon.inpaint.fast import FALLBACK_RGB, BlurInpainter, solid_fills

logger = logging.getLogger(__name__)


def fail_closed_fills(
    batch: InpaintBatch, regions: Sequence[tuple[int, int]] | None = None, fallback: Inpainter | None = None
) -> tuple[list[RegionFill], str]:
    """Fills that hide ``regions`` of ``batch``: by ``fallback`` (default ``BlurInpainter``), or solid black
    (:data:`FALLBACK_RGB`) if it fails.

    regions: (frame in batch, region index) pairs; None = every region of every frame.
    Returns (the fills, with ``frame`` and ``region`` indexing ``batch``; the name of what filled them: the
    fallback's ``name`` or ``"solid"``).
    """
    if regions is None:
        regions = [(b, i) for b, dets in enumerate(batch.detections) for i in range(len(dets))]
    if not regions:
        return [], BlurInpainter.name if fallback is None else fallback.name
    try:
        if fallback is None:
            fallback = BlurInpainter(device=batch.images.device)
        sub_batch, frames, indices = select_regions(batch, regions)
        fills = [
            replace(fill, frame=frames[fill.frame], region=-1 if fill.region < 0 else indices[fill.frame][fill.region])
            for fill in fallback(sub_batch).fills
        ]
        return fills, fallback.name
    except Exception as err:  # noqa: BLE001 - the last resort below cannot fail
        logger.warning("fallback failed (%s: %s); regions painted solid black", type(err).__name__, err)
    return solid_fills(batch, FALLBACK_RGB, regions), "solid"


def select_regions(
    batch: InpaintBatch, regions: Sequence[tuple[int, int]]
) -> tuple[InpaintBatch, list[int], list[list[int]]]:
    """A batch holding only ``regions`` of ``batch``; its frames' indices in ``batch``, and per frame the
    indices of its regions in ``batch``'s Detections."""
    frames = sorted({b for b, _ in regions})
    indices = [sorted({i for b, i in regions if b == frame}) for frame in frames]
    sub_batch = InpaintBatch(
        images=batch.images[frames],
        detections=[batch.detections[frame][chosen] for frame, chosen in zip(frames, indices)],
        frame_indices=[batch.frame_indices[frame] for frame in frames],
    )
    return sub_batch, frames, indices

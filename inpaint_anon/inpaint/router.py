"""ClassRouter: a method per class (``anonymize.<class>``), one inpainter pass per method."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch

from inpaint_anon.errors import ConfigError, one_line
from inpaint_anon.inpaint.base import Fallback, InpaintBatch, Inpainter, InpaintOutput
from inpaint_anon.inpaint.fallback import fail_closed_fills, select_regions

logger = logging.getLogger(__name__)


class ClassRouter(Inpainter):
    """Fills each region with the inpainter chosen for its class.

    methods: class name -> inpainter, or None to leave that class as it is (detected and recorded, not
        filled: :attr:`skip_classes`).
    default: the inpainter of every class not in ``methods``.

    A call splits the batch by method into one sub-batch per inpainter (each run once, all its steps) and merges
    their fills: each inpainter's fills keep their order, and the inpainters come in a fixed order (``default``
    first, then those of ``methods`` in its order), so where regions of different methods overlap, the later
    method wins. If one inpainter raises, only its regions get the fail-closed fallback (recorded as
    :class:`~inpaint_anon.inpaint.base.Fallback`); the other methods' fills are kept.

    ``feather`` is False when any inpainter used needs hard edges (a scramble): the whole run is then pasted
    unfeathered; ``lossless`` is True when any needs a lossless output.
    """

    def __init__(self, methods: Mapping[str, Inpainter | None], default: Inpainter) -> None:
        if not isinstance(default, Inpainter):
            raise ConfigError(f"ClassRouter default={default!r} is not an Inpainter")
        for class_name, method in methods.items():
            if method is not None and not isinstance(method, Inpainter):
                raise ConfigError(f"anonymize.{class_name}={method!r} is not an Inpainter (or None for none)")
        self.methods: dict[str, Inpainter | None] = dict(methods)
        self.default = default
        ordered: list[Inpainter] = [default]
        for method in self.methods.values():
            if method is not None and all(method is not seen for seen in ordered):
                ordered.append(method)
        self.inpainters: tuple[Inpainter, ...] = tuple(ordered)
        """Every inpainter used, in paste order (the later wins where regions overlap)."""
        self.skip_classes = frozenset(name for name, method in self.methods.items() if method is None)
        self.feather = all(inpainter.feather for inpainter in self.inpainters)
        self.lossless = any(inpainter.lossless for inpainter in self.inpainters)
        routes = ", ".join(f"{k}={'none' if m is None else m.name}" for k, m in self.methods.items())
        self.name = f"{default.name} ({routes})" if routes else default.name

    @property
    def device(self) -> torch.device:
        return self.default.device

    def start_video(self) -> None:
        for inpainter in self.inpainters:
            inpainter.start_video()

    def run_record(self) -> dict[str, Any]:
        """The inpainters' records merged (later ones win on a shared key), plus ``anonymize``: class -> method."""
        record: dict[str, Any] = {}
        for inpainter in self.inpainters:
            record.update(inpainter.run_record())
        record["anonymize"] = {k: "none" if m is None else m.name for k, m in self.methods.items()}
        record["anonymize_default"] = self.default.name
        return record

    def method(self, class_name: str) -> Inpainter | None:
        """The inpainter of ``class_name`` (None: left as it is)."""
        return self.methods[class_name] if class_name in self.methods else self.default

    def __call__(self, batch: InpaintBatch) -> InpaintOutput:
        """1. group the batch's regions by inpainter; 2. run each inpainter on a sub-batch of its regions (all its
        steps; on an exception the fail-closed fallback for those regions only); 3. renumber the fills and
        fallbacks into ``batch`` and concatenate them in :attr:`inpainters` order."""
        output = InpaintOutput()
        position = {index: b for b, index in enumerate(batch.frame_indices)}
        for inpainter in self.inpainters:
            # 1. the regions of this method
            regions = [(b, i) for b, dets in enumerate(batch.detections)
                       for i, name in enumerate(dets.class_names) if self.method(name) is inpainter]
            if not regions:
                continue
            sub_batch, frames, indices = select_regions(batch, regions)
            sub_batch.timings = batch.timings
            # 2. one pass
            try:
                state: Any = sub_batch
                for step in inpainter.stages():
                    state = step(state)
                if not isinstance(state, InpaintOutput):
                    raise TypeError(f"{inpainter.name} returned {type(state).__name__}, not InpaintOutput")
            except Exception as err:  # noqa: BLE001 - privacy: a failing method's regions must still be hidden
                reason = one_line(err)
                logger.warning("%s failed on frames %s (%s); its regions filled by the fallback", inpainter.name,
                               sub_batch.frame_indices, reason)
                fills, used = fail_closed_fills(batch, regions)
                output.fills.extend(fills)
                output.fallbacks.extend(
                    Fallback(frame_index=batch.frame_indices[b], region=i,
                             class_name=batch.detections[b].class_names[i], used=used, reason=reason)
                    for b, i in regions)
                continue
            # 3. back into the batch's numbering
            output.fills.extend(
                replace(fill, frame=frames[fill.frame],
                        region=-1 if fill.region < 0 else indices[fill.frame][fill.region])
                for fill in state.fills)
            for fallback in state.fallbacks:
                sub = frames.index(position[fallback.frame_index])
                output.fallbacks.append(replace(fallback, region=indices[sub][fallback.region]))
        return output

"""AnonymizePipeline: the staged, streamed run.

decode (thread) -> detect (thread) -> anonymize + composite (caller's thread) -> encode (thread)

Stages are joined by bounded queues, so decoding and detection run ahead of anonymization (prefetch)
and encoding runs behind it, while memory stays flat however long the video is: at most
``queue_size`` frames wait between two stages.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from inpaint_anon.composite import Compositor
from inpaint_anon.detect.base import Detector
from inpaint_anon.errors import ConfigError, InputError
from inpaint_anon.inpaint.base import Fallback, InpaintBatch, Inpainter, InpaintOutput
from inpaint_anon.inpaint.fallback import fail_closed_fill
from inpaint_anon.types import Detections, Frame, RunResult
from inpaint_anon.video import VideoReader, VideoWriter

logger = logging.getLogger(__name__)

_END = object()  # end-of-stream marker passed through the queues


class _Stopped(Exception):
    """Raised inside a stage when another stage failed and the run is being torn down."""


@dataclass
class _Channel:
    """A bounded queue between two stages that gives up when the run is stopped."""

    stop: threading.Event
    maxsize: int

    def __post_init__(self) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=self.maxsize)

    def put(self, item: Any) -> None:
        while not self.stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue
        raise _Stopped

    def get(self) -> Any:
        while not self.stop.is_set():
            try:
                return self._queue.get(timeout=0.05)
            except queue.Empty:
                continue
        raise _Stopped

    def __iter__(self) -> Iterator[Any]:
        """Items until the end marker."""
        while (item := self.get()) is not _END:
            yield item


class _Timings(dict):
    """Stage name -> seconds spent working (not waiting on queues); one writer per key."""

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self[stage] = self.get(stage, 0.0) + time.perf_counter() - start


class _StageThread(threading.Thread):
    """Runs one stage; on failure records the error and stops the whole run."""

    def __init__(self, name: str, work: Callable[[], None], stop: threading.Event) -> None:
        super().__init__(name=f"inpaint_anon-{name}", daemon=True)
        self._work, self._stop_event, self.error = work, stop, None

    def run(self) -> None:
        try:
            self._work()
        except _Stopped:
            pass
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            self.error = err
            self._stop_event.set()


class AnonymizePipeline:
    """Anonymize a video or image: every detected region is replaced by the inpainter's fill.

    Components are passed in (a diffusers habit): any :class:`Detector`, any :class:`Inpainter`, and a
    :class:`Compositor` that dilates and feathers masks and pastes only masked pixels back.

    Args:
        detector: finds regions; called with ``detector.batch_size`` frames at a time.
        inpainter: fills regions; called with ``batch_frames`` consecutive frames at a time.
        compositor: mask dilation / feathering / blending (default ``Compositor()``).
        batch_frames: frames per inpainter call (>= 1).
        queue_size: frames that may wait between two stages (>= 1); bounds memory.
        progress: show a tqdm progress bar (frames, fps) on stderr.

    Privacy fails closed: if the inpainter raises on a batch, that batch's regions are filled by a
    blur fallback (solid black if that fails too) and the run records the event; a region the detector
    reported is never written in the clear.
    """

    def __init__(
        self,
        detector: Detector,
        inpainter: Inpainter,
        compositor: Compositor | None = None,
        *,
        batch_frames: int = 4,
        queue_size: int = 8,
        progress: bool = True,
    ) -> None:
        if batch_frames < 1:
            raise ConfigError(f"batch_frames must be >= 1, got {batch_frames}")
        if queue_size < 1:
            raise ConfigError(f"queue_size must be >= 1, got {queue_size}")
        self.detector = detector
        self.inpainter = inpainter
        self.compositor = compositor if compositor is not None else Compositor()
        self.batch_frames = batch_frames
        self.queue_size = queue_size
        self.progress = progress

    # -- public entry ---------------------------------------------------------------------------------

    def __call__(
        self,
        source: str | Path,
        output: str | Path,
        *,
        overwrite: bool = False,
        keep_metadata: bool = False,
        crf: int = 18,
        preset: str = "medium",
    ) -> RunResult:
        """Anonymize ``source`` into ``output`` and return what happened.

        1. open the source (its metadata) and the output (a temporary file next to it);
        2. start the decode, detect and encode threads joined by bounded queues;
        3. anonymize batches of frames on this thread as they arrive;
        4. on success rename the temporary file to ``output``; on any error delete it and re-raise.
        """
        started = time.perf_counter()
        timings = _Timings()
        inpainter_before = dict(getattr(self.inpainter, "timings", {}))
        events: list[dict[str, Any]] = []
        stop = threading.Event()
        decoded, detected, anonymized = (_Channel(stop, self.queue_size) for _ in range(3))
        counts = {"in": 0, "out": 0}

        # 1. open source and output; both raise InputError before any work starts
        with VideoReader(source) as reader, VideoWriter(
            output, reader.meta, source=source, crf=crf, preset=preset,
            keep_metadata=keep_metadata, overwrite=overwrite,
        ) as writer:
            meta = reader.meta
            bar = tqdm(total=meta.n_frames, unit="frame", disable=not self.progress, desc="anonymize",
                       dynamic_ncols=True)

            def decode() -> None:
                for frame in self._timed_iter(reader, timings, "decode"):
                    counts["in"] += 1
                    decoded.put(frame)
                decoded.put(_END)

            def detect() -> None:
                for frames in _batched(decoded, self.detector.batch_size):
                    with timings("detect"):
                        found = self.detector([f.rgb for f in frames])
                    if len(found) != len(frames):
                        raise RuntimeError(f"detector returned {len(found)} results for {len(frames)} frames")
                    for frame, dets in zip(frames, found):
                        detected.put((frame, dets))
                detected.put(_END)

            def encode() -> None:
                for frame in anonymized:
                    with timings("encode"):
                        writer.write(frame)
                    counts["out"] += 1
                    bar.update(1)

            # 2. start the stages around this thread
            threads = [_StageThread(n, w, stop) for n, w in (("decode", decode), ("detect", detect),
                                                             ("encode", encode))]
            for thread in threads:
                thread.start()
            try:
                # 3. anonymize on this thread
                for pairs in _batched(detected, self.batch_frames):
                    for frame in self._anonymize(pairs, timings, events):
                        anonymized.put(frame)
                anonymized.put(_END)
                threads[-1].join()
            except _Stopped:
                pass  # another stage failed: its error is raised below
            finally:
                stop.set()  # no-op after a clean run; otherwise unblocks every stage
                for thread in threads:
                    thread.join()
                bar.close()
            # 4. a failure anywhere aborts the output (the writer deletes its temporary file)
            for thread in threads:
                if thread.error is not None:
                    raise thread.error
            if counts["out"] != counts["in"]:
                raise RuntimeError(f"wrote {counts['out']} frames but decoded {counts['in']}")
            if counts["in"] == 0:
                raise InputError(f"no frames could be decoded from {source}; check the file plays in a video player")
            if getattr(writer, "padded_size", None):
                events.append({"event": "padded", "to_size": list(writer.padded_size),
                               "reason": "yuv420p needs even width and height"})
        for step, seconds in getattr(self.inpainter, "timings", {}).items():
            timings[f"inpaint.{step}"] = seconds - inpainter_before.get(step, 0.0)
        return RunResult(
            out_path=Path(output),
            meta=meta,
            frames_in=counts["in"],
            frames_out=counts["out"],
            timings=dict(timings),
            wall_seconds=time.perf_counter() - started,
            events=events,
        )

    # -- stages ---------------------------------------------------------------------------------------

    @staticmethod
    def _timed_iter(iterable: Any, timings: _Timings, stage: str) -> Iterator[Any]:
        iterator = iter(iterable)
        while True:
            with timings(stage):
                item = next(iterator, _END)
            if item is _END:
                return
            yield item

    def _anonymize(self, pairs: list[tuple[Frame, Detections]], timings: _Timings,
                   events: list[dict[str, Any]]) -> list[Frame]:
        """Fill and composite one batch of frames; frames without regions pass through untouched."""
        if not any(len(dets) for _, dets in pairs):
            return [frame for frame, _ in pairs]
        device = self.inpainter.device
        feather = self.inpainter.feather
        with timings("to_device"):
            images = torch.from_numpy(np.stack([f.rgb for f, _ in pairs])).permute(0, 3, 1, 2).to(device)
            dets = [d.to(device) for _, d in pairs]
        with timings("composite"):
            regions, alphas = zip(*(self.compositor.prepare(d, feather=feather) for d in dets))
        batch = InpaintBatch(images=images, detections=list(regions), frame_indices=[f.index for f, _ in pairs])
        with timings("inpaint"):
            filled = self._inpaint_fail_closed(batch)
        for fallback in filled.fallbacks:
            events.append({"event": "fallback", **fallback.as_dict()})
        with timings("composite"):
            out = self.compositor.blend(images, filled.images, torch.stack(alphas)).permute(0, 2, 3, 1).cpu().numpy()
        return [replace(frame, rgb=np.ascontiguousarray(rgb)) for (frame, _), rgb in zip(pairs, out)]

    def _inpaint_fail_closed(self, batch: InpaintBatch) -> InpaintOutput:
        """Run the inpainter; if it raises, fill every region with the fail-closed fallback instead."""
        try:
            return self.inpainter(batch)
        except Exception as err:  # noqa: BLE001 - privacy: any failure must still hide the regions
            reason = f"{type(err).__name__}: {err}".splitlines()[0][:200]
            logger.warning("%s failed on frames %s (%s); regions filled by the fallback",
                           self.inpainter.name, batch.frame_indices, reason)
            images, used = fail_closed_fill(batch)
            return InpaintOutput(images=images, fallbacks=[
                Fallback(frame_index=i, region=r, class_name=name, used=used, reason=reason)
                for i, d in zip(batch.frame_indices, batch.detections) for r, name in enumerate(d.class_names)
            ])


def _batched(channel: _Channel, size: int) -> Iterator[list[Any]]:
    """Group a channel's items into lists of ``size`` (the last one may be shorter)."""
    batch: list[Any] = []
    for item in channel:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch

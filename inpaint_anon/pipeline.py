"""AnonymizePipeline: the staged, streamed run.

decode -> detect -> track -> prepare -> the inpainter's steps -> composite -> encode, each in its own thread

Stages are joined by bounded queues, so decoding and detection run ahead of anonymization (prefetch)
and encoding runs behind it, while memory stays flat however long the video is: at most
``queue_size`` frames wait between two stages.

With :class:`~inpaint_anon.realtime.RealtimeSettings` (``realtime=true``) the run keeps a latency bound instead:
the decoder never waits (a full queue loses its oldest frame), the detection stage drops frames that could not
be written in time and detects only when the budget allows, the tracker's held masks covering the frames in
between (see :mod:`inpaint_anon.realtime`).
"""

from __future__ import annotations

import contextvars
import logging
import math
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from inpaint_anon.composite import Compositor, WindowAlpha
from inpaint_anon.detect.base import Detector
from inpaint_anon.errors import ConfigError, InputError, one_line
from inpaint_anon.inpaint.base import Fallback, InpaintBatch, Inpainter, InpaintOutput
from inpaint_anon.inpaint.fallback import fail_closed_fills
from inpaint_anon.inpaint.fast import FALLBACK_RGB, solid_fills
from inpaint_anon.realtime import RealtimeSettings, RealtimeStats
from inpaint_anon.records import DetectionWriter
from inpaint_anon.timing import Timings
from inpaint_anon.track import Tracker
from inpaint_anon.types import Detections, Frame, RunResult
from inpaint_anon.video import VideoReader, VideoSettings, VideoWriter
from inpaint_anon.video.live import LiveSource

if TYPE_CHECKING:
    from inpaint_anon.whitelist import Whitelist

logger = logging.getLogger(__name__)

_END = object()  # end-of-stream marker passed through the queues
_DROPPED = object()  # realtime: in place of a frame's detections, the frame was dropped before detection
_SIGNAL_POLL_S = 0.1  # how often the main thread wakes to run signal handlers while the stages work


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

    def put_latest(self, item: Any, dropped: Callable[[Any], None]) -> None:
        """Put without waiting: when the queue is full its oldest item makes room and is handed to ``dropped``
        (for one producer: the realtime decoder, which must never fall behind its source)."""
        while not self.stop.is_set():
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                try:
                    dropped(self._queue.get_nowait())
                except queue.Empty:
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


class _StageThread(threading.Thread):
    """Runs one stage; on failure records the error and stops the whole run. The stage runs in a copy of the
    caller's context variables (e.g. the web UI's progress bar follows the encode stage's tqdm updates)."""

    def __init__(self, name: str, work: Callable[[], None], stop: threading.Event) -> None:
        super().__init__(name=f"inpaint_anon-{name}", daemon=True)
        self._work, self._stop_event, self.error = work, stop, None
        self._context = contextvars.copy_context()

    def run(self) -> None:
        try:
            self._context.run(self._work)
        except _Stopped:
            pass
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            self.error = err
            self._stop_event.set()


class AnonymizePipeline:
    """Anonymize a video or image: every detected region is replaced by the inpainter's fill.

    Components are passed in (a diffusers habit): any :class:`Detector`, any :class:`Inpainter`, and a
    :class:`Compositor` that dilates and feathers masks, pastes the inpainter's fills into the frames (the
    one paste) and tells which regions the paste left nearly unchanged.

    Args:
        detector: finds regions; called with ``detector.batch_size`` frames at a time.
        tracker: makes the :class:`~inpaint_anon.track.Tracker` of a run (called once per video with
            ``fps=``): stable ids, masks held through misses, backfilled and interpolated; None = no tracking.
        detect_stride: run the detector on every k-th frame only; the tracker carries masks in between.
        inpainter: fills regions; called with ``batch_frames`` consecutive frames at a time.
        compositor: mask dilation / feathering / blending (default ``Compositor()``).
        batch_frames: frames per inpainter call (>= 1).
        queue_size: frames that may wait between two stages (>= 1); bounds memory.
        progress: show a tqdm progress bar (frames, fps) on stderr.
        realtime: keep a latency bound by dropping frames before detection (``enabled``; see
            :mod:`inpaint_anon.realtime`); None or not enabled = every frame is processed.
        whitelist: authorised faces (:class:`~inpaint_anon.whitelist.Whitelist`; needs a tracker): after tracking,
            the face regions whose track is confirmed as a whitelisted person are left visible (still in the
            recorded detections); ``RunResult.whitelist`` records each face track's match. None = no whitelist.

    Privacy fails closed: if the inpainter raises on a batch, that batch's regions are filled by a
    blur fallback (solid black if that fails too) and the run records the event. After the paste, every
    region whose pixels changed by less than ``compositor.min_change`` (e.g. a generator that returned its
    input) gets the blur fallback, and if it is still unchanged (a flat patch blurs to itself) solid black;
    each such region is recorded as a ``fallback`` event. A region the detector reported is never written in
    the clear.
    """

    def __init__(
        self,
        detector: Detector,
        inpainter: Inpainter,
        compositor: Compositor | None = None,
        *,
        tracker: Callable[..., Tracker] | None = None,
        detect_stride: int = 1,
        batch_frames: int = 4,
        queue_size: int = 8,
        progress: bool = True,
        realtime: RealtimeSettings | None = None,
        whitelist: Whitelist | None = None,
    ) -> None:
        if batch_frames < 1:
            raise ConfigError(f"batch_frames must be >= 1, got {batch_frames}")
        if queue_size < 1:
            raise ConfigError(f"queue_size must be >= 1, got {queue_size}")
        if not isinstance(detect_stride, int) or detect_stride < 1:
            raise ConfigError(f"detect_stride must be an integer >= 1, got {detect_stride!r}")
        if detect_stride > 1 and tracker is None:
            raise ConfigError(f"detect_stride={detect_stride} needs a tracker to carry masks between detections; "
                              "enable tracking (tracker=default) or use detect_stride=1")
        if whitelist is not None and tracker is None:
            raise ConfigError("a whitelist matches face tracks and needs a tracker; enable tracking (tracker=default) "
                              "or remove the whitelist")
        self.whitelist = whitelist
        self.detector = detector
        self.tracker = tracker
        self.detect_stride = detect_stride
        self.inpainter = inpainter
        self.compositor = compositor if compositor is not None else Compositor()
        self.batch_frames = batch_frames
        self.queue_size = queue_size
        self.progress = progress
        self.realtime = realtime if realtime is not None and realtime.enabled else None

    # -- public entry ---------------------------------------------------------------------------------

    def __call__(
        self,
        source: str | Path | LiveSource,
        output: str | Path,
        *,
        overwrite: bool = False,
        keep_metadata: bool = False,
        video: VideoSettings | None = None,
        crf: int | None = None,
        preset: str | None = None,
        record_detections: str | Path | None = None,
    ) -> RunResult:
        """Anonymize ``source`` into ``output`` and return what happened.

        1. open the source (its metadata) and the output (a temporary file next to it);
        2. run the stages, each in its own thread, joined by bounded queues: decode -> detect -> track -> prepare
           (masks to fill regions and alpha) -> the inpainter's steps (one, or several that overlap, e.g.
           VAE encode / U-Net / VAE decode) -> composite (paste the fills; obscure regions left unchanged)
           -> encode;
        3. on success rename the temporary file to ``output``; on any error delete it and re-raise.

        ``source``: a file (video, image, image folder) or a :class:`~inpaint_anon.video.live.LiveSource`
        (camera, URL, stdin); ``output``: a file, an ``.m3u8`` playlist or a stream URL (see
        :mod:`inpaint_anon.video.live`).
        ``video``: encoder settings and the input pixel limit (:class:`~inpaint_anon.video.VideoSettings`, the
        ``video:`` config block; defaults when None); ``crf`` / ``preset`` replace its values when given.
        ``record_detections``: also write each frame's final (tracked, not yet dilated) detections there
        (:class:`~inpaint_anon.records.DetectionWriter` format), for evaluation; kept only on success.

        In a realtime run (``realtime`` enabled) frames may be dropped before detection: ``frames_out`` is then
        ``frames_in`` minus the dropped ones, and ``RunResult.realtime`` holds the latency stats.
        """
        started = time.perf_counter()
        timings = Timings()  # this run's stages
        inpaint_timings = Timings()  # the inpainter's own sub-steps, handed to it with every batch
        events: list[dict[str, Any]] = []
        stop = threading.Event()
        counts = {"in": 0, "out": 0}
        regions = _RegionCount()  # RunResult.regions
        realtime = self.realtime
        stats = RealtimeStats(realtime.stats_seconds) if realtime is not None else None
        clock = time.monotonic
        arrived: dict[int, float] = {}  # realtime: frame index -> when it was decoded (its latency starts there)
        left_detect: dict[int, float] = {}  # realtime: frame index -> when it left the detection stage
        estimate = {"detect": 0.0, "tail": 0.0}  # realtime: seconds per detection, and from detection to encoder
        steps = self.inpainter.stages()

        # 1. open source and output; both raise InputError before any work starts
        video = (video if video is not None else VideoSettings()).with_overrides(crf=crf, preset=preset)
        with VideoReader(source, max_pixels=video.max_pixels) as reader, VideoWriter(
            output, reader.meta, source=source, video=video, keep_metadata=keep_metadata, overwrite=overwrite,
        ) as writer, _detections_writer(record_detections, source, self.detector.names) as recorder:
            meta = reader.meta
            self.inpainter.start_video()  # e.g. a scramble refuses a second video (its keystream)
            tracker = self.tracker(fps=float(meta.fps or 30)) if self.tracker is not None else None
            matcher = self.whitelist.tracker() if self.whitelist is not None else None
            if realtime is not None:
                self._check_realtime(realtime, tracker, float(meta.fps or 30))
            # realtime: the decoded queue has room for the frames that arrive during one detection within the bound
            decoded = _Channel(stop, self.queue_size if realtime is None else max(
                self.queue_size, math.ceil(realtime.max_latency_s * float(meta.fps or 30)) + 2))
            detected, tracked, prepared, *inpainted, composited = (
                _Channel(stop, self.queue_size) for _ in range(4 + len(steps)))
            bar = tqdm(total=meta.n_frames, unit="frame", disable=not self.progress, desc="anonymize",
                       dynamic_ncols=True)

            def decode() -> None:
                if realtime is None:
                    for frame in self._timed_iter(reader, timings, "decode"):
                        counts["in"] += 1
                        decoded.put(frame)
                    return
                paced = None if isinstance(source, LiveSource) else clock()  # a file is read at its frame rate
                for frame in self._timed_iter(reader, timings, "decode"):
                    if paced is not None and frame.pts is not None:
                        time.sleep(max(0.0, paced + float(frame.pts * meta.time_base) - clock()))
                    counts["in"] += 1
                    arrived[frame.index] = clock()
                    stats.arrived()
                    decoded.put_latest(frame, lambda old: stats.drop())  # the detect stage fills its index in

            def detect() -> None:
                if realtime is not None:
                    return detect_realtime()
                for frames in _batched_strided(decoded, self.detector.batch_size, self.detect_stride):
                    chosen = [f for f in frames if f.index % self.detect_stride == 0]
                    with timings("detect"):
                        found = self.detector(chosen) if chosen else []
                    _check_detected(chosen, found)
                    by_index = {f.index: d for f, d in zip(chosen, found)}
                    for frame in frames:
                        detected.put((frame, by_index.get(frame.index)))  # None: the detector did not run

            def detect_realtime() -> None:
                """One frame at a time: drop it (too late to be written within the bound), detect on it (at least
                ``detect_stride`` frames after the last detection and the budget allows, or ``max_detect_gap``
                frames after it whatever the budget), or pass it on to the tracker's held masks."""
                budget, gap = realtime.max_latency_s, realtime.max_detect_gap if tracker is not None else 1
                expected, last_detected = None, None  # next frame index; index of the last detected frame
                for frame in decoded:
                    for index in range(expected if expected is not None else frame.index, frame.index):
                        detected.put((index, _DROPPED))  # pushed out of the full queue by the decoder
                        arrived.pop(index, None)
                    expected = frame.index + 1
                    age, tail = clock() - arrived[frame.index], estimate["tail"]
                    # cannot be written in time: dropped, never shown; but a frame is always let into an idle
                    # pipeline (nothing in flight), so a pipeline slower than the bound still shows every frame
                    # it can, each at the least latency it can
                    if age + tail > budget and left_detect:
                        stats.drop()
                        arrived.pop(frame.index)
                        detected.put((frame.index, _DROPPED))
                        continue
                    since = None if last_detected is None else frame.index - last_detected
                    due = since is None or since >= gap  # a hold must never run out
                    wanted = since is None or since >= self.detect_stride
                    if due or (wanted and age + estimate["detect"] + tail <= budget):
                        started_at = clock()
                        with timings("detect"):
                            found = self.detector([frame])
                        _check_detected([frame], found)
                        estimate["detect"] = _ewma(estimate["detect"], clock() - started_at)
                        last_detected, dets = frame.index, found[0]
                    else:
                        dets = None  # the tracker's held masks cover it
                    stats.passed(detected=dets is not None)
                    left_detect[frame.index] = clock()
                    detected.put((frame, dets))

            def emit(frame: Frame, dets: Detections) -> None:
                if recorder is not None:
                    recorder.write(frame.index, dets)
                regions.add(dets)
                if matcher is not None:  # confirmed whitelisted faces are left out of what is anonymized
                    with timings("whitelist"):
                        dets = dets[~matcher.reveal(frame, dets)]
                tracked.put((frame, dets))

            def track() -> None:
                if tracker is None:
                    for frame, dets in detected:
                        if dets is not _DROPPED:
                            emit(frame, dets)
                    return
                waiting: dict[int, Frame] = {}  # frames held back for the tracker's look-ahead
                for frame, dets in detected:
                    with timings("track"):
                        if dets is _DROPPED:  # frame is the dropped frame's index: it moves the tracker's clock
                            final = tracker.drop(frame)
                        else:
                            waiting[frame.index] = frame
                            final = tracker.push(frame.index, dets)
                    for index, tracked_dets in final:
                        emit(waiting.pop(index), tracked_dets)
                with timings("track"):
                    final = tracker.flush()
                for index, tracked_dets in final:
                    emit(waiting.pop(index), tracked_dets)

            def prepare() -> None:
                for pairs in _batched(tracked, self.batch_frames):
                    with timings("composite"):
                        work = self._prepare(pairs, inpaint_timings)
                    prepared.put(work)

            def inpaint_step(index: int) -> Callable[[], None]:
                source_channel, sink = ([prepared, *inpainted])[index], inpainted[index]

                def work() -> None:
                    for item in source_channel:
                        with timings("inpaint"):
                            self._run_step(steps[index], index == len(steps) - 1, item, events)
                        sink.put(item)
                return work

            def composite() -> None:
                for item in inpainted[-1]:
                    with timings("composite"):
                        frames = self._composite(item, events)
                    for frame in frames:
                        composited.put(frame)

            def encode() -> None:
                shown = clock()
                for frame in composited:
                    with timings("encode"):
                        writer.write(frame)
                    counts["out"] += 1
                    bar.update(1)
                    if stats is None:
                        continue
                    now = clock()
                    stats.written(now - arrived.pop(frame.index))
                    estimate["tail"] = _ewma(estimate["tail"], now - left_detect.pop(frame.index))
                    if now - shown >= 1.0:
                        bar.set_postfix(stats.postfix(), refresh=False)
                        shown = now

            # 2. run every stage in its own thread
            stages = [("decode", decode, decoded), ("detect", detect, detected), ("track", track, tracked),
                      ("prepare", prepare, prepared),
                      *((f"inpaint{i}", inpaint_step(i), inpainted[i]) for i in range(len(steps))),
                      ("composite", composite, composited), ("encode", encode, None)]
            try:
                _run_stages(stages, stop)
            finally:
                bar.close()
            # 3. a failure anywhere has aborted the output (the writer deletes its temporary file)
            dropped = stats.dropped if stats is not None else 0
            if counts["out"] + dropped != counts["in"]:
                raise RuntimeError(f"wrote {counts['out']} frames and dropped {dropped} but decoded {counts['in']}")
            if counts["in"] == 0:
                raise InputError(f"no frames could be decoded from {source}; check the file plays in a video player")
            if tracker is not None:
                events.append({"event": "tracking", **tracker.stats})
            if writer.padded_size is not None:
                events.append({"event": "padded", "to_size": list(writer.padded_size),
                               "reason": "yuv420p needs even width and height"})
        timings.update({f"inpaint.{step}": seconds for step, seconds in inpaint_timings.items()})
        return RunResult(
            out_path=Path(output),
            meta=meta,
            frames_in=counts["in"],
            frames_out=counts["out"],
            timings=dict(timings),
            wall_seconds=time.perf_counter() - started,
            events=events,
            realtime=stats.summary(realtime) if stats is not None else None,
            whitelist=matcher.record if matcher is not None else None,
            regions=regions.counts,
        )

    @staticmethod
    def _check_realtime(realtime: RealtimeSettings, tracker: Tracker | None, fps: float) -> None:
        """ConfigError when the tracker cannot serve the latency bound: its look-ahead alone is longer, or its
        holds end before ``max_detect_gap`` frames without detection."""
        if tracker is None:
            return
        look_ahead_ms = tracker.delay / fps * 1000.0
        if look_ahead_ms >= realtime.max_latency_ms:
            raise ConfigError(
                f"the tracker's look-ahead of {tracker.delay} frames ({look_ahead_ms:.0f} ms at {fps:g} fps) is "
                f"longer than realtime.max_latency_ms={realtime.max_latency_ms:g}; lower tracker.max_gap and "
                "tracker.backfill_frames (realtime.tracker sets both to 0) or raise realtime.max_latency_ms")
        if realtime.max_detect_gap > tracker.hold_frames:
            raise ConfigError(
                f"realtime.max_detect_gap={realtime.max_detect_gap} is more than tracker.hold_frames="
                f"{tracker.hold_frames}: frames that far from a detection would have no held mask; lower "
                "realtime.max_detect_gap or raise tracker.hold_frames")

    # -- stages ---------------------------------------------------------------------------------------

    @staticmethod
    def _timed_iter(iterable: Any, timings: Timings, stage: str) -> Iterator[Any]:
        iterator = iter(iterable)
        while True:
            with timings(stage):
                item = next(iterator, _END)
            if item is _END:
                return
            yield item

    def _prepare(self, pairs: list[tuple[Frame, Detections]], timings: Timings) -> _Work:
        """Frames and detections -> the inpainter's batch (masks grown to fill regions) and each frame's alpha.

        1. leave out regions of the inpainter's ``skip_classes`` (``anonymize.<class>=none``): neither filled
           nor guarded (they are still in the recorded detections);
        2. keep only the frames with a region: the others pass through untouched (decode + encode only); a batch
           without any region needs no inpainting: its work is marked done;
        3. stack the kept frames (the one copy of their pixels: the batch reads them, the paste writes into the
           copy) and grow their masks into fill regions and alphas kept as windows (:class:`WindowAlpha`).
        ``timings``: handed to the inpainter in the batch (its sub-steps' seconds).
        """
        # 1. Skipped classes
        skip = self.inpainter.skip_classes
        kept = [dets if not skip else dets[torch.tensor([n not in skip for n in dets.class_names], dtype=torch.bool)]
                for _, dets in pairs]
        # 2. Frames with regions
        members = [j for j, dets in enumerate(kept) if len(dets)]
        if not members:
            return _Work(pairs, done=True)
        # 3. The batch
        device, feather = self.inpainter.device, self.inpainter.feather
        pixels = np.stack([pairs[j][0].rgb for j in members])  # uint8 (B, H, W, 3): becomes the output frames
        images = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(device)
        regions = [kept[j].to(device) for j in members]
        fill_regions, alphas = zip(*(self.compositor.prepare_windows(dets, feather=feather) for dets in regions))
        batch = InpaintBatch(images=images, detections=list(fill_regions),
                             frame_indices=[pairs[j][0].index for j in members], timings=timings)
        return _Work(pairs, batch=batch, regions=regions, alphas=list(alphas), state=batch, members=members,
                     pixels=pixels)

    def _run_step(self, step: Callable[[Any], Any], last: bool, work: _Work, events: list[dict[str, Any]]) -> None:
        """Apply one inpainter step; if it raises, fill every region of the batch with the fail-closed fallback."""
        if work.done:
            return
        try:
            work.state = step(work.state)
            work.done = last
        except Exception as err:  # noqa: BLE001 - privacy: any failure must still hide the regions
            reason = one_line(err)
            logger.warning("%s failed on frames %s (%s); regions filled by the fallback",
                           self.inpainter.name, work.batch.frame_indices, reason)
            fills, used = fail_closed_fills(work.batch)
            work.state, work.done = InpaintOutput(fills=fills, fallbacks=[
                Fallback(frame_index=i, region=r, class_name=name, used=used, reason=reason)
                for i, d in zip(work.batch.frame_indices, work.batch.detections)
                for r, name in enumerate(d.class_names)
            ]), True
        if work.done:
            events.extend({"event": "fallback", **f.as_dict()} for f in work.state.fallbacks)

    def _composite(self, work: _Work, events: list[dict[str, Any]]) -> list[Frame]:
        """The frames with the inpainter's fills pasted in (only inside the fills' windows), every region left
        nearly unchanged obscured by the fallback (see :meth:`_obscure_unchanged`).

        The paste writes into the batch's own copy of the frames' pixels (``work.pixels``), which become the
        output frames; the decoded frames stay the originals the guard compares with. Frames without regions
        are passed on as they came.
        """
        if work.batch is None:
            return [frame for frame, _ in work.pairs]
        if not isinstance(work.state, InpaintOutput):
            raise TypeError(f"{self.inpainter.name}: its last step returned {type(work.state).__name__}, "
                            "not InpaintOutput")
        out = torch.from_numpy(work.pixels).permute(0, 3, 1, 2)  # CPU view of the copy the batch came from
        self.compositor.compose(work.batch.images, work.state.fills, work.alphas, out=out)
        self._obscure_unchanged(work, out, events)
        frames = [frame for frame, _ in work.pairs]
        for b, j in enumerate(work.members):
            frames[j] = replace(frames[j], rgb=work.pixels[b])
        return frames

    def _obscure_unchanged(self, work: _Work, out: torch.Tensor, events: list[dict[str, Any]]) -> None:
        """The guard, on ``out`` (uint8 (B, 3, H, W), the composed frames; changed in place).

        1. find the regions whose pixels changed by less than ``compositor.min_change``;
        2. paste the fail-closed fallback (blur, computed from the original frames) over them;
        3. paste solid black over those still unchanged (a flat patch blurs to itself), and stop there: the
           region is then the fallback colour, which is as obscured as it gets.
        Each region found in 1 is logged and recorded as a ``fallback`` event.
        """
        compositor = self.compositor
        originals = [_chw_view(work.pairs[j][0].rgb) for j in work.members]
        # 1. Regions left (nearly) as they were
        weak = compositor.unchanged(originals, out, work.regions)
        if not weak:
            return
        # The batch's images may share memory with ``out`` (on the CPU): the fallback reads the originals.
        batch = replace(work.batch, images=torch.stack(originals).to(work.batch.images.device))
        # 2. The fallback
        fills, used = fail_closed_fills(batch, [(b, i) for b, i, _ in weak])
        compositor.compose(batch.images, fills, work.alphas, out=out)
        # 3. Solid black where the fallback changed nothing either
        still = {(b, i) for b, i, _ in compositor.unchanged(originals, out, work.regions)}
        still &= {(b, i) for b, i, _ in weak}
        compositor.compose(batch.images, solid_fills(batch, FALLBACK_RGB, sorted(still)), work.alphas, out=out)
        for b, i, change in weak:
            fallback = Fallback(
                frame_index=batch.frame_indices[b], region=i, class_name=work.regions[b].class_names[i],
                used="solid" if (b, i) in still else used,
                reason=f"left nearly unchanged: mean change {change:.2f} < min_change {compositor.min_change:g}",
            )
            logger.warning("frame %d region %d (%s): %s; filled by %s", fallback.frame_index, i,
                           fallback.class_name, fallback.reason, fallback.used)
            events.append({"event": "fallback", **fallback.as_dict()})


@dataclass
class _Work:
    """One batch of frames between the prepare and composite stages.

    pairs: the frames and their detections; batch: what the inpainter fills, the B frames of ``pairs`` with
    a region (None when no frame has one); members: those frames' positions in ``pairs``; pixels: uint8
    (B, H, W, 3), their pixels copied (the batch's images on the CPU; the paste writes the output into it);
    regions: the B frames' detections on the inpainter's device (original masks, for the guard); alphas: the B
    frames' blend weights as windows; state: the latest inpainter step's result, an InpaintOutput once done.
    """

    pairs: list[tuple[Frame, Detections]]
    batch: InpaintBatch | None = None
    regions: list[Detections] | None = None
    alphas: list[WindowAlpha] | None = None
    state: Any = None
    done: bool = False
    members: list[int] = field(default_factory=list)
    pixels: np.ndarray | None = None


class _RegionCount:
    """Regions per class over a run (:attr:`RunResult.regions`): each track id once, untracked regions per frame."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._tracks: set[tuple[str, int]] = set()

    def add(self, detections: Detections) -> None:
        """Count one frame's final detections (``track_ids`` int (N,) or None)."""
        ids = detections.track_ids.tolist() if detections.track_ids is not None else [None] * len(detections)
        for name, track in zip(detections.class_names, ids, strict=True):
            if track is not None and (name, track) in self._tracks:
                continue
            if track is not None:
                self._tracks.add((name, track))
            self.counts[name] = self.counts.get(name, 0) + 1


def _run_stages(stages: list[tuple[str, Callable[[], None], _Channel | None]], stop: threading.Event) -> None:
    """Run each stage in its own thread; each ends its output channel; the first failure stops all and is raised."""

    def ended(work: Callable[[], None], sink: _Channel | None) -> Callable[[], None]:
        def run() -> None:
            work()
            if sink is not None:
                sink.put(_END)
        return run

    threads = [_StageThread(name, ended(work, sink), stop) for name, work, sink in stages]
    try:
        for thread in threads:  # inside the try: an interruption (a signal) while starting stops the started ones
            thread.start()
        while threads[-1].is_alive():
            # A timed wait: a signal the kernel hands to another thread (a stage, an encoder's) only runs its
            # Python handler when the main thread wakes; an untimed join slept through it to the end of the run.
            threads[-1].join(timeout=_SIGNAL_POLL_S)
    finally:
        stop.set()  # no-op after a clean run; otherwise unblocks every stage
        for thread in threads:
            if thread.ident is not None:  # started
                thread.join()
    for thread in threads:
        if thread.error is not None:
            raise thread.error


def _chw_view(rgb: np.ndarray) -> torch.Tensor:
    """uint8 (3, H, W): a read-only torch view of an (H, W, 3) frame (decoded images may be read-only arrays;
    the view is only read, so torch's warning about them does not apply)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(rgb).permute(2, 0, 1)


def _detections_writer(path: str | Path | None, source: str | Path,
                       names: dict[int, str]) -> DetectionWriter | nullcontext[None]:
    """A DetectionWriter for ``path`` (finished on a clean exit, deleted on an error), or nothing."""
    if path is None:
        return nullcontext()
    return DetectionWriter(path, key={"source": str(source), "content": "final tracked detections"}, names=names)


def _check_detected(frames: list[Frame], found: list[Detections]) -> None:
    """RuntimeError unless the detector gave one Detections per frame, with masks at that frame's size (so
    no region can land off the pixels it covers)."""
    if len(found) != len(frames):
        raise RuntimeError(f"detector returned {len(found)} results for {len(frames)} frames")
    for frame, dets in zip(frames, found):
        if (dets.height, dets.width) != (frame.height, frame.width):
            raise RuntimeError(f"detector returned masks of {dets.height}x{dets.width} for frame {frame.index} of "
                               f"{frame.height}x{frame.width} (HxW); detectors give masks at frame resolution")


def _batched_strided(channel: _Channel, size: int, stride: int) -> Iterator[list[Frame]]:
    """Group frames so that each group holds ``size`` frames whose index is a multiple of ``stride`` (the
    ones to detect on), with the frames in between; the last group may hold fewer."""
    group: list[Frame] = []
    chosen = 0
    for frame in channel:
        group.append(frame)
        chosen += frame.index % stride == 0
        if chosen == size:
            yield group
            group, chosen = [], 0
    if group:
        yield group


def _ewma(previous: float, value: float, weight: float = 0.2) -> float:
    """An exponentially weighted moving average (the first value is taken as it is)."""
    return value if previous == 0.0 else previous + weight * (value - previous)


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

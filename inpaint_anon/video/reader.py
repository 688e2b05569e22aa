"""Reading: :class:`VideoReader` and :func:`probe` for video files (PyAV) and images (Pillow, see ``images``).

Video is decoded one frame at a time on FFmpeg's own threads; a display matrix is applied to the pixels, and
``VideoMeta.rotation`` says by how many degrees **clockwise** the stored pixels were turned (an upright phone
video recorded in portrait reports 90). Frames larger than ``max_pixels`` (``video.max_pixels``) are refused
before any is decoded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from fractions import Fraction
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np
from av.container import InputContainer

from inpaint_anon.errors import InputError
from inpaint_anon.types import Frame, VideoMeta
from inpaint_anon.video.formats import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES
from inpaint_anon.video.images import ImageSource
from inpaint_anon.video.live import LiveAudio, LiveSource, StreamLost, StreamSpec
from inpaint_anon.video.settings import check_frame_size

if TYPE_CHECKING:
    from typing_extensions import Self

logger = logging.getLogger("inpaint_anon")

_TRUNCATION_TOLERANCE = 0.02
"""Fraction of the announced length (and at least two frames) a file may fall short before it is truncated."""


def existing_input(path: str | Path, role: str = "input") -> Path:
    """``path`` as a Path, or InputError when it does not exist or is a folder."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{role} not found: {path}; check the path")
    if path.is_dir():
        raise InputError(f"{role} is a folder, not a file: {path}; pass a video or image file")
    return path


def ffmpeg_reason(error: Exception) -> str:
    """FFmpeg's short description of ``error`` (without the file name PyAV appends)."""
    return getattr(error, "strerror", None) or str(error)


def open_container(path: Path) -> InputContainer:
    try:
        return av.open(str(path), "r")
    except av.FFmpegError as error:
        raise InputError(
            f"cannot read {path}: not a video or image, or truncated or corrupt ({ffmpeg_reason(error)}); "
            "check that it plays in a media player, or re-export it"
        ) from error


def _quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns (0..3) that bring ``frame`` upright, from its display matrix."""
    return round(frame.rotation / 90) % 4


def _clockwise_degrees(quarter_turns: int) -> int:
    """The rotation a player applies to the stored pixels, in clockwise degrees (0, 90, 180, 270)."""
    return (-90 * quarter_turns) % 360


def _stream_seconds(stream: av.video.stream.VideoStream) -> float | None:
    """The stream's duration announced by the container (seconds), or None when it does not say.

    MP4/MOV/AVI store it in the stream header; Matroska writers store it as a ``DURATION`` tag
    (``HH:MM:SS.nnnnnnnnn``).
    """
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = next((v for k, v in stream.metadata.items() if k.upper() == "DURATION"), "")
    hours, _, rest = tag.partition(":")
    minutes, _, seconds = rest.partition(":")
    try:
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


class _VideoSource:
    """Frames of the first video stream of a media file, decoded lazily by PyAV.

    The first frame is decoded on opening: it carries the display matrix and the true frame size, and a
    file without any decodable frame is rejected at once. The frame size is checked against ``max_pixels``
    from the stream header before decoding, and again on the first frame.
    """

    def __init__(self, path: Path, max_pixels: int) -> None:
        self.path = path
        self.container = open_container(path)
        try:
            if not self.container.streams.video:
                raise InputError(
                    f"no video stream in {path} (audio only, or an empty video track); pass a file with video"
                )
            self.stream = self.container.streams.video[0]
            self.stream.thread_type = "AUTO"
            check_frame_size(self.stream.codec_context.width, self.stream.codec_context.height, max_pixels, path)
            self._decoded = self._decode()
            first = next(self._decoded, None)
            if first is None:
                raise InputError(
                    f"no decodable frames in {path} (empty, truncated or corrupt); pass a file with video frames"
                )
            check_frame_size(first.width, first.height, max_pixels, path)
            self._first: av.VideoFrame | None = first
            self._turns = _quarter_turns(first)
            self.meta = self._describe(first)
        except BaseException:
            self.container.close()
            raise

    def _describe(self, first: av.VideoFrame) -> VideoMeta:
        stream = self.stream
        width, height = (first.height, first.width) if self._turns % 2 else (first.width, first.height)
        duration = _stream_seconds(stream)
        if duration is None and self.container.duration:
            duration = self.container.duration / av.time_base
        return VideoMeta(
            width=width,
            height=height,
            fps=Fraction(stream.average_rate or stream.guessed_rate or 25),
            time_base=Fraction(stream.time_base),
            n_frames=stream.frames or None,
            has_audio=bool(self.container.streams.audio),
            rotation=_clockwise_degrees(self._turns),
            duration=duration,
            codec=stream.codec_context.name,
            is_image=False,
        )

    def _decode(self) -> Iterator[av.VideoFrame]:
        """Decoded frames in presentation order; FFmpeg errors become InputError naming the frame."""
        decoded = 0
        try:
            for packet in self.container.demux(self.stream):
                for frame in packet.decode():
                    decoded += 1
                    yield frame
        except av.FFmpegError as error:
            raise InputError(
                f"corrupt data at frame {decoded} of {self.path} ({ffmpeg_reason(error)}); "
                "repair or re-encode the file, e.g. ffmpeg -i in.mp4 -c:v libx264 out.mp4"
            ) from error

    def frames(self) -> Iterator[Frame]:
        """Upright RGB frames, then a check that the file was not cut short."""
        first, self._first = self._first, None
        if first is None:
            raise RuntimeError("a VideoReader can be iterated only once; open a new one to read again")
        tick = 1 / (self.meta.fps * self.meta.time_base)  # one nominal frame in pts units
        start = self.stream.start_time if self.stream.start_time is not None else first.pts
        count, end = 0, None
        for index, frame in enumerate(chain([first], self._decoded)):
            pts = frame.pts if frame.pts is not None else round(index * tick)
            rgb = frame.to_ndarray(format="rgb24", src_color_range=frame.color_range)
            yield Frame(index, pts, np.ascontiguousarray(np.rot90(rgb, self._turns)))
            count, end = index + 1, pts + (frame.duration or tick)
        end_seconds = float((end - (start or 0)) * self.meta.time_base) if end is not None else None
        self._check_complete(count, end_seconds)

    def _check_complete(self, decoded: int, end_seconds: float | None) -> None:
        """Raise InputError when decoding stopped well before the frame count or duration announced.

        Both must fall short when both are announced: edit lists can hide frames the header counts, and a
        container's duration can be rounded. Either suffices when only one is announced.
        """
        announced_frames, announced_seconds = self.meta.n_frames, _stream_seconds(self.stream)
        frame_seconds = 1 / float(self.meta.fps)
        short_count = announced_frames is not None and decoded < announced_frames - max(
            2, _TRUNCATION_TOLERANCE * announced_frames
        )
        short_time = (
            announced_seconds is not None
            and end_seconds is not None
            and end_seconds
            < announced_seconds - max(2 * frame_seconds, _TRUNCATION_TOLERANCE * announced_seconds)
        )
        if announced_frames is not None and announced_seconds is not None:
            truncated = short_count and short_time
        else:
            truncated = short_count or short_time
        if truncated:
            expected = announced_frames or f"about {round(announced_seconds * float(self.meta.fps))}"
            raise InputError(
                f"truncated: decoded {decoded} of {expected} announced frames in {self.path}; "
                "the file was cut short (interrupted copy or recording), copy or export it again"
            )

    def close(self) -> None:
        self._decoded.close()
        self.container.close()


class _LiveVideoSource:
    """Frames of a live source (camera, network stream, stdin), reconnecting a network source that drops.

    Opened with :meth:`LiveSource.connect` (timeouts and low-latency options); the first frame is decoded on
    opening, like a file. Timestamps are the source's pts rebased to start at 0 (in ``meta.time_base``), kept
    increasing across reconnects. The end of the stream (EOF) is the normal end; a read error or a silence longer
    than ``live.timeout_s`` of a network source starts up to ``live.retries`` reconnect attempts with doubling
    backoff, each logged; when all fail the iteration ends (what was received is kept) and ``source.lost`` holds
    the error to report. A camera or stdin that fails mid-stream raises InputError.

    Audio: the first audio stream's packets go to ``source.audio`` (:class:`~inpaint_anon.video.live.LiveAudio`)
    for the writer to copy, their timestamps moved by the same offset as the video's; packets from before the first
    video frame of a connection are left out. A reconnection whose audio has another codec or sample rate carries
    no more audio (logged).
    """

    def __init__(self, source: LiveSource, max_pixels: int) -> None:
        self.source, self.max_pixels = source, max_pixels
        self._offset_s: Fraction | None = None  # this connection's pts offset in seconds, known at its first frame
        self._audio_ok = True
        self.container = source.connect()
        try:
            self.stream, first = self._first_frame(self.container)
            self._first: av.VideoFrame | None = first
            if self.container.streams.audio:
                source.audio = LiveAudio(self.container.streams.audio[0])
            self.meta = VideoMeta(
                width=first.width,
                height=first.height,
                fps=Fraction(self.stream.average_rate or self.stream.guessed_rate or 25),
                time_base=Fraction(self.stream.time_base or Fraction(1, 90000)),
                n_frames=None,
                has_audio=source.audio is not None,
                codec=self.stream.codec_context.name,
                is_image=False,
            )
        except BaseException:
            self.container.close()
            raise

    def _first_frame(self, container: InputContainer) -> tuple[av.video.stream.VideoStream, av.VideoFrame]:
        if not container.streams.video:
            raise InputError(f"no video stream in {self.source}; check that it sends video")
        stream = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        if audio is not None and self.source.audio is not None and self._audio_ok and (
                audio.codec_context.name, audio.codec_context.sample_rate) != self.source.audio.codec:
            self._audio_ok = False
            logger.warning("live: %s came back with audio %s at %s Hz instead of %s at %s Hz; no more audio is "
                           "copied", self.source, audio.codec_context.name, audio.codec_context.sample_rate,
                           *self.source.audio.codec)
        self._decoded = self._decode(container, stream, audio)
        try:
            first = next(self._decoded, None)
        except av.FFmpegError as error:
            raise InputError(f"no video frame arrived from {self.source} ({self.source.reason(error)}); check "
                             "that the stream is running and sends video") from error
        if first is None:
            raise InputError(f"no video frame arrived from {self.source} within live.timeout_s="
                             f"{self.source.settings.timeout_s}; check that the stream is running")
        check_frame_size(first.width, first.height, self.max_pixels, Path(str(self.source)))
        return stream, first

    def _decode(self, container: InputContainer, stream: av.video.stream.VideoStream,
                audio: av.audio.stream.AudioStream | None) -> Iterator[av.VideoFrame]:
        for packet in container.demux(*(s for s in (stream, audio) if s is not None)):
            if audio is not None and packet.stream_index == audio.index:
                self._audio_packet(packet)
                continue
            try:
                frames = packet.decode()
            except av.InvalidDataError:  # a packet damaged in transit (UDP loss): the decoder resyncs
                continue
            yield from frames

    def _audio_packet(self, packet: av.Packet) -> None:
        """Hand an audio packet to the writer, on the video's clock (left out before the first frame)."""
        if self.source.audio is None or not self._audio_ok or self._offset_s is None or not packet.size \
                or packet.pts is None:
            return
        shift = round(self._offset_s / Fraction(packet.time_base))
        packet.pts += shift
        if packet.dts is not None:
            packet.dts += shift
        if packet.pts >= 0:
            self.source.audio.put(packet)

    def _reconnect(self, error: Exception) -> bool:
        """Reopen a dropped network source; False (and ``source.lost`` set) when every attempt failed."""
        source, settings = self.source, self.source.settings
        if source.stopping:  # asked to stop: the read that failed was the last one
            return False
        reason = source.reason(error)
        if not source.spec.reconnects:
            raise InputError(f"{source} stopped after {source.frames} frames ({reason}); check the camera or "
                             "the program writing to stdin") from error
        self.container.close()
        for attempt in range(1, settings.retries + 1):
            wait = settings.backoff(attempt)
            logger.warning("live: %s dropped after %d frames (%s); reconnect attempt %d of %d in %.1f s",
                           source, source.frames, reason, attempt, settings.retries, wait)
            if source.wait(wait):
                return False  # stopped while waiting: the normal end
            try:
                container = source.connect()
            except InputError as failed:
                reason = str(failed).split(";")[0]
                continue
            try:
                self.stream, first = self._first_frame(container)
            except InputError as failed:
                container.close()
                reason = str(failed).split(";")[0]
                continue
            source.reconnects += 1
            logger.warning("live: %s reconnected (attempt %d)", source, attempt)
            self.container, self._first = container, first
            return True
        source.lost = StreamLost(
            f"live source {source} dropped after {source.frames} frames and did not come back ({settings.retries} "
            f"reconnect attempts; last: {reason}); the output holds every frame received; restart the source, or "
            "raise live.retries / live.timeout_s")
        logger.warning("live: %s", source.lost)
        return False

    def frames(self) -> Iterator[Frame]:
        """Upright RGB frames until the source ends, is lost, or the reader is closed."""
        if self._first is None:
            raise RuntimeError("a VideoReader can be iterated only once; open a new one to read again")
        tick = 1 / (self.meta.fps * self.meta.time_base)  # one nominal frame in meta.time_base units
        offset: Fraction | None = None  # added to a pts (in meta.time_base) so the first frame is at 0
        last = -tick
        while True:
            try:
                for frame in chain([self._first], self._decoded):
                    self._first = None
                    if self.source.stopping:
                        return  # stopped (LiveSource.stop): the normal end, like the end of the stream
                    if frame.pts is None:
                        pts = last + tick
                    else:
                        raw = Fraction(frame.pts) * Fraction(frame.time_base or self.stream.time_base) \
                            / self.meta.time_base
                        if offset is None:
                            offset = -raw if last < 0 else last + tick - raw
                            self._offset_s = offset * self.meta.time_base
                        pts = raw + offset
                    last = pts
                    rgb = frame.to_ndarray(format="rgb24", src_color_range=frame.color_range)
                    if rgb.shape[:2] != (self.meta.height, self.meta.width):
                        raise InputError(f"{self.source} changed its frame size from {self.meta.width}x"
                                         f"{self.meta.height} to {rgb.shape[1]}x{rgb.shape[0]}; restart the run")
                    yield Frame(self.source.frames, round(pts), np.ascontiguousarray(rgb))
                    self.source.frames += 1
                return  # end of stream: the normal end of a live source
            except av.FFmpegError as error:
                if not self._reconnect(error):
                    return
                offset = self._offset_s = None  # the new connection's clock starts elsewhere

    def close(self) -> None:
        self._decoded.close()
        self.container.close()


class VideoReader:
    """Streamed reader of a video file (anything FFmpeg reads), a still image or an animated PNG/WebP.

    ``VideoReader(path)`` opens the file and decodes its first frame, so ``.meta`` is complete at once and
    unreadable, empty, audio-only or too large files fail here with an :class:`InputError`. Iterating (once)
    yields :class:`Frame` objects one at a time: ``rgb`` uint8 (H, W, 3) RGB, C-contiguous, upright; ``pts`` in
    ``meta.time_base`` units (None for stills). Nothing beyond the current frame (and the decoder's own small
    lookahead) is held in memory. Iteration raises InputError on corrupt data, and at the end when the file
    stopped well before the frame count or duration its container announced.

    max_pixels: largest frame accepted, width x height (``video.max_pixels``); a larger one is an InputError
        naming its size and the setting.

    ``path`` may also be a live source: a :class:`~inpaint_anon.video.live.LiveSource` (with its ``live:``
    settings) or a string naming a camera (``/dev/video0``), a URL (``rtsp://``, ``udp://``...) or ``-`` (stdin);
    a :class:`~pathlib.Path` is always a file. A live source has ``n_frames=None``, no audio, pts rebased to 0,
    and reconnects when a network stream drops (see ``_LiveVideoSource``).

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: str | Path | LiveSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        live = _live_source(path)
        self._source: ImageSource | _VideoSource | _LiveVideoSource
        if live is not None:
            self.path = Path(str(live))
            self._source = _LiveVideoSource(live, max_pixels)
        else:
            self.path = existing_input(path)  # type: ignore[arg-type]
            self._source = (
                ImageSource(self.path, max_pixels)
                if self.path.suffix.lower() in IMAGE_SUFFIXES
                else _VideoSource(self.path, max_pixels)
            )
        self.meta: VideoMeta = self._source.meta

    def __iter__(self) -> Iterator[Frame]:
        return self._source.frames()

    def close(self) -> None:
        """Release the file; safe to call twice."""
        self._source.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _live_source(path: str | Path | LiveSource) -> LiveSource | None:
    """``path`` as a LiveSource when it names a camera, a URL or stdin (a str; a Path is always a file)."""
    if isinstance(path, LiveSource):
        return path
    if isinstance(path, str) and StreamSpec.parse(path).is_live:
        return LiveSource.parse(path)
    return None


def probe(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> VideoMeta:
    """What is known about a video or image before processing it (decodes only its first frame)."""
    with VideoReader(path, max_pixels=max_pixels) as reader:
        return reader.meta

"""Video and still-image input/output: streamed decoding, atomic encoding, audio copy, metadata control.

Reading (:class:`VideoReader`, :func:`probe`) decodes anything FFmpeg reads with PyAV, one frame at a time
on FFmpeg's own threads, and single stills (:data:`IMAGE_SUFFIXES`) with Pillow. Frames come out upright:
a display matrix (video) or EXIF orientation (stills) is applied to the pixels, and ``VideoMeta.rotation``
says by how many degrees **clockwise** the stored pixels were turned (an upright phone video recorded in
portrait reports 90). Stills have ``fps == time_base == 1``, ``n_frames == 1``, ``is_image`` and frames with
``pts None``, so a still written as video becomes a one-second clip.

Writing (:class:`VideoWriter`) encodes RGB frames into a temporary file next to the output and renames it
into place only when everything succeeded, so ``path`` either holds a complete file or nothing. Frame
timestamps are kept (variable frame rate included), audio streams are copied packet for packet, and
identifying metadata (creation time, GPS location, camera make/model, comments, EXIF) is dropped unless
``keep_metadata`` is set.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np
from av.container import InputContainer, OutputContainer
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from inpaint_anon.atomic import AtomicPath, CommitOnExit
from inpaint_anon.errors import ConfigError, InputError
from inpaint_anon.types import Frame, VideoMeta

if TYPE_CHECKING:
    from typing_extensions import Self

IMAGE_SUFFIXES: dict[str, str] = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".bmp": "BMP",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
"""Still-image suffixes (read and written with Pillow) -> Pillow format name."""

VIDEO_OUTPUT_FORMATS: dict[str, str] = {
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mov",
    ".mkv": "matroska",
    ".webm": "webm",
}
"""Video output suffixes -> FFmpeg muxer name. Any format FFmpeg reads is accepted as input."""

X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)

_TRUNCATION_TOLERANCE = 0.02
"""Fraction of the announced length (and at least two frames) a file may fall short before it is truncated."""

_MUXER_TAGS = {"major_brand", "minor_version", "compatible_brands", "encoder", "duration", "vendor_id"}
"""Tags a demuxer reports about the file itself; never copied, the output's muxer writes its own."""

_NEUTRAL_TAGS = {"language"}
"""Stream tags kept even without ``keep_metadata``: they say nothing about who, where or when."""

_BT709 = 1  # AVCOL_SPC_BT709 == AVCOL_PRI_BT709 == AVCOL_TRC_BT709
_LIMITED_RANGE = 1  # AVCOL_RANGE_MPEG


# --------------------------------------------------------------------------------------------------------
# Reading


def _existing_input(path: str | Path, role: str = "input") -> Path:
    """``path`` as a Path, or InputError when it does not exist or is a folder."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{role} not found: {path}; check the path")
    if path.is_dir():
        raise InputError(f"{role} is a folder, not a file: {path}; pass a video or image file")
    return path


def _reason(error: Exception) -> str:
    """FFmpeg's short description of ``error`` (without the file name PyAV appends)."""
    return getattr(error, "strerror", None) or str(error)


def _open_container(path: Path) -> InputContainer:
    try:
        return av.open(str(path), "r")
    except av.FFmpegError as error:
        raise InputError(
            f"cannot read {path}: not a video or image, or truncated or corrupt ({_reason(error)}); "
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
    file without any decodable frame is rejected at once.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.container = _open_container(path)
        try:
            if not self.container.streams.video:
                raise InputError(
                    f"no video stream in {path} (audio only, or an empty video track); pass a file with video"
                )
            self.stream = self.container.streams.video[0]
            self.stream.thread_type = "AUTO"
            self._decoded = self._decode()
            first = next(self._decoded, None)
            if first is None:
                raise InputError(
                    f"no decodable frames in {path} (empty, truncated or corrupt); pass a file with video frames"
                )
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
                f"corrupt data at frame {decoded} of {self.path} ({_reason(error)}); "
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


def _exif_rotation(exif: Image.Exif) -> int:
    """Clockwise degrees a viewer turns a still by, from its EXIF Orientation (flips are not counted)."""
    orientation = exif.get(ExifTags.Base.Orientation, 1)
    return {3: 180, 4: 180, 5: 270, 6: 90, 7: 90, 8: 270}.get(orientation, 0)


# What Pillow raises on a file that is not a readable image. ImportError: once ultralytics is imported, its patched
# Image.open retries unknown files as HEIF and needs the optional pi-heif package.
IMAGE_READ_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, ImportError)


class _ImageSource:
    """A single still read with Pillow, EXIF orientation applied."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with Image.open(path) as image:
                rotation = _exif_rotation(image.getexif())
                codec = (image.format or "").lower()
                rgb = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
        except IMAGE_READ_ERRORS as error:
            raise InputError(
                f"cannot read {path} as an image: not an image, or truncated or corrupt ({error}); "
                "check that it opens in an image viewer, or export it again"
            ) from error
        self._rgb: np.ndarray | None = np.ascontiguousarray(rgb)
        self.meta = VideoMeta(
            width=rgb.shape[1],
            height=rgb.shape[0],
            fps=Fraction(1),
            time_base=Fraction(1),
            n_frames=1,
            rotation=rotation,
            codec=codec,
            is_image=True,
        )

    def frames(self) -> Iterator[Frame]:
        rgb, self._rgb = self._rgb, None
        if rgb is None:
            raise RuntimeError("a VideoReader can be iterated only once; open a new one to read again")
        yield Frame(0, None, rgb)

    def close(self) -> None:
        self._rgb = None


class VideoReader:
    """Streamed reader of a video file (anything FFmpeg reads) or a single still image.

    ``VideoReader(path)`` opens the file and decodes its first frame, so ``.meta`` is complete at once and
    unreadable, empty or audio-only files fail here with an :class:`InputError`. Iterating (once) yields
    :class:`Frame` objects one at a time: ``rgb`` uint8 (H, W, 3) RGB, C-contiguous, upright; ``pts`` in
    ``meta.time_base`` units (None for stills). Nothing beyond the current frame (and the decoder's own
    small lookahead) is held in memory. Iteration raises InputError on corrupt data, and at the end when
    the file stopped well before the frame count or duration its container announced.

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = _existing_input(path)
        self._source = (
            _ImageSource(self.path) if self.path.suffix.lower() in IMAGE_SUFFIXES else _VideoSource(self.path)
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


def probe(path: str | Path) -> VideoMeta:
    """What is known about a video or still before processing it (decodes only its first frame)."""
    with VideoReader(path) as reader:
        return reader.meta


# --------------------------------------------------------------------------------------------------------
# Writing


@dataclass(frozen=True)
class _Encoder:
    """How one video encoder is driven: its pixel format and its options for a crf and an x264 preset."""

    pix_fmt: str
    options: Callable[[int, str], dict[str, str]]

    @property
    def needs_even_size(self) -> bool:
        return self.pix_fmt == "yuv420p"


_VP9_SPEED = dict(zip(X264_PRESETS, ("8", "7", "6", "5", "4", "3", "2", "1", "0", "0"), strict=True))

_ENCODERS: dict[str, _Encoder] = {
    "libx264": _Encoder("yuv420p", lambda crf, preset: {"crf": str(crf), "preset": preset}),
    "libvpx-vp9": _Encoder(
        "yuv420p",
        lambda crf, preset: {"crf": str(crf), "b": "0", "cpu-used": _VP9_SPEED[preset], "row-mt": "1"},
    ),
    "ffv1": _Encoder("bgr0", lambda crf, preset: {}),  # lossless RGB; crf and preset do not apply
}
"""Supported ``codec`` values: H.264 (browsers; default), VP9 (webm) and FFV1 (lossless, mkv)."""


def _check_encoder_args(crf: object, preset: object, codec: object) -> None:
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51:
        raise ConfigError(
            f"crf={crf!r} is out of range; use an integer from 0 (best) to 51 (worst), 18 looks lossless"
        )
    if preset not in X264_PRESETS:
        raise ConfigError(f"preset={preset!r} is not an x264 preset; use one of {', '.join(X264_PRESETS)}")
    if codec not in _ENCODERS:
        raise ConfigError(f"codec={codec!r} is not supported; use one of {', '.join(_ENCODERS)}")
    if codec not in av.codecs_available:
        raise ConfigError(f"codec={codec!r} is missing from this PyAV build; use codec=libx264")


def _check_meta(meta: VideoMeta) -> None:
    if meta.width <= 0 or meta.height <= 0:
        raise ConfigError(f"meta size {meta.width}x{meta.height} is invalid; width and height must be >= 1")
    if meta.fps <= 0 or meta.time_base <= 0:
        raise ConfigError(
            f"meta.fps={meta.fps} / meta.time_base={meta.time_base} must be > 0; use probe()'s meta"
        )


def _output_kind(path: Path) -> str:
    """The FFmpeg muxer or Pillow format for ``path``'s suffix, or InputError for an unknown suffix."""
    suffix = path.suffix.lower()
    kind = VIDEO_OUTPUT_FORMATS.get(suffix) or IMAGE_SUFFIXES.get(suffix)
    if kind is None:
        known = " ".join([*VIDEO_OUTPUT_FORMATS, *IMAGE_SUFFIXES])
        raise InputError(f"unknown output extension {suffix or '(none)'!r} in {path}; use one of {known}")
    return kind


def _check_output_free(path: Path, source: Path | None, overwrite: bool) -> None:
    """InputError unless ``path`` may be (over)written: its folder exists, it is not the input, etc."""
    if path.is_dir():
        raise InputError(f"output is a folder: {path}; give a file name such as {path / 'out.mp4'}")
    if not path.parent.is_dir():
        raise InputError(f"output folder does not exist: {path.parent}; create it or choose another output")
    if source is not None and path.exists() and os.path.samefile(path, source):
        raise InputError(f"output would overwrite the input: {path}; choose another output path")
    if path.exists() and not overwrite:
        raise InputError(f"output exists: {path}; pass overwrite=true or choose another output")


def _copied_tags(tags: Mapping[str, str], keep_metadata: bool) -> dict[str, str]:
    """Tags to carry over: all but the muxer's own when ``keep_metadata``, else only neutral ones."""
    if keep_metadata:
        return {k: v for k, v in tags.items() if k.lower() not in _MUXER_TAGS}
    return {k: v for k, v in tags.items() if k.lower() in _NEUTRAL_TAGS}


def _muxer_options(muxer: str, keep_metadata: bool) -> dict[str, str]:
    """``bitexact`` stops FFmpeg stamping its version (the ``encoder`` tag); mp4/mov get the index up front
    (``faststart``) for browsers and, when metadata is kept, free-form keys such as
    ``com.apple.quicktime.location.ISO6709``."""
    options = {"fflags": "+bitexact"}
    if muxer in ("mp4", "mov"):
        options["movflags"] = "+faststart" + ("+use_metadata_tags" if keep_metadata else "")
    return options


def _pad_to_even(rgb: np.ndarray) -> np.ndarray:
    """Replicate the last row/column so both sides are even (yuv420p needs it); no pixel is changed."""
    pad_h, pad_w = rgb.shape[0] % 2, rgb.shape[1] % 2
    return np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge") if pad_h or pad_w else rgb


class _AudioCopy:
    """Copies every audio stream of ``source`` packet for packet (no re-encoding) into ``output``.

    Packets are read lazily and muxed up to the time of the video written so far, so the file stays
    interleaved and memory stays flat.
    """

    def __init__(self, source: InputContainer, output: OutputContainer, keep_metadata: bool) -> None:
        self.source = source
        self.output_for: dict[int, av.stream.Stream] = {}
        for stream in source.streams.audio:
            try:
                copy = output.add_stream_from_template(stream)
            except ValueError as error:
                raise InputError(
                    f"audio codec {stream.codec_context.name} of {source.name} cannot be stored in a "
                    f"{output.format.name} file; choose a .mkv output, which takes any audio"
                ) from error
            copy.metadata.update(_copied_tags(stream.metadata, keep_metadata))
            self.output_for[stream.index] = copy
        self.packets = source.demux(*source.streams.audio)
        self.output = output
        self.pending = self._next_packet()

    def _next_packet(self) -> av.Packet | None:
        try:
            for packet in self.packets:
                if packet.size and (packet.pts is not None or packet.dts is not None):
                    return packet
        except av.FFmpegError as error:
            raise InputError(
                f"corrupt audio in {self.source.name} ({_reason(error)}); repair the file or drop its audio"
            ) from error
        return None

    def copy_until(self, seconds: float) -> None:
        """Mux the source's audio packets that start at or before ``seconds``."""
        while self.pending is not None:
            packet = self.pending
            start = packet.pts if packet.pts is not None else packet.dts
            if float(start * packet.time_base) > seconds:
                return
            packet.stream = self.output_for[packet.stream_index]
            self.output.mux(packet)
            self.pending = self._next_packet()


class _VideoSink:
    """Encodes frames into a video container (PyAV), copying the source's audio alongside."""

    def __init__(
        self,
        target: Path,
        meta: VideoMeta,
        muxer: str,
        codec: str,
        options: dict[str, str],
        source: InputContainer | None,
        keep_metadata: bool,
    ) -> None:
        encoder = _ENCODERS[codec]
        self.meta = meta
        self.padded = encoder.needs_even_size and (meta.width % 2 or meta.height % 2)
        self.container = av.open(
            str(target), "w", format=muxer, container_options=_muxer_options(muxer, keep_metadata)
        )
        self.audio: _AudioCopy | None = None
        self.last_pts: int | None = None
        self.frames_retimed = 0
        try:
            self.stream = self.container.add_stream(codec, rate=meta.fps, options=options)
        except ValueError as error:
            raise ConfigError(
                f"codec={codec} cannot be stored in a {muxer} file; use codec=libx264 (mp4/mov/mkv) "
                "or a .mkv output"
            ) from error
        self.stream.width = meta.width + meta.width % 2 if self.padded else meta.width
        self.stream.height = meta.height + meta.height % 2 if self.padded else meta.height
        self.stream.pix_fmt = encoder.pix_fmt
        self.stream.time_base = self.stream.codec_context.time_base = meta.time_base
        self.yuv = encoder.pix_fmt.startswith("yuv")
        if self.yuv:
            ctx = self.stream.codec_context
            ctx.colorspace = ctx.color_primaries = ctx.color_trc = _BT709
            ctx.color_range = _LIMITED_RANGE
        if source is not None:
            self.container.metadata.update(_copied_tags(source.metadata, keep_metadata))
            if source.streams.video:
                self.stream.metadata.update(_copied_tags(source.streams.video[0].metadata, keep_metadata))
            if source.streams.audio:
                self.audio = _AudioCopy(source, self.container, keep_metadata)

    def _pts(self, frame: Frame) -> int:
        """The frame's pts, or its nominal time when it has none; nudged forward if not increasing."""
        pts = (
            frame.pts if frame.pts is not None else round(frame.index / (self.meta.fps * self.meta.time_base))
        )
        if self.last_pts is not None and pts <= self.last_pts:
            pts = self.last_pts + 1
            self.frames_retimed += 1
        self.last_pts = pts
        return pts

    def write(self, frame: Frame) -> None:
        video_frame = av.VideoFrame.from_ndarray(
            _pad_to_even(frame.rgb) if self.padded else frame.rgb, "rgb24"
        )
        video_frame.pts = self._pts(frame)
        if self.yuv:
            video_frame.colorspace = _BT709  # RGB -> YUV with the BT.709 matrix the stream is tagged with
        self.container.mux(self.stream.encode(video_frame))
        if self.audio is not None:
            self.audio.copy_until(float(video_frame.pts * self.meta.time_base))

    def finish(self) -> None:
        self.container.mux(self.stream.encode(None))
        if self.audio is not None:
            self.audio.copy_until(float("inf"))
        self.container.close()

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.container.close()


class _ImageSink:
    """Saves the single frame as a still with Pillow; EXIF is carried over only when asked."""

    def __init__(self, target: Path, image_format: str, source: Path | None, keep_metadata: bool) -> None:
        self.target, self.format = target, image_format
        self.params: dict[str, object] = {"quality": 95} if image_format in ("JPEG", "WEBP") else {}
        if keep_metadata and source is not None and source.suffix.lower() in IMAGE_SUFFIXES:
            with Image.open(source) as image:
                exif = image.getexif()
                icc = image.info.get("icc_profile")
            exif[ExifTags.Base.Orientation] = 1  # pixels are already upright
            self.params["exif"] = exif.tobytes()
            if icc:
                self.params["icc_profile"] = icc
        self.written = False

    def write(self, frame: Frame) -> None:
        if self.written:
            raise InputError(
                f"image output {self.target.suffix} holds one frame but a second was written; "
                "choose a video output such as .mp4"
            )
        Image.fromarray(frame.rgb, "RGB").save(self.target, format=self.format, **self.params)
        self.written = True

    def finish(self) -> None:
        pass

    def discard(self) -> None:
        pass


def check_output(
    path: str | Path,
    *,
    source: str | Path | None = None,
    overwrite: bool = False,
    crf: int = 18,
    preset: str = "medium",
    codec: str = "libx264",
) -> None:
    """Raise what :class:`VideoWriter` would raise for these arguments, without creating anything.

    Lets a caller reject a bad output (existing file, the input itself, missing folder, unknown suffix,
    bad encoder settings) before it spends time loading models.
    """
    _check_encoder_args(crf, preset, codec)
    path = Path(path)
    _output_kind(path)
    _check_output_free(path, _existing_input(source, "source") if source is not None else None, overwrite)


class VideoWriter(CommitOnExit):
    """Atomic writer of an anonymized video (or still) that keeps timing and audio and drops metadata.

    ``VideoWriter(path, meta, source=...)``; :meth:`write` each :class:`Frame` (``rgb`` uint8 (H, W, 3)
    RGB of ``meta``'s size, ``pts`` in ``meta.time_base`` units as read); :meth:`close` (or leaving the
    ``with`` block normally) finishes the file and renames it onto ``path``. :meth:`abort` (or an exception
    in the ``with`` block) deletes everything, leaving no file at ``path`` and no temporary file.

    path: output file; the suffix picks the format: .mp4/.m4v/.mov/.mkv/.webm video, or a still
        (:data:`IMAGE_SUFFIXES`) for a one-frame input.
    meta: the source's VideoMeta (size, fps, time base).
    source: the input file: its audio streams are copied unchanged, and its tags when ``keep_metadata``.
    crf: quality, 0 (best) to 51 (worst). preset: x264 speed preset (also mapped onto VP9's cpu-used).
    codec: ``libx264`` (H.264 yuv420p, plays in browsers), ``libvpx-vp9`` or ``ffv1`` (lossless RGB, .mkv).
        In a .webm output libx264 is replaced by VP9 (webm cannot hold H.264).
    keep_metadata: copy container/stream tags (creation time, GPS location, make/model...) or EXIF.
    overwrite: replace an existing output file.

    Frames are encoded at their own pts (variable frame rate preserved; time base kept where the muxer
    allows, e.g. Matroska always counts milliseconds). Odd sizes are padded to even ones by repeating the
    last row/column (``padded_size``), never resampled.
    """

    def __init__(
        self,
        path: str | Path,
        meta: VideoMeta,
        *,
        source: str | Path | None = None,
        crf: int = 18,
        preset: str = "medium",
        codec: str = "libx264",
        keep_metadata: bool = False,
        overwrite: bool = False,
    ) -> None:
        check_output(path, source=source, overwrite=overwrite, crf=crf, preset=preset, codec=codec)
        _check_meta(meta)
        self.path = Path(path)
        self.meta = meta
        self.overwrite = overwrite
        kind = _output_kind(self.path)
        self.source = _existing_input(source, "source") if source is not None else None
        self.is_image = self.path.suffix.lower() in IMAGE_SUFFIXES
        if self.is_image and (meta.n_frames or 1) > 1:
            raise InputError(
                f"output {self.path} is an image but the input has {meta.n_frames} frames; "
                "choose a video output such as .mp4"
            )
        self.codec = self._resolve_codec(kind, codec)
        self.frames_written = 0
        self._source_container: InputContainer | None = None
        self._temp = AtomicPath(self.path)
        try:
            self._sink = self._open_sink(kind, crf, preset, keep_metadata)
        except BaseException:
            self._release()
            raise
        self._closed = False

    def _resolve_codec(self, kind: str, codec: str) -> str:
        """The encoder actually used: Pillow's format for stills, VP9 instead of H.264 in webm, else ``codec``."""
        if self.is_image:
            return kind.lower()
        if kind != "webm" or codec != "libx264":
            return codec
        if "libvpx-vp9" not in av.codecs_available:
            raise InputError(
                "webm output needs VP9, which this PyAV build lacks; choose a .mp4 or .mkv output"
            )
        return "libvpx-vp9"

    def _open_sink(self, kind: str, crf: int, preset: str, keep_metadata: bool) -> _VideoSink | _ImageSink:
        if self.is_image:
            return _ImageSink(self._temp.temp, kind, self.source, keep_metadata)
        if self.source is not None and self.source.suffix.lower() not in IMAGE_SUFFIXES:
            self._source_container = _open_container(self.source)
        options = _ENCODERS[self.codec].options(crf, preset)
        return _VideoSink(
            self._temp.temp, self.meta, kind, self.codec, options, self._source_container, keep_metadata
        )

    @property
    def padded_size(self) -> tuple[int, int] | None:
        """(width, height) actually encoded when the frame size was padded to even sides, else None."""
        if isinstance(self._sink, _VideoSink) and self._sink.padded:
            return self._sink.stream.width, self._sink.stream.height
        return None

    @property
    def frames_retimed(self) -> int:
        """Frames whose pts did not increase and were moved one tick after the previous frame."""
        return self._sink.frames_retimed if isinstance(self._sink, _VideoSink) else 0

    def write(self, frame: Frame) -> None:
        """Encode one frame (``rgb`` uint8 (meta.height, meta.width, 3)) at its ``pts``."""
        if self._closed:
            raise RuntimeError(f"VideoWriter for {self.path} is closed; open a new one")
        expected = (self.meta.height, self.meta.width, 3)
        if frame.rgb.shape != expected or frame.rgb.dtype != np.uint8:
            raise ValueError(
                f"frame {frame.index} is {frame.rgb.dtype} {frame.rgb.shape}; this writer takes uint8 {expected}"
            )
        self._sink.write(frame)
        self.frames_written += 1

    def close(self) -> None:
        """Finish the file and move it onto ``path``; on any failure nothing is left behind."""
        if self._closed:
            return
        try:
            if self.frames_written == 0:
                raise ValueError(f"no frames were written to {self.path}; nothing saved")
            self._sink.finish()
            _check_output_free(self.path, self.source, self.overwrite)
            self._temp.close()
        except BaseException:
            self._sink.discard()
            self._release()
            raise
        self._release()

    def abort(self) -> None:
        """Stop writing and delete the partial output; safe to call twice."""
        if not self._closed:
            self._sink.discard()
            self._release()

    def _release(self) -> None:
        self._closed = True
        self._temp.abort()
        if self._source_container is not None:
            self._source_container.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):  # dropped without close(): leave no partial file behind
            self.abort()

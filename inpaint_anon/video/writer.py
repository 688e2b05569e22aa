"""Writing: :class:`VideoWriter` (atomic video or still output) and :func:`check_output` (its checks, early).

Frames are encoded into a partial file next to the output (:class:`~inpaint_anon.atomic.AtomicPath`) that is
renamed into place only when everything succeeded, so ``path`` either holds a complete file or nothing. Two
exceptions: a run with a live source that is stopped (Ctrl-C, a signal) finalizes the file it recorded so far;
HLS and stream outputs are written in place, as they are read. Frame
timestamps are kept (variable frame rate included), audio streams are copied packet for packet and identifying
metadata is dropped unless ``keep_metadata`` (see ``streams``).
"""

from __future__ import annotations

import contextlib
import glob
import os
from pathlib import Path

import av
import numpy as np
from av.container import InputContainer
from PIL import ExifTags, Image

from inpaint_anon.atomic import AtomicPath, CommitOnExit
from inpaint_anon.errors import ConfigError, InputError
from inpaint_anon.types import Frame, VideoMeta
from inpaint_anon.video.formats import ENCODERS, IMAGE_SUFFIXES, VIDEO_OUTPUT_FORMATS
from inpaint_anon.video.images import open_image_header, rgb_icc_profile
from inpaint_anon.video.live import LiveAudio, LiveSource, OutputSpec, StreamSpec, missing_protocol, output_spec
from inpaint_anon.video.reader import existing_input, ffmpeg_reason, open_container
from inpaint_anon.video.settings import VideoSettings
from inpaint_anon.video.streams import AudioCopy, copied_tags, muxer_options

_BT709 = 1  # AVCOL_SPC_BT709 == AVCOL_PRI_BT709 == AVCOL_TRC_BT709
_LIMITED_RANGE = 1  # AVCOL_RANGE_MPEG


def _settings(
    video: VideoSettings | None, codec: str | None, crf: int | None, preset: str | None
) -> VideoSettings:
    """``video`` (or the defaults) with the encoder values given as keywords replaced."""
    return (video if video is not None else VideoSettings()).with_overrides(codec=codec, crf=crf, preset=preset)


def _check_meta(meta: VideoMeta) -> None:
    if meta.width <= 0 or meta.height <= 0:
        raise ConfigError(f"meta size {meta.width}x{meta.height} is invalid; width and height must be >= 1")
    if meta.fps <= 0 or meta.time_base <= 0:
        raise ConfigError(
            f"meta.fps={meta.fps} / meta.time_base={meta.time_base} must be > 0; use probe()'s meta"
        )


def _refuse_folder(path: Path) -> None:
    if path.is_dir():
        raise InputError(f"output is a folder: {path}; give a file name inside it, such as {path / 'out.mp4'}")


def _output_kind(path: Path) -> str:
    """The FFmpeg muxer or Pillow format for ``path``'s suffix; InputError for a folder or an unknown suffix."""
    _refuse_folder(path)
    suffix = path.suffix.lower()
    kind = VIDEO_OUTPUT_FORMATS.get(suffix) or IMAGE_SUFFIXES.get(suffix)
    if kind is None:
        known = " ".join([*VIDEO_OUTPUT_FORMATS, *IMAGE_SUFFIXES])
        raise InputError(f"unknown output extension {suffix or '(none)'!r} in {path}; use one of {known}")
    return kind


def _encoder_for(path: Path, kind: str, codec: str) -> str:
    """The encoder a video output uses: VP9 instead of H.264 in webm, else ``codec``, which must fit the file."""
    if kind == "webm" and codec == "libx264":
        if "libvpx-vp9" not in av.codecs_available:
            raise InputError("webm output needs VP9, which this PyAV build lacks; choose a .mp4 or .mkv output")
        return "libvpx-vp9"
    if kind not in ENCODERS[codec].muxers:
        fitting = " or ".join(s for s, muxer in VIDEO_OUTPUT_FORMATS.items() if muxer in ENCODERS[codec].muxers)
        raise ConfigError(
            f"video.codec={codec} cannot be stored in a {path.suffix.lower()} file; use a {fitting} output, "
            "or video.codec=libx264"
        )
    return codec


def _check_output_free(path: Path, source: Path | None, overwrite: bool) -> None:
    """InputError unless ``path`` may be (over)written: its folder exists, it is not the input, etc."""
    _refuse_folder(path)
    if not path.parent.is_dir():
        raise InputError(f"output folder does not exist: {path.parent}; create it or choose another output")
    if source is not None and path.exists() and os.path.samefile(path, source):
        raise InputError(f"output would overwrite the input: {path}; choose another output path")
    if path.exists() and not overwrite:
        raise InputError(f"output exists: {path}; pass overwrite=true or choose another output")


def check_output(
    path: str | Path,
    *,
    source: str | Path | None = None,
    overwrite: bool = False,
    video: VideoSettings | None = None,
    codec: str | None = None,
    crf: int | None = None,
    preset: str | None = None,
) -> None:
    """Raise what :class:`VideoWriter` would raise for these arguments, without creating anything.

    Lets a caller reject a bad output (a folder, existing file, the input itself, missing folder, unknown suffix,
    a codec the file cannot hold, bad encoder settings) before it spends time loading models.
    """
    settings = _settings(video, codec, crf, preset)
    spec = output_spec(path)
    source_path = _source_file(source)
    if spec.is_live:
        _check_live_output(spec, settings, source_path, overwrite)
        return
    path = Path(path)
    kind = _output_kind(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        _encoder_for(path, kind, settings.codec)
    _check_output_free(path, source_path, overwrite)


def _source_file(source: str | Path | LiveSource | None) -> Path | None:
    """The source as an existing file (InputError when missing), or None for no source or a live one."""
    if source is None or isinstance(source, LiveSource):
        return None
    if isinstance(source, str) and StreamSpec.parse(source).is_live:
        return None
    return existing_input(source, "source")


LIVE_CODECS = ("libx264",)
"""Encoders a stream or HLS output takes (H.264 yuv420p: what browsers and stream servers play)."""


def _check_live_output(spec: OutputSpec, settings: VideoSettings, source: Path | None, overwrite: bool) -> None:
    """InputError/ConfigError unless a stream or HLS output can be written: codec, playlist folder, no clobber."""
    if settings.codec not in LIVE_CODECS:
        raise ConfigError(f"video.codec={settings.codec} cannot be streamed to {spec.target}; use video.codec="
                          "libx264 (or null)")
    if spec.kind == "hls":
        _check_output_free(Path(spec.target), source, overwrite)


def _live_encoder_options(options: dict[str, str], fps: float) -> dict[str, str]:
    """x264 options for a live output: no lookahead or B-frames (zerolatency), a keyframe every 2 s (HLS
    segments and late joiners start at one)."""
    gop = str(max(1, round(2 * fps)))
    return {**options, "tune": "zerolatency", "g": gop, "keyint_min": gop}


def _pad_to_even(rgb: np.ndarray) -> np.ndarray:
    """Replicate the last row/column so both sides are even (yuv420p needs it); no pixel is changed."""
    pad_h, pad_w = rgb.shape[0] % 2, rgb.shape[1] % 2
    return np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge") if pad_h or pad_w else rgb


class _VideoSink:
    """Encodes frames into a video container (PyAV), copying the source's audio alongside (a file's streams, or a
    live source's :class:`~inpaint_anon.video.live.LiveAudio`)."""

    def __init__(
        self,
        target: Path,
        meta: VideoMeta,
        muxer: str,
        codec: str,
        options: dict[str, str],
        source: InputContainer | None,
        keep_metadata: bool,
        muxer_extra: dict[str, str] | None = None,
        live_audio: LiveAudio | None = None,
    ) -> None:
        encoder = ENCODERS[codec]
        self.meta = meta
        self.padded = encoder.needs_even_size and (meta.width % 2 or meta.height % 2)
        try:
            self.container = av.open(str(target), "w", format=muxer,
                                     container_options={**muxer_options(muxer, keep_metadata), **(muxer_extra or {})})
        except av.ProtocolNotFoundError as error:
            raise missing_protocol(str(target)) from error
        except av.FFmpegError as error:
            raise InputError(f"cannot open the output {target} ({ffmpeg_reason(error)}); check that the server "
                             "is listening and the address is right, or write to a file") from error
        self.audio: AudioCopy | None = None
        self.last_pts: int | None = None
        self.frames_retimed = 0
        self.stream = self.container.add_stream(codec, rate=meta.fps, options=options)
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
            self.container.metadata.update(copied_tags(source.metadata, keep_metadata))
            if source.streams.video:
                self.stream.metadata.update(copied_tags(source.streams.video[0].metadata, keep_metadata))
            if source.streams.audio:
                self.audio = AudioCopy(source, self.container, keep_metadata)
        self.live_audio, self.live_audio_stream = live_audio, None
        if live_audio is not None:
            try:
                self.live_audio_stream = self.container.add_stream_from_template(live_audio.template)
            except ValueError as error:
                raise InputError(f"the live source's audio ({live_audio.codec[0]}) cannot be stored in a "
                                 f"{self.container.format.name} output; choose a .mkv or .ts output") from error

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
        self._copy_live_audio(float(video_frame.pts * self.meta.time_base))

    def _copy_live_audio(self, seconds: float) -> None:
        if self.live_audio is None:
            return
        for packet in self.live_audio.take_until(seconds):
            packet.stream = self.live_audio_stream
            self.container.mux(packet)

    def finish(self) -> None:
        self.container.mux(self.stream.encode(None))
        if self.audio is not None:
            self.audio.copy_until(float("inf"))
        self._copy_live_audio(float("inf"))
        self.container.close()

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.container.close()


class _ImageSink:
    """Saves the single frame as a still with Pillow; EXIF (and an RGB ICC profile) only when asked."""

    def __init__(self, target: Path, image_format: str, source: Path | None, keep_metadata: bool) -> None:
        self.target, self.format = target, image_format
        self.params: dict[str, object] = {"quality": 95} if image_format in ("JPEG", "WEBP") else {}
        if keep_metadata and source is not None and source.suffix.lower() in IMAGE_SUFFIXES:
            with open_image_header(source) as image:
                exif = image.getexif()
                icc = rgb_icc_profile(image)
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


class VideoWriter(CommitOnExit):
    """Atomic writer of an anonymized video (or still) that keeps timing and audio and drops metadata.

    ``VideoWriter(path, meta, source=...)``; :meth:`write` each :class:`Frame` (``rgb`` uint8 (H, W, 3)
    RGB of ``meta``'s size, ``pts`` in ``meta.time_base`` units as read); :meth:`close` (or leaving the
    ``with`` block normally) finishes the file and renames it onto ``path``. :meth:`abort` (or an exception
    in the ``with`` block) deletes everything, leaving no file at ``path`` and no temporary file.

    path: output file; the suffix picks the format: .mp4/.m4v/.mov/.mkv/.webm video, or a still
        (:data:`IMAGE_SUFFIXES`) for a one-frame input. Live outputs (:func:`~inpaint_anon.video.live.output_spec`):
        an HLS playlist ``.m3u8`` (segments beside it) or a stream URL (``rtmp://``, ``rtsp://``, ``udp://``,
        ``srt://``, ``tcp://``, a str), libx264 only, written as they are read (no partial file); a server that
        refuses the stream is an InputError.
    meta: the source's VideoMeta (size, fps, time base).
    source: the input file: its audio streams are copied unchanged, and its tags when ``keep_metadata``. A
        live source (a :class:`~inpaint_anon.video.live.LiveSource`, or a camera/URL/``-`` string) has its first
        audio stream copied when the reader found one (``LiveSource.audio``; open the reader first), and a stop
        (Ctrl-C, a signal) ends its recording cleanly instead of deleting it.
    video: encoder settings (:class:`VideoSettings`: codec, crf, preset); ``codec``, ``crf`` and ``preset``
        given as keywords replace its values. ``codec=ffv1`` (.mkv) and ``libx264rgb`` at ``crf=0`` are
        lossless; in a .webm output libx264 is replaced by VP9 (webm cannot hold H.264).
    keep_metadata: copy container/stream tags (creation time, GPS location, make/model...) or EXIF.
    overwrite: replace an existing output file.

    Frames are encoded at their own pts (variable frame rate preserved; time base kept where the muxer
    allows, e.g. Matroska always counts milliseconds). Odd sizes are padded to even ones for yuv420p codecs by
    repeating the last row/column (``padded_size``), never resampled.
    """

    def __init__(
        self,
        path: str | Path,
        meta: VideoMeta,
        *,
        source: str | Path | LiveSource | None = None,
        video: VideoSettings | None = None,
        codec: str | None = None,
        crf: int | None = None,
        preset: str | None = None,
        keep_metadata: bool = False,
        overwrite: bool = False,
    ) -> None:
        self.settings = _settings(video, codec, crf, preset)
        check_output(path, source=source, overwrite=overwrite, video=self.settings)
        _check_meta(meta)
        self.spec = output_spec(path)
        self.path = Path(path)
        self.meta = meta
        self.overwrite = overwrite
        self.source = _source_file(source)
        self.live_source = source is not None and self.source is None
        self._live_audio = source.audio if isinstance(source, LiveSource) else None
        self.frames_written = 0
        self._source_container: InputContainer | None = None
        self._temp: AtomicPath | None = None
        if self.spec.is_live:  # a stream or HLS playlist is written where it is read, as it is written
            self.is_image, self.codec = False, self.settings.codec
            options = _live_encoder_options(ENCODERS[self.codec].options(self.settings.crf, self.settings.preset),
                                            float(meta.fps))
            self._sink: _VideoSink | _ImageSink = _VideoSink(
                self.spec.target, meta, self.spec.muxer, self.codec, options, None, keep_metadata, self.spec.options,
                live_audio=self._live_audio)
            self._closed = False
            return
        kind = _output_kind(self.path)
        self.is_image = self.path.suffix.lower() in IMAGE_SUFFIXES
        if self.is_image and (meta.n_frames or 1) > 1:
            raise InputError(
                f"output {self.path} is an image but the input has {meta.n_frames} frames; "
                "choose a video output such as .mp4"
            )
        self.codec = kind.lower() if self.is_image else _encoder_for(self.path, kind, self.settings.codec)
        self._temp = AtomicPath(self.path)
        try:
            self._sink = self._open_sink(kind, keep_metadata)
        except BaseException:
            self._release()
            raise
        self._closed = False

    def _open_sink(self, kind: str, keep_metadata: bool) -> _VideoSink | _ImageSink:
        assert self._temp is not None
        if self.is_image:
            return _ImageSink(self._temp.temp, kind, self.source, keep_metadata)
        if self.source is not None and self.source.suffix.lower() not in IMAGE_SUFFIXES:
            self._source_container = open_container(self.source)
        options = ENCODERS[self.codec].options(self.settings.crf, self.settings.preset)
        return _VideoSink(
            self._temp.temp, self.meta, kind, self.codec, options, self._source_container, keep_metadata,
            live_audio=self._live_audio,
        )

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        """A clean exit closes; an error aborts; a stop (Ctrl-C, a signal: a BaseException that is not an
        Exception) of a run with a live source closes too: stopping a live source is its normal end, and the
        recording up to the stop is kept, complete and playable."""
        stopped = exc_type is not None and not issubclass(exc_type, Exception)
        if exc_type is None or (stopped and self.live_source and self.frames_written > 0):
            self.close()
        else:
            self.abort()

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
        try:
            self._sink.write(frame)
        except av.FFmpegError as error:
            if not self.spec.is_live:
                raise
            if isinstance(error, av.ProtocolNotFoundError):
                raise missing_protocol(self.spec.target) from error
            raise InputError(f"cannot write to the output {self.spec.target} ({ffmpeg_reason(error)}); check that "
                             "the server is listening and accepts the stream, or write to a file") from error
        self.frames_written += 1

    def close(self) -> None:
        """Finish the file and move it onto ``path``; on any failure nothing is left behind."""
        if self._closed:
            return
        try:
            if self.frames_written == 0:
                raise ValueError(f"no frames were written to {self.path}; nothing saved")
            self._sink.finish()
            if self._temp is not None:
                _check_output_free(self.path, self.source, self.overwrite)
                self._temp.close()
        except BaseException:
            self._sink.discard()
            self._release()
            raise
        self._release()

    def abort(self) -> None:
        """Stop writing and delete the partial output (an HLS playlist and its segments too; a stream already
        sent cannot be taken back); safe to call twice."""
        if not self._closed:
            self._sink.discard()
            self._release()
            if self.spec.kind == "hls":
                playlist = Path(self.spec.target)
                for written in [playlist, *playlist.parent.glob(f"{glob.escape(playlist.stem)}_[0-9]*.ts")]:
                    written.unlink(missing_ok=True)

    def _release(self) -> None:
        self._closed = True
        if self._temp is not None:
            self._temp.abort()
        if self._source_container is not None:
            self._source_container.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):  # dropped without close(): leave no partial file behind
            self.abort()

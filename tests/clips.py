"""Synthetic street-like test media with exact ground truth, written with PyAV and Pillow.

Every frame shows a static textured background (sky, facade, road with lane marks) and two moving objects
with flat colours that appear nowhere in the background:

- ``"person"``: a tall rectangle (:data:`PERSON_RGB`) walking left to right on the pavement;
- ``"car"``: a wide ellipse (:data:`CAR_RGB`) driving right to left on the road.

The objects never overlap and stay fully inside the frame for any size of at least 16 x 16 pixels.
:func:`frame_image` gives the exact RGB frame that :func:`make_clip` encodes at an index and
:func:`object_masks` the exact pixels of each object, so detectors and leak checks have ground truth.
Sizes are ``(width, height)`` in pixels, like everywhere in this project.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Sequence
from fractions import Fraction
from itertools import cycle
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import ExifTags, Image

PERSON_RGB = (220, 40, 40)
CAR_RGB = (40, 80, 230)

AUDIO_RATE = 48000
"""Sample rate (Hz) of the sine tone :func:`make_clip` adds with ``audio=True``."""

VFR_TICKS = (4, 2, 6, 3, 4, 8, 1, 4)
"""Frame durations, in quarters of a nominal frame, cycled by ``make_clip(vfr=True)``: irregular gaps whose
mean is exactly one nominal frame, so the average rate stays ``fps``."""

_MOV_SUFFIXES = {".mp4", ".m4v", ".mov"}
_LOSSLESS_FFV1_SUFFIXES = {".mkv", ".avi"}


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    width, height = (int(v) for v in size)
    if width < 16 or height < 16:
        raise ValueError(f"clip size must be at least 16 x 16 pixels, got {width} x {height}")
    return width, height


def _progress(index: int, n_frames: int) -> float:
    """Position of frame ``index`` in the clip, 0.0 (first frame) to 1.0 (last frame)."""
    return index / max(n_frames - 1, 1)


def _background(size: tuple[int, int]) -> np.ndarray:
    """The static scene, uint8 (H, W, 3) RGB: sky, a windowed facade and a road, channels in [50, 200]."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    texture = 18 * np.sin(x / 3.0) * np.cos(y / 4.0)
    grey = 125 + texture
    sky = y < 0.12 * height
    road = y >= 0.6 * height
    windows = (~sky & ~road) & ((x // 6) % 3 == 0) & ((y // 5) % 3 == 0)
    lane = road & (np.abs(y - 0.92 * height) < 1) & ((x // 8) % 2 == 0)
    grey = np.where(windows, grey - 45, grey)
    grey = np.where(road, grey - 30, grey)
    grey = np.where(lane, 195.0, grey)
    tint = np.where(sky, 20.0, 0.0)
    rgb = np.stack([grey - tint, grey, grey + tint], axis=-1)
    return np.clip(rgb, 50, 200).astype(np.uint8)


def _person_mask(index: int, size: tuple[int, int], n_frames: int) -> np.ndarray:
    width, height = size
    box_w, box_h = max(2, round(0.1 * width)), max(4, round(0.4 * height))
    x0 = round(0.05 * width + _progress(index, n_frames) * (0.85 * width - box_w))
    y0 = round(0.15 * height)
    mask = np.zeros((height, width), dtype=bool)
    mask[y0 : y0 + box_h, x0 : x0 + box_w] = True
    return mask


def _car_mask(index: int, size: tuple[int, int], n_frames: int) -> np.ndarray:
    width, height = size
    semi_x, semi_y = max(2.0, 0.15 * width), max(1.5, 0.09 * height)
    cx = round(0.8 * width - _progress(index, n_frames) * 0.6 * width)
    cy = round(0.76 * height)
    y, x = np.ogrid[0:height, 0:width]
    return ((x - cx) / semi_x) ** 2 + ((y - cy) / semi_y) ** 2 <= 1.0


def object_masks(index: int, size: tuple[int, int], n_frames: int) -> dict[str, np.ndarray]:
    """Exact pixels of each object in frame ``index`` of a clip of ``n_frames`` frames at ``size`` (W, H).

    Returns ``{"person": mask, "car": mask}``, each bool (H, W), as drawn by :func:`frame_image` (before
    compression and before any display rotation).
    """
    size = _check_size(size)
    person = _person_mask(index, size, n_frames)
    car = _car_mask(index, size, n_frames) & ~person
    return {"person": person, "car": car}


def _draw(background: np.ndarray, index: int, n_frames: int) -> np.ndarray:
    """A copy of ``background`` (uint8 (H, W, 3)) with the objects of frame ``index`` painted on it."""
    image = background.copy()
    masks = object_masks(index, (background.shape[1], background.shape[0]), n_frames)
    image[masks["car"]] = CAR_RGB
    image[masks["person"]] = PERSON_RGB
    return image


def frame_image(index: int, size: tuple[int, int], n_frames: int) -> np.ndarray:
    """The exact frame :func:`make_clip` encodes at ``index``: uint8 (H, W, 3) RGB, C-contiguous."""
    return _draw(_background(_check_size(size)), index, n_frames)


def _frame_ticks(n_frames: int, vfr: bool) -> list[int]:
    """Presentation times of ``n_frames`` frames in quarters of a nominal frame (time base 1 / (4 fps))."""
    durations = cycle(VFR_TICKS if vfr else (4,))
    ticks, now = [], 0
    for _ in range(n_frames):
        ticks.append(now)
        now += next(durations)
    return ticks


def _pick_pix_fmt(codec: str, size: tuple[int, int]) -> str:
    """yuv420p when the codec takes it and the size is even, else yuv444p, else the codec's first format."""
    formats = [f.name for f in av.Codec(codec, "w").video_formats or ()]
    even = size[0] % 2 == 0 and size[1] % 2 == 0
    for name in ("yuv420p", "yuv444p") if even else ("yuv444p",):
        if name in formats:
            return name
    if not formats:
        raise ValueError(f"codec {codec!r} lists no pixel formats; pick another codec")
    return formats[0]


def _video_codec(
    path: Path, codec: str, size: tuple[int, int], lossless: bool
) -> tuple[str, str, dict[str, str]]:
    """(codec, pix_fmt, codec options) for a clip: exact RGB when ``lossless``, quick x264 otherwise."""
    if lossless and path.suffix.lower() in _LOSSLESS_FFV1_SUFFIXES:
        return "ffv1", "bgr0", {}
    if lossless:
        return "libx264rgb", "rgb24", {"qp": "0", "preset": "ultrafast"}
    if codec.startswith("libx264"):
        return codec, _pick_pix_fmt(codec, size), {"crf": "16", "preset": "ultrafast"}
    return codec, _pick_pix_fmt(codec, size), {}


def _sine_frames(duration: float, layout: str = "mono", frame_size: int = 1024) -> Iterator[av.AudioFrame]:
    """A 440 Hz tone of ``duration`` seconds as float-planar frames of ``frame_size`` samples, pts in samples."""
    n_samples = round(duration * AUDIO_RATE)
    for start in range(0, n_samples, frame_size):
        t = np.arange(start, min(start + frame_size, n_samples)) / AUDIO_RATE
        samples = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout=layout)
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        yield frame


class _AudioTrack:
    """An encoded sine tone muxed on demand up to a given time, so audio and video stay interleaved."""

    def __init__(self, container: av.container.OutputContainer, duration: float) -> None:
        codec = "libopus" if container.format.name == "webm" else "aac"
        self.stream = container.add_stream(codec, rate=AUDIO_RATE)
        self.stream.layout = "mono"
        self.container = container
        self.frames = _sine_frames(duration)
        self.pending: av.AudioFrame | None = next(self.frames, None)

    def mux_until(self, seconds: float) -> None:
        while self.pending is not None and self.pending.pts / AUDIO_RATE <= seconds:
            self.container.mux(self.stream.encode(self.pending))
            self.pending = next(self.frames, None)

    def finish(self) -> None:
        self.mux_until(float("inf"))
        self.container.mux(self.stream.encode(None))


def make_clip(
    path: str | Path,
    *,
    n_frames: int = 24,
    size: tuple[int, int] = (160, 120),
    fps: int | Fraction = 24,
    audio: bool = False,
    vfr: bool = False,
    codec: str = "libx264",
    metadata: dict[str, str] | None = None,
    rotation: int = 0,
    lossless: bool = False,
) -> Path:
    """Write the synthetic scene as a video file; the container format comes from the suffix of ``path``.

    n_frames: frame count. size: (width, height) in pixels; odd sizes are stored as yuv444p.
    fps: nominal frames per second; the time base is 1 / (4 fps) and frame ``i`` is shown at ``i / fps``
        seconds, or with ``vfr=True`` at irregular times cycling through :data:`VFR_TICKS`.
    audio: add a mono 440 Hz tone (AAC, or Opus in .webm) lasting as long as the video.
    codec: video encoder (ignored when ``lossless``). lossless: exact pixels, ffv1 in .mkv/.avi, otherwise
        libx264rgb at qp 0.
    metadata: container tags, e.g. ``{"location": "+48.8584+002.2945/", "make": "TestCam"}`` (in
        .mp4/.mov every key is kept, as an mdta key when it is not a standard one).
    rotation: degrees clockwise (0, 90, 180, 270) that players must turn the stored frames by, written as a
        display matrix (mp4/mov). The stored frames are :func:`frame_image` as is.
    Returns ``Path(path)``.
    """
    path = Path(path)
    size = _check_size(size)
    if rotation not in (0, 90, 180, 270):
        raise ValueError(f"rotation must be 0, 90, 180 or 270 degrees, got {rotation}")
    codec, pix_fmt, options = _video_codec(path, codec, size, lossless)
    time_base = 1 / (4 * Fraction(fps))
    *ticks, end_tick = _frame_ticks(n_frames + 1, vfr)
    container_options = {"movflags": "+use_metadata_tags"} if path.suffix.lower() in _MOV_SUFFIXES else {}
    background = _background(size)
    with av.open(str(path), "w", container_options=container_options) as container:
        stream = container.add_stream(codec, rate=Fraction(fps), options=options)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], pix_fmt
        stream.time_base = stream.codec_context.time_base = time_base
        if rotation:
            stream.set_display_rotation(-rotation)  # PyAV takes counter-clockwise degrees
        container.metadata.update(metadata or {})
        track = _AudioTrack(container, float(end_tick * time_base)) if audio else None
        for index, tick in enumerate(ticks):
            if track is not None:
                track.mux_until(float(tick * time_base))
            frame = av.VideoFrame.from_ndarray(_draw(background, index, n_frames), format="rgb24")
            frame.pts = tick
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if track is not None:
            track.finish()
    return path


def _exif(tags: dict[str | int, Any]) -> Image.Exif:
    """EXIF block from tag names or ids (``{"Make": "TestCam", "Orientation": 6}``); ``"GPSInfo"`` takes a
    dict of GPS tag id -> value (``{1: "N", 2: (48.0, 51.0, 30.0)}``)."""
    exif = Image.Exif()
    for key, value in tags.items():
        tag = ExifTags.Base[key].value if isinstance(key, str) else int(key)
        if tag == ExifTags.IFD.GPSInfo:
            exif.get_ifd(ExifTags.IFD.GPSInfo).update(value)
        else:
            exif[tag] = value
    return exif


def make_image(
    path: str | Path, size: tuple[int, int] = (160, 120), exif: dict[str | int, Any] | None = None
) -> Path:
    """Write ``frame_image(0, size, 1)`` as a still (format from the suffix: .jpg, .png, .webp...).

    exif: EXIF tags to embed (see :func:`_exif`), e.g. ``{"Make": "TestCam", "Orientation": 6}``; an
    Orientation other than 1 asks viewers to rotate/flip the stored pixels. Returns ``Path(path)``.
    """
    path = Path(path)
    image = Image.fromarray(frame_image(0, _check_size(size), 1))
    extra = {"exif": _exif(exif).tobytes()} if exif else {}
    if path.suffix.lower() in (".jpg", ".jpeg"):
        extra["quality"] = 95
    image.save(path, **extra)
    return path


def make_animation(
    path: str | Path, n_frames: int = 4, size: tuple[int, int] = (160, 120), durations: Sequence[int] = (100,)
) -> Path:
    """Write the scene's frames ``frame_image(i, size, n_frames)`` as an animated PNG, WebP (lossless) or GIF
    (format from the suffix), frame ``i`` shown for ``durations[i % len(durations)]`` milliseconds."""
    path = Path(path)
    frames = [Image.fromarray(frame_image(i, _check_size(size), n_frames)) for i in range(n_frames)]
    times = [durations[i % len(durations)] for i in range(n_frames)]
    extra = {"lossless": True} if path.suffix.lower() == ".webp" else {}
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=times, loop=0, **extra)
    return path


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """The (type, body) chunks of a PNG file's bytes, in order."""
    chunks, position = [], len(_PNG_SIGNATURE)
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        chunks.append((kind, data[position + 8 : position + 8 + length]))
        position += 12 + length
    return chunks


def png_from_chunks(chunks: Sequence[tuple[bytes, bytes]]) -> bytes:
    """PNG file bytes from (type, body) chunks; lengths and CRCs are computed."""
    parts = [_PNG_SIGNATURE]
    for kind, body in chunks:
        parts.append(struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body)))
    return b"".join(parts)


_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
"""Adam7 interlacing passes: (x0, y0, dx, dy), pixels ``[y0::dy, x0::dx]``."""


def png_bytes(
    pixels: np.ndarray,
    *,
    claimed_size: tuple[int, int] | None = None,
    rows: int | None = None,
    interlaced: bool = False,
) -> bytes:
    """A PNG written by hand (what Pillow cannot write, or refuses to): 8- or 16-bit samples by ``pixels``' dtype
    (uint8 or uint16), grey / grey+alpha / RGB / RGBA by its channels ((H, W) or (H, W, 1..4)).

    claimed_size: (width, height) announced in the header instead of the real one (a decompression bomb: a
        small file that claims a huge image). rows: encode only the first ``rows`` rows in a complete zlib stream
        (the image data ends early; the header still announces every row); with ``interlaced``, the first
        ``rows`` scanlines of all passes together.
    interlaced: store the rows in Adam7 order (seven passes of sub-images).
    """
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    height, width, channels = pixels.shape
    depth = 16 if pixels.dtype == np.uint16 else 8
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    samples = pixels.astype(">u2" if depth == 16 else np.uint8)
    passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
    scanlines = [row for x0, y0, dx, dy in passes for row in samples[y0::dy, x0::dx] if row.size]
    raw = b"".join(b"\0" + row.tobytes() for row in scanlines[: len(scanlines) if rows is None else rows])
    announced_width, announced_height = claimed_size or (width, height)
    header = struct.pack(">IIBBBBB", announced_width, announced_height, depth, colour, 0, 0, int(interlaced))
    return png_from_chunks([(b"IHDR", header), (b"IDAT", zlib.compress(raw)), (b"IEND", b"")])


def leaked_frames(
    source: str | Path, output: str | Path, size: tuple[int, int], n_frames: int, tolerance: int = 30,
    max_clear: float = 0.01,
) -> list[int]:
    """Frames of an anonymized ``make_clip`` video in which an object is shown in the clear.

    A frame leaks when, for some object, more than ``max_clear`` of its true pixels (``object_masks``) are
    within ``tolerance`` (sum of absolute RGB differences) of the decoded source. Meant for solid or
    generative fills: a blur keeps flat interiors and would count as a leak.
    """
    from inpaint_anon.video import VideoReader

    leaked = []
    with VideoReader(source) as src, VideoReader(output) as out:
        for a, b in zip(src, out):
            diff = np.abs(a.rgb.astype(int) - b.rgb.astype(int)).sum(axis=-1)
            truth = object_masks(a.index, size, n_frames)
            if any((diff[mask] < tolerance).mean() > max_clear for mask in truth.values()):
                leaked.append(a.index)
    return leaked

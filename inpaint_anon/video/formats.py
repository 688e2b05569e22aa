"""The package's tables: which files are stills, which suffixes are video outputs, which encoders exist.

One table per fact, shared by reading, writing and settings validation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

IMAGE_SUFFIXES: dict[str, str] = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".bmp": "BMP",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
"""Image suffixes (read and written with Pillow) -> Pillow format name. An animated PNG or WebP is read as a
multi-frame video; a GIF (not listed) is decoded by FFmpeg like any video."""

LOSSLESS_IMAGE_SUFFIXES: frozenset[str] = frozenset(
    suffix for suffix, image_format in IMAGE_SUFFIXES.items() if image_format in ("PNG", "BMP", "TIFF"))
"""The image suffixes whose format Pillow writes losslessly (what a reversible scramble of a photo needs)."""

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
"""x264 speed presets, fastest first (mapped onto VP9's ``cpu-used`` 8..0)."""

DEFAULT_MAX_PIXELS = 2**27
"""Largest frame or image accepted by default, in pixels (width x height): 134,217,728, e.g. 16384 x 8192.
Takes 8K video (7680 x 4320 = 33.2 M) and 108-megapixel photos; a larger file is refused with an InputError
that names ``video.max_pixels``, the setting that raises the limit."""


@dataclass(frozen=True)
class Encoder:
    """How one video encoder is driven.

    pix_fmt: the pixel format frames are encoded in (RGB frames are converted to it).
    options: FFmpeg codec options for a crf (0..51) and an x264 preset.
    muxers: FFmpeg muxers (see :data:`VIDEO_OUTPUT_FORMATS`) whose files may hold this codec.
    lossless_max_crf: decoded frames equal the written RGB frames bit for bit at this crf or below (None:
        never).
    """

    pix_fmt: str
    options: Callable[[int, str], dict[str, str]]
    muxers: frozenset[str]
    lossless_max_crf: int | None = None

    @property
    def needs_even_size(self) -> bool:
        return self.pix_fmt == "yuv420p"


_VP9_SPEED = dict(zip(X264_PRESETS, ("8", "7", "6", "5", "4", "3", "2", "1", "0", "0"), strict=True))
_MP4_MOV_MKV = frozenset({"mp4", "mov", "matroska"})

ENCODERS: dict[str, Encoder] = {
    "libx264": Encoder("yuv420p", lambda crf, preset: {"crf": str(crf), "preset": preset}, _MP4_MOV_MKV),
    "libx264rgb": Encoder(
        "rgb24", lambda crf, preset: {"crf": str(crf), "preset": preset}, _MP4_MOV_MKV, lossless_max_crf=0
    ),
    "libvpx-vp9": Encoder(
        "yuv420p",
        lambda crf, preset: {"crf": str(crf), "b": "0", "cpu-used": _VP9_SPEED[preset], "row-mt": "1"},
        frozenset({"webm", "matroska", "mp4"}),
    ),
    "ffv1": Encoder("bgr0", lambda crf, preset: {}, frozenset({"matroska"}), lossless_max_crf=51),
}
"""Supported ``codec`` values: ``libx264`` (H.264 yuv420p, plays in browsers; the default), ``libx264rgb``
(H.264 in RGB, bit-exact at crf 0, few players), ``libvpx-vp9`` (webm) and ``ffv1`` (lossless RGB, .mkv only;
crf and preset do not apply)."""

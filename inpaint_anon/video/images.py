"""Reading stills and animated images with Pillow: upright 8-bit RGB, whatever the file's mode or bit depth.

A file named by one of :data:`~inpaint_anon.video.formats.IMAGE_SUFFIXES` is read here:

- a still becomes one frame (``pts None``, ``fps == time_base == 1``, ``is_image``);
- an animated PNG or WebP becomes a video: every frame, at its own display time (``time_base`` 1/1000 s,
  ``pts`` in milliseconds; a frame without a duration lasts 100 ms, as in browsers), so it needs a video output
  such as .mp4;
- a multi-page TIFF is refused (pages are not a timeline).

Pixels are converted to 8-bit RGB as a viewer shows them: 16-bit samples are scaled (65535 -> 255), not
clipped; transparent pixels are composited over white (what is hidden under transparency is never shown);
palettes are expanded; CMYK uses Pillow's formula (an embedded CMYK ICC profile is not applied, nor copied to
the RGB output); 32-bit float samples are refused. A PNG whose compressed data ends before the last row is
truncated (an InputError), not a partly black image. EXIF orientation is applied. Sizes are checked against
``video.max_pixels`` from the header, before any pixel is decoded.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
import zlib
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageCms, UnidentifiedImageError

from inpaint_anon.errors import InputError
from inpaint_anon.types import Frame, VideoMeta
from inpaint_anon.video.settings import check_frame_size

# What Pillow raises on a file that is not a readable image. ImportError: once ultralytics is imported, its patched
# Image.open retries unknown files as HEIF and needs the optional pi-heif package.
IMAGE_READ_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, ImportError, EOFError)

ANIMATED_FORMATS = {"PNG", "WEBP"}
"""Pillow formats whose extra frames are a timeline (read as video). Others with several frames (TIFF pages,
MPO previews) are not."""

DEFAULT_FRAME_MS = 100
"""Display time of an animation frame that states none (or 0), in milliseconds, as browsers do."""

_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}  # "I" (int32) holds 16-bit samples from PNG/TIFF
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_BACKGROUND = (255, 255, 255, 255)  # transparent pixels are shown over white
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
"""EXIF Orientation -> the Pillow transpose that makes the stored pixels upright."""
_EXIF_CLOCKWISE_DEGREES = {3: 180, 4: 180, 5: 270, 6: 90, 7: 90, 8: 270}


def _unreadable(path: Path, error: BaseException | str) -> InputError:
    return InputError(
        f"cannot read {path} as an image: not an image, or truncated or corrupt ({error}); "
        "check that it opens in an image viewer, or export it again"
    )


def open_image_header(path: Path) -> Image.Image:
    """``path`` opened by Pillow (header read, no pixel decoded yet) whatever its size.

    Pillow warns above ``Image.MAX_IMAGE_PIXELS`` and refuses twice that; ``video.max_pixels`` is the one limit
    here (:func:`open_image`), so an image Pillow refuses is opened by its format's plugin directly.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                return Image.open(path)
            except Image.DecompressionBombError:
                return _open_past_pillow_limit(path)
    except IMAGE_READ_ERRORS as error:
        raise _unreadable(path, error) from error


def open_image(path: Path, max_pixels: int) -> Image.Image:
    """``path`` opened by Pillow (header only), or InputError when it has more than ``max_pixels`` pixels."""
    image = open_image_header(path)
    try:
        check_frame_size(image.width, image.height, max_pixels, path)
    except BaseException:
        image.close()
        raise
    return image


def _open_past_pillow_limit(path: Path) -> Image.Image:
    """Open an image larger than Pillow's ceiling with the plugin of its suffix (no size check in between)."""
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None or image_format not in Image.OPEN:
        raise UnidentifiedImageError(f"no Pillow plugin for {path.suffix}")
    factory, accept = Image.OPEN[image_format]
    with path.open("rb") as file:
        prefix = file.read(16)
    if accept is not None and not accept(prefix):
        raise UnidentifiedImageError(f"{path.name} is not a {image_format} file")
    return factory(str(path))


def _exif_orientation(image: Image.Image, path: Path) -> int:
    """EXIF Orientation 1..8 (1: upright). Reading EXIF may decode the image (PNG), hence the read errors."""
    try:
        return int(image.getexif().get(ExifTags.Base.Orientation, 1) or 1)
    except IMAGE_READ_ERRORS as error:
        raise _unreadable(path, error) from error


def _scaled_16_bit(image: Image.Image) -> Image.Image:
    """A 16-bit grey image as 8-bit grey: round(v * 255 / 65535), samples outside 0..65535 clipped."""
    values = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
    return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), "L")


def to_rgb(image: Image.Image, path: Path) -> np.ndarray:
    """The current frame of ``image`` as a viewer shows it: uint8 (H, W, 3) RGB, C-contiguous (not yet turned
    upright). Loading errors (truncated data) and unsupported modes raise InputError naming ``path``."""
    try:
        image.load()
        mode = image.mode
        if mode in _SIXTEEN_BIT_MODES:
            rgb = _scaled_16_bit(image).convert("RGB")
        elif mode == "F":
            raise InputError(
                f"{path} holds 32-bit floating-point samples, which have no standard range; "
                "export it as an 8- or 16-bit image"
            )
        elif mode in _ALPHA_MODES or "transparency" in image.info:
            rgba = image.convert("RGBA")
            rgb = Image.alpha_composite(Image.new("RGBA", rgba.size, _BACKGROUND), rgba).convert("RGB")
        else:
            rgb = image.convert("RGB")
    except InputError:
        raise
    except IMAGE_READ_ERRORS as error:
        raise _unreadable(path, error) from error
    return np.ascontiguousarray(np.asarray(rgb))


def rgb_icc_profile(image: Image.Image) -> bytes | None:
    """The image's ICC profile when it still describes the RGB pixels :func:`to_rgb` returns, else None
    (a CMYK or grey profile does not describe RGB pixels)."""
    icc = image.info.get("icc_profile")
    if not icc:
        return None
    try:
        space = ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile.xcolor_space
    except (ImageCms.PyCMSError, OSError, ValueError):
        return None
    return icc if space.strip() == "RGB" else None


# --------------------------------------------------------------------------------------------------------
# PNG data length: Pillow fills the rows a complete but short zlib stream does not reach with black


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _png_data_bytes(width: int, height: int, bits_per_pixel: int, interlaced: bool) -> int:
    """Bytes of filtered scanlines (one filter byte per row) a PNG image of this size decompresses to."""
    passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        columns, rows = math.ceil(max(width - x0, 0) / dx), math.ceil(max(height - y0, 0) / dy)
        if columns and rows:
            total += rows * (1 + math.ceil(columns * bits_per_pixel / 8))
    return total


class _InflatedLength:
    """Counts the bytes one zlib stream decompresses to, up to ``needed``, in bounded memory."""

    def __init__(self, needed: int) -> None:
        self.needed, self.seen = needed, 0
        self._inflater = zlib.decompressobj()

    def feed(self, data: bytes) -> None:
        while data and self.seen < self.needed and not self._inflater.eof:
            self.seen += len(self._inflater.decompress(data, 1 << 20))
            data = self._inflater.unconsumed_tail

    @property
    def complete(self) -> bool:
        return self.seen >= self.needed


def check_png_complete(path: Path) -> None:
    """InputError when the image data of a PNG (each frame of an APNG) ends before its last row.

    Walks the chunks and inflates the data of each image (IDAT, and fdAT per APNG frame) to count its length.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise _unreadable(path, error) from error
    if not data.startswith(_PNG_SIGNATURE):
        return  # not a PNG, whatever its suffix says; Pillow has read it by its content
    bits_per_pixel, interlaced, frame_size, animation_frames = 0, False, (0, 0), 0
    streams: list[tuple[str, _InflatedLength]] = []  # (which image, its data), in file order
    position, previous = len(_PNG_SIGNATURE), b""
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IHDR" and len(body) >= 13:
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body[:13])
            bits_per_pixel, interlaced = depth * _PNG_CHANNELS.get(colour, 1), interlace == 1
            frame_size = (width, height)
        elif kind == b"fcTL" and len(body) >= 12:
            frame_size, animation_frames = struct.unpack(">II", body[4:12]), animation_frames + 1
        elif kind in (b"IDAT", b"fdAT"):
            if previous != kind:
                where = f"frame {animation_frames - 1} of " if animation_frames else ""
                streams.append((where, _InflatedLength(_png_data_bytes(*frame_size, bits_per_pixel, interlaced))))
            try:
                streams[-1][1].feed(body[4:] if kind == b"fdAT" else body)
            except zlib.error as error:
                raise _unreadable(path, f"bad compressed data: {error}") from error
        previous = kind
    for where, stream in streams:
        if not stream.complete:
            raise InputError(
                f"truncated: the image data of {where}{path} ends before its last row "
                f"({stream.seen} of {stream.needed} bytes); export or copy the image again"
            )


# --------------------------------------------------------------------------------------------------------
# Sources


class ImageSource:
    """A still, or an animated PNG/WebP, read with Pillow (see the module docstring).

    The first frame is decoded on opening, so ``.meta`` is complete and unreadable files fail at once.
    """

    def __init__(self, path: Path, max_pixels: int) -> None:
        self.path = path
        self._image = open_image(path, max_pixels)
        try:
            image_format = self._image.format or ""
            frames = int(getattr(self._image, "n_frames", 1))  # Pillow's multi-frame plugins define n_frames
            if frames > 1 and image_format not in ANIMATED_FORMATS:
                raise InputError(
                    f"{path} holds {frames} {image_format} pages or pictures; only the first would be read, "
                    "so save each page as its own image"
                )
            if image_format == "PNG":
                check_png_complete(path)
            orientation = _exif_orientation(self._image, path)
            self._transpose = _EXIF_TRANSPOSE.get(orientation)
            first = self._current_rgb()
            self._first_ms = self._frame_ms() if frames > 1 else None
            height, width = first.shape[:2]
            self.meta = VideoMeta(
                width=width,
                height=height,
                fps=Fraction(1000) / Fraction(self._first_ms) if self._first_ms else Fraction(1),
                time_base=Fraction(1, 1000) if frames > 1 else Fraction(1),
                n_frames=frames,
                rotation=_EXIF_CLOCKWISE_DEGREES.get(orientation, 0),
                codec=image_format.lower(),
                is_image=frames == 1,
            )
            self._first: np.ndarray | None = first
            if frames == 1:
                self._image.close()
        except BaseException:
            self._image.close()
            raise

    def _current_rgb(self) -> np.ndarray:
        rgb = to_rgb(self._image, self.path)
        if self._transpose is not None:
            rgb = np.ascontiguousarray(np.asarray(Image.fromarray(rgb).transpose(self._transpose)))
        return rgb

    def _frame_ms(self) -> Fraction:
        """The current animation frame's display time in milliseconds (:data:`DEFAULT_FRAME_MS` when unset)."""
        duration = self._image.info.get("duration") or 0
        return Fraction(duration).limit_denominator(1000) if duration > 0 else Fraction(DEFAULT_FRAME_MS)

    def frames(self) -> Iterator[Frame]:
        first, self._first = self._first, None
        if first is None:
            raise RuntimeError("a VideoReader can be iterated only once; open a new one to read again")
        if self.meta.is_image:
            yield Frame(0, None, first)
            return
        yield Frame(0, 0, first)
        start = self._first_ms or Fraction(0)
        for index in range(1, self.meta.n_frames or 1):
            try:
                self._image.seek(index)
            except IMAGE_READ_ERRORS as error:
                raise InputError(
                    f"corrupt data at frame {index} of {self.path} ({error}); export the animation again"
                ) from error
            rgb = self._current_rgb()
            if rgb.shape != first.shape:
                raise InputError(
                    f"frame {index} of {self.path} is {rgb.shape[1]}x{rgb.shape[0]}, the first is "
                    f"{first.shape[1]}x{first.shape[0]}; export the animation with one frame size"
                )
            yield Frame(index, round(start), rgb)
            start += self._frame_ms()

    def close(self) -> None:
        self._first = None
        self._image.close()

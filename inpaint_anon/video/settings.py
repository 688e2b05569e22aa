"""Video settings: the typed, validated ``video:`` block of ``conf/run.yaml``, and the frame-size limit."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import av

from inpaint_anon.checks import check_keys
from inpaint_anon.errors import ConfigError, InputError
from inpaint_anon.video.formats import DEFAULT_MAX_PIXELS, ENCODERS, X264_PRESETS


@dataclass(frozen=True)
class VideoSettings:
    """How frames are encoded, and how large an input frame may be. Every value is checked on construction.

    codec: video encoder: ``libx264`` (H.264 yuv420p, plays everywhere; the default), ``libx264rgb`` (H.264 in
        RGB, bit-exact at ``crf=0``; .mp4/.mov/.mkv, few players), ``libvpx-vp9`` (VP9; .webm/.mkv/.mp4) or
        ``ffv1`` (lossless RGB, always bit-exact; .mkv only). In a .webm output libx264 is replaced by VP9.
        Still-image outputs (.png, .jpg...) ignore it.
    crf: quality, integer 0 (best; lossless with libx264rgb) to 51 (worst); 18 looks lossless. Ignored by ffv1.
    preset: x264 speed preset, ``ultrafast`` .. ``placebo`` (mapped onto VP9's cpu-used). Ignored by ffv1.
    max_pixels: largest frame or image accepted, in pixels (width x height), video and stills alike
        (default :data:`~inpaint_anon.video.formats.DEFAULT_MAX_PIXELS`); guards against decompression bombs.
    """

    codec: str = "libx264"
    crf: int = 18
    preset: str = "medium"
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if isinstance(self.crf, bool) or not isinstance(self.crf, int) or not 0 <= self.crf <= 51:
            raise ConfigError(
                f"video.crf={self.crf!r} is out of range; use an integer from 0 (best) to 51 (worst), "
                "18 looks lossless"
            )
        if self.preset not in X264_PRESETS:
            raise ConfigError(
                f"video.preset={self.preset!r} is not an x264 preset; use one of {', '.join(X264_PRESETS)}"
            )
        if self.codec not in ENCODERS:
            raise ConfigError(f"video.codec={self.codec!r} is not supported; use one of {', '.join(ENCODERS)}")
        if self.codec not in av.codecs_available:
            raise ConfigError(f"video.codec={self.codec!r} is missing from this PyAV build; use codec=libx264")
        if isinstance(self.max_pixels, bool) or not isinstance(self.max_pixels, int) or self.max_pixels < 1:
            raise ConfigError(
                f"video.max_pixels={self.max_pixels!r} is invalid; use a positive integer (width x height), "
                f"default {DEFAULT_MAX_PIXELS}"
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> VideoSettings:
        """Settings from a plain mapping (the resolved ``video:`` config); an unknown key is a ConfigError."""
        check_keys("video", values, (f.name for f in fields(cls)))
        return cls(**values)

    def with_overrides(
        self, *, codec: str | None = None, crf: int | None = None, preset: str | None = None
    ) -> VideoSettings:
        """These settings with each given (not None) encoder value replaced; checked like a new instance."""
        changes = {name: value for name, value in (("codec", codec), ("crf", crf), ("preset", preset))
                   if value is not None}
        return replace(self, **changes) if changes else self

    @property
    def lossless(self) -> bool:
        """True when decoded video frames equal the written RGB frames bit for bit (ffv1, libx264rgb at crf 0)."""
        limit = ENCODERS[self.codec].lossless_max_crf
        return limit is not None and self.crf <= limit


def check_frame_size(width: int, height: int, max_pixels: int, path: Path) -> None:
    """InputError when a ``width`` x ``height`` frame (or image) of ``path`` exceeds ``max_pixels``."""
    pixels = width * height
    if pixels > max_pixels:
        raise InputError(
            f"{path} is {width}x{height} = {pixels} pixels per frame, more than video.max_pixels={max_pixels} "
            f"(a decompression bomb, or a very large file); if you trust it, raise the limit, e.g. "
            f"video.max_pixels={pixels}"
        )

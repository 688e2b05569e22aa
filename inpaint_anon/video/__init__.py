"""Video and image input/output: streamed decoding, atomic encoding, audio copy, metadata control, settings.

- ``reader``: :class:`VideoReader` and :func:`probe` (PyAV for video; ``images`` for stills and animated
  PNG/WebP with Pillow), frames upright, sizes limited by ``video.max_pixels``;
- ``writer``: :class:`VideoWriter` (atomic: a partial file renamed into place) and :func:`check_output`;
- ``streams``: audio packets copied unchanged, tags filtered (identifying metadata dropped unless asked);
- ``live``: live inputs and outputs: :class:`~inpaint_anon.video.live.StreamSpec` (file | device | url | stdin),
  :class:`~inpaint_anon.video.live.LiveSource` / ``LiveSettings`` (timeouts, reconnects, low-latency options)
  and :func:`~inpaint_anon.video.live.output_spec` (file | HLS playlist | network stream);
- ``settings``: :class:`VideoSettings`, the validated ``video:`` config block;
- ``formats``: the tables (image suffixes, output formats, encoders, presets, the default pixel limit).

Import the public names from here: ``from inpaint_anon.video import VideoReader, VideoWriter, probe``.
"""

from inpaint_anon.video.formats import (
    DEFAULT_MAX_PIXELS,
    ENCODERS,
    IMAGE_SUFFIXES,
    LOSSLESS_IMAGE_SUFFIXES,
    VIDEO_OUTPUT_FORMATS,
    X264_PRESETS,
    Encoder,
)
from inpaint_anon.video.images import IMAGE_READ_ERRORS
from inpaint_anon.video.reader import VideoReader, probe
from inpaint_anon.video.settings import VideoSettings, check_frame_size
from inpaint_anon.video.writer import VideoWriter, check_output

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ENCODERS",
    "IMAGE_READ_ERRORS",
    "IMAGE_SUFFIXES",
    "LOSSLESS_IMAGE_SUFFIXES",
    "VIDEO_OUTPUT_FORMATS",
    "X264_PRESETS",
    "Encoder",
    "VideoReader",
    "VideoSettings",
    "VideoWriter",
    "check_frame_size",
    "check_output",
    "probe",
]

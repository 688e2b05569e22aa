"""Audio and metadata: audio packets copied unchanged, tags filtered, muxer options that stamp nothing.

Identifying metadata (creation time, GPS location, camera make/model, comments) is dropped unless
``keep_metadata``; neutral stream tags (language) are kept.
"""

from __future__ import annotations

from collections.abc import Mapping

import av
from av.container import InputContainer, OutputContainer

from inpaint_anon.errors import InputError
from inpaint_anon.video.reader import ffmpeg_reason

MUXER_TAGS = {"major_brand", "minor_version", "compatible_brands", "encoder", "duration", "vendor_id"}
"""Tags a demuxer reports about the file itself; never copied, the output's muxer writes its own."""

NEUTRAL_TAGS = {"language"}
"""Stream tags kept even without ``keep_metadata``: they say nothing about who, where or when."""


def copied_tags(tags: Mapping[str, str], keep_metadata: bool) -> dict[str, str]:
    """Tags to carry over: all but the muxer's own when ``keep_metadata``, else only neutral ones."""
    if keep_metadata:
        return {k: v for k, v in tags.items() if k.lower() not in MUXER_TAGS}
    return {k: v for k, v in tags.items() if k.lower() in NEUTRAL_TAGS}


def muxer_options(muxer: str, keep_metadata: bool) -> dict[str, str]:
    """``bitexact`` stops FFmpeg stamping its version (the ``encoder`` tag); mp4/mov get the index up front
    (``faststart``) for browsers and, when metadata is kept, free-form keys such as
    ``com.apple.quicktime.location.ISO6709``."""
    options = {"fflags": "+bitexact"}
    if muxer in ("mp4", "mov"):
        options["movflags"] = "+faststart" + ("+use_metadata_tags" if keep_metadata else "")
    return options


class AudioCopy:
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
            copy.metadata.update(copied_tags(stream.metadata, keep_metadata))
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
                f"corrupt audio in {self.source.name} ({ffmpeg_reason(error)}); repair the file or drop its audio"
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

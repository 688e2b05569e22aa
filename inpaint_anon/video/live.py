"""Live inputs and outputs: what an ``input=`` / ``output=`` string names, and how PyAV opens it.

- :class:`StreamSpec` classifies a string once: a ``file`` path, a camera ``device`` (``/dev/video0``, v4l2),
  a network ``url`` (:data:`SOURCE_SCHEMES`) or ``stdin`` (``-``). An unknown ``scheme://`` is an InputError
  listing the supported ones; a URL never goes through the "file exists" checks.
- :class:`LiveSettings` is the validated ``live:`` config block: reconnect retries and backoff, the read/open
  timeout, and the low-latency demuxer options (no unbounded buffering).
- :class:`LiveSource` is a live input as the reader opens it: its spec, its settings and what happened to it
  (frames received, reconnects, ``lost`` when the source dropped and every reconnect failed).
- :func:`output_spec` classifies an output: a file, an HLS playlist (``.m3u8``) or a network stream
  (:data:`OUTPUT_SCHEMES`), with the muxer and its options.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

import av
from av.container import InputContainer

from inpaint_anon.checks import check_keys, check_number
from inpaint_anon.errors import ConfigError, InputError

logger = logging.getLogger("inpaint_anon")

SOURCE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "srt", "tcp")
"""URL schemes accepted as ``input=`` (besides file paths, camera devices and ``-`` for stdin)."""

OUTPUT_SCHEMES: dict[str, str] = {"rtmp": "flv", "rtmps": "flv", "rtsp": "rtsp", "udp": "mpegts",
                                  "srt": "mpegts", "tcp": "mpegts"}
"""URL schemes accepted as ``output=`` -> the FFmpeg muxer that feeds them."""

HLS_SUFFIX = ".m3u8"
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
_DEVICE = re.compile(r"^/dev/video\d+$")


class SourceKind(Enum):
    """What an ``input=`` string names."""

    FILE = "file"
    DEVICE = "device"
    URL = "url"
    STDIN = "stdin"


@dataclass(frozen=True)
class StreamSpec:
    """A classified ``input=`` value.

    kind: file | device | url | stdin.
    target: what PyAV opens: the path, the device, the URL, or ``pipe:0`` for stdin.
    scheme: the URL scheme (lower case), "" for other kinds.
    """

    kind: SourceKind
    target: str
    scheme: str = ""

    @classmethod
    def parse(cls, value: str) -> StreamSpec:
        """Classify ``value``; InputError for a ``scheme://`` that is not in :data:`SOURCE_SCHEMES`."""
        value = str(value)
        if value == "-":
            return cls(SourceKind.STDIN, "pipe:0")
        match = _SCHEME.match(value)
        if match:
            scheme = match["scheme"].lower()
            if scheme not in SOURCE_SCHEMES:
                raise InputError(f"input scheme {scheme}:// is not supported ({value}); use one of "
                                 f"{', '.join(s + '://' for s in SOURCE_SCHEMES)}, a camera such as /dev/video0, "
                                 "- for stdin, or a file path")
            return cls(SourceKind.URL, value, scheme)
        if _DEVICE.match(value):
            return cls(SourceKind.DEVICE, value)
        return cls(SourceKind.FILE, value)

    @property
    def is_live(self) -> bool:
        """True for everything but a file: the source runs until it stops, and stopping is the normal end."""
        return self.kind is not SourceKind.FILE

    @property
    def reconnects(self) -> bool:
        """True for network sources, which are reopened (with backoff) when they drop."""
        return self.kind is SourceKind.URL

    def __str__(self) -> str:
        return "-" if self.kind is SourceKind.STDIN else self.target


@dataclass(frozen=True)
class LiveSettings:
    """The ``live:`` config block: how live sources are opened and reconnected. Checked on construction.

    retries: reconnect attempts after a network source drops (0: none); each is logged.
    backoff_s: wait before the first reconnect attempt, in seconds; doubled after each failed one.
    timeout_s: seconds an open or a read may wait for data before the source counts as dropped (a dead source
        never hangs the run).
    probesize: bytes FFmpeg reads to find the streams (small: starts fast).
    analyzeduration_s: seconds of stream FFmpeg analyses before the first frame (small: low latency).
    rtsp_transport: ``tcp`` (no losses, works through NAT) or ``udp`` (lowest latency) for rtsp:// inputs.
    """

    retries: int = 3
    backoff_s: float = 1.0
    timeout_s: float = 5.0
    probesize: int = 32768
    analyzeduration_s: float = 0.5
    rtsp_transport: str = "tcp"

    def __post_init__(self) -> None:
        check_number("live.retries", self.retries, 0, integer=True)
        for name, low in (("backoff_s", 0.0), ("timeout_s", 0.1), ("analyzeduration_s", 0.0)):
            check_number(f"live.{name}", getattr(self, name), low)
        check_number("live.probesize", self.probesize, 32, integer=True)
        if self.rtsp_transport not in ("tcp", "udp"):
            raise ConfigError(f"live.rtsp_transport={self.rtsp_transport!r} is invalid; use tcp or udp")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> LiveSettings:
        """Settings from the resolved ``live:`` config; an unknown key is a ConfigError naming the known ones."""
        check_keys("live", values, (f.name for f in fields(cls)))
        return cls(**values)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before reconnect ``attempt`` (1-based): ``backoff_s``, doubled each time, at most 30."""
        return min(self.backoff_s * 2 ** (attempt - 1), 30.0)


def demuxer_options(spec: StreamSpec, settings: LiveSettings) -> dict[str, str]:
    """FFmpeg options for opening ``spec``: low-delay decoding and a short probe, so nothing is buffered beyond
    ``probesize`` bytes / ``analyzeduration_s``. (``fflags=nobuffer`` is left out on purpose: it discards the
    packets read while probing, the first keyframe among them, so every connect would lose a whole GOP.)"""
    options = {"flags": "low_delay", "probesize": str(settings.probesize),
               "analyzeduration": str(round(settings.analyzeduration_s * 1e6))}
    if spec.scheme in ("rtsp", "rtsps"):
        options["rtsp_transport"] = settings.rtsp_transport
    if spec.scheme == "udp":
        options["overrun_nonfatal"] = "1"
    return options


def missing_protocol(url: str) -> InputError:
    """The error for a URL whose protocol this PyAV build's FFmpeg lacks (e.g. srt:// without libsrt)."""
    scheme = url.split("://", 1)[0].lower()
    return InputError(f"{scheme}:// is not in this PyAV build's FFmpeg ({url}); use udp://, rtmp:// or tcp:// "
                      f"instead, or install a PyAV built with {scheme} support")


class StreamLost(InputError):
    """A live network source dropped and every reconnect attempt failed."""


class LiveAudio:
    """Audio packets of a live source on their way from the reader (decode thread) to the writer (encode thread).

    template: the first connection's audio stream: the output's audio stream is made from it (codec parameters).
    Packets arrive with pts and dts already rebased onto the video's clock (seconds since the first frame, in
    the packet's time base); :meth:`take_until` hands the writer those that start at or before a time, so the
    output stays interleaved. At most ``max_packets`` wait (about 40 s of AAC): beyond that the oldest are
    dropped and counted in ``dropped`` (a writer that far behind has lost its audio, never its video).
    Thread-safe.
    """

    def __init__(self, template: av.audio.stream.AudioStream, max_packets: int = 2000) -> None:
        self.template = template
        self.codec = (template.codec_context.name, template.codec_context.sample_rate)
        self.dropped = 0
        self.copied = 0
        self._packets: deque[av.Packet] = deque()
        self._max = max_packets
        self._lock = threading.Lock()

    def put(self, packet: av.Packet) -> None:
        with self._lock:
            if len(self._packets) >= self._max:
                self._packets.popleft()
                self.dropped += 1
            self._packets.append(packet)

    def take_until(self, seconds: float) -> list[av.Packet]:
        """The waiting packets that start at or before ``seconds`` (all of them for ``inf``), in order."""
        taken = []
        with self._lock:
            while self._packets and float(self._packets[0].pts * self._packets[0].time_base) <= seconds:
                taken.append(self._packets.popleft())
        self.copied += len(taken)
        return taken


@dataclass
class LiveSource:
    """A live input (camera, network stream, stdin) and what happened to it during a run.

    Pass it wherever a source path goes (``VideoReader``, ``VideoWriter(source=...)``, the pipeline): the
    reader opens it with :meth:`connect` and records ``frames``, ``reconnects`` and ``lost`` here, so the
    caller can tell, after the run, that the stream ended by dropping (``lost`` is the error to report).
    ``audio``: the source's first audio stream on its way to the writer (:class:`LiveAudio`), or None.
    :meth:`stop` (from any thread, e.g. a signal handler) ends the stream as if the source had ended: the reader
    stops after the frame it is decoding, and the run finishes normally with the frames received.
    """

    spec: StreamSpec
    settings: LiveSettings = field(default_factory=LiveSettings)
    frames: int = 0
    reconnects: int = 0
    lost: StreamLost | None = None
    audio: LiveAudio | None = None
    _stop: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    def stop(self) -> None:
        """Ask the reader to end the stream (the normal end of a live run: what was received is kept)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stop.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` (a reconnect's backoff), cut short by :meth:`stop`; True when stopped."""
        return self._stop.wait(seconds)

    @classmethod
    def parse(cls, value: str, settings: LiveSettings | None = None) -> LiveSource:
        spec = StreamSpec.parse(value)
        if not spec.is_live:
            raise InputError(f"{value} is a file, not a live source; pass it as a path")
        return cls(spec, settings if settings is not None else LiveSettings())

    def __str__(self) -> str:
        return str(self.spec)

    def reason(self, error: Exception) -> str:
        """FFmpeg's short reason for ``error``; a timeout (PyAV's interrupt) says how long nothing arrived."""
        if isinstance(error, av.ExitError):
            return f"no data for {self.settings.timeout_s:g} s"
        return getattr(error, "strerror", None) or str(error)

    def connect(self) -> InputContainer:
        """Open the source (waiting at most ``timeout_s``); InputError naming it and the fix when it cannot."""
        spec, settings = self.spec, self.settings
        if spec.kind is SourceKind.DEVICE and not Path(spec.target).exists():
            raise InputError(f"camera not found: {spec.target}; list the cameras with `ls /dev/video*` "
                             "(or v4l2-ctl --list-devices) and pass one of them")
        fmt = "v4l2" if spec.kind is SourceKind.DEVICE else None
        try:
            return av.open(spec.target, "r", format=fmt, options=demuxer_options(spec, settings),
                           timeout=(settings.timeout_s, settings.timeout_s))
        except av.ProtocolNotFoundError as error:
            raise missing_protocol(spec.target) from error
        except av.FFmpegError as error:
            reason = self.reason(error)
            raise InputError(f"cannot open {self} ({reason}, within live.timeout_s={settings.timeout_s}); check "
                             "that the stream is running and the address, port and path are right") from error
        except OSError as error:
            raise InputError(f"cannot open {self} ({error.strerror or error}); check the device or address") \
                from error


@dataclass(frozen=True)
class OutputSpec:
    """A classified ``output=`` value.

    kind: ``file`` (atomic: a partial file renamed at the end), ``hls`` (a playlist ``.m3u8`` and its
        segments, written live into the playlist's folder) or ``stream`` (a network URL, pushed live).
    target: the path or URL; muxer: the FFmpeg muxer for hls/stream ("" for files: chosen by suffix);
    options: muxer options.
    """

    kind: str
    target: str
    muxer: str = ""
    options: dict[str, str] = field(default_factory=dict)

    @property
    def is_live(self) -> bool:
        return self.kind != "file"


def output_spec(value: str | Path, hls_time_s: float = 2.0, hls_list_size: int = 0) -> OutputSpec:
    """Classify an output: a network URL (:data:`OUTPUT_SCHEMES`), an HLS playlist, or a file.

    HLS: ``hls_time_s`` seconds per segment, ``hls_list_size`` segments kept in the playlist (0: all, a
    recording a browser can play from the start; segments are named ``<stem>_00001.ts`` beside the playlist).
    InputError for an unsupported ``scheme://``.
    """
    text = str(value)
    match = _SCHEME.match(text) if not isinstance(value, Path) else None
    if match:
        scheme = match["scheme"].lower()
        if scheme not in OUTPUT_SCHEMES:
            raise InputError(f"output scheme {scheme}:// is not supported ({text}); use one of "
                             f"{', '.join(s + '://' for s in OUTPUT_SCHEMES)}, an HLS playlist out.m3u8, or a file")
        options = {"rtsp_transport": "tcp"} if scheme == "rtsp" else {}
        return OutputSpec("stream", text, OUTPUT_SCHEMES[scheme], options)
    path = Path(text)
    if path.suffix.lower() == HLS_SUFFIX:
        segments = str(path.with_name(f"{path.stem}_%05d.ts"))
        options = {"hls_time": f"{hls_time_s:g}", "hls_list_size": str(hls_list_size),
                   "hls_segment_filename": segments, "hls_flags": "independent_segments+temp_file",
                   "hls_playlist_type": "event"}
        return OutputSpec("hls", text, "hls", options)
    return OutputSpec("file", text)

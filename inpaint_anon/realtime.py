"""Real-time runs: a latency bound, the drop policy that keeps it, and per-second stats.

With ``realtime=true`` (:class:`RealtimeSettings`) the pipeline keeps every frame's end-to-end latency (from its
decoding to its hand-over to the encoder) under ``max_latency_ms``:

- frames are dropped **before detection**, never after: a frame that waited so long that it cannot be written in
  time (its wait plus the measured time from detection to the encoder is over the bound), or that the decoder had
  to push out of a full queue, is counted and left out of the output; no frame is ever written without its masks.
  A frame that finds the pipeline idle (no frame in flight) is always let in, so a pipeline that is slower than the
  bound on its own still writes every frame it can, each at the least latency it can;
- detection runs on a frame only when the budget allows (``age + detection time`` under the bound); the frames
  that piled up meanwhile pass with the tracker's held masks (moved along each track's velocity, grown with the
  time since the sighting; fail closed) until fresh detections arrive. ``max_detect_gap`` bounds the frames in a
  row without detection: the next one is detected whatever the latency, so a hold never runs out;
- a file input is read at its own frame rate (like ``ffmpeg -re``), as a camera would deliver it.

:class:`RealtimeStats` counts frames in, out and dropped, and the latency of every written frame, per second
(the progress line and ``run.json``'s ``realtime`` block). Memory is fixed: latencies go into a millisecond
histogram, and ``run.json`` keeps the last ``stats_seconds`` per-second rows.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from inpaint_anon.checks import check_bool, check_keys, check_number

_HISTOGRAM_MS = 60_000  # latencies are counted in 1 ms bins up to a minute; longer ones in the last bin


@dataclass(frozen=True)
class RealtimeSettings:
    """The ``realtime:`` config block (its ``tracker`` and ``pipeline`` overrides are applied by the entry point).

    enabled: keep the latency bound (drop frames before detection when behind); false = a normal run.
    max_latency_ms: the bound on a frame's decode-to-encoder latency, in milliseconds (> 0).
    max_detect_gap: most frames in a row passed on without detection (>= 1; at most the tracker's
        ``hold_frames``, so that held masks cover every one of them).
    stats_seconds: per-second rows kept for ``run.json`` (the last ones; >= 0).
    """

    enabled: bool = False
    max_latency_ms: float = 150.0
    max_detect_gap: int = 6
    stats_seconds: int = 3600

    def __post_init__(self) -> None:
        check_bool("realtime.enabled", self.enabled)
        check_number("realtime.max_latency_ms", self.max_latency_ms, 1.0, 600_000.0)
        check_number("realtime.max_detect_gap", self.max_detect_gap, 1, 10_000, integer=True)
        check_number("realtime.stats_seconds", self.stats_seconds, 0, 1_000_000, integer=True)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RealtimeSettings:
        """Settings from the resolved ``realtime:`` block; an unknown key is a ConfigError naming the known ones."""
        check_keys("realtime", values, (f.name for f in fields(cls)))
        return cls(**values)

    @property
    def max_latency_s(self) -> float:
        return self.max_latency_ms / 1000.0


class _Histogram:
    """Latency counts in 1 ms bins (fixed memory), with percentiles."""

    def __init__(self) -> None:
        self.counts = np.zeros(_HISTOGRAM_MS + 1, dtype=np.int64)
        self.total = 0
        self.max_ms = 0.0

    def add(self, ms: float) -> None:
        self.counts[min(int(ms), _HISTOGRAM_MS)] += 1
        self.total += 1
        self.max_ms = max(self.max_ms, ms)

    def percentile(self, q: float) -> float | None:
        """The ``q`` percentile (0..100) in ms, to the bin's upper edge (a bound, never an underestimate)."""
        if self.total == 0:
            return None
        rank = max(1, int(np.ceil(self.total * q / 100.0)))
        return float(np.searchsorted(np.cumsum(self.counts), rank) + 1)


@dataclass
class _Second:
    """One second's counts."""

    start: float
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0

    def __post_init__(self) -> None:
        self.latency = _Histogram()


class RealtimeStats:
    """Frames in / out / dropped and written frames' latencies, overall and per second; thread-safe.

    ``clock``: the monotonic clock in seconds (``time.monotonic``; a test passes its own).
    ``keep_seconds``: per-second rows kept for :meth:`summary` (the last ones).
    """

    def __init__(self, keep_seconds: int = 3600, clock: Any = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self.frames_in = self.frames_out = self.dropped = self.detected = self.held = 0
        self.latency = _Histogram()
        self._rows: deque[dict[str, Any]] = deque(maxlen=max(keep_seconds, 1))
        self._keep = keep_seconds
        self._rows_total = 0
        self._second = _Second(self.started)
        self._lock = threading.Lock()

    # -- counting -------------------------------------------------------------------------------------------

    def arrived(self) -> None:
        with self._lock:
            self._roll()
            self.frames_in += 1
            self._second.frames_in += 1

    def drop(self) -> None:
        with self._lock:
            self._roll()
            self.dropped += 1
            self._second.dropped += 1

    def passed(self, detected: bool) -> None:
        """A frame admitted to the pipeline, with (``detected``) or without a detection of its own."""
        with self._lock:
            if detected:
                self.detected += 1
            else:
                self.held += 1

    def written(self, latency_s: float) -> None:
        with self._lock:
            self._roll()
            ms = latency_s * 1000.0
            self.frames_out += 1
            self._second.frames_out += 1
            self.latency.add(ms)
            self._second.latency.add(ms)

    def _roll(self) -> None:
        """Close the current second (and any empty ones after it) when the clock has moved past it."""
        now = self.clock()
        while now - self._second.start >= 1.0:
            self._close_second()
            self._second = _Second(self._second.start + 1.0)

    def _close_second(self) -> None:
        second = self._second
        self._rows.append({
            "t": round(second.start - self.started, 3), "fps_in": second.frames_in, "fps_out": second.frames_out,
            "dropped": second.dropped, "latency_p50_ms": second.latency.percentile(50),
            "latency_p99_ms": second.latency.percentile(99),
        })
        self._rows_total += 1

    # -- reporting ------------------------------------------------------------------------------------------

    def postfix(self) -> dict[str, Any]:
        """The progress line's fields: the last complete second (fps in/out, dropped, p99 ms)."""
        with self._lock:
            self._roll()
            if not self._rows:
                return {}
            row = self._rows[-1]
            return {"in": row["fps_in"], "out": row["fps_out"], "drop": row["dropped"],
                    "p99ms": row["latency_p99_ms"]}

    def summary(self, settings: RealtimeSettings) -> dict[str, Any]:
        """``run.json``'s ``realtime`` block: totals, overall fps and latency percentiles, the per-second rows."""
        with self._lock:
            elapsed = max(self.clock() - self.started, 1e-9)
            if self._second.frames_in or self._second.frames_out or self._second.dropped:
                self._close_second()  # the last, partial second
                self._second = _Second(self.clock())
            rows = list(self._rows) if self._keep else []
            return {
                "max_latency_ms": settings.max_latency_ms,
                "max_detect_gap": settings.max_detect_gap,
                "frames_in": self.frames_in,
                "frames_out": self.frames_out,
                "dropped": self.dropped,
                "detected": self.detected,
                "held_only": self.held,
                "fps_in": round(self.frames_in / elapsed, 3),
                "fps_out": round(self.frames_out / elapsed, 3),
                "latency_ms": {"p50": self.latency.percentile(50), "p99": self.latency.percentile(99),
                               "max": round(self.latency.max_ms, 3)},
                "seconds": rows,
                "seconds_left_out": self._rows_total - len(rows),
            }

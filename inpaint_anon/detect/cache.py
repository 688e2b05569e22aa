"""Detections cached on disk, so inpainting settings can be swept over a video without detecting it again.

:class:`CachedDetector` wraps a Detector: when a complete cache file for the video and the detector settings
exists (named by :func:`~inpaint_anon.fingerprints.cache_key`), it serves the frames from it; otherwise it runs
the wrapped detector and records each result as it goes. The file is a ``.dets`` record
(:mod:`inpaint_anon.records`) keyed by frame index, so a cache written with ``detector.stride=k`` holds
frames 0, k, 2k... (the frames the detector ran on), and is served to the same frames.
"""

from __future__ import annotations

import warnings
from collections.abc import Generator, Mapping, Sequence
from pathlib import Path
from typing import Any

from inpaint_anon.atomic import CommitOnExit
from inpaint_anon.detect.base import Detector, check_frames
from inpaint_anon.errors import ConfigError, InputError
from inpaint_anon.fingerprints import KEY_LENGTH, cache_key_record, record_digest
from inpaint_anon.records import SUFFIX, CorruptRecordError, DetectionReader, DetectionWriter
from inpaint_anon.types import Detections, Frame


class DetectionCacheWarning(UserWarning):
    """A detection cache file was ignored (and is rebuilt) or removed as stale."""


def cache_path(cache_dir: str | Path, key: str) -> Path:
    """``<cache_dir>/<key>.dets``; ConfigError unless ``key`` looks like a
    :func:`~inpaint_anon.fingerprints.cache_key`."""
    if not (isinstance(key, str) and len(key) == KEY_LENGTH and all(c in "0123456789abcdef" for c in key)):
        raise ConfigError(f"cache key {key!r} is not {KEY_LENGTH} lowercase hex digits; make it with cache_key()")
    return Path(cache_dir).expanduser() / f"{key}{SUFFIX}"


# -- the caching detector ---------------------------------------------------------------------------------


class CachedDetector(CommitOnExit):
    """A :class:`Detector` that replays cached detections of one video, or records them.

    detector: the detector to wrap (its ``names`` and ``batch_size`` are this one's).
    cache_dir: folder of cache files, created when missing.
    video_path: the video (or image folder) the frames come from; its content is fingerprinted.
    settings: the wrapped detector's settings (its constructor arguments, and ``stride`` when the detector runs
        on every k-th frame only), see :func:`~inpaint_anon.fingerprints.cache_key`.

    Frames must come in increasing index order, each at most once (as the pipeline gives them); indices may
    skip (``detector.stride``). When ``<cache_dir>/<key>.dets`` exists, passes :meth:`DetectionReader.verify`,
    and has the detector's class names, each frame is served from its record (matched by frame index) and the
    wrapped detector is never called (``hit`` is True). A damaged, unfinished or mismatched file is ignored with
    a :class:`DetectionCacheWarning` and rebuilt: the wrapped detector runs and each result is appended, under
    its frame's index, to a new cache file, which replaces the old one only in :meth:`close`, to be called once
    after the last frame of a successful run. An aborted run (:meth:`abort`, or an exception inside
    ``with CachedDetector(...)``) leaves no complete cache.

    While serving, a frame whose size differs from the cached one, a frame index the cache holds no record for
    next, or a video longer than the cache raises InputError naming the file to delete; a video shorter than
    the cache is found in :meth:`close`, which then removes the stale file with a warning, so the next run
    rebuilds it.
    """

    def __init__(
        self, detector: Detector, cache_dir: str | Path, video_path: str | Path, settings: Mapping[str, Any]
    ) -> None:
        if not isinstance(detector, Detector):
            raise ConfigError(
                f"detector={detector!r} is not a Detector; give an object with names, batch_size and __call__"
            )
        self.detector = detector
        self.names: dict[int, str] = dict(detector.names)
        self.batch_size: int = detector.batch_size
        record = cache_key_record(video_path, settings)
        self.key = record_digest(record)
        self._key_info = {"cache_key": self.key, "video_path": str(video_path), **record}
        self.cache_dir = Path(cache_dir).expanduser()
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(
                f"cache_dir={str(cache_dir)!r} cannot be used ({error.strerror or error}); give a writable folder"
            ) from error
        self.path = cache_path(self.cache_dir, self.key)
        self.frames_done = 0
        self._last_index: int | None = None
        self._reader = self._valid_cache()
        self._cached: Generator[tuple[int, Detections], None, None] | None = (
            iter(self._reader) if self._reader is not None else None
        )
        self._writer: DetectionWriter | None = None
        self._finished = False

    @property
    def hit(self) -> bool:
        """True when detections are served from the cache file (the wrapped detector is not called)."""
        return self._reader is not None

    def _valid_cache(self) -> DetectionReader | None:
        """A reader of the cache file when it is complete and matches, else None (with a warning if it exists)."""
        if not self.path.exists():
            return None
        try:
            reader = DetectionReader(self.path)
            reader.verify()
        except CorruptRecordError as error:
            self._warn(f"ignoring detection cache {self.path}: {error.reason}")
            return None
        if reader.key.get("cache_key") != self.key:
            self._warn(f"ignoring detection cache {self.path}: it was written for another key")
            return None
        if reader.names != self.names:
            self._warn(f"ignoring detection cache {self.path}: its class names {reader.names} are not the detector's")
            return None
        return reader

    @staticmethod
    def _warn(message: str) -> None:
        warnings.warn(f"{message}; rebuilding it", DetectionCacheWarning, stacklevel=4)

    def __call__(self, frames: Sequence[Frame]) -> list[Detections]:
        """One Detections per frame (masks bool (N, H, W) at the frame's size, on the CPU), served from the cache
        by frame index or detected by the wrapped detector and recorded. Frames follow those of earlier calls in
        increasing index order."""
        if self._finished:
            raise RuntimeError(f"CachedDetector for {self.path} is finished; make a new one for another run")
        frames = check_frames(frames)
        self._check_order(frames)
        if self._cached is not None:
            return [self._serve(frame) for frame in frames]
        found = self.detector(frames)
        if len(found) != len(frames):
            raise RuntimeError(f"wrapped detector returned {len(found)} results for {len(frames)} frames")
        if self._writer is None:
            self._writer = DetectionWriter(self.path, key=self._key_info, names=self.names)
        for frame, detections in zip(frames, found):
            self._writer.write(frame.index, detections)
        self.frames_done += len(found)
        return found

    def _check_order(self, frames: list[Frame]) -> None:
        """ValueError unless the frames' indices increase, from call to call too."""
        for frame in frames:
            if self._last_index is not None and frame.index <= self._last_index:
                raise ValueError(
                    f"CachedDetector got frame {frame.index} after frame {self._last_index}; give each frame once, "
                    "in increasing index order"
                )
            self._last_index = frame.index

    def _serve(self, frame: Frame) -> Detections:
        assert self._cached is not None and self._reader is not None
        index, detections = next(self._cached, (None, None))
        if detections is None:
            raise InputError(
                f"detection cache {self.path} ends after {self._reader.n_frames} frame records but the detector was "
                f"asked for frame {frame.index} (the video is longer); delete that file and run again"
            )
        if index != frame.index:
            raise InputError(
                f"detection cache {self.path} holds frame {index} next but the detector was asked for frame "
                f"{frame.index} (was it written with another detector.stride?); delete that file and run again"
            )
        if (frame.height, frame.width) != (detections.height, detections.width):
            raise InputError(
                f"detection cache {self.path} has frame {index} at {detections.height}x{detections.width} (HxW) but "
                f"the video frame is {frame.height}x{frame.width}; delete that file and run again"
            )
        self.frames_done += 1
        return detections

    def close(self) -> None:
        """End a successful run: finalize the new cache file (rename into place), or, when serving, check that
        the video had as many frames as the cache (else remove the stale file with a warning). Idempotent."""
        if self._finished:
            return
        self._finished = True
        if self._writer is not None:
            self._writer.close()
        if self._cached is not None and self._reader is not None:
            self._cached.close()
            if self.frames_done != self._reader.n_frames:
                warnings.warn(
                    f"detection cache {self.path} holds {self._reader.n_frames} frame records but this run used "
                    f"{self.frames_done} (the video is shorter); removed it, the next run rebuilds it",
                    DetectionCacheWarning,
                    stacklevel=2,
                )
                self.path.unlink(missing_ok=True)

    def abort(self) -> None:
        """End a failed run: discard the partial cache file (an existing complete one is kept). Idempotent."""
        if self._finished:
            return
        self._finished = True
        if self._writer is not None:
            self._writer.abort()
        if self._cached is not None:
            self._cached.close()

    def __repr__(self) -> str:
        return f"CachedDetector({self.detector!r}, path={str(self.path)!r}, hit={self.hit})"

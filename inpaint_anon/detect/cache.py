"""Detections cached on disk, so inpainting settings can be swept over a video without detecting it again.

Three parts:

- :class:`DetectionWriter` / :class:`DetectionReader`: a streamed file of per-frame Detections (``.dets``),
  written and read one frame at a time (memory stays flat however long the video is).
- :func:`cache_key`: a fingerprint of the video's content and of the detector settings that change outputs.
- :class:`CachedDetector`: a Detector that serves a complete cache file and otherwise runs the wrapped
  detector and writes the cache as it goes.

File format (version 1), little-endian, no pickle::

    file    := MAGIC  record(H)  record(F)*  record(E)
    MAGIC   := b"IADETS1\\n"                                   (8 bytes)
    record  := tag (1 byte)  payload length (uint64)  CRC-32 of the payload (uint32)  payload
    H       := UTF-8 JSON: {"format", "version", "key": {...}, "names": [[id, name], ...], "masks", "compression"}
    F       := zlib (level 1) of an .npz (np.savez, read back with allow_pickle=False) holding one frame:
               frame int64 (3,) [index, height, width]; class_ids int64 (N,); scores float32 (N,);
               boxes_xyxy float32 (N, 4); track_ids int64 (N,) when the frame has them;
               mask_crops int32 (N, 4) [y0, x0, y1, x1], each mask's tight bounding box (exclusive ends,
               all zero for an empty mask); mask_bits uint8: np.packbits of each crop (C order, each padded to
               whole bytes), concatenated in region order.
    E       := uint64 frame count (a fixed 21-byte end marker, found by seeking to the end of the file)

Masks are packed bits over each mask's bounding box, then deflated: for typical smooth masks (people, cars)
this is about as small as run-length encoding (a person box and a car ellipse at 1280x720: 0.7 kB of masks,
1.3 kB per frame record in all, against 1.8 MB of bool masks) and for ragged masks smaller (packbits + zlib
4.7 kB against RLE + zlib 5.8 kB for a noisy 300x200 blob); its worst case is bounded by one bit per pixel
of the crop, where RLE can grow to 4 bytes per pixel. Measured at 720p on one CPU core: about 0.5 ms to write
and 1 ms to read a frame (reading rebuilds the full-size masks).

A writer writes to a partial file next to the target (:mod:`inpaint_anon.atomic`) and renames it to
the target only in :meth:`DetectionWriter.close`, after the end marker: a crash leaves only the temporary
file (never removed automatically), and a truncated file has no end marker, so it never looks complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import struct
import warnings
import zlib
from collections.abc import Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from inpaint_anon.atomic import AtomicPath, CommitOnExit
from inpaint_anon.detect.base import Detector
from inpaint_anon.errors import ConfigError, InputError
from inpaint_anon.types import Detections

FORMAT_NAME = "inpaint_anon.detections"
FORMAT_VERSION = 1
MAGIC = b"IADETS1\n"
CACHE_SUFFIX = ".dets"
KEY_LENGTH = 32
"""Hex digits of a cache key (128 bits of SHA-256)."""

IGNORED_SETTINGS = frozenset({"batch_size", "device"})
"""Detector settings left out of the cache key: they change speed, not detections (up to float rounding
between devices). ``half`` (fp16) is kept: it changes scores and mask edges visibly."""

HEAD_TAIL_BYTES = 4 << 20
SAMPLE_BLOCKS = 32
SAMPLE_BLOCK_BYTES = 64 << 10
_READ_CHUNK = 1 << 20
ZLIB_LEVEL = 1

_HEADER, _FRAME, _END = b"H", b"F", b"E"
_RECORD = struct.Struct("<cQI")
_COUNT = struct.Struct("<Q")
_END_SIZE = _RECORD.size + _COUNT.size


class CorruptCacheError(InputError):
    """A detection cache file is truncated, damaged, unfinished or of another format.

    path: the file; reason: what is wrong with it (the message adds the fix: delete the file).
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"detection cache {path} is unusable: {reason}; delete it (it is rebuilt on the next run)")
        self.path = path
        self.reason = reason


class DetectionCacheWarning(UserWarning):
    """A detection cache file was ignored (and is rebuilt) or removed as stale."""


# -- masks ------------------------------------------------------------------------------------------------


def pack_masks(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pack bool masks (N, H, W) into (crops int32 (N, 4) [y0, x0, y1, x1], bits uint8 (B,)).

    Each crop is the mask's tight bounding box (exclusive ends; all zero for an empty mask); ``bits`` is the
    concatenation of ``np.packbits`` of each crop in C order, each padded to a whole byte.
    """
    crops = np.zeros((masks.shape[0], 4), dtype=np.int32)
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    chunks = []
    for i, mask in enumerate(masks):
        ys, xs = np.flatnonzero(rows[i]), np.flatnonzero(cols[i])
        if ys.size == 0:
            continue
        y0, y1, x0, x1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
        crops[i] = (y0, x0, y1, x1)
        chunks.append(np.packbits(mask[y0:y1, x0:x1]))
    bits = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint8)
    return crops, bits


def unpack_masks(crops: np.ndarray, bits: np.ndarray, height: int, width: int) -> np.ndarray:
    """Inverse of :func:`pack_masks`: bool (N, height, width). ValueError when crops and bits disagree."""
    masks = np.zeros((crops.shape[0], height, width), dtype=bool)
    offset = 0
    for mask, (y0, x0, y1, x1) in zip(masks, crops.tolist()):
        if (y0, x0, y1, x1) == (0, 0, 0, 0):
            continue
        if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
            raise ValueError(f"mask crop {[y0, x0, y1, x1]} lies outside a {height}x{width} frame")
        size = (y1 - y0) * (x1 - x0)
        chunk = bits[offset : offset + (size + 7) // 8]
        offset += (size + 7) // 8
        if chunk.size * 8 < size:
            raise ValueError("mask bits end before the last mask")
        mask[y0:y1, x0:x1] = np.unpackbits(chunk, count=size).reshape(y1 - y0, x1 - x0).view(bool)
    if offset != bits.size:
        raise ValueError(f"{bits.size - offset} mask bytes left over")
    return masks


# -- frames and records -----------------------------------------------------------------------------------


def _encode_frame(index: int, detections: Detections) -> bytes:
    """One frame record's payload: zlib of an .npz (see the module docstring)."""
    masks = detections.masks.detach().cpu().numpy()
    crops, bits = pack_masks(masks)
    arrays = {
        "frame": np.array([index, masks.shape[1], masks.shape[2]], dtype=np.int64),
        "class_ids": detections.class_ids.detach().cpu().numpy(),
        "scores": detections.scores.detach().cpu().numpy(),
        "boxes_xyxy": detections.boxes_xyxy.detach().cpu().numpy(),
        "mask_crops": crops,
        "mask_bits": bits,
    }
    if detections.track_ids is not None:
        arrays["track_ids"] = detections.track_ids.detach().cpu().numpy()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return zlib.compress(buffer.getvalue(), ZLIB_LEVEL)


def _decode_frame(payload: bytes, names: dict[int, str]) -> tuple[int, Detections]:
    """(index, Detections) from a frame record's payload; ValueError/KeyError/zlib.error when malformed."""
    with np.load(io.BytesIO(zlib.decompress(payload)), allow_pickle=False) as arrays:
        index, height, width = (int(v) for v in arrays["frame"])
        masks = unpack_masks(arrays["mask_crops"], arrays["mask_bits"], height, width)
        track_ids = torch.from_numpy(arrays["track_ids"]) if "track_ids" in arrays.files else None
        detections = Detections(
            masks=torch.from_numpy(masks),
            class_ids=torch.from_numpy(arrays["class_ids"]),
            scores=torch.from_numpy(arrays["scores"]),
            boxes_xyxy=torch.from_numpy(arrays["boxes_xyxy"]),
            names=dict(names),
            track_ids=track_ids,
        )
    return index, detections


def _write_record(file: BinaryIO, tag: bytes, payload: bytes) -> None:
    file.write(_RECORD.pack(tag, len(payload), zlib.crc32(payload)))
    file.write(payload)


def _read_record(file: BinaryIO, file_size: int, path: Path) -> tuple[bytes, bytes] | None:
    """(tag, payload) of the record at the file position, or None at the end of the file.

    Raises CorruptCacheError for a truncated record, an unknown tag or a CRC mismatch.
    """
    start = file.tell()
    head = file.read(_RECORD.size)
    if not head:
        return None
    if len(head) < _RECORD.size:
        raise CorruptCacheError(path, f"a record at byte {start} is cut short")
    tag, length, crc = _RECORD.unpack(head)
    if tag not in (_HEADER, _FRAME, _END):
        raise CorruptCacheError(path, f"unknown record tag {tag!r} at byte {start}")
    if length > file_size - file.tell():
        raise CorruptCacheError(path, f"the record at byte {start} runs past the end of the file (truncated)")
    payload = file.read(length)
    if zlib.crc32(payload) != crc:
        raise CorruptCacheError(path, f"the record at byte {start} fails its CRC check")
    return tag, payload


def _names_table(names: object) -> dict[int, str]:
    """id -> name table from a mapping; ConfigError unless it is a non-empty int -> str mapping."""
    if not isinstance(names, Mapping) or not names:
        raise ConfigError(f"names={names!r} must be a non-empty mapping class id -> class name, e.g. {{0: 'person'}}")
    if not all(isinstance(i, (int, np.integer)) and isinstance(n, str) for i, n in names.items()):
        raise ConfigError(f"names={dict(names)!r} must map integer class ids to class name strings")
    return {int(i): n for i, n in names.items()}


# -- writer and reader ------------------------------------------------------------------------------------


class DetectionWriter(CommitOnExit):
    """Writes per-frame Detections to a ``.dets`` file (see the module docstring), one frame at a time.

    path: the final file; nothing appears there before :meth:`close` (data goes to a temporary file in the
        same folder, renamed on close). Its folder must exist.
    key: JSON-serializable description of what was detected (cache key, settings...), read back as
        :attr:`DetectionReader.key`.
    names: class id -> class name; every frame's ``Detections.names`` must equal it.

    Use as a context manager: a clean exit closes (finalizes) the file, an exception aborts it.
    """

    def __init__(self, path: str | Path, *, key: Mapping[str, Any], names: Mapping[int, str]) -> None:
        self.path = Path(path)
        self.names = _names_table(names)
        if not isinstance(key, Mapping):
            raise ConfigError(f"key={key!r} must be a JSON-serializable dict describing the cached detections")
        try:
            header = json.dumps(
                {"format": FORMAT_NAME, "version": FORMAT_VERSION, "key": dict(key),
                 "names": sorted(self.names.items()), "masks": "packbits-crop", "compression": f"zlib-{ZLIB_LEVEL}"},
                allow_nan=False,
            )
        except (TypeError, ValueError) as error:
            raise ConfigError(
                f"key={key!r} is not JSON-serializable ({error}); use str/int/float/bool/list/dict values"
            ) from error
        if not self.path.parent.is_dir():
            raise InputError(
                f"cannot write detection cache {self.path}: folder {self.path.parent} does not exist; create it"
            )
        if self.path.is_dir():
            raise InputError(f"cannot write detection cache {self.path}: it is a folder; give a file path")
        self._partial = AtomicPath(self.path)
        self.temp_path = self._partial.temp
        self.n_frames = 0
        self._file: BinaryIO | None = self.temp_path.open("wb")
        self._file.write(MAGIC)
        _write_record(self._file, _HEADER, header.encode())

    def write(self, index: int, detections: Detections) -> None:
        """Append frame ``index`` (must be the number of frames written so far: 0, 1, 2...).

        detections: masks bool (N, H, W) at frame resolution, on any device; track_ids may be None.
        """
        file = self._open_file()
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool) or index != self.n_frames:
            raise ConfigError(
                f"DetectionWriter.write index={index!r}; write frames in order, the next one is {self.n_frames}"
            )
        if not isinstance(detections, Detections):
            raise ConfigError(f"DetectionWriter.write got {type(detections).__name__}; give a Detections")
        if dict(detections.names) != self.names:
            raise ConfigError(
                f"frame {index} has class names {detections.names} but the writer was opened with {self.names}; "
                "open the writer with the detector's names"
            )
        _write_record(file, _FRAME, _encode_frame(int(index), detections))
        self.n_frames += 1

    def close(self) -> None:
        """Write the end marker (frame count), flush to disk and rename to :attr:`path`. Idempotent."""
        if self._file is None:
            return
        file, self._file = self._file, None
        try:
            _write_record(file, _END, _COUNT.pack(self.n_frames))
            file.flush()
            os.fsync(file.fileno())
            file.close()
            self._partial.close()
        except BaseException:
            file.close()
            self._partial.abort()
            raise

    def abort(self) -> None:
        """Discard what was written (the temporary file); :attr:`path` is left untouched. Idempotent."""
        if self._file is None:
            return
        file, self._file = self._file, None
        file.close()
        self._partial.abort()

    @property
    def closed(self) -> bool:
        return self._file is None

    def _open_file(self) -> BinaryIO:
        if self._file is None:
            raise RuntimeError(f"DetectionWriter for {self.path} is closed; open a new writer")
        return self._file


class DetectionReader:
    """Reads a ``.dets`` file written by :class:`DetectionWriter`.

    Opening reads the header and the end marker only. Attributes: ``path``; ``key`` (the writer's key dict);
    ``names`` (class id -> name); ``complete`` (True when the end marker is present); ``n_frames`` (frame
    count from the end marker, None when incomplete).

    Iterating yields ``(index, Detections)`` in order (masks bool (N, H, W) on the CPU), opening the file
    anew for each pass; it raises CorruptCacheError at a damaged record or where an unfinished file stops.
    Raises InputError when the file is missing, CorruptCacheError when it is not a readable cache.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"detection cache {self.path} not found; check the path")
        with self.path.open("rb") as file:
            self._file_size = os.fstat(file.fileno()).st_size
            if file.read(len(MAGIC)) != MAGIC:
                raise CorruptCacheError(self.path, "it does not start like a detection cache file (version 1)")
            record = _read_record(file, self._file_size, self.path)
            if record is None or record[0] != _HEADER:
                raise CorruptCacheError(self.path, "its header is missing")
            self._parse_header(record[1])
            self._data_start = file.tell()
            self.n_frames = self._read_end_marker(file)
        self.complete = self.n_frames is not None

    def _parse_header(self, payload: bytes) -> None:
        try:
            header = json.loads(payload)
            if header["format"] != FORMAT_NAME or header["version"] != FORMAT_VERSION:
                raise ValueError(f"format {header['format']!r} version {header['version']!r}")
            self.key: dict[str, Any] = dict(header["key"])
            self.names: dict[int, str] = {int(i): str(n) for i, n in header["names"]}
        except (ValueError, KeyError, TypeError) as error:
            reason = f"its header is not a version {FORMAT_VERSION} header ({error})"
            raise CorruptCacheError(self.path, reason) from error

    def _read_end_marker(self, file: BinaryIO) -> int | None:
        """The frame count in the end marker at the end of the file, or None when there is none."""
        if self._file_size - self._data_start < _END_SIZE:
            return None
        file.seek(self._file_size - _END_SIZE)
        tag, length, crc = _RECORD.unpack(file.read(_RECORD.size))
        payload = file.read(_COUNT.size)
        if tag != _END or length != _COUNT.size or zlib.crc32(payload) != crc:
            return None
        return int(_COUNT.unpack(payload)[0])

    def __iter__(self) -> Generator[tuple[int, Detections], None, None]:
        with self.path.open("rb", buffering=_READ_CHUNK) as file:
            file.seek(self._data_start)
            for position, payload in enumerate(self._frame_payloads(file)):
                try:
                    index, detections = _decode_frame(payload, self.names)
                except (ValueError, KeyError, TypeError, OSError, zlib.error) as error:
                    raise CorruptCacheError(self.path, f"frame {position} cannot be decoded ({error})") from error
                if index != position:
                    raise CorruptCacheError(self.path, f"frame {position} is labelled {index}")
                yield index, detections

    def _frame_payloads(self, file: BinaryIO) -> Iterator[bytes]:
        """Frame payloads from the file position to the end marker, checking the record sequence and count."""
        position = 0
        while (record := _read_record(file, self._file_size, self.path)) is not None:
            tag, payload = record
            if tag == _FRAME:
                yield payload
                position += 1
                continue
            if tag != _END or _COUNT.unpack(payload)[0] != position or file.tell() != self._file_size:
                raise CorruptCacheError(self.path, f"its end marker after frame {position} does not match the frames")
            return
        reason = f"it ends after {position} frames without its end marker (the write did not finish)"
        raise CorruptCacheError(self.path, reason)

    def verify(self) -> None:
        """Read every record and check its CRC, the record order and the frame count (no decoding: about the
        speed of reading the file). Raises CorruptCacheError when anything is wrong or the file is unfinished."""
        with self.path.open("rb", buffering=_READ_CHUNK) as file:
            file.seek(self._data_start)
            for _ in self._frame_payloads(file):
                pass

    def __repr__(self) -> str:
        return f"DetectionReader({str(self.path)!r}, n_frames={self.n_frames}, complete={self.complete})"


# -- cache keys -------------------------------------------------------------------------------------------


def _sample_spans(size: int) -> list[tuple[int, int]]:
    """(offset, length) byte spans hashed by :func:`file_fingerprint` for a file of ``size`` bytes."""
    if size <= 2 * HEAD_TAIL_BYTES + SAMPLE_BLOCKS * SAMPLE_BLOCK_BYTES:
        return [(0, size)]
    step = (size - 2 * HEAD_TAIL_BYTES - SAMPLE_BLOCK_BYTES) / (SAMPLE_BLOCKS - 1)
    blocks = [(HEAD_TAIL_BYTES + round(i * step), SAMPLE_BLOCK_BYTES) for i in range(SAMPLE_BLOCKS)]
    return [(0, HEAD_TAIL_BYTES), *blocks, (size - HEAD_TAIL_BYTES, HEAD_TAIL_BYTES)]


def file_fingerprint(path: str | Path) -> str:
    """SHA-256 hex digest of a file's size and a sample of its bytes: a fingerprint, not a full hash.

    Files up to 2 * 4 MiB + 32 * 64 KiB (about 10 MiB) are hashed whole; larger ones by their first and last
    4 MiB and 32 blocks of 64 KiB evenly spaced in between (about 10 MiB read, whatever the size). An edit
    that keeps the size and touches only unsampled bytes goes unnoticed; re-encoding, trimming or
    re-muxing a video changes its size or its container headers, which are sampled.
    Raises InputError when the file cannot be read.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            digest = hashlib.sha256(f"size={size};".encode())
            for offset, length in _sample_spans(size):
                file.seek(offset)
                while length > 0 and (chunk := file.read(min(length, _READ_CHUNK))):
                    digest.update(chunk)
                    length -= len(chunk)
    except OSError as error:
        raise InputError(f"cannot read {path} to fingerprint it ({error.strerror or error}); check the path") from error
    return digest.hexdigest()


def content_fingerprint(path: str | Path) -> str:
    """:func:`file_fingerprint` of a file, or of a folder (image sequence, exported model): a digest of every
    file's relative path and fingerprint, in sorted order. Raises InputError when the path does not exist."""
    path = Path(path).expanduser()
    if path.is_file():
        return file_fingerprint(path)
    if not path.is_dir():
        raise InputError(f"cannot fingerprint {path}: no such file or folder; check the path")
    digest = hashlib.sha256(b"folder;")
    for member in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{member.relative_to(path).as_posix()}={file_fingerprint(member)};".encode())
    return digest.hexdigest()


def _json_value(value: Any, name: str) -> Any:
    """``value`` as plain JSON data (dicts with str keys, lists, str, int, float, bool, None)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"detector setting {name!r}={value!r} is not a finite number; give a finite value")
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise ConfigError(f"detector setting {name!r} has non-string keys {list(value)}; use string keys")
        return {k: _json_value(v, f"{name}.{k}") for k, v in value.items()}
    if isinstance(value, Sequence):
        return [_json_value(v, f"{name}[{i}]") for i, v in enumerate(value)]
    raise ConfigError(
        f"detector setting {name!r}={value!r} ({type(value).__name__}) cannot be part of a cache key; "
        "use str/int/float/bool/None, lists or dicts of them"
    )


def key_settings(detector_settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that go into a cache key: plain JSON data, without :data:`IGNORED_SETTINGS`, plus
    ``weights_content`` (:func:`content_fingerprint`) when ``weights`` names an existing local file or folder.

    A bare model name that is not a file here (``yolov8n-seg.pt`` in ultralytics' weights folder) is keyed by
    name only: pass the resolved path to key on the weights' content. Raises ConfigError for a non-mapping
    or a value that is not plain data.
    """
    if not isinstance(detector_settings, Mapping):
        raise ConfigError(
            f"detector settings {detector_settings!r} must be a mapping, e.g. {{'weights': 'yolov8n-seg.pt'}}"
        )
    if not all(isinstance(name, str) for name in detector_settings):
        raise ConfigError(f"detector settings have non-string names {list(detector_settings)}; use string names")
    settings = {name: _json_value(v, name) for name, v in detector_settings.items() if name not in IGNORED_SETTINGS}
    weights = settings.get("weights")
    if isinstance(weights, str) and weights and Path(weights).expanduser().exists():
        settings["weights_content"] = content_fingerprint(weights)
    return settings


def _key_record(video_path: str | Path, detector_settings: Mapping[str, Any]) -> dict[str, Any]:
    """What a cache key digests: format version, the video's content fingerprint and the key settings."""
    settings = key_settings(detector_settings)
    return {"format": f"{FORMAT_NAME}/{FORMAT_VERSION}", "video": content_fingerprint(video_path), "settings": settings}


def _digest(record: Mapping[str, Any]) -> str:
    text = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


def cache_key(video_path: str | Path, detector_settings: Mapping[str, Any]) -> str:
    """A 32-hex-digit key naming the detections of ``video_path`` under ``detector_settings``.

    It digests the file format version, the video's content fingerprint (:func:`content_fingerprint`: size
    and sampled bytes, not the path or the modification time, so a copied or renamed video keeps its key) and
    :func:`key_settings` (every setting but ``batch_size`` and ``device``; the weights file's content when it
    is local). Raises InputError when the video cannot be read, ConfigError for bad settings.
    """
    return _digest(_key_record(video_path, detector_settings))


def cache_path(cache_dir: str | Path, key: str) -> Path:
    """``<cache_dir>/<key>.dets``; ConfigError unless ``key`` looks like a :func:`cache_key`."""
    if not (isinstance(key, str) and len(key) == KEY_LENGTH and all(c in "0123456789abcdef" for c in key)):
        raise ConfigError(f"cache key {key!r} is not {KEY_LENGTH} lowercase hex digits; make it with cache_key()")
    return Path(cache_dir).expanduser() / f"{key}{CACHE_SUFFIX}"


# -- the caching detector ---------------------------------------------------------------------------------


class CachedDetector(CommitOnExit):
    """A :class:`Detector` that replays cached detections of one video, or records them.

    detector: the detector to wrap (its ``names`` and ``batch_size`` are this one's).
    cache_dir: folder of cache files, created when missing.
    video_path: the video (or image folder) the frames come from; its content is fingerprinted.
    settings: the wrapped detector's settings (its constructor arguments), see :func:`cache_key`.

    When ``<cache_dir>/<key>.dets`` exists, passes :meth:`DetectionReader.verify`, and has the detector's
    class names, frames are served from it in order and the wrapped detector is never called (``hit`` is
    True). A damaged, unfinished or mismatched file is ignored with a :class:`DetectionCacheWarning` and
    rebuilt: the wrapped detector runs and each result is appended to a new cache file, which replaces the
    old one only in :meth:`close`, to be called once after the last frame of a successful run. An aborted
    run (:meth:`abort`, or an exception inside ``with CachedDetector(...)``) leaves no complete cache.

    While serving, a frame whose size differs from the cached one, or a video longer than the cache, raises
    InputError naming the file to delete; a video shorter than the cache is found in :meth:`close`, which
    then removes the stale file with a warning, so the next run rebuilds it.
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
        record = _key_record(video_path, settings)
        self.key = _digest(record)
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
        self._reader = self._valid_cache()
        self._frames = iter(self._reader) if self._reader is not None else None
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
        except CorruptCacheError as error:
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

    def __call__(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """One Detections per RGB uint8 image (H, W, 3), for the frames following those of earlier calls."""
        if self._finished:
            raise RuntimeError(f"CachedDetector for {self.path} is finished; make a new one for another run")
        if self._frames is not None:
            return [self._serve(image) for image in images]
        found = self.detector(images)
        if len(found) != len(images):
            raise RuntimeError(f"wrapped detector returned {len(found)} results for {len(images)} frames")
        if self._writer is None:
            self._writer = DetectionWriter(self.path, key=self._key_info, names=self.names)
        for detections in found:
            self._writer.write(self._writer.n_frames, detections)
        self.frames_done += len(found)
        return found

    def _serve(self, image: np.ndarray) -> Detections:
        assert self._frames is not None and self._reader is not None
        index, detections = next(self._frames, (None, None))
        if detections is None:
            raise InputError(
                f"detection cache {self.path} holds {self._reader.n_frames} frames but the video has more; "
                "delete that file and run again"
            )
        size = tuple(np.shape(image)[:2])
        if size != (detections.height, detections.width):
            raise InputError(
                f"detection cache {self.path} has frame {index} at {detections.height}x{detections.width} (HxW) but "
                f"the video frame is {'x'.join(map(str, size))}; delete that file and run again"
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
        if self._frames is not None and self._reader is not None:
            self._frames.close()
            if self.frames_done != self._reader.n_frames:
                warnings.warn(
                    f"detection cache {self.path} holds {self._reader.n_frames} frames but the video had "
                    f"{self.frames_done}; removed it, the next run rebuilds it",
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
        if self._frames is not None:
            self._frames.close()

    def __repr__(self) -> str:
        return f"CachedDetector({self.detector!r}, path={str(self.path)!r}, hit={self.hit})"

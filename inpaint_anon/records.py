"""The ``.dets`` detection record: per-frame Detections streamed to and from a file.

One format for two uses: each run writes its final (tracked) detections of every frame to
``<run folder>/detections.dets`` (evaluation reads them back), and the detection cache
(:mod:`inpaint_anon.detect.cache`) stores a detector's raw output there, for the frames it ran on.

- :class:`DetectionWriter` / :class:`DetectionReader`: written and read one frame at a time (memory stays flat
  however long the video is).
- :func:`pack_masks` / :func:`unpack_masks`: the masks' packed-bits encoding.

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
    E       := uint64 count of F records (a fixed 21-byte end marker, found by seeking to the end of the file)

Frame indices increase from one F record to the next but need not be consecutive: a cache written with
``detector.stride=k`` holds frames 0, k, 2k... A run's record holds every frame (0, 1, 2...), like every file
written before gaps were allowed, which all read unchanged.

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

import io
import json
import os
import struct
import zlib
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from inpaint_anon.atomic import AtomicPath, CommitOnExit
from inpaint_anon.errors import ConfigError, InputError
from inpaint_anon.types import Detections, mask_box

FORMAT_NAME = "inpaint_anon.detections"
FORMAT_VERSION = 1
MAGIC = b"IADETS1\n"
SUFFIX = ".dets"
ZLIB_LEVEL = 1
READ_CHUNK = 1 << 20
"""Bytes read at a time (file buffer of readers and fingerprints)."""

_HEADER, _FRAME, _END = b"H", b"F", b"E"
_RECORD = struct.Struct("<cQI")
_COUNT = struct.Struct("<Q")
_END_SIZE = _RECORD.size + _COUNT.size


class CorruptRecordError(InputError):
    """A ``.dets`` file is truncated, damaged, unfinished or of another format.

    path: the file; reason: what is wrong with it (the message adds the fix: delete the file and run again).
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"detections file {path} is unusable: {reason}; delete it and run again (a detection cache is rebuilt)"
        )
        self.path = path
        self.reason = reason


# -- masks ------------------------------------------------------------------------------------------------


def pack_masks(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pack bool masks (N, H, W) into (crops int32 (N, 4) [y0, x0, y1, x1], bits uint8 (B,)).

    Each crop is the mask's tight bounding box (exclusive ends; all zero for an empty mask); ``bits`` is the
    concatenation of ``np.packbits`` of each crop in C order, each padded to a whole byte.
    """
    crops = np.zeros((masks.shape[0], 4), dtype=np.int32)
    chunks = []
    for i, mask in enumerate(masks):
        box = mask_box(mask)
        if box is None:
            continue
        x0, y0, x1, y1 = box
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

    Raises CorruptRecordError for a truncated record, an unknown tag or a CRC mismatch.
    """
    start = file.tell()
    head = file.read(_RECORD.size)
    if not head:
        return None
    if len(head) < _RECORD.size:
        raise CorruptRecordError(path, f"a record at byte {start} is cut short")
    tag, length, crc = _RECORD.unpack(head)
    if tag not in (_HEADER, _FRAME, _END):
        raise CorruptRecordError(path, f"unknown record tag {tag!r} at byte {start}")
    if length > file_size - file.tell():
        raise CorruptRecordError(path, f"the record at byte {start} runs past the end of the file (truncated)")
    payload = file.read(length)
    if zlib.crc32(payload) != crc:
        raise CorruptRecordError(path, f"the record at byte {start} fails its CRC check")
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

    Frames are written in increasing index order; indices may skip (a detector run every k-th frame).
    Attributes: ``n_frames`` (frame records written so far), ``last_index`` (index of the last one, None before).
    Use as a context manager: a clean exit closes (finalizes) the file, an exception aborts it.
    """

    def __init__(self, path: str | Path, *, key: Mapping[str, Any], names: Mapping[int, str]) -> None:
        self.path = Path(path)
        self.names = _names_table(names)
        if not isinstance(key, Mapping):
            raise ConfigError(f"key={key!r} must be a JSON-serializable dict describing the detections")
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
                f"cannot write detections file {self.path}: folder {self.path.parent} does not exist; create it"
            )
        if self.path.is_dir():
            raise InputError(f"cannot write detections file {self.path}: it is a folder; give a file path")
        self._partial = AtomicPath(self.path)
        self.temp_path = self._partial.temp
        self.n_frames = 0
        self.last_index: int | None = None
        self._file: BinaryIO | None = self.temp_path.open("wb")
        self._file.write(MAGIC)
        _write_record(self._file, _HEADER, header.encode())

    def write(self, index: int, detections: Detections) -> None:
        """Append frame ``index``: an int >= 0, larger than the last one written (0, 1, 2... or 0, 3, 6...).

        detections: masks bool (N, H, W) at frame resolution, on any device; track_ids may be None.
        """
        file = self._open_file()
        lowest = 0 if self.last_index is None else self.last_index + 1
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool) or index < lowest:
            after = "" if self.last_index is None else f" after frame {self.last_index}"
            raise ConfigError(
                f"DetectionWriter.write index={index!r}{after}; write each frame once, in increasing index order "
                f"(the next index must be an int >= {lowest})"
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
        self.last_index = int(index)

    def close(self) -> None:
        """Write the end marker (count of frame records), flush to disk and rename to :attr:`path`. Idempotent."""
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
    ``names`` (class id -> name); ``complete`` (True when the end marker is present); ``n_frames`` (count of
    frame records from the end marker, None when incomplete; the video's frame count for a run's record, which
    holds every frame).

    Iterating yields ``(frame index, Detections)`` in increasing index order (masks bool (N, H, W) on the CPU),
    opening the file anew for each pass; it raises CorruptRecordError at a damaged record, at an index that does
    not increase, or where an unfinished file stops.
    Raises InputError when the file is missing, CorruptRecordError when it is not a readable ``.dets`` file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"detections file {self.path} not found; check the path")
        with self.path.open("rb") as file:
            self._file_size = os.fstat(file.fileno()).st_size
            if file.read(len(MAGIC)) != MAGIC:
                raise CorruptRecordError(self.path, "it does not start like a .dets detections file (version 1)")
            record = _read_record(file, self._file_size, self.path)
            if record is None or record[0] != _HEADER:
                raise CorruptRecordError(self.path, "its header is missing")
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
            raise CorruptRecordError(self.path, reason) from error

    def _read_end_marker(self, file: BinaryIO) -> int | None:
        """The count of frame records in the end marker at the end of the file, or None when there is none."""
        if self._file_size - self._data_start < _END_SIZE:
            return None
        file.seek(self._file_size - _END_SIZE)
        tag, length, crc = _RECORD.unpack(file.read(_RECORD.size))
        payload = file.read(_COUNT.size)
        if tag != _END or length != _COUNT.size or zlib.crc32(payload) != crc:
            return None
        return int(_COUNT.unpack(payload)[0])

    def __iter__(self) -> Generator[tuple[int, Detections], None, None]:
        with self.path.open("rb", buffering=READ_CHUNK) as file:
            file.seek(self._data_start)
            previous = -1
            for position, payload in enumerate(self._frame_payloads(file)):
                try:
                    index, detections = _decode_frame(payload, self.names)
                except (ValueError, KeyError, TypeError, OSError, zlib.error) as error:
                    reason = f"frame record {position} cannot be decoded ({error})"
                    raise CorruptRecordError(self.path, reason) from error
                if index <= previous:
                    after = f"after frame {previous}" if previous >= 0 else "below 0"
                    raise CorruptRecordError(self.path, f"frame record {position} is labelled frame {index}, {after}")
                previous = index
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
                reason = f"its end marker after {position} frame records does not match them"
                raise CorruptRecordError(self.path, reason)
            return
        reason = f"it ends after {position} frame records without its end marker (the write did not finish)"
        raise CorruptRecordError(self.path, reason)

    def verify(self) -> None:
        """Read every record and check its CRC, the record order and the record count (no decoding: about the
        speed of reading the file). Raises CorruptRecordError when anything is wrong or the file is unfinished."""
        with self.path.open("rb", buffering=READ_CHUNK) as file:
            file.seek(self._data_start)
            for _ in self._frame_payloads(file):
                pass

    def __repr__(self) -> str:
        return f"DetectionReader({str(self.path)!r}, n_frames={self.n_frames}, complete={self.complete})"

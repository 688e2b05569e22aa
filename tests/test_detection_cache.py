"""The .dets record format (inpaint_anon.records), cache keys (inpaint_anon.fingerprints) and CachedDetector
serving/rebuilding by frame index (inpaint_anon.detect.cache); no model weights."""

from __future__ import annotations

import base64
import os
import shutil
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from inpaint_anon.detect.base import Detector
from inpaint_anon.detect.cache import CachedDetector, DetectionCacheWarning, cache_path
from inpaint_anon.detect.scripted import ScriptedDetector
from inpaint_anon.errors import ConfigError, InputError
from inpaint_anon.fingerprints import HEAD_TAIL_BYTES, cache_key, content_fingerprint, file_fingerprint, key_settings
from inpaint_anon.records import (
    MAGIC,
    CorruptRecordError,
    DetectionReader,
    DetectionWriter,
    _encode_frame,
    _write_record,
    pack_masks,
    unpack_masks,
)
from inpaint_anon.types import Detections, Frame
from tests.clips import make_clip, object_masks

NAMES = {0: "person", 1: "car", 5: "bus"}
SETTINGS = {"weights": "yolov8n-seg.pt", "classes": ["person", "car"], "conf": 0.25, "iou": 0.7, "imgsz": 640,
            "half": False, "max_det": 100, "batch_size": 4, "device": "cpu"}
SIZE = (40, 30)  # (W, H) of the frames given to CachedDetector
N_FRAMES = 7


def random_detections(rng: np.random.Generator, n: int, height: int, width: int, tracked: bool) -> Detections:
    """n regions with random masks (some empty, some blobs, some noise), scores, boxes and class ids."""
    masks = np.zeros((n, height, width), dtype=bool)
    for i in range(n):
        kind = i % 3
        if kind == 1:
            y0, x0 = rng.integers(0, height), rng.integers(0, width)
            masks[i, y0 : y0 + rng.integers(1, height + 1), x0 : x0 + rng.integers(1, width + 1)] = True
        elif kind == 2:
            masks[i] = rng.random((height, width)) < 0.3
    return Detections(
        masks=masks,
        class_ids=rng.choice(list(NAMES), n),
        scores=rng.random(n).astype(np.float32),
        boxes_xyxy=(rng.random((n, 4)) * 100).astype(np.float32),
        names=NAMES,
        track_ids=rng.integers(0, 1000, n) if tracked else None,
    )


def assert_same(a: Detections, b: Detections) -> None:
    assert torch.equal(a.masks, b.masks) and a.masks.dtype == b.masks.dtype == torch.bool
    assert torch.equal(a.class_ids, b.class_ids) and b.class_ids.dtype == torch.int64
    assert torch.equal(a.scores, b.scores) and b.scores.dtype == torch.float32
    assert torch.equal(a.boxes_xyxy, b.boxes_xyxy) and b.boxes_xyxy.dtype == torch.float32
    assert (a.track_ids is None) == (b.track_ids is None)
    if a.track_ids is not None:
        assert torch.equal(a.track_ids, b.track_ids)
    assert a.names == b.names


def write_file(path: Path, frames: list[Detections], key: dict | None = None, stride: int = 1) -> Path:
    """``frames`` written as frames 0, stride, 2 * stride..."""
    with DetectionWriter(path, key=key or {"test": 1}, names=NAMES) as writer:
        for position, detections in enumerate(frames):
            writer.write(position * stride, detections)
    return path


def small_frames(n: int = 3) -> list[Detections]:
    rng = np.random.default_rng(1)
    return [random_detections(rng, 2, 9, 11, tracked=True) for _ in range(n)]


# -- masks and the file format ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(0, 5, 7), (1, 1, 1), (3, 17, 31), (4, 64, 48), (2, 3, 200)])
def test_pack_unpack_masks_round_trip(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    masks = random_detections(rng, *shape, tracked=False).masks.numpy()
    if shape[0]:
        masks[0, -1, -1] = True  # a region touching the bottom-right corner
    crops, bits = pack_masks(masks)
    assert crops.shape == (shape[0], 4) and bits.dtype == np.uint8
    assert np.array_equal(unpack_masks(crops, bits, *shape[1:]), masks)


def test_unpack_masks_rejects_inconsistent_data() -> None:
    masks = np.ones((1, 4, 4), dtype=bool)
    crops, bits = pack_masks(masks)
    with pytest.raises(ValueError, match="outside"):
        unpack_masks(crops, bits, 3, 3)
    with pytest.raises(ValueError, match="end before"):
        unpack_masks(crops, bits[:1], 4, 4)
    with pytest.raises(ValueError, match="left over"):
        unpack_masks(crops, np.concatenate([bits, bits]), 4, 4)


def test_round_trip_gives_identical_detections(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    shapes = [(3, 17, 31), (0, 17, 31), (5, 64, 48), (1, 1, 1), (2, 121, 7), (0, 8, 8)]
    frames = [random_detections(rng, n, h, w, tracked=i % 2 == 0) for i, (n, h, w) in enumerate(shapes)]
    path = write_file(tmp_path / "a.dets", frames, key={"video": "x.mp4", "conf": 0.25, "classes": ["car"]})
    reader = DetectionReader(path)
    assert reader.complete and reader.n_frames == len(frames)
    assert reader.key == {"video": "x.mp4", "conf": 0.25, "classes": ["car"]} and reader.names == NAMES
    reader.verify()
    for _ in range(2):  # each pass reads the file anew
        got = list(reader)
        assert [i for i, _ in got] == list(range(len(frames)))
        for original, (_, copy) in zip(frames, got, strict=True):
            assert_same(original, copy)
    assert [p.name for p in tmp_path.iterdir()] == ["a.dets"]  # no temporary file left


# Written by the writer of inpaint_anon/detect/cache.py before the format moved to inpaint_anon/records.py:
# frame 0 with a person (3x3 square) and a car (bottom row), track ids 1, 2; frame 1 empty; 6x8 frames.
OLD_FILE = (
    "SUFERVRTMQpIqwAAAAAAAABdPibkeyJmb3JtYXQiOiAiaW5wYWludF9hbm9uLmRldGVjdGlvbnMiLCAidmVyc2lvbiI6IDEsICJrZXkiOiB7InNv"
    "dXJjZSI6ICJjbGlwLm1wNCJ9LCAibmFtZXMiOiBbWzAsICJwZXJzb24iXSwgWzMsICJjYXIiXV0sICJtYXNrcyI6ICJwYWNrYml0cy1jcm9wIiwg"
    "ImNvbXByZXNzaW9uIjogInpsaWItMSJ9RgECAAAAAAAAWhxv+XgBzZU9S8NgEMcvVq2KFgdxEIc4aBSrYO0gIr4sDhYli4NTiWmKVWtKHpUWFQKC"
    "CC6+LI5B/AYODi5+B3dn/QiCUO/i80SfmKGQDh5cLg350/xyd//ouUTrBHzHEKzcj5/VeXRCHxQdo2xN7lVqCvTCLb9N1Ju19VV9Q4FDONIKFjMd"
    "bVbV5kozWlrViraz7xh7edspWHR92dhlFl5nW0bFwt+j0+mxtHqixogu/jjQzk86eNUlpET59UIg9SCSuWswli8VmMC65DJRY2FlmoeViMTJDAwf"
    "CJwuxGGm7VgByznXiBrNUsw21KLmsCwAuPNySy6vZ58EQwoZNu2qxfLVWrUmeuJxDlFjcqjZeMNGo7aIHMjiUcWkoHNYAnheDPG991/95isbbCdv"
    "OnYl6JOHQgrPPwJE85Ua7VNsPgWfowWzFbONJxZ/tWitZL7Ux/aD4KOV8vk2S/sB3ilpMUSNxDs+mGpoDJvgFHW3LhN0fw6+/yZArzJ3/rMpUIMo"
    "qEkUek5pmUjIxk2+TNlJN/BwfWFg42EZmSP5HmWP0GB1lRc8SlYZlpIRkc1QBlbsS+/wP39sKayj5ffwPsoUpghXKSKcbAV/tLhYHgooZe0yuqW8"
    "ZmEtDS3NI6WMOoJTL41wWErTEv2W3lAqzY6ea/M/R0lIwi2+h0faJvgCkU2IkkaTAQAAAAAAAJK0VeF4AQvwZmbRZYAARYbcg3zs/6GAk0GEIa0o"
    "MTdVL6+gkpFBgGEGVBmMnuwX6hsQychQxlCtnpJanFykbqWgbpNpoa6joJ6WX1RSlJgXn1+UkgoSd0vMKU4FihdnJBakAvkaxjqaOgq1ChQALkao"
    "e9igNAeUDkDx0oGp6SdgXuIFeik5J7G4OD4zpRjmrQaoNhhNkbcMKPcWqvPP3s78A3M+F9D5xcn5Rakkuj3NhKgoobrbTy2xzoG5nQ/o9qT8itTi"
    "+IrKikrSwp5o9yuYUJaouFDD3qaS/Tqy+3MTi7Pjk4vyC0gM/0xiw5/K7mdw+joP5n5Q0ge7PymzhDTn15Qa0i/5MDLpMqMWR6DSBoQ5odkURDWA"
    "sz68cArwRtUGyvINIGVAzAvEMNDAeBnIRCkA0LWCslsDUBEIcwExDDQwTgLaich86PpASb0BqBiE+YAYBhoY/ZgY0BI+ul5QMmsAagBhVL18zAyQ"
    "SIMnOnS9oCiG6UX16jmYXliEB3izgktKNgY2hligZ3pZgPYxAABXhUnwRQgAAAAAAAAAFNgHJwIAAAAAAAAA"
)


def test_a_file_written_before_the_move_reads_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "old.dets"
    path.write_bytes(base64.b64decode(OLD_FILE))
    reader = DetectionReader(path)
    assert (reader.complete, reader.n_frames, reader.key) == (True, 2, {"source": "clip.mp4"})
    assert reader.names == {0: "person", 3: "car"}
    reader.verify()
    (first_index, first), (second_index, second) = list(reader)
    assert (first_index, second_index) == (0, 1)
    expected = np.zeros((2, 6, 8), bool)
    expected[0, 1:4, 2:5] = True
    expected[1, 5, :] = True
    assert np.array_equal(first.masks.numpy(), expected) and first.class_ids.tolist() == [0, 3]
    assert first.scores.tolist() == [0.5, 0.25] and first.track_ids.tolist() == [1, 2]
    assert first.boxes_xyxy.tolist() == [[2.0, 1.0, 5.0, 4.0], [0.0, 5.0, 8.0, 6.0]]
    assert len(second) == 0 and (second.height, second.width) == (6, 8) and second.track_ids is None


def test_zero_frame_file_is_complete(tmp_path: Path) -> None:
    reader = DetectionReader(write_file(tmp_path / "empty.dets", []))
    assert reader.complete and reader.n_frames == 0 and list(reader) == []


def test_writer_accepts_a_numpy_index(tmp_path: Path) -> None:
    frame = small_frames(1)[0]
    with DetectionWriter(tmp_path / "a.dets", key={}, names=NAMES) as writer:
        writer.write(np.int64(0), frame)
    assert_same(frame, next(iter(DetectionReader(tmp_path / "a.dets")))[1])


def test_unfinished_write_leaves_no_complete_file(tmp_path: Path) -> None:
    target = tmp_path / "a.dets"
    writer = DetectionWriter(target, key={}, names=NAMES)
    for index, frame in enumerate(small_frames()):
        writer.write(index, frame)
    writer._file.flush()  # what a crash leaves on disk: the frames written so far, no end marker
    assert not target.exists()
    partial = DetectionReader(writer.temp_path)
    assert not partial.complete and partial.n_frames is None
    with pytest.raises(CorruptRecordError, match="without its end marker"):
        partial.verify()
    frames = []
    with pytest.raises(CorruptRecordError, match="after 3 frame records without its end marker"):
        for item in partial:
            frames.append(item)
    assert len(frames) == 3  # the intact prefix is readable before the error
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_exception_inside_writer_context_aborts(tmp_path: Path) -> None:
    target = write_file(tmp_path / "a.dets", small_frames(1))  # an older complete file stays untouched
    before = target.read_bytes()
    with pytest.raises(KeyError), DetectionWriter(target, key={}, names=NAMES) as writer:
        writer.write(0, small_frames(2)[1])
        raise KeyError("boom")
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["a.dets"]
    writer.abort()  # idempotent
    writer.close()  # a no-op once aborted


@pytest.mark.parametrize(
    ("make_args", "error", "match"),
    [
        (lambda d: (d / "a.dets", {}, {}), ConfigError, "non-empty mapping"),
        (lambda d: (d / "a.dets", {}, ["person"]), ConfigError, "non-empty mapping"),
        (lambda d: (d / "a.dets", {}, {"0": "person"}), ConfigError, "integer class ids"),
        (lambda d: (d / "a.dets", ["k"], NAMES), ConfigError, "JSON-serializable dict"),
        (lambda d: (d / "a.dets", {"k": object()}, NAMES), ConfigError, "not JSON-serializable"),
        (lambda d: (d / "a.dets", {"k": float("nan")}, NAMES), ConfigError, "not JSON-serializable"),
        (lambda d: (d / "missing" / "a.dets", {}, NAMES), InputError, "does not exist; create it"),
        (lambda d: (d, {}, NAMES), InputError, "is a folder"),
    ],
)
def test_writer_rejects_bad_arguments(tmp_path: Path, make_args: Callable, error: type, match: str) -> None:
    path, key, names = make_args(tmp_path)
    with pytest.raises(error, match=match):
        DetectionWriter(path, key=key, names=names)


def test_strided_frames_round_trip(tmp_path: Path) -> None:
    """Frame indices need not be consecutive (a cache of detector.stride=3 holds frames 0, 3, 6...)."""
    frames = small_frames(4)
    reader = DetectionReader(write_file(tmp_path / "a.dets", frames, stride=3))
    assert reader.complete and reader.n_frames == 4
    reader.verify()
    got = list(reader)
    assert [i for i, _ in got] == [0, 3, 6, 9]
    for original, (_, copy) in zip(frames, got, strict=True):
        assert_same(original, copy)
    with DetectionWriter(tmp_path / "b.dets", key={}, names=NAMES) as writer:  # any increasing indices
        for index, frame in zip([2, 5, 6, 40], frames):
            writer.write(index, frame)
        assert (writer.n_frames, writer.last_index) == (4, 40)
    assert [i for i, _ in DetectionReader(tmp_path / "b.dets")] == [2, 5, 6, 40]


def test_writer_rejects_bad_frames_and_use_after_close(tmp_path: Path) -> None:
    frame = small_frames(1)[0]
    writer = DetectionWriter(tmp_path / "a.dets", key={}, names=NAMES)
    with pytest.raises(ConfigError, match=r"index=-1; write each frame once, in increasing index order \(the next "
                                          r"index must be an int >= 0\)"):
        writer.write(-1, frame)
    with pytest.raises(ConfigError, match="write each frame once"):
        writer.write(True, frame)
    with pytest.raises(ConfigError, match="write each frame once"):
        writer.write(2.0, frame)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="give a Detections"):
        writer.write(0, {"person": np.ones((2, 2), bool)})
    with pytest.raises(ConfigError, match="open the writer with the detector's names"):
        writer.write(0, Detections.empty(4, 4, {0: "person"}))
    writer.write(3, frame)
    for repeated in (3, 2):
        with pytest.raises(ConfigError, match=f"index={repeated} after frame 3; .* must be an int >= 4"):
            writer.write(repeated, frame)
    writer.close()
    writer.close()  # idempotent
    assert writer.closed and DetectionReader(writer.path).n_frames == 1
    assert [i for i, _ in DetectionReader(writer.path)] == [3]
    with pytest.raises(RuntimeError, match="is closed"):
        writer.write(1, frame)


def test_reader_rejects_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        DetectionReader(tmp_path / "nope.dets")
    (tmp_path / "foreign.dets").write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(CorruptRecordError, match="does not start like a .dets detections file"):
        DetectionReader(tmp_path / "foreign.dets")
    (tmp_path / "magic_only.dets").write_bytes(b"IADETS1\n")
    with pytest.raises(CorruptRecordError, match="header is missing"):
        DetectionReader(tmp_path / "magic_only.dets")


def test_reader_rejects_a_header_of_another_version(tmp_path: Path) -> None:
    path = write_file(tmp_path / "a.dets", small_frames(1))
    data = path.read_bytes().replace(b'"version": 1', b'"version": 9', 1)
    crc_fixed = _with_fixed_header_crc(data)
    path.write_bytes(crc_fixed)
    with pytest.raises(CorruptRecordError, match="not a version 1 header"):
        DetectionReader(path)


def _with_fixed_header_crc(data: bytes) -> bytes:
    """``data`` with the header record's CRC recomputed (to test what the header check sees)."""
    record = struct.Struct("<cQI")
    tag, length, _ = record.unpack_from(data, 8)
    payload = data[8 + record.size : 8 + record.size + length]
    return data[:8] + record.pack(tag, length, zlib.crc32(payload)) + data[8 + record.size :]


@pytest.mark.parametrize("keep", [0.99, 0.6, 0.3])
def test_truncated_file_is_detected(tmp_path: Path, keep: float) -> None:
    path = write_file(tmp_path / "a.dets", small_frames(4))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    reader = DetectionReader(path)
    assert not reader.complete and reader.n_frames is None
    with pytest.raises(CorruptRecordError):
        reader.verify()
    with pytest.raises(CorruptRecordError):
        list(reader)


def test_a_file_cut_inside_its_header_is_rejected(tmp_path: Path) -> None:
    path = write_file(tmp_path / "a.dets", small_frames(1))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CorruptRecordError, match="runs past the end of the file"):
        DetectionReader(path)
    path.write_bytes(path.read_bytes()[:12])
    with pytest.raises(CorruptRecordError, match="cut short"):
        DetectionReader(path)


def hand_written_file(path: Path, frame_payloads: list[bytes]) -> Path:
    """A file with a valid header and end marker around the given frame payloads (valid CRCs)."""
    empty = write_file(path, []).read_bytes()  # magic, header record, end marker
    with path.open("wb") as file:
        file.write(empty[:-21])
        for payload in frame_payloads:
            _write_record(file, b"F", payload)
        _write_record(file, b"E", struct.pack("<Q", len(frame_payloads)))
    return path


def test_undecodable_or_mislabelled_frames_are_detected(tmp_path: Path) -> None:
    junk = hand_written_file(tmp_path / "junk.dets", [b"not zlib"])
    DetectionReader(junk).verify()  # CRCs and structure are fine...
    with pytest.raises(CorruptRecordError, match="frame record 0 cannot be decoded"):
        list(DetectionReader(junk))  # ...the content is not
    frame = small_frames(1)[0]
    starts_late = hand_written_file(tmp_path / "five.dets", [_encode_frame(5, frame), _encode_frame(6, frame)])
    assert [i for i, _ in DetectionReader(starts_late)] == [5, 6]  # a first index above 0 is fine
    for indices, reason in [([4, 4], "frame record 1 is labelled frame 4, after frame 4"),
                            ([4, 2], "frame record 1 is labelled frame 2, after frame 4"),
                            ([-1], "frame record 0 is labelled frame -1, below 0")]:
        path = hand_written_file(tmp_path / "bad.dets", [_encode_frame(i, frame) for i in indices])
        with pytest.raises(CorruptRecordError, match=reason):
            list(DetectionReader(path))


def test_an_unknown_record_tag_is_detected(tmp_path: Path) -> None:
    path = write_file(tmp_path / "a.dets", small_frames(1))
    data = bytearray(path.read_bytes())
    header_length = struct.unpack_from("<Q", data, len(MAGIC) + 1)[0]
    data[len(MAGIC) + 13 + header_length] = ord("X")  # the frame record's tag
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptRecordError, match="unknown record tag b'X'"):
        DetectionReader(path).verify()


def test_flipped_byte_in_a_frame_fails_the_crc(tmp_path: Path) -> None:
    path = write_file(tmp_path / "a.dets", small_frames(4))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    reader = DetectionReader(path)
    assert reader.complete  # the end marker is intact: only a full read finds the damage
    with pytest.raises(CorruptRecordError, match="CRC"):
        reader.verify()
    with pytest.raises(CorruptRecordError, match="CRC"):
        list(reader)


def test_frames_after_the_end_marker_are_detected(tmp_path: Path) -> None:
    one = write_file(tmp_path / "one.dets", small_frames(1)).read_bytes()
    two = write_file(tmp_path / "two.dets", small_frames(2)).read_bytes()
    end_marker = one[-21:]
    path = tmp_path / "spliced.dets"
    path.write_bytes(two[: len(one) - 21] + end_marker + two[len(one) - 21 :])  # frame 0, END(1), frame 1...
    with pytest.raises(CorruptRecordError, match="end marker after 1 frame records does not match"):
        DetectionReader(path).verify()


def test_size_and_speed_for_100_frames_of_two_masks_at_720p(tmp_path: Path) -> None:
    """Reported numbers: bytes on disk and ms per frame to write and to read (2 masks, 1280x720)."""
    names = {0: "person", 1: "car"}
    frames = [Detections.from_masks(np.stack(list(object_masks(i, (1280, 720), 100).values())), [0, 1], names,
                                    track_ids=[3, 4]) for i in range(100)]
    start = time.perf_counter()
    with DetectionWriter(tmp_path / "a.dets", key={}, names=names) as writer:
        for index, frame in enumerate(frames):
            writer.write(index, frame)
    write_ms = (time.perf_counter() - start) * 10
    start = time.perf_counter()
    read = list(DetectionReader(tmp_path / "a.dets"))
    read_ms = (time.perf_counter() - start) * 10
    size = (tmp_path / "a.dets").stat().st_size
    print(f"\n100 frames x 2 masks @1280x720: {size} bytes ({size / 100:.0f} B/frame), "
          f"write {write_ms:.2f} ms/frame, read {read_ms:.2f} ms/frame (raw bool masks: 1843200 B/frame)")
    for original, (_, copy) in zip(frames, read, strict=True):
        assert_same(original, copy)
    assert size < 200_000
    assert write_ms < 50 and read_ms < 50  # measured about 1 ms each; generous for a loaded CI machine


# -- cache keys -------------------------------------------------------------------------------------------


@pytest.fixture
def video(tmp_path: Path) -> Path:
    """Stand-in video: the key only fingerprints bytes, so any file works."""
    path = tmp_path / "video.mp4"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    return path


def test_key_is_stable_and_ignores_order_path_batch_size_and_device(video: Path, tmp_path: Path) -> None:
    key = cache_key(video, SETTINGS)
    assert len(key) == 32 and key == cache_key(str(video), dict(reversed(list(SETTINGS.items()))))
    assert cache_key(video, {**SETTINGS, "batch_size": 16, "device": "cuda:1"}) == key
    copy = shutil.copy(video, tmp_path / "renamed.mkv")
    os.utime(copy, (0, 0))
    assert cache_key(copy, SETTINGS) == key


@pytest.mark.parametrize(
    "change",
    [{"conf": 0.3}, {"iou": 0.5}, {"imgsz": 320}, {"half": True}, {"classes": ["person"]}, {"max_det": 10},
     {"weights": "yolov8s-seg.pt"}, {"retina": True}],
)
def test_a_changed_setting_changes_the_key(video: Path, change: dict) -> None:
    assert cache_key(video, {**SETTINGS, **change}) != cache_key(video, SETTINGS)


def test_a_changed_video_changes_the_key(video: Path) -> None:
    key = cache_key(video, SETTINGS)
    data = bytearray(video.read_bytes())
    data[2500] ^= 1
    video.write_bytes(bytes(data))
    assert cache_key(video, SETTINGS) != key


def test_a_real_clip_and_a_shorter_clip_have_different_keys(tmp_path: Path) -> None:
    long_clip = make_clip(tmp_path / "a.mp4", n_frames=6, size=(32, 32))
    short_clip = make_clip(tmp_path / "b.mp4", n_frames=5, size=(32, 32))
    assert cache_key(long_clip, SETTINGS) != cache_key(short_clip, SETTINGS)


def test_large_files_are_fingerprinted_by_samples(tmp_path: Path) -> None:
    """Head, tail, sampled blocks and size are seen; a byte between samples is not (it is a fingerprint)."""
    size = 3 * HEAD_TAIL_BYTES + (7 << 20)
    path = tmp_path / "big.bin"
    original = np.random.default_rng(0).bytes(size)
    path.write_bytes(original)
    base = content_fingerprint(path)

    def changed_at(offset: int) -> bool:
        data = bytearray(original)
        data[offset] ^= 1
        path.write_bytes(bytes(data))
        return content_fingerprint(path) != base

    assert changed_at(10) and changed_at(size - 10) and changed_at(HEAD_TAIL_BYTES + 5)
    assert not changed_at(HEAD_TAIL_BYTES + (64 << 10) + 5)  # just after the first sampled block
    path.write_bytes(original + b"\0")
    assert content_fingerprint(path) != base


def test_local_weights_content_is_part_of_the_key(video: Path, tmp_path: Path) -> None:
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"weights v1")
    settings = {**SETTINGS, "weights": str(weights)}
    key = cache_key(video, settings)
    assert "weights_content" in key_settings(settings) and "weights_content" not in key_settings(SETTINGS)
    weights.write_bytes(b"weights v2")
    assert cache_key(video, settings) != key
    folder = tmp_path / "model_openvino"
    folder.mkdir()
    (folder / "model.xml").write_text("v1")
    folder_key = cache_key(video, {**SETTINGS, "weights": str(folder)})
    (folder / "model.xml").write_text("v2")
    assert cache_key(video, {**SETTINGS, "weights": str(folder)}) != folder_key


def test_an_image_folder_source_is_fingerprinted(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "0001.png").write_bytes(b"a")
    key = cache_key(folder, SETTINGS)
    (folder / "0002.png").write_bytes(b"b")
    assert cache_key(folder, SETTINGS) != key


def test_key_settings_are_plain_data() -> None:
    settings = key_settings({"weights": "x.pt", "classes": ("person", "car"), "conf": np.float32(0.5),
                             "path": Path("a/b"), "nested": {"a": [1, None, True]}})
    assert settings == {"weights": "x.pt", "classes": ["person", "car"], "conf": 0.5, "path": "a/b",
                        "nested": {"a": [1, None, True]}}


def test_hydra_configs_give_the_same_key_as_plain_dicts(video: Path) -> None:
    from omegaconf import OmegaConf

    assert cache_key(video, OmegaConf.create(SETTINGS)) == cache_key(video, SETTINGS)


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        (["conf", 0.25], "must be a mapping"),
        ({"conf": object()}, "cannot be part of a cache key"),
        ({"classes": {"person"}}, "cannot be part of a cache key"),
        ({"nested": {1: "a"}}, "non-string keys"),
        ({1: "a"}, "non-string names"),
        ({"conf": float("nan")}, "not a finite number"),
        ({"nested": {"a": [float("inf")]}}, "'nested.a\\[0\\]'=inf is not a finite number"),
    ],
)
def test_bad_settings_are_rejected(video: Path, settings: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        cache_key(video, settings)  # type: ignore[arg-type]


def test_missing_video_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        cache_key(tmp_path / "nope.mp4", SETTINGS)


def test_unreadable_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read .* to fingerprint it"):
        file_fingerprint(tmp_path / "nope.bin")


def test_cache_path(tmp_path: Path) -> None:
    key = "0123456789abcdef" * 2
    assert cache_path(tmp_path, key) == tmp_path / f"{key}.dets"
    for bad in ("../../etc/passwd", key.upper(), key[:-1], 123):
        with pytest.raises(ConfigError, match="lowercase hex"):
            cache_path(tmp_path, bad)  # type: ignore[arg-type]


# -- CachedDetector ---------------------------------------------------------------------------------------


def scripted(n_frames: int = N_FRAMES, batch_size: int = 3) -> ScriptedDetector:
    """Ground-truth person/car masks with track ids, for frames of SIZE."""

    def script(index: int) -> Detections:
        masks = object_masks(index, SIZE, n_frames)
        return Detections.from_masks(np.stack(list(masks.values())), [0, 1], {0: "person", 1: "car"},
                                     scores=[0.9, 0.5], track_ids=[7, 8])

    return ScriptedDetector(script, names=["person", "car"], batch_size=batch_size)


def run(detector: Detector, n_frames: int = N_FRAMES, size: tuple[int, int] = SIZE, stride: int = 1
        ) -> list[Detections]:
    """Call ``detector`` the way the pipeline does: frames 0, stride, 2 * stride... below ``n_frames``, in
    order, ``batch_size`` frames at a time."""
    frames = [Frame(i, i, np.zeros((size[1], size[0], 3), dtype=np.uint8)) for i in range(0, n_frames, stride)]
    found: list[Detections] = []
    for start in range(0, len(frames), detector.batch_size):
        found.extend(detector(frames[start : start + detector.batch_size]))
    return found


def cached_run(cache_dir: Path, video: Path, n_frames: int = N_FRAMES, stride: int = 1
               ) -> tuple[CachedDetector, list[Detections]]:
    """One finished run through a fresh CachedDetector around a fresh scripted detector."""
    with CachedDetector(scripted(), cache_dir, video, {**SETTINGS, "stride": stride}) as detector:
        return detector, run(detector, n_frames, stride=stride)


def test_second_run_is_served_from_the_cache_without_detecting(video: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache" / "dets"  # created when missing
    first = CachedDetector(scripted(), cache_dir, video, SETTINGS)
    assert isinstance(first, Detector) and not first.hit and first.batch_size == 3
    assert first.names == {0: "person", 1: "car"}
    found = run(first)
    assert first.detector.calls == list(range(N_FRAMES))
    assert not first.path.exists()  # nothing complete before finish()
    first.close()
    assert first.path == cache_path(cache_dir, cache_key(video, SETTINGS)) and first.path.exists()
    assert [p.name for p in cache_dir.iterdir()] == [first.path.name]

    second = CachedDetector(scripted(), cache_dir, video, SETTINGS)
    assert second.hit and "hit=True" in repr(second)
    replayed = run(second)
    second.close()
    assert second.detector.calls == [] and second.frames_done == N_FRAMES
    for a, b in zip(found, replayed, strict=True):
        assert_same(a, b)
    assert DetectionReader(second.path).key["settings"]["conf"] == 0.25


def test_a_strided_cache_is_keyed_by_the_detected_frame_indices(video: Path, tmp_path: Path) -> None:
    """With detector.stride=3 the detector sees frames 0, 3, 6: the cache records those indices and serves them."""
    n_frames, stride = 10, 3
    first, found = cached_run(tmp_path, video, n_frames, stride=stride)
    assert first.detector.calls == [0, 3, 6, 9] and not first.hit
    reader = DetectionReader(first.path)
    assert reader.n_frames == 4 and [i for i, _ in reader] == [0, 3, 6, 9]
    assert reader.key["settings"]["stride"] == stride
    for (index, cached), fresh in zip(reader, found, strict=True):
        assert_same(cached, fresh)
        assert torch.equal(cached.masks[0], torch.from_numpy(object_masks(index, SIZE, N_FRAMES)["person"]))
    served, replayed = cached_run(tmp_path, video, n_frames, stride=stride)
    assert served.hit and served.detector.calls == [] and served.frames_done == 4
    for a, b in zip(found, replayed, strict=True):
        assert_same(a, b)
    assert cache_key(video, {**SETTINGS, "stride": stride}) != cache_key(video, {**SETTINGS, "stride": 1})


def test_serving_other_frame_indices_than_cached_names_the_file_to_delete(video: Path, tmp_path: Path) -> None:
    """A cache holds the frames it was written for; asked for others (another stride, a skipped frame), it stops."""
    first, _ = cached_run(tmp_path, video, 10, stride=3)
    same_key = {**SETTINGS, "stride": 3}  # the key alone cannot tell: e.g. the API used with other frames
    detector = CachedDetector(scripted(), tmp_path, video, same_key)
    with pytest.raises(InputError, match=f"{first.path.name} holds frame 3 next but the detector was asked for "
                                         "frame 2 .*another detector.stride.*delete that file"):
        run(detector, 10, stride=2)
    skipping = CachedDetector(scripted(batch_size=1), tmp_path, video, same_key)
    skipping([Frame(0, 0, np.zeros((SIZE[1], SIZE[0], 3), np.uint8))])
    with pytest.raises(InputError, match="holds frame 3 next but the detector was asked for frame 6"):
        skipping([Frame(6, 6, np.zeros((SIZE[1], SIZE[0], 3), np.uint8))])


@pytest.mark.parametrize("hit", [False, True])
def test_frames_out_of_order_are_refused(video: Path, tmp_path: Path, hit: bool) -> None:
    if hit:
        cached_run(tmp_path, video)
    detector = CachedDetector(scripted(), tmp_path, video, {**SETTINGS, "stride": 1})
    assert detector.hit is hit
    blank = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    detector([Frame(0, 0, blank), Frame(1, 1, blank)])
    with pytest.raises(ValueError, match="got frame 1 after frame 1; give each frame once, in increasing index"):
        detector([Frame(1, 1, blank)])
    with pytest.raises(ValueError, match="got frame 2 after frame 3"):
        detector([Frame(3, 3, blank), Frame(2, 2, blank)])


def test_a_changed_setting_misses_the_cache(video: Path, tmp_path: Path) -> None:
    cached_run(tmp_path, video)
    detector = CachedDetector(scripted(), tmp_path, video, {**SETTINGS, "conf": 0.5})
    run(detector)
    assert not detector.hit and detector.detector.calls == list(range(N_FRAMES))


def test_an_aborted_run_leaves_no_cache(video: Path, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="inpainter failed"), CachedDetector(
        scripted(), tmp_path, video, SETTINGS
    ) as detector:
        run(detector, n_frames=4)
        raise RuntimeError("inpainter failed")
    assert list(tmp_path.iterdir()) == [video]
    detector.abort()  # idempotent
    again = CachedDetector(scripted(), tmp_path, video, SETTINGS)
    assert not again.hit


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "unfinished"])
def test_a_damaged_cache_is_ignored_with_a_warning_and_rebuilt(video: Path, tmp_path: Path, damage: str) -> None:
    first, found = cached_run(tmp_path, video)
    data = bytearray(first.path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) - 30]
    elif damage == "flip":
        data[len(data) // 2] ^= 0x40
    elif damage == "garbage":
        data = bytearray(b"not a cache")
    else:
        data = data[:-21]  # all frames, no end marker
    first.path.write_bytes(bytes(data))
    with pytest.warns(DetectionCacheWarning, match="rebuilding it"):
        rebuilt = CachedDetector(scripted(), tmp_path, video, {**SETTINGS, "stride": 1})
    assert not rebuilt.hit
    run(rebuilt)
    rebuilt.close()
    assert rebuilt.detector.calls == list(range(N_FRAMES))
    served, replayed = cached_run(tmp_path, video)
    assert served.hit and served.detector.calls == []
    for a, b in zip(found, replayed, strict=True):
        assert_same(a, b)


def test_a_cache_with_other_names_or_key_is_rebuilt(video: Path, tmp_path: Path) -> None:
    first, _ = cached_run(tmp_path, video)
    settings = {**SETTINGS, "stride": 1}
    other = ScriptedDetector(lambda i: {}, names=["person", "bicycle"])
    with pytest.warns(DetectionCacheWarning, match="class names"):
        assert CachedDetector(other, tmp_path, video, settings).hit is False
    write_file(first.path, [], key={"cache_key": "something else"})
    with pytest.warns(DetectionCacheWarning, match="another key"):
        assert CachedDetector(scripted(), tmp_path, video, settings).hit is False


def test_serving_frames_of_another_size_names_the_file_to_delete(video: Path, tmp_path: Path) -> None:
    first, _ = cached_run(tmp_path, video)
    detector = CachedDetector(scripted(), tmp_path, video, {**SETTINGS, "stride": 1})
    with pytest.raises(InputError, match=f"{first.path.name} has frame 0 at 30x40 .* video frame is 20x40; delete"):
        run(detector, size=(40, 20))


def test_a_video_longer_than_the_cache_names_the_file_to_delete(video: Path, tmp_path: Path) -> None:
    first, _ = cached_run(tmp_path, video)
    detector = CachedDetector(scripted(), tmp_path, video, {**SETTINGS, "stride": 1})
    with pytest.raises(InputError, match=f"{first.path.name} ends after {N_FRAMES} frame records but the detector "
                                         f"was asked for frame {N_FRAMES} .*; delete that file"):
        run(detector, n_frames=N_FRAMES + 1)


def test_a_video_shorter_than_the_cache_removes_it_at_finish(video: Path, tmp_path: Path) -> None:
    first, _ = cached_run(tmp_path, video)
    detector = CachedDetector(scripted(), tmp_path, video, {**SETTINGS, "stride": 1})
    run(detector, n_frames=N_FRAMES - 2)
    with pytest.warns(DetectionCacheWarning, match=f"holds {N_FRAMES} frame records but this run used {N_FRAMES - 2}"):
        detector.close()
    assert not first.path.exists()
    detector.close()  # idempotent


def test_cached_detector_rejects_bad_arguments_and_misuse(video: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a Detector"):
        CachedDetector(lambda images: [], tmp_path, video, SETTINGS)  # type: ignore[arg-type]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="give a writable folder"):
        CachedDetector(scripted(), tmp_path / "file", video, SETTINGS)
    with pytest.raises(InputError, match="no such file"):
        CachedDetector(scripted(), tmp_path, tmp_path / "missing.mp4", SETTINGS)
    with pytest.raises(ConfigError, match="must be a mapping"):
        CachedDetector(scripted(), tmp_path, video, None)  # type: ignore[arg-type]
    detector, _ = cached_run(tmp_path / "c", video)
    with pytest.raises(RuntimeError, match="is finished"):
        detector([Frame(0, 0, np.zeros((30, 40, 3), np.uint8))])
    fresh = CachedDetector(scripted(), tmp_path / "d", video, SETTINGS)
    with pytest.raises(InputError, match="item 0 given to the detector is ndarray, not a Frame"):
        fresh([np.zeros((30, 40, 3), np.uint8)])  # type: ignore[list-item]
    assert fresh.detector.calls == []


def test_a_wrapped_detector_returning_too_few_results_is_a_bug(video: Path, tmp_path: Path) -> None:
    detector = CachedDetector(_TooFew(), tmp_path, video, SETTINGS)
    with pytest.raises(RuntimeError, match="returned 0 results for 1 frames"):
        detector([Frame(0, 0, np.zeros((30, 40, 3), np.uint8))])


class _TooFew:
    names = {0: "person"}
    batch_size = 1

    def __call__(self, frames: list[Frame]) -> list[Detections]:
        return []


def test_zero_frames_write_no_cache(video: Path, tmp_path: Path) -> None:
    detector, found = cached_run(tmp_path, video, n_frames=0)
    assert found == [] and not detector.path.exists()


@pytest.mark.parametrize("stride", [1, 3])
def test_pipeline_run_through_the_cache(tmp_path: Path, stride: int) -> None:
    """The real pipeline twice on a clip: the second run detects nothing and writes the same video. With
    detector.stride=3 the cache holds frames 0, 3, 6... and the run's own record still has every frame."""
    from inpaint_anon.inpaint.fast import SolidInpainter
    from inpaint_anon.pipeline import AnonymizePipeline
    from inpaint_anon.track import Tracker
    from inpaint_anon.video import VideoReader

    n_frames, size = 7, (48, 32)
    clip = make_clip(tmp_path / "in.mkv", n_frames=n_frames, size=size, lossless=True)
    tracker = Tracker if stride > 1 else None
    detected = list(range(0, n_frames, stride))
    outputs = []
    for attempt in range(2):
        truth = ScriptedDetector(lambda i: object_masks(i, size, n_frames), names=["person", "car"])
        record = tmp_path / f"run{attempt}.dets"
        with CachedDetector(truth, tmp_path / "cache", clip, {**SETTINGS, "stride": stride}) as detector:
            out = tmp_path / f"out{attempt}.mp4"
            AnonymizePipeline(detector, SolidInpainter(device="cpu"), tracker=tracker, detect_stride=stride,
                              progress=False)(clip, out, record_detections=record)
        assert truth.calls == ([] if attempt else detected)
        assert detector.hit is bool(attempt) and detector.frames_done == len(detected)
        assert [i for i, _ in DetectionReader(detector.path)] == detected
        assert [i for i, _ in DetectionReader(record)] == list(range(n_frames))
        with VideoReader(out) as reader:
            outputs.append([frame.rgb for frame in reader])
    assert len(outputs[0]) == n_frames
    assert all(np.array_equal(a, b) for a, b in zip(*outputs, strict=True))


def test_evaluation_refuses_a_record_without_every_frame(tmp_path: Path) -> None:
    """A run's detections.dets holds every frame; a strided cache file in its place is refused, not misaligned."""
    import json

    from inpaint_anon.evaluate import iter_frames, load_run

    clip = make_clip(tmp_path / "in.mp4", n_frames=4, size=(48, 32))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"input": str(clip), "output": str(clip)}))
    names = {0: "person"}
    with DetectionWriter(run_dir / "detections.dets", key={}, names=names) as writer:
        for index in (0, 2):
            writer.write(index, Detections.empty(32, 48, names))
    frames = iter_frames(load_run(run_dir))
    assert next(frames)[0] == 0
    with pytest.raises(InputError, match="has no record of frame 1 \\(its next is frame 2\\)"):
        next(frames)

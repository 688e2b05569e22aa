"""Detection cache: the .dets file format, cache keys, and CachedDetector serving/rebuilding (no model weights)."""

from __future__ import annotations

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
from inpaint_anon.detect.cache import (
    HEAD_TAIL_BYTES,
    MAGIC,
    CachedDetector,
    CorruptCacheError,
    DetectionCacheWarning,
    DetectionReader,
    DetectionWriter,
    _encode_frame,
    _write_record,
    cache_key,
    cache_path,
    content_fingerprint,
    file_fingerprint,
    key_settings,
    pack_masks,
    unpack_masks,
)
from inpaint_anon.detect.scripted import ScriptedDetector
from inpaint_anon.errors import ConfigError, InputError
from inpaint_anon.types import Detections
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


def write_file(path: Path, frames: list[Detections], key: dict | None = None) -> Path:
    with DetectionWriter(path, key=key or {"test": 1}, names=NAMES) as writer:
        for index, detections in enumerate(frames):
            writer.write(index, detections)
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
    with pytest.raises(CorruptCacheError, match="without its end marker"):
        partial.verify()
    frames = []
    with pytest.raises(CorruptCacheError, match="after 3 frames without its end marker"):
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


def test_writer_rejects_bad_frames_and_use_after_close(tmp_path: Path) -> None:
    frame = small_frames(1)[0]
    writer = DetectionWriter(tmp_path / "a.dets", key={}, names=NAMES)
    with pytest.raises(ConfigError, match="the next one is 0"):
        writer.write(1, frame)
    with pytest.raises(ConfigError, match="write frames in order"):
        writer.write(True, frame)
    with pytest.raises(ConfigError, match="give a Detections"):
        writer.write(0, {"person": np.ones((2, 2), bool)})
    with pytest.raises(ConfigError, match="open the writer with the detector's names"):
        writer.write(0, Detections.empty(4, 4, {0: "person"}))
    writer.write(0, frame)
    writer.close()
    writer.close()  # idempotent
    assert writer.closed and DetectionReader(writer.path).n_frames == 1
    with pytest.raises(RuntimeError, match="is closed"):
        writer.write(1, frame)


def test_reader_rejects_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        DetectionReader(tmp_path / "nope.dets")
    (tmp_path / "foreign.dets").write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(CorruptCacheError, match="does not start like a detection cache"):
        DetectionReader(tmp_path / "foreign.dets")
    (tmp_path / "magic_only.dets").write_bytes(b"IADETS1\n")
    with pytest.raises(CorruptCacheError, match="header is missing"):
        DetectionReader(tmp_path / "magic_only.dets")


def test_reader_rejects_a_header_of_another_version(tmp_path: Path) -> None:
    path = write_file(tmp_path / "a.dets", small_frames(1))
    data = path.read_bytes().replace(b'"version": 1', b'"version": 9', 1)
    crc_fixed = _with_fixed_header_crc(data)
    path.write_bytes(crc_fixed)
    with pytest.raises(CorruptCacheError, match="not a version 1 header"):
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
    with pytest.raises(CorruptCacheError):
        reader.verify()
    with pytest.raises(CorruptCacheError):
        list(reader)


def test_a_file_cut_inside_its_header_is_rejected(tmp_path: Path) -> None:
    path = write_file(tmp_path / "a.dets", small_frames(1))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CorruptCacheError, match="runs past the end of the file"):
        DetectionReader(path)
    path.write_bytes(path.read_bytes()[:12])
    with pytest.raises(CorruptCacheError, match="cut short"):
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
    with pytest.raises(CorruptCacheError, match="frame 0 cannot be decoded"):
        list(DetectionReader(junk))  # ...the content is not
    mislabelled = hand_written_file(tmp_path / "five.dets", [_encode_frame(5, small_frames(1)[0])])
    with pytest.raises(CorruptCacheError, match="frame 0 is labelled 5"):
        list(DetectionReader(mislabelled))


def test_an_unknown_record_tag_is_detected(tmp_path: Path) -> None:
    path = write_file(tmp_path / "a.dets", small_frames(1))
    data = bytearray(path.read_bytes())
    header_length = struct.unpack_from("<Q", data, len(MAGIC) + 1)[0]
    data[len(MAGIC) + 13 + header_length] = ord("X")  # the frame record's tag
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCacheError, match="unknown record tag b'X'"):
        DetectionReader(path).verify()


def test_flipped_byte_in_a_frame_fails_the_crc(tmp_path: Path) -> None:
    path = write_file(tmp_path / "a.dets", small_frames(4))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    reader = DetectionReader(path)
    assert reader.complete  # the end marker is intact: only a full read finds the damage
    with pytest.raises(CorruptCacheError, match="CRC"):
        reader.verify()
    with pytest.raises(CorruptCacheError, match="CRC"):
        list(reader)


def test_frames_after_the_end_marker_are_detected(tmp_path: Path) -> None:
    one = write_file(tmp_path / "one.dets", small_frames(1)).read_bytes()
    two = write_file(tmp_path / "two.dets", small_frames(2)).read_bytes()
    end_marker = one[-21:]
    path = tmp_path / "spliced.dets"
    path.write_bytes(two[: len(one) - 21] + end_marker + two[len(one) - 21 :])  # frame 0, END(1), frame 1...
    with pytest.raises(CorruptCacheError, match="end marker after frame 1 does not match"):
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


def run(detector: Detector, n_frames: int = N_FRAMES, size: tuple[int, int] = SIZE) -> list[Detections]:
    """Call ``detector`` the way the pipeline does: in order, ``batch_size`` frames at a time."""
    images = [np.zeros((size[1], size[0], 3), dtype=np.uint8) for _ in range(n_frames)]
    found: list[Detections] = []
    for start in range(0, n_frames, detector.batch_size):
        found.extend(detector(images[start : start + detector.batch_size]))
    return found


def cached_run(cache_dir: Path, video: Path, n_frames: int = N_FRAMES) -> tuple[CachedDetector, list[Detections]]:
    """One finished run through a fresh CachedDetector around a fresh scripted detector."""
    with CachedDetector(scripted(), cache_dir, video, SETTINGS) as detector:
        return detector, run(detector, n_frames)


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
    assert second.detector.calls == []
    for a, b in zip(found, replayed, strict=True):
        assert_same(a, b)
    assert DetectionReader(second.path).key["settings"]["conf"] == 0.25


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
        rebuilt = CachedDetector(scripted(), tmp_path, video, SETTINGS)
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
    other = ScriptedDetector(lambda i: {}, names=["person", "bicycle"])
    with pytest.warns(DetectionCacheWarning, match="class names"):
        assert not CachedDetector(other, tmp_path, video, SETTINGS).hit
    write_file(first.path, [], key={"cache_key": "something else"})
    with pytest.warns(DetectionCacheWarning, match="another key"):
        assert not CachedDetector(scripted(), tmp_path, video, SETTINGS).hit


def test_serving_frames_of_another_size_names_the_file_to_delete(video: Path, tmp_path: Path) -> None:
    first, _ = cached_run(tmp_path, video)
    detector = CachedDetector(scripted(), tmp_path, video, SETTINGS)
    with pytest.raises(InputError, match=f"{first.path.name} has frame 0 at 30x40 .* video frame is 20x40; delete"):
        run(detector, size=(40, 20))


def test_a_video_longer_than_the_cache_names_the_file_to_delete(video: Path, tmp_path: Path) -> None:
    first, _ = cached_run(tmp_path, video)
    detector = CachedDetector(scripted(), tmp_path, video, SETTINGS)
    with pytest.raises(InputError, match=f"{first.path.name} holds {N_FRAMES} frames but the video has more"):
        run(detector, n_frames=N_FRAMES + 1)


def test_a_video_shorter_than_the_cache_removes_it_at_finish(video: Path, tmp_path: Path) -> None:
    first, _ = cached_run(tmp_path, video)
    detector = CachedDetector(scripted(), tmp_path, video, SETTINGS)
    run(detector, n_frames=N_FRAMES - 2)
    with pytest.warns(DetectionCacheWarning, match=f"holds {N_FRAMES} frames but the video had {N_FRAMES - 2}"):
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
        detector([np.zeros((30, 40, 3), np.uint8)])


def test_a_wrapped_detector_returning_too_few_results_is_a_bug(video: Path, tmp_path: Path) -> None:
    detector = CachedDetector(_TooFew(), tmp_path, video, SETTINGS)
    with pytest.raises(RuntimeError, match="returned 0 results for 1 frames"):
        detector([np.zeros((30, 40, 3), np.uint8)])


class _TooFew:
    names = {0: "person"}
    batch_size = 1

    def __call__(self, images: list[np.ndarray]) -> list[Detections]:
        return []


def test_zero_frames_write_no_cache(video: Path, tmp_path: Path) -> None:
    detector, found = cached_run(tmp_path, video, n_frames=0)
    assert found == [] and not detector.path.exists()


def test_pipeline_run_through_the_cache(tmp_path: Path) -> None:
    """The real pipeline twice on a clip: the second run detects nothing and writes the same video."""
    from inpaint_anon.inpaint.fast import SolidInpainter
    from inpaint_anon.pipeline import AnonymizePipeline
    from inpaint_anon.video import VideoReader

    n_frames, size = 6, (48, 32)
    clip = make_clip(tmp_path / "in.mkv", n_frames=n_frames, size=size, lossless=True)
    outputs = []
    for attempt in range(2):
        truth = ScriptedDetector(lambda i: object_masks(i, size, n_frames), names=["person", "car"])
        with CachedDetector(truth, tmp_path / "cache", clip, SETTINGS) as detector:
            out = tmp_path / f"out{attempt}.mp4"
            AnonymizePipeline(detector, SolidInpainter(device="cpu"), progress=False)(clip, out)
        assert truth.calls == ([] if attempt else list(range(n_frames)))
        with VideoReader(out) as reader:
            outputs.append([frame.rgb for frame in reader])
    assert all(np.array_equal(a, b) for a, b in zip(*outputs, strict=True))

"""inpaint_anon.video: streamed reading, atomic writing, timing, audio copy, metadata, stills, errors."""

from __future__ import annotations

import gc
import re
import tracemalloc
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import ExifTags, Image

from inpaint_anon.atomic import partial_owner
from inpaint_anon.errors import ConfigError, InputError
from inpaint_anon.types import Frame, VideoMeta
from inpaint_anon.video import VideoReader, VideoWriter, probe
from tests.clips import _sine_frames, frame_image, make_clip, make_image

SIZE = (160, 120)
TAGS = {
    "creation_time": "2024-05-01T10:00:00.000000Z",
    "location": "+48.8584+002.2945/",
    "com.apple.quicktime.location.ISO6709": "+48.8584+002.2945+035.000/",
    "make": "TestCam",
    "model": "X1",
    "comment": "secret",
}


# ------------------------------------------------------------------------------------------------ helpers


def read_all(path: Path) -> tuple[VideoMeta, list[Frame]]:
    with VideoReader(path) as reader:
        return reader.meta, list(reader)


def copy_video(src: Path, out: Path, **writer_kwargs) -> VideoWriter:
    """Read ``src`` and write every frame unchanged to ``out``; returns the closed writer."""
    writer_kwargs.setdefault("preset", "ultrafast")
    with VideoReader(src) as reader, VideoWriter(out, reader.meta, source=src, **writer_kwargs) as writer:
        for frame in reader:
            writer.write(frame)
    return writer


def mean_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def seconds(frames: list[Frame], meta: VideoMeta) -> np.ndarray:
    return np.array([float(f.pts * meta.time_base) for f in frames])


def audio_packets(path: Path) -> list[tuple[float, bytes]]:
    """(start in seconds, payload) of every audio packet of ``path``, in file order."""
    with av.open(str(path)) as container:
        return [
            (float(p.pts * p.time_base), bytes(p))
            for p in container.demux(audio=0)
            if p.size and p.pts is not None
        ]


def all_tags(path: Path) -> dict[str, str]:
    """Container and stream tags of ``path``, keys lower-cased (Matroska upper-cases them)."""
    with av.open(str(path)) as container:
        tags = dict(container.metadata)
        for stream in container.streams:
            tags.update(stream.metadata)
    return {k.lower(): v for k, v in tags.items()}


def partial_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if partial_owner(p) is not None]


def raises_input_error(match: str):
    """pytest.raises for a one-line InputError whose message matches ``match``."""
    return pytest.raises(InputError, match=match)


def write_audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=48000)
        stream.layout = "mono"
        for frame in _sine_frames(0.5):
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_empty_video_track(path: Path) -> Path:
    """A .mkv whose video stream has no frames (audio keeps the file valid)."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=24)
        video.width, video.height = 64, 48
        audio = container.add_stream("aac", rate=48000)
        audio.layout = "mono"
        for frame in _sine_frames(0.5):
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
    return path


def cut(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def corrupt_packet(src: Path, dst: Path, index: int) -> Path:
    """Copy ``src`` with the payload of video packet ``index`` overwritten by 0xFF bytes."""
    with av.open(str(src)) as container:
        pos, size = [(p.pos, p.size) for p in container.demux(video=0) if p.size][index]
    data = bytearray(src.read_bytes())
    data[pos + 4 : pos + size] = b"\xff" * (size - 4)
    dst.write_bytes(bytes(data))
    return dst


# ------------------------------------------------------------------------------------------------ reading


def test_probe_describes_clip_without_reading_it_all(clip: Path) -> None:
    meta = probe(clip)
    assert (meta.width, meta.height) == SIZE
    assert meta.fps == 24 and meta.n_frames == 24 and meta.duration == pytest.approx(1.0)
    assert meta.codec == "h264" and not meta.has_audio and not meta.is_image and meta.rotation == 0
    assert probe(make_clip(clip.with_name("a.mp4"), audio=True)).has_audio


def test_reader_yields_upright_rgb_frames_in_order(clip: Path) -> None:
    _, frames = read_all(clip)
    assert [f.index for f in frames] == list(range(24))
    assert np.all(np.diff([f.pts for f in frames]) > 0)
    for frame in frames:
        assert frame.rgb.dtype == np.uint8 and frame.rgb.shape == (120, 160, 3)
        assert frame.rgb.flags.c_contiguous
        assert mean_error(frame.rgb, frame_image(frame.index, SIZE, 24)) < 4


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_lossless_clips_decode_to_exact_pixels(tmp_path: Path, suffix: str) -> None:
    _, frames = read_all(make_clip(tmp_path / f"lossless{suffix}", lossless=True, n_frames=6))
    for frame in frames:
        np.testing.assert_array_equal(frame.rgb, frame_image(frame.index, SIZE, 6))


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_is_applied_and_reported(tmp_path: Path, rotation: int) -> None:
    src = make_clip(tmp_path / "rotated.mp4", rotation=rotation, n_frames=6)
    meta, frames = read_all(src)
    assert meta.rotation == rotation
    upright = [np.rot90(frame_image(i, SIZE, 6), k=-rotation // 90) for i in range(6)]
    assert (meta.height, meta.width, 3) == upright[0].shape
    for frame, expected in zip(frames, upright, strict=True):
        assert frame.rgb.shape == expected.shape and mean_error(frame.rgb, expected) < 4
    out = tmp_path / "out.mp4"
    copy_video(src, out)
    out_meta, out_frames = read_all(out)
    assert out_meta.rotation == 0 and (out_meta.width, out_meta.height) == (meta.width, meta.height)
    assert mean_error(out_frames[3].rgb, upright[3]) < 5


def test_reading_is_streamed(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "long.mp4", n_frames=300, size=(320, 240))
    all_frames_bytes = 300 * 320 * 240 * 3
    tracemalloc.start()
    try:
        with VideoReader(src) as reader:
            count = sum(1 for _ in reader)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 300
    assert peak < all_frames_bytes / 20, f"peak {peak / 1e6:.1f} MB while iterating"


def test_reader_can_be_iterated_once(clip: Path) -> None:
    with VideoReader(clip) as reader:
        assert len(list(reader)) == 24
        with pytest.raises(RuntimeError, match="only once"):
            next(iter(reader))


# ------------------------------------------------------------------------------------------------ reading errors


def test_missing_input(tmp_path: Path) -> None:
    with raises_input_error("input not found: .*nope.mp4; check the path"):
        VideoReader(tmp_path / "nope.mp4")


def test_input_is_a_folder(tmp_path: Path) -> None:
    with raises_input_error("is a folder"):
        probe(tmp_path)


@pytest.mark.parametrize(
    "content", [np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), b"hello\n" * 50]
)
def test_not_a_video(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "fake.mp4"
    path.write_bytes(content)
    with raises_input_error("cannot read .*fake.mp4: not a video or image"):
        probe(path)


def test_audio_only_file(tmp_path: Path) -> None:
    with raises_input_error("no video stream"):
        probe(write_audio_only(tmp_path / "sound.m4a"))


def test_video_stream_without_frames(tmp_path: Path) -> None:
    with raises_input_error("no decodable frames"):
        probe(write_empty_video_track(tmp_path / "empty.mkv"))


def test_mp4_cut_in_half_cannot_be_opened(clip: Path, tmp_path: Path) -> None:
    with raises_input_error("truncated or corrupt"):
        probe(cut(clip, tmp_path / "half.mp4"))


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_file_ending_early_is_reported_truncated(tmp_path: Path, suffix: str) -> None:
    """An index-first mp4 (our own output) or an mkv cut in half opens, then decodes only part."""
    src = make_clip(tmp_path / "src.mp4", n_frames=48)
    whole = tmp_path / f"whole{suffix}"
    copy_video(src, whole)
    half = cut(whole, tmp_path / f"half{suffix}")
    pattern = r"truncated: decoded \d+ of (about )?4[78] announced frames"
    with VideoReader(half) as reader, raises_input_error(pattern):
        for _ in reader:
            pass


def test_corrupt_packet_names_the_frame(clip: Path, tmp_path: Path) -> None:
    bad = corrupt_packet(clip, tmp_path / "bad.mp4", 12)
    with VideoReader(bad) as reader, raises_input_error("corrupt data at frame 12 "):
        for _ in reader:
            pass


def test_corrupt_and_truncated_images(tmp_path: Path) -> None:
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image" * 100)
    with raises_input_error("cannot read .*junk.jpg as an image"):
        probe(junk)
    photo = make_image(tmp_path / "photo.jpg", size=(320, 240))
    with raises_input_error("truncated or corrupt"):
        probe(cut(photo, tmp_path / "half.jpg"))


def test_corrupt_image_after_ultralytics_import(tmp_path: Path) -> None:
    """ultralytics patches PIL's Image.open (HEIF retry via the optional pi-heif); still one clean InputError."""
    import ultralytics.utils.patches  # noqa: F401 - applies the patch, as the detector does in a real run

    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image" * 100)
    with raises_input_error("cannot read .*junk.png as an image"):
        probe(junk)


# ------------------------------------------------------------------------------------------------ writing


@pytest.mark.parametrize(
    ("vfr", "suffix"), [(False, ".mp4"), (True, ".mp4"), (True, ".mov"), (True, ".mkv"), (True, ".webm")]
)
def test_round_trip_keeps_frames_and_timestamps(tmp_path: Path, vfr: bool, suffix: str) -> None:
    src = make_clip(tmp_path / "src.mp4", vfr=vfr)
    out = tmp_path / f"out{suffix}"
    copy_video(src, out)
    meta_in, frames_in = read_all(src)
    meta_out, frames_out = read_all(out)
    assert len(frames_out) == len(frames_in) == 24
    with av.open(str(out)) as container:
        out_tick = float(container.streams.video[0].time_base)
        assert container.streams.video[0].average_rate == meta_in.fps
        assert container.streams.video[0].codec_context.name == ("vp9" if suffix == ".webm" else "h264")
    np.testing.assert_allclose(seconds(frames_out, meta_out), seconds(frames_in, meta_in), atol=out_tick)
    for a, b in zip(frames_in, frames_out, strict=True):
        assert mean_error(a.rgb, b.rgb) < 3


def test_lossless_round_trip_is_exact(lossless_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mkv"
    copy_video(lossless_clip, out, codec="ffv1")
    _, frames = read_all(out)
    assert len(frames) == 24
    for frame in frames:
        np.testing.assert_array_equal(frame.rgb, frame_image(frame.index, SIZE, 24))


def test_source_time_base_is_kept_in_mp4(clip: Path, tmp_path: Path) -> None:
    copy_video(clip, tmp_path / "out.mp4")
    assert probe(tmp_path / "out.mp4").time_base == probe(clip).time_base


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_audio_packets_are_copied_unchanged(clip_with_audio: Path, tmp_path: Path, suffix: str) -> None:
    """Same payloads, same times. AAC starts 1024 samples before 0 (encoder priming): mp4 stores that,
    Matroska cannot store negative times, so FFmpeg shifts the whole mkv (video and audio alike)."""
    out = tmp_path / f"out{suffix}"
    copy_video(clip_with_audio, out)
    before, after = audio_packets(clip_with_audio), audio_packets(out)
    assert len(before) > 20
    assert [data for _, data in after] == [data for _, data in before]
    shift = after[0][0] - before[0][0]
    assert shift == (0.0 if suffix == ".mp4" else pytest.approx(1024 / 48000, abs=0.001))
    np.testing.assert_allclose([t - shift for t, _ in after], [t for t, _ in before], atol=0.001)
    meta_in, frames_in = read_all(clip_with_audio)
    meta_out, frames_out = read_all(out)
    np.testing.assert_allclose(seconds(frames_out, meta_out) - shift, seconds(frames_in, meta_in), atol=0.001)
    assert meta_out.has_audio


def test_audio_is_copied_while_frames_are_written(clip_with_audio: Path, tmp_path: Path) -> None:
    """White-box: after each frame the next pending audio packet starts just after that frame's time."""
    out = tmp_path / "out.mp4"
    with VideoReader(clip_with_audio) as reader, VideoWriter(out, reader.meta, source=clip_with_audio) as w:
        for frame in reader:
            w.write(frame)
            pending = w._sink.audio.pending
            now = float(frame.pts * reader.meta.time_base)
            assert pending is not None and now < float(pending.pts * pending.time_base) <= now + 0.03


def test_odd_size_is_padded_by_replication(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "odd.mkv", size=(161, 121), lossless=True, n_frames=4)
    meta, frames = read_all(src)
    assert (meta.width, meta.height) == (161, 121)
    np.testing.assert_array_equal(frames[2].rgb, frame_image(2, (161, 121), 4))
    writer = copy_video(src, tmp_path / "out.mp4")
    assert writer.padded_size == (162, 122)
    _, out = read_all(tmp_path / "out.mp4")
    assert out[2].rgb.shape == (122, 162, 3)
    assert mean_error(out[2].rgb[:121, :161], frames[2].rgb) < 3
    assert mean_error(out[2].rgb[121], out[2].rgb[120]) < 3
    assert mean_error(out[2].rgb[:, 161], out[2].rgb[:, 160]) < 3
    lossless = copy_video(src, tmp_path / "out.mkv", codec="ffv1")
    assert lossless.padded_size is None
    np.testing.assert_array_equal(read_all(tmp_path / "out.mkv")[1][2].rgb, frames[2].rgb)


def test_odd_size_source_clip_reads_at_its_size(tmp_path: Path) -> None:
    meta, frames = read_all(make_clip(tmp_path / "odd.mp4", size=(161, 121), n_frames=3))
    assert (meta.width, meta.height) == (161, 121) and frames[0].rgb.shape == (121, 161, 3)


def test_non_increasing_pts_are_nudged_forward(clip: Path, tmp_path: Path) -> None:
    meta, frames = read_all(clip)
    frames[5].pts = frames[4].pts
    out = tmp_path / "out.mp4"
    with VideoWriter(out, meta, preset="ultrafast") as writer:
        for frame in frames:
            writer.write(frame)
    assert writer.frames_retimed == 1
    _, written = read_all(out)
    assert len(written) == 24 and np.all(np.diff([f.pts for f in written]) > 0)


def test_webm_output_uses_vp9(clip: Path, tmp_path: Path) -> None:
    assert copy_video(clip, tmp_path / "out.webm").codec == "libvpx-vp9"


# ------------------------------------------------------------------------------------------------ metadata


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv"])
def test_identifying_metadata_is_dropped_by_default(tmp_path: Path, suffix: str) -> None:
    src = make_clip(tmp_path / "src.mov", metadata=TAGS, audio=True, n_frames=6)
    assert {k.lower() for k in TAGS} <= set(all_tags(src))  # the source really carries them
    out = tmp_path / f"out{suffix}"
    copy_video(src, out)
    tags = all_tags(out)
    assert not {k.lower() for k in TAGS} & set(tags), tags
    for value in tags.values():
        assert not re.search(r"TestCam|X1|secret|48\.8584|2024-05-01|Lavf\d", value), tags


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv"])
def test_metadata_is_kept_on_request(tmp_path: Path, suffix: str) -> None:
    src = make_clip(tmp_path / "src.mov", metadata=TAGS, n_frames=6)
    out = tmp_path / f"out{suffix}"
    copy_video(src, out, keep_metadata=True)
    tags = all_tags(out)
    for key, value in TAGS.items():
        assert tags.get(key.lower()) == value, (key, tags)


# ------------------------------------------------------------------------------------------------ stills


def test_png_reads_and_writes_exactly(tmp_path: Path) -> None:
    src = make_image(tmp_path / "still.png")
    meta, frames = read_all(src)
    assert meta.is_image and meta.n_frames == 1 and meta.fps == 1 and meta.time_base == 1
    assert meta.codec == "png" and (meta.width, meta.height) == SIZE
    assert len(frames) == 1 and frames[0].pts is None
    np.testing.assert_array_equal(frames[0].rgb, frame_image(0, SIZE, 1))
    writer = copy_video(src, tmp_path / "out.png")
    assert writer.codec == "png"
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out.png")), frame_image(0, SIZE, 1))


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    meta, frames = read_all(make_image(tmp_path / "turned.jpg", exif={"Orientation": 6}))
    assert meta.rotation == 90 and (meta.width, meta.height) == (120, 160)
    assert mean_error(frames[0].rgb, np.rot90(frame_image(0, SIZE, 1), k=-1)) < 3


def test_exif_is_dropped_unless_kept(tmp_path: Path) -> None:
    exif = {"Make": "TestCam", "Model": "X1", "Orientation": 6, "GPSInfo": {1: "N", 2: (48.0, 51.0, 30.0)}}
    src = make_image(tmp_path / "photo.jpg", exif=exif)
    copy_video(src, tmp_path / "plain.jpg")
    assert len(Image.open(tmp_path / "plain.jpg").getexif()) == 0
    copy_video(src, tmp_path / "kept.jpg", keep_metadata=True)
    kept = Image.open(tmp_path / "kept.jpg").getexif()
    assert kept[ExifTags.Base.Make] == "TestCam" and kept.get_ifd(ExifTags.IFD.GPSInfo)[1] == "N"
    assert kept[ExifTags.Base.Orientation] == 1  # pixels were turned upright already
    assert probe(tmp_path / "kept.jpg").width == 120


def test_still_can_become_a_one_frame_video(tmp_path: Path) -> None:
    src = make_image(tmp_path / "still.png")
    copy_video(src, tmp_path / "still.mp4")
    meta, frames = read_all(tmp_path / "still.mp4")
    assert len(frames) == 1 and not meta.is_image
    assert mean_error(frames[0].rgb, frame_image(0, SIZE, 1)) < 3


def test_image_output_takes_one_frame(clip: Path, tmp_path: Path) -> None:
    with raises_input_error("is an image but the input has 24 frames"):
        VideoWriter(tmp_path / "out.png", probe(clip))
    meta, frames = read_all(make_image(tmp_path / "still.png"))
    with raises_input_error("holds one frame"), VideoWriter(tmp_path / "out.png", meta) as writer:
        writer.write(frames[0])
        writer.write(frames[0])
    assert not (tmp_path / "out.png").exists() and not partial_files(tmp_path)


# ------------------------------------------------------------------------------------------------ atomicity


def test_exception_leaves_nothing_behind(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    meta, frames = read_all(clip)
    with pytest.raises(KeyError, match="boom"), VideoWriter(out, meta, source=clip) as writer:
        writer.write(frames[0])
        assert len(partial_files(tmp_path)) == 1  # written beside the output, hidden
        assert partial_files(tmp_path)[0].name.startswith(".out.") and partial_files(tmp_path)[0].suffix == ".mp4"
        raise KeyError("boom")
    assert not out.exists() and not partial_files(tmp_path)


def test_abort_and_empty_close_leave_nothing(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    meta, frames = read_all(clip)
    writer = VideoWriter(out, meta, preset="ultrafast")
    writer.write(frames[0])
    writer.abort()
    writer.abort()
    with pytest.raises(RuntimeError, match="closed"):
        writer.write(frames[1])
    with pytest.raises(ValueError, match="no frames were written"):
        VideoWriter(out, meta).close()
    assert not out.exists() and not partial_files(tmp_path)


def test_dropped_writer_leaves_nothing(clip: Path, tmp_path: Path) -> None:
    meta, frames = read_all(clip)
    writer = VideoWriter(tmp_path / "out.mp4", meta, preset="ultrafast")
    writer.write(frames[0])
    del writer
    gc.collect()
    assert not list(tmp_path.glob("out*")) and not partial_files(tmp_path)


def test_failed_overwrite_keeps_the_old_file(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous result")
    meta, frames = read_all(clip)
    with pytest.raises(KeyError), VideoWriter(out, meta, overwrite=True) as writer:
        writer.write(frames[0])
        raise KeyError("boom")
    assert out.read_bytes() == b"previous result" and not partial_files(tmp_path)
    copy_video(clip, out, overwrite=True)
    assert probe(out).n_frames == 24


# ------------------------------------------------------------------------------------------------ writer errors


def test_existing_output_needs_overwrite(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(b"x")
    with raises_input_error("output exists: .*out.mp4; pass overwrite=true or choose another output"):
        VideoWriter(out, probe(clip))
    assert out.read_bytes() == b"x" and not partial_files(tmp_path)


def test_output_cannot_be_the_input(clip: Path) -> None:
    alias = clip.parent / "." / clip.name
    with raises_input_error("output would overwrite the input"):
        VideoWriter(alias, probe(clip), source=clip, overwrite=True)


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("missing/out.mp4", "output folder does not exist"),
        ("out.xyz", "unknown output extension '.xyz'"),
        ("out", "unknown output extension '\\(none\\)'"),
    ],
)
def test_bad_output_paths(clip: Path, tmp_path: Path, name: str, match: str) -> None:
    with raises_input_error(match):
        VideoWriter(tmp_path / name, probe(clip))


def test_output_is_a_folder(clip: Path, tmp_path: Path) -> None:
    (tmp_path / "dir.mp4").mkdir()
    with raises_input_error("output is a folder"):
        VideoWriter(tmp_path / "dir.mp4", probe(clip))


def test_missing_source(clip: Path, tmp_path: Path) -> None:
    with raises_input_error("source not found"):
        VideoWriter(tmp_path / "out.mp4", probe(clip), source=tmp_path / "gone.mp4")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"crf": -1}, "crf=-1"),
        ({"crf": 52}, "crf=52"),
        ({"crf": 18.5}, "crf=18.5"),
        ({"crf": True}, "crf=True"),
        ({"preset": "fastest"}, "preset='fastest' is not an x264 preset"),
        ({"codec": "h264_nvenc"}, "codec='h264_nvenc' is not supported"),
    ],
)
def test_bad_encoder_settings(clip: Path, tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        VideoWriter(tmp_path / "out.mp4", probe(clip), **kwargs)
    assert not partial_files(tmp_path)


@pytest.mark.parametrize("suffix", [".mov", ".webm"])
def test_codec_the_container_cannot_hold(clip: Path, tmp_path: Path, suffix: str) -> None:
    with pytest.raises(ConfigError, match=f"video.codec=ffv1 cannot be stored in a \\{suffix} file; use a .mkv output"):
        VideoWriter(tmp_path / f"out{suffix}", probe(clip), codec="ffv1")
    assert not partial_files(tmp_path)


def test_bad_meta(clip: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="meta.fps=0"):
        VideoWriter(tmp_path / "out.mp4", replace(probe(clip), fps=Fraction(0)))


def test_audio_the_container_cannot_hold(clip_with_audio: Path, tmp_path: Path) -> None:
    with raises_input_error("audio codec aac .* cannot be stored in a webm file; choose a .mkv output"):
        VideoWriter(tmp_path / "out.webm", probe(clip_with_audio), source=clip_with_audio)
    assert not partial_files(tmp_path) and not (tmp_path / "out.webm").exists()


def test_unwritable_output_folder(clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Path, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", refuse)
    with raises_input_error("cannot write in .*Permission denied.*; choose a writable folder"):
        VideoWriter(tmp_path / "out.mp4", probe(clip))


def test_pyav_build_without_vp9(clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(av, "codecs_available", av.codecs_available - {"libvpx-vp9"})
    with pytest.raises(ConfigError, match="codec='libvpx-vp9' is missing from this PyAV build"):
        VideoWriter(tmp_path / "out.mkv", probe(clip), codec="libvpx-vp9")
    with raises_input_error("webm output needs VP9"):
        VideoWriter(tmp_path / "out.webm", probe(clip))
    assert not partial_files(tmp_path)


def test_unreadable_source_audio(clip_with_audio: Path, tmp_path: Path) -> None:
    """White-box: a demuxing error in the source's audio becomes an InputError and nothing is left."""

    def failing_packets():
        raise av.InvalidDataError(1094995529, "Invalid data found when processing input")
        yield

    meta, frames = read_all(clip_with_audio)
    out = tmp_path / "out.mp4"
    writer = VideoWriter(out, meta, source=clip_with_audio)
    writer._sink.audio.packets = failing_packets()
    with raises_input_error("corrupt audio in .*clip_audio.mp4"), writer:
        for frame in frames:
            writer.write(frame)
    assert not out.exists() and not partial_files(tmp_path)


def test_frame_of_wrong_shape(clip: Path, tmp_path: Path) -> None:
    with VideoWriter(tmp_path / "out.mp4", probe(clip), preset="ultrafast") as writer:
        with pytest.raises(ValueError, match=r"this writer takes uint8 \(120, 160, 3\)"):
            writer.write(Frame(0, 0, np.zeros((120, 161, 3), np.uint8)))
        writer.write(Frame(0, 0, np.zeros((120, 160, 3), np.uint8)))

"""inpaint_anon.video: streamed reading, atomic writing, timing, audio copy, metadata, stills, errors."""

from __future__ import annotations

import gc
import re
import tracemalloc
import warnings
import zlib
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import ExifTags, Image, ImageCms

from inpaint_anon.atomic import partial_owner
from inpaint_anon.errors import ConfigError, InputError
from inpaint_anon.types import Frame, VideoMeta
from inpaint_anon.video import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    VideoReader,
    VideoSettings,
    VideoWriter,
    check_output,
    probe,
)
from inpaint_anon.video.images import open_image, open_image_header
from tests.clips import (
    _sine_frames,
    frame_image,
    make_animation,
    make_clip,
    make_image,
    object_masks,
    png_bytes,
    png_chunks,
    png_from_chunks,
)

SIZE = (160, 120)
MUXER_OWN_TAGS = {"major_brand", "minor_version", "compatible_brands", "language", "handler_name", "vendor_id",
                  "encoder", "duration"}
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
    assert meta.codec == "h264" and meta.has_audio is False and meta.is_image is False and meta.rotation == 0
    assert probe(make_clip(clip.with_name("a.mp4"), audio=True)).has_audio is True


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
    assert meta_out.has_audio is True


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
    meta, frames = read_all(tmp_path / "out.webm")
    assert meta.codec == "vp9" and len(frames) == 24


# ------------------------------------------------------------------------------------------------ metadata


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv"])
def test_identifying_metadata_is_dropped_by_default(tmp_path: Path, suffix: str) -> None:
    src = make_clip(tmp_path / "src.mov", metadata=TAGS, audio=True, n_frames=6)
    assert {k.lower() for k in TAGS} <= set(all_tags(src))  # the source really carries them
    out = tmp_path / f"out{suffix}"
    copy_video(src, out)
    tags = all_tags(out)
    assert set(tags) <= MUXER_OWN_TAGS, tags  # only what the muxer writes about the file itself
    assert re.search(r"TestCam|X1|secret|48\.8584|2024-05-01|Lavf\d", " ".join(tags.values())) is None, tags


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
    assert meta.is_image is True and meta.n_frames == 1 and meta.fps == 1 and meta.time_base == 1
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
    assert len(frames) == 1 and meta.is_image is False and meta.codec == "h264"
    assert mean_error(frames[0].rgb, frame_image(0, SIZE, 1)) < 3


def test_image_output_takes_one_frame(clip: Path, tmp_path: Path) -> None:
    with raises_input_error("is an image but the input has 24 frames"):
        VideoWriter(tmp_path / "out.png", probe(clip))
    meta, frames = read_all(make_image(tmp_path / "still.png"))
    with raises_input_error("holds one frame"), VideoWriter(tmp_path / "out.png", meta) as writer:
        writer.write(frames[0])
        writer.write(frames[0])
    assert not (tmp_path / "out.png").exists() and not partial_files(tmp_path)


# ------------------------------------------------------------------------------------------------ image modes

GRADIENT_16 = np.linspace(0, 65535, 120 * 160).reshape(120, 160).astype(np.uint16)
"""16-bit samples over the whole range, one per pixel of a 160x120 image."""


def to_8_bit(samples: np.ndarray) -> np.ndarray:
    """round(v * 255 / 65535) of 16-bit samples, as uint8."""
    return ((samples.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)


def hidden_under_alpha() -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 (120, 160, 3), alpha uint8 (120, 160)): the scene, fully transparent on the left half,
    half transparent in the top right quarter, opaque in the bottom right quarter."""
    alpha = np.zeros((120, 160), np.uint8)
    alpha[:60, 80:], alpha[60:, 80:] = 128, 255
    return frame_image(0, SIZE, 1), alpha


def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    """A 16-bit grey PNG came out all white (Pillow clips I;16 to 255 on convert)."""
    path = tmp_path / "grey16.png"
    path.write_bytes(png_bytes(GRADIENT_16))
    meta, frames = read_all(path)
    assert meta.is_image is True and (meta.width, meta.height) == SIZE
    np.testing.assert_array_equal(frames[0].rgb, np.repeat(to_8_bit(GRADIENT_16)[..., None], 3, axis=2))
    assert frames[0].rgb.min() == 0 and frames[0].rgb.max() == 255 and 126 < frames[0].rgb.mean() < 129


def test_16_bit_rgb_png(tmp_path: Path) -> None:
    samples = np.stack([GRADIENT_16, GRADIENT_16[::-1], np.full_like(GRADIENT_16, 30000)], axis=-1)
    path = tmp_path / "rgb16.png"
    path.write_bytes(png_bytes(samples))
    _, frames = read_all(path)
    error = np.abs(frames[0].rgb.astype(int) - to_8_bit(samples).astype(int))
    assert error.max() <= 1  # Pillow keeps the high byte: floor(v / 256) is within 1 of round(v / 257)


@pytest.mark.parametrize("kind", ["rgba.png", "rgba16.png", "la.png", "rgba.webp", "palette.png"])
def test_transparent_pixels_are_shown_over_white(tmp_path: Path, kind: str) -> None:
    """What transparency hides is never shown: transparent pixels come out white, half transparent ones
    blended with white, opaque ones as stored."""
    rgb, alpha = hidden_under_alpha()
    if kind == "la.png":
        rgb = np.repeat(rgb[..., :1], 3, axis=2)
    path = tmp_path / kind
    if kind == "rgba16.png":
        path.write_bytes(png_bytes(np.dstack([rgb, alpha]).astype(np.uint16) * 257))
    elif kind == "la.png":
        Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA").save(path)
    elif kind == "palette.png":  # two palette colours, index 0 transparent: no half transparency
        alpha = np.where(alpha == 255, 255, 0).astype(np.uint8)
        rgb = np.where(alpha[..., None] == 255, np.uint8([200, 30, 30]), np.uint8([10, 200, 10])).astype(np.uint8)
        palette = Image.new("P", (160, 120))
        palette.putpalette([10, 200, 10, 200, 30, 30])
        palette.putdata((alpha.reshape(-1) == 255).astype(np.uint8).tolist())
        palette.save(path, transparency=0)
    else:
        Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path, **({"lossless": True} if ".webp" in kind else {}))
    _, frames = read_all(path)
    out = frames[0].rgb.astype(int)
    expected = (rgb.astype(int) * alpha[..., None] + 255 * (255 - alpha[..., None].astype(int))) / 255
    assert np.abs(out - expected).max() <= 1
    assert (out[alpha == 0] == 255).all() and (out[alpha == 255] == rgb[alpha == 255]).all()


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_cmyk_image_comes_out_rgb(tmp_path: Path, suffix: str) -> None:
    cmyk = Image.new("CMYK", SIZE, (0, 255, 255, 0))  # red
    cmyk.paste((255, 255, 0, 0), (80, 0, 160, 120))  # blue on the right half
    cmyk.save(tmp_path / f"cmyk{suffix}")
    meta, frames = read_all(tmp_path / f"cmyk{suffix}")
    assert meta.codec == ("jpeg" if suffix == ".jpg" else "tiff")
    tolerance = 6 if suffix == ".jpg" else 0
    assert np.abs(frames[0].rgb[:, :70].astype(int) - [255, 0, 0]).max() <= tolerance
    assert np.abs(frames[0].rgb[:, 90:].astype(int) - [0, 0, 255]).max() <= tolerance


def test_palette_and_bilevel_images(tmp_path: Path) -> None:
    scene = frame_image(0, SIZE, 1)
    Image.fromarray(scene).quantize(64).save(tmp_path / "palette.png")
    Image.fromarray(scene).convert("1").save(tmp_path / "bilevel.png")
    _, palette = read_all(tmp_path / "palette.png")
    np.testing.assert_array_equal(palette[0].rgb, np.asarray(Image.open(tmp_path / "palette.png").convert("RGB")))
    assert mean_error(palette[0].rgb, scene) < 6
    _, bilevel = read_all(tmp_path / "bilevel.png")
    assert set(np.unique(bilevel[0].rgb).tolist()) == {0, 255}


def test_float_image_is_refused(tmp_path: Path) -> None:
    Image.fromarray(np.linspace(0, 1, 120 * 160, dtype=np.float32).reshape(120, 160), "F").save(tmp_path / "f.tif")
    with raises_input_error(r"f.tif holds 32-bit floating-point samples.*; export it as an 8- or 16-bit image"):
        probe(tmp_path / "f.tif")


def test_only_an_rgb_icc_profile_is_kept(tmp_path: Path) -> None:
    """With keep_metadata an RGB profile travels with the RGB pixels; a profile of another colour space does
    not describe them and is dropped."""
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    Image.fromarray(frame_image(0, SIZE, 1)).save(tmp_path / "srgb.png", icc_profile=srgb)
    Image.fromarray(frame_image(0, SIZE, 1)[..., 0]).save(tmp_path / "lab.png", icc_profile=lab)
    copy_video(tmp_path / "srgb.png", tmp_path / "srgb_out.png", keep_metadata=True)
    copy_video(tmp_path / "lab.png", tmp_path / "lab_out.png", keep_metadata=True)
    assert Image.open(tmp_path / "srgb_out.png").info.get("icc_profile") == srgb
    assert Image.open(tmp_path / "lab_out.png").info.get("icc_profile") is None


def test_png_whose_data_ends_early_is_truncated(tmp_path: Path) -> None:
    """A PNG whose (complete) zlib stream stops halfway was accepted and written half black."""
    scene = frame_image(0, SIZE, 1)
    (tmp_path / "whole.png").write_bytes(png_bytes(scene))
    np.testing.assert_array_equal(read_all(tmp_path / "whole.png")[1][0].rgb, scene)
    (tmp_path / "short.png").write_bytes(png_bytes(scene, rows=60))
    with raises_input_error(r"truncated: the image data of .*short.png ends before its last row \(28860 of 57720"):
        probe(tmp_path / "short.png")
    (tmp_path / "empty.png").write_bytes(png_bytes(scene, rows=0))
    with raises_input_error(r"truncated: .*empty.png ends before its last row \(0 of 57720 bytes\)"):
        probe(tmp_path / "empty.png")


@pytest.mark.parametrize("size", [(161, 121), (5, 3), (1, 1)])
def test_interlaced_png_length_is_counted_per_pass(tmp_path: Path, size: tuple[int, int]) -> None:
    """Adam7 stores seven sub-images (some empty at small sizes): complete files read exactly, short ones fail."""
    pixels = np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    (tmp_path / "whole.png").write_bytes(png_bytes(pixels, interlaced=True))
    np.testing.assert_array_equal(read_all(tmp_path / "whole.png")[1][0].rgb, pixels)
    (tmp_path / "short.png").write_bytes(png_bytes(pixels, interlaced=True, rows=size[1] // 2))
    with raises_input_error(r"truncated: the image data of .*short.png ends before its last row"):
        probe(tmp_path / "short.png")


def test_png_with_corrupt_compressed_data(tmp_path: Path) -> None:
    chunks = png_chunks(png_bytes(frame_image(0, SIZE, 1)))
    chunks = [(kind, body[:2] + b"\xff" * (len(body) - 2) if kind == b"IDAT" else body) for kind, body in chunks]
    (tmp_path / "bad.png").write_bytes(png_from_chunks(chunks))
    with raises_input_error(r"cannot read .*bad.png as an image: not an image, or truncated or corrupt \(bad compr"):
        probe(tmp_path / "bad.png")


def test_animated_png_frame_whose_data_ends_early(tmp_path: Path) -> None:
    data = make_animation(tmp_path / "anim.png", n_frames=3).read_bytes()
    chunks = png_chunks(data)
    last = max(i for i, (kind, _) in enumerate(chunks) if kind == b"fdAT")
    body = chunks[last][1]
    chunks[last] = (b"fdAT", body[:4] + zlib.compress(zlib.decompress(body[4:])[:100]))
    (tmp_path / "cut.png").write_bytes(png_from_chunks(chunks))
    with raises_input_error(r"truncated: the image data of frame 2 of .*cut.png ends before its last row"):
        probe(tmp_path / "cut.png")


# ------------------------------------------------------------------------------------------------ animations


@pytest.mark.parametrize("suffix", [".png", ".webp", ".gif"])
def test_animated_image_is_read_as_video(tmp_path: Path, suffix: str) -> None:
    """An animated PNG/WebP (Pillow) or GIF (FFmpeg) lost every frame but the first; now each frame comes at its
    own time (a frame without a duration lasts 100 ms), and a video output keeps them all."""
    src = make_animation(tmp_path / f"anim{suffix}", n_frames=5, durations=(40, 80, 0))
    meta, frames = read_all(src)
    assert meta.is_image is False and meta.n_frames == 5 and (meta.width, meta.height) == SIZE
    assert meta.fps == (Fraction(50, 3) if suffix == ".gif" else 25)  # FFmpeg: average; Pillow: the first frame's
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(seconds(frames, meta), [0, 0.04, 0.12, 0.22, 0.26], atol=1e-9)
    for frame in frames:
        assert mean_error(frame.rgb, frame_image(frame.index, SIZE, 5)) < (1 if suffix == ".gif" else 1e-9)
    out = tmp_path / "anim.mp4"
    copy_video(src, out)
    out_meta, out_frames = read_all(out)
    assert len(out_frames) == 5
    np.testing.assert_allclose(seconds(out_frames, out_meta), [0, 0.04, 0.12, 0.22, 0.26], atol=1e-3)
    assert mean_error(out_frames[3].rgb, frame_image(3, SIZE, 5)) < 3


def test_animated_image_needs_a_video_output(tmp_path: Path) -> None:
    meta = probe(make_animation(tmp_path / "anim.webp", n_frames=3))
    with raises_input_error(r"output .*out.png is an image but the input has 3 frames; choose a video output such as"):
        VideoWriter(tmp_path / "out.png", meta)
    assert partial_files(tmp_path) == []


def test_multi_page_tiff_is_refused(tmp_path: Path) -> None:
    pages = [Image.fromarray(frame_image(i, SIZE, 2)) for i in range(2)]
    pages[0].save(tmp_path / "pages.tif", save_all=True, append_images=pages[1:])
    with raises_input_error(r"pages.tif holds 2 TIFF pages or pictures; only the first would be read"):
        probe(tmp_path / "pages.tif")


# ------------------------------------------------------------------------------------------------ size limit


def test_decompression_bomb_is_one_clear_error(tmp_path: Path) -> None:
    """A 68-byte PNG claiming 60000x60000 pixels raised Pillow's DecompressionBombError (a traceback)."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bytes(np.zeros((4, 64), np.uint8), claimed_size=(60000, 60000)))
    assert bomb.stat().st_size < 100
    with raises_input_error(
        r"bomb.png is 60000x60000 = 3600000000 pixels per frame, more than video.max_pixels=134217728 .*"
        r"raise the limit, e.g. video.max_pixels=3600000000$"
    ):
        probe(bomb)


def test_max_pixels_replaces_pillows_limits(tmp_path: Path) -> None:
    """Pillow refuses above 2 x MAX_IMAGE_PIXELS and warns above it; video.max_pixels is the one limit."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bytes(np.zeros((4, 64), np.uint8), claimed_size=(60000, 60000)))
    with pytest.raises(Image.DecompressionBombError):
        Image.open(bomb)
    with open_image_header(bomb) as image:  # the header only: nothing decoded
        assert image.size == (60000, 60000)
    large = tmp_path / "large.png"
    large.write_bytes(png_bytes(np.zeros((4, 64), np.uint8), claimed_size=(10000, 9000)))  # above the warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open_image(large, DEFAULT_MAX_PIXELS) as image:
            assert image.size == (10000, 9000)


def test_frames_over_the_limit_are_refused(clip: Path, tmp_path: Path) -> None:
    with raises_input_error(r"clip.mp4 is 160x120 = 19200 pixels per frame, more than video.max_pixels=19199"):
        probe(clip, max_pixels=19199)
    assert probe(clip, max_pixels=19200).width == 160
    still = make_image(tmp_path / "still.png")
    with raises_input_error(r"still.png is 160x120 = 19200 pixels per frame, more than video.max_pixels=100"):
        VideoReader(still, max_pixels=100)
    assert probe(still, max_pixels=19200).height == 120


# ------------------------------------------------------------------------------------------------ settings


def test_video_settings_defaults_and_from_dict() -> None:
    assert VideoSettings() == VideoSettings(codec="libx264", crf=18, preset="medium", max_pixels=2**27)
    assert DEFAULT_MAX_PIXELS == 2**27 and VideoSettings.from_dict({}) == VideoSettings()
    settings = VideoSettings.from_dict({"codec": "ffv1", "crf": 0, "preset": "ultrafast", "max_pixels": 100})
    assert (settings.codec, settings.crf, settings.preset, settings.max_pixels) == ("ffv1", 0, "ultrafast", 100)


def test_unknown_video_setting_lists_the_known_ones() -> None:
    """``+video.foo=1`` reached the pipeline as an unexpected keyword (TypeError)."""
    with pytest.raises(ConfigError, match=r"^unknown video setting video.foo, video.zz; known: video.codec, "
                                          r"video.crf, video.preset, video.max_pixels$"):
        VideoSettings.from_dict({"zz": 1, "crf": 18, "foo": 1})


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"crf": -1}, "video.crf=-1 is out of range"),
        ({"crf": 52}, "video.crf=52 is out of range"),
        ({"crf": 18.5}, "video.crf=18.5 is out of range"),
        ({"crf": True}, "video.crf=True is out of range"),
        ({"crf": "18"}, "video.crf='18' is out of range"),
        ({"preset": "fastest"}, "video.preset='fastest' is not an x264 preset"),
        ({"codec": "h264_nvenc"}, "video.codec='h264_nvenc' is not supported; use one of libx264, libx264rgb, "),
        ({"codec": None}, "video.codec=None is not supported"),
        ({"max_pixels": 0}, "video.max_pixels=0 is invalid; use a positive integer"),
        ({"max_pixels": True}, "video.max_pixels=True is invalid"),
        ({"max_pixels": "8K"}, "video.max_pixels='8K' is invalid"),
    ],
)
def test_bad_video_settings(values: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(match)):
        VideoSettings.from_dict(values)


def test_codec_missing_from_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(av, "codecs_available", av.codecs_available - {"libx264rgb"})
    with pytest.raises(ConfigError, match="video.codec='libx264rgb' is missing from this PyAV build; use codec=lib"):
        VideoSettings(codec="libx264rgb")


def test_overrides_and_lossless() -> None:
    settings = VideoSettings()
    assert settings.with_overrides() is settings
    assert settings.with_overrides(crf=0, preset="fast") == VideoSettings(crf=0, preset="fast")
    with pytest.raises(ConfigError, match="video.crf=99"):
        settings.with_overrides(crf=99)
    assert [VideoSettings(codec=c, crf=q).lossless for c, q in
            [("ffv1", 30), ("libx264rgb", 0), ("libx264rgb", 1), ("libx264", 0), ("libvpx-vp9", 0)]] == [
        True, True, False, False, False]


def test_one_image_suffix_table() -> None:
    """The package exports one table of still suffixes, the one its reader and writer use."""
    import inpaint_anon.video as video
    from inpaint_anon.video import formats, reader, settings, writer

    assert video.IMAGE_SUFFIXES is formats.IMAGE_SUFFIXES is reader.IMAGE_SUFFIXES is writer.IMAGE_SUFFIXES
    assert sorted(IMAGE_SUFFIXES) == [".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"]
    assert sorted(video.LOSSLESS_IMAGE_SUFFIXES) == [".bmp", ".png", ".tif", ".tiff"]  # derived from that table
    assert (video.VideoReader, video.probe, video.VideoWriter, video.check_output, video.VideoSettings) == (
        reader.VideoReader, reader.probe, writer.VideoWriter, writer.check_output, settings.VideoSettings)
    assert sorted(name for name in video.__all__ if not hasattr(video, name)) == []


# ------------------------------------------------------------------------------------------------ lossless codecs

NOISE = np.random.default_rng(7).integers(0, 256, (5, 121, 161, 3), dtype=np.uint8)
"""Five frames of random RGB at an odd size: any rounding, chroma subsampling or padding would show."""


@pytest.mark.parametrize(("codec", "suffix"), [("ffv1", ".mkv"), ("libx264rgb", ".mkv"), ("libx264rgb", ".mp4")])
def test_lossless_codecs_round_trip_bit_exact(tmp_path: Path, codec: str, suffix: str) -> None:
    """What the reversible scramble relies on: frames written with a lossless codec read back byte for byte."""
    meta = VideoMeta(width=161, height=121, fps=Fraction(24), time_base=Fraction(1, 24), n_frames=5)
    video = VideoSettings(codec=codec, crf=0, preset="ultrafast")
    assert video.lossless is True
    out = tmp_path / f"noise{suffix}"
    with VideoWriter(out, meta, video=video) as writer:
        for index, rgb in enumerate(NOISE):
            writer.write(Frame(index, index, rgb))
    assert writer.codec == codec and writer.padded_size is None
    read_meta, frames = read_all(out)
    assert read_meta.codec == ("ffv1" if codec == "ffv1" else "h264")
    assert (read_meta.width, read_meta.height) == (161, 121)
    assert [f.rgb.tobytes() for f in frames] == [rgb.tobytes() for rgb in NOISE]


def test_pipeline_takes_video_settings(lossless_clip: Path, tmp_path: Path) -> None:
    """AnonymizePipeline passes ``video`` to the reader (pixel limit) and writer (codec); crf/preset still work."""
    from inpaint_anon.detect.scripted import ScriptedDetector
    from inpaint_anon.inpaint.fast import SolidInpainter
    from inpaint_anon.pipeline import AnonymizePipeline

    def pipeline() -> AnonymizePipeline:
        detector = ScriptedDetector(lambda i: object_masks(i, SIZE, 24), names=["person", "car"])
        return AnonymizePipeline(detector, SolidInpainter(color=(0, 0, 0), device="cpu"), progress=False)

    out = tmp_path / "out.mkv"
    pipeline()(lossless_clip, out, video=VideoSettings(codec="ffv1"))
    meta, frames = read_all(out)
    assert meta.codec == "ffv1" and len(frames) == 24
    for frame in frames:
        source = frame_image(frame.index, SIZE, 24)
        np.testing.assert_array_equal(frame.rgb[:4], source[:4])  # far from every region: untouched, exactly
        for mask in object_masks(frame.index, SIZE, 24).values():
            assert (frame.rgb[mask] == 0).all()  # filled with the solid colour, exactly
    shorthand = tmp_path / "shorthand.mp4"
    pipeline()(lossless_clip, shorthand, video=VideoSettings(codec="libx264rgb", crf=30), crf=0, preset="ultrafast")
    np.testing.assert_array_equal(read_all(shorthand)[1][5].rgb, frames[5].rgb)
    with raises_input_error("more than video.max_pixels=100"):
        pipeline()(lossless_clip, tmp_path / "limited.mkv", video=VideoSettings(max_pixels=100))
    assert not (tmp_path / "limited.mkv").exists() and partial_files(tmp_path) == []


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
    before = clip.read_bytes()
    alias = clip.parent / "." / clip.name
    with raises_input_error("output would overwrite the input"):
        VideoWriter(alias, probe(clip), source=clip, overwrite=True)
    assert clip.read_bytes() == before and partial_files(clip.parent) == []


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


@pytest.mark.parametrize("name", ["results", "dir.mp4"])
def test_output_is_a_folder(clip: Path, tmp_path: Path, name: str) -> None:
    """A folder is named as such (not as an unknown extension '(none)'), with a file name inside it as the fix."""
    (tmp_path / name).mkdir()
    folder = re.escape(name)
    pattern = rf"output is a folder: .*{folder}; give a file name inside it, such as .*{folder}/out.mp4"
    with raises_input_error(pattern):
        check_output(tmp_path / name)
    with raises_input_error(pattern):
        VideoWriter(tmp_path / name, probe(clip))
    assert list((tmp_path / name).iterdir()) == [] and partial_files(tmp_path) == []


@pytest.mark.parametrize("stem", ["a" * 248, "é" * 124], ids=["252 ASCII characters", "252 UTF-8 bytes"])
def test_longest_output_names_are_written(clip: Path, tmp_path: Path, stem: str) -> None:
    """A name at the file-system limit (its partial name is shortened to fit) is written end to end."""
    out = tmp_path / f"{stem}.mp4"
    assert len(out.name.encode()) == 252
    copy_video(clip, out)
    meta, frames = read_all(out)
    assert meta.n_frames == 24 and len(frames) == 24 and partial_files(tmp_path) == []


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
    assert partial_files(tmp_path) == []


@pytest.mark.parametrize(
    ("codec", "suffix", "fix"),
    [
        ("ffv1", ".mp4", ".mkv"),
        ("ffv1", ".mov", ".mkv"),
        ("ffv1", ".webm", ".mkv"),
        ("libx264rgb", ".webm", ".mp4 or .m4v or .mov or .mkv"),
        ("libvpx-vp9", ".mov", ".mp4 or .m4v or .mkv or .webm"),
    ],
)
def test_codec_the_container_cannot_hold(clip: Path, tmp_path: Path, codec: str, suffix: str, fix: str) -> None:
    pattern = f"video.codec={codec} cannot be stored in a \\{suffix} file; use a {fix} output, or video.codec=libx264"
    with pytest.raises(ConfigError, match=pattern):
        check_output(tmp_path / f"out{suffix}", video=VideoSettings(codec=codec))
    with pytest.raises(ConfigError, match=pattern):
        VideoWriter(tmp_path / f"out{suffix}", probe(clip), codec=codec)
    assert list(tmp_path.iterdir()) == [clip]


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
    assert partial_files(tmp_path) == []


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
    assert writer.frames_written == 1 and probe(tmp_path / "out.mp4").n_frames == 1


# ------------------------------------------------------------------------------------------------ command line

CONF = Path(__file__).resolve().parents[1] / "conf"


def compose_run(*overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="run", overrides=list(overrides), return_hydra_config=False)


def test_run_yaml_video_block_is_the_default_settings() -> None:
    from omegaconf import OmegaConf

    video = OmegaConf.to_container(compose_run("input=x.mp4").video)
    assert video.pop("codec") is None  # auto: run.py picks ffv1 for a reversible scramble into .mkv, else libx264
    assert VideoSettings.from_dict(video) == VideoSettings()


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        (["+video.foo=1"], ConfigError, r"^unknown video setting video.foo; known: video.codec, video.crf"),
        (["video.codec=ffv1"], ConfigError, r"^video.codec=ffv1 cannot be stored in a \.mp4 file; use a \.mkv output"),
        (["video.max_pixels=0"], ConfigError, r"^video.max_pixels=0 is invalid"),
        (["input={bomb}", "output={out}.png"], InputError, r"60000x60000 .* more than video.max_pixels=134217728"),
        (["video.max_pixels=1000"], InputError, r"in.mp4 is 32x32 = 1024 pixels per frame, more than video.max_pixels"),
    ],
)
def test_run_checks_video_settings_before_loading_models(
    tmp_path: Path, overrides: list[str], error: type[Exception], match: str
) -> None:
    """``run`` reads the ``video:`` block through VideoSettings (an unknown key or a wrong codec used to be a
    TypeError from the pipeline) and applies its pixel limit to the input, all before building any model."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from inpaint_anon.run import run

    make_clip(tmp_path / "in.mp4", n_frames=2, size=(32, 32))
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bytes(np.zeros((4, 64), np.uint8), claimed_size=(60000, 60000)))
    paths = {"bomb": bomb, "out": tmp_path / "out"}
    cfg = compose_run(f"input={tmp_path / 'in.mp4'}", f"output={tmp_path / 'out.mp4'}",
                      *(o.format(**paths) for o in overrides))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):  # run() reads the Hydra config
        HydraConfig.instance().set_config(compose(config_name="run", overrides=[
            f"input={tmp_path / 'in.mp4'}", f"hydra.run.dir={tmp_path / 'run'}"], return_hydra_config=True))
    try:
        with pytest.raises(error, match=match):
            run(cfg)
    finally:
        HydraConfig.instance().cfg = None  # not set again, as other tests expect outside a run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.png", "in.mp4"]


@pytest.mark.slow
def test_command_line_unknown_video_key(tmp_path: Path) -> None:
    """``+video.foo=1`` gives one ``error:`` line and exit 2 (it was a TypeError traceback, exit 1). Slow: a fresh
    interpreter imports torch; the check itself is covered in-process above."""
    import os
    import subprocess
    import sys

    make_clip(tmp_path / "in.mp4", n_frames=2, size=(32, 32))
    command = [sys.executable, "-m", "inpaint_anon.run", "input=in.mp4", "output=out.mp4", "+video.foo=1",
               f"hydra.run.dir={tmp_path / 'run'}", "pipeline.progress=false"]
    env = {**os.environ, "YOLO_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert (proc.returncode, "Traceback" in proc.stderr) == (2, False), proc.stderr[-2000:]
    assert errors == ["error: unknown video setting video.foo; known: video.codec, video.crf, video.preset, "
                      "video.max_pixels"], proc.stderr[-2000:]
    assert not (tmp_path / "out.mp4").exists()

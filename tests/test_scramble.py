"""The keyed scramble: primitives (inpaint_anon/scramble.py), keys and key files, per-video nonces, the record of
scrambled pixel sets, and the Python round trip pipeline -> unscramble_video (the command lines:
test_scramble_cli.py)."""

from __future__ import annotations

import hashlib
import math
import random

import numpy as np
import pytest
import torch

from inpaint_anon.composite import Compositor
from inpaint_anon.detect.scripted import ScriptedDetector
from inpaint_anon.errors import ConfigError, InputError
from inpaint_anon.inpaint import InpaintBatch, ScrambleInpainter
from inpaint_anon.pipeline import AnonymizePipeline
from inpaint_anon.records import DetectionWriter
from inpaint_anon.scramble import (
    PIXELS_FILE,
    ScrambledPixels,
    key_bytes,
    key_fingerprint,
    key_tag,
    new_key,
    new_nonce,
    read_key_file,
    scramble,
    unscramble,
    video_key,
    write_key_file,
)
from inpaint_anon.types import Detections
from inpaint_anon.unscramble import unscramble_video
from inpaint_anon.video import VideoReader, VideoSettings
from tests.clips import frame_image, make_clip, object_masks

KEY = "0123456789abcdef" * 4
NAMES = {0: "person", 1: "car"}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def random_frame_and_mask(seed: int, h: int = 40, w: int = 56) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = rng.random((h, w)) < rng.uniform(0.05, 0.9)
    return image, mask


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("hide_colors", [True, False])
def test_unscramble_restores_exact_pixels(seed, hide_colors):
    image, mask = random_frame_and_mask(seed)
    scrambled = scramble(image, mask, KEY, seed * 1000, hide_colors)
    assert isinstance(scrambled, np.ndarray) and scrambled.dtype == np.uint8
    assert np.array_equal(scrambled[~mask], image[~mask])
    assert (scrambled[mask] != image[mask]).any(axis=1).mean() > 0.9
    assert np.array_equal(unscramble(scrambled, mask, KEY, seed * 1000, hide_colors), image)
    assert np.array_equal(image, random_frame_and_mask(seed)[0]), "the input was modified"


def test_scramble_accepts_tensors_and_byte_keys():
    image, mask = random_frame_and_mask(20)
    flipped = scramble(image[:, ::-1], mask[:, ::-1], KEY, np.int64(4))  # negative strides, numpy index
    assert np.array_equal(unscramble(flipped, mask[:, ::-1], KEY, 4), image[:, ::-1])
    raw = bytes(range(16))
    scrambled = scramble(torch.from_numpy(image), torch.from_numpy(mask), raw, 3)
    assert isinstance(scrambled, torch.Tensor)
    assert np.array_equal(scrambled.numpy(), scramble(image, mask, raw.hex(), 3))
    assert np.array_equal(unscramble(scrambled, torch.from_numpy(mask), raw, 3).numpy(), image)


def test_hidden_colours_hide_the_histogram_and_plain_permutation_keeps_it():
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    image[:, :32] = 200
    mask = np.ones((64, 64), dtype=bool)
    hidden = scramble(image, mask, KEY, 0)
    assert len(np.unique(hidden)) > 250
    permuted = scramble(image, mask, KEY, 0, hide_colors=False)
    assert np.array_equal(np.sort(permuted.ravel()), np.sort(image.ravel()))
    assert not np.array_equal(permuted, image)


def test_wrong_key_or_frame_index_does_not_restore():
    image, mask = random_frame_and_mask(21)
    scrambled = scramble(image, mask, KEY, 5)
    for key, index in ((new_key(), 5), (KEY, 6), (KEY[:-1] + "0", 5)):
        restored = unscramble(scrambled, mask, key, index)
        assert psnr(restored[mask], image[mask]) < 12


def test_keys_from_small_integer_seeds_do_not_restore():
    # An attacker guessing keys derived from small seeds gets nothing close to the original.
    image, mask = random_frame_and_mask(22, 16, 16)
    scrambled = scramble(image, mask, KEY, 0)
    best = 0.0
    for seed in range(1001):
        for key in (
            hashlib.sha256(str(seed).encode()).hexdigest(),
            f"{seed:032x}",
            random.Random(seed).getrandbits(128).to_bytes(16, "big"),
        ):
            best = max(best, psnr(unscramble(scrambled, mask, key, 0)[mask], image[mask]))
    assert best < 15


@pytest.mark.parametrize(
    "key, match",
    [
        ("", "too short"),
        ("abc123", "too short"),
        ("0" * 31, "not a hex"),
        ("xyz" * 12, "not a hex"),
        (b"short", "too short"),
        (b"", "too short"),
        (1234, "hex string or bytes"),
        (None, "hex string or bytes"),
    ],
)
def test_bad_keys_raise_config_error_saying_how_to_make_one(key, match):
    with pytest.raises(ConfigError, match=match) as info:
        key_bytes(key)
    assert "secrets.token_hex(32)" in str(info.value)
    if isinstance(key, str) and key:
        assert key not in str(info.value), "the error message must not echo the key"
    with pytest.raises(ConfigError):
        ScrambleInpainter(key)
    with pytest.raises(ConfigError):
        scramble(np.zeros((2, 2, 3), np.uint8), np.ones((2, 2), bool), key, 0)


def test_key_helpers():
    key = new_key()
    assert len(key) == 64 and len(key_bytes(key)) == 32 and new_key() != key
    assert key_bytes(f"  {key}\n") == key_bytes(key)
    fingerprint = key_fingerprint(key)
    assert len(fingerprint) == 16 and fingerprint == key_fingerprint(key_bytes(key))
    assert fingerprint not in key and fingerprint != key_fingerprint(new_key())


@pytest.mark.parametrize(
    "image, mask, index, match",
    [
        (np.zeros((4, 4, 3), np.uint8), np.ones((4, 5), bool), 0, "mask must be"),
        (np.zeros((4, 4, 3), np.uint8), np.ones((4, 4), np.uint8), 0, "mask must be"),
        (np.zeros((4, 4, 3), np.float32), np.ones((4, 4), bool), 0, "image must be"),
        (np.zeros((3, 4, 4), np.uint8), np.ones((4, 4), bool), 0, "image must be"),
        (np.zeros((4, 4, 3), np.uint8), np.ones((4, 4), bool), -1, "frame_index"),
        (np.zeros((4, 4, 3), np.uint8), np.ones((4, 4), bool), 1.0, "frame_index"),
    ],
)
def test_scramble_rejects_bad_inputs(image, mask, index, match):
    with pytest.raises(InputError, match=match):
        scramble(image, mask, KEY, index)


# --- long keys, nonces, tags ---------------------------------------------------------------------------------


def one_region_batch(index: int = 5, seed: int = 3) -> tuple[InpaintBatch, torch.Tensor]:
    """A random uint8 (1, 3, 24, 32) frame with one rectangular region, and its bool (24, 32) mask."""
    image = torch.randint(0, 256, (1, 3, 24, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    mask = torch.zeros(1, 24, 32, dtype=torch.bool)
    mask[0, 4:20, 6:26] = True
    return InpaintBatch(images=image, detections=[Detections.from_masks(mask, [0], NAMES)],
                        frame_indices=[index]), mask[0]


def composed(batch: InpaintBatch, out) -> torch.Tensor:
    """uint8 (B, 3, H, W): the batch's frames with the inpainter's fills pasted (hard edges)."""
    return Compositor.compose(batch.images, out.fills)


def test_a_65_byte_key_round_trips_and_every_byte_counts():
    """video_key used to cut keys to 64 bytes: keys differing only after byte 64 scrambled identically."""
    long_key = bytes(range(65))
    other = long_key[:64] + b"\xff"
    batch, mask = one_region_batch()
    nonce = new_nonce()
    a = composed(batch, ScrambleInpainter(long_key, nonce=nonce, device="cpu")(batch))[0]
    b = composed(batch, ScrambleInpainter(other, nonce=nonce, device="cpu")(batch))[0]
    cut = composed(batch, ScrambleInpainter(long_key[:64], nonce=nonce, device="cpu")(batch))[0]
    assert not torch.equal(a[:, mask], b[:, mask]) and not torch.equal(a[:, mask], cut[:, mask])
    assert video_key(long_key, nonce) != video_key(other, nonce)
    assert video_key(long_key.hex(), nonce) == video_key(long_key, nonce)  # hex or bytes: the same key
    restored = unscramble(a.permute(1, 2, 0), mask, video_key(long_key, nonce), 5)
    assert torch.equal(restored, batch.images[0].permute(1, 2, 0))
    # keys up to 64 bytes keep the earlier derivation: BLAKE2b keyed by the key itself
    expected = hashlib.blake2b(bytes.fromhex(nonce), key=long_key[:64], digest_size=32, person=b"ia-videokey-v1")
    assert video_key(long_key[:64], nonce) == expected.digest()


def test_each_instance_draws_its_own_nonce_so_one_key_never_repeats_a_keystream():
    batch, mask = one_region_batch()
    first, second = ScrambleInpainter(KEY, device="cpu"), ScrambleInpainter(KEY, device="cpu")
    assert first.nonce != second.nonce
    assert len(first.nonce) == 32 and bytes.fromhex(first.nonce)
    a, b = composed(batch, first(batch))[0], composed(batch, second(batch))[0]
    assert (a[:, mask] != b[:, mask]).any(dim=0).float().mean() > 0.9, "same key, same frame: different scrambles"
    for inpainter, out in ((first, a), (second, b)):
        restored = unscramble(out.permute(1, 2, 0), mask, video_key(KEY, inpainter.nonce), 5)
        assert torch.equal(restored, batch.images[0].permute(1, 2, 0))
    assert first.run_record() == {"scramble": {"scheme": "inpaint_anon/scramble/v1", "nonce": first.nonce,
                                               "key_fingerprint": key_fingerprint(KEY), "hide_colors": True}}
    assert ScrambleInpainter(KEY, nonce=b"\x01" * 8, device="cpu").nonce == "01" * 8


def test_the_key_tag_binds_key_nonce_and_scheme_and_reveals_neither():
    nonce = new_nonce()
    tag = key_tag(KEY, nonce)
    assert len(tag) == 32 and tag == key_tag(KEY, nonce) == key_tag(key_bytes(KEY), nonce.upper())
    others = {key_tag(new_key(), nonce), key_tag(KEY, new_nonce()), key_tag(KEY, nonce, hide_colors=False)}
    assert tag not in others and len(others) == 3
    assert tag not in KEY and tag not in video_key(KEY, nonce).hex()


# --- key files ------------------------------------------------------------------------------------------------


def test_key_files_are_private_new_files_and_read_back(tmp_path):
    path = write_key_file(tmp_path / "video.key", KEY.upper())
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text() == KEY + "\n" and read_key_file(path) == KEY
    assert [p.name for p in tmp_path.iterdir()] == ["video.key"], "no partial file left"
    with pytest.raises(InputError, match="exists"):
        write_key_file(path, new_key())
    assert read_key_file(path) == KEY, "an existing key file is never replaced"
    with pytest.raises(InputError, match="does not exist"):
        write_key_file(tmp_path / "missing" / "video.key", KEY)
    with pytest.raises(InputError, match="cannot read"):
        read_key_file(tmp_path / "nope.key")
    bad = tmp_path / "bad.key"
    bad.write_text("abc123\n")
    with pytest.raises(ConfigError, match="bad.key.*too short") as info:
        read_key_file(bad)
    assert "abc123" not in str(info.value)
    with pytest.raises(ConfigError, match="too short"):
        write_key_file(tmp_path / "short.key", "abcd")
    assert not (tmp_path / "short.key").exists()


# --- the record of scrambled pixel sets --------------------------------------------------------------------------


def test_the_record_holds_each_frames_scrambled_pixels_and_checks_the_key(tmp_path):
    h, w = 24, 32
    inpainter = ScrambleInpainter(KEY, device="cpu")
    writer = inpainter.record_pixels(tmp_path / PIXELS_FILE, h, w)
    generator = torch.Generator().manual_seed(4)
    images = torch.randint(0, 256, (3, 3, h, w), dtype=torch.uint8, generator=generator)
    masks = torch.rand((3, 2, h, w), generator=generator) < 0.2
    masks[2] = False  # a frame whose regions are empty: recorded as nothing scrambled
    detections = [Detections.from_masks(m, [0, 1], NAMES) for m in masks]
    inpainter(InpaintBatch(images=images[:2], detections=detections[:2], frame_indices=[2, 3]))
    inpainter(InpaintBatch(images=images[2:], detections=detections[2:], frame_indices=[6]))
    assert not (tmp_path / PIXELS_FILE).exists(), "the record appears only on commit"
    writer.commit(9)
    record = ScrambledPixels(tmp_path / PIXELS_FILE)
    assert (record.n_frames, record.height, record.width) == (9, h, w)
    assert (record.nonce, record.key_fingerprint, record.hide_colors) == (inpainter.nonce, key_fingerprint(KEY), True)
    expected = {2: masks[0].any(0), 3: masks[1].any(0)}
    got = list(record)
    assert [index for index, _ in got] == list(range(9))
    for index, mask in got:
        assert torch.equal(mask, expected.get(index, torch.zeros(h, w, dtype=torch.bool))), index
    record.check_key(KEY)
    record.check_key(key_bytes(KEY))
    with pytest.raises(InputError, match="wrong scramble key") as info:
        record.check_key(new_key())
    assert key_fingerprint(KEY) in str(info.value)
    assert KEY not in (tmp_path / PIXELS_FILE).read_bytes().decode("latin-1")


def test_an_aborted_or_short_record_leaves_nothing(tmp_path):
    inpainter = ScrambleInpainter(KEY, device="cpu")
    batch, _ = one_region_batch(index=3)
    writer = inpainter.record_pixels(tmp_path / PIXELS_FILE, 24, 32)
    inpainter(batch)
    writer.abort()
    assert list(tmp_path.iterdir()) == []
    writer = inpainter.record_pixels(tmp_path / PIXELS_FILE, 24, 32)
    inpainter(batch)
    with pytest.raises(RuntimeError, match="4 frames were recorded but the video had 2"):
        writer.commit(2)
    assert list(tmp_path.iterdir()) == []


def test_a_record_that_is_not_a_scrambled_pixel_record_is_refused(tmp_path):
    other = tmp_path / "detections.dets"
    with DetectionWriter(other, key={"content": "final tracked detections"}, names=NAMES) as writer:
        writer.write(0, Detections.empty(4, 4, NAMES))
    with pytest.raises(InputError, match="unusable.*final tracked detections"):
        ScrambledPixels(other)
    with pytest.raises(InputError, match="not found"):
        ScrambledPixels(tmp_path / PIXELS_FILE)


# --- the Python round trip: pipeline -> record -> unscramble_video ------------------------------------------------


@pytest.mark.parametrize("hide_colors", [True, False])
def test_pipeline_then_unscramble_video_restores_every_pixel(tmp_path, one_thread, hide_colors):
    n, size = 6, (64, 48)
    source = make_clip(tmp_path / "clip.mkv", n_frames=n, size=size, lossless=True)
    detector = ScriptedDetector(lambda i: object_masks(i, size, n), names=["person", "car"])
    inpainter = ScrambleInpainter(KEY, hide_colors=hide_colors, device="cpu")
    compositor = Compositor()
    pipe = AnonymizePipeline(detector=detector, inpainter=inpainter, compositor=compositor, batch_frames=4,
                             progress=False)
    pixels = inpainter.record_pixels(tmp_path / PIXELS_FILE, size[1], size[0])
    result = pipe(source, tmp_path / "scrambled.mkv", video=VideoSettings(codec="ffv1"))
    pixels.commit(result.frames_out)
    record = ScrambledPixels(tmp_path / PIXELS_FILE)
    for (index, mask), frame in zip(record, VideoReader(tmp_path / "scrambled.mkv"), strict=True):
        truth = object_masks(index, size, n)
        dets = Detections.from_masks(np.stack([truth["person"], truth["car"]]), [0, 1], NAMES)
        fill = compositor.fill_regions(dets.masks, dets.boxes_xyxy, feather=False).any(0)
        assert torch.equal(mask, fill), "the record is the dilated union the scramble changed"
        changed = (frame.rgb != frame_image(index, size, n)).any(-1)
        assert not changed[~mask.numpy()].any() and changed[mask.numpy()].mean() > 0.9
    with pytest.raises(InputError, match="wrong scramble key"):
        unscramble_video(tmp_path / "scrambled.mkv", record, tmp_path / "wrong.mkv", new_key())
    assert not (tmp_path / "wrong.mkv").exists()
    out = unscramble_video(tmp_path / "scrambled.mkv", tmp_path / PIXELS_FILE, tmp_path / "restored.mkv", KEY)
    restored = list(VideoReader(out))
    assert len(restored) == n
    for frame in restored:
        assert np.array_equal(frame.rgb, frame_image(frame.index, size, n)), frame.index
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["clip.mkv", "scrambled.mkv", PIXELS_FILE,
                                                                 "restored.mkv"])
    assert result.frames_out == n


def test_one_instance_scrambles_one_video_a_second_is_refused(tmp_path):
    """Run twice with one ScrambleInpainter, the second video would reuse the first one's keystream: it is one
    ConfigError before any frame, and no output is left; through a ClassRouter too."""
    from inpaint_anon.inpaint import BlurInpainter
    from inpaint_anon.inpaint.router import ClassRouter

    n, size = 3, (64, 48)
    source = make_clip(tmp_path / "clip.mkv", n_frames=n, size=size, lossless=True)
    detector = ScriptedDetector(lambda i: object_masks(i, size, n), names=["person", "car"])
    scramble = ScrambleInpainter(KEY, device="cpu")
    for inpainter in (scramble, ClassRouter({"person": ScrambleInpainter(KEY, device="cpu")},
                                            BlurInpainter(device="cpu"))):
        pipe = AnonymizePipeline(detector=detector, inpainter=inpainter, progress=False)
        first = pipe(source, tmp_path / "first.mkv", video=VideoSettings(codec="ffv1"), overwrite=True)
        assert first.frames_out == n
        with pytest.raises(ConfigError, match="already scrambled a video.*make a new ScrambleInpainter"):
            pipe(source, tmp_path / "second.mkv", video=VideoSettings(codec="ffv1"))
        assert not (tmp_path / "second.mkv").exists() and not list(tmp_path.glob("*partial*"))

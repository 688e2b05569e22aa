"""The committed sample clip (data/street.mp4) is the file data/README.md describes."""

from __future__ import annotations

import hashlib
import re
from fractions import Fraction
from pathlib import Path

import av
import pytest

from inpaint_anon.video import probe

DATA = Path(__file__).resolve().parents[1] / "data"
CLIP = DATA / "street.mp4"


def _readme_value(key: str) -> str:
    """The value cell of the ``| key | value |`` row of data/README.md's street.mp4 table."""
    match = re.search(rf"^\| {key} \| (.+?) \|$", (DATA / "README.md").read_text(), flags=re.MULTILINE)
    assert match, f"data/README.md has no '| {key} | ... |' row"
    return match.group(1).strip()


def test_sample_clip_exists_and_is_small() -> None:
    assert CLIP.is_file(), "data/street.mp4 is missing; see data/README.md (python data/make_sample.py)"
    size = CLIP.stat().st_size
    assert size < 2_000_000
    assert size == int(_readme_value("size").split(" bytes")[0].replace(" ", ""))


def test_sample_clip_sha256_matches_readme() -> None:
    expected = _readme_value("sha256").strip("`")
    assert re.fullmatch(r"[0-9a-f]{64}", expected)
    assert hashlib.sha256(CLIP.read_bytes()).hexdigest() == expected


def test_sample_clip_probes_as_documented() -> None:
    meta = probe(CLIP)
    assert (meta.width, meta.height) == (768, 576)
    assert meta.fps == Fraction(10)
    assert meta.n_frames == 50
    assert not meta.has_audio
    assert meta.codec == "h264"
    assert meta.duration == pytest.approx(5.0)


def test_sample_clip_decodes_every_frame() -> None:
    with av.open(str(CLIP)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.pix_fmt == "yuv420p"
        frames = [frame.pts for frame in container.decode(stream)]
    assert len(frames) == 50
    assert frames == sorted(frames)

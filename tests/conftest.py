"""Shared test setup: offline environment, and small synthetic clips (tests/clips.py) built in tmp_path."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.clips import make_clip

# No test may reach a network: ultralytics skips its probes and downloads, the HF hub its requests.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tokenizer_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private inpaint_anon cache (the derived CLIP tokenizer files), one per test module."""
    return tmp_path_factory.mktemp("inpaint_anon_cache")


@pytest.fixture
def offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tokenizer_cache: Path) -> None:
    """No test may reach a hub: offline mode, an empty private HF home and cache, a private inpaint_anon cache
    (``pytestmark = pytest.mark.usefixtures("offline_hub")`` in a module)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.setenv("INPAINT_ANON_CACHE", str(tokenizer_cache))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Two shared cores: torch's thread pool stalls small ops under load; one thread is faster there."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    """24 frames, 160x120, 24 fps, H.264 yuv420p in .mp4, no audio."""
    return make_clip(tmp_path / "clip.mp4")


@pytest.fixture
def clip_with_audio(tmp_path: Path) -> Path:
    """Like ``clip`` plus a mono AAC 440 Hz tone as long as the video."""
    return make_clip(tmp_path / "clip_audio.mp4", audio=True)


@pytest.fixture
def lossless_clip(tmp_path: Path) -> Path:
    """24 frames, 160x120, FFV1 RGB in .mkv: decodes to exactly ``frame_image``."""
    return make_clip(tmp_path / "clip_lossless.mkv", lossless=True)

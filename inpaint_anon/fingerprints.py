"""Fingerprints: short digests that say whether two inputs are the same, without reading them whole.

- :func:`file_fingerprint` / :func:`content_fingerprint`: a file's (or a folder's) size and sampled bytes.
  The detection cache, FID statistics and the evaluation's records use them to recognise a video or weights.
- :func:`cache_key`: the name of a detection cache entry, from the video's content fingerprint and the
  detector settings that change detections (:func:`key_settings`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inpaint_anon.errors import ConfigError, InputError
from inpaint_anon.records import FORMAT_NAME, FORMAT_VERSION, READ_CHUNK

KEY_LENGTH = 32
"""Hex digits of a cache key (128 bits of SHA-256)."""

IGNORED_SETTINGS = frozenset({"batch_size", "device"})
"""Detector settings left out of the cache key: they change speed, not detections (up to float rounding
between devices). ``half`` (fp16) is kept: it changes scores and mask edges visibly."""

HEAD_TAIL_BYTES = 4 << 20
SAMPLE_BLOCKS = 32
SAMPLE_BLOCK_BYTES = 64 << 10


# -- content fingerprints ---------------------------------------------------------------------------------


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a whole file, read in 1 MiB chunks (model files: a packaged or exported model is used only
    when it matches)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
                while length > 0 and (chunk := file.read(min(length, READ_CHUNK))):
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


# -- detection cache keys ---------------------------------------------------------------------------------


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


def cache_key_record(video_path: str | Path, detector_settings: Mapping[str, Any]) -> dict[str, Any]:
    """What a cache key digests (plain JSON data): the ``.dets`` format version, the video's content
    fingerprint and :func:`key_settings`. Raises InputError when the video cannot be read, ConfigError for bad
    settings."""
    settings = key_settings(detector_settings)
    return {"format": f"{FORMAT_NAME}/{FORMAT_VERSION}", "video": content_fingerprint(video_path), "settings": settings}


def record_digest(record: Mapping[str, Any]) -> str:
    """:data:`KEY_LENGTH` hex digits of SHA-256 over ``record`` as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


def cache_key(video_path: str | Path, detector_settings: Mapping[str, Any]) -> str:
    """A 32-hex-digit key naming the detections of ``video_path`` under ``detector_settings``.

    It digests :func:`cache_key_record`: the file format version, the video's content fingerprint
    (:func:`content_fingerprint`: size and sampled bytes, not the path or the modification time, so a copied or
    renamed video keeps its key) and :func:`key_settings` (every setting but ``batch_size`` and ``device``; the
    weights file's content when it is local). Raises InputError when the video cannot be read, ConfigError for
    bad settings.
    """
    return record_digest(cache_key_record(video_path, detector_settings))

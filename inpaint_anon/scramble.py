"""Keyed, reversible scrambling of masked pixels.

Scheme (version 1), per frame:

* key: a secret of at least 128 bits (hex string of >= 32 hex digits, or >= 16 bytes).
* keystream: SHAKE-256 over ``domain || purpose || len(key) || key || frame_index`` (fixed-length encodings,
  so no two inputs collide); an extendable-output PRF keyed by the key and tweaked by the frame index.
* permutation: the masked pixel positions (raster order) are permuted by the argsort of one 64-bit
  keystream word per position: a uniformly random permutation (ties have probability ~n^2 / 2^65 and are
  broken by a stable sort, so the result is still a permutation).
* colours (``hide_colors=True``, the default): a keystream byte per pixel and channel is added mod 256, so
  the scrambled area is uniform noise and its colour histogram says nothing about the original. With
  ``hide_colors=False`` only positions are permuted (the histogram stays; slightly more robust to lossy
  encoding, where an error then stays a small error instead of possibly wrapping around 0/255).

``unscramble`` inverts it exactly on lossless frames, given the same key, frame index and mask; the mask
(the union of the frame's fill regions) must therefore be stored alongside a scrambled video. The
keystream depends only on (key, frame index), so one key must not scramble two videos: :func:`video_key`
derives a per-video key from the secret and a public random nonce (``ScrambleInpainter`` draws a fresh one
per instance unless given one; the nonce is recorded in run.json).

A scrambled video is undone with three things (``python -m inpaint_anon.unscramble``):

* the secret key (never stored by the package next to the video: see :func:`write_key_file`);
* the *scrambled pixel sets*: :class:`ScrambledPixelsWriter` records, per frame, exactly the pixels the
  scramble changed (the union of the fill regions, after the compositor's dilation) in the
  :class:`~inpaint_anon.records.DetectionWriter` format (packbits over each mask's box, zlib), one region
  per frame, written through a partial file and published only when the run succeeded;
* that record's header: the public nonce, the key fingerprint and a keyed tag (:func:`key_tag`, BLAKE2b keyed
  by the per-video key over the scheme), so a wrong key is reported (:meth:`ScrambledPixels.check_key`)
  instead of producing noise.
"""

from __future__ import annotations

import hashlib
import hmac
import numbers
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from inpaint_anon.atomic import AtomicPath
from inpaint_anon.errors import ConfigError, InputError
from inpaint_anon.records import CorruptRecordError, DetectionReader, DetectionWriter
from inpaint_anon.types import Detections

KEY_HELP = 'make one with: python -c "import secrets; print(secrets.token_hex(32))"'
MIN_KEY_BYTES = 16
BLAKE2B_MAX_KEY_BYTES = 64
"""BLAKE2b takes keys of at most 64 bytes; a longer secret is first hashed to 64 bytes (see :func:`_mac_key`)."""
SCHEME = "inpaint_anon/scramble/v1"
"""Name and version of the scrambling scheme, recorded with the scrambled pixel sets."""
_DOMAIN = SCHEME.encode()


def new_key() -> str:
    """A fresh random key: 64 hex digits (256 bits) from the OS's cryptographic RNG."""
    return secrets.token_hex(32)


def key_bytes(key: str | bytes) -> bytes:
    """The secret bytes of ``key``: a hex string (>= 32 hex digits, surrounding whitespace ignored) or bytes.

    Raises ConfigError (without echoing the secret) when the key is of the wrong type, not hex, or shorter
    than 128 bits.
    """
    if isinstance(key, (bytes, bytearray)):
        raw = bytes(key)
        what = f"{len(raw)} bytes"
    elif isinstance(key, str):
        text = key.strip()
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise ConfigError(
                f"scramble key is not a hex string of even length ({len(text)} characters); {KEY_HELP}"
            ) from None
        what = f"{len(text)} hex digits"
    else:
        raise ConfigError(f"scramble key must be a hex string or bytes, got {type(key).__name__}; {KEY_HELP}")
    if len(raw) < MIN_KEY_BYTES:
        raise ConfigError(
            f"scramble key is too short ({what}); it must hold at least 128 bits "
            f"({2 * MIN_KEY_BYTES} hex digits or {MIN_KEY_BYTES} bytes); {KEY_HELP}"
        )
    return raw


def new_nonce() -> str:
    """A fresh public per-video nonce: 32 hex digits (128 bits)."""
    return secrets.token_hex(16)


def nonce_hex(nonce: str | bytes) -> str:
    """``nonce`` (hex string or bytes, at least 8 bytes) as lowercase hex; ConfigError when it is not one."""
    if isinstance(nonce, (bytes, bytearray)):
        raw = bytes(nonce)
    else:
        try:
            raw = bytes.fromhex(str(nonce).strip())
        except ValueError:
            raise ConfigError(f"scramble nonce {nonce!r} is not hex; use e.g. {new_nonce()}") from None
    if len(raw) < 8:
        raise ConfigError(f"scramble nonce is too short ({len(raw)} bytes); use at least 8, e.g. {new_nonce()}")
    return raw.hex()


def _mac_key(key: str | bytes) -> bytes:
    """The secret as a BLAKE2b key: as it is up to 64 bytes, else its domain-separated 64-byte BLAKE2b hash.

    Every byte of a long secret counts (two keys differing only after byte 64 give different keys); a short
    key is never hashed, so keys of up to 64 bytes keep the scheme's earlier derivation.
    """
    raw = key_bytes(key)
    if len(raw) <= BLAKE2B_MAX_KEY_BYTES:
        return raw
    return hashlib.blake2b(raw, digest_size=BLAKE2B_MAX_KEY_BYTES, person=b"ia-longkey-v1").digest()


def video_key(key: str | bytes, nonce: str | bytes) -> bytes:
    """The 256-bit key that scrambles one video: BLAKE2b keyed by the secret over the video's nonce.

    nonce: public and unique per video (hex string or bytes, at least 8 bytes), e.g. :func:`new_nonce`.
    Reusing a key with different nonces gives unrelated keystreams. A secret longer than 64 bytes is hashed
    to 64 bytes first (:func:`_mac_key`), never cut.
    """
    raw_nonce = bytes.fromhex(nonce_hex(nonce))
    return hashlib.blake2b(raw_nonce, key=_mac_key(key), digest_size=32, person=b"ia-videokey-v1").digest()


def key_tag(key: str | bytes, nonce: str | bytes, hide_colors: bool = True) -> str:
    """32 hex digits that prove knowledge of the key of one scrambled video, safe to store beside it.

    BLAKE2b keyed by :func:`video_key` over the scheme name and ``hide_colors``: only the right (key, nonce)
    reproduces it, and it reveals nothing about the key or the keystream.
    """
    message = f"{SCHEME};hide_colors={int(bool(hide_colors))}".encode()
    return hashlib.blake2b(message, key=video_key(key, nonce), digest_size=16, person=b"ia-keytag-v1").hexdigest()


def key_fingerprint(key: str | bytes) -> str:
    """16 hex digits identifying ``key``, safe to log (a domain-separated BLAKE2b hash of it)."""
    return hashlib.blake2b(key_bytes(key), digest_size=8, person=b"ia-keyfp-v1").hexdigest()


# -- key files --------------------------------------------------------------------------------------------

KEY_ENV = "INPAINT_ANON_KEY"
"""Environment variable the command line reads the key from (keeps it out of shell history and run folders)."""


def read_key_file(path: str | Path) -> str:
    """The key stored in the file ``path`` (hex; surrounding whitespace ignored), checked by :func:`key_bytes`.

    Raises InputError when the file cannot be read, ConfigError (naming the file, not the key) when it does not
    hold a valid key.
    """
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else "not a hex text file"
        raise InputError(
            f"cannot read scramble key file {path} ({reason}); check the path and its permissions"
        ) from None
    try:
        key_bytes(text)
    except ConfigError as error:
        raise ConfigError(f"scramble key file {path}: {error}") from None
    return text.strip()


def write_key_file(path: str | Path, key: str | bytes) -> Path:
    """Save ``key`` (as hex) to the new file ``path``, readable and writable by its owner only (mode 600).

    Written through a partial file whose mode is set before the key goes in, so the key is never readable by
    others, not even for a moment. Raises InputError when ``path`` exists or its folder does not.
    """
    raw = key_bytes(key)
    path = Path(path).expanduser()
    if path.exists():
        raise InputError(f"key file {path} exists; choose a new path (an existing key file is read, never replaced)")
    if not path.parent.is_dir():
        raise InputError(f"key file folder {path.parent} does not exist; create it or choose another key_file")
    with AtomicPath(path) as out:
        os.chmod(out.temp, 0o600)
        out.temp.write_text(raw.hex() + "\n", encoding="ascii")
    return path


def scramble(
    image: np.ndarray | torch.Tensor,
    mask: np.ndarray | torch.Tensor,
    key: str | bytes,
    frame_index: int,
    hide_colors: bool = True,
) -> np.ndarray | torch.Tensor:
    """uint8 (H, W, 3): ``image`` with the pixels under ``mask`` scrambled; the others unchanged.

    image: uint8 (H, W, 3) RGB, ndarray or Tensor (the result has the same type and device).
    mask: bool (H, W). key: see :func:`key_bytes`. frame_index: int >= 0, the tweak.
    """
    return _apply_hwc(image, mask, key, frame_index, hide_colors, inverse=False)


def unscramble(
    image: np.ndarray | torch.Tensor,
    mask: np.ndarray | torch.Tensor,
    key: str | bytes,
    frame_index: int,
    hide_colors: bool = True,
) -> np.ndarray | torch.Tensor:
    """uint8 (H, W, 3): the inverse of :func:`scramble` given the same mask, key, frame index, hide_colors."""
    return _apply_hwc(image, mask, key, frame_index, hide_colors, inverse=True)


def scramble_chw(
    image: torch.Tensor,
    mask: torch.Tensor,
    key: bytes,
    frame_index: int,
    hide_colors: bool = True,
    inverse: bool = False,
) -> torch.Tensor:
    """uint8 (3, H, W) Tensor: (un)scramble the pixels of ``image`` under bool (H, W) ``mask``, on its device.

    key: the raw secret from :func:`key_bytes`. The input is not modified.
    """
    frame_index = _check_frame_index(frame_index)
    positions = torch.nonzero(mask.reshape(-1)).flatten()  # raster order
    n = int(positions.numel())
    out = image.clone(memory_format=torch.contiguous_format)
    if n == 0:
        return out
    flat = out.view(3, -1)
    permuted = positions[torch.argsort(_keystream_words(key, frame_index, n).to(image.device), stable=True)]
    offsets = _keystream_bytes(key, frame_index, n).to(image.device) if hide_colors else None
    # Scrambled value j is the pixel at permuted[j], plus offset j (uint8 arithmetic wraps mod 256).
    if inverse:
        values = flat[:, positions]
        flat[:, permuted] = values if offsets is None else values - offsets
    else:
        values = flat[:, permuted]
        flat[:, positions] = values if offsets is None else values + offsets
    return out


def _apply_hwc(
    image: np.ndarray | torch.Tensor,
    mask: np.ndarray | torch.Tensor,
    key: str | bytes,
    frame_index: int,
    hide_colors: bool,
    inverse: bool,
) -> np.ndarray | torch.Tensor:
    """Validate, convert (H, W, 3) to (3, H, W), run :func:`scramble_chw`, convert back to the input type."""
    raw = key_bytes(key)
    as_numpy = isinstance(image, np.ndarray)
    tensor = torch.from_numpy(np.ascontiguousarray(image)) if as_numpy else image
    mask_t = torch.as_tensor(np.ascontiguousarray(mask) if isinstance(mask, np.ndarray) else mask)
    mask_t = mask_t.to(tensor.device)
    if tensor.dtype != torch.uint8 or tensor.ndim != 3 or tensor.shape[2] != 3:
        raise InputError(
            f"scramble: image must be uint8 (H, W, 3) RGB, got {tensor.dtype} {tuple(tensor.shape)}; "
            "pass a decoded RGB frame"
        )
    if mask_t.dtype != torch.bool or tuple(mask_t.shape) != tuple(tensor.shape[:2]):
        raise InputError(
            f"scramble: mask must be bool {tuple(tensor.shape[:2])} like the image, got {mask_t.dtype} "
            f"{tuple(mask_t.shape)}; pass the mask stored for this frame"
        )
    out = scramble_chw(tensor.permute(2, 0, 1).contiguous(), mask_t, raw, frame_index, hide_colors, inverse)
    out = out.permute(1, 2, 0).contiguous()
    return out.numpy() if as_numpy else out


def _check_frame_index(frame_index: object) -> int:
    """``frame_index`` as an int in [0, 2**63), else an InputError."""
    if isinstance(frame_index, bool) or not isinstance(frame_index, numbers.Integral):
        raise InputError(f"scramble: frame_index={frame_index!r} is invalid; use the frame's 0-based index")
    if not 0 <= frame_index < 2**63:
        raise InputError(f"scramble: frame_index={frame_index!r} is invalid; use the frame's 0-based index")
    return int(frame_index)


def _keystream(key: bytes, frame_index: int, purpose: bytes, n_bytes: int) -> bytes:
    """``n_bytes`` of SHAKE-256 keystream for (key, frame_index, purpose)."""
    xof = hashlib.shake_256(_DOMAIN + b"\x00" + purpose + b"\x00")
    xof.update(len(key).to_bytes(8, "big") + key)
    xof.update(frame_index.to_bytes(8, "big"))
    return xof.digest(n_bytes)


def _keystream_words(key: bytes, frame_index: int, n: int) -> torch.Tensor:
    """int64 (n,) keystream words (little-endian), the sort keys of the permutation (CPU)."""
    words = np.frombuffer(_keystream(key, frame_index, b"permutation", 8 * n), dtype="<i8")
    return torch.from_numpy(words.astype(np.int64))


def _keystream_bytes(key: bytes, frame_index: int, n: int) -> torch.Tensor:
    """uint8 (3, n) keystream bytes, the colour offsets (CPU)."""
    offsets = np.frombuffer(_keystream(key, frame_index, b"colour-offsets", 3 * n), dtype=np.uint8)
    return torch.from_numpy(offsets.reshape(3, n).copy())


# -- the record of scrambled pixel sets -------------------------------------------------------------------

PIXELS_FILE = "scrambled_pixels.dets"
"""Name of the record of scrambled pixel sets in a run folder."""
_PIXELS_CONTENT = "scrambled pixel sets"
_PIXELS_NAMES = {0: "scrambled"}


class ScrambledPixelsWriter:
    """Streams the exact set of pixels scrambled in each frame of one video to ``path``.

    path: the record file (``<run folder>/scrambled_pixels.dets``); written to a partial file beside it and
        renamed onto it by :meth:`commit` only.
    nonce, key_fingerprint, tag, hide_colors: the public facts of the scrambled video (see :func:`key_tag`).
    height, width: the frame size in pixels.

    :meth:`write` takes frames in increasing order; frames never written (no region to scramble, or filled by a
    fallback instead) are recorded as empty. Format: :class:`~inpaint_anon.records.DetectionWriter` with one
    class ``"scrambled"`` and at most one region per frame, its mask the frame's scrambled pixel set; the header
    key holds the facts above.
    """

    def __init__(
        self, path: str | Path, *, nonce: str, key_fingerprint: str, tag: str, hide_colors: bool, height: int,
        width: int,
    ) -> None:
        self.height, self.width = int(height), int(width)
        header = {"content": _PIXELS_CONTENT, "scheme": SCHEME, "nonce": nonce_hex(nonce),
                  "key_fingerprint": key_fingerprint, "tag": tag, "hide_colors": bool(hide_colors),
                  "height": self.height, "width": self.width}
        self._writer = DetectionWriter(path, key=header, names=_PIXELS_NAMES)
        self.path = self._writer.path
        self._failed: BaseException | None = None

    @property
    def closed(self) -> bool:
        return self._writer.closed

    @property
    def n_frames(self) -> int:
        """Frames recorded so far (written or padded as empty)."""
        return self._writer.n_frames

    def write(self, frame_index: int, mask: torch.Tensor) -> None:
        """Record bool (H, W) ``mask``, the pixels scrambled in frame ``frame_index`` (any device)."""
        if frame_index < self.n_frames:
            raise RuntimeError(
                f"scrambled pixels of frame {frame_index} written after frame {self.n_frames - 1}; write in order"
            )
        if tuple(mask.shape) != (self.height, self.width):
            raise ValueError(f"scrambled pixel mask {tuple(mask.shape)} is not the frame size "
                             f"{(self.height, self.width)}")
        try:
            self._pad(frame_index)
            mask = mask.detach().to("cpu", torch.bool)
            if mask.any():
                self._writer.write(frame_index, Detections.from_masks(mask[None], [0], _PIXELS_NAMES))
            else:
                self._pad(frame_index + 1)
        except BaseException as error:
            self._failed = self._failed or error
            raise

    def commit(self, n_frames: int) -> None:
        """The video had ``n_frames`` frames: record the remaining ones as empty and publish the file.

        Raises (and discards the record) when a :meth:`write` failed: a record with a hole would not undo the video.
        """
        if self._failed is not None or n_frames < self.n_frames:
            self.abort()
            reason = (f"recording frame {self.n_frames} failed ({type(self._failed).__name__}: {self._failed})"
                      if self._failed is not None else f"{self.n_frames} frames were recorded but the video had "
                      f"{n_frames}")
            raise RuntimeError(f"scrambled pixel record {self.path} not written: {reason}")
        self._pad(n_frames)
        self._writer.close()

    def abort(self) -> None:
        """Discard the partial record (the run failed); idempotent."""
        self._writer.abort()

    def _pad(self, n_frames: int) -> None:
        while self.n_frames < n_frames:
            self._writer.write(self.n_frames, Detections.empty(self.height, self.width, _PIXELS_NAMES))


class ScrambledPixels:
    """A finished record written by :class:`ScrambledPixelsWriter`.

    Attributes: ``path``, ``nonce`` (hex), ``key_fingerprint``, ``tag``, ``hide_colors``, ``height``, ``width``,
    ``n_frames``. Raises InputError when the file is missing, unfinished, damaged or another kind of record.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            reader = DetectionReader(self.path)
        except CorruptRecordError as error:
            raise self._unusable(error.reason) from None
        header = reader.key
        if header.get("content") != _PIXELS_CONTENT or header.get("scheme") != SCHEME:
            raise self._unusable(f"it holds {header.get('content', 'something else')!r}, not {_PIXELS_CONTENT} "
                                 f"of scheme {SCHEME}")
        if not reader.complete or reader.n_frames is None:
            raise self._unusable("it is unfinished (the run did not succeed)")
        try:
            self.nonce = nonce_hex(header["nonce"])
            self.key_fingerprint = str(header["key_fingerprint"])
            self.tag = str(header["tag"])
            self.hide_colors = bool(header["hide_colors"])
            self.height, self.width = int(header["height"]), int(header["width"])
        except (KeyError, TypeError, ValueError) as error:
            raise self._unusable(f"its header lacks {error}") from None
        self.n_frames: int = reader.n_frames
        self._reader = reader

    def _unusable(self, reason: str) -> InputError:
        return InputError(f"scrambled pixel record {self.path} is unusable: {reason}; use the run folder's "
                          f"{PIXELS_FILE} as the scrambling run wrote it")

    def check_key(self, key: str | bytes) -> None:
        """InputError unless ``key`` is the key this video was scrambled with (checked with the keyed tag)."""
        if not hmac.compare_digest(key_tag(key, self.nonce, self.hide_colors), self.tag):
            raise InputError(
                f"wrong scramble key: its fingerprint is {key_fingerprint(key)} but {self.path.name} was scrambled "
                f"with key {self.key_fingerprint}; give that key ($INPAINT_ANON_KEY or key_file=)"
            )

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor]]:
        """(frame index, bool (H, W) mask of the scrambled pixels) for every frame, in order (CPU)."""
        try:
            for index, detections in self._reader:
                yield index, detections.masks.any(dim=0) if len(detections) else torch.zeros(
                    (self.height, self.width), dtype=torch.bool)
        except CorruptRecordError as error:
            raise self._unusable(error.reason) from None

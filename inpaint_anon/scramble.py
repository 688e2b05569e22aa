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
derives a per-video key from the secret and a public random nonce (what ``ScrambleInpainter(nonce=...)``
and the CLI use; the nonce is recorded in run.json).
"""

from __future__ import annotations

import hashlib
import numbers
import secrets

import numpy as np
import torch

from inpaint_anon.errors import ConfigError, InputError

KEY_HELP = 'make one with: python -c "import secrets; print(secrets.token_hex(32))"'
MIN_KEY_BYTES = 16
_DOMAIN = b"inpaint_anon/scramble/v1"


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


def video_key(key: str | bytes, nonce: str | bytes) -> bytes:
    """The 256-bit key that scrambles one video: BLAKE2b keyed by the secret over the video's nonce.

    nonce: public and unique per video (hex string or bytes, at least 8 bytes), e.g. :func:`new_nonce`.
    Reusing a key with different nonces gives unrelated keystreams.
    """
    raw_nonce = bytes(nonce) if isinstance(nonce, (bytes, bytearray)) else None
    if raw_nonce is None:
        try:
            raw_nonce = bytes.fromhex(str(nonce).strip())
        except ValueError:
            raise ConfigError(f"scramble nonce {nonce!r} is not hex; use e.g. {new_nonce()}") from None
    if len(raw_nonce) < 8:
        raise ConfigError(f"scramble nonce is too short ({len(raw_nonce)} bytes); use at least 8, e.g. {new_nonce()}")
    return hashlib.blake2b(raw_nonce, key=key_bytes(key)[:64], digest_size=32, person=b"ia-videokey-v1").digest()


def key_fingerprint(key: str | bytes) -> str:
    """16 hex digits identifying ``key``, safe to log (a domain-separated BLAKE2b hash of it)."""
    return hashlib.blake2b(key_bytes(key), digest_size=8, person=b"ia-keyfp-v1").hexdigest()


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

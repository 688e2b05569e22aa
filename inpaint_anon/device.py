"""Devices and dtypes: one place that turns the config's strings into torch objects."""

from __future__ import annotations

import re

import torch

from inpaint_anon.errors import ConfigError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device for ``device``: ``"auto"`` = ``cuda:0`` when torch sees a GPU, else ``cpu``;
    ``"cpu"``, ``"cuda"`` (= ``cuda:0``), ``"cuda:N"``, ``"mps"``.

    Raises ConfigError for a malformed name or a device this machine does not have.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str) or not _DEVICE_PATTERN.fullmatch(device):
        raise ConfigError(f"device={device!r} is not a device; use one of 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'")
    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device} but torch sees no CUDA GPU here; use device=cpu (or auto)")
        index, count = int(device.partition(":")[2] or 0), torch.cuda.device_count()
        if index >= count:
            raise ConfigError(f"device={device} but torch sees only {count} CUDA device(s); "
                              f"use cuda:0..cuda:{count - 1}, auto or cpu")
        return torch.device("cuda", index)
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device=mps but this torch has no MPS backend here; use device=cpu (or auto)")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``"auto"`` = float16 on CUDA, float32 elsewhere; else one of :data:`DTYPES` by name."""
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}: use 'auto', {', '.join(repr(d) for d in DTYPES)}")
    return DTYPES[dtype]

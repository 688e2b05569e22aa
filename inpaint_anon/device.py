"""Devices and dtypes: one place that turns the config's strings into torch objects."""

from __future__ import annotations

import logging
import re

import torch

from inpaint_anon.errors import ConfigError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
logger = logging.getLogger(__name__)


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


def onnx_providers(device: str, component: str) -> tuple[torch.device, list[str | tuple[str, dict[str, str]]]]:
    """The device and ONNX Runtime execution providers for ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``)
    of ``component`` (e.g. ``"the face detector"``, for messages): CUDA (that GPU) first, then CPU, when a GPU is
    asked for and this onnxruntime has the CUDA provider; ``auto`` falls back to the CPU without it (``pip install
    onnxruntime-gpu`` adds it). ConfigError when ``cuda`` is asked for and missing, or for ``mps``."""
    import onnxruntime

    resolved = resolve_device(device)
    if resolved.type == "cpu":
        return resolved, ["CPUExecutionProvider"]
    if resolved.type != "cuda":
        raise ConfigError(f"device={device}: {component} runs on ONNX Runtime; use device=cpu, cuda or auto")
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        if device == "auto":
            logger.info("onnxruntime has no CUDA execution provider: %s runs on the CPU", component)
            return torch.device("cpu"), ["CPUExecutionProvider"]
        raise ConfigError(
            f"device={device} but this onnxruntime has no CUDA execution provider; pip install onnxruntime-gpu "
            "(matching your CUDA), or use device=cpu"
        )
    return resolved, [("CUDAExecutionProvider", {"device_id": str(resolved.index or 0)}), "CPUExecutionProvider"]

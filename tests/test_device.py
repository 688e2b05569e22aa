"""Device and dtype resolution shared by every component."""

from __future__ import annotations

import pytest
import torch

from inpaint_anon.detect.yolo_seg import YoloSegDetector
from inpaint_anon.device import resolve_device, resolve_dtype
from inpaint_anon.errors import ConfigError
from inpaint_anon.inpaint.fast import BlurInpainter


def test_auto_and_cpu() -> None:
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("bad", ["gpu0", "cuda:x", "", "CPU"])
def test_malformed(bad: str) -> None:
    with pytest.raises(ConfigError, match="is not a device"):
        resolve_device(bad)


def test_cuda_requested_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match=r"no CUDA GPU.*device=cpu"):
            resolve_device(device)
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        BlurInpainter(device="cuda")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        YoloSegDetector("yolov8n-seg.yaml", device="cuda", imgsz=64)


def test_cuda_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match="only 1 CUDA device"):
        resolve_device("cuda:3")


def test_mps_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no MPS"):
        resolve_device("mps")


def test_dtypes() -> None:
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ConfigError, match="unknown dtype 'fp8'"):
        resolve_dtype("fp8", torch.device("cpu"))

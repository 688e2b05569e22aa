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


def fake_gpus(monkeypatch: pytest.MonkeyPatch, count: int, ort_providers: list[str]) -> None:
    import onnxruntime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ort_providers)


def test_onnx_providers_put_the_asked_gpu_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX Runtime detectors (faces, plates): CUDA on the GPU asked for, then CPU; auto without the CUDA
    provider falls back to the CPU, an explicit cuda is one clear error."""
    from inpaint_anon.device import onnx_providers

    fake_gpus(monkeypatch, 2, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert onnx_providers("cuda:1", "the face detector") == (
        torch.device("cuda", 1), [("CUDAExecutionProvider", {"device_id": "1"}), "CPUExecutionProvider"])
    assert onnx_providers("auto", "x")[1][0] == ("CUDAExecutionProvider", {"device_id": "0"})
    assert onnx_providers("cpu", "x") == (torch.device("cpu"), ["CPUExecutionProvider"])
    fake_gpus(monkeypatch, 1, ["CPUExecutionProvider"])
    assert onnx_providers("auto", "x") == (torch.device("cpu"), ["CPUExecutionProvider"])
    with pytest.raises(ConfigError, match="device=cuda but this onnxruntime has no CUDA execution provider; pip "
                                          "install onnxruntime-gpu"):
        onnx_providers("cuda", "the plate detector")


def test_the_face_detector_asks_onnx_runtime_for_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The providers reach the sessions (this CPU build of ONNX Runtime then warns and runs on the CPU)."""
    import warnings

    from inpaint_anon.detect.faces import CenterFaceModel

    fake_gpus(monkeypatch, 2, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Specified provider 'CUDAExecutionProvider' is not in..."
        model = CenterFaceModel(device="cuda:1")
    assert model.providers == [("CUDAExecutionProvider", {"device_id": "1"}), "CPUExecutionProvider"]
    assert model.session.get_providers()[-1] == "CPUExecutionProvider"

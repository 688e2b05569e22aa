"""Exported detector backends (inpaint_anon.detect.export): same detections as torch, exported once and cached,
INT8 with its measured agreement, one clear error per unusable setting."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evaluation.bench.backends import agreement, box_iou, match, ms_per_frame
from inpaint_anon import run as run_module
from inpaint_anon.detect import ScriptedDetector, export
from inpaint_anon.detect.multi import MultiDetector
from inpaint_anon.detect.yolo_seg import YoloSegDetector, backend_of
from inpaint_anon.errors import ConfigError, WeightsError
from inpaint_anon.types import Frame
from tests.clips import make_clip
from tests.test_cli import TINY_DETECTOR, assert_user_error, run_cli, run_in_process

RANDOM = {"classes": None, "conf": 0.0, "imgsz": 64, "max_det": 300, "device": "cpu"}  # all NMS survivors


def images() -> list[Frame]:
    """Two photos of the repository: one at the model's size, one non-square (letterboxed: dynamic shapes)."""
    data = Path(__file__).resolve().parents[1] / "data"
    return [Frame(0, None, np.asarray(Image.open(data / "astronaut.jpg").convert("RGB").resize((64, 64)))),
            Frame(1, None, np.asarray(Image.open(data / "camera.jpg").convert("RGB").resize((161, 97))))]


def save_varied_model(path: Path) -> Path:
    """yolov8n-seg.yaml with seed-0 weights, its head's output convs redrawn (weights N(0, 0.3), biases N(0, 1)),
    saved as a .pt: the plain random build scores every box alike (~1e-4 ties, arbitrary classes), which leaves
    nothing to compare between backends."""
    from ultralytics import YOLO

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = YOLO("yolov8n-seg.yaml", verbose=False)
        head = model.model.model[-1]
        with torch.no_grad():
            for branch in [*head.cv2, *head.cv3, *head.cv4]:
                branch[-1].weight.normal_(0, 0.3)
                branch[-1].bias.normal_(0, 1.0)
    model.save(path)
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh inpaint_anon cache for this module (``$INPAINT_ANON_CACHE``): its exports are this module's."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INPAINT_ANON_CACHE", str(root))
        patch.setenv("YOLO_OFFLINE", "1")
        patch.chdir(tmp_path_factory.mktemp("cwd"))  # ultralytics may write beside the cwd: not in the repo
        yield root


@pytest.fixture(scope="module")
def weights(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(save_varied_model(tmp_path_factory.mktemp("weights") / "varied-seg.pt"))


@pytest.fixture(scope="module")
def torch_detector(weights: str) -> YoloSegDetector:
    return YoloSegDetector(weights, **RANDOM)


@pytest.fixture(scope="module")
def onnx_detector(weights: str) -> YoloSegDetector:
    return YoloSegDetector(weights, **RANDOM, backend="onnxruntime")


@pytest.fixture(scope="module")
def int8_detector(weights: str) -> YoloSegDetector:
    return YoloSegDetector(weights, **RANDOM, backend="onnxruntime", precision="int8")


def test_onnxruntime_gives_the_torch_detections(torch_detector: YoloSegDetector,
                                                onnx_detector: YoloSegDetector, cache: Path) -> None:
    assert (torch_detector.backend_used, onnx_detector.backend_used) == ("torch", "onnxruntime")
    assert onnx_detector.model_path is not None and Path(onnx_detector.model_path).parent.parent == cache / "exports"
    assert onnx_detector.names == torch_detector.names and onnx_detector.task == "segment"
    for expected, found in zip(torch_detector(images()), onnx_detector(images()), strict=True):
        assert len(expected) > 0 and len(found) == len(expected)
        pairs = match(expected, found, min_iou=0.9)
        assert len(pairs) == len(expected)
        i, j = (torch.tensor(ix) for ix in zip(*pairs, strict=True))
        assert torch.allclose(expected.scores[i], found.scores[j], atol=1e-4)
        assert torch.allclose(expected.boxes_xyxy[i], found.boxes_xyxy[j], atol=0.5)
        assert torch.equal(expected.class_ids[i], found.class_ids[j])
        mismatch = (expected.masks[i] != found.masks[j]).float().mean(dim=(1, 2))
        assert float(mismatch.max()) < 0.01


def test_export_cache_is_reused(onnx_detector: YoloSegDetector, weights: str, cache: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    exports: list[object] = []
    monkeypatch.setattr(export, "_export", lambda *args: exports.append(args))
    again = YoloSegDetector(weights, **RANDOM, backend="onnxruntime")
    assert exports == [] and again.model_path == onnx_detector.model_path
    folder = Path(onnx_detector.model_path).parent
    manifest = json.loads((folder / export.MANIFEST).read_text())
    assert manifest["artefact"] == "model.onnx" and manifest["key"]["backend"] == "onnxruntime"
    assert manifest["key"]["source"] == hashlib.sha256(Path(weights).read_bytes()).hexdigest()
    assert (manifest["key"]["imgsz"], manifest["key"]["precision"], manifest["key"]["batch"]) == (64, "fp32", 4)
    assert not any(p.name.startswith(".") for p in (cache / "exports").iterdir()), "no partial left"


def test_export_key_names_every_setting() -> None:
    base = export.ExportKey(source="ab" * 32, backend="onnxruntime", precision="fp32", imgsz=64, batch=4)
    variants = [base, export.ExportKey("cd" * 32, "onnxruntime", "fp32", 64, 4),
                export.ExportKey("ab" * 32, "openvino", "fp32", 64, 4), export.ExportKey("ab" * 32, "onnxruntime",
                                                                                        "int8", 64, 4, "ef" * 32),
                export.ExportKey("ab" * 32, "onnxruntime", "fp32", 128, 4),
                export.ExportKey("ab" * 32, "onnxruntime", "fp32", 64, 1),
                export.ExportKey("ab" * 32, "onnxruntime", "fp32", 64, 4, ultralytics="0.0.1")]
    assert len({key.name() for key in variants}) == len(variants)


def test_model_digest_follows_the_weights() -> None:
    """What names a random yaml build's export: its weights, so the same seed reuses it and another does not."""
    def state(seed: int) -> str:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return export.model_digest(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)))

    assert state(0) == state(0) != state(1)


def test_int8_detections_and_agreement(torch_detector: YoloSegDetector, int8_detector: YoloSegDetector) -> None:
    assert (int8_detector.backend_used, int8_detector.precision) == ("onnxruntime", "int8")
    assert Path(int8_detector.model_path).name == "model_int8.onnx"
    frames = images()
    found = int8_detector(frames)
    for frame, det in zip(frames, found, strict=True):
        n, (height, width) = len(det), frame.rgb.shape[:2]
        assert n > 0 and det.masks.shape == (n, height, width) and det.masks.dtype == torch.bool
        assert det.boxes_xyxy.shape == (n, 4) and det.scores.shape == (n,) and det.class_ids.shape == (n,)
    measured = agreement(torch_detector(frames), found)
    assert 0.0 <= measured["recall"] <= 1.0 and 0.0 <= measured["mask_iou"] <= 1.0
    assert measured["reference"] == sum(len(d) for d in torch_detector(frames))
    assert 0 < ms_per_frame(int8_detector, frames[:1], repeats=1) < 60_000


def test_agreement_of_a_model_with_itself_is_one(torch_detector: YoloSegDetector) -> None:
    dets = torch_detector(images())
    assert agreement(dets, dets) == {"recall": 1.0, "mask_iou": 1.0, "matched": sum(map(len, dets)),
                                     "reference": sum(map(len, dets))}
    assert torch.allclose(box_iou(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 0, 3, 2]])),
                          torch.tensor([[1 / 3]]))


@pytest.mark.parametrize(("settings", "needle"), [
    ({"backend": "tflite"}, "detector.backend='tflite' is not one of"),
    ({"precision": "fp8"}, "detector.precision='fp8' is not one of"),
    ({"precision": "fp16"}, "precision=fp16 needs a CUDA GPU"),
    ({"backend": "onnxruntime", "precision": "fp16"}, "precision=fp16 needs a CUDA GPU"),
    ({"backend": "tensorrt"}, "backend=tensorrt needs a CUDA GPU and the tensorrt package"),
    ({"backend": "torch", "precision": "int8"}, "int8 is not supported with backend=torch; use backend=onnxruntime"),
])
def test_unusable_settings_are_one_config_error(settings: dict[str, str], needle: str, cache: Path) -> None:
    with pytest.raises(ConfigError) as error:
        YoloSegDetector("yolov8n-seg.yaml", **{**RANDOM, **settings})
    assert needle in str(error.value) and "\n" not in str(error.value)


def test_openvino_missing_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "_importable", lambda module: module != "openvino")
    with pytest.raises(ConfigError, match=r"backend=openvino needs the openvino package.*inpaint_anon\[openvino\]"):
        export.resolve_backend("openvino", "fp32", "cpu")


def test_auto_candidates_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    for installed, cpu, cuda in [((), ["torch", "onnxruntime"], ["torch"]),
                                 (("openvino",), ["torch", "onnxruntime", "openvino"], ["torch"]),
                                 (("openvino", "tensorrt"), ["torch", "onnxruntime", "openvino"], ["tensorrt"])]:
        monkeypatch.setattr(export, "_importable", lambda module, installed=installed: module in installed)
        assert export.auto_candidates("fp32", "cpu") == cpu and export.auto_candidates("fp32", "cuda:0") == cuda
        assert export.resolve_backend("auto", "fp32", "cpu") == "auto"  # several: measured by the detector
        assert export.resolve_backend("auto", "fp32", "cuda:0") == cuda[0]  # one: taken as it is
        assert export.resolve_backend("auto", "int8", "cpu") == "onnxruntime"


def test_auto_measures_the_candidates_once_and_runs_the_fastest(
        onnx_detector: YoloSegDetector, weights: str, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto`` times torch and onnxruntime (the export is the cached one), runs the faster, and caches the
    choice: a second detector takes it without timing; a cached choice for onnxruntime runs onnxruntime."""
    monkeypatch.setattr(export, "_importable", lambda module: module != "openvino")
    measured = YoloSegDetector(weights, **RANDOM, backend="auto")
    timings = measured.backend_ms
    assert sorted(timings) == ["onnxruntime", "torch"] and all(0 < ms < float("inf") for ms in timings.values())
    assert measured.backend_used == min(timings, key=timings.get)
    key = export.AutoKey.for_model(hashlib.sha256(Path(weights).read_bytes()).hexdigest(), "fp32", 64, 4, "cpu")
    assert key.path().parent == cache / "exports" / "auto" and export.cached_choice(key) == timings

    def no_timing(self: YoloSegDetector, imgsz: int, rounds: int = 3) -> float:
        raise AssertionError("a cached choice was measured again")

    monkeypatch.setattr(YoloSegDetector, "_time_model", no_timing)
    export.save_choice(key, {"torch": 9.0, "onnxruntime": 3.0})
    chosen = YoloSegDetector(weights, **RANDOM, backend="auto")
    assert (chosen.backend_used, chosen.model_path) == ("onnxruntime", onnx_detector.model_path)
    assert chosen.backend_ms == {"torch": 9.0, "onnxruntime": 3.0}
    built = YoloSegDetector("yolov8n-seg.yaml", **RANDOM, backend="auto")  # random weights: torch, not timed
    assert (built.backend_used, built.backend_ms) == ("torch", {})


def test_exported_file_is_not_exported_again(onnx_detector: YoloSegDetector) -> None:
    with pytest.raises(ConfigError, match="is already an exported model .onnxruntime.; use detector.backend=torch"):
        YoloSegDetector(onnx_detector.model_path, **RANDOM, backend="onnxruntime")
    as_is = YoloSegDetector(onnx_detector.model_path, **RANDOM)
    assert as_is.backend_used == "onnxruntime"
    assert [backend_of(p) for p in ("a.pt", "a.onnx", "a_openvino_model", "a.engine", "a.yaml")] == [
        "torch", "onnxruntime", "openvino", "tensorrt", "torch"]


def test_run_record_lists_the_backend_of_each_model_detector(torch_detector: YoloSegDetector) -> None:
    scripted = ScriptedDetector(lambda i: [], names=["face"])
    assert run_module._detector_backends(torch_detector) == {"detector": "torch"}
    assert run_module._detector_backends(scripted) == {}
    multi = MultiDetector({"people": torch_detector, "faces": scripted})
    assert run_module._detector_backends(multi) == {"detectors.people": "torch"}


def test_cli_bad_backend_is_one_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capfd: pytest.CaptureFixture[str]) -> None:
    make_clip(tmp_path / "clip.mp4", n_frames=2, size=(96, 64))
    proc = run_in_process("input=clip.mp4", "inpainter=blur", *TINY_DETECTOR, "detector.backend=tflite",
                          cwd=tmp_path, run_dir=tmp_path / "runs" / "r", monkeypatch=monkeypatch, capfd=capfd)
    assert_user_error(proc, "detector.backend='tflite' is not one of", "onnxruntime")


@pytest.mark.slow
def test_cli_onnxruntime_run_records_its_backend(tmp_path: Path) -> None:
    make_clip(tmp_path / "clip.mp4", n_frames=4, size=(96, 64))
    env = {"INPAINT_ANON_CACHE": str(tmp_path / "cache")}
    for run in ("first", "second"):  # the second run reuses the export
        proc = run_cli("input=clip.mp4", "output=anon.mp4", "overwrite=true", "inpainter=blur", *TINY_DETECTOR,
                       "detector.backend=onnxruntime", "video.preset=ultrafast", cwd=tmp_path,
                       run_dir=tmp_path / run, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "yolo predict" not in proc.stderr + proc.stdout, "the exporter's hints are not shown"
        record = json.loads((tmp_path / run / "run.json").read_text())
        assert record["detector_backends"] == {"detector": "onnxruntime"}
        (folder,) = (tmp_path / "cache" / "exports").iterdir()
        written = (folder / export.MANIFEST).stat().st_mtime_ns
        if run == "first":
            first_written = written
    assert written == first_written, "the second run reused the export"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                    reason="openvino is not installed (optional extra: pip install '.[openvino]')")
def test_openvino_gives_the_torch_detections(torch_detector: YoloSegDetector, weights: str) -> None:
    detector = YoloSegDetector(weights, **RANDOM, backend="openvino")
    assert detector.backend_used == "openvino" and detector.model_path.endswith("_openvino_model")
    for expected, found in zip(torch_detector(images()), detector(images()), strict=True):
        pairs = match(expected, found, min_iou=0.9)
        assert len(expected) > 0 and len(pairs) == len(expected) == len(found)
        i, j = (torch.tensor(ix) for ix in zip(*pairs, strict=True))
        assert torch.allclose(expected.scores[i], found.scores[j], atol=1e-3)
        assert float((expected.masks[i] != found.masks[j]).float().mean()) < 0.01


def test_missing_calibration_image_is_a_config_error(weights: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"calibration image .*nope.jpg not found; pass existing image files"):
        YoloSegDetector(weights, **RANDOM, backend="onnxruntime", precision="int8",
                        calibration=[str(tmp_path / "nope.jpg")])


@pytest.mark.slow
def test_backends_bench_prints_a_table_and_writes_json(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "backends.json"
    env = {**os.environ, "YOLO_OFFLINE": "1", "INPAINT_ANON_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "evaluation.bench.backends", "--imgsz", "64", "--conf", "0.0",
                           "--repeats", "1", "--device", "cpu", "--backends", "onnxruntime:fp32", "tensorrt:fp16",
                           "--out", str(out)], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| onnxruntime | fp32 | onnxruntime |" in proc.stdout
    ran, skipped = json.loads(out.read_text())["rows"]
    assert ran["frames"] == 3 and ran["ms_frame"] > 0 and 0 <= ran["recall"] <= 1 and 0 <= ran["mask_iou"] <= 1
    assert "needs a CUDA GPU" in skipped["skipped"]


def test_failed_export_is_one_weights_error_and_leaves_nothing(weights: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> str:
        raise RuntimeError("exporter broke\nsecond line")

    monkeypatch.setenv("INPAINT_ANON_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(export, "_export", fail)
    with pytest.raises(WeightsError) as error:
        YoloSegDetector(weights, **{**RANDOM, "imgsz": 96}, backend="onnxruntime")
    assert str(error.value).startswith("cannot export the detector to onnxruntime (fp32): RuntimeError: exporter broke")
    assert "use detector.backend=torch" in str(error.value) and "\n" not in str(error.value)
    assert list((tmp_path / "cache" / "exports").iterdir()) == []

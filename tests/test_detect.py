"""Detectors: the ultralytics YOLO wrapper on random-weight models built from yaml, and the scripted one.

No downloads: models come from ultralytics' yaml configs (random weights; masks appear only at conf=0)
or are exported/saved into tmp dirs. YOLO_OFFLINE stops ultralytics' network probes.
"""

from __future__ import annotations

import os

os.environ.setdefault("YOLO_OFFLINE", "1")  # before ultralytics is imported anywhere in this process

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inpaint_anon.detect import Detector, ScriptedDetector, yolo_seg
from inpaint_anon.detect.shapes import box_masks
from inpaint_anon.detect.yolo_seg import YoloSegDetector
from inpaint_anon.errors import ConfigError, InputError, WeightsError
from inpaint_anon.types import Detections, Frame

RANDOM = {"classes": None, "conf": 0.0, "imgsz": 64, "max_det": 30, "device": "cpu"}


def frames(*images: np.ndarray, start: int = 0) -> list[Frame]:
    """``images`` as consecutive Frames from index ``start`` (no timestamps)."""
    return [Frame(start + i, None, image) for i, image in enumerate(images)]


def rgb_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Random RGB uint8 (height, width, 3) with a red left half, so channel order matters."""
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image[:, : width // 2] = (255, 0, 0)
    return image


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ultralytics writes exports next to the cwd: keep the repo clean."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("YOLO_OFFLINE", "1")


def seeded_random_build(weights: str, **kwargs: object) -> YoloSegDetector:
    """A detector built from a model yaml with seeded random weights: unseeded, they sometimes score every box 0
    and find nothing, which failed CI once."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return YoloSegDetector(weights, **{**RANDOM, **kwargs})


@pytest.fixture(scope="module")
def seg_detector() -> YoloSegDetector:
    return seeded_random_build("yolov8n-seg.yaml")


@pytest.fixture(scope="module")
def seg_onnx(model_dir: Path) -> Path:
    """ONNX export (imgsz 128, with ultralytics metadata) of a random yolov8n-seg."""
    from ultralytics import YOLO

    cwd = os.getcwd()
    os.chdir(model_dir)
    # seeded like seeded_random_build
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            path = Path(YOLO("yolov8n-seg.yaml").export(format="onnx", imgsz=128, verbose=False)).resolve()
        finally:
            os.chdir(cwd)
    return path


def strip_onnx_metadata(source: Path, target: Path) -> Path:
    """Save ``source`` without its metadata_props, like a third-party export."""
    import onnx

    model = onnx.load(str(source))
    del model.metadata_props[:]
    onnx.save(model, str(target))
    return target


def assert_well_formed(det: Detections, height: int, width: int, names: dict[int, str]) -> None:
    n = len(det)
    assert det.masks.shape == (n, height, width) and det.masks.dtype == torch.bool
    assert det.device == torch.device("cpu") and det.track_ids is None
    assert det.class_ids.shape == (n,) and det.scores.shape == (n,) and det.boxes_xyxy.shape == (n, 4)
    assert det.names == names
    assert set(det.class_ids.tolist()) <= set(names)
    assert bool(((det.scores >= 0) & (det.scores <= 1)).all())
    boxes = det.boxes_xyxy
    assert bool((boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all())
    assert bool((boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all())
    for mask, (x1, y1, x2, y2) in zip(det.masks, boxes.tolist(), strict=True):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        if len(xs):  # every mask pixel lies inside its (frame-pixel) box
            assert xs.min() >= int(x1) - 1 and xs.max() < x2 + 1
            assert ys.min() >= int(y1) - 1 and ys.max() < y2 + 1


# ----------------------------------------------------------------------------- package


def test_import_detect_does_not_import_ultralytics() -> None:
    code = (
        "import sys, inpaint_anon.detect as d\n"
        "assert 'ultralytics' not in sys.modules\n"
        "assert (d.ScriptedDetector.__name__, d.Detector.__name__) == ('ScriptedDetector', 'Detector')\n"
        "print(d.YoloSegDetector.__name__, 'ultralytics' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["YoloSegDetector", "True"]


def test_unknown_attribute_of_detect_package() -> None:
    from inpaint_anon import detect

    with pytest.raises(AttributeError, match="NoSuchDetector"):
        detect.NoSuchDetector  # noqa: B018


# ----------------------------------------------------------------------------- YOLO segmentation


@pytest.mark.parametrize("height,width", [(97, 161), (161, 97), (64, 64), (33, 200)])
def test_seg_masks_at_frame_resolution(seg_detector: YoloSegDetector, height: int, width: int) -> None:
    (det,) = seg_detector(frames(rgb_image(height, width)))
    assert len(det) > 0 and bool(det.masks.any())
    assert_well_formed(det, height, width, seg_detector.names)


def test_seg_detector_attributes(seg_detector: YoloSegDetector) -> None:
    assert isinstance(seg_detector, Detector)
    assert seg_detector.task == "segment"
    assert len(seg_detector.names) == 80  # placeholder names of the yaml build -> COCO, as in yolov8n-seg.pt
    assert [seg_detector.names[i] for i in (0, 2, 79)] == ["person", "car", "toothbrush"]
    assert seg_detector.device == "cpu" and seg_detector.half is False
    assert seg_detector.class_ids is None
    assert "yolov8n-seg.yaml" in repr(seg_detector)


def test_mixed_sizes_in_one_call_and_empty_call(seg_detector: YoloSegDetector) -> None:
    sizes = [(97, 161), (50, 70), (120, 31)]
    detections = seg_detector(frames(*(rgb_image(h, w, seed=i) for i, (h, w) in enumerate(sizes))))
    assert [(d.height, d.width) for d in detections] == sizes
    for det, (h, w) in zip(detections, sizes, strict=True):
        assert_well_formed(det, h, w, seg_detector.names)
    assert seg_detector([]) == []


def test_calls_are_split_into_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    detector = YoloSegDetector("yolov8n-seg.yaml", batch_size=2, **RANDOM)
    seen: list[int] = []
    predict = detector.model.predict

    def spy(source, **kwargs):
        seen.append(len(source))
        return predict(source, **kwargs)

    monkeypatch.setattr(detector.model, "predict", spy)
    detections = detector(frames(*(rgb_image(40, 60, seed=i) for i in range(5))))
    assert seen == [2, 2, 1] and len(detections) == 5


def test_frames_reach_ultralytics_as_bgr(seg_detector: YoloSegDetector) -> None:
    image = rgb_image(97, 161)
    captured: list[np.ndarray] = []

    def capture(predictor) -> None:
        captured.extend(predictor.batch[1])

    callbacks = seg_detector.model.callbacks["on_predict_batch_start"]
    callbacks.append(capture)
    try:
        (det,) = seg_detector(frames(image))
    finally:
        callbacks.remove(capture)
    assert len(captured) == 1
    np.testing.assert_array_equal(captured[0], image[..., ::-1])

    # End to end: the same answer as ultralytics gives for a PIL (RGB) image.
    args = {"conf": 0.0, "imgsz": 64, "max_det": 30, "retina_masks": True, "verbose": False, "device": "cpu"}
    (from_pil,) = seg_detector.model.predict(Image.fromarray(image), **args)
    torch.testing.assert_close(det.scores, from_pil.boxes.conf)
    torch.testing.assert_close(det.boxes_xyxy, from_pil.boxes.xyxy)
    assert torch.equal(det.masks, from_pil.masks.data > 0.5)


def test_network_sees_rgb(seg_detector: YoloSegDetector) -> None:
    """A pure red frame reaches the network as channel 0 = 1, channels 1 and 2 = 0 (gray letterbox aside)."""
    red = np.zeros((40, 64, 3), np.uint8)
    red[..., 0] = 255
    inputs: list[torch.Tensor] = []
    network = seg_detector.model.predictor.model  # ultralytics AutoBackend, an nn.Module
    hook = network.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach().clone()))
    try:
        seg_detector(frames(red))
    finally:
        hook.remove()
    (x,) = inputs  # float (1, 3, h, w) in [0, 1]
    assert float(x[0, 0].max()) == 1.0
    assert float(x[0, 1].max()) < 0.5 and float(x[0, 2].max()) < 0.5  # only the 114/255 padding is nonzero


def test_class_filter_by_name() -> None:
    detector = YoloSegDetector("yolov8n-seg.yaml", **{**RANDOM, "classes": ["car", "person"], "max_det": 300})
    assert detector.class_ids == [0, 2]
    assert len(detector.names) == 80  # the full table, not only the kept classes
    (det,) = detector(frames(rgb_image(97, 161)))
    assert set(det.class_ids.tolist()) <= {0, 2}
    assert_well_formed(det, 97, 161, detector.names)
    assert detector._predict_args["classes"] == [0, 2]


def test_default_classes_on_a_yaml_build() -> None:
    detector = YoloSegDetector("yolov8n-seg.yaml", conf=0.0, imgsz=64, device="cpu")
    assert [detector.names[i] for i in detector.class_ids] == list(yolo_seg.DEFAULT_CLASSES)
    (det,) = detector(frames(rgb_image(97, 161)))
    assert set(det.class_names) <= set(yolo_seg.DEFAULT_CLASSES)


def test_building_a_detector_keeps_torch_thread_count() -> None:
    """ultralytics' CPU device setup set torch's threads to cores - 1 for the whole process (one thread on two
    cores), slowing every other stage; the detector restores the count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        detector = YoloSegDetector("yolov8n-seg.yaml", **RANDOM)
        detector(frames(rgb_image(64, 64)))
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)


def test_single_class_name_string() -> None:
    assert yolo_seg.class_ids_for("1", {0: "a", 1: "1"}) == [1]


def test_readable_names() -> None:
    coco = yolo_seg.readable_names({i: str(i) for i in range(80)})
    assert coco[0] == "person" and coco[7] == "truck" and len(coco) == 80
    assert yolo_seg.readable_names({i: f"class{i}" for i in range(80)}) == coco
    assert yolo_seg.readable_names({0: "0", 1: "1"}) == {0: "0", 1: "1"}  # not the COCO layout: kept
    custom = {i: f"c{i}" for i in range(80)}
    assert yolo_seg.readable_names(custom) == custom


def test_detect_only_model_gives_box_masks() -> None:
    detector = seeded_random_build("yolov8n.yaml")
    assert detector.task == "detect"
    (det,) = detector(frames(rgb_image(97, 161)))
    assert len(det) > 0
    assert_well_formed(det, 97, 161, detector.names)
    torch.testing.assert_close(det.masks, box_masks(det.boxes_xyxy, 97, 161))
    for mask in det.masks:
        ys, xs = torch.nonzero(mask, as_tuple=True)  # the whole box is filled
        assert mask.sum() == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)


def test_box_masks_round_outward_and_clip() -> None:
    masks = box_masks(torch.tensor([[1.5, 0.2, 3.1, 2.0], [-5.0, -5.0, 100.0, 100.0]]), 4, 6)
    expected = np.zeros((4, 6), dtype=bool)
    expected[0:2, 1:4] = True
    np.testing.assert_array_equal(masks[0].numpy(), expected)
    assert bool(masks[1].all())


def test_local_pt_file_by_path_and_by_name_in_weights_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seg_detector: YoloSegDetector
) -> None:
    saved = tmp_path / "store" / "my-seg.pt"
    saved.parent.mkdir()
    seg_detector.model.save(saved)
    by_path = YoloSegDetector(str(saved), **RANDOM)
    assert by_path.task == "segment" and by_path.names == seg_detector.names
    monkeypatch.setattr(yolo_seg, "weights_dir", lambda: saved.parent)
    by_name = YoloSegDetector("my-seg.pt", **RANDOM)
    (a,), (b,) = by_path(frames(rgb_image(97, 161))), by_name(frames(rgb_image(97, 161)))
    assert torch.equal(a.masks, b.masks)


def test_onnx_export_loads_offline(seg_onnx: Path) -> None:
    detector = YoloSegDetector(str(seg_onnx), **{**RANDOM, "imgsz": 128})
    assert detector.task == "segment" and len(detector.names) == 80
    for height, width in [(97, 161), (128, 128)]:
        (det,) = detector(frames(rgb_image(height, width)))
        assert len(det) > 0
        assert_well_formed(det, height, width, detector.names)


def test_onnx_without_metadata_task_from_outputs(seg_onnx: Path, tmp_path: Path) -> None:
    from ultralytics import YOLO

    plain_seg = strip_onnx_metadata(seg_onnx, tmp_path / "third_party_seg.onnx")
    assert yolo_seg.onnx_task(str(seg_onnx)) == "segment"  # from metadata
    assert yolo_seg.onnx_task(str(plain_seg)) == "segment"  # from the 4-D prototype output
    detect_export = Path(YOLO("yolov8n.yaml").export(format="onnx", imgsz=64, verbose=False))
    plain_detect = strip_onnx_metadata(detect_export, tmp_path / "third_party_detect.onnx")
    assert yolo_seg.onnx_task(str(plain_detect)) == "detect"

    detector = YoloSegDetector(str(plain_detect), **RANDOM)
    assert detector.task == "detect"
    (det,) = detector(frames(rgb_image(97, 161)))
    assert_well_formed(det, 97, 161, detector.names)
    assert torch.equal(det.masks, box_masks(det.boxes_xyxy, 97, 161))


# ----------------------------------------------------------------------------- YOLO errors


def test_missing_model_name_offline_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yolo_seg, "weights_dir", lambda: tmp_path / "weights")
    start = time.perf_counter()
    with pytest.raises(WeightsError) as error:
        YoloSegDetector("yolov8n-seg.pt", device="cpu")
    assert time.perf_counter() - start < 5
    message = str(error.value)
    assert "\n" not in message
    for part in ("yolov8n-seg.pt", "not available locally", "detector.weights=", str(tmp_path / "weights")):
        assert part in message
    assert not list(tmp_path.rglob("*.pt"))


def test_failed_download_becomes_weights_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLO_OFFLINE", "0")
    monkeypatch.setattr(yolo_seg, "weights_dir", lambda: tmp_path)
    asked: list[Path] = []

    def fail(file, **kwargs):
        asked.append(Path(file))
        raise ConnectionError("Download failure for https://github.com/... Environment may be offline.")

    monkeypatch.setattr(yolo_seg.downloads, "attempt_download_asset", fail)
    with pytest.raises(WeightsError, match=r"could not be downloaded \(offline\?.*ConnectionError") as error:
        YoloSegDetector("yolov8s-seg.pt", device="cpu")
    assert asked == [tmp_path / "yolov8s-seg.pt"]  # downloads go to the weights dir, not the cwd
    assert str(tmp_path) in str(error.value) and "\n" not in str(error.value)


def test_download_that_leaves_no_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLO_OFFLINE", "0")
    monkeypatch.setattr(yolo_seg, "weights_dir", lambda: tmp_path)
    monkeypatch.setattr(yolo_seg.downloads, "attempt_download_asset", lambda file, **kwargs: str(file))
    with pytest.raises(WeightsError, match="could not be downloaded"):
        YoloSegDetector("yolov8s-seg.pt", device="cpu")


@pytest.mark.parametrize("weights", ["nothere.pt", "/nonexistent/dir/yolov8n-seg.pt", "sub/model.onnx"])
def test_missing_file_is_not_downloaded(weights: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLO_OFFLINE", "0")
    monkeypatch.setattr(yolo_seg.downloads, "attempt_download_asset", pytest.fail)
    with pytest.raises(WeightsError, match=f"'{weights}' not found"):
        YoloSegDetector(weights, device="cpu")


@pytest.mark.parametrize("suffix", [".pt", ".onnx", ".torchscript"])
def test_corrupt_weights_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"x{suffix}"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(WeightsError) as error:
        YoloSegDetector(str(path), device="cpu")
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_unknown_model_config() -> None:
    with pytest.raises(WeightsError, match=r"'nosuch-seg\.yaml' not found"):
        YoloSegDetector("nosuch-seg.yaml", device="cpu")


def test_unsupported_task() -> None:
    with pytest.raises(WeightsError, match="'classify' model"):
        YoloSegDetector("yolov8n-cls.yaml", device="cpu")


def test_unknown_class_names_list_the_available_ones() -> None:
    with pytest.raises(ConfigError) as error:
        YoloSegDetector("yolov8n-seg.yaml", device="cpu", imgsz=64, classes=["person", "unicorn", "ghost"])
    message = str(error.value)
    assert "['unicorn', 'ghost']" in message and "\n" not in message
    assert "person, bicycle, car" in message and "cow, ..." in message and "(80 in all)" in message
    assert "elephant" not in message  # only the first 20 names are listed
    short = {0: "person", 1: "car"}
    with pytest.raises(ConfigError, match=r"\['dog'\]; this model knows: person, car; "):
        yolo_seg.class_ids_for(["person", "dog"], short)


def test_empty_class_list() -> None:
    with pytest.raises(ConfigError, match=r"detector\.classes is empty"):
        yolo_seg.class_ids_for([], {0: "person"})


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"conf": -0.1}, "conf"),
        ({"conf": 1.5}, "conf"),
        ({"conf": "high"}, "conf"),
        ({"iou": 2}, "iou"),
        ({"imgsz": 0}, "imgsz"),
        ({"imgsz": 64.5}, "imgsz"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"max_det": 0}, "max_det"),
        ({"weights": ""}, "weights"),
        ({"weights": None}, "weights"),
    ],
)
def test_bad_arguments(kwargs: dict, name: str) -> None:
    with pytest.raises(ConfigError, match=f"detector.{name}="):
        YoloSegDetector(**{"weights": "yolov8n-seg.yaml", **kwargs})


def test_half_is_ignored_on_cpu() -> None:
    detector = YoloSegDetector("yolov8n-seg.yaml", half=True, **RANDOM)
    assert detector.half is False
    precision = {k: v for k, v in detector._predict_args.items() if k in ("quantize", "half")}
    assert precision in ({"quantize": None}, {"half": False})  # ultralytics >= 8.4 calls it quantize


@pytest.mark.parametrize(
    "image", [np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), "frame.png"]
)
def test_bad_frames(seg_detector: YoloSegDetector, image: object) -> None:
    with pytest.raises(InputError, match=r"frame 7 given to the detector is .*; give RGB uint8 arrays of shape"):
        seg_detector([Frame(6, None, np.zeros((8, 8, 3), np.uint8)), Frame(7, None, image)])  # type: ignore[arg-type]


@pytest.mark.parametrize("detector_name", ["seg", "scripted"])
def test_detectors_take_frames_not_bare_images(seg_detector: YoloSegDetector, detector_name: str) -> None:
    """The old call style (bare arrays) fails at once, naming the fix, for every detector."""
    detector = seg_detector if detector_name == "seg" else ScriptedDetector(lambda i: {}, names=["person"])
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(InputError, match="item 0 given to the detector is ndarray, not a Frame; wrap images as"):
        detector([image])  # type: ignore[list-item]
    with pytest.raises(InputError, match="given one ndarray, not a sequence of frames"):
        detector(image)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="given one Frame, not a sequence of frames"):
        detector(Frame(0, None, image))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- scripted


def disk(height: int, width: int, cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def test_scripted_masks_are_keyed_by_frame_index() -> None:
    image = np.zeros((40, 60, 3), np.uint8)

    def script(index: int) -> dict:
        if index == 0:
            return {
                "person": disk(40, 60, 10, 10, 4),
                "car": [disk(40, 60, 30, 40, 5), np.zeros((40, 60), bool)],
            }
        if index == 3:
            return {"car": np.stack([disk(40, 60, 20, 20, 3), disk(40, 60, 5, 50, 2)])}
        return {}

    detector = ScriptedDetector(script, names=["person", "car"], batch_size=2)
    assert isinstance(detector, Detector)
    assert detector.names == {0: "person", 1: "car"} and detector.batch_size == 2
    first, second = detector([Frame(0, 0, image), Frame(3, 3000, image)])  # detect every third frame
    assert first.class_names == ["person", "car"]  # the empty car mask was dropped
    assert first.masks.shape == (2, 40, 60) and first.masks.dtype == torch.bool
    torch.testing.assert_close(first.boxes_xyxy[0], torch.tensor([6.0, 6.0, 15.0, 15.0]))
    torch.testing.assert_close(first.scores, torch.ones(2))
    assert second.class_names == ["car", "car"]
    (sixth,) = detector([Frame(6, 6000, image)])
    assert len(sixth) == 0 and sixth.masks.shape == (0, 40, 60)
    assert detector.calls == [0, 3, 6]
    (again,) = detector([Frame(3, 3000, image)])  # the answer depends on the index, not on the call count
    assert again.class_names == ["car", "car"] and torch.equal(again.masks, second.masks)
    assert detector.calls == [0, 3, 6, 3]
    assert detector([]) == [] and detector.calls == [0, 3, 6, 3]


def test_scripted_passes_detections_through_with_track_ids() -> None:
    names = {0: "person"}
    masks = np.stack([disk(20, 30, 5, 5, 3), disk(20, 30, 12, 20, 3)])
    given = Detections.from_masks(masks, [0, 0], names, track_ids=[7, 9])
    detector = ScriptedDetector(lambda index: given, names=names)
    (det,) = detector(frames(np.zeros((20, 30, 3), np.uint8)))
    assert det is given and det.track_ids.tolist() == [7, 9]


def test_scripted_errors() -> None:
    frame = frames(np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(ConfigError, match="'dog', which is not in names"):
        ScriptedDetector(lambda i: {"dog": disk(20, 30, 5, 5, 2)}, names=["person"])(frame)
    with pytest.raises(InputError, match=r"shape \(10, 10\) but the frame is \(20, 30\)"):
        ScriptedDetector(lambda i: {"person": np.ones((10, 10), bool)}, names=["person"])(frame)
    wrong_size = Detections.empty(10, 10, {0: "person"})
    with pytest.raises(InputError, match="are 10x10 but the frame is 20x30"):
        ScriptedDetector(lambda i: wrong_size, names=["person"])(frame)
    other_names = Detections.empty(20, 30, {0: "car"})
    with pytest.raises(ConfigError, match=r"have names \{0: 'car'\} but the detector's are \{0: 'person'\}"):
        ScriptedDetector(lambda i: other_names, names=["person"])(frame)
    with pytest.raises(InputError, match="returned NoneType"):
        ScriptedDetector(lambda i: None, names=["person"])(frame)
    with pytest.raises(ConfigError, match="duplicates"):
        ScriptedDetector(lambda i: {}, names=["person", "person"])
    for bad_names in ([], "person"):
        with pytest.raises(ConfigError, match="non-empty list of class names"):
            ScriptedDetector(lambda i: {}, names=bad_names)
    with pytest.raises(ConfigError, match="not callable"):
        ScriptedDetector({0: {}}, names=["person"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="batch_size=0"):
        ScriptedDetector(lambda i: {}, names=["person"], batch_size=0)


# ----------------------------------------------------------------------------- in the pipeline


class _RecordingDetector:
    """Records the frames it is given; finds nothing (masks at ``mask_size``, default the frame's size)."""

    names = {0: "person"}
    batch_size = 2

    def __init__(self, mask_size: tuple[int, int] | None = None) -> None:
        self.frames: list[Frame] = []
        self.mask_size = mask_size

    def __call__(self, frames: list[Frame]) -> list[Detections]:
        self.frames += frames
        return [Detections.empty(*(self.mask_size or (f.height, f.width)), self.names) for f in frames]


@pytest.mark.parametrize("stride", [1, 3])
def test_the_pipeline_gives_detectors_the_decoded_frames(tmp_path: Path, stride: int) -> None:
    from inpaint_anon.inpaint.fast import SolidInpainter
    from inpaint_anon.pipeline import AnonymizePipeline
    from inpaint_anon.track import Tracker
    from inpaint_anon.video import VideoReader
    from tests.clips import make_clip

    clip = make_clip(tmp_path / "in.mp4", n_frames=7, size=(48, 32))
    with VideoReader(clip) as reader:
        decoded = list(reader)
    detector = _RecordingDetector()
    AnonymizePipeline(detector, SolidInpainter(device="cpu"), tracker=Tracker if stride > 1 else None,
                      detect_stride=stride, progress=False)(clip, tmp_path / "out.mp4")
    expected = decoded[::stride]
    assert [f.index for f in detector.frames] == [f.index for f in expected] == list(range(0, 7, stride))
    assert [f.pts for f in detector.frames] == [f.pts for f in expected]
    assert all(np.array_equal(got.rgb, want.rgb) for got, want in zip(detector.frames, expected, strict=True))


def test_the_pipeline_refuses_masks_not_at_frame_resolution(tmp_path: Path) -> None:
    from inpaint_anon.inpaint.fast import SolidInpainter
    from inpaint_anon.pipeline import AnonymizePipeline
    from tests.clips import make_clip

    clip = make_clip(tmp_path / "in.mp4", n_frames=3, size=(48, 32))
    out = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match=r"masks of 16x24 for frame 0 of 32x48 \(HxW\); detectors give masks at"):
        AnonymizePipeline(_RecordingDetector(mask_size=(16, 24)), SolidInpainter(device="cpu"), progress=False)(
            clip, out)
    assert not out.exists()

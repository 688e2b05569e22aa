"""YOLO instance segmentation through ultralytics: RGB frames in, pixel masks at frame resolution out.

This is the only module of the package that imports ultralytics. Any ultralytics model of the
``segment`` task gives pixel masks; a ``detect`` model gives box-shaped masks (the box filled).

Weights (``weights=``) may be:

- a model name such as ``yolov8n-seg.pt``: looked up in the current directory, then in ultralytics'
  weights dir (``SETTINGS["weights_dir"]``); when absent it is downloaded once into that weights dir
  (unless ``YOLO_OFFLINE`` is set); any failure becomes a one-line :class:`WeightsError`;
- a local path to any ultralytics model: ``.pt``, an exported ``.onnx`` (task read from the export's
  metadata, or from its outputs for third-party exports: a 4-D prototype-mask output means ``segment``),
  ``.torchscript`` and the other ultralytics export formats;
- a ``.yaml`` model config (``yolov8n-seg.yaml``): builds a model with random weights (tests).

``backend`` runs a ``.pt`` or ``.yaml`` model as it is (``torch``) or through an export made and cached once
by :mod:`inpaint_anon.detect.export` (``onnxruntime``, ``openvino``, ``tensorrt``; ``auto``: the fastest
available), at ``precision`` fp32, fp16 (CUDA) or int8 (ONNX Runtime).

Such a yaml build, like a third-party ONNX export without metadata, has placeholder class names
(``"0"``/``"class0"``...); when there are 80 of them the model has the COCO layout of the released
``yolov8n-seg.pt``, so they are replaced by the COCO names (``person``, ``bicycle``, ``car``...).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import yaml
from ultralytics import YOLO
from ultralytics.cfg import DEFAULT_CFG_DICT
from ultralytics.engine.results import Results
from ultralytics.utils import ROOT, SETTINGS, downloads, env_bool

from inpaint_anon.checks import check_bool, check_number
from inpaint_anon.detect.base import check_frames
from inpaint_anon.detect.export import (
    AutoKey,
    ExportKey,
    cached_choice,
    default_calibration_images,
    exported_model,
    fastest,
    images_digest,
    model_digest,
    resolve_backend,
    save_choice,
)
from inpaint_anon.detect.shapes import box_masks
from inpaint_anon.device import resolve_device
from inpaint_anon.errors import ConfigError, WeightsError, one_line
from inpaint_anon.fingerprints import file_sha256
from inpaint_anon.types import Detections, Frame

logger = logging.getLogger(__name__)

DEFAULT_CLASSES: tuple[str, ...] = ("person", "bicycle", "car", "motorcycle", "bus", "truck")
SUPPORTED_TASKS: tuple[str, ...] = ("segment", "detect")
ASSETS_RELEASES_URL = "https://github.com/ultralytics/assets/releases"
_CONFIG_SUFFIXES = (".yaml", ".yml")
_NAMES_SHOWN = 20
_EXPORTABLE_SUFFIXES = (".pt", ".yaml", ".yml")




def _precision_args(half: bool) -> dict[str, object]:
    """The predict argument for fp16 (``quantize`` since ultralytics 8.4, ``half`` before)."""
    if "quantize" in DEFAULT_CFG_DICT:
        return {"quantize": 16 if half else None}
    return {"half": half}


def weights_dir() -> Path:
    """ultralytics' weights directory (``SETTINGS["weights_dir"]``), where bare model names are looked up."""
    return Path(SETTINGS["weights_dir"])


def backend_of(path: str) -> str:
    """The runtime ultralytics uses for a model file: onnxruntime (.onnx), openvino (``*_openvino_model``
    folder or .xml), tensorrt (.engine), torch for the rest (.pt, .yaml, .torchscript...)."""
    name = path.lower().rstrip("/")
    if name.endswith(".onnx"):
        return "onnxruntime"
    if name.endswith(("_openvino_model", ".xml")):
        return "openvino"
    if name.endswith(".engine"):
        return "tensorrt"
    return "torch"


def _is_bare_name(weights: str) -> bool:
    """True for a file name without any directory part (``yolov8n-seg.pt``)."""
    return Path(weights).name == weights


def _not_downloadable(weights: str, reason: str) -> WeightsError:
    """The one-line error for a known model name that is neither cached nor downloadable."""
    return WeightsError(
        f"detector weights '{weights}' are not available locally and could not be downloaded ({reason}); "
        f"on a connected machine download {weights} from {ASSETS_RELEASES_URL} and pass "
        f"detector.weights=/path/to/{weights}, or place it in {weights_dir()}"
    )




def locate_weights(weights: str) -> str:
    """Return a local path (or a model config name) for ``weights``, downloading a known model name if needed.

    Order: ``.yaml`` configs are passed through (ultralytics finds its own); an existing path; a bare name
    in ultralytics' weights dir; a bare ultralytics asset name (``yolov8n-seg.pt``) downloaded into that
    weights dir unless ``YOLO_OFFLINE`` is set. Raises WeightsError when none applies or the download fails.
    """
    if weights.lower().endswith(_CONFIG_SUFFIXES):
        return weights
    path = Path(weights).expanduser()
    if path.exists():
        return str(path)
    if _is_bare_name(weights) and (weights_dir() / weights).exists():
        return str(weights_dir() / weights)
    if not (_is_bare_name(weights) and weights in downloads.GITHUB_ASSETS_NAMES):
        raise WeightsError(
            f"detector weights '{weights}' not found (looked in {Path.cwd()} and {weights_dir()}); "
            "pass an existing file as detector.weights=/path/to/model.pt or a known model name such as "
            "yolov8n-seg.pt"
        )
    if env_bool("YOLO_OFFLINE"):
        raise _not_downloadable(weights, "YOLO_OFFLINE is set")
    target = weights_dir() / weights
    try:
        downloads.attempt_download_asset(target, retry=1)
    except Exception as error:  # ultralytics raises ConnectionError, OSError, ... depending on the failure
        raise _not_downloadable(weights, f"offline? {one_line(error, 120)}") from error
    if not target.exists():
        raise _not_downloadable(weights, "offline?")
    return str(target)


def onnx_task(path: str) -> str:
    """The ultralytics task of an ONNX file: its ``task`` metadata, else ``segment`` when one output is 4-D
    (the prototype masks, e.g. (1, 32, 160, 160)), else ``detect``. Raises WeightsError for a corrupt file."""
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as error:  # protobuf DecodeError, OSError, ...
        raise WeightsError(
            f"cannot read detector weights {path}: not a valid ONNX file ({one_line(error, 120)}); "
            "re-export or re-download it"
        ) from error
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    if metadata.get("task"):
        return metadata["task"]
    ranks = [len(output.type.tensor_type.shape.dim) for output in model.graph.output]
    return "segment" if 4 in ranks else "detect"


def load_yolo(weights: str) -> YOLO:
    """Load ``weights`` (see the module docstring) as an ultralytics YOLO model of a supported task.

    Raises WeightsError when the weights are missing, corrupt, or of another task (classify, pose...).
    """
    source = locate_weights(weights)
    task = onnx_task(source) if source.lower().endswith(".onnx") else None
    try:
        model = YOLO(source, task=task, verbose=False)
    except FileNotFoundError as error:
        raise WeightsError(
            f"detector weights '{weights}' not found: {one_line(error, 120)}; pass an existing model file "
            "or an ultralytics model config such as yolov8n-seg.yaml"
        ) from error
    except Exception as error:  # corrupt file: ultralytics raises TypeError, RuntimeError, UnpicklingError...
        raise WeightsError(
            f"cannot load detector weights {source} ({one_line(error, 160)}); the file is corrupt or not an "
            "ultralytics model: re-download or re-export it"
        ) from error
    if model.task not in SUPPORTED_TASKS:
        raise WeightsError(
            f"detector weights {source} are a '{model.task}' model; use a segmentation (e.g. yolov8n-seg.pt) "
            "or detection (e.g. yolov8n.pt) model"
        )
    return model


def readable_names(names: dict[int, str]) -> dict[int, str]:
    """``names`` as an int -> str table, with 80 placeholder names ("0".."79" or "class0".."class79", from
    a yaml build or a metadata-less export) replaced by the COCO names that ultralytics ships."""
    table = {int(i): str(n) for i, n in names.items()}
    placeholders = all(n in (str(i), f"class{i}") for i, n in table.items())
    coco_file = Path(ROOT) / "cfg" / "datasets" / "coco.yaml"
    if placeholders and len(table) == 80 and coco_file.exists():
        coco = yaml.safe_load(coco_file.read_text())["names"]
        return {int(i): str(n) for i, n in coco.items()}
    return table


def class_ids_for(classes: Sequence[str] | None, names: dict[int, str]) -> list[int] | None:
    """Model class ids of the class names in ``classes`` (None: all classes, returned as None).

    Raises ConfigError naming the unknown names and the available ones.
    """
    if classes is None:
        return None
    wanted = [classes] if isinstance(classes, str) else list(classes)
    if not wanted:
        raise ConfigError(
            "detector.classes is empty; list class names (e.g. [person, car]) or use null for all"
        )
    available = list(names.values())
    unknown = [name for name in wanted if name not in available]
    if unknown:
        shown = ", ".join(available[:_NAMES_SHOWN])
        more = f", ... ({len(available)} in all)" if len(available) > _NAMES_SHOWN else ""
        raise ConfigError(
            f"detector.classes has unknown class names {unknown}; this model knows: {shown}{more}; "
            "use names from that list, or null for all classes"
        )
    return sorted(i for i, name in names.items() if name in wanted)




def result_to_detections(result: Results, names: dict[int, str]) -> Detections:
    """Convert one ultralytics ``Results`` (predicted with ``retina_masks=True``) into CPU Detections."""
    height, width = result.orig_shape
    boxes = result.boxes
    if boxes is None or len(boxes) == 0:
        return Detections.empty(height, width, names)
    xyxy = boxes.xyxy.detach().cpu().float()
    if result.masks is None:
        masks = box_masks(xyxy, height, width)
    else:
        masks = result.masks.data.detach().cpu() > 0.5
        if tuple(masks.shape[1:]) != (height, width):
            raise RuntimeError(f"mask shape {tuple(masks.shape)} does not match the frame {(height, width)}")
    return Detections(
        masks=masks,
        class_ids=boxes.cls.detach().cpu().long(),
        scores=boxes.conf.detach().cpu().float(),
        boxes_xyxy=xyxy,
        names=names,
    )


class YoloSegDetector:
    """A :class:`~inpaint_anon.detect.base.Detector` backed by an ultralytics YOLO model.

    weights: model name, local model file or ``.yaml`` config (see the module docstring).
    classes: class names to keep (must be in the model's table), or None for all classes.
    conf: minimum score in [0, 1]; iou: NMS IoU threshold in [0, 1].
    imgsz: model input size in pixels (long side; ultralytics rounds it to the model stride).
    batch_size: frames per forward pass; a call with more frames is split into such batches.
    device: "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:N" or "mps".
    half: fp16 inference, honoured only on CUDA (kept for old configs; ``precision=fp16`` says it strictly).
    max_det: maximum regions per frame.
    backend: ``torch`` (the model as loaded), ``onnxruntime``, ``openvino``, ``tensorrt`` (an export of a
        ``.pt``/``.yaml`` model, made once and cached, see :mod:`inpaint_anon.detect.export`) or ``auto``
        (the fastest available on the device).
    precision: ``fp32``, ``fp16`` (CUDA only) or ``int8`` (backend onnxruntime, or auto).
    calibration: image files that calibrate int8 (default: the photos shipped in ultralytics).

    The model is loaded and run once on a blank frame here, so bad weights fail at construction.
    Attributes: ``model`` (the ultralytics YOLO), ``task`` ("segment" or "detect"), ``names`` (the model's
    full id -> name table, see :func:`readable_names`), ``class_ids`` (kept ids, or None for all), ``device``
    (the resolved torch device string), ``backend_used`` (the runtime that runs the model: torch, onnxruntime,
    openvino or tensorrt; recorded in run.json), ``precision`` and ``model_path`` (the file or folder run,
    None for a yaml build run by torch).
    """

    def __init__(
        self,
        weights: str = "yolov8n-seg.pt",
        classes: Sequence[str] | None = DEFAULT_CLASSES,
        conf: float = 0.25,
        iou: float = 0.7,
        imgsz: int = 640,
        batch_size: int = 4,
        device: str = "auto",
        half: bool = False,
        max_det: int = 100,
        backend: str = "torch",
        precision: str = "fp32",
        calibration: Sequence[str] | None = None,
    ) -> None:
        check_number("detector.conf", conf, 0.0, 1.0, integer=False)
        check_number("detector.iou", iou, 0.0, 1.0, integer=False)
        check_number("detector.imgsz", imgsz, 1, None, integer=True)
        check_number("detector.batch_size", batch_size, 1, None, integer=True)
        check_number("detector.max_det", max_det, 1, None, integer=True)
        if not isinstance(weights, (str, os.PathLike)) or not str(weights):
            raise ConfigError(
                f"detector.weights={weights!r} is not a model; use e.g. yolov8n-seg.pt or a path"
            )
        self.weights = str(weights)
        self.device = str(resolve_device(device))
        cuda = self.device.startswith("cuda")
        if check_bool("detector.half", half) and cuda and precision == "fp32":
            precision = "fp16"
        backend = resolve_backend(str(backend), str(precision), self.device)
        self.precision: str = str(precision)
        self.half = self.precision == "fp16"
        self.batch_size = batch_size
        self.model = load_yolo(self.weights)
        self.task: str = self.model.task
        self.model_path: str | None = None if self.weights.lower().endswith(_CONFIG_SUFFIXES) else locate_weights(
            self.weights)
        self.backend_ms: dict[str, float] = {}  # auto: the measured ms per frame of each candidate
        if backend == "auto":
            backend = self._measured_backend(imgsz, calibration)
        if backend != "torch":
            self._load_export(backend, imgsz, calibration)
        self.backend_used: str = backend_of(self.model_path or self.weights)
        self._predict_args: dict[str, object] = dict(
            conf=float(conf),
            iou=float(iou),
            imgsz=imgsz,
            device=self.device,
            max_det=max_det,
            **_precision_args(self.half and self.backend_used == "torch"),
            retina_masks=True,
            verbose=False,
        )
        self._warm_up()
        self.names: dict[int, str] = readable_names(self.model.names)
        self.class_ids = class_ids_for(classes, self.names)
        self._predict_args["classes"] = self.class_ids

    def _load_export(self, backend: str, imgsz: int, calibration: Sequence[str] | None) -> None:
        """Replace ``self.model`` by its ``backend`` export (exported now or found in the export cache).

        Only ``.pt`` files and ``.yaml`` builds are exported; an already exported file raises ConfigError.
        """
        if self.model_path is not None and not self.model_path.lower().endswith(_EXPORTABLE_SUFFIXES):
            raise ConfigError(
                f"detector.backend={backend} exports .pt or .yaml models, but {self.weights} is already an "
                f"exported model ({backend_of(self.model_path)}); use detector.backend=torch to run it as it is"
            )
        images = [Path(p) for p in calibration] if calibration else default_calibration_images()
        source = model_digest(self.model.model) if self.model_path is None else file_sha256(self.model_path)
        key = ExportKey(
            source=source, backend=backend, precision=self.precision, imgsz=imgsz, batch=self.batch_size,
            calibration=images_digest(images) if self.precision == "int8" else "",
        )
        threads = torch.get_num_threads()
        try:
            path = exported_model(self.model, key, self.device, images)
        finally:
            torch.set_num_threads(threads)
        self.model_path = str(path)
        self.model = YOLO(str(path), task=self.task, verbose=False)

    def _measured_backend(self, imgsz: int, calibration: Sequence[str] | None) -> str:
        """``auto``: the fastest candidate backend, timed here (or taken from the cache of an earlier choice).

        1. a yaml build (random weights, a test model) or an already exported file: run as it is (torch);
        2. a cached choice for this model, settings and machine (:class:`~inpaint_anon.detect.export.AutoKey`);
        3. else each candidate is loaded (exported once, cached), warmed up and timed on ``ROUNDS`` noise frames of
           ``imgsz``; the timings are cached and logged, and the fastest is returned.
        """
        # 1. Nothing to choose
        if self.model_path is None or not self.model_path.lower().endswith(_EXPORTABLE_SUFFIXES):
            return "torch"
        # 2. Chosen before
        key = AutoKey.for_model(file_sha256(self.model_path), self.precision, imgsz, self.batch_size, self.device)
        timings = cached_choice(key)
        # 3. Measured now
        if timings is None:
            original, original_path, timings = self.model, self.model_path, {}
            for candidate in key.candidates:
                if candidate != "torch":
                    self._load_export(candidate, imgsz, calibration)
                timings[candidate] = round(self._time_model(imgsz), 2)
                self.model, self.model_path = original, original_path
            save_choice(key, timings)
        chosen = fastest(timings)
        self.backend_ms = timings
        logger.info("detector.backend=auto: %s (ms per frame at imgsz %d: %s)", chosen, imgsz,
                    ", ".join(f"{name} {ms:g}" for name, ms in timings.items()))
        return chosen

    def _time_model(self, imgsz: int, rounds: int = 3) -> float:
        """Median ms per frame of ``self.model`` on a noise frame of ``imgsz`` (after one warm-up run)."""
        frame = np.random.default_rng(0).integers(0, 256, (imgsz, imgsz, 3), dtype=np.uint8)
        args = dict(imgsz=imgsz, device=self.device, verbose=False, retina_masks=True)
        threads = torch.get_num_threads()
        try:
            self.model.predict([frame], **args)
            times = []
            for _ in range(rounds):
                start = time.perf_counter()
                self.model.predict([frame], **args)
                times.append((time.perf_counter() - start) * 1000.0)
        except Exception as error:  # an export that does not run here is not a candidate worth an error
            logger.warning("detector.backend=auto: %s did not run (%s); not chosen", backend_of(
                self.model_path or self.weights), one_line(error, 160))
            return float("inf")
        finally:
            torch.set_num_threads(threads)
        return float(np.median(times))

    def _warm_up(self) -> None:
        """Set the predictor up (load exported weights on the device) with one blank frame.

        ultralytics' device setup sets torch's CPU thread count to (cores - 1) for the whole process, which
        would slow every other torch stage (one thread on two cores); the count is restored afterwards.
        """
        threads = torch.get_num_threads()
        try:
            self.model.predict([np.zeros((32, 32, 3), dtype=np.uint8)], **self._predict_args)
        except Exception as error:  # exported files are only opened here (onnxruntime, torchscript...)
            raise WeightsError(
                f"cannot run detector weights {self.model_path or self.weights} on {self.device} "
                f"({one_line(error, 160)}); the file is corrupt or not an ultralytics model: re-download or "
                "re-export it (an export in the cache: delete its folder)"
            ) from error
        finally:
            torch.set_num_threads(threads)

    def __call__(self, frames: Sequence[Frame]) -> list[Detections]:
        """Detect regions in frames (RGB uint8 (H, W, 3)); sizes may differ.

        Returns one CPU Detections per frame: masks bool (N, H, W) at that frame's size, class_ids of the
        model, scores in [0, 1], boxes xyxy in frame pixels. Frames run in batches of ``batch_size``.
        """
        frames = check_frames(frames)
        detections: list[Detections] = []
        for start in range(0, len(frames), self.batch_size):
            batch = frames[start : start + self.batch_size]
            # ultralytics reads numpy arrays as BGR (OpenCV order): flip the channels of our RGB frames.
            bgr = [np.ascontiguousarray(frame.rgb[..., ::-1]) for frame in batch]
            results = self.model.predict(bgr, stream=False, **self._predict_args)
            detections.extend(result_to_detections(result, self.names) for result in results)
        return detections

    def __repr__(self) -> str:
        return (
            f"YoloSegDetector(weights={self.weights!r}, task={self.task!r}, device={self.device!r}, "
            f"backend={self.backend_used!r}, precision={self.precision!r}, "
            f"classes={None if self.class_ids is None else [self.names[i] for i in self.class_ids]})"
        )

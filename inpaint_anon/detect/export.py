"""Exported detector backends: the ultralytics model exported once per setting, cached, and loaded back.

A :class:`~inpaint_anon.detect.yolo_seg.YoloSegDetector` with ``backend`` other than ``torch`` runs an export
of its model made by ultralytics' own exporter (``YOLO.export``) and loaded back through ``YOLO(path)``:

============  ==============  =======================  ===========================================
backend       export format   precisions               needs
============  ==============  =======================  ===========================================
torch         (none)          fp32, fp16 (CUDA)        nothing
onnxruntime   ``onnx``        fp32, fp16 (CUDA), int8  onnxruntime (a dependency)
openvino      ``openvino``    fp32, fp16 (CUDA)        the ``openvino`` extra (``pip install .[openvino]``)
tensorrt      ``engine``      fp32, fp16               a CUDA GPU and the ``tensorrt`` package
============  ==============  =======================  ===========================================

``auto`` picks the fastest one available **by measuring it** on this machine: every candidate (on CUDA tensorrt
when importable, else torch alone; on CPU torch, onnxruntime and openvino when importable; int8: onnxruntime) is
exported (cached), warmed up and timed on a frame of the model's input size, and the fastest one runs. The choice
and the timings are cached as an :class:`AutoKey` file beside the exports, so a later run on the same machine
(cores, threads, library versions), model and settings takes it at once. A model built from a ``.yaml`` has
random weights (tests): ``auto`` runs it with torch, without exporting.

INT8 is ONNX Runtime static quantization (``onnxruntime.quantization.quantize_static``, QDQ), calibrated on
RGB images (by default the two photos that ship inside ultralytics, so it works offline), with only the
weighted ops (Conv, Gemm, MatMul) quantized, as ultralytics does it: one INT8 scale over the head's box
pixels and class scores would round every score to 0. It is chosen over ultralytics' ``int8=True`` export
(OpenVINO/NNCF or TensorRT), which needs a calibration *dataset* yaml (``data=``, coco8 by default, downloaded).

Each export lives in its own folder under :func:`exports_dir`, named by an :class:`ExportKey` (the weights'
SHA-256, imgsz, precision, backend, max batch, ultralytics version): exported in a partial folder (ultralytics
writes next to the weights it exports, so a copy of the model is saved inside that folder first), renamed into
place when complete, and reused by every later run with the same key.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import ultralytics
from ultralytics import YOLO
from ultralytics.cfg import DEFAULT_CFG_DICT
from ultralytics.utils import LOGGER, ROOT

from inpaint_anon.atomic import AtomicPath, remove_stale_partials, write_atomic
from inpaint_anon.errors import ConfigError, WeightsError, one_line
from inpaint_anon.fingerprints import file_sha256
from inpaint_anon.tokenizer import default_cache_dir

BACKENDS: tuple[str, ...] = ("auto", "torch", "onnxruntime", "openvino", "tensorrt")
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
EXPORT_FORMATS: dict[str, str] = {"onnxruntime": "onnx", "openvino": "openvino", "tensorrt": "engine"}
MANIFEST = "export.json"
_STEM = "model"  # the saved copy is model.pt: ultralytics names the export model.onnx, model_openvino_model, ...
_INT8_BACKENDS = ("onnxruntime",)

logger = logging.getLogger(__name__)


def default_calibration_images() -> list[Path]:
    """The photos shipped in ultralytics' package (``assets/*.jpg``): calibration data that needs no network."""
    return sorted((Path(ROOT) / "assets").glob("*.jpg"))


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def auto_candidates(precision: str, device: str) -> list[str]:
    """The backends ``auto`` chooses among on ``device`` at ``precision``, in order of preference on a tie."""
    if precision == "int8":
        return ["onnxruntime"]
    if device.startswith("cuda"):
        return ["tensorrt"] if _importable("tensorrt") else ["torch"]
    return ["torch", "onnxruntime", *(["openvino"] if _importable("openvino") else [])]


@dataclass(frozen=True)
class AutoKey:
    """What ``auto``'s measured choice depends on; :meth:`path` is where it is cached.

    source: SHA-256 hex of the weights file. precision, imgsz, batch: as in :class:`ExportKey`. device: the torch
    device string. cpus / threads: the machine's cores and torch's intra-op threads. candidates: the backends
    timed. versions: of torch, ultralytics, onnxruntime and openvino (absent ones: "").
    """

    source: str
    precision: str
    imgsz: int
    batch: int
    device: str
    cpus: int
    threads: int
    candidates: tuple[str, ...]
    versions: tuple[str, ...]

    @classmethod
    def for_model(cls, source: str, precision: str, imgsz: int, batch: int, device: str) -> AutoKey:
        versions = tuple(_version(name) for name in ("torch", "ultralytics", "onnxruntime", "openvino"))
        return cls(source=source, precision=precision, imgsz=imgsz, batch=batch, device=device,
                   cpus=os.cpu_count() or 1, threads=torch.get_num_threads(),
                   candidates=tuple(auto_candidates(precision, device)), versions=versions)

    def path(self) -> Path:
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:24]
        return exports_dir() / "auto" / f"{self.source[:16]}-{digest}.json"


def _version(module: str) -> str:
    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        return ""


def cached_choice(key: AutoKey) -> dict[str, float] | None:
    """The timings (backend -> ms per frame) of an earlier measured choice for ``key``, or None."""
    try:
        record = json.loads(key.path().read_text())
    except (OSError, ValueError):
        return None
    timings = record.get("ms_per_frame") if record.get("key") == json.loads(json.dumps(asdict(key))) else None
    return {str(k): float(v) for k, v in timings.items()} if isinstance(timings, dict) and timings else None


def save_choice(key: AutoKey, timings: dict[str, float]) -> None:
    """Cache ``auto``'s measured timings for ``key`` (atomic write)."""
    key.path().parent.mkdir(parents=True, exist_ok=True)
    write_atomic(key.path(), json.dumps({"key": asdict(key), "ms_per_frame": timings}, indent=2) + "\n")


def fastest(timings: dict[str, float]) -> str:
    """The backend with the lowest time (the first listed on a tie)."""
    return min(timings, key=lambda backend: timings[backend])


def resolve_backend(backend: str, precision: str, device: str) -> str:
    """Check ``backend`` and ``precision`` for ``device`` (a torch device string) and return the backend to run.

    ``auto`` stays ``auto`` when several backends are candidates (the detector measures them, see the module
    docstring), else becomes the only one. Raises ConfigError for an
    unknown name, fp16 off CUDA, tensorrt off CUDA or not installed, openvino not installed, and int8 on a
    backend without it.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"detector.backend={backend!r} is not one of {', '.join(BACKENDS)}; pick one of those")
    if precision not in PRECISIONS:
        raise ConfigError(
            f"detector.precision={precision!r} is not one of {', '.join(PRECISIONS)}; pick one of those"
        )
    cuda = device.startswith("cuda")
    if precision == "fp16" and not cuda:
        raise ConfigError(
            f"detector.precision=fp16 needs a CUDA GPU (device is {device}); use precision=fp32, or int8 with "
            "backend=onnxruntime on CPU"
        )
    if backend == "auto":
        candidates = auto_candidates(precision, device)
        return candidates[0] if len(candidates) == 1 else "auto"  # "auto": measured by the detector
    if backend == "tensorrt" and not (cuda and _importable("tensorrt")):
        raise ConfigError(
            f"detector.backend=tensorrt needs a CUDA GPU and the tensorrt package (device is {device}); "
            "use onnxruntime or openvino"
        )
    if backend == "openvino" and not _importable("openvino"):
        raise ConfigError(
            "detector.backend=openvino needs the openvino package; install it (pip install 'inpaint_anon[openvino]') "
            "or use backend=onnxruntime"
        )
    if precision == "int8" and backend not in _INT8_BACKENDS:
        raise ConfigError(
            f"detector.precision=int8 is not supported with backend={backend}; use backend=onnxruntime "
            "(ONNX Runtime static quantization) or precision=fp32/fp16"
        )
    return backend


def model_digest(model: torch.nn.Module) -> str:
    """SHA-256 (hex) of a module's state (parameter and buffer names, dtypes, shapes and values).

    Names a model built from a yaml with random weights: the same yaml and the same torch seed give the same
    state, hence the same digest (the yaml name alone would reuse another seed's export).
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def images_digest(paths: Sequence[Path]) -> str:
    """SHA-256 (hex) over the bytes of calibration images, in order. Raises ConfigError naming a missing one."""
    digest = hashlib.sha256()
    for path in paths:
        if not Path(path).is_file():
            raise ConfigError(f"calibration image {path} not found; pass existing image files in detector.calibration")
        digest.update(bytes.fromhex(file_sha256(path)))
    return digest.hexdigest()


@dataclass(frozen=True)
class ExportKey:
    """What an export depends on; its :meth:`name` names the cache folder.

    source: SHA-256 hex of the weights file (or of a random build's state, :func:`model_digest`).
    backend: onnxruntime | openvino | tensorrt. precision: fp32 | fp16 | int8.
    imgsz: model input size in pixels. batch: largest batch the export takes (dynamic shapes up to it).
    calibration: SHA-256 hex of the calibration images (int8 only, else "").
    ultralytics: the exporter's version.
    """

    source: str
    backend: str
    precision: str
    imgsz: int
    batch: int
    calibration: str = ""
    ultralytics: str = ultralytics.__version__

    def name(self) -> str:
        calibration = f"-cal{self.calibration[:8]}" if self.calibration else ""
        return (f"{self.source[:16]}-{self.backend}-{self.precision}-{self.imgsz}px-b{self.batch}{calibration}"
                f"-u{self.ultralytics}")


def exports_dir() -> Path:
    """Where exports are cached: ``<inpaint_anon cache>/exports`` (see ``tokenizer.default_cache_dir``)."""
    return default_cache_dir() / "exports"


def cached_export(key: ExportKey) -> Path | None:
    """The artefact (file or folder) of a finished export for ``key``, or None."""
    folder = exports_dir() / key.name()
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    artefact = folder / str(manifest.get("artefact", ""))
    return artefact if manifest.get("key") == asdict(key) and artefact.exists() else None


def exported_model(model: YOLO, key: ExportKey, device: str, calibration: Sequence[Path] = ()) -> Path:
    """Path of the export of ``model`` for ``key``: from the cache, else exported now and cached.

    1. a finished export for ``key`` is returned as it is;
    2. else the model is saved into a fresh partial folder and exported there by ``YOLO.export`` (on
       ``device``; ``dynamic=True`` with max batch ``key.batch``), then for int8 quantized with ONNX Runtime
       on ``calibration`` images;
    3. the manifest is written and the folder renamed into place.

    Raises WeightsError when the export fails (one line, with the exporter's reason).
    """
    found = cached_export(key)
    if found is not None:
        return found
    root = exports_dir()
    target = root / key.name()
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(root)
    with AtomicPath(target, folder=True) as out:
        scratch = out.temp / "work"
        scratch.mkdir()
        model.save(scratch / f"{_STEM}.pt")
        logger.info("exporting the detector to %s (%s), once: cached in %s", key.backend, key.precision, target)
        level = LOGGER.level
        LOGGER.setLevel(logging.WARNING)  # the exporter's progress lines and its "yolo predict ..." hints
        try:
            artefact = Path(_export(scratch / f"{_STEM}.pt", key, device))
            if key.precision == "int8":
                artefact = quantize_int8(artefact, artefact.with_name(f"{_STEM}_int8.onnx"), calibration, key.imgsz)
        except ConfigError:
            raise
        except Exception as error:  # the exporters raise anything (RuntimeError, ImportError, onnx errors...)
            raise WeightsError(
                f"cannot export the detector to {key.backend} ({key.precision}): {one_line(error, 160)}; "
                "use detector.backend=torch"
            ) from error
        finally:
            LOGGER.setLevel(level)
        final = out.temp / artefact.name
        shutil.move(str(artefact), final)
        shutil.rmtree(scratch)
        (out.temp / MANIFEST).write_text(json.dumps({"key": asdict(key), "artefact": final.name}, indent=2) + "\n")
        if cached_export(key) is not None:  # another process finished the same export meanwhile: keep its copy
            out.abort()
    found = cached_export(key)
    if found is None:
        raise WeightsError(f"export folder {target} is incomplete after exporting; delete it and run again")
    return found


def _export(weights: Path, key: ExportKey, device: str) -> str:
    """Run ultralytics' exporter on ``weights`` (a .pt); returns the artefact path it wrote beside them."""
    half = key.precision == "fp16"
    precision = {"quantize": 16 if half else None} if "quantize" in DEFAULT_CFG_DICT else {"half": half}
    return str(
        YOLO(str(weights), verbose=False).export(
            format=EXPORT_FORMATS[key.backend], imgsz=key.imgsz, dynamic=True, batch=key.batch, device=device,
            verbose=False, **precision,
        )
    )


def letterboxed(image_rgb: np.ndarray, imgsz: int) -> np.ndarray:
    """An RGB uint8 (H, W, 3) image as the network's float32 (1, 3, imgsz, imgsz) input in [0, 1]: resized to
    fit, padded with gray 114 (ultralytics' letterbox)."""
    import cv2

    height, width = image_rgb.shape[:2]
    scale = min(imgsz / height, imgsz / width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    resized = cv2.resize(image_rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((imgsz, imgsz, 3), 114, dtype=np.uint8)
    top, left = (imgsz - new_h) // 2, (imgsz - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = resized
    return (canvas.transpose(2, 0, 1)[None].astype(np.float32) / 255.0).copy()


def quantize_int8(source: Path, target: Path, images: Sequence[Path], imgsz: int) -> Path:
    """Quantize an ultralytics ONNX export to INT8 (static QDQ, weighted ops only), calibrated on ``images``.

    The export's metadata (task, names, imgsz...) is copied over, so ``YOLO(target)`` reads it as before.
    Raises ConfigError when there is no calibration image or one cannot be read.
    """
    import cv2
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    if not images:
        raise ConfigError("detector.precision=int8 needs calibration images; pass detector.calibration=[a.jpg, ...]")
    inputs = []
    for path in images:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ConfigError(f"calibration image {path} cannot be read; pass readable images in detector.calibration")
        inputs.append(letterboxed(bgr[..., ::-1], imgsz))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.pending = iter(inputs)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.pending, None)
            return None if batch is None else {"images": batch}

    graph = onnx.load(str(source)).graph
    exclude = [node.name for node in graph.node if node.op_type not in {"Conv", "Gemm", "MatMul"}]
    quantize_static(str(source), str(target), Reader(), nodes_to_exclude=exclude)
    metadata = {prop.key: prop.value for prop in onnx.load(str(source), load_external_data=False).metadata_props}
    quantized = onnx.load(str(target))
    del quantized.metadata_props[:]
    for name, value in metadata.items():
        quantized.metadata_props.add(key=name, value=value)
    onnx.save(quantized, str(target))
    source.unlink()
    return target

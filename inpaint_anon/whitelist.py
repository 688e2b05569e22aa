"""Authorised faces: reference photos of whitelisted people, and per-track matching that keeps their faces visible.

Components, in the style of a diffusers pipeline (models are passed in):

- a :class:`FaceEmbedder` turns aligned 112 x 112 RGB face crops into unit vectors: :class:`OnnxFaceEmbedder` runs
  OpenCV Zoo's SFace (``face_recognition_sface_2021dec.onnx``, Apache-2.0) or any ONNX model with the same input
  and output on ONNX Runtime (:func:`load_embedder` finds the file);
- :class:`Whitelist` holds the reference embeddings of each person (``folder/<person>/*.jpg|png``, one face per
  photo, found by a face detector and aligned by its 5 landmarks), cached by content hash;
- :class:`TrackMatcher` (one per video, :meth:`Whitelist.tracker`) decides per face *track*, over several frames,
  which faces to leave visible.

Privacy fails closed: a face is shown only while its track is confirmed as one person (mean cosine similarity
over the last ``min_frames`` judged frames >= ``threshold`` and more than ``margin`` above the second-best
person); every frame before that, every frame too small or too blurred to judge, and every frame in which the
whitelist path raised is anonymized. Weights are never downloaded: a missing file is one WeightsError saying
where to put it.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np
import torch

from inpaint_anon.atomic import write_atomic
from inpaint_anon.checks import check_number
from inpaint_anon.detect.base import Detector
from inpaint_anon.detect.faces import FACE_CLASS, face_weights_dir, locate_weights_file
from inpaint_anon.device import onnx_providers
from inpaint_anon.errors import ConfigError, InputError, WeightsError, one_line
from inpaint_anon.tokenizer import default_cache_dir
from inpaint_anon.types import Detections, Frame

logger = logging.getLogger(__name__)

SFACE_FILE = "face_recognition_sface_2021dec.onnx"
# sha256 of opencv_zoo's file, as pinned by the alchemyface package (which downloads it; no wheel ships it)
SFACE_SHA256 = "0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79"
SFACE_URL = "https://github.com/opencv/opencv_zoo/tree/main/models/face_recognition_sface"
SFACE_THRESHOLD = 0.363  # opencv_zoo sface.py: same person when cosine >= 0.363
CROP_SIZE = 112
# where the 5 landmarks (image-left eye, image-right eye, nose, image-left and image-right mouth corner) land in
# the aligned 112 x 112 crop: the ArcFace template that OpenCV's FaceRecognizerSF.alignCrop uses
ALIGN_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


@runtime_checkable
class FaceEmbedder(Protocol):
    """A face-recognition model. name: what it is (for run.json); sha256: hex digest of its weights (keys the
    embedding cache)."""

    name: str
    sha256: str

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """float32 (N, D), each row L2-normalised, of N aligned RGB uint8 (112, 112, 3) face crops."""
        ...


# --- the model ---------------------------------------------------------------------------------------------


def locate_sface(weights: str | Path | None) -> Path:
    """The embedder's ONNX file: ``weights`` (default :data:`SFACE_FILE`) as an existing path, else a bare file
    name in the current folder or in :func:`~inpaint_anon.detect.faces.face_weights_dir`
    (:func:`~inpaint_anon.detect.faces.locate_weights_file`: a WeightsError saying where to put it; nothing is
    downloaded)."""
    return locate_weights_file(SFACE_FILE if weights is None else str(weights), (
        f"face recognition weights; nothing is downloaded: on a connected machine download {SFACE_FILE} (Apache-2.0) "
        f"from {SFACE_URL} and place it in {face_weights_dir()}, or pass whitelist_weights=/path/to/{SFACE_FILE}"))


class OnnxFaceEmbedder:
    """A :class:`FaceEmbedder` on ONNX Runtime: SFace, or any ONNX model with one (B, 3, 112, 112) input (RGB
    float32 0..255, no mean, as ``cv2.FaceRecognizerSF.feature`` feeds SFace) and one (B, D) output.

    path: the ONNX file; sha256: expected hex digest (None: not checked); device: ``auto``, ``cpu``, ``cuda[:N]``.
    The file is checked, loaded and run once on a blank crop here, so bad weights fail at construction with one
    WeightsError. A model with a fixed batch of 1 (SFace's export) is run one crop at a time.
    """

    def __init__(self, path: str | Path, sha256: str | None = None, device: str = "auto") -> None:
        import onnxruntime

        self.path = Path(path)
        fix = f"download {SFACE_FILE} again from {SFACE_URL}, or pass another file with whitelist_weights="
        try:
            data = self.path.read_bytes()
        except OSError as error:
            raise WeightsError(
                f"cannot read face recognition weights {self.path} ({one_line(error)}); {fix}"
            ) from error
        self.sha256 = hashlib.sha256(data).hexdigest()
        if sha256 is not None and self.sha256 != sha256.lower():
            raise WeightsError(
                f"face recognition weights {self.path} have sha256 {self.sha256[:16]}..., expected {sha256[:16]}...: "
                f"the file is damaged or another model; {fix}"
            )
        self.name = self.path.stem
        _, providers = onnx_providers(device, "the face recognizer")
        try:
            options = onnxruntime.SessionOptions()
            options.log_severity_level = 3
            self.session = onnxruntime.InferenceSession(data, sess_options=options, providers=providers)
        except Exception as error:  # onnxruntime's InvalidProtobuf / Fail...
            raise WeightsError(f"Corrupt or wrong-format ONNX file {self.path} ({one_line(error)}); {fix}") from error
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = list(inputs[0].shape) if len(inputs) == 1 else []
        if len(inputs) != 1 or len(outputs) < 1 or len(shape) != 4 or shape[1:] != [3, CROP_SIZE, CROP_SIZE]:
            raise WeightsError(
                f"ONNX file {self.path} is not a face recognizer: input(s) {[(i.name, i.shape) for i in inputs]}, "
                f"expected one (B, 3, {CROP_SIZE}, {CROP_SIZE}) input; {fix}"
            )
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        try:
            self.dim = int(self._run(np.zeros((1, 3, CROP_SIZE, CROP_SIZE), np.float32)).shape[1])
        except Exception as error:
            raise WeightsError(f"ONNX Runtime cannot run {self.path} ({one_line(error)}); {fix}") from error

    def _run(self, blob: np.ndarray) -> np.ndarray:
        size = self.fixed_batch or len(blob)
        parts = [self.session.run([self.output_name], {self.input_name: blob[i : i + size]})[0]
                 for i in range(0, len(blob), size)]
        return np.concatenate(parts).reshape(len(blob), -1).astype(np.float32)

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """See :meth:`FaceEmbedder.embed`. RuntimeError for a crop of the wrong shape or a zero / non-finite
        output (the whitelist then anonymizes)."""
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        for crop in crops:
            if crop.shape != (CROP_SIZE, CROP_SIZE, 3):
                raise RuntimeError(f"face crop has shape {crop.shape}, expected ({CROP_SIZE}, {CROP_SIZE}, 3)")
        blob = np.ascontiguousarray(np.stack(crops).transpose(0, 3, 1, 2), dtype=np.float32)
        vectors = self._run(blob)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if not (np.isfinite(vectors).all() and (norms > 0).all()):
            raise RuntimeError(f"face recognizer {self.name} returned a zero or non-finite embedding")
        return vectors / norms

    def __repr__(self) -> str:
        return f"OnnxFaceEmbedder(path={str(self.path)!r})"


def load_embedder(weights: str | Path | None = None, device: str = "auto") -> OnnxFaceEmbedder:
    """SFace (or the ONNX file ``weights``) on ONNX Runtime. The default file is checked against
    :data:`SFACE_SHA256`; a missing file is one WeightsError saying where to get it (see :func:`locate_sface`)."""
    path = locate_sface(weights)
    expected = SFACE_SHA256 if path.name == SFACE_FILE else None
    return OnnxFaceEmbedder(path, sha256=expected, device=device)


# --- crops ----------------------------------------------------------------------------------------------


def align_face(rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """uint8 (112, 112, 3) RGB crop of ``rgb`` (H, W, 3) with the 5 landmarks (float (5, 2) pixel (x, y), order of
    :attr:`~inpaint_anon.types.Detections.landmarks`) moved onto :data:`ALIGN_TEMPLATE` by a similarity transform
    (rotation, uniform scale, shift), as ``cv2.FaceRecognizerSF.alignCrop``. RuntimeError when none fits."""
    points = np.asarray(landmarks, np.float32).reshape(5, 2)
    matrix, _ = cv2.estimateAffinePartial2D(points, ALIGN_TEMPLATE, method=cv2.LMEDS)
    if matrix is None:
        raise RuntimeError("no similarity transform maps the face's landmarks onto the template")
    return cv2.warpAffine(rgb, matrix, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of a uint8 RGB crop's grey levels: low (< about 20) = blurred or flat."""
    return float(cv2.Laplacian(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def _box_side(box: torch.Tensor) -> float:
    return float(min(box[2] - box[0], box[3] - box[1]))


# --- the gallery --------------------------------------------------------------------------------------------


@dataclass
class Person:
    """One whitelisted person: name (the subfolder's), photos (reference files), embeddings float32 (K, D) unit
    rows, one per photo."""

    name: str
    photos: list[Path]
    embeddings: np.ndarray


@dataclass(frozen=True)
class MatchSettings:
    """How tracks are judged (see :class:`TrackMatcher`). threshold: cosine similarity a track's mean must reach;
    margin: how far above the second-best person it must be; min_frames: judged frames averaged (the window);
    min_face_size: pixels, a face box's shorter side below it is not judged; min_sharpness: variance of the
    Laplacian of the aligned crop below which a face is too blurred to judge."""

    threshold: float = SFACE_THRESHOLD
    margin: float = 0.05
    min_frames: int = 5
    min_face_size: float = 40.0
    min_sharpness: float = 20.0

    def __post_init__(self) -> None:
        check_number("whitelist threshold", self.threshold, -1.0, 1.0)
        check_number("whitelist margin", self.margin, 0.0, 2.0)
        check_number("whitelist min_frames", self.min_frames, 1, integer=True)
        check_number("whitelist min_face_size", self.min_face_size, 0.0)
        check_number("whitelist min_sharpness", self.min_sharpness, 0.0)


class Whitelist:
    """The authorised people and how their tracks are matched.

    persons: :class:`Person` list (at least one); embedder: the model that made their embeddings (also embeds the
    video's faces); settings: :class:`MatchSettings`.
    """

    def __init__(self, persons: list[Person], embedder: FaceEmbedder, settings: MatchSettings | None = None) -> None:
        if not persons:
            raise InputError("the whitelist has no people; give a folder with one subfolder of photos per person")
        if not isinstance(embedder, FaceEmbedder):
            raise ConfigError(f"Whitelist embedder={embedder!r} is not a FaceEmbedder; build one with load_embedder()")
        self.persons = persons
        self.embedder = embedder
        self.settings = settings if settings is not None else MatchSettings()
        self.gallery = np.concatenate([p.embeddings for p in persons]).astype(np.float32)  # (total photos, D)
        self.owner = np.concatenate([np.full(len(p.embeddings), i) for i, p in enumerate(persons)])

    @property
    def people(self) -> list[str]:
        """The people's names, in order (for the UI's gallery)."""
        return [p.name for p in self.persons]

    @classmethod
    def from_folder(
        cls,
        folder: str | Path,
        embedder: FaceEmbedder,
        face_detector: Detector,
        *,
        threshold: float = SFACE_THRESHOLD,
        margin: float = 0.05,
        min_frames: int = 5,
        min_face_size: float = 40.0,
        min_sharpness: float = 20.0,
        cache_dir: Path | None = None,
    ) -> Whitelist:
        """The whitelist of ``folder/<person>/*.jpg|jpeg|png`` (one subfolder per person, one or more photos each).

        1. list the people and their photos (InputError: folder missing or empty, a person without photos, a file
           that is not a photo, a photo outside a person's subfolder);
        2. per photo: its embedding from the cache (``cache_dir``, default ``<inpaint_anon cache>/whitelist``),
           keyed by the SHA-256 of the model's digest and the photo's bytes; else decode it (EXIF orientation
           applied), find exactly one face with ``face_detector`` (a Detector giving landmarks), check it is large
           and sharp enough, align and embed it, and cache the embedding (atomic write).
        Every bad photo is one InputError naming the photo and the fix.
        """
        settings = MatchSettings(threshold, margin, min_frames, min_face_size, min_sharpness)
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "whitelist"
        persons = []
        for name, photos in _gallery_files(Path(folder).expanduser()):
            vectors = [_photo_embedding(photo, embedder, face_detector, settings, cache) for photo in photos]
            persons.append(Person(name, photos, np.stack(vectors)))
        return cls(persons, embedder, settings)

    def tracker(self) -> TrackMatcher:
        """A fresh :class:`TrackMatcher` (per-track state) for one video."""
        return TrackMatcher(self)

    def __repr__(self) -> str:
        return f"Whitelist(people={self.people}, embedder={self.embedder.name!r}, settings={self.settings})"


def _gallery_files(folder: Path) -> list[tuple[str, list[Path]]]:
    """(person name, sorted photo paths) per subfolder of ``folder``, sorted by name; InputError for a bad layout."""
    layout = "folder/<person name>/<photo>.jpg|png"
    if not folder.is_dir():
        raise InputError(f"whitelist folder {folder} does not exist or is not a folder; pass a folder laid out as "
                         f"{layout}")
    entries = sorted(e for e in folder.iterdir() if not e.name.startswith("."))
    stray = [e for e in entries if not e.is_dir()]
    if stray:
        raise InputError(f"whitelist file {stray[0]} is not in a person's subfolder; move it to {layout}")
    if not entries:
        raise InputError(f"whitelist folder {folder} is empty; add one subfolder of photos per person ({layout})")
    people = []
    for person in entries:
        files = sorted(f for f in person.iterdir() if not f.name.startswith("."))
        other = [f for f in files if not f.is_file() or f.suffix.lower() not in PHOTO_SUFFIXES]
        if other:
            raise InputError(f"whitelist entry {other[0]} is not a .jpg/.jpeg/.png photo; remove it or convert it")
        if not files:
            raise InputError(f"whitelist person folder {person} has no photos; add at least one photo of "
                             f"{person.name}'s face, or remove the folder")
        people.append((person.name, files))
    return people


def _photo_embedding(path: Path, embedder: FaceEmbedder, detector: Detector, settings: MatchSettings,
                     cache: Path) -> np.ndarray:
    """float32 (D,) unit embedding of the one face in reference photo ``path`` (cached by content hash)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(f"cannot read whitelist photo {path} ({one_line(error)}); check its permissions") from error
    key = hashlib.sha256(embedder.sha256.encode() + b"\0" + data).hexdigest()
    cached = cache / f"{key}.npy"
    if cached.is_file():
        try:
            vector = np.load(cached, allow_pickle=False)
            if vector.ndim == 1 and vector.dtype == np.float32 and np.isfinite(vector).all():
                return vector
        except (OSError, ValueError):
            pass  # a damaged cache entry is recomputed
        logger.warning("whitelist cache entry %s is damaged; recomputing it", cached)
    vector = _embed_photo(path, data, embedder, detector, settings)
    buffer = io.BytesIO()
    np.save(buffer, vector, allow_pickle=False)
    cache.mkdir(parents=True, exist_ok=True)
    write_atomic(cached, buffer.getvalue())
    return vector


def _embed_photo(path: Path, data: bytes, embedder: FaceEmbedder, detector: Detector,
                 settings: MatchSettings) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)  # applies the EXIF orientation
    if bgr is None:
        raise InputError(f"whitelist photo {path} cannot be decoded (damaged or not a JPEG/PNG); replace it")
    rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    found = detector([Frame(0, None, rgb)])[0]
    faces = found.by_class(FACE_CLASS) if FACE_CLASS in found.names.values() else found
    if len(faces) != 1:
        what = "no face" if len(faces) == 0 else f"{len(faces)} faces"
        raise InputError(f"whitelist photo {path} shows {what}; each reference photo must show exactly one face "
                         "(crop it to the person, or remove it)")
    if faces.landmarks is None or not torch.isfinite(faces.landmarks).all():
        raise ConfigError("the whitelist's face detector gives no landmarks, needed to align the face; use a face "
                          "detector (model=centerface or yunet)")
    side = _box_side(faces.boxes_xyxy[0])
    if side < settings.min_face_size:
        raise InputError(f"whitelist photo {path}: the face is {side:.0f} px, smaller than {settings.min_face_size:g} "
                         "px; use a larger, closer photo")
    crop = align_face(rgb, faces.landmarks[0].numpy())
    if sharpness(crop) < settings.min_sharpness:
        raise InputError(f"whitelist photo {path}: the face is too blurred to recognise (sharpness "
                         f"{sharpness(crop):.1f} < {settings.min_sharpness:g}); use a sharper photo")
    vector = np.asarray(embedder.embed([crop]), np.float32)
    if vector.shape != (1, vector.shape[-1]) or not np.isfinite(vector).all():
        raise WeightsError(f"face recognizer {embedder.name} returned shape {vector.shape} for one crop; use a "
                           "model with one (B, D) output")
    return vector[0]


# --- per-track matching -------------------------------------------------------------------------------------


@dataclass
class _TrackState:
    """What one track has shown: per judged frame the best similarity to each person (float32 (P,)), the last
    ``min_frames`` of them; the confirmed person's index (None: anonymized); counts for run.json."""

    window: deque
    confirmed: int | None = None
    last_shown: bool = False  # the decision of the track's latest detected frame
    ever: int | None = None
    score: float = 0.0
    judged: int = 0
    shown: int = 0
    error: str | None = None


class TrackMatcher:
    """Per-track whitelist decisions for one video (from :meth:`Whitelist.tracker`); frames come in order.

    For each face region of a frame (class ``face``, with a track id):

    1. a region with landmarks (detected in this frame) is judged when its box's shorter side is at least
       ``min_face_size`` and its aligned crop's sharpness at least ``min_sharpness``; a region that cannot be
       judged is anonymized in this frame and does not count;
    2. a judged region is embedded; its cosine similarity to each person (best over that person's photos) joins
       the track's window of the last ``min_frames`` judged frames;
    3. with a full window, the track is confirmed as the person with the best mean similarity when that mean is
       >= ``threshold`` and exceeds the second-best person's mean by more than ``margin``; otherwise it is not (a
       confirmed track whose recent frames stop matching is anonymized again);
    4. a judged region is shown while its track is confirmed and its own similarity to that person is >= ``threshold``
       (one frame that stops matching is anonymized at once, before the window drops the confirmation); a region
       without landmarks (held or interpolated by the tracker in a frame without detection) is shown only when its
       track is confirmed and its latest detected frame was shown.

    Any exception while judging a frame anonymizes every face of that frame, resets those tracks' windows and is
    logged and recorded in :attr:`record`.
    """

    def __init__(self, whitelist: Whitelist) -> None:
        self.whitelist = whitelist
        self.settings = whitelist.settings
        self._tracks: dict[int, _TrackState] = {}

    def reveal(self, frame: Frame, detections: Detections) -> torch.Tensor:
        """bool (N,) on the CPU: True for the regions of ``detections`` (the tracked regions of ``frame``, RGB uint8
        (H, W, 3)) to leave visible; False for all others."""
        shown = torch.zeros(len(detections), dtype=torch.bool)
        faces = [i for i, name in enumerate(detections.class_names) if name == FACE_CLASS]
        if not faces:
            return shown
        try:
            return self._reveal(frame, detections, faces, shown)
        except Exception as error:  # noqa: BLE001 - fail closed: any failure anonymizes
            message = one_line(error)
            logger.warning("whitelist failed on frame %d, its faces are anonymized: %s", frame.index, message)
            ids = detections.track_ids.tolist() if detections.track_ids is not None else [-1] * len(detections)
            for i in faces:
                state = self._state(int(ids[i]))
                state.window.clear()
                state.confirmed, state.last_shown, state.error = None, False, message
            return torch.zeros(len(detections), dtype=torch.bool)

    def _state(self, track_id: int) -> _TrackState:
        if track_id not in self._tracks:
            self._tracks[track_id] = _TrackState(deque(maxlen=self.settings.min_frames))
        return self._tracks[track_id]

    def _reveal(self, frame: Frame, detections: Detections, faces: list[int], shown: torch.Tensor) -> torch.Tensor:
        if detections.track_ids is None:
            raise RuntimeError("the detections have no track ids: the whitelist needs tracking")
        ids = detections.track_ids.tolist()
        judged: list[tuple[int, np.ndarray]] = []
        for i in faces:  # 1. which regions can be judged
            state = self._state(int(ids[i]))
            landmarks = None if detections.landmarks is None else detections.landmarks[i]
            if landmarks is None or not torch.isfinite(landmarks).all():
                shown[i] = state.confirmed is not None and state.last_shown  # held / interpolated
                continue
            state.last_shown = False  # until judged below
            if _box_side(detections.boxes_xyxy[i]) < self.settings.min_face_size:
                continue
            crop = align_face(frame.rgb, landmarks.numpy())
            if sharpness(crop) >= self.settings.min_sharpness:
                judged.append((i, crop))
        if judged:  # 2.-3. embed, compare, decide
            vectors = np.asarray(self.whitelist.embedder.embed([crop for _, crop in judged]), np.float32)
            gallery = self.whitelist.gallery
            if vectors.shape != (len(judged), gallery.shape[1]) or not np.isfinite(vectors).all():
                raise RuntimeError(f"the face recognizer returned shape {vectors.shape} for {len(judged)} crops, "
                                   f"expected ({len(judged)}, {gallery.shape[1]}) finite values")
            similarity = vectors @ gallery.T  # (K, photos)
            per_person = np.stack([similarity[:, self.whitelist.owner == p].max(axis=1)
                                   for p in range(len(self.whitelist.persons))], axis=1)  # (K, P)
            for (i, _), row in zip(judged, per_person):
                state = self._state(int(ids[i]))
                shown[i] = state.last_shown = self._judge(state, row)
        for i in faces:
            if shown[i]:
                self._state(int(ids[i])).shown += 1
        return shown

    def _judge(self, state: _TrackState, similarities: np.ndarray) -> bool:
        """Add one judged frame's per-person similarities (P,) to the track; True when it is (still) confirmed."""
        state.window.append(similarities.astype(np.float32))
        state.judged += 1
        mean = np.mean(np.stack(state.window), axis=0)
        order = np.argsort(-mean, kind="stable")
        best = float(mean[order[0]])
        second = float(mean[order[1]]) if len(order) > 1 else -1.0
        state.score = best
        full = len(state.window) >= self.settings.min_frames
        confirmed = full and best >= self.settings.threshold and best - second > self.settings.margin
        state.confirmed = int(order[0]) if confirmed else None
        if confirmed:
            state.ever = int(order[0])
        return confirmed and float(similarities[order[0]]) >= self.settings.threshold  # this frame matches too

    @property
    def record(self) -> dict:
        """For run.json: track id (str) -> {"person": the name it was confirmed as (None: never), "score": its last
        best mean similarity, "frames": judged frames, "shown": frames left visible} (+ "error" when the whitelist
        failed on it). Names and scores only, never embeddings."""
        names = self.whitelist.people
        record = {}
        for track_id, state in sorted(self._tracks.items()):
            entry = {"person": None if state.ever is None else names[state.ever], "score": round(state.score, 4),
                     "frames": state.judged, "shown": state.shown}
            if state.error is not None:
                entry["error"] = state.error
            record[str(track_id)] = entry
        return record

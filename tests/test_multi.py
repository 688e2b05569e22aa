"""Several detectors in one run (MultiDetector), a method per class (ClassRouter), and the traffic and street
experiments: merging, routing, fail-closed per method, `none` left byte-identical, config and CLI errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from inpaint_anon.composite import Compositor
from inpaint_anon.detect.multi import MultiDetector
from inpaint_anon.detect.scripted import ScriptedDetector
from inpaint_anon.errors import ConfigError
from inpaint_anon.inpaint.base import InpaintBatch, Inpainter, InpaintOutput
from inpaint_anon.inpaint.fast import BlurInpainter, PixelateInpainter, ScrambleInpainter, SolidInpainter
from inpaint_anon.inpaint.router import ClassRouter
from inpaint_anon.pipeline import AnonymizePipeline
from inpaint_anon.records import DetectionReader
from inpaint_anon.types import Detections, Frame
from inpaint_anon.video import VideoReader, VideoSettings
from tests.clips import make_clip
from tests.test_cli import assert_user_error, cli_env, run_cli, run_in_process
from tests.test_config import compose_run

DATA = Path(__file__).resolve().parents[1] / "data"
H, W = 64, 96


def box_mask(x0: int, y0: int, x1: int, y1: int, height: int = H, width: int = W) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[y0:y1, x0:x1] = True
    return mask


class Counting:
    """A Detector wrapper recording how many frames each call got."""

    def __init__(self, detector: ScriptedDetector) -> None:
        self.detector, self.names, self.batch_size = detector, detector.names, detector.batch_size
        self.sizes: list[int] = []

    def __call__(self, frames: Sequence[Frame]) -> list[Detections]:
        self.sizes.append(len(frames))
        return self.detector(frames)


def frames_of(n: int) -> list[Frame]:
    return [Frame(i, i, np.full((H, W, 3), 10 * i, np.uint8)) for i in range(n)]


# -- MultiDetector ------------------------------------------------------------------------------------------


def test_multi_detector_merges_names_ids_and_landmarks() -> None:
    objects = Counting(ScriptedDetector(lambda i: {"car": box_mask(0, 0, 10, 10), "person": box_mask(20, 0, 30, 10)},
                                        names=["person", "car"], batch_size=3))
    face_names = {0: "face"}

    def face(i: int) -> Detections:
        if i == 1:
            return Detections.empty(H, W, face_names)
        return Detections.from_masks(box_mask(40, 0, 50, 10)[None], [0], face_names, scores=[0.5],
                                     landmarks=np.arange(10, dtype=np.float32).reshape(1, 5, 2))

    faces = Counting(ScriptedDetector(face, names=face_names, batch_size=1))
    plates = ScriptedDetector(lambda i: {"plate": box_mask(60, 0, 70, 10), "person": box_mask(80, 0, 90, 10)},
                              names={0: "plate", 1: "person"}, batch_size=2)
    multi = MultiDetector({"objects": objects, "faces": faces, "plates": plates})
    assert multi.names == {0: "person", 1: "car", 2: "face", 3: "plate"}
    assert multi.batch_size == 3

    found = multi(frames_of(4))
    assert objects.sizes == [3, 1] and faces.sizes == [1, 1, 1, 1]  # each child with its own batch size
    first = found[0]
    assert first.class_names == ["car", "person", "face", "plate", "person"]
    assert first.class_ids.tolist() == [1, 0, 2, 3, 0] and first.names == multi.names
    assert first.boxes_xyxy[:, 0].tolist() == [0, 20, 40, 60, 80]
    assert first.scores.tolist() == [1, 1, 0.5, 1, 1]
    assert first.landmarks is not None and tuple(first.landmarks.shape) == (5, 5, 2)
    assert first.landmarks[2].flatten().tolist() == list(range(10))
    assert bool(torch.isnan(first.landmarks[[0, 1, 3, 4]]).all())
    assert found[1].landmarks is None and found[1].class_names == ["car", "person", "plate", "person"]


def test_multi_detector_with_nothing_found_and_bad_children() -> None:
    nothing = ScriptedDetector(lambda i: {}, names=["face"])
    multi = MultiDetector({"faces": nothing, "plates": ScriptedDetector(lambda i: {}, names=["plate"])})
    (dets,) = multi(frames_of(1))
    assert len(dets) == 0 and dets.names == {0: "face", 1: "plate"} and (dets.height, dets.width) == (H, W)
    with pytest.raises(ConfigError, match="names no detector|is empty"):
        MultiDetector({})
    with pytest.raises(ConfigError, match="detectors.faces=.* is not a Detector"):
        MultiDetector({"faces": object()})  # type: ignore[dict-item]


# -- ClassRouter ----------------------------------------------------------------------------------------------

NAMES = {0: "person", 1: "face", 2: "plate"}


def batch_of(*masks_and_ids: tuple[np.ndarray, int]) -> InpaintBatch:
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.integers(0, 256, (1, 3, H, W), dtype=np.uint8))
    dets = Detections.from_masks(np.stack([m for m, _ in masks_and_ids]), [c for _, c in masks_and_ids], NAMES)
    return InpaintBatch(images=image, detections=[dets], frame_indices=[7])


class Failing(Inpainter):
    name = "failing"

    def __call__(self, batch: InpaintBatch) -> InpaintOutput:
        raise RuntimeError("model exploded")


def test_router_splits_by_class_renumbers_and_falls_back_per_method() -> None:
    batch = batch_of((box_mask(0, 0, 20, 20), 1), (box_mask(30, 0, 50, 20), 0), (box_mask(60, 0, 80, 20), 2))
    solid = SolidInpainter(color=(1, 2, 3))
    router = ClassRouter({"face": solid, "plate": Failing(), "person": None}, default=BlurInpainter())
    assert router.skip_classes == frozenset({"person"}) and router.feather is True and router.lossless is False
    assert router.stages() == (router,)
    out = router(batch)
    # face: one solid fill for region 0; plate: its method raised -> the blur fallback for region 2 only
    assert [(f.frame, f.region) for f in out.fills] == [(0, 0), (0, 2)]
    assert out.fills[0].rgb[:, out.fills[0].mask].unique(dim=1).flatten().tolist() == [1, 2, 3]
    assert [(f.frame_index, f.region, f.class_name, f.used) for f in out.fallbacks] == [(7, 2, "plate", "blur")]
    assert out.fallbacks[0].reason == "RuntimeError: model exploded"
    record = router.run_record()
    assert record["anonymize"] == {"face": "solid", "plate": "failing", "person": "none"}


def test_router_with_scramble_is_lossless_and_unfeathered() -> None:
    router = ClassRouter({"plate": ScrambleInpainter(key="00112233445566778899aabbccddeeff", nonce="00" * 12)},
                         default=BlurInpainter())
    assert router.feather is False and router.lossless is True
    assert router.inpainters[0] is router.default


# -- the pipeline: merged detectors, a method per class, `none` left exactly as it was ------------------------

FACE, PLATE, PERSON = (8, 8, 24, 24), (56, 40, 80, 52), (36, 4, 48, 30)  # x0, y0, x1, y1 boxes, moving right


def moved(box: tuple[int, int, int, int], i: int) -> tuple[int, int, int, int]:
    return box[0] + i, box[1], box[2] + i, box[3]


def test_pipeline_routes_each_class_and_leaves_none_untouched(tmp_path: Path) -> None:
    n = 6
    clip = make_clip(tmp_path / "in.mkv", n_frames=n, size=(W, H), lossless=True)
    faces = ScriptedDetector(lambda i: {"face": box_mask(*moved(FACE, i))}, names=["face"])
    plates = ScriptedDetector(lambda i: {"plate": box_mask(*moved(PLATE, i))}, names=["plate"], batch_size=2)
    people = ScriptedDetector(lambda i: {"person": box_mask(*moved(PERSON, i))}, names=["person"])
    detector = MultiDetector({"people": people, "faces": faces, "plates": plates})
    router = ClassRouter({"face": BlurInpainter(), "plate": PixelateInpainter(blocks=4), "person": None},
                         default=SolidInpainter())
    out = tmp_path / "out.mkv"
    pipe = AnonymizePipeline(detector, router, Compositor(dilate=2, feather=2), tracker=None, progress=False)
    result = pipe(clip, out, video=VideoSettings(codec="ffv1"), record_detections=tmp_path / "d.dets")
    assert (result.frames_in, result.frames_out) == (n, n)
    assert [e for e in result.events if e["event"] == "fallback"] == []

    with av.open(str(clip)) as src, av.open(str(out)) as dst:
        ins = [(f.pts, f.to_ndarray(format="rgb24")) for f in src.decode(video=0)]
        outs = [(f.pts, f.to_ndarray(format="rgb24")) for f in dst.decode(video=0)]
    assert [p for p, _ in outs] == [p for p, _ in ins]
    for i, ((_, a), (_, b)) in enumerate(zip(ins, outs)):
        face, plate, person = (box_mask(*moved(box, i)) for box in (FACE, PLATE, PERSON))
        near = np.zeros((H, W), bool)
        for x0, y0, x1, y1 in (moved(FACE, i), moved(PLATE, i)):
            near[max(y0 - 6, 0):y1 + 6, max(x0 - 6, 0):x1 + 6] = True
        diff = np.abs(a.astype(int) - b.astype(int)).sum(-1)
        assert np.array_equal(a[person], b[person]), f"frame {i}: a `none` person changed"
        assert np.array_equal(a[~near], b[~near]), f"frame {i}: pixels outside the regions changed"
        assert diff[face].mean() > 5 and diff[plate].mean() > 5
        # pixelate: the plate is made of few distinct colours (blocks); blur: a smooth face, many colours
        assert len(np.unique(b[plate].reshape(-1, 3), axis=0)) <= 4 * 4 * 4
    # `none` regions are still recorded
    recorded = [dets.class_names for _, dets in DetectionReader(tmp_path / "d.dets")]
    assert recorded == [["person", "face", "plate"]] * n


# -- the command line: experiments and errors --------------------------------------------------------------------


def test_traffic_and_street_experiments_compose() -> None:
    traffic = compose_run("+experiment=traffic")
    assert list(traffic.detectors) == ["faces", "plates"]
    assert traffic.detectors.faces._target_ == "inpaint_anon.detect.faces.face_detector"
    assert traffic.detectors.plates._target_ == "inpaint_anon.detect.plates.PlateDetector"
    assert dict(traffic.anonymize) == {"face": "blur", "plate": "pixelate"}
    assert traffic.inpainter._target_.endswith("BlurInpainter")
    swapped = compose_run("+experiment=traffic", "detectors.plates.weights=/m/plates.onnx", "~detectors.faces")
    assert list(swapped.detectors) == ["plates"] and swapped.detectors.plates.weights == "/m/plates.onnx"
    street = compose_run("+experiment=street", "detector.imgsz=64", "anonymize.face=diffusion",
                         "anonymize.plate=pixelate", "anonymize.person=none")
    assert list(street.detectors) == ["objects", "faces", "plates"]
    assert street.detectors.objects.imgsz == 64 and street.detectors.objects.classes[0] == "person"
    assert (street.anonymize.face, street.anonymize.plate, street.anonymize.person) == ("diffusion", "pixelate",
                                                                                        "none")
    assert street.anonymize.car is None
    assert compose_run().detectors is None and dict(compose_run().anonymize) == {}


def test_traffic_photo_end_to_end_offline(tmp_path: Path) -> None:
    """+experiment=traffic on a photo (plates dropped: no network): the face is blurred, the rest unchanged."""
    out = tmp_path / "x.png"
    proc = run_cli("+experiment=traffic", "~detectors.plates", f"input={DATA / 'astronaut.jpg'}", f"output={out}",
                   "device=cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with VideoReader(DATA / "astronaut.jpg") as src, VideoReader(out) as dst:
        a, b = (next(iter(reader)).rgb.astype(int) for reader in (src, dst))
    x0, y0, x1, y1 = 181, 75, 270, 171  # data/faces_gt.jsonl
    inner = np.abs(a - b)[y0 + 15:y1 - 15, x0 + 15:x1 - 15].mean()
    far = np.ones(a.shape[:2], bool)
    far[max(y0 - 80, 0):y1 + 80, max(x0 - 80, 0):x1 + 80] = False
    assert inner > 3, inner
    assert np.abs(a - b)[far].max() == 0  # a png output: exactly the decoded input
    record = next((tmp_path / "runs").iterdir()) / "run.json"
    assert '"face": "blur"' in record.read_text()


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["anonymize.face=sparkle"], ["anonymize.face=sparkle", "is not a method", "blur"]),
        (["+anonymize.unicorn=blur"], ["anonymize.unicorn", "unicorn", "face"]),
        pytest.param(["+methods.sparkle.x=1"], ["methods.sparkle is not a method", "pixelate"], marks=pytest.mark.slow),
        pytest.param(["+methods.blur.sigma=3"], ["methods.blur", "this run's inpainter", "inpainter.<key>"],
                     marks=pytest.mark.slow),
        (["anonymize.face=pixelate", "+methods.pixelate.blokcs=3"], ["pixelate", "blokcs", "blocks"]),
    ],
)
def test_unknown_method_or_class_is_one_error_line(tmp_path: Path, args: list[str], needles: list[str],
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capfd: pytest.CaptureFixture[str]) -> None:
    """In this process (``inpaint_anon.run.main``; tests/test_cli.py starts the command as a user does)."""
    out = tmp_path / "x.png"
    proc = run_in_process("+experiment=traffic", "~detectors.plates", f"input={DATA / 'astronaut.jpg'}",
                          f"output={out}", "device=cpu", *args, cwd=tmp_path, run_dir=tmp_path / "runs" / "r",
                          monkeypatch=monkeypatch, capfd=capfd)
    assert_user_error(proc, *needles)
    assert not out.exists()


def test_methods_settings_are_merged_over_the_method_config() -> None:
    """+methods.<method>.<key>=... sets a method that only `anonymize` names (traffic's pixelate for plates)."""
    from inpaint_anon.run import _method_nodes

    nodes = _method_nodes(compose_run("+experiment=traffic", "+methods.pixelate.blocks=16",
                                      "+methods.solid.color=[1,2,3]"))
    assert set(nodes) == {"blur", "pixelate"}
    assert nodes["pixelate"].blocks == 16 and nodes["pixelate"].noise == 0.0  # the rest from pixelate.yaml
    assert nodes["pixelate"]._target_ == "inpaint_anon.inpaint.fast.PixelateInpainter"
    assert _method_nodes(compose_run("+experiment=traffic"))["pixelate"].blocks == 8
    with pytest.raises(ConfigError, match=r"methods.sparkle is not a method with settings; use one of: diffusion"):
        _method_nodes(compose_run("+experiment=traffic", "+methods.sparkle.x=1"))


@pytest.mark.slow  # CI time; `pytest -m slow`
def test_several_detectors_share_one_detection_cache(tmp_path: Path) -> None:
    """detector.cache=true with `detectors`: the second run replays the cache; a changed child setting misses."""
    common = ["+experiment=traffic", "~detectors.plates", f"input={DATA / 'astronaut.jpg'}", "device=cpu",
              "detector.cache=true", f"paths.cache={tmp_path / 'cache'}"]
    hits = []
    for i, extra in enumerate([[], [], ["detectors.faces.mask_scale=1.2"]]):
        run_dir = tmp_path / f"run{i}"
        proc = run_cli(*common, f"output={tmp_path / f'x{i}.png'}", *extra, cwd=tmp_path, run_dir=run_dir)
        assert proc.returncode == 0, proc.stderr[-3000:]
        events = json.loads((run_dir / "run.json").read_text())["events"]
        hits.append(next(e["hit"] for e in events if e["event"] == "detection_cache"))
    assert hits == [False, True, False]


def test_scramble_for_one_class_is_lossless_and_undone(tmp_path: Path) -> None:
    """anonymize.face=scramble in the traffic experiment: a .png output, the face scrambled, and the unscramble
    command restores the decoded input exactly."""
    key = {"INPAINT_ANON_KEY": "00112233445566778899aabbccddeeff"}
    out, run_dir = tmp_path / "x.png", tmp_path / "run"
    proc = run_cli("+experiment=traffic", "~detectors.plates", f"input={DATA / 'astronaut.jpg'}", f"output={out}",
                   "device=cpu", "anonymize.face=scramble", cwd=tmp_path, run_dir=run_dir, env=key)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["anonymize"] == {"face": "scramble"} and record["scramble"]["lossless_output"] is True
    restored = tmp_path / "restored.png"
    undo = subprocess.run([sys.executable, "-m", "inpaint_anon.unscramble", f"run_dir={run_dir}",
                           f"output={restored}"], cwd=tmp_path, env=cli_env(key), capture_output=True, text=True,
                          timeout=300)
    assert undo.returncode == 0, undo.stderr[-3000:]
    with VideoReader(DATA / "astronaut.jpg") as src, VideoReader(out) as anon, VideoReader(restored) as back:
        a, b, c = (next(iter(reader)).rgb.astype(int) for reader in (src, anon, back))
    assert np.abs(a - b).max() > 100 and np.array_equal(a, c)

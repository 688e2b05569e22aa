"""AnonymizePipeline end to end on generated clips with a scripted detector (no model weights)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from inpaint_anon.composite import Compositor
from inpaint_anon.detect.scripted import ScriptedDetector
from inpaint_anon.inpaint.base import InpaintBatch, Inpainter, InpaintOutput
from inpaint_anon.inpaint.fast import BlurInpainter, SolidInpainter
from inpaint_anon.pipeline import AnonymizePipeline
from inpaint_anon.video import VideoReader
from tests import textured
from tests.clips import make_clip, object_masks

SIZE = (160, 120)
N_FRAMES = 20
NAMES = ["person", "car"]


def truth_detector(n_frames: int = N_FRAMES, size: tuple[int, int] = SIZE) -> ScriptedDetector:
    return ScriptedDetector(lambda i: object_masks(i, size, n_frames), names=NAMES)


def read_all(path: Path) -> list[np.ndarray]:
    with VideoReader(path) as reader:
        return [f.rgb for f in reader]


def read_pts(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sorted(float(f.pts * f.time_base) for f in container.decode(stream))


def audio_packets(path: Path) -> list[tuple[int, bytes]]:
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return []
        return [(p.pts, bytes(p)) for p in container.demux(container.streams.audio[0]) if p.size]


def region_alpha(index: int, compositor: Compositor) -> np.ndarray:
    masks = torch.from_numpy(np.stack(list(object_masks(index, SIZE, N_FRAMES).values())))
    return compositor.alpha(masks, None).numpy()


@pytest.fixture
def clip_audio(tmp_path: Path) -> Path:
    return make_clip(tmp_path / "in.mp4", n_frames=N_FRAMES, size=SIZE, audio=True)


def test_blur_run_keeps_frames_timestamps_audio_and_unmasked_pixels(clip_audio: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    before = clip_audio.read_bytes()
    compositor = Compositor()
    result = AnonymizePipeline(truth_detector(), BlurInpainter(device="cpu"), compositor, progress=False)(
        clip_audio, out, crf=0, preset="ultrafast")

    assert clip_audio.read_bytes() == before, "the input must never be modified"
    assert result.out_path == out and out.exists()
    assert result.frames_in == result.frames_out == N_FRAMES
    assert {"decode", "detect", "inpaint", "composite", "encode"} <= set(result.timings)
    assert read_pts(out) == pytest.approx(read_pts(clip_audio), abs=1e-3)
    assert audio_packets(out) == audio_packets(clip_audio) and audio_packets(out)

    for i, (src, dst) in enumerate(zip(read_all(clip_audio), read_all(out))):
        outside = region_alpha(i, compositor) == 0
        diff = np.abs(src.astype(int) - dst.astype(int))[outside]
        assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 4, f"frame {i}: unmasked pixels changed"


def test_masked_pixels_are_replaced(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "in.mp4", n_frames=N_FRAMES, size=SIZE)
    out = tmp_path / "out.mp4"
    AnonymizePipeline(truth_detector(), SolidInpainter(color=(255, 0, 255), device="cpu"), progress=False)(
        clip, out, crf=0, preset="ultrafast")
    for i, (src, dst) in enumerate(zip(read_all(clip), read_all(out))):
        for name, mask in object_masks(i, SIZE, N_FRAMES).items():
            inside = np.abs(src.astype(int) - dst.astype(int))[mask].sum(axis=-1)
            assert (inside > 30).mean() > 0.99, f"frame {i}: {name} shown in the clear"


def test_frames_without_regions_pass_through(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "in.mp4", n_frames=6, size=SIZE)
    nothing = ScriptedDetector(lambda i: {}, names=NAMES)
    result = AnonymizePipeline(nothing, BlurInpainter(device="cpu"), progress=False)(
        clip, tmp_path / "out.mp4", crf=0, preset="ultrafast")
    assert result.frames_out == 6
    for src, dst in zip(read_all(clip), read_all(tmp_path / "out.mp4")):
        assert np.abs(src.astype(int) - dst.astype(int)).mean() < 1.0


class ExplodingInpainter(Inpainter):
    name = "exploding"

    def __call__(self, batch: InpaintBatch) -> InpaintOutput:
        raise RuntimeError("boom")


def test_inpainter_failure_fails_closed(tmp_path: Path) -> None:
    """Every pixel of every region is what the blur fallback makes of it (textured regions, lossless in and out)."""
    clip, out = textured.textured_clip(tmp_path / "in.mkv"), tmp_path / "out.mkv"
    result = textured.run_lossless(AnonymizePipeline(textured.truth_detector(), ExplodingInpainter(), progress=False),
                                   clip, out)
    fallbacks = [e for e in result.events if e["event"] == "fallback"]
    assert [(e["frame_index"], e["region"], e["class_name"], e["used"]) for e in fallbacks] == [
        (i, r, name, "blur") for i in range(textured.N) for r, name in enumerate(NAMES)]
    assert {e["reason"] for e in fallbacks} == {"RuntimeError: boom"}
    for i, (src, dst) in enumerate(zip(textured.read_all(clip), textured.read_all(out))):
        dets = textured.truth(i)
        textured.assert_every_region_pixel_is(textured.fallback_frame(src, dets), dst, dets, i)


class FailingDetector(ScriptedDetector):
    def __call__(self, images):  # type: ignore[override]
        if self.calls and self.calls[-1] >= 4:
            raise RuntimeError("detector crashed")
        return super().__call__(images)


def test_stage_failure_leaves_no_output(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "in.mp4", n_frames=12, size=SIZE)
    out = tmp_path / "out.mp4"
    detector = FailingDetector(lambda i: object_masks(i, SIZE, 12), names=NAMES)
    detector.batch_size = 1
    with pytest.raises(RuntimeError, match="detector crashed"):
        AnonymizePipeline(detector, BlurInpainter(device="cpu"), progress=False)(clip, out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["in.mp4"], "no temporary file may be left behind"


class SlowInpainter(BlurInpainter):
    """Blur, slowly, while recording how far decoding ran ahead."""

    def __init__(self, decoded: list[int]) -> None:
        super().__init__(device="cpu")
        self.decoded, self.lead = decoded, 0

    def __call__(self, batch: InpaintBatch) -> InpaintOutput:
        threading.Event().wait(0.02)
        self.lead = max(self.lead, self.decoded[0] - batch.frame_indices[-1])
        return super().__call__(batch)


def test_prefetch_is_bounded(tmp_path: Path) -> None:
    """Decoding runs ahead of inpainting, but never by more than the queues hold: memory stays flat."""
    n = 60
    clip = make_clip(tmp_path / "in.mp4", n_frames=n, size=SIZE)
    decoded = [0]

    def masks(i: int) -> dict[str, np.ndarray]:
        decoded[0] = i  # the detector sees frame i only after it was decoded
        return object_masks(i, SIZE, n)

    inpainter = SlowInpainter(decoded)
    detector = ScriptedDetector(masks, names=NAMES)
    pipe = AnonymizePipeline(detector, inpainter, batch_frames=2, queue_size=3, progress=False)
    pipe(clip, tmp_path / "out.mp4", preset="ultrafast")
    # frame queues decoded/detected/tracked, the prepared queue of batches, and one item in each stage:
    # a bound that depends on the settings, never on the video's length
    q, bf = pipe.queue_size, pipe.batch_frames
    bound = 3 * q + q * bf + detector.batch_size + bf + 2
    assert 1 <= inpainter.lead <= bound


def test_image_in_image_out(tmp_path: Path) -> None:
    from PIL import Image

    from tests.clips import frame_image

    rgb = frame_image(3, SIZE, N_FRAMES)
    src = tmp_path / "in.png"
    Image.fromarray(rgb).save(src)
    detector = ScriptedDetector(lambda i: object_masks(3, SIZE, N_FRAMES), names=NAMES)
    out = tmp_path / "out.png"
    result = AnonymizePipeline(detector, SolidInpainter(device="cpu"), progress=False)(src, out)
    assert result.frames_out == 1
    dst = np.asarray(Image.open(out).convert("RGB"))
    person = object_masks(3, SIZE, N_FRAMES)["person"]
    assert (dst[person] == 0).all() and (dst[~region_alpha(3, Compositor()).astype(bool)] ==
                                         rgb[~region_alpha(3, Compositor()).astype(bool)]).all()


class ThreeStepBlur(BlurInpainter):
    """Blur split into three steps (like VAE encode / U-Net / VAE decode); records when each ran."""

    def __init__(self, fail_frame: int | None = None) -> None:
        super().__init__(device="cpu")
        self.fail_frame, self.log = fail_frame, []

    def stages(self):  # type: ignore[override]
        return (self.first, self.middle, self.last)

    def _record(self, step: str, batch: InpaintBatch) -> None:
        self.log.append((step, batch.frame_indices[0], time.perf_counter(), threading.current_thread().name))

    def first(self, batch: InpaintBatch) -> InpaintBatch:
        self._record("first", batch)
        return batch

    def middle(self, batch: InpaintBatch) -> InpaintBatch:
        self._record("middle", batch)
        if self.fail_frame in batch.frame_indices:
            raise RuntimeError("middle step failed")
        threading.Event().wait(0.05)
        self._record("middle-end", batch)
        return batch

    def last(self, batch: InpaintBatch) -> InpaintOutput:
        self._record("last", batch)
        return BlurInpainter.__call__(self, batch)


def test_inpainter_steps_overlap_across_batches(tmp_path: Path) -> None:
    """While batch k is in the middle step, batch k+1 already went through the first (prefetch)."""
    clip = make_clip(tmp_path / "in.mp4", n_frames=N_FRAMES, size=SIZE)
    inpainter = ThreeStepBlur()
    AnonymizePipeline(truth_detector(), inpainter, batch_frames=2, progress=False)(clip, tmp_path / "out.mp4")
    threads = {step: {t for s, _, _, t in inpainter.log if s == step} for step in ("first", "middle", "last")}
    assert len(set.union(*threads.values())) == 3, "each step runs in its own thread"
    when = {(s, f): t for s, f, t, _ in inpainter.log}
    overlapped = [f for f in range(0, N_FRAMES - 2, 2)
                  if when[("middle", f)] < when[("first", f + 2)] < when[("middle-end", f)]]
    assert overlapped, "the next batch's first step never ran during a middle step"


def test_a_failing_middle_step_fails_closed(tmp_path: Path) -> None:
    clip, out = textured.textured_clip(tmp_path / "in.mkv"), tmp_path / "out.mkv"
    pipe = AnonymizePipeline(textured.truth_detector(), ThreeStepBlur(fail_frame=4), batch_frames=2, progress=False)
    result = textured.run_lossless(pipe, clip, out)
    fallbacks = [e for e in result.events if e["event"] == "fallback"]
    assert [(e["frame_index"], e["region"]) for e in fallbacks] == [(4, 0), (4, 1), (5, 0), (5, 1)]
    assert {e["reason"] for e in fallbacks} == {"RuntimeError: middle step failed"}
    # the blur the other frames got and the fallback the failed ones got are the same blur: every pixel equal
    for i, (src, dst) in enumerate(zip(textured.read_all(clip), textured.read_all(out))):
        dets = textured.truth(i)
        textured.assert_every_region_pixel_is(textured.fallback_frame(src, dets), dst, dets, i)


def test_an_odd_sized_video_records_its_padding(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "odd.mp4", n_frames=3, size=(81, 61))
    detector = ScriptedDetector(lambda i: object_masks(i, (81, 61), 3), names=NAMES)
    result = AnonymizePipeline(detector, SolidInpainter(device="cpu"), progress=False)(
        clip, tmp_path / "out.mp4", preset="ultrafast")
    assert [e for e in result.events if e["event"] == "padded"] == [
        {"event": "padded", "to_size": [82, 62], "reason": "yuv420p needs even width and height"}]
    even = AnonymizePipeline(truth_detector(6), SolidInpainter(device="cpu"), progress=False)(
        make_clip(tmp_path / "even.mp4", n_frames=6, size=SIZE), tmp_path / "even_out.mp4", preset="ultrafast")
    assert [e for e in even.events if e["event"] == "padded"] == []


def test_final_detections_are_recorded_for_evaluation(tmp_path: Path) -> None:
    from inpaint_anon.records import DetectionReader

    clip = make_clip(tmp_path / "in.mp4", n_frames=6, size=SIZE)
    record = tmp_path / "detections.dets"
    AnonymizePipeline(truth_detector(6), SolidInpainter(device="cpu"), progress=False)(
        clip, tmp_path / "out.mp4", record_detections=record)
    frames = list(DetectionReader(record))
    assert [i for i, _ in frames] == list(range(6))
    for i, dets in frames:
        truth = object_masks(i, SIZE, 6)
        assert dets.class_names == ["person", "car"]
        assert all((m.numpy() == truth[n]).all() for m, n in zip(dets.masks, dets.class_names))


def test_no_detections_record_after_a_failed_run(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "in.mp4", n_frames=6, size=SIZE)
    detector = FailingDetector(lambda i: object_masks(i, SIZE, 6), names=NAMES, batch_size=1)
    with pytest.raises(RuntimeError, match="detector crashed"):
        AnonymizePipeline(detector, BlurInpainter(device="cpu"), progress=False)(
            clip, tmp_path / "out.mp4", record_detections=tmp_path / "d.dets")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]

"""Real-time runs: the latency bound's drop policy (before detection only), held masks while detection lags,
per-second stats, the settings and their checks, and stopping a live source as its normal end."""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from inpaint_anon.composite import Compositor
from inpaint_anon.detect.scripted import ScriptedDetector
from inpaint_anon.errors import ConfigError
from inpaint_anon.inpaint.fast import SolidInpainter
from inpaint_anon.pipeline import AnonymizePipeline
from inpaint_anon.realtime import RealtimeSettings, RealtimeStats
from inpaint_anon.run import _realtime_settings, short_realtime
from inpaint_anon.track import Tracker
from inpaint_anon.types import Detections
from inpaint_anon.video import VideoReader, VideoSettings
from inpaint_anon.video.live import LiveSettings, LiveSource
from tests.clips import make_clip, object_masks
from tests.live_publish import UdpPublisher, free_udp_port

SIZE = (96, 64)
FPS = 30
FILL = (255, 0, 255)
NAMES = ["person", "car"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- settings and stats ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("values", "match"), [
    ({"max_latency_ms": 0}, "realtime.max_latency_ms=0"),
    ({"max_detect_gap": 0}, "realtime.max_detect_gap=0"),
    ({"enabled": "yes"}, "realtime.enabled='yes' is not a boolean"),
    ({"stats_seconds": -1}, "realtime.stats_seconds=-1"),
    ({"max_latency": 100}, "unknown realtime setting realtime.max_latency; known: realtime.enabled"),
])
def test_settings_reject_bad_values(values: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RealtimeSettings.from_dict(values)


def test_stats_per_second_rows_and_percentiles() -> None:
    clock = FakeClock()
    stats = RealtimeStats(keep_seconds=2, clock=clock)
    for second, latencies in enumerate(([10.0, 20.0, 30.0, 400.0], [50.0], [5.0, 5.0])):
        for ms in latencies:
            stats.arrived()
            stats.written(ms / 1000)
        stats.drop()
        clock.now = 100.0 + second + 1.0
    assert stats.postfix() == {"in": 2, "out": 2, "drop": 1, "p99ms": 6.0}  # the last complete second
    summary = stats.summary(RealtimeSettings(enabled=True))
    assert (summary["frames_in"], summary["frames_out"], summary["dropped"]) == (7, 7, 3)
    # percentiles are the upper edge of their 1 ms bin: never below the true value
    assert summary["latency_ms"] == {"p50": 21.0, "p99": 401.0, "max": 400.0}
    assert [row["t"] for row in summary["seconds"]] == [1.0, 2.0]  # the last two of three
    assert summary["seconds_left_out"] == 1
    assert summary["seconds"][0] == {"t": 1.0, "fps_in": 1, "fps_out": 1, "dropped": 1, "latency_p50_ms": 51.0,
                                     "latency_p99_ms": 51.0}


def test_short_realtime_switch() -> None:
    assert short_realtime("realtime=true") == "realtime.enabled=true"
    assert short_realtime("realtime=False") == "realtime.enabled=false"
    assert short_realtime("realtime.max_latency_ms=90") == "realtime.max_latency_ms=90"
    assert short_realtime("input=realtime=true") == "input=realtime=true"


def test_realtime_block_merges_tracker_and_pipeline_settings_and_refuses_metrics() -> None:
    cfg = OmegaConf.create({
        "tracker": {"_target_": "inpaint_anon.track.Tracker", "max_gap": 12, "backfill_frames": 6, "hold_frames": 12},
        "pipeline": {"batch_frames": 4, "queue_size": 8},
        "metrics": None,
        "realtime": {"enabled": True, "max_latency_ms": 120, "tracker": {"max_gap": 0, "backfill_frames": 0},
                     "pipeline": {"batch_frames": 1, "queue_size": 2}},
    })
    settings = _realtime_settings(cfg)
    assert (settings.enabled, settings.max_latency_ms) == (True, 120)
    assert (cfg.tracker.max_gap, cfg.tracker.backfill_frames, cfg.tracker.hold_frames) == (0, 0, 12)
    assert (cfg.pipeline.batch_frames, cfg.pipeline.queue_size) == (1, 2)
    cfg.metrics = {"lpips": True}
    with pytest.raises(ConfigError, match="metrics needs every frame of one input file per run, and a realtime "
                                          "run may drop frames; pass metrics=none, or realtime=false"):
        _realtime_settings(cfg)
    cfg.metrics, cfg.detector = None, {"cache": True}
    with pytest.raises(ConfigError, match="detector.cache=true needs every frame .* detector.cache=false, or realtime"):
        _realtime_settings(cfg)
    cfg.detector = {"cache": False}
    with pytest.raises(ConfigError, match="a scramble needs every frame .* pass another method, or realtime=false"):
        _realtime_settings(cfg, scrambles=True)
    off = OmegaConf.create({"pipeline": {"batch_frames": 4}, "realtime": {"enabled": False, "pipeline": {
        "batch_frames": 1}}})
    assert not _realtime_settings(off).enabled and off.pipeline.batch_frames == 4


# -- the pipeline ---------------------------------------------------------------------------------------


class SlowDetector(ScriptedDetector):
    """The clip's exact object masks, ``seconds`` late (a detector slower than the frame rate)."""

    def __init__(self, seconds: float, n_frames: int) -> None:
        super().__init__(lambda i: object_masks(i, SIZE, n_frames), names=NAMES, batch_size=1)
        self.seconds = seconds

    def __call__(self, frames):
        time.sleep(self.seconds)
        return super().__call__(frames)


def realtime_tracker(**kwargs):
    def make(fps: float) -> Tracker:
        return Tracker(backfill_frames=0, max_gap=0, smooth=0.0, fps=fps, **kwargs)
    return make


def run_realtime(tmp_path: Path, detector: ScriptedDetector, n_frames: int, **settings) -> tuple:
    clip = make_clip(tmp_path / "in.mp4", n_frames=n_frames, size=SIZE, fps=FPS)
    pipe = AnonymizePipeline(detector, SolidInpainter(FILL, device="cpu"), Compositor(dilate=0, feather=0),
                             tracker=realtime_tracker(), batch_frames=1, queue_size=2, progress=False,
                             realtime=RealtimeSettings(enabled=True, **settings))
    out = tmp_path / "out.mkv"
    result = pipe(clip, out, video=VideoSettings(codec="ffv1"))
    return result, out


def test_a_slow_detector_drops_frames_before_detection_and_holds_masks(tmp_path: Path) -> None:
    """Detection (0.15 s) slower than the frames (33 ms) and the bound (100 ms): frames are dropped and counted,
    the frames in between go out on held masks, and every object pixel of every written frame is filled."""
    n_frames = 30
    detector = SlowDetector(0.15, n_frames)
    result, out = run_realtime(tmp_path, detector, n_frames, max_latency_ms=100, max_detect_gap=4)
    stats = result.realtime
    assert result.frames_in == n_frames == stats["frames_in"]
    assert result.frames_out + stats["dropped"] == n_frames and stats["dropped"] > 0
    assert stats["frames_out"] == result.frames_out == stats["detected"] + stats["held_only"]
    assert stats["held_only"] > 0 and stats["detected"] == len(detector.calls) > 0
    # only frames that were written were detected; a frame on held masks is less than max_detect_gap frames
    # after the last detection (dropped frames count: the tracker's holds count frames, written or not)
    tick = Fraction(1, FPS)
    with VideoReader(out) as reader:
        written = [(round(frame.pts * reader.meta.time_base / tick), frame.rgb) for frame in reader]
    indices = [index for index, _ in written]
    assert len(written) == result.frames_out and indices == sorted(indices)
    assert set(detector.calls) <= set(indices)
    held = [index for index in indices if index not in detector.calls]
    assert held and all(0 < index - max(c for c in detector.calls if c < index) < 4 for index in held)
    for index, rgb in written:
        for name, mask in object_masks(index, SIZE, n_frames).items():
            assert (rgb[mask] == FILL).all(), f"frame {index}: {name} pixels not all filled"
    assert stats["latency_ms"]["p50"] > 0 and stats["seconds"]


def test_a_fast_run_writes_every_frame_in_time(tmp_path: Path) -> None:
    """A detector well within the bound: nothing needs dropping at a generous bound, every frame is detected
    (stride 1) and the latency percentiles stay under the bound."""
    n_frames = 15
    detector = SlowDetector(0.0, n_frames)
    result, _ = run_realtime(tmp_path, detector, n_frames, max_latency_ms=5000)
    stats = result.realtime
    assert (result.frames_out, stats["dropped"], stats["held_only"]) == (n_frames, 0, 0)
    assert detector.calls == list(range(n_frames))
    assert stats["latency_ms"]["p99"] <= 5000 and stats["fps_in"] <= FPS * 1.2  # paced at the file's rate


def test_tracker_look_ahead_and_holds_must_fit_the_bound(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "in.mp4", n_frames=2, size=SIZE, fps=FPS)
    detector = SlowDetector(0.0, 2)
    for tracker, settings, match in (
        (lambda fps: Tracker(fps=fps), {}, "look-ahead of 12 frames \\(400 ms at 30 fps\\) is longer than "
                                          "realtime.max_latency_ms=150"),
        (realtime_tracker(hold_frames=3), {"max_detect_gap": 4}, "realtime.max_detect_gap=4 is more than "
                                                                  "tracker.hold_frames=3"),
    ):
        pipe = AnonymizePipeline(detector, SolidInpainter(FILL, device="cpu"), tracker=tracker, progress=False,
                                 realtime=RealtimeSettings(enabled=True, **settings))
        with pytest.raises(ConfigError, match=match):
            pipe(clip, tmp_path / "out.mp4")
        assert not (tmp_path / "out.mp4").exists()


# -- stopping a live source -----------------------------------------------------------------------------


def test_stop_ends_a_live_stream_as_its_normal_end() -> None:
    port = free_udp_port()
    publisher = UdpPublisher(port, 100_000, fps=20)
    publisher.start()
    source = LiveSource.parse(f"udp://127.0.0.1:{port}", LiveSettings(retries=1, backoff_s=0.1, timeout_s=2.0))
    try:
        with VideoReader(source) as reader:
            received = 0
            for received, _ in enumerate(reader, start=1):
                if received == 5:
                    source.stop()
                assert received <= 6, "the reader went on after stop()"
    finally:
        publisher.stop()
        publisher.join(5)
    assert received == 5 and source.lost is None and source.stopping


def test_tracker_drop_moves_the_clock_and_never_emits_the_frame() -> None:
    """A dropped frame counts for the holds (a held mask two frames after its sighting is moved two frames along
    the track's velocity) but comes out of neither push nor flush."""
    size = (64, 48)

    def box_mask(x: int) -> Detections:
        masks = torch.zeros(1, size[1], size[0], dtype=torch.bool)
        masks[0, 10:20, x:x + 10] = True
        return Detections.from_masks(masks, class_ids=[0], names={0: "person"})

    for delay_settings in ({"backfill_frames": 0, "max_gap": 0}, {"backfill_frames": 0, "max_gap": 2}):
        tracker = Tracker(smooth=0.0, hold_dilate=0, fps=30, **delay_settings)
        out = [*tracker.push(0, box_mask(4)), *tracker.push(1, box_mask(8)), *tracker.drop(2), *tracker.drop(3),
               *tracker.push(4, None)]
        out += tracker.flush()
        assert [index for index, _ in out] == [0, 1, 4]
        held = out[-1][1]
        assert held.masks.shape[0] == 1
        # moved 4 px per frame for 3 frames from frame 1 (x 8..18 -> 20..30) and grown by 3 * 4 px
        assert held.masks[0, 15, 20 - 12].item() and held.masks[0, 15, 29 + 12].item()
        assert not held.masks[0, 15, 20 - 14].item()
        assert tracker.stats["held"] == 1 and tracker.stats["detected"] == 2

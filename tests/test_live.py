"""Live inputs and outputs on loopback (127.0.0.1 only), every wait bounded: classification, reconnects,
stream and HLS outputs, and live runs of the command (a dropped source, Ctrl-C, unreachable and unsupported)."""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from inpaint_anon.atomic import partial_owner
from inpaint_anon.errors import ConfigError, InputError
from inpaint_anon.types import Frame, VideoMeta
from inpaint_anon.video import VideoReader, VideoSettings, VideoWriter, check_output
from inpaint_anon.video.live import (
    LiveSettings,
    LiveSource,
    SourceKind,
    StreamSpec,
    output_spec,
)
from tests.clips import frame_image, make_clip
from tests.live_publish import UdpPublisher, free_udp_port
from tests.test_cli import TINY_DETECTOR, assert_user_error, cli_args, cli_env, run_cli

SIZE = (96, 64)
FAST = LiveSettings(retries=1, backoff_s=0.1, timeout_s=1.0)
LIVE_CLI = ["live.timeout_s=1", "live.retries=1", "live.backoff_s=0.1", "video.preset=ultrafast", *TINY_DETECTOR]


def count_frames(path: Path) -> int:
    with VideoReader(path) as reader:
        return sum(1 for _ in reader)


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def has_partial(folder: Path) -> bool:
    return any(partial_owner(p) is not None and p.stat().st_size > 0 for p in folder.iterdir())


# -- classification and settings ------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "kind", "target"), [
    ("clip.mp4", SourceKind.FILE, "clip.mp4"),
    ("/data/rtsp_dump.ts", SourceKind.FILE, "/data/rtsp_dump.ts"),
    ("/dev/video0", SourceKind.DEVICE, "/dev/video0"),
    ("-", SourceKind.STDIN, "pipe:0"),
    ("rtsp://cam.local:554/stream1", SourceKind.URL, "rtsp://cam.local:554/stream1"),
    ("UDP://127.0.0.1:5000", SourceKind.URL, "UDP://127.0.0.1:5000"),
    ("https://example.org/live.m3u8", SourceKind.URL, "https://example.org/live.m3u8"),
    ("srt://127.0.0.1:9000?mode=caller", SourceKind.URL, "srt://127.0.0.1:9000?mode=caller"),
])
def test_stream_spec_classifies_inputs(value: str, kind: SourceKind, target: str) -> None:
    spec = StreamSpec.parse(value)
    assert (spec.kind, spec.target, spec.is_live, spec.reconnects) == (
        kind, target, kind is not SourceKind.FILE, kind is SourceKind.URL)


def test_unsupported_input_scheme_lists_the_supported_ones() -> None:
    with pytest.raises(InputError, match=r"^input scheme ftp:// is not supported .*rtsp://, .*udp://, .*srt://"):
        StreamSpec.parse("ftp://host/clip.mp4")
    with pytest.raises(InputError, match=r"^output scheme http:// is not supported .*rtmp://.*out\.m3u8"):
        output_spec("http://host/out")


def test_output_spec_picks_muxers() -> None:
    assert (output_spec("rtmp://h/app/key").muxer, output_spec("udp://127.0.0.1:5000").muxer,
            output_spec("srt://h:9000").muxer, output_spec("rtsp://h/s").muxer) == ("flv", "mpegts", "mpegts", "rtsp")
    hls = output_spec("/tmp/x/live.m3u8")
    assert (hls.kind, hls.muxer, hls.options["hls_segment_filename"], hls.options["hls_list_size"]) == (
        "hls", "hls", "/tmp/x/live_%05d.ts", "0")
    assert (output_spec("out.mp4").kind, output_spec(Path("udp:/x")).kind) == ("file", "file")


@pytest.mark.parametrize(("values", "match"), [
    ({"retries": -1}, r"^live.retries=-1 is invalid"),
    ({"retries": True}, r"^live.retries=True is invalid"),
    ({"timeout_s": 0}, r"^live.timeout_s=0 is invalid"),
    ({"rtsp_transport": "http"}, r"^live.rtsp_transport='http' is invalid; use tcp or udp"),
    ({"buffer": 3}, r"^unknown live setting live.buffer; known: live.retries"),
])
def test_live_settings_reject_bad_values(values: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        LiveSettings.from_dict(values)


def test_backoff_doubles_up_to_a_limit() -> None:
    settings = LiveSettings(backoff_s=0.5)
    assert [settings.backoff(n) for n in (1, 2, 3, 10)] == [0.5, 1.0, 2.0, 30.0]


def test_missing_camera_is_one_clear_error() -> None:
    with pytest.raises(InputError, match=r"^camera not found: /dev/video97; list the cameras"):
        VideoReader("/dev/video97")


def test_unreachable_source_fails_within_the_timeout() -> None:
    port = free_udp_port()
    started = time.monotonic()
    with pytest.raises(InputError, match=rf"^cannot open udp://127.0.0.1:{port} \(.*\); check that the stream"):
        VideoReader(LiveSource.parse(f"udp://127.0.0.1:{port}", LiveSettings(timeout_s=0.5)))
    assert time.monotonic() - started < 10


# -- reading a live stream ------------------------------------------------------------------------------


def test_reader_reconnects_and_keeps_time_increasing(caplog: pytest.LogCaptureFixture) -> None:
    """The source stops, comes back on the same port (reconnect attempt logged, frames continue with pts after
    the last one), then stops for good: the iteration ends with every frame received and ``lost`` set."""
    port = free_udp_port()
    first = UdpPublisher(port, 30, fps=20, delay_s=0.3)
    first.start()
    source = LiveSource.parse(f"udp://127.0.0.1:{port}", LiveSettings(retries=2, backoff_s=0.1, timeout_s=1.0))
    with caplog.at_level(logging.WARNING, logger="inpaint_anon"), VideoReader(source) as reader:
        assert (reader.meta.width, reader.meta.height, reader.meta.fps, reader.meta.n_frames) == (*SIZE, 20, None)
        second = UdpPublisher(port, 30, fps=20, delay_s=2.0)  # starts after the first ended: a new session
        frames, sessions = [], []
        for frame in reader:
            frames.append(frame)
            sessions.append(source.reconnects)
            if len(frames) == 1:
                second.start()
        first.join(5)
        second.join(5)
    pts = [f.pts for f in frames]
    assert [f.index for f in frames] == list(range(len(frames)))
    assert pts[0] == 0 and all(b > a for a, b in zip(pts, pts[1:]))
    assert source.reconnects == 1 and source.frames == len(frames)
    assert 0 < sessions.count(0) <= 30 and 0 < sessions.count(1) <= 30  # both sessions delivered frames
    assert source.lost is not None and "dropped after" in str(source.lost)
    messages = [r.getMessage() for r in caplog.records]
    assert any("reconnect attempt 1 of 2" in m for m in messages)
    assert any("reconnected (attempt" in m for m in messages)


# -- writing live outputs ------------------------------------------------------------------------------


META = VideoMeta(width=SIZE[0], height=SIZE[1], fps=Fraction(20), time_base=Fraction(1, 20))


def frames(n: int) -> list[Frame]:
    return [Frame(i, i, frame_image(i, SIZE, n)) for i in range(n)]


def test_hls_output_plays_back_with_every_frame(tmp_path: Path) -> None:
    playlist = tmp_path / "live.m3u8"
    with VideoWriter(playlist, META, preset="ultrafast") as writer:
        for frame in frames(50):
            writer.write(frame)
    text = playlist.read_text()
    segments = sorted(p.name for p in tmp_path.glob("live_*.ts"))
    assert len(segments) >= 2 and all(name in text for name in segments)
    assert "#EXT-X-ENDLIST" in text and "#EXT-X-PLAYLIST-TYPE:EVENT" in text
    assert count_frames(playlist) == 50
    with pytest.raises(InputError, match=r"^output exists: .*live.m3u8; pass overwrite=true"):
        check_output(playlist)


def test_failed_hls_output_leaves_nothing(tmp_path: Path) -> None:
    other = tmp_path / "other_00000.ts"
    other.write_bytes(b"not ours")
    with pytest.raises(RuntimeError), VideoWriter(tmp_path / "live.m3u8", META, preset="ultrafast") as writer:
        for frame in frames(50):
            writer.write(frame)
        raise RuntimeError("a bug")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other_00000.ts"]


def test_udp_output_is_received_frame_for_frame() -> None:
    port = free_udp_port()
    received: list[Frame] = []
    source = LiveSource.parse(f"udp://127.0.0.1:{port}", LiveSettings(retries=0, timeout_s=1.5))

    def receive() -> None:
        with VideoReader(source) as reader:
            received.extend(reader)

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    time.sleep(0.3)
    sent = frames(30)
    with VideoWriter(f"udp://127.0.0.1:{port}?pkt_size=1316", META, preset="ultrafast") as writer:
        for frame in sent:
            writer.write(frame)
            time.sleep(0.02)
    receiver.join(10)
    assert not receiver.is_alive() and source.lost is not None
    # the receiver joins at the first keyframe it sees (frame 0 here: it listened first); every frame after it
    assert len(received) == 30
    error = np.abs(received[-1].rgb.astype(int) - sent[-1].rgb.astype(int)).mean()
    assert error < 12  # the same picture, through H.264


def test_live_codec_and_refused_output_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^video.codec=ffv1 cannot be streamed to udp://127.0.0.1:9; use"):
        check_output("udp://127.0.0.1:9", codec="ffv1")
    refused = f"rtmp://127.0.0.1:{free_udp_port()}/app/key"  # nothing listens there
    with pytest.raises(InputError, match=r"^cannot (open|write to) the output rtmp://127.0.0.1:\d+/app/key \(.*\); "
                       "check that the server is listening"), VideoWriter(refused, META, preset="ultrafast") as writer:
        writer.write(frames(1)[0])


def test_srt_fails_clearly_with_or_without_libsrt() -> None:
    """This PyAV build may lack libsrt: then one error says so and names the alternatives; with it, nothing
    listens on the port. Either way one InputError naming the URL, for the input and for the output."""
    port = free_udp_port()
    url = f"srt://127.0.0.1:{port}?mode=caller"
    with pytest.raises(InputError, match=rf"^(srt:// is not in this PyAV build's FFmpeg \({re.escape(url)}\); use "
                       rf"udp://|cannot open {re.escape(url)} )"):
        VideoReader(LiveSource.parse(url, LiveSettings(timeout_s=0.5)))
    with pytest.raises(InputError, match=r"^(srt:// is not in this PyAV build|cannot (open|write to) the output)"), \
            VideoWriter(url, META, preset="ultrafast") as writer:
        writer.write(frames(1)[0])


def test_stop_keeps_the_recording_of_a_live_source_only(tmp_path: Path) -> None:
    """Ctrl-C (a BaseException that is not an Exception) ends a live recording cleanly; for a file source, or
    on an error, the partial output is deleted as before."""
    live = LiveSource.parse("udp://127.0.0.1:9")
    kept, dropped, failed = tmp_path / "kept.mp4", tmp_path / "dropped.mp4", tmp_path / "failed.mp4"
    with pytest.raises(KeyboardInterrupt), VideoWriter(kept, META, source=live, preset="ultrafast") as writer:
        for frame in frames(7):
            writer.write(frame)
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt), VideoWriter(dropped, META, preset="ultrafast") as writer:
        writer.write(frames(1)[0])
        raise KeyboardInterrupt
    with pytest.raises(RuntimeError), VideoWriter(failed, META, source=live, preset="ultrafast") as writer:
        writer.write(frames(1)[0])
        raise RuntimeError("a bug")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.mp4"]
    assert count_frames(kept) == 7


# -- the command on a live stream -----------------------------------------------------------------------


def start_live_run(tmp_path: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli_args(f"input=udp://127.0.0.1:{port}", f"output={tmp_path / 'out.mp4'}", *LIVE_CLI, *extra,
                 run_dir=tmp_path / "run"),
        cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_live_udp_run_source_dropped(tmp_path: Path) -> None:
    """A loopback UDP stream is anonymized live; the source is killed mid-way: the reconnect attempt is logged,
    then one ``error:`` (exit 2), and the recording holds every frame received, playable, run.json written."""
    port = free_udp_port()
    publisher = UdpPublisher(port, 100_000, fps=10)
    publisher.start()
    run = start_live_run(tmp_path, port)
    try:
        wait_for(lambda: has_partial(tmp_path) or run.poll() is not None, 90, "the run to start writing")
        time.sleep(1.0)
    finally:
        publisher.stop()
        publisher.join(5)
    stdout, stderr = run.communicate(timeout=120)
    run = subprocess.CompletedProcess(run.args, run.returncode, stdout, stderr)
    assert_user_error(run, f"live source udp://127.0.0.1:{port} dropped after", "the output holds every frame")
    assert "reconnect attempt 1 of 1" in stdout + stderr  # Hydra's log goes to stdout
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["input"] == f"udp://127.0.0.1:{port}"
    assert record["frames_in"] == record["frames_out"] == count_frames(tmp_path / "out.mp4") > 0
    assert not [p for p in tmp_path.iterdir() if partial_owner(p) is not None]


def test_live_run_sigint_keeps_a_playable_recording(tmp_path: Path) -> None:
    """Ctrl-C during a live realtime run is its normal end: exit 0, the recording of the frames so far is
    finalized and playable, and run.json says the stream was stopped and holds the realtime stats (frames out
    plus frames dropped before detection = frames in)."""
    port = free_udp_port()
    publisher = UdpPublisher(port, 100_000, fps=10)
    publisher.start()
    run = start_live_run(tmp_path, port, "live.timeout_s=5", "realtime=true", "realtime.max_latency_ms=2000")
    try:
        wait_for(lambda: has_partial(tmp_path) or run.poll() is not None, 90, "the run to start writing")
        time.sleep(1.0)
        run.send_signal(signal.SIGINT)
        stdout, stderr = run.communicate(timeout=60)
    finally:
        publisher.stop()
        publisher.join(5)
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, stderr[-2000:]
    assert stdout.strip().splitlines()[-1] == str(tmp_path / "out.mp4")
    assert "SIGINT: stopping udp://127.0.0.1" in stdout + stderr
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["live"]["ended"] == "stopped" and record["live"]["frames"] == record["frames_in"]
    stats = record["realtime"]
    assert stats["frames_out"] == record["frames_out"] == count_frames(tmp_path / "out.mp4") > 0
    assert stats["frames_out"] + stats["dropped"] == stats["frames_in"] == record["frames_in"]
    assert record["config"]["tracker"]["max_gap"] == 0 and record["config"]["pipeline"]["batch_frames"] == 1
    assert not [p for p in tmp_path.iterdir() if partial_owner(p) is not None]


@pytest.mark.slow
def test_live_run_stdin_to_hls(tmp_path: Path) -> None:
    """``input=-`` (a Matroska clip piped on stdin) into an HLS playlist: the end of stdin is the
    normal end (exit 0), every frame is in the playlist's segments, run.json names ``-`` as the input. Slow: one
    more command start (about 20 s on a loaded 2-core machine); the HLS writer is checked in-process above."""
    make_clip(tmp_path / "clip.mkv", n_frames=12, size=SIZE)
    playlist = tmp_path / "www" / "live.m3u8"
    playlist.parent.mkdir()
    with (tmp_path / "clip.mkv").open("rb") as stdin:
        proc = subprocess.run(cli_args("input=-", f"output={playlist}", *LIVE_CLI, run_dir=tmp_path / "run"),
                              cwd=tmp_path, env=cli_env(), stdin=stdin, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == str(playlist)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (record["input"], record["output"], record["frames_in"], record["frames_out"]) == (
        "-", str(playlist), 12, 12)
    assert count_frames(playlist) == 12 and "#EXT-X-ENDLIST" in playlist.read_text()


@pytest.mark.slow
def test_live_run_unsupported_scheme(tmp_path: Path) -> None:
    """An unsupported scheme: one ``error:`` line listing the supported ones, exit 2, no output file. Slow: a
    command start for what ``test_unsupported_input_scheme_lists_the_supported_ones`` checks in-process."""
    proc = run_cli("input=ftp://127.0.0.1/clip.mp4", "output=out.mp4", *LIVE_CLI, cwd=tmp_path)
    assert_user_error(proc, "input scheme ftp:// is not supported", "rtsp://", "udp://", "/dev/video0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


@pytest.mark.slow
def test_live_run_unreachable_source(tmp_path: Path) -> None:
    """An unreachable URL: one ``error:`` line naming it and the fix, exit 2, no output file. Slow: the source is
    opened once, by the pipeline, after the models are built (the reader-level test above is the fast check)."""
    port = free_udp_port()
    proc = run_cli(f"input=udp://127.0.0.1:{port}", "output=out.mp4", *LIVE_CLI, cwd=tmp_path)
    assert_user_error(proc, f"cannot open udp://127.0.0.1:{port}", "check that the stream is running")
    assert not (tmp_path / "out.mp4").exists()
    assert not [p for p in tmp_path.iterdir() if partial_owner(p) is not None]


# -- the run's input and output resolution -------------------------------------------------------------


def compose_run(*overrides: str) -> DictConfig:
    """conf/run.yaml composed with ``overrides`` (only Hydra imported: tests.test_config imports every model)."""
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        return compose(config_name="run", overrides=["input=x.mp4", *overrides])


def test_run_resolves_live_inputs_and_stream_outputs() -> None:
    """A live input becomes a LiveSource with the ``live:`` settings and needs an output; a stream URL output
    stays the string given (a Path would fold ``//``); bad ``live:`` values are ConfigErrors."""
    from inpaint_anon.run import _resolve_paths

    source, output = _resolve_paths(compose_run("input=udp://127.0.0.1:5000", "output=udp://127.0.0.1:5001",
                                                "live.retries=7", "live.rtsp_transport=udp"))
    assert isinstance(source, LiveSource)
    assert (str(source), source.settings.retries, source.settings.rtsp_transport, output) == (
        "udp://127.0.0.1:5000", 7, "udp", "udp://127.0.0.1:5001")
    source, output = _resolve_paths(compose_run("input=-", "output=www/live.m3u8"))
    assert (source.spec.kind, output) == (SourceKind.STDIN, Path("www/live.m3u8"))
    with pytest.raises(InputError, match=r"^a live input \(/dev/video0\) needs an output; pass output="):
        _resolve_paths(compose_run("input=/dev/video0"))
    with pytest.raises(ConfigError, match=r"^live.retries=-2 is invalid"):
        _resolve_paths(compose_run("input=rtsp://cam/s", "output=o.mp4", "live.retries=-2"))
    with pytest.raises(InputError, match=r"^input scheme gopher:// is not supported"):
        _resolve_paths(compose_run("input=gopher://cam/s", "output=o.mp4"))


def test_run_yaml_live_block_matches_the_defaults() -> None:
    """conf/run.yaml's ``live:`` block holds every LiveSettings field, at the dataclass defaults."""
    assert LiveSettings.from_dict(OmegaConf.to_container(compose_run().live)) == LiveSettings()


def test_live_audio_is_carried_into_the_recording(tmp_path: Path) -> None:
    """A loopback stream with AAC audio, read live and recorded: the recording has the audio stream, its packets
    on the video's clock (rebased to start at 0) and covering the video up to the stop."""
    from evaluation.bench.realtime import Publisher

    clip = make_clip(tmp_path / "clip.mp4", n_frames=60, size=SIZE, fps=20, audio=True)
    stream = tmp_path / "clip.ts"
    with av.open(str(clip)) as src, av.open(str(stream), "w", format="mpegts") as out:
        copies = {s.index: out.add_stream_from_template(s) for s in src.streams if s.type in ("video", "audio")}
        for packet in src.demux():
            if packet.dts is not None:
                packet.stream = copies[packet.stream_index]
                out.mux(packet)
    port = free_udp_port()
    source = LiveSource.parse(f"udp://127.0.0.1:{port}", FAST)
    publisher = Publisher(stream, port)
    threading.Timer(0.5, publisher.start).start()
    out = tmp_path / "rec.mp4"
    try:
        with VideoReader(source) as reader, VideoWriter(out, reader.meta, source=source,
                                                        video=VideoSettings(preset="ultrafast")) as writer:
            assert reader.meta.has_audio and source.audio is not None
            for count, frame in enumerate(reader, start=1):
                writer.write(frame)
                if count == 30:
                    source.stop()
    finally:
        publisher.join(10)
    with av.open(str(out)) as result:
        video_s = float(result.streams.video[0].duration * result.streams.video[0].time_base)
        audio = result.streams.audio[0]
        assert audio.codec_context.name == "aac"
        starts = [float(p.pts * p.time_base) for p in result.demux(audio) if p.size]
    assert source.audio.copied == len(starts) > 10 and source.audio.dropped == 0
    assert starts == sorted(starts) and 0 <= starts[0] < 0.2
    assert abs(starts[-1] - video_s) < 0.5, (starts[-1], video_s)

"""Live real-time benchmark: a 720p 30 fps stream on loopback through ``+experiment=traffic realtime=true``.

    python -m evaluation.bench.realtime                       # 720p30, 20 s, strides 1 and 3
    python -m evaluation.bench.realtime --strides 3 --seconds 60 --max-latency-ms 200
    python -m evaluation.bench.realtime --set inpainter=pixelate  # any extra run override

1. the stream: the photo clip (synthetic pans and zooms over real photographs with faces,
   :func:`~evaluation.bench.common.photo_clip`) at ``--size`` and ``--fps``, encoded once to MPEG-TS (H.264,
   a keyframe every second, x264 zerolatency: what a camera sends);
2. per stride: the run command (``python -m inpaint_anon.run +experiment=traffic realtime=true
   input=udp://127.0.0.1:PORT``) starts and loads its models; then the stream is published to its UDP port in real
   time (packets paced by their timestamps, like ``ffmpeg -re``); when the stream ends the run gets SIGINT, which
   ends a live run normally (exit 0, run.json written);
3. from run.json's ``realtime`` block: sustained fps out (mean of the per-second rows after ``--warmup-s``),
   frames in / out / dropped (dropped before detection), frames detected / on held masks, latency p50 / p99
   (decode to encoder), and the run's CPU use while the stream played (cores, from /proc).

"frames without masks" is 0 by construction: the pipeline has no path from decoding to the encoder that skips
detection-or-held-masks and the compositor; the bench checks that the run recorded final detections for exactly
the frames it wrote (``detections.dets``). Targets (issue 11): sustained 30 fps out, p99 < 200 ms on 2 CPU cores.
Writes ``--out`` (JSON) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from evaluation.bench.common import parse_size, photo_clip, write_report
from inpaint_anon.records import DetectionReader
from tests.live_publish import free_udp_port


def udp_bound(port: int) -> bool:
    """True when some socket is bound to UDP ``port`` (Linux /proc/net/udp; reading it never takes the port)."""
    lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    return any(int(line.split()[1].rsplit(":", 1)[1], 16) == port for line in lines)


def wait_listening(port: int, proc: subprocess.Popen, timeout_s: float) -> None:
    """Wait until the run has bound UDP ``port`` (it opened its source)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if udp_bound(port):
            return
        time.sleep(0.2)
    if proc.poll() is not None:
        raise SystemExit(f"the live run ended (exit {proc.returncode}) before opening udp://127.0.0.1:{port}")
    raise SystemExit(f"the live run did not open udp://127.0.0.1:{port} within {timeout_s:g} s")


def stream_file(clip: Path, path: Path, fps: int) -> Path:
    """``clip`` re-encoded once as the MPEG-TS a camera would send: H.264 ultrafast zerolatency, keyframe every
    second, at ``fps``."""
    if path.exists():
        return path
    with av.open(str(clip)) as source, av.open(str(path), "w", format="mpegts") as out:
        stream = out.add_stream("libx264", rate=fps, options={
            "preset": "ultrafast", "tune": "zerolatency", "g": str(fps), "keyint_min": str(fps), "crf": "23"})
        decoded = source.streams.video[0]
        stream.width, stream.height, stream.pix_fmt = decoded.width, decoded.height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        for index, frame in enumerate(source.decode(decoded)):
            frame = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), "rgb24")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


class Publisher(threading.Thread):
    """Sends the packets of an MPEG-TS file (its video and audio streams) to ``udp://127.0.0.1:port``, paced by
    their timestamps (like ``ffmpeg -re``). ``sent`` counts video packets."""

    def __init__(self, path: Path, port: int) -> None:
        super().__init__(daemon=True)
        self.path, self.url = path, f"udp://127.0.0.1:{port}?pkt_size=1316"
        self.sent = 0
        self.started = self.ended = 0.0

    def run(self) -> None:
        with av.open(str(self.path)) as source, av.open(self.url, "w", format="mpegts") as out:
            streams = [s for s in source.streams if s.type in ("video", "audio")]
            copies = {s.index: out.add_stream_from_template(s) for s in streams}
            self.started = time.monotonic()
            first = None
            for packet in source.demux(*streams):
                if packet.pts is None or not packet.size:
                    continue
                seconds = float(packet.pts * packet.time_base)
                first = seconds if first is None else first
                time.sleep(max(0.0, self.started + seconds - first - time.monotonic()))
                video = packet.stream.type == "video"
                packet.stream = copies[packet.stream_index]
                out.mux(packet)
                self.sent += video
        self.ended = time.monotonic()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its threads so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_live(stream: Path, work: Path, stride: int, args: argparse.Namespace) -> dict[str, Any]:
    """One live run of the command on ``stream``; the row of the table."""
    port = free_udp_port()
    run_dir, out = work / f"run_stride{stride}", work / f"out_stride{stride}.mp4"
    shutil.rmtree(run_dir, ignore_errors=True)  # a run folder holding a run.json is refused
    command = [sys.executable, "-m", "inpaint_anon.run", "+experiment=traffic", "realtime=true",
               f"realtime.max_latency_ms={args.max_latency_ms}", f"input=udp://127.0.0.1:{port}", f"output={out}",
               f"detector.stride={stride}", "live.timeout_s=30", "live.retries=0", "overwrite=true",
               "video.preset=ultrafast", "pipeline.progress=false", f"hydra.run.dir={run_dir}", *args.set]
    env = {**os.environ, "YOLO_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    log = (work / f"run_stride{stride}.log").open("w")
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        wait_listening(port, proc, args.startup_s)  # models load before the source is opened
        time.sleep(0.5)
        publisher = Publisher(stream, port)
        cpu_start = cpu_seconds(proc.pid)
        publisher.start()
        publisher.join(timeout=args.seconds * 3 + 60)
        cpu_used = cpu_seconds(proc.pid) - cpu_start
        time.sleep(1.0)  # the last frames through the pipeline
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    if proc.returncode != 0:
        tail = (work / f"run_stride{stride}.log").read_text()[-2000:]
        raise SystemExit(f"the live run (stride {stride}) failed with exit {proc.returncode}:\n{tail}")
    record = json.loads((run_dir / "run.json").read_text())
    stats = record["realtime"]
    steady = [row for row in stats["seconds"] if row["t"] >= args.warmup_s and row["fps_in"] > 0]
    recorded = DetectionReader(run_dir / "detections.dets").n_frames or 0
    streamed = max(publisher.ended - publisher.started, 1e-9)
    return {
        "stride": stride, "size": args.size, "fps_stream": args.fps, "seconds": round(streamed, 1),
        "fps_out_sustained": round(sum(r["fps_out"] for r in steady) / len(steady), 2) if steady else 0.0,
        "fps_in": stats["fps_in"], "frames_in": stats["frames_in"], "frames_out": stats["frames_out"],
        "dropped": stats["dropped"], "dropped_pct": round(100 * stats["dropped"] / max(stats["frames_in"], 1), 1),
        "detected": stats["detected"], "held_only": stats["held_only"],
        "p50_ms": stats["latency_ms"]["p50"], "p99_ms": stats["latency_ms"]["p99"],
        "cpu_cores": round(cpu_used / streamed, 2), "frames_recorded": recorded,
        "frames_without_masks": stats["frames_out"] - recorded,
        "detector_backends": record.get("detector_backends", {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=20.0, help="stream length")
    parser.add_argument("--strides", type=int, nargs="+", default=[1, 3], help="detector.stride of each run")
    parser.add_argument("--max-latency-ms", type=float, default=150.0)
    parser.add_argument("--warmup-s", type=float, default=3.0, help="per-second rows left out of 'sustained'")
    parser.add_argument("--startup-s", type=float, default=300.0, help="longest wait for the run to open its source")
    parser.add_argument("--set", nargs="*", default=[], help="extra run overrides (key=value)")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=Path("evaluation/bench/results/realtime.json"))
    args = parser.parse_args()
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="bench_realtime_") as temp:
        work = args.work or Path(temp)
        work.mkdir(parents=True, exist_ok=True)
        n_frames = int(args.fps * args.seconds)
        clip = work / f"photos_{args.size}_{n_frames}.mp4"
        photo_clip(clip, size, n_frames, fps=args.fps)
        stream = stream_file(clip, work / f"stream_{args.size}_{args.fps}.ts", args.fps)
        rows = [run_live(stream, work, stride, args) for stride in args.strides]
    columns = ["stride", "size", "fps_stream", "fps_out_sustained", "frames_in", "frames_out", "dropped",
               "dropped_pct", "detected", "held_only", "p50_ms", "p99_ms", "cpu_cores", "frames_without_masks"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    write_report(args.out, "realtime", rows, max_latency_ms=args.max_latency_ms, overrides=args.set,
                 cpu_count=os.cpu_count())


if __name__ == "__main__":
    main()

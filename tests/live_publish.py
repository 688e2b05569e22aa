"""Loopback publishers for live tests: a generated clip streamed in real time over UDP (MPEG-TS) by PyAV."""

from __future__ import annotations

import socket
import threading
import time
from fractions import Fraction

import av

from tests.clips import frame_image


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class UdpPublisher(threading.Thread):
    """Streams ``n_frames`` generated street frames (tests.clips.frame_image) to ``udp://127.0.0.1:port`` as
    H.264 in MPEG-TS at ``fps`` in real time, a keyframe every ``gop`` frames (a receiver that joins late
    starts at the next one). ``stop()`` ends it early (the source "dies"); ``sent`` counts frames sent."""

    def __init__(self, port: int, n_frames: int, *, fps: int = 20, size: tuple[int, int] = (96, 64),
                 gop: int = 5, delay_s: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.url = f"udp://127.0.0.1:{port}?pkt_size=1316"
        self.n_frames, self.fps, self.size, self.gop, self.delay_s = n_frames, fps, size, gop, delay_s
        self.sent = 0
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        if self._stop_event.wait(self.delay_s):
            return
        out = av.open(self.url, "w", format="mpegts")
        stream = out.add_stream("libx264", rate=self.fps, options={
            "preset": "ultrafast", "tune": "zerolatency", "g": str(self.gop), "keyint_min": str(self.gop)})
        stream.width, stream.height, stream.pix_fmt = *self.size, "yuv420p"
        stream.codec_context.time_base = Fraction(1, self.fps)
        start = time.monotonic()
        try:
            for index in range(self.n_frames):
                if self._stop_event.is_set():
                    break
                frame = av.VideoFrame.from_ndarray(frame_image(index, self.size, self.n_frames), "rgb24")
                frame.pts = index
                out.mux(stream.encode(frame))
                self.sent += 1
                time.sleep(max(0.0, start + (index + 1) / self.fps - time.monotonic()))
            out.mux(stream.encode(None))
        finally:
            out.close()

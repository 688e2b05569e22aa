"""Make ``data/street.mp4`` from OpenCV's ``vtest.avi`` sample (Debian package ``opencv-doc``).

    apt-get update && apt-get install -y --no-install-recommends opencv-doc
    python data/make_sample.py            # writes data/street.mp4 and prints its sha256

Cuts ``--seconds`` seconds starting at ``--start`` seconds (frame-exact: the source is 10 fps with a frame
every 1/10 s), and re-encodes them with PyAV's libx264 to H.264 yuv420p in .mp4, at the source's size and
frame rate, without audio (the source has none). One encoder thread,
so a given PyAV/libx264 build writes the same bytes every time.
"""

from __future__ import annotations

import argparse
import hashlib
from fractions import Fraction
from pathlib import Path

import av

SOURCE = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
OUTPUT = Path(__file__).resolve().parent / "street.mp4"


def make_sample(source: Path, output: Path, start: float, seconds: float, crf: int, preset: str) -> str:
    """Re-encode ``seconds`` of ``source`` from ``start`` into ``output``; return the output's sha256 (hex)."""
    if not source.exists():
        raise SystemExit(f"{source} not found; install it with: apt-get install opencv-doc")
    with av.open(str(source)) as src:
        stream = src.streams.video[0]
        fps = Fraction(stream.average_rate)
        first, count = round(start * fps), round(seconds * fps)
        tmp = output.with_name(output.name + ".partial.mp4")
        with av.open(str(tmp), "w") as dst:
            out = dst.add_stream("libx264", rate=fps)
            out.width, out.height, out.pix_fmt = stream.width, stream.height, "yuv420p"
            out.time_base = out.codec_context.time_base = 1 / fps
            out.thread_count = 1
            out.options = {"crf": str(crf), "preset": preset}
            written = 0
            for index, frame in enumerate(src.decode(stream)):
                if index < first:
                    continue
                if written == count:
                    break
                # a fresh frame with the same pixels: no picture type or side data carried from the source
                image = av.VideoFrame.from_ndarray(frame.to_ndarray(format="yuv420p"), format="yuv420p")
                image.pts = written
                dst.mux(out.encode(image))
                written += 1
            dst.mux(out.encode(None))
    if written != count:
        tmp.unlink()
        raise SystemExit(f"source has only {first + written} frames; choose an earlier --start")
    tmp.replace(output)
    return hashlib.sha256(output.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--start", type=float, default=8.0, help="seconds into the source")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--crf", type=int, default=23)
    parser.add_argument("--preset", default="medium")
    args = parser.parse_args()
    digest = make_sample(args.source, args.output, args.start, args.seconds, args.crf, args.preset)
    print(f"{args.output}  {args.output.stat().st_size} bytes  sha256 {digest}")


if __name__ == "__main__":
    main()

"""The web UI against the CLI: one 10 s 720p clip anonymized both ways, same config.

    python -m evaluation.bench.ui_vs_cli                          # detector=centerface (shipped), blur, CPU
    python -m evaluation.bench.ui_vs_cli --seconds 4 --set device=cuda

1. the clip: :func:`~evaluation.bench.common.photo_clip` (real face photos under synthetic camera motion),
   ``--size`` at 25 fps for ``--seconds``;
2. CLI: ``python -m inpaint_anon.run ARGS input=clip output=out.mp4``, timed from start to exit (model load
   included) and by its run.json ``wall_seconds`` (the pipeline alone);
3. UI: ``python -m inpaint_anon.ui ARGS port=P`` is started and waited for (its models load once, not timed); the
   request (upload, run, download) through gradio_client's ``/video`` endpoint is timed.

Prints the three times and the ratios UI / CLI; writes ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from evaluation.bench.common import parse_size, photo_clip, write_report

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def time_cli(clip: Path, work: Path, args: list[str]) -> tuple[float, float]:
    """(seconds from start to exit, the run's own wall_seconds)."""
    run_dir = work / "cli_run"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "inpaint_anon.run", *args, f"input={clip}", f"output={work / 'cli.mp4'}",
                    f"hydra.run.dir={run_dir}", "pipeline.progress=false"], check=True, cwd=work)
    total = time.perf_counter() - started
    return total, float(json.loads((run_dir / "run.json").read_text())["wall_seconds"])


def time_ui(clip: Path, work: Path, args: list[str], start_timeout_s: float = 300.0) -> float:
    """Seconds of one /video request (upload, run, download) to a started UI server."""
    from gradio_client import Client, handle_file

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "inpaint_anon.ui", *args, f"port={port}",
                               f"work_dir={work / 'ui_work'}", f"hydra.run.dir={work / 'ui_run'}"], cwd=work)
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the UI server did not start") from None
                time.sleep(0.5)
        client = Client(f"http://127.0.0.1:{port}/", download_files=str(work / "ui_downloads"), verbose=False)
        started = time.perf_counter()
        client.predict(handle_file(str(clip)), 1.0, 8, 1.0, "blur", api_name="/video")
        return time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=(1280, 720))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--set", action="append", default=[], help="extra config override (both runs)")
    parser.add_argument("--out", type=Path, default=ROOT / "evaluation" / "bench" / "results" / "ui_vs_cli.json")
    options = parser.parse_args()
    args = ["detector=centerface", "inpainter=blur", "tracker=none", *options.set]
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    with tempfile.TemporaryDirectory(prefix="ui_vs_cli_") as tmp:
        work = Path(tmp)
        clip = work / "clip.mp4"
        frames = round(25 * options.seconds)
        photo_clip(clip, options.size, n_frames=frames, fps=25)
        cli_total, cli_wall = time_cli(clip, work, args)
        ui_request = time_ui(clip, work, args)
    row = {"size": f"{options.size[0]}x{options.size[1]}", "frames": frames, "args": " ".join(args),
           "cli_total_s": round(cli_total, 2), "cli_pipeline_s": round(cli_wall, 2),
           "ui_request_s": round(ui_request, 2), "ui_over_cli_total": round(ui_request / cli_total, 3),
           "ui_over_cli_pipeline": round(ui_request / cli_wall, 3)}
    print(f"CLI (start to exit, model load included): {cli_total:.2f} s; its pipeline alone: {cli_wall:.2f} s")
    print(f"UI request (upload, run, download; models already loaded): {ui_request:.2f} s")
    print(f"ratio UI / CLI total: {row['ui_over_cli_total']:.3f}; UI / CLI pipeline: {row['ui_over_cli_pipeline']:.3f}")
    write_report(options.out, "ui_vs_cli", [row])


if __name__ == "__main__":
    main()

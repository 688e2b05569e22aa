"""Corpus benchmark: throughput of a corpus job (frames/s over the corpus) with 1 and 2 workers, and the scheduling
overhead per file.

Run from the repository root:

    python -m evaluation.bench.corpus                        # 20 generated 720p clips, 48 frames each, CPU
    python -m evaluation.bench.corpus --clips 4 --frames 12  # a quick look
    python -m evaluation.bench.corpus --device cuda          # GPU actors; rows up to the number of GPUs

The clips are generated (moving person and car, AAC audio). The fast path: the scripted square detector of the
tests (``tests/conf/detector/square.yaml``: no model, so the numbers are the engine's and the codec's, not a
detector's) and blur, through ``python -m inpaint_anon.corpus`` in process: once with ``launcher=local`` (one
in-process worker), then on one local Ray (started once, its start-up time reported apart) with ``ray.workers``
1, 2 (and every count up to the GPUs with ``--device cuda`` on a machine with more than one).

Columns: ``wall_s`` the job's time (Ray rows: actor start-up and model loads included, Ray's own start not),
``fps`` frames / wall_s, ``file_s`` the sum of the files' own times (each one as a single-file run measures it),
``overhead_per_file_s`` = (wall_s x workers - file_s) / files: worker time not spent in a file (start-up,
scheduling, the report, idle slots at the end). Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from evaluation.bench.common import parse_size, write_report
from tests.clips import make_clip

REPO = Path(__file__).resolve().parents[2]
COLUMNS = ["launcher", "workers", "device", "files", "frames", "wall_s", "fps", "file_s", "overhead_per_file_s"]


def _job(work: Path, name: str, clips: Path, device: str, *args: str) -> dict:
    from inpaint_anon.corpus_run import main as corpus_main

    out = work / name
    code = corpus_main([f"hydra.searchpath=[file://{REPO / 'tests' / 'conf'}]", "detector=square", "tracker=none",
                        "pipeline.progress=false", f"device={device}", f"inputs={clips}", f"output_dir={out}",
                        f"hydra.run.dir={work / 'runs' / name}", *args])
    if code != 0:
        raise SystemExit(f"corpus job {name} exited {code}")
    return json.loads((out / "corpus.json").read_text())


def _row(document: dict, device: str) -> dict:
    totals, workers = document["totals"], document["workers"]
    files = totals["done"]
    overhead = (totals["wall_seconds"] * workers - totals["file_seconds"]) / files if files else 0.0
    return {"launcher": document["launcher"], "workers": workers, "device": device, "files": files,
            "frames": totals["frames"], "wall_s": totals["wall_seconds"], "fps": totals["fps"],
            "file_s": totals["file_seconds"], "overhead_per_file_s": round(overhead, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=20, help="generated clips in the corpus")
    parser.add_argument("--frames", type=int, default=48, help="frames per clip")
    parser.add_argument("--size", default="1280x720", help="clip size WxH")
    parser.add_argument("--workers", type=int, nargs="+", default=None,
                        help="Ray worker counts (default 1 2, and up to the GPUs with --device cuda)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--out", type=Path, default=Path("experiments/bench/corpus.json"))
    args = parser.parse_args()

    import ray
    import torch

    size = parse_size(args.size)
    gpus = torch.cuda.device_count() if args.device.startswith("cuda") else 0
    counts = args.workers or sorted({1, 2, *range(1, gpus + 1)})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clips = work / "clips"
        clips.mkdir()
        for index in range(args.clips):
            make_clip(clips / f"clip_{index:03d}.mp4", n_frames=args.frames, size=size, fps=25, audio=True)
        rows.append(_row(_job(work, "local", clips, args.device, "launcher=local"), args.device))
        print("done: local", flush=True)
        started = time.perf_counter()
        path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
        ray.init(num_cpus=os.cpu_count(), num_gpus=gpus, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path}})
        ray_start = round(time.perf_counter() - started, 3)
        try:
            for count in counts:
                document = _job(work, f"ray{count}", clips, args.device, "launcher=ray", f"ray.workers={count}")
                rows.append(_row(document, args.device))
                print(f"done: ray x{count}", flush=True)
        finally:
            ray.shutdown()
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in COLUMNS) + " |")
    print(f"Ray start-up (not in wall_s): {ray_start} s")
    write_report(args.out, "corpus", rows, ray_start_s=ray_start, clips=args.clips, frames_per_clip=args.frames,
                 size=args.size)


if __name__ == "__main__":
    main()

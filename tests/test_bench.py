"""Every benchmark script runs from a checkout with its documented command (tiny sizes here) and writes JSON.

The figures themselves are not checked: speed is measured by running the scripts, never by tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_bench(name: str, *args: str, out: Path) -> dict:
    env = {**os.environ, "YOLO_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", f"evaluation.bench.{name}", *args, "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "|---" in proc.stdout, "a markdown table is printed"
    return json.loads(out.read_text())


def test_fast_path_bench(tmp_path: Path) -> None:
    report = run_bench("fast_path", "--sizes", "160x120", "--frames", "6", "--imgsz", "64", "--preset", "ultrafast",
                       "--device", "cpu", "--clip", str(ROOT / "data" / "street.mp4"), out=tmp_path / "fast.json")
    assert [row["frames"] for row in report["rows"]] == [6, 50]
    assert all(row["fps"] > 0 and row["peak_rss_mib"] > 0 for row in report["rows"])


@pytest.mark.slow  # CI time; `pytest -m slow`
def test_generative_bench_compares_with_diffusers(tmp_path: Path) -> None:
    report = run_bench("generative", "--size", "160x120", "--frames", "3", "--steps", "1", "--device", "cpu",
                       out=tmp_path / "gen.json")
    (row,) = report["rows"]
    assert row["crops"] > 0 and row["diffusers_s_per_frame"] > 0 and row["ratio"] > 0


@pytest.mark.slow  # CI time; `pytest -m slow`
def test_memory_bench(tmp_path: Path) -> None:
    report = run_bench("memory", "--frames", "40", "--size", "160x120", "--every", "20", "--warmup", "0",
                       "--imgsz", "64", "--preset", "ultrafast", out=tmp_path / "memory.json")
    assert report["summary"]["frames"] == 40
    assert [s["point"] for s in report["rows"]][:2] == ["start", "models built"]


@pytest.mark.slow  # CI time; `pytest -m slow`
def test_temporal_bench(tmp_path: Path) -> None:
    report = run_bench("temporal", "--size", "160x120", "--frames", "30", "--device", "cpu",
                       out=tmp_path / "temporal.json")
    assert [(row["stride"], row["frames"]) for row in report["rows"]] == [(1, 30), (3, 30)]
    leaked = {row["tracker"]: row["leaked_frames"] for row in report["leaks"]}
    assert leaked[True] == 0 and leaked[False] > 0  # the tracker holds masks through the scripted misses


@pytest.mark.slow
def test_deface_compare_bench(tmp_path: Path) -> None:
    """Needs PyPI (deface goes into its own venv) unless experiments/bench/deface-venv exists already."""
    venv = ROOT / "experiments" / "bench" / "deface-venv"
    if not (venv / "bin" / "deface").exists():
        pytest.skip("deface is not installed in experiments/bench/deface-venv (the benchmark installs it from PyPI)")
    report = run_bench("deface_compare", "--size", "160x120", "--frames", "10", "--imgsz", "64",
                       "--photo-size", "640x360", "--photo-frames", "6",
                       "--deface-venv", str(venv), out=tmp_path / "deface.json")
    assert [(row["clip"], row["ours"]) for row in report["rows"]] == [
        ("generated 160x120", "yolov8n-seg"), ("generated 160x120", "faces-only"),
        ("photo clip 640x360", "yolov8n-seg"), ("photo clip 640x360", "faces-only")]
    assert all(row["ours_fps"] > 0 and row["deface_fps"] > 0 and row["ratio_net"] > 0 for row in report["rows"])
    no_faces, faces = report["rows"][1], report["rows"][3]
    assert no_faces["deface_boxes"] == 0 and no_faces["ours_regions"] == 0
    assert faces["deface_boxes"] >= 8 and faces["deface_covered"] == 1.0  # 2 + 1 + 1 faces in 2 frames each

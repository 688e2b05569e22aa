"""The documented sweep, end to end on CPU: a multirun of the generative engine, evaluated, then reported."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli import TINY_DETECTOR

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_street_steps_sweep_then_report(tmp_path: Path) -> None:
    """conf/sweep/street_steps.yaml's CPU smoke version (fewer jobs): one folder per job with run.json and
    metrics.json, and evaluation/report.py turns the sweep folder into one table row per job."""
    env = {**os.environ, "YOLO_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "-m", "inpaint_anon.run", "+experiment=street", "~detectors.plates", "+sweep=street_steps",
         "inpainter=tiny",
         "inpainter.steps=1,2", "inpainter.guidance_scale=7.5", "tracker=none", *TINY_DETECTOR,
         "metrics=default", "metrics.download=false", f"paths.data={ROOT / 'data'}", f"paths.root={tmp_path}",
         f"hydra.sweep.dir={sweep}", "video.preset=ultrafast"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and (p / "run.json").is_file())
    assert len(jobs) == 2
    assert sorted(json.loads((job / "run.json").read_text())["config"]["inpainter"]["steps"] for job in jobs) == [1, 2]
    assert all((job / "metrics.json").is_file() and (job / "anon.mp4").is_file() for job in jobs)

    report = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "evaluation.report", str(sweep), "--out", str(report), "--no-images"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with (report / "report.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    assert (report / "report.md").is_file() and (report / "report.tex").is_file()

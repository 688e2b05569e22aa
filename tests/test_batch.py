"""Folders and archives (inpaint_anon.batch): round trips with mixed images and videos and a broken file, zip-slip,
zip bombs, corrupt archives, unsupported files, output inside input; the CLI's exit 1 and run.json ``batch``."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inpaint_anon import run as run_module
from inpaint_anon.batch import (
    BatchFailed,
    check_paths,
    default_output,
    entry_problem,
    is_batch,
    output_name,
    run_batch,
)
from inpaint_anon.errors import InputError
from inpaint_anon.inpaint.fast import BlurInpainter
from inpaint_anon.pipeline import AnonymizePipeline
from inpaint_anon.track import Tracker
from inpaint_anon.types import Detections, Frame, RunResult
from inpaint_anon.video import VideoReader
from tests.clips import make_animation, make_clip, make_image

REPO = Path(__file__).resolve().parents[1]
SIZE = (96, 64)  # width, height of every test file
VIDEO_FRAMES = 6


class SquareDetector:
    """One ``face`` in every frame: the middle third of the frame (any frame size)."""

    names = {0: "face"}
    batch_size = 4

    def __call__(self, frames: Sequence[Frame]) -> list[Detections]:
        found = []
        for frame in frames:
            mask = np.zeros((frame.height, frame.width), bool)
            mask[frame.height // 3: 2 * frame.height // 3, frame.width // 3: 2 * frame.width // 3] = True
            found.append(Detections.from_masks(mask[None], [0], self.names))
        return found


def square_detector() -> SquareDetector:
    """Hydra target of tests/conf/detector/square.yaml (the CLI tests)."""
    return SquareDetector()


def pipeline(tracker: bool = False) -> AnonymizePipeline:
    return AnonymizePipeline(SquareDetector(), BlurInpainter(strength=2.0, device="cpu"), progress=False,
                             tracker=Tracker if tracker else None)


def anonymizer(pipe: AnonymizePipeline):
    def anonymize(in_file: Path, out_file: Path) -> RunResult:
        return pipe(in_file, out_file)
    return anonymize


def media_tree(root: Path) -> dict[str, Path]:
    """A tree of mixed files, sorted: a.jpg (EXIF with GPS), b_broken.jpg, c/clip.mp4, c/d/e.png, notes.txt."""
    root.mkdir(parents=True)
    (root / "c" / "d").mkdir(parents=True)
    files = {
        "a.jpg": make_image(root / "a.jpg", SIZE, exif={"Make": "TestCam", "GPSInfo": {1: "N", 2: (48.0, 51.0, 30.0)}}),
        "b_broken.jpg": root / "b_broken.jpg",
        "c/clip.mp4": make_clip(root / "c" / "clip.mp4", n_frames=VIDEO_FRAMES, size=SIZE),
        "c/d/e.png": make_image(root / "c" / "d" / "e.png", SIZE),
        "notes.txt": root / "notes.txt",
    }
    files["b_broken.jpg"].write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    files["notes.txt"].write_text("hello")
    return files


def zipped(files: dict[str, Path], target: Path) -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for name, path in files.items():
            archive.write(path, name)
    return target


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def partial_files(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.rglob("*") if ".partial" in p.name]


def middle(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    return rgb[h // 3 + 2: 2 * h // 3 - 2, w // 3 + 2: 2 * w // 3 - 2].astype(int)


def first_frame(path: Path) -> np.ndarray:
    with VideoReader(path) as reader:
        return next(iter(reader)).rgb


def check_outputs(files: dict[str, Path], read) -> None:
    """Each done output: the face square changed, the corner kept; the image has no EXIF; the video is whole."""
    for name in ("a.jpg", "c/clip.mp4", "c/d/e.png"):
        before, after = first_frame(files[name]), read(name)
        assert after.shape == before.shape
        assert np.abs(middle(after) - middle(before)).mean() > 10.0, name
        assert np.abs(after[:8, :8].astype(int) - before[:8, :8].astype(int)).mean() < 6.0, name


def check_summary(summary, out_names: dict[str, str | None]) -> None:
    by_name = {r.source: r for r in summary.files}
    assert [r.source for r in summary.files] == ["a.jpg", "b_broken.jpg", "c/clip.mp4", "c/d/e.png", "notes.txt"]
    assert {name: r.status for name, r in by_name.items()} == {
        "a.jpg": "done", "b_broken.jpg": "failed", "c/clip.mp4": "done", "c/d/e.png": "done", "notes.txt": "skipped"}
    assert (summary.done, summary.failed, summary.skipped) == (3, 1, 1)
    assert "cannot read b_broken.jpg" in by_name["b_broken.jpg"].reason
    assert ".partial" not in by_name["b_broken.jpg"].reason and "work" not in by_name["b_broken.jpg"].reason
    assert by_name["notes.txt"].reason == "not an image or video (by its extension)"
    assert by_name["c/clip.mp4"].frames == VIDEO_FRAMES and by_name["a.jpg"].frames == 1
    assert by_name["a.jpg"].classes == {"face": 1} and by_name["c/clip.mp4"].classes == {"face": VIDEO_FRAMES}
    assert summary.classes == {"face": VIDEO_FRAMES + 2}
    assert {name: r.output for name, r in by_name.items()} == out_names
    block = json.loads(json.dumps(summary.as_dict()))
    assert (block["done"], block["failed"], block["skipped"], block["classes"]) == (3, 1, 1, {"face": VIDEO_FRAMES + 2})
    assert block["files"][1]["status"] == "failed" and block["files"][1]["output"] is None


OUT_NAMES = {"a.jpg": "a.jpg", "b_broken.jpg": None, "c/clip.mp4": "c/clip.mp4", "c/d/e.png": "c/d/e.png",
             "notes.txt": None}


def test_folder_round_trip(tmp_path: Path, one_thread: None) -> None:
    files = media_tree(tmp_path / "in")
    before = {name: digest(path) for name, path in files.items()}
    out = tmp_path / "out"
    summary = run_batch(tmp_path / "in", out, anonymizer(pipeline()), progress=False)
    check_summary(summary, OUT_NAMES)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "a.jpg", "c/clip.mp4", "c/d/e.png"]
    check_outputs(files, lambda name: first_frame(out / name))
    with Image.open(out / "a.jpg") as image:
        assert dict(image.getexif()) == {}  # Make and GPS stripped
    with VideoReader(out / "c" / "clip.mp4") as reader:
        assert sum(1 for _ in reader) == VIDEO_FRAMES
    assert {name: digest(path) for name, path in files.items()} == before  # input never modified
    assert partial_files(tmp_path) == []


@pytest.mark.parametrize("kinds", [("zip", "zip"), ("zip", "folder"), ("folder", "zip")])
def test_zip_round_trips(tmp_path: Path, one_thread: None, kinds: tuple[str, str]) -> None:
    files = media_tree(tmp_path / "tree")
    source = zipped(files, tmp_path / "in.zip") if kinds[0] == "zip" else tmp_path / "tree"
    out = tmp_path / ("out.zip" if kinds[1] == "zip" else "out")
    summary = run_batch(source, out, anonymizer(pipeline()), progress=False)
    check_summary(summary, OUT_NAMES)
    if kinds[1] == "zip":
        with zipfile.ZipFile(out) as archive:
            assert archive.namelist() == ["a.jpg", "c/clip.mp4", "c/d/e.png"]
            extracted = tmp_path / "extracted"
            archive.extractall(extracted)
    else:
        extracted = out
    check_outputs(files, lambda name: first_frame(extracted / name))
    assert partial_files(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # work folder removed


def test_tracked_video_counts_tracks(tmp_path: Path, one_thread: None) -> None:
    """With a tracker, a video's regions are its tracks (one face followed through all frames)."""
    (tmp_path / "in").mkdir()
    make_clip(tmp_path / "in" / "v.mp4", n_frames=VIDEO_FRAMES, size=SIZE)
    summary = run_batch(tmp_path / "in", tmp_path / "out", anonymizer(pipeline(tracker=True)), progress=False)
    assert summary.files[0].classes == {"face": 1} and summary.files[0].frames == VIDEO_FRAMES


def test_exif_orientation_honoured(tmp_path: Path) -> None:
    """An image stored 96 x 64 whose EXIF says "turn 90 degrees" comes out upright, 64 x 96, without the tag."""
    (tmp_path / "in").mkdir()
    make_image(tmp_path / "in" / "r.jpg", SIZE, exif={"Orientation": 6})
    summary = run_batch(tmp_path / "in", tmp_path / "out", anonymizer(pipeline()), progress=False)
    assert summary.done == 1
    with Image.open(tmp_path / "out" / "r.jpg") as image:
        assert image.size == (SIZE[1], SIZE[0])  # turned upright
        assert image.getexif().get(0x0112) in (None, 1)


def test_zip_slip_entries_fail_others_done(tmp_path: Path, one_thread: None) -> None:
    image = make_image(tmp_path / "ok.png", SIZE).read_bytes()
    archive_path = tmp_path / "slip.zip"
    with zipfile.ZipFile(archive_path, "w") as archive:
        for name in ("../evil.png", "/abs.png", "a/../../up.png", "a\\..\\..\\win.png", "C:/drive.png", "ok.png"):
            archive.writestr(name, image)
        link = zipfile.ZipInfo("link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    out = tmp_path / "sub" / "out"
    out.parent.mkdir()
    summary = run_batch(archive_path, out, anonymizer(pipeline()), progress=False)
    statuses = {r.source: (r.status, r.reason) for r in summary.files}
    assert statuses["ok.png"] == ("done", None)
    assert sorted(statuses) == sorted(["../evil.png", "/abs.png", "a/../../up.png", "a\\..\\..\\win.png",
                                       "C:/drive.png", "ok.png", "link.png"])
    assert summary.failed == 6 and summary.done == 1
    for result in summary.files:
        if result.source != "ok.png":
            assert result.status == "failed" and "refused" in result.reason, result
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png")) == ["ok.png", "sub/out/ok.png"]


@pytest.mark.parametrize("name", ["../x.jpg", "/x.jpg", "a/../../x.jpg", "..\\x.jpg", "c:\\x.jpg", "a/\0.jpg"])
def test_entry_problem_refuses(name: str) -> None:
    assert "refused" in entry_problem(name)


@pytest.mark.parametrize("name", ["x.jpg", "a/b/x.jpg", "./a/x.jpg", "a..b.jpg", "..a/x.jpg"])
def test_entry_problem_accepts(name: str) -> None:
    assert entry_problem(name) is None


def bomb(path: Path, size: int) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.png", b"\0" * size)
    return path


def never(in_file: Path, out_file: Path) -> RunResult:
    raise AssertionError("nothing may be extracted or run")


def test_zip_bomb_total_refused_before_extraction(tmp_path: Path) -> None:
    archive = tmp_path / "in.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as packed:
        packed.writestr("a.png", os.urandom(700_000))
        packed.writestr("b.png", os.urandom(700_000))
    with pytest.raises(InputError, match=r"expands to 1 MB, more than batch.max_unpacked_mb=1; refused"):
        run_batch(archive, tmp_path / "out", never, max_unpacked_bytes=2**20, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zip"]


def test_zip_bomb_ratio_refused(tmp_path: Path) -> None:
    archive = bomb(tmp_path / "in.zip", 8 * 2**20)  # 8 MiB of zeros: about 1000x
    with pytest.raises(InputError, match=r"entry 'zeros.png' expands \d+ times .* batch.max_ratio=200"):
        run_batch(archive, tmp_path / "out.zip", never, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zip"]


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_zip_is_one_error(tmp_path: Path, damage: str) -> None:
    archive = tmp_path / "in.zip"
    if damage == "garbage":
        archive.write_bytes(b"PK\x03\x04 this is no archive" * 10)
    else:
        zipped({"a.png": make_image(tmp_path / "a.png", SIZE)}, archive)
        archive.write_bytes(archive.read_bytes()[:-30])  # the central directory's end is cut
    with pytest.raises(InputError, match=r"cannot read .*in.zip: not a zip archive, or corrupt or truncated"):
        run_batch(archive, tmp_path / "out.zip", never, progress=False)
    assert not (tmp_path / "out.zip").exists() and partial_files(tmp_path) == []


def test_corrupt_entry_is_a_failed_file(tmp_path: Path, one_thread: None) -> None:
    """An entry whose data is damaged (CRC mismatch) fails alone; the other entry is done."""
    image = make_image(tmp_path / "a.png", SIZE).read_bytes()
    archive = tmp_path / "in.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as packed:
        packed.writestr("bad.png", image)
        packed.writestr("good.png", image)
    data = bytearray(archive.read_bytes())
    at = data.index(image[200:240])  # inside the first entry's data
    data[at: at + 40] = bytes(40)
    archive.write_bytes(bytes(data))
    summary = run_batch(archive, tmp_path / "out", anonymizer(pipeline()), progress=False)
    assert [(r.source, r.status) for r in summary.files] == [("bad.png", "failed"), ("good.png", "done")]
    assert "corrupt archive entry" in summary.files[0].reason
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png"]


def test_output_inside_input_refused(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for out in (tmp_path / "in" / "anon", tmp_path / "in", tmp_path / "in" / "x" / "out.zip"):
        with pytest.raises(InputError, match="is inside the input folder"):
            check_paths(tmp_path / "in", out)
    (tmp_path / "in" / "x").mkdir()
    with pytest.raises(InputError, match="is inside the input folder"):
        run_batch(tmp_path / "in", tmp_path / "in" / "x" / "anon", never)
    assert sorted(p.name for p in (tmp_path / "in").rglob("*")) == ["x"]


def test_output_holding_or_being_the_input_refused(tmp_path: Path) -> None:
    (tmp_path / "out" / "photos").mkdir(parents=True)
    with pytest.raises(InputError, match="input folder .* is inside the output folder"):
        check_paths(tmp_path / "out" / "photos", tmp_path / "out", overwrite=True)
    archive = zipped({"a.png": make_image(tmp_path / "a.png", SIZE)}, tmp_path / "in.zip")
    with pytest.raises(InputError, match="output would overwrite the input"):
        check_paths(archive, archive, overwrite=True)
    check_paths(archive, tmp_path / "out", overwrite=True)  # an archive may lie anywhere


def test_stale_partials_removed_at_any_depth(tmp_path: Path) -> None:
    from inpaint_anon.batch import remove_stale_partials_under

    (tmp_path / "out" / "a" / "b").mkdir(parents=True)
    dead = tmp_path / "out" / "a" / "b" / ".x.99999999-0123abcd.partial.mp4"
    dead.write_bytes(b"x")
    kept = tmp_path / "out" / "a" / "y.mp4"
    kept.write_bytes(b"y")
    assert remove_stale_partials_under(tmp_path / "out") == [dead]
    assert kept.exists() and not dead.exists()


def test_existing_outputs_refused(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.jpg").write_bytes(b"x")
    with pytest.raises(InputError, match="is not empty; pass overwrite=true"):
        check_paths(tmp_path / "in", tmp_path / "out")
    check_paths(tmp_path / "in", tmp_path / "out", overwrite=True)
    (tmp_path / "out.zip").write_bytes(b"x")
    with pytest.raises(InputError, match="output exists"):
        check_paths(tmp_path / "in", tmp_path / "out.zip")
    with pytest.raises(InputError, match="output folder does not exist"):
        check_paths(tmp_path / "in", tmp_path / "nope" / "out")
    with pytest.raises(InputError, match="input not found"):
        check_paths(tmp_path / "missing", tmp_path / "o")


def test_failures_of_any_kind_are_recorded_and_the_batch_goes_on(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for name in ("a.png", "b.png", "c.png"):
        make_image(tmp_path / "in" / name, SIZE)
    pipe = pipeline()

    def flaky(in_file: Path, out_file: Path) -> RunResult:
        if in_file.name == "b.png":
            raise RuntimeError("model exploded")
        return pipe(in_file, out_file)

    summary = run_batch(tmp_path / "in", tmp_path / "out.zip", flaky, progress=False)
    assert [(r.status, r.reason) for r in summary.files] == [
        ("done", None), ("failed", "RuntimeError: model exploded"), ("done", None)]
    with zipfile.ZipFile(tmp_path / "out.zip") as archive:
        assert archive.namelist() == ["a.png", "c.png"]


def test_interrupted_zip_output_leaves_nothing(tmp_path: Path) -> None:
    """Ctrl-C in the middle: no archive under the final name, no partial or work folder left."""
    (tmp_path / "in").mkdir()
    for name in ("a.png", "b.png"):
        make_image(tmp_path / "in" / name, SIZE)
    pipe = pipeline()

    def interrupted(in_file: Path, out_file: Path) -> RunResult:
        if in_file.name == "b.png":
            raise KeyboardInterrupt
        return pipe(in_file, out_file)

    with pytest.raises(KeyboardInterrupt):
        run_batch(tmp_path / "in", tmp_path / "out.zip", interrupted, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_names_and_defaults(tmp_path: Path) -> None:
    from pathlib import PurePosixPath

    assert output_name(PurePosixPath("a/clip.avi")) == PurePosixPath("a/clip.avi.mp4")
    assert output_name(PurePosixPath("a/x.JPG")) == PurePosixPath("a/x.JPG")
    assert output_name(PurePosixPath("v.mkv")) == PurePosixPath("v.mkv")
    assert default_output(tmp_path / "photos") == tmp_path / "photos_anon"
    assert default_output(tmp_path / "batch.zip") == tmp_path / "batch_anon.zip"
    (tmp_path / "photos").mkdir()
    assert is_batch(tmp_path / "photos", None) is True
    assert is_batch(tmp_path / "x.zip", "out") is True
    assert is_batch(tmp_path / "x.mp4", None) is False
    with pytest.raises(InputError, match="is an archive, but input"):
        is_batch(tmp_path / "x.mp4", tmp_path / "o.zip")


def test_same_output_name_fails_the_second(tmp_path: Path, one_thread: None) -> None:
    (tmp_path / "in").mkdir()
    make_animation(tmp_path / "in" / "v.gif", n_frames=3, size=SIZE)  # FFmpeg reads it, we write .mp4
    make_clip(tmp_path / "in" / "v.gif.mp4", n_frames=2, size=SIZE)
    summary = run_batch(tmp_path / "in", tmp_path / "out", anonymizer(pipeline()), progress=False)
    assert [(r.source, r.status, r.output, r.frames) for r in summary.files] == [
        ("v.gif", "done", "v.gif.mp4", 3), ("v.gif.mp4", "failed", None, 0)]
    assert "same output" in summary.files[1].reason


def test_summary_lines() -> None:
    from inpaint_anon.batch import BatchSummary, FileResult

    summary = BatchSummary.of([FileResult("a.jpg", "a.jpg", "done", None, 1, {"face": 2}),
                               FileResult("b.jpg", None, "failed", "cannot read b.jpg"),
                               FileResult("n.txt", None, "skipped", "not an image")])
    assert summary.lines() == ["batch: 3 files: 1 done, 1 failed, 1 skipped; regions: face 2",
                               "  failed: b.jpg: cannot read b.jpg", "  skipped: n.txt: not an image"]
    assert BatchFailed("x").exit_code == 1


# -- the command line -------------------------------------------------------------------------------------

SQUARE = [f"hydra.searchpath=[file://{REPO / 'tests' / 'conf'}]", "detector=square", "tracker=none",
          "pipeline.progress=false"]


def cli(tmp_path: Path, *args: str) -> int:
    return run_module.main([*SQUARE, f"hydra.run.dir={tmp_path / 'run'}", *args])


@pytest.mark.parametrize("case", ["corrupt", "inside", "metrics", "bomb", "bad_key", "bad_limit", "scramble"])
def test_cli_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    (tmp_path / "in").mkdir()
    make_image(tmp_path / "in" / "a.png", SIZE)
    (tmp_path / "bad.zip").write_bytes(b"nope")
    bomb(tmp_path / "bomb.zip", 2 * 2**20)
    args, needle = {
        "corrupt": ([f"input={tmp_path / 'bad.zip'}"], "not a zip archive"),
        "inside": ([f"input={tmp_path / 'in'}", f"output={tmp_path / 'in' / 'out'}"], "inside the input folder"),
        "metrics": ([f"input={tmp_path / 'in'}", "metrics=default"], "metrics needs every frame of one input file"),
        "bomb": ([f"input={tmp_path / 'bomb.zip'}", "batch.max_unpacked_mb=1"], "batch.max_unpacked_mb=1"),
        "bad_key": ([f"input={tmp_path / 'in'}", "+batch.max_files=3"], "unknown batch setting batch.max_files"),
        "bad_limit": ([f"input={tmp_path / 'in'}", "batch.max_unpacked_mb=0"], "batch.max_unpacked_mb=0 is invalid"),
        "scramble": ([f"input={tmp_path / 'in'}", "inpainter=scramble"], "a scramble needs every frame of one input"),
    }[case]
    assert cli(tmp_path, *args) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], errors
    assert not (tmp_path / "in_anon").exists() and not (tmp_path / "bad_anon.zip").exists()
    assert not (tmp_path / "run").exists()


def test_cli_folder_with_a_broken_file_exits_1(tmp_path: Path) -> None:
    """The one subprocess test: ``python -m inpaint_anon.run input=FOLDER`` with a broken file: exit 1, one
    error line, the others written to <folder>_anon/, run.json's batch block, the output path printed last."""
    import subprocess
    import sys

    (tmp_path / "in" / "sub").mkdir(parents=True)
    make_image(tmp_path / "in" / "a.jpg", SIZE)
    (tmp_path / "in" / "b.png").write_bytes(b"\x89PNG broken")
    make_clip(tmp_path / "in" / "sub" / "v.mp4", n_frames=4, size=SIZE)
    env = {**os.environ, "YOLO_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-m", "inpaint_anon.run", *SQUARE, f"input={tmp_path / 'in'}",
                           f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    assert errors[0].startswith("error: 1 of 3 files failed (the first: b.png: cannot read"), errors
    assert "Traceback" not in proc.stderr
    assert "batch: 3 files: 2 done, 1 failed, 0 skipped; regions: face 5" in proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(tmp_path / "in_anon")
    out = tmp_path / "in_anon"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == ["a.jpg", "sub/v.mp4"]
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (record["batch"]["done"], record["batch"]["failed"], record["batch"]["classes"]) == (2, 1, {"face": 5})
    assert [f["status"] for f in record["batch"]["files"]] == ["done", "failed", "done"]
    assert record["output"] == str(out) and record["inpainter"] == "blur"
    assert partial_files(tmp_path) == []

"""The one atomic writer: partial names, commit/abort, stale leftovers of dead processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from inpaint_anon.atomic import NAME_MAX, AtomicPath, partial_owner, partial_path, remove_stale_partials, write_atomic
from inpaint_anon.errors import InputError


def test_partial_path_is_hidden_keeps_suffix_and_names_the_process(tmp_path: Path) -> None:
    path = partial_path(tmp_path / "clip.mp4")
    assert path.parent == tmp_path
    assert path.name.startswith(".clip.") and path.name.endswith(".partial.mp4")
    assert partial_owner(path) == os.getpid()
    assert partial_owner(tmp_path / "clip.mp4") is None


def test_partial_path_of_a_long_name_fits_the_name_limit(tmp_path: Path) -> None:
    name = "ü" * 120 + ".mp4"  # 244 bytes in UTF-8: a valid name, too long for a naive ".name.partial-xxxx"
    path = partial_path(tmp_path / name)
    assert len(path.name.encode()) <= NAME_MAX and path.suffix == ".mp4"
    path.write_bytes(b"x")  # the file system accepts it
    assert partial_owner(path) == os.getpid()


def test_commit_renames_and_abort_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with AtomicPath(target) as out:
        out.temp.write_text("done")
        assert not target.exists()
    assert target.read_text() == "done"
    with pytest.raises(RuntimeError), AtomicPath(target) as out:
        out.temp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "done"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_folder_commit_replaces_an_existing_folder(tmp_path: Path) -> None:
    target = tmp_path / "cache"
    target.mkdir()
    (target / "old").write_text("old")
    with AtomicPath(target, folder=True) as out:
        (out.temp / "new").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new"]


def test_write_atomic_and_unwritable_folder(tmp_path: Path) -> None:
    assert write_atomic(tmp_path / "a.json", "{}").read_text() == "{}"
    with pytest.raises(InputError, match="cannot write in"):
        write_atomic(tmp_path / "missing" / "a.json", "{}")


def test_stale_partials_of_dead_processes_are_removed_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = partial_path(tmp_path / "clip.mp4", pid=dead_pid)
    stale.write_bytes(b"half")
    stale_dir = partial_path(tmp_path / "tok", pid=dead_pid)
    stale_dir.mkdir()
    live = partial_path(tmp_path / "other.mp4")  # this process: a run in progress
    live.write_bytes(b"busy")
    unrelated = tmp_path / ".hidden.partial"
    unrelated.write_bytes(b"not ours")
    removed = remove_stale_partials(tmp_path)
    assert sorted(removed) == sorted([stale, stale_dir])
    assert live.exists() and unrelated.exists() and not stale.exists() and not stale_dir.exists()

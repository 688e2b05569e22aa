"""Outputs that appear whole or not at all: the one temporary-file-then-rename helper of the package.

Every writer (videos and stills, ``.dets`` detection records, FID statistics, ``metrics.json``, the unpacked
tokenizer folder) writes into a *partial* path beside its target and renames it onto the target only when it
is complete, so an interrupted run never leaves a half file under a final name.

A partial path is ``.<name>.<pid>-<8 hex>.partial<suffix>`` in the target's folder: hidden, recognisable, it
keeps the target's suffix (muxers and Pillow pick the format from it) and names the process that writes it,
so that after a SIGKILL a later run can tell a stale leftover (its process is gone) from another live run's
file (:func:`remove_stale_partials`). Long names are shortened so that the partial name fits the file system's
limit whenever the target's own name does.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from inpaint_anon.errors import InputError

if TYPE_CHECKING:
    from typing_extensions import Self

NAME_MAX = 255  # bytes in one path component (ext4, xfs, btrfs, APFS, NTFS in characters)
_PARTIAL = re.compile(r"^\.(?P<name>.*)\.(?P<pid>\d+)-[0-9a-f]{8}\.partial(?P<suffix>\.[^./]*)?$", re.DOTALL)


class CommitOnExit(ABC):
    """A writer used as a context manager: a clean exit :meth:`close`\\ s it (the result appears under its
    final name), an exception :meth:`abort`\\ s it (nothing is left behind, not even a temporary file)."""

    @abstractmethod
    def close(self) -> None:
        """Finish and publish the output."""

    @abstractmethod
    def abort(self) -> None:
        """Discard everything written so far."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def partial_path(target: str | Path, pid: int | None = None) -> Path:
    """A fresh partial path for ``target`` (see the module docstring); nothing is created.

    The target's stem is cut (at a character boundary) so that the partial name is at most :data:`NAME_MAX`
    bytes in UTF-8 while its suffix is kept.
    """
    target = Path(target)
    tail = f".{os.getpid() if pid is None else pid}-{secrets.token_hex(4)}.partial{target.suffix}"
    stem = target.name[: len(target.name) - len(target.suffix)] if target.suffix else target.name
    room = NAME_MAX - 1 - len(tail.encode())
    encoded = stem.encode()
    if len(encoded) > room:
        stem = encoded[:room].decode(errors="ignore")
    return target.parent / f".{stem}{tail}"


def partial_owner(path: str | Path) -> int | None:
    """The pid recorded in a partial path's name, or None when ``path`` is not a partial path."""
    match = _PARTIAL.match(Path(path).name)
    return int(match["pid"]) if match else None


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_partials(folder: str | Path) -> list[Path]:
    """Delete the partial files and folders in ``folder`` whose writing process no longer exists.

    Returns what was removed. Partials of live processes (another run writing into the same folder) are left
    alone; a missing or unreadable folder removes nothing.
    """
    removed: list[Path] = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        pid = partial_owner(entry)
        if pid is None or _process_alive(pid):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue
        removed.append(entry)
    return removed


class AtomicPath(CommitOnExit):
    """A partial path reserved beside ``target`` that becomes ``target`` on :meth:`close`.

    ``with AtomicPath(target) as out: write(out.temp)``: on a clean exit the partial file (or folder, with
    ``folder=True``) is renamed onto ``target`` (replacing it); on an exception, or :meth:`abort`, it is deleted.
    The name is reserved at once (created empty), so two writers never share one; an unwritable folder raises
    :class:`InputError` naming it.
    """

    def __init__(self, target: str | Path, *, folder: bool = False) -> None:
        self.target = Path(target)
        self.folder = folder
        self.temp = partial_path(self.target)
        try:
            if folder:
                self.temp.mkdir()
            else:
                self.temp.open("xb").close()  # permissions follow the umask
        except OSError as error:
            raise InputError(
                f"cannot write in {self.target.parent} ({error.strerror or error}); choose a writable folder"
            ) from error
        self.done = False

    def close(self) -> None:
        """Rename the partial onto the target (a folder target that exists is replaced). Idempotent."""
        if self.done:
            return
        self.done = True
        try:
            if self.folder and self.target.is_dir():
                shutil.rmtree(self.target)
            os.replace(self.temp, self.target)
        except BaseException:
            self._remove()
            raise

    def abort(self) -> None:
        """Delete the partial; the target is left as it was. Idempotent."""
        if not self.done:
            self.done = True
            self._remove()

    def _remove(self) -> None:
        if self.folder:
            shutil.rmtree(self.temp, ignore_errors=True)
        else:
            self.temp.unlink(missing_ok=True)


def write_atomic(target: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (text as UTF-8) to ``target`` through a partial file; returns ``target``."""
    with AtomicPath(target) as out:
        if isinstance(data, str):
            out.temp.write_text(data, encoding="utf-8")
        else:
            out.temp.write_bytes(data)
    return Path(target)

"""Folders and archives: many images and videos in one run, with the models loaded once.

``input=`` a folder (read recursively) or a ``.zip``; ``output=`` a folder that mirrors the input's tree or a
``.zip`` (default ``<folder>_anon/`` or ``<stem>_anon.zip`` beside the input). Each file is one pipeline run
through the ``anonymize(in_file, out_file)`` callable the caller builds once (``inpaint_anon.run``, the UI), so
EXIF orientation, metadata stripping, fail-closed filling and atomic output are exactly those of a single file.

Per file the outcome is a :class:`FileResult`: ``done``, ``failed`` (its reason: the InputError text, a corrupt or
unsafe archive entry) or ``skipped`` (not an image or video); one failure never stops the batch.

Output names: a file keeps its relative path and name when its format can be written (images, .mp4 .m4v .mov .mkv
.webm); a video in another container gets ``.mp4`` appended (``a/clip.avi`` -> ``a/clip.avi.mp4``), so two inputs
never share an output.

Safety, all checked before a byte is extracted:

- the archive's central directory must be readable (a corrupt or truncated zip is one InputError);
- its entries may add up to at most ``max_unpacked_bytes`` uncompressed, and no entry larger than 1 MiB may
  expand more than ``max_ratio`` times (zip bombs): otherwise the whole archive is refused;
- an entry whose name is absolute or holds ``..`` (zip-slip), a symbolic link or an encrypted entry is a *failed*
  file (the rest of the archive is processed, the run exits 1); no file is ever created under a name from the
  archive: entries are copied one at a time, at most their declared size, to ``in<N><suffix>`` in a work folder
  beside the output (removed at the end, and by the next run after a kill);
- an output inside the input folder is refused (it would be read as input); a ``.zip`` output is written to a
  partial file and renamed at the end (:mod:`inpaint_anon.atomic`): never a partial archive under its name.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import sys
import zipfile
import zlib
from abc import abstractmethod
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from inpaint_anon.atomic import AtomicPath, CommitOnExit, remove_stale_partials
from inpaint_anon.errors import InpaintAnonError, InputError, one_line
from inpaint_anon.types import RunResult
from inpaint_anon.video import IMAGE_SUFFIXES, VIDEO_OUTPUT_FORMATS

logger = logging.getLogger("inpaint_anon")

VIDEO_SUFFIXES = frozenset({*VIDEO_OUTPUT_FORMATS, ".avi", ".gif", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".wmv",
                            ".flv", ".3gp", ".ogv", ".mxf", ".dv"})
"""Video suffixes a batch reads (FFmpeg reads them all); other files in a folder or archive are skipped."""
MEDIA_SUFFIXES = frozenset(IMAGE_SUFFIXES) | VIDEO_SUFFIXES
ARCHIVE_SUFFIX = ".zip"
DEFAULT_MAX_UNPACKED_BYTES = 4 * 1024**3
"""An archive whose entries add up to more uncompressed bytes is refused (``batch.max_unpacked_mb``: 4096)."""
DEFAULT_MAX_RATIO = 200.0
"""Largest uncompressed / compressed size of an entry (``batch.max_ratio``); media barely compresses (about 1x),
text about 10x, a run of zeros 1000x."""
RATIO_MIN_BYTES = 1 << 20
"""Entries smaller than this (uncompressed) are not judged by their compression ratio."""
_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")
_SYMLINK = 0o120000


class BatchFailed(InpaintAnonError):
    """Some files of a batch failed (the others were written): the CLI prints ``error: ...`` and exits 1."""

    exit_code = 1


@dataclass
class FileResult:
    """One file of a batch.

    source: its path relative to the input folder or archive (``/``-separated, as listed).
    output: its output's relative path (None when nothing was written).
    status: ``done`` | ``failed`` | ``skipped``.
    reason: why it failed or was skipped (one line), None when done.
    frames: frames written (1 for an image). classes: class name -> regions detected
        (:attr:`~inpaint_anon.types.RunResult.regions`).
    """

    source: str
    output: str | None
    status: str
    reason: str | None = None
    frames: int = 0
    classes: dict[str, int] = field(default_factory=dict)


@dataclass
class BatchSummary:
    """All files of a batch, in input order, with the counts by status and the regions per class summed."""

    files: list[FileResult]
    done: int
    failed: int
    skipped: int
    classes: dict[str, int]

    @classmethod
    def of(cls, files: list[FileResult]) -> BatchSummary:
        classes: dict[str, int] = {}
        for result in files:
            for name, count in result.classes.items():
                classes[name] = classes.get(name, 0) + count
        by_status = {status: sum(r.status == status for r in files) for status in ("done", "failed", "skipped")}
        return cls(files=files, classes=dict(sorted(classes.items())), **by_status)

    def as_dict(self) -> dict[str, Any]:
        """The run.json ``batch`` block."""
        return {"done": self.done, "failed": self.failed, "skipped": self.skipped, "classes": self.classes,
                "files": [asdict(result) for result in self.files]}

    def lines(self) -> list[str]:
        """The summary printed at the end: counts, regions per class, then each failed and skipped file."""
        regions = ", ".join(f"{name} {count}" for name, count in self.classes.items()) or "none"
        head = (f"batch: {len(self.files)} files: {self.done} done, {self.failed} failed, {self.skipped} skipped; "
                f"regions: {regions}")
        return [head, *(f"  {r.status}: {r.source}: {r.reason}" for r in self.files if r.status != "done")]


def is_batch(input: str | Path, output: str | Path | None) -> bool:
    """True when ``input`` is a folder or a ``.zip`` (a batch run); InputError for a ``.zip`` output of a
    single file."""
    source = Path(str(input)).expanduser()
    if source.is_dir() or source.suffix.lower() == ARCHIVE_SUFFIX:
        return True
    if output is not None and Path(str(output)).suffix.lower() == ARCHIVE_SUFFIX:
        raise InputError(f"output={output} is an archive, but input={input} is one file; give a folder or a .zip "
                         "as input, or a video or image file as output")
    return False


def default_output(source: Path) -> Path:
    """``<folder>_anon`` beside a folder, ``<stem>_anon.zip`` beside an archive."""
    if source.suffix.lower() == ARCHIVE_SUFFIX and not source.is_dir():
        return source.with_name(f"{source.stem}_anon{ARCHIVE_SUFFIX}")
    return source.with_name(f"{source.name}_anon")


def check_paths(source: Path, output: Path, *, overwrite: bool = False) -> None:
    """InputError unless ``source`` (a folder or an archive) and ``output`` (a folder or ``.zip``) can be used:
    the input exists, neither holds the other nor is the other, the output's folder exists, and the output is new
    (or an empty folder) unless ``overwrite``."""
    if not source.exists():
        raise InputError(f"input not found: {source}; check the path")
    if not source.is_dir() and source.suffix.lower() != ARCHIVE_SUFFIX:
        raise InputError(f"input {source} is neither a folder nor a .zip archive; pass a folder, a .zip or one file")
    here, there = source.resolve(), output.resolve()
    if source.is_dir() and (there == here or here in there.parents):
        raise InputError(f"output {output} is inside the input folder {source}, so it would be read as input; "
                         "choose an output outside it")
    if there == here:
        raise InputError(f"output would overwrite the input: {output}; choose another output")
    if source.is_dir() and output.suffix.lower() != ARCHIVE_SUFFIX and there in here.parents:
        raise InputError(f"input folder {source} is inside the output folder {output}, so outputs could replace "
                         "inputs; choose an output outside it")
    if not output.parent.is_dir():
        raise InputError(f"output folder does not exist: {output.parent}; create it or choose another output")
    if output.suffix.lower() == ARCHIVE_SUFFIX:
        if output.is_dir():
            raise InputError(f"output {output} is a folder; give a .zip file name or a folder without .zip")
        if output.exists() and not overwrite:
            raise InputError(f"output exists: {output}; pass overwrite=true or choose another output")
        return
    if output.exists() and not output.is_dir():
        raise InputError(f"output {output} is a file, not a folder; give a folder (or a .zip) as output")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise InputError(f"output folder {output} is not empty; pass overwrite=true to replace its files or choose "
                         "another output")


def remove_stale_partials_under(folder: Path) -> list[Path]:
    """:func:`~inpaint_anon.atomic.remove_stale_partials` in ``folder`` and every folder below it (a killed
    batch's partial files, at any depth of an output folder)."""
    removed = []
    for root, _, _ in os.walk(folder):
        removed += remove_stale_partials(root)
    return removed


def output_name(name: PurePosixPath) -> PurePosixPath:
    """An input file's output path: the same when its format can be written, else ``<name>.mp4`` (videos)."""
    suffix = name.suffix.lower()
    if suffix in IMAGE_SUFFIXES or suffix in VIDEO_OUTPUT_FORMATS:
        return name
    return name.with_name(f"{name.name}.mp4")


def run_batch(source: Path, output: Path, anonymize: Callable[[Path, Path], RunResult], *, overwrite: bool = False,
              max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES, max_ratio: float = DEFAULT_MAX_RATIO,
              progress: bool = True) -> BatchSummary:
    """Anonymize every image and video of a folder or archive ``source`` into ``output`` (folder or ``.zip``).

    1. check the paths (:func:`check_paths`) and, for an archive, its directory and sizes (zip bombs), before any
       file is read;
    2. for each file in order (sorted paths; an archive's order): skip what is no image or video, refuse unsafe
       archive entries, copy an archive entry into the work folder, then ``anonymize(in_file, out_file)``: its
       InputError (or any other error) makes the file *failed* and the batch goes on;
    3. publish a ``.zip`` output (renamed from its partial file) and return the summary.

    ``anonymize``: one file's run with the models already loaded; it writes ``out_file`` (atomically) and returns
    its RunResult. ``progress``: one stderr line per file.
    """
    source, output = Path(source), Path(output)
    check_paths(source, output, overwrite=overwrite)
    results: list[FileResult] = []
    used: set[str] = set()
    with ExitStack() as stack:
        work = AtomicPath(output.parent / f"{output.name}.work", folder=True)  # scratch, never published
        stack.callback(work.abort)
        if source.is_dir():
            inputs: list[_Input] = list(_folder_inputs(source))
        else:
            archive = stack.enter_context(_open_archive(source, max_unpacked_bytes, max_ratio))
            inputs = list(_archive_inputs(archive, work.temp))
        sink = stack.enter_context(_ZipSink(output) if output.suffix.lower() == ARCHIVE_SUFFIX
                                   else _FolderSink(output))
        for number, item in enumerate(inputs, 1):
            result = _one_file(item, sink, anonymize, work.temp, used)
            results.append(result)
            if progress:
                detail = f"{result.frames} frames" if result.status == "done" else result.reason
                print(f"batch [{number}/{len(inputs)}] {result.source}: {result.status} ({detail})", file=sys.stderr,
                      flush=True)
    return BatchSummary.of(results)


# -- inputs ---------------------------------------------------------------------------------------------------


@dataclass
class _Input:
    """One file of the input. ``name``: relative ``/`` path as listed; ``refused``: why it is not read (failed),
    else None; ``fetch``: context giving the file to read (the file itself, or the entry copied to a work file)."""

    name: str
    refused: str | None
    fetch: Callable[[], Any]


def _folder_inputs(folder: Path) -> Iterator[_Input]:
    """Every file under ``folder`` (recursively, sorted by relative path; links to folders are not followed)."""
    names = sorted((Path(root) / name).relative_to(folder).as_posix() for root, _, files in os.walk(folder)
                   for name in files)
    for name in names:
        yield _Input(name, None, _given(folder / name))


def _given(path: Path) -> Callable[[], Any]:
    @contextmanager
    def fetch() -> Iterator[Path]:
        yield path
    return fetch


@contextmanager
def _open_archive(path: Path, max_unpacked_bytes: int, max_ratio: float) -> Iterator[zipfile.ZipFile]:
    """The opened archive, its directory checked: InputError when it is corrupt, expands past
    ``max_unpacked_bytes`` or holds an entry that expands more than ``max_ratio`` times (zip bomb)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as error:
        raise InputError(f"cannot read {path}: not a zip archive, or corrupt or truncated ({one_line(error)}); "
                         "check that it opens in an archive tool, or pack it again") from error
    with archive:
        entries = [info for info in archive.infolist() if not info.is_dir()]
        total = sum(info.file_size for info in entries)
        if total > max_unpacked_bytes:
            raise InputError(f"{path} expands to {total / 2**20:.0f} MB, more than batch.max_unpacked_mb="
                             f"{max_unpacked_bytes / 2**20:g}; refused (zip bomb?): raise batch.max_unpacked_mb "
                             "or split the archive")
        for info in entries:
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > RATIO_MIN_BYTES and ratio > max_ratio:
                raise InputError(f"{path}: entry {info.filename!r} expands {ratio:.0f} times ({info.file_size} bytes "
                                 f"from {info.compress_size}), more than batch.max_ratio={max_ratio:g}; refused (zip "
                                 "bomb?): pack the files without it, or raise batch.max_ratio")
        yield archive


def entry_problem(name: str) -> str | None:
    """Why an archive entry name is refused (absolute, a drive, ``..``, a NUL), None when it is a safe relative
    path; backslashes count as separators."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or _DRIVE.match(posix):
        return f"absolute path in the archive ({name!r}); refused: it could write outside the output"
    if ".." in posix.split("/"):
        return f"'..' in the archive path ({name!r}); refused: it could write outside the output"
    if "\0" in posix:
        return f"NUL character in the archive path ({name!r}); refused"
    return None


def _archive_inputs(archive: zipfile.ZipFile, work: Path) -> Iterator[_Input]:
    """Every file entry, in the archive's order; unsafe ones come refused."""
    for number, info in enumerate(archive.infolist()):
        if info.is_dir():
            continue
        refused = entry_problem(info.filename)
        if refused is None and stat.S_IFMT(info.external_attr >> 16) == _SYMLINK:
            refused = "a symbolic link in the archive; refused: only files are read"
        if refused is None and info.flag_bits & 0x1:
            refused = "encrypted in the archive; pack it without a password"
        name = "/".join(part for part in info.filename.replace("\\", "/").split("/") if part not in ("", "."))
        listed = info.filename if refused is not None or not name else name  # a refused name is shown as it is
        yield _Input(listed, refused, _extracted(archive, info, work / f"in{number}"))


def _extracted(archive: zipfile.ZipFile, info: zipfile.ZipInfo, stem: Path) -> Callable[[], Any]:
    @contextmanager
    def fetch() -> Iterator[Path]:
        target = stem.with_suffix(Path(info.filename).suffix.lower())  # a suffix of MEDIA_SUFFIXES: checked
        try:
            _copy_entry(archive, info, target)
            yield target
        finally:
            target.unlink(missing_ok=True)
    return fetch


def _copy_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    """Copy one entry to ``target``, at most its declared size (InputError when corrupt or longer)."""
    written = 0
    try:
        with archive.open(info) as entry, target.open("xb") as out:
            while chunk := entry.read(_CHUNK):
                written += len(chunk)
                if written > info.file_size:
                    raise InputError("the entry holds more data than the archive declares; refused (zip bomb?)")
                out.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as error:
        raise InputError(f"corrupt archive entry ({one_line(error)}); pack the file again") from error


# -- outputs --------------------------------------------------------------------------------------------------


class _Sink(CommitOnExit):
    """Where a batch's outputs go: :meth:`target` is the path a file's run writes, :meth:`keep` takes it."""

    @abstractmethod
    def target(self, name: PurePosixPath, work: Path) -> Path: ...

    @abstractmethod
    def keep(self, written: Path, name: PurePosixPath) -> None: ...

    def discard(self, target: Path) -> None:
        """A run into ``target`` failed (its writer removed its partial file)."""


class _FolderSink(_Sink):
    """Outputs written in place under ``root`` (each atomically by the pipeline); folders made as needed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(exist_ok=True)

    def target(self, name: PurePosixPath, work: Path) -> Path:
        path = self.root.joinpath(*name.parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def keep(self, written: Path, name: PurePosixPath) -> None:
        pass

    def discard(self, target: Path) -> None:
        """Remove the folders made for it that stayed empty."""
        folder = target.parent
        while folder != self.root and self.root in folder.parents and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass  # the files written so far are complete


class _ZipSink(_Sink):
    """Outputs added one by one to a partial archive, renamed onto ``path`` by :meth:`close`."""

    def __init__(self, path: Path) -> None:
        self._atomic = AtomicPath(path)
        self._zip = zipfile.ZipFile(self._atomic.temp, "w", compression=zipfile.ZIP_STORED)
        self._count = 0

    def target(self, name: PurePosixPath, work: Path) -> Path:
        self._count += 1
        return work / f"out{self._count}{name.suffix.lower()}"

    def keep(self, written: Path, name: PurePosixPath) -> None:
        try:
            self._zip.write(written, name.as_posix())
        finally:
            written.unlink(missing_ok=True)

    def discard(self, target: Path) -> None:
        target.unlink(missing_ok=True)

    def close(self) -> None:
        self._zip.close()
        self._atomic.close()

    def abort(self) -> None:
        try:
            self._zip.close()
        finally:
            self._atomic.abort()


def _one_file(item: _Input, sink: _Sink, anonymize: Callable[[Path, Path], RunResult], work: Path,
              used: set[str]) -> FileResult:
    """Run one input file into the sink; every outcome is a FileResult."""
    if Path(item.name).suffix.lower() not in MEDIA_SUFFIXES:
        return FileResult(item.name, None, "skipped", "not an image or video (by its extension)")
    if item.refused is not None:
        return FileResult(item.name, None, "failed", item.refused)
    name = output_name(PurePosixPath(item.name))
    if name.as_posix() in used:
        return FileResult(item.name, None, "failed", f"another input has the same output {name}; rename one")
    used.add(name.as_posix())
    target = sink.target(name, work)
    path: Path | None = None
    try:
        with item.fetch() as path:
            result = anonymize(path, target)
        sink.keep(target, name)
    except Exception as error:  # noqa: BLE001 - one file's failure is recorded, the batch goes on
        sink.discard(target)
        if not isinstance(error, InpaintAnonError):
            logger.warning("batch: %s failed", item.name, exc_info=True)
        reason = str(error) if isinstance(error, InpaintAnonError) else one_line(error)
        if path is not None:  # an archive entry's work copy is named as the entry
            reason = reason.replace(str(path), item.name)
        return FileResult(item.name, None, "failed", reason.replace(str(target), name.as_posix()))
    return FileResult(item.name, name.as_posix(), "done", None, result.frames_out, dict(sorted(result.regions.items())))


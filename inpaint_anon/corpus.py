"""A corpus: thousands of videos anonymized on Ray actors (or in-process), resumable, with one report.

``python -m inpaint_anon.corpus inputs='footage/**/*.mp4' output_dir=anon/`` (the Hydra edge is
:mod:`inpaint_anon.corpus_run`; this module is plain Python).

1. **Inputs** (:func:`collect_inputs`): a glob (``**`` recurses), a folder (read recursively) or a manifest
   (``.jsonl``: one JSON object a line; ``.csv`` with a header): ``input`` (required; relative paths are relative to
   the manifest's folder), ``output`` (optional; relative to ``output_dir``) and ``overrides`` (optional: a dict or
   ``key=value;key=value``: per-file config values). A bad manifest line is reported with its line number and
   counts as a failed file; the good lines still run.
2. **Plan** (:func:`plan_corpus`): outputs mirror the input tree under ``output_dir`` (the tree below the glob's
   fixed prefix, the folder, or the manifest inputs' common folder): ``<output_dir>/<rel>`` (a container that
   cannot be written gets ``.mp4`` appended, :func:`inpaint_anon.batch.output_name`) and beside it a record folder
   ``<output_dir>/<rel>.run/`` holding that file's ``run.json`` (and ``detections.dets``, ``metrics.json`` with
   ``metrics=default``): a folder per file, so every file's record is a run folder that ``inpaint_anon.evaluate``
   reads as it is. ``shard=i/n`` keeps the files whose index in the sorted input list is ``i`` modulo ``n``
   (round robin: shards differ by at most one file; disjoint and covering for ``i`` in ``0..n-1``).
3. **Resume** (:func:`is_done`): a file is done when its output and ``run.json`` exist and run.json's
   ``corpus.config_hash`` and ``corpus.input_fingerprint`` equal the current ones (:func:`config_hash`: the
   resolved config without the corpus job's own keys; :func:`~inpaint_anon.fingerprints.content_fingerprint` of
   the input). Outputs go through the single-file path (the encoder's partial file + rename) and run.json through
   :func:`~inpaint_anon.atomic.write_atomic`, written after the output: a crash leaves either nothing under the
   final names or an output without its record, which is not done. A resume never trusts a partial: the partial
   files of the plan's outputs are removed at start and before each attempt of a file (by name: one file is only
   ever written by one worker at a time, so this is safe across the hosts of a cluster and across shards).
   ``resume=false`` refuses an ``output_dir`` that holds outputs of the plan (exit 2).
4. **Workers** (:class:`LocalPool`, :class:`RayPool`): each worker holds one loaded pipeline (built by the
   :class:`WorkerFactory` once per worker) and runs whole files: tracking needs the whole stream. Ray Core actors
   with a bounded in-flight queue, not Ray Data: a video is one unit of work, not a batch of rows; a file that fails
   is resubmitted to *another* actor directly; ``ray.exceptions.ActorDiedError`` (``ray.kill``, an OOM kill, a lost
   node) is seen on that file's own result, and the dead actor is replaced; backpressure is at most
   ``2 * workers`` files in flight (each actor has one running and one queued, so it never idles between files).
   GPU actors ask for ``num_gpus=1``, CPU actors for ``num_cpus=cpus_per_worker``. The driver writes nothing but
   the report. ``launcher=local`` runs the same plan, resume and report code with one in-process worker.
5. **Retries**: a file whose worker died or that raised an unexpected error is retried ``retries`` times, on
   another worker when there is one; an :class:`~inpaint_anon.errors.InputError` (a corrupt or unreadable video)
   fails at once (it would fail again). Then it is recorded as failed with its reason and the job goes on.
6. **Report** (:class:`CorpusReport`): one progress bar over the corpus (files, frames, fps, ETA, failures);
   ``corpus.json`` + ``corpus.md`` in ``output_dir`` (``corpus-<i>of<n>.*`` for a shard, so that shards do not
   replace each other's), written atomically: per-file status (``done`` now, ``resumed``: done before, ``failed``),
   frames, seconds, per-class region counts, attempts and reasons; totals and throughput; with ``metrics=default``
   per-class metrics over the corpus (:func:`merge_metrics`: each file's evaluator states, merged).

Exit status (:func:`inpaint_anon.corpus_run.main`): 0 every file done, 1 any failed (:class:`CorpusFailed`), 2 the
job could not start (an :class:`~inpaint_anon.errors.InputError` / ``ConfigError`` before any file ran).
"""

from __future__ import annotations

import csv
import fnmatch
import glob
import json
import logging
import os
import secrets
import shutil
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from inpaint_anon.atomic import partial_owner, write_atomic
from inpaint_anon.batch import MEDIA_SUFFIXES, output_name
from inpaint_anon.errors import ConfigError, InpaintAnonError, InputError, one_line
from inpaint_anon.fingerprints import content_fingerprint, record_digest

logger = logging.getLogger("inpaint_anon")

RECORD_SUFFIX = ".run"
"""``<output_dir>/<rel>.run/``: the record folder of one file (run.json, detections.dets, metrics.json)."""
RUN_RECORD = "run.json"
METRIC_STATES = "metric_states.pt"
"""``metrics=default``: a file's evaluator states (:meth:`~inpaint_anon.metrics.RunEvaluator.states`) in its record
folder, merged by the report into per-class metrics over the corpus."""
MANIFEST_SUFFIXES = (".jsonl", ".csv")
MANIFEST_KEYS = ("input", "output", "overrides")
FINGERPRINT_THREADS = 8
_MAGIC = frozenset("*?[")


class CorpusFailed(InpaintAnonError):
    """Some files of a corpus failed (the others were written): ``error: ...`` and exit status 1."""

    exit_code = 1


# -- inputs -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusEntry:
    """One input of the corpus. input: absolute path. root: the folder its output path is relative to.
    output: the output path a manifest gave (None: mirror the input tree). overrides: per-file config values
    (``key -> value`` as written on a command line). line: its manifest line (None outside a manifest).
    pattern: the absolute glob that found it (None for a folder or a manifest)."""

    input: Path
    root: Path
    output: str | None = None
    overrides: tuple[tuple[str, str], ...] = ()
    line: int | None = None
    pattern: str | None = None


@dataclass(frozen=True)
class BadLine:
    """A manifest line that cannot be used: its number (1 = the first line) and why."""

    line: int
    reason: str


def collect_inputs(inputs: str) -> tuple[list[CorpusEntry], list[BadLine]]:
    """The corpus' inputs, sorted by path: ``inputs`` is a manifest (``.jsonl`` / ``.csv`` file), a folder or a
    glob. InputError when nothing is found (an empty glob or folder, a manifest with no good line)."""
    given = str(inputs)
    path = Path(given).expanduser()
    if path.suffix.lower() in MANIFEST_SUFFIXES and not any(c in given for c in _MAGIC):
        if not path.is_file():
            raise InputError(f"manifest not found: {path}; check the path")
        entries, bad = read_manifest(path)
        if not entries and not bad:
            raise InputError(f"manifest {path} lists no input; add lines with an `input` path")
        return entries, bad
    if path.is_dir():
        root = path.resolve()
        files = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES]
        if not files:
            raise InputError(f"folder {path} holds no video or image; check the path")
        return [CorpusEntry(p, root) for p in sorted(files)], []
    if not any(c in given for c in _MAGIC):
        raise InputError(f"inputs={given}: no such file, folder or manifest; pass a glob ('footage/**/*.mp4'), a "
                         "folder or a .jsonl/.csv manifest")
    root = _glob_root(path)
    pattern = str(root.joinpath(*path.parts[len(_fixed_parts(path)):]))
    files = sorted({Path(p).resolve() for p in glob.glob(str(path), recursive=True) if Path(p).is_file()})
    if not files:
        raise InputError(f"inputs={given} matches no file; check the pattern (quote it so the shell does not "
                         "expand it: inputs='footage/**/*.mp4')")
    return [CorpusEntry(p, root, pattern=pattern) for p in files], []


def _fixed_parts(pattern: Path) -> list[str]:
    fixed = []
    for part in pattern.parts:
        if any(c in part for c in _MAGIC):
            break
        fixed.append(part)
    return fixed


def glob_matches(pattern: str, path: Path) -> bool:
    """True when ``path`` (absolute) is one that the absolute glob ``pattern`` would find (``**``: any number of
    folders, ``*`` ``?`` ``[...]`` within one name)."""
    def match(parts: Sequence[str], names: Sequence[str]) -> bool:
        if not parts:
            return not names
        if parts[0] == "**":
            return any(match(parts[1:], names[k:]) for k in range(len(names) + 1))
        return bool(names) and fnmatch.fnmatchcase(names[0], parts[0]) and match(parts[1:], names[1:])

    return match(Path(pattern).parts, path.parts)


def _glob_root(pattern: Path) -> Path:
    """The fixed folder a glob starts from: ``footage/**/*.mp4`` -> ``footage`` (absolute)."""
    fixed = _fixed_parts(pattern)
    return Path(*fixed).resolve() if fixed else Path.cwd()


def read_manifest(path: Path) -> tuple[list[CorpusEntry], list[BadLine]]:
    """The entries of a ``.jsonl`` or ``.csv`` manifest and its bad lines (never raises for a line)."""
    folder = path.resolve().parent
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read manifest {path} ({one_line(error)}); check the file") from error
    rows: list[tuple[int, Any]] = []
    if path.suffix.lower() == ".jsonl":
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as error:
                rows.append((number, f"not JSON ({error.msg})"))
    else:
        reader = csv.DictReader(text.splitlines())
        if reader.fieldnames is None or "input" not in reader.fieldnames:
            raise InputError(f"manifest {path} has no `input` column in its header; start it with a line "
                             "`input,output,overrides`")
        rows = [(reader.line_num, {k: v for k, v in row.items() if v not in (None, "")}) for row in reader]
    entries, bad = [], []
    for number, row in rows:
        try:
            entries.append(_manifest_entry(row, folder, number))
        except InputError as error:
            bad.append(BadLine(number, str(error)))
    if not entries and bad:
        first = bad[0]
        raise InputError(f"manifest {path}: no usable line (line {first.line}: {first.reason}); fix the manifest")
    return sorted(entries, key=lambda e: e.input), bad


def _manifest_entry(row: Any, folder: Path, number: int) -> CorpusEntry:
    if isinstance(row, str):
        raise InputError(row)
    if not isinstance(row, dict):
        raise InputError(f"not an object with an `input` key (got {type(row).__name__})")
    unknown = sorted(set(row) - set(MANIFEST_KEYS))
    if unknown:
        raise InputError(f"unknown key {unknown[0]!r}; the keys are: {', '.join(MANIFEST_KEYS)}")
    given = row.get("input")
    if not isinstance(given, str) or not given:
        raise InputError("no `input` path")
    source = (folder / Path(given).expanduser()).resolve()
    if not source.is_file():
        raise InputError(f"input not found: {source}")
    output = row.get("output")
    if output is not None and (not isinstance(output, str) or not output):
        raise InputError(f"`output` must be a path, got {output!r}")
    return CorpusEntry(source, source.parent, output, parse_overrides(row.get("overrides")), number)


def parse_overrides(given: Any) -> tuple[tuple[str, str], ...]:
    """Per-file overrides: a dict (``{"inpainter.strength": 3}``) or ``key=value;key=value``, as sorted
    ``(key, value)`` pairs (values as text, as on a command line). InputError for anything else."""
    if given is None or given == "":
        return ()
    if isinstance(given, str):
        pairs = []
        for item in filter(None, (part.strip() for part in given.split(";"))):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise InputError(f"override {item!r} is not key=value")
            pairs.append((key.strip(), value.strip()))
        return tuple(sorted(pairs))
    if isinstance(given, dict):
        return tuple(sorted((str(k), v if isinstance(v, str) else json.dumps(v)) for k, v in given.items()))
    raise InputError(f"`overrides` must be a dict or key=value;..., got {type(given).__name__}")


# -- plan ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusItem:
    """One file of the plan. index: its place in the sorted corpus (shards slice by it). rel: its output path
    relative to ``output_dir`` (``/``-separated). output: the output file; record_dir: its record folder."""

    index: int
    input: Path
    rel: str
    output: Path
    record_dir: Path
    overrides: tuple[tuple[str, str], ...] = ()

    @property
    def record(self) -> Path:
        return self.record_dir / RUN_RECORD


def plan_corpus(entries: Sequence[CorpusEntry], output_dir: Path) -> list[CorpusItem]:
    """Every entry's output under ``output_dir`` (module docstring, step 2). InputError, before anything is
    written, for an ``output_dir`` inside the inputs' tree (a re-run would read the outputs as inputs), an output
    outside ``output_dir``, and two inputs mapping to one output."""
    out = output_dir.expanduser().resolve()
    items: list[CorpusItem] = []
    seen: dict[Path, Path] = {}
    for root in {entry.root for entry in entries if entry.line is None and entry.pattern is None}:  # a folder
        if out == root or root in out.parents:
            raise InputError(f"output_dir {output_dir} is inside the inputs' folder {root}, so a re-run would read "
                             "the outputs as inputs; choose an output_dir outside it")
    inputs = {entry.input for entry in entries}
    for index, entry in enumerate(entries):
        if entry.output is not None:
            target = (out / Path(entry.output).expanduser()).resolve()
        else:
            relative = PurePosixPath(entry.input.relative_to(entry.root).as_posix())
            target = out / output_name(relative)
        if out not in target.parents:
            raise InputError(f"the output of {entry.input} ({target}) is outside output_dir {output_dir}; give "
                             "manifest outputs relative to output_dir")
        if target in inputs or entry.input in target.parents:
            raise InputError(f"the output of {entry.input} ({target}) would replace an input; choose another "
                             "output_dir")
        if entry.pattern is not None and glob_matches(entry.pattern, target):
            raise InputError(f"output_dir {output_dir} is inside the inputs' folder {entry.root} and its outputs "
                             f"match inputs={entry.pattern}, so a re-run would read them as inputs; choose an "
                             "output_dir outside it")
        if target in seen:
            raise InputError(f"two inputs map to one output {target}: {seen[target]} and {entry.input}; give one of "
                             "them another `output` in a manifest")
        seen[target] = entry.input
        rel = target.relative_to(out).as_posix()
        items.append(CorpusItem(index, entry.input, rel, target, target.with_name(target.name + RECORD_SUFFIX),
                                entry.overrides))
    return items


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; None for no shard. ConfigError for anything else."""
    if shard is None or shard == "":
        return None
    index, sep, count = str(shard).partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i, n = -1, 0
    if not sep or n < 1 or not 0 <= i < n:
        raise ConfigError(f"shard={shard} is not i/n with 0 <= i < n; pass e.g. shard=0/4 (the first of 4 shards)")
    return i, n


def shard_items(items: Sequence[CorpusItem], shard: tuple[int, int] | None) -> list[CorpusItem]:
    """The items whose index is ``i`` modulo ``n`` (all of them for no shard)."""
    if shard is None:
        return list(items)
    i, n = shard
    return [item for item in items if item.index % n == i]


# -- resume -------------------------------------------------------------------------------------------------


def config_hash(config: Mapping[str, Any]) -> str:
    """32 hex digits naming a resolved config (plain JSON data; the caller leaves out the keys that do not change
    an output, e.g. the corpus job's own)."""
    return record_digest(json.loads(json.dumps(config, default=str)))


def read_record(item: CorpusItem) -> dict[str, Any] | None:
    """The file's run.json as a dict, None when it is missing or unreadable."""
    try:
        record = json.loads(item.record.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def is_done(item: CorpusItem, hash_: str, fingerprint: str) -> bool:
    """True when ``item``'s output and run.json exist and run.json records this config hash and fingerprint."""
    if not item.output.is_file():
        return False
    record = read_record(item)
    corpus = record.get("corpus") if record is not None else None
    return (isinstance(corpus, dict) and corpus.get("config_hash") == hash_
            and corpus.get("input_fingerprint") == fingerprint)


def remove_partials_of(item: CorpusItem) -> list[Path]:
    """Delete the partial files of ``item``'s output and of the files in its record folder (any process: a file
    is written by one worker at a time, and an earlier attempt's worker has ended)."""
    removed = []
    for folder, stem in ((item.output.parent, item.output.stem), (item.record_dir, None)):
        try:
            entries = list(folder.iterdir())
        except OSError:
            continue
        for entry in entries:
            if partial_owner(entry) is not None and (stem is None or entry.name.startswith(f".{stem}.")):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed


# -- workers ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileTask:
    """What a worker runs: one item, the config hash and input fingerprint its run.json must record."""

    item: CorpusItem
    config_hash: str
    input_fingerprint: str
    attempt: int = 1


@dataclass
class FileOutcome:
    """What a worker hands back for one file. error: one line (None when done); retryable: False for an
    InputError (the file itself is bad). frames: frames written. seconds: wall time of the file.
    classes: class name -> regions detected (:attr:`~inpaint_anon.types.RunResult.regions`)."""

    frames: int = 0
    seconds: float = 0.0
    classes: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    retryable: bool = True
    worker: str = ""


class FileWorker(Protocol):
    """A loaded pipeline: anonymizes ``task.item.input`` into ``task.item.output`` and writes its run.json
    (with the ``corpus`` block: config_hash, input_fingerprint, classes) into ``task.item.record_dir``."""

    def process(self, task: FileTask) -> FileOutcome: ...


class WorkerFactory(Protocol):
    """Builds workers (picklable: Ray ships it to every actor) and names configs.

    uses_gpu: True when the pipeline runs on CUDA (Ray actors then ask for a GPU each)."""

    uses_gpu: bool

    def __call__(self) -> FileWorker: ...

    def config_hash(self, overrides: tuple[tuple[str, str], ...]) -> str: ...


def run_task(worker: FileWorker, task: FileTask, name: str) -> FileOutcome:
    """``worker.process(task)`` with the item's partial files removed first; an exception becomes a failed
    outcome (InputError: not retryable)."""
    started = time.perf_counter()
    remove_partials_of(task.item)
    try:
        outcome = worker.process(task)
    except InputError as error:
        outcome = FileOutcome(error=str(error), retryable=False)
    except Exception as error:  # noqa: BLE001 - any failure of one file is recorded; the corpus goes on
        logger.debug("file %s failed", task.item.input, exc_info=True)
        outcome = FileOutcome(error=one_line(error))
    if outcome.error is not None:
        remove_partials_of(task.item)
        if task.item.record_dir.is_dir() and not any(task.item.record_dir.iterdir()):
            task.item.record_dir.rmdir()
    outcome.seconds = outcome.seconds or time.perf_counter() - started
    outcome.worker = name
    return outcome


class Pool(Protocol):
    """Workers that take tasks: :meth:`submit` (``avoid``: worker names the task failed on) and :meth:`next`
    (the next finished task, its outcome); ``capacity``: tasks that may be in flight at once."""

    capacity: int
    size: int

    def submit(self, task: FileTask, avoid: frozenset[str]) -> None: ...

    def next(self) -> tuple[FileTask, FileOutcome]: ...

    def close(self) -> None: ...


class LocalPool:
    """One in-process worker (``launcher=local``): a task runs when it is submitted."""

    size = 1
    capacity = 1

    def __init__(self, factory: WorkerFactory) -> None:
        self.worker = factory()
        self.done: deque[tuple[FileTask, FileOutcome]] = deque()

    def submit(self, task: FileTask, avoid: frozenset[str]) -> None:
        self.done.append((task, run_task(self.worker, task, "local")))

    def next(self) -> tuple[FileTask, FileOutcome]:
        return self.done.popleft()

    def close(self) -> None:
        self.done.clear()


@dataclass(frozen=True)
class RaySettings:
    """address: None = start a local Ray; ``auto`` or ``host:port`` joins a cluster. workers: actors (None = one
    per GPU for a CUDA pipeline, else the cluster's CPUs // cpus_per_worker). init_timeout_s: how long joining a
    cluster may take before the job stops (exit 2). name: prefix of the actors' names (``<name>-<6 hex>-<k>``)."""

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float = 1.0
    init_timeout_s: float = 30.0
    name: str = "inpaint_anon-corpus"


def connect_ray(settings: RaySettings) -> bool:
    """``ray.init`` (nothing when Ray is already initialized); returns True when this call started it.
    InputError naming the address when it does not answer: a ``host:port`` is first tried with a TCP connection
    bounded by ``init_timeout_s``; ``auto`` without a running cluster fails at once."""
    address = settings.address
    if address not in (None, "", "auto", "local") and not address.startswith("ray://"):
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=settings.init_timeout_s).close()
        except (OSError, ValueError) as error:
            raise InputError(f"ray.address={address} does not answer ({one_line(error)}); start the cluster "
                             "(ray start --head) or pass its head's host:port, or leave ray.address unset for a "
                             "local Ray") from None
    import ray

    if ray.is_initialized():
        return False
    try:  # in the main thread: Ray ties the processes it starts to the thread that started them
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, TimeoutError, ValueError) as error:
        raise InputError(f"cannot join Ray at ray.address={address} ({one_line(error)}); check the address (ray "
                         "status on the head), or leave ray.address unset for a local Ray") from None
    return True


class _Actor:
    """The Ray actor body: one worker (one loaded pipeline), built when the actor starts."""

    def __init__(self, factory: WorkerFactory, name: str) -> None:
        self.worker = factory()
        self.name = name

    def process(self, task: FileTask) -> FileOutcome:
        return run_task(self.worker, task, self.name)

    def pid(self) -> int:
        return os.getpid()


class RayPool:
    """Ray actors, each holding one worker; at most ``2 * size`` tasks in flight (one running, one queued per
    actor). A task's result that raises ``RayActorError`` (its actor died) becomes a retryable outcome and the
    actor is replaced by a new one (same slot, next name)."""

    def __init__(self, factory: WorkerFactory, settings: RaySettings) -> None:
        import ray

        self.ray = ray
        self.factory = factory
        self.settings = settings
        resources = ray.cluster_resources()
        if settings.workers is not None:
            size = settings.workers
        elif factory.uses_gpu:
            size = int(resources.get("GPU", 0))
        else:
            size = int(resources.get("CPU", 1) // settings.cpus_per_worker)
        if size < 1:
            what = "GPU" if factory.uses_gpu and settings.workers is None else "worker"
            raise InputError(f"the Ray cluster has no room for a {what} (resources: {resources}); pass "
                             "ray.workers=N, device=cpu, or a smaller ray.cpus_per_worker")
        self.size = size
        self.capacity = 2 * size
        options: dict[str, Any] = {"num_gpus": 1} if factory.uses_gpu else {"num_cpus": settings.cpus_per_worker}
        self.actor_class = ray.remote(max_restarts=0, max_task_retries=0, **options)(_Actor)
        self.started = 0
        self.token = secrets.token_hex(3)  # two jobs on one cluster never share an actor name
        self.actors: dict[str, Any] = {}
        for _ in range(size):
            self._start()
        self.in_flight: dict[Any, tuple[FileTask, str]] = {}

    def _start(self) -> str:
        name = f"{self.settings.name}-{self.token}-{self.started}"
        self.started += 1
        self.actors[name] = self.actor_class.options(name=name).remote(self.factory, name)
        return name

    def submit(self, task: FileTask, avoid: frozenset[str]) -> None:
        load = {name: 0 for name in self.actors}
        for _, name in self.in_flight.values():
            if name in load:
                load[name] += 1
        candidates = [name for name in load if name not in avoid] or list(load)
        name = min(candidates, key=lambda n: (load[n], n))
        self.in_flight[self.actors[name].process.remote(task)] = (task, name)

    def next(self) -> tuple[FileTask, FileOutcome]:
        ready, _ = self.ray.wait(list(self.in_flight), num_returns=1)
        ref = ready[0]
        task, name = self.in_flight.pop(ref)
        try:
            return task, self.ray.get(ref)
        except self.ray.exceptions.RayActorError as error:
            if name in self.actors:  # its other queued tasks fail the same way; one replacement
                del self.actors[name]
                replacement = self._start()
                logger.warning("worker %s died (%s); started %s", name, one_line(error, 120), replacement)
            return task, FileOutcome(error=f"worker {name} died ({one_line(error, 120)})", worker=name)

    def close(self) -> None:
        for actor in self.actors.values():
            self.ray.kill(actor)
        self.actors.clear()
        self.in_flight.clear()


# -- the job ------------------------------------------------------------------------------------------------


STATUSES = ("done", "resumed", "failed", "pending")


@dataclass
class FileReport:
    """One file in the report. status: ``done`` (now), ``resumed`` (done by an earlier run), ``failed`` or
    ``pending`` (the job was interrupted first; only in the report written on the way out)."""

    input: str
    output: str | None
    status: str
    reason: str | None = None
    frames: int = 0
    seconds: float = 0.0
    classes: dict[str, int] = field(default_factory=dict)
    attempts: int = 0
    worker: str | None = None


@dataclass
class CorpusReport:
    """The whole job: every file of the plan (sorted by input), the bad manifest lines, totals and throughput.
    fps: frames written by this job / its wall time (resumed files excluded)."""

    files: list[FileReport]
    bad_lines: list[BadLine]
    wall_seconds: float
    workers: int
    launcher: str
    shard: str | None
    metrics: dict[str, Any] | None = None

    @property
    def failed(self) -> int:
        return sum(f.status == "failed" for f in self.files) + len(self.bad_lines)

    def totals(self) -> dict[str, Any]:
        by = {status: sum(f.status == status for f in self.files) for status in STATUSES}
        frames = sum(f.frames for f in self.files if f.status == "done")
        classes: dict[str, int] = {}
        for report in self.files:
            for name, count in report.classes.items():
                classes[name] = classes.get(name, 0) + count
        return {"files": len(self.files) + len(self.bad_lines), **by, "bad_lines": len(self.bad_lines),
                "frames": frames, "file_seconds": round(sum(f.seconds for f in self.files if f.status == "done"), 3),
                "wall_seconds": round(self.wall_seconds, 3),
                "fps": round(frames / self.wall_seconds, 3) if self.wall_seconds > 0 else 0.0,
                "classes": dict(sorted(classes.items()))}

    def as_dict(self) -> dict[str, Any]:
        return {"launcher": self.launcher, "workers": self.workers, "shard": self.shard, "totals": self.totals(),
                "metrics": self.metrics, "files": [asdict(f) for f in self.files],
                "bad_lines": [asdict(b) for b in self.bad_lines]}

    def markdown(self) -> str:
        t = self.totals()
        lines = [f"# Corpus report{f' (shard {self.shard})' if self.shard else ''}", "",
                 f"{t['files']} files: {t['done']} done, {t['resumed']} resumed, {t['failed'] + t['bad_lines']} "
                 f"failed; {t['frames']} frames in {t['wall_seconds']} s ({t['fps']} fps) on {self.workers} "
                 f"{self.launcher} worker(s).", "",
                 "Regions: " + (", ".join(f"{k} {v}" for k, v in t["classes"].items()) or "none"), "",
                 "| input | status | frames | seconds | regions | attempts | reason |", "|---|---|---|---|---|---|---|"]
        for f in self.files:
            regions = ", ".join(f"{k} {v}" for k, v in f.classes.items())
            lines.append(f"| {f.input} | {f.status} | {f.frames} | {f.seconds:.2f} | {regions} | {f.attempts} | "
                         f"{(f.reason or '').replace('|', '/')} |")
        for bad in self.bad_lines:
            lines.append(f"| manifest line {bad.line} | failed | 0 | 0 | | 0 | {bad.reason.replace('|', '/')} |")
        if self.metrics is not None:
            classes = self.metrics["classes"]
            names = list(dict.fromkeys(name for row in classes.values() for name in row))
            lines += ["", f"## Metrics over {self.metrics['files']} files (merged states)", "",
                      "| class | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
            for row, values in classes.items():
                cells = (("-" if values.get(n) is None else f"{values[n]:.4g}" if isinstance(values[n], float)
                          else str(values[n])) for n in names)
                lines.append(f"| {row} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def write(self, output_dir: Path) -> Path:
        """``corpus.json`` and ``corpus.md`` (``corpus-<i>of<n>.*`` for a shard) in ``output_dir``; returns the
        .json path."""
        stem = "corpus" if not self.shard else "corpus-{}of{}".format(*self.shard.split("/"))
        write_atomic(output_dir / f"{stem}.md", self.markdown())
        return write_atomic(output_dir / f"{stem}.json", json.dumps(self.as_dict(), indent=2) + "\n")

    def summary(self) -> str:
        t = self.totals()
        return (f"corpus: {t['files']} files: {t['done']} done, {t['resumed']} resumed, "
                f"{t['failed'] + t['bad_lines']} failed; {t['frames']} frames, {t['fps']} fps")


def merge_metrics(items: Sequence[CorpusItem]) -> dict[str, Any] | None:
    """Per-class metrics over ``items``: their saved evaluator states (:data:`METRIC_STATES`: sums of squared
    errors and pixel counts, feature sums and covariances, ...) merged and computed once, so a class's value is
    that of one evaluation over all its frames, not an average of per-file values. None when no item has
    states. A states file that cannot be read or merged (another metrics config) is left out, with its reason
    under ``not_merged``."""
    paths = [item.record_dir / METRIC_STATES for item in items if (item.record_dir / METRIC_STATES).is_file()]
    if not paths:
        return None
    import torch

    from inpaint_anon.metrics import RunEvaluator

    merged: RunEvaluator | None = None
    left_out: list[dict[str, str]] = []
    for path in paths:
        try:
            evaluator = RunEvaluator.from_states(torch.load(path, weights_only=True))
            if merged is None:
                merged = evaluator
            else:
                merged.merge(evaluator, another_video=True)
        except Exception as error:  # noqa: BLE001 - one unreadable states file does not stop the report
            left_out.append({"file": str(path), "reason": one_line(error)})
    if merged is None:
        return {"files": 0, "classes": {}, "not_merged": left_out}
    return {"files": len(paths) - len(left_out), **merged.compute(), "not_merged": left_out}


@dataclass(frozen=True)
class CorpusSettings:
    """The job's own settings. resume: skip done files (False: refuse an output_dir holding the plan's
    outputs). retries: further attempts of a failed file. shard: ``i/n`` or None. launcher: ``ray`` | ``local``.
    progress: show the progress bar."""

    resume: bool = False
    retries: int = 1
    shard: str | None = None
    launcher: str = "local"
    progress: bool = True
    ray: RaySettings = field(default_factory=RaySettings)


def default_launcher() -> str:
    """``ray`` when Ray can be imported, else ``local``."""
    import importlib.util

    return "ray" if importlib.util.find_spec("ray") is not None else "local"


def run_corpus(inputs: str, output_dir: Path, factory: WorkerFactory, settings: CorpusSettings,
               pool: Callable[[WorkerFactory], Pool] | None = None) -> CorpusReport:
    """Anonymize a corpus; returns (and writes) its report. Raises InputError / ConfigError before any file ran
    when the job cannot start, :class:`CorpusFailed` after the report when a file failed.

    1. collect the inputs, plan the outputs, take the shard (all checks before anything is written);
    2. fingerprint the inputs, hash the config(s); with ``resume`` skip the done files, without it refuse an
       ``output_dir`` that holds the plan's outputs; remove the plan's partial files;
    3. start the workers (``pool``: a test's; else Ray actors or one in-process worker) and run the rest,
       at most ``pool.capacity`` in flight, retrying failures on another worker;
    4. write corpus.json + corpus.md.
    """
    import tqdm

    # 1. inputs and plan
    shard = parse_shard(settings.shard)
    if settings.retries < 0:
        raise ConfigError(f"retries={settings.retries} is negative; pass retries=0 or more")
    if settings.launcher not in ("ray", "local"):
        raise ConfigError(f"launcher={settings.launcher} is not a launcher; choose ray or local")
    entries, bad_lines = collect_inputs(inputs)
    items = shard_items(plan_corpus(entries, output_dir), shard)
    output_dir = output_dir.expanduser().resolve()
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"output_dir {output_dir} is a file; give a folder")

    # 2. what is done already
    hashes = {overrides: factory.config_hash(overrides) for overrides in {item.overrides for item in items}}
    reports: dict[int, FileReport] = {}
    todo: list[FileTask] = []
    with ThreadPoolExecutor(FINGERPRINT_THREADS) as threads:  # sampled reads (about 10 MiB a file): I/O bound
        fingerprints = list(threads.map(_fingerprint, items))
    for item, fingerprint in zip(items, fingerprints):
        if isinstance(fingerprint, InputError):
            reports[item.index] = FileReport(str(item.input), None, "failed", str(fingerprint))
            continue
        task = FileTask(item, hashes[item.overrides], fingerprint)
        if settings.resume and is_done(item, task.config_hash, fingerprint):
            record = read_record(item) or {}
            reports[item.index] = FileReport(str(item.input), item.rel, "resumed", None,
                                             int(record.get("frames_out", 0)), 0.0,
                                             dict(record.get("corpus", {}).get("classes", {})))
        else:
            todo.append(task)
    if not settings.resume:
        held = [task.item for task in todo if task.item.output.exists() or task.item.record.exists()]
        if held:
            raise InputError(f"output_dir {output_dir} already holds outputs of this corpus ({held[0].output}); "
                             "pass resume=true to do only what is missing, or choose another output_dir")
    for task in todo:
        for removed in remove_partials_of(task.item):
            logger.warning("removed %s, left by an interrupted run", removed)

    # 3. run
    started = time.perf_counter()
    workers = 0
    if todo:
        if pool is not None:
            workers_pool = pool(factory)
        elif settings.launcher == "ray":
            connect_ray(settings.ray)
            workers_pool = RayPool(factory, settings.ray)
        else:
            workers_pool = LocalPool(factory)
        workers = workers_pool.size
        output_dir.mkdir(parents=True, exist_ok=True)
        bar = tqdm.tqdm(total=len(todo), unit="file", desc="corpus", disable=not settings.progress, dynamic_ncols=True)
        try:
            _run_all(todo, workers_pool, settings.retries, reports, bar, started)
        except BaseException:  # a signal (or a bug): the report says what finished; a resume does the rest
            for task in todo:
                reports.setdefault(task.item.index, FileReport(str(task.item.input), None, "pending",
                                                               "the job stopped before this file was done"))
            _report(items, reports, bad_lines, started, workers, settings, output_dir, metrics=False)
            raise
        finally:
            bar.close()
            workers_pool.close()

    # 4. report
    return _report(items, reports, bad_lines, started, workers, settings, output_dir, metrics=True)


def _report(items: Sequence[CorpusItem], reports: dict[int, FileReport], bad_lines: list[BadLine], started: float,
            workers: int, settings: CorpusSettings, output_dir: Path, metrics: bool) -> CorpusReport:
    finished = [item for item in items if reports[item.index].status in ("done", "resumed")]
    report = CorpusReport([reports[item.index] for item in items], bad_lines, time.perf_counter() - started, workers,
                          settings.launcher, settings.shard, merge_metrics(finished) if metrics else None)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = report.write(output_dir)
    logger.info("%s; report: %s", report.summary(), path)
    return report


def _fingerprint(item: CorpusItem) -> str | InputError:
    try:
        return content_fingerprint(item.input)
    except InputError as error:
        return error


def _run_all(todo: Iterable[FileTask], pool: Pool, retries: int, reports: dict[int, FileReport],
             bar: Any, started: float) -> None:
    """Submit ``todo`` with at most ``pool.capacity`` in flight; retry failures; fill ``reports``."""
    waiting = deque(todo)
    failed_on: dict[int, set[str]] = {}
    in_flight = frames = failures = 0
    while waiting or in_flight:
        while waiting and in_flight < pool.capacity:
            task = waiting.popleft()
            pool.submit(task, frozenset(failed_on.get(task.item.index, ())))
            in_flight += 1
        task, outcome = pool.next()
        in_flight -= 1
        item = task.item
        if outcome.error is not None and outcome.retryable and task.attempt <= retries:
            failed_on.setdefault(item.index, set()).add(outcome.worker)
            logger.warning("%s: attempt %d failed (%s); retrying on another worker", item.input, task.attempt,
                           outcome.error)
            waiting.appendleft(FileTask(item, task.config_hash, task.input_fingerprint, task.attempt + 1))
            continue
        if outcome.error is None:
            reports[item.index] = FileReport(str(item.input), item.rel, "done", None, outcome.frames,
                                             round(outcome.seconds, 3), outcome.classes, task.attempt, outcome.worker)
            frames += outcome.frames
        else:
            failures += 1
            reports[item.index] = FileReport(str(item.input), None, "failed", outcome.error, 0,
                                             round(outcome.seconds, 3), {}, task.attempt, outcome.worker)
        elapsed = time.perf_counter() - started
        bar.set_postfix(frames=frames, fps=f"{frames / elapsed:.1f}" if elapsed > 0 else "-", failed=failures)
        bar.update(1)


if __name__ == "__main__":
    # the Hydra edge lives in inpaint_anon.corpus_run; imported here so `python -m inpaint_anon.corpus` works
    from inpaint_anon.corpus_run import main as _main

    raise SystemExit(_main())

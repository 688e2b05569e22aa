"""Command line entry point: ``python -m inpaint_anon.run`` and the ``inpaint-anon`` console script.

The Hydra edge of the package (with :mod:`inpaint_anon.evaluate`, which shares :func:`hydra_command`): it
composes ``conf/``, instantiates the components (``_target_`` configs, ``_convert_="all"`` so the package only
ever sees plain Python), runs the :class:`~inpaint_anon.pipeline.AnonymizePipeline`, writes ``run.json`` (the
resolved config included) into the Hydra run folder and prints the output path as the last line.

``inpaint-anon key=value ...`` is a run; ``inpaint-anon evaluate ARGS`` and ``inpaint-anon unscramble ARGS`` hand
ARGS to :func:`inpaint_anon.evaluate.main` and :func:`inpaint_anon.unscramble.main`.

Exit codes and the last line on stderr:

- 0: done.
- 1, ``error: N of M files failed ...``: a batch (a folder or .zip input, :mod:`inpaint_anon.batch`) in which some
  files failed; the others were written, and run.json's ``batch`` block gives each file's status and reason.
- 2, ``error: <problem>; <fix>``: a user error (:class:`~inpaint_anon.errors.InpaintAnonError`, an unknown config
  choice or key, an argument Hydra cannot read).
- 130 / 143 / 129, ``interrupted: no output written``: SIGINT (Ctrl-C) / SIGTERM (``kill``, ``timeout``, docker,
  SLURM) / SIGHUP. The signal is raised in the main thread as :class:`Interrupted`, so every ``with`` block on the
  way out deletes its partial file and the pipeline's stage threads stop.
- A live source (camera, URL, stdin) runs until it is stopped, and stopping is its normal end: the first of those
  signals ends the stream (the frames received are finished, ``run.json`` is written, exit 0); a second one
  interrupts as above, keeping the recording.

``realtime=true`` / ``realtime=false`` are short for ``realtime.enabled=...`` (the ``realtime:`` block).

Run folders (:class:`RunFolder`, a Hydra callback in ``conf/hydra/default.yaml``): a folder that already holds a
``run.json`` is refused before anything is written into it; a failed run removes the folder it created (unless
it wrote its ``run.json``); each run first removes the partial files that killed (SIGKILL) runs left in its
output, run and cache folders.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import (
    ConfigCompositionException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
)
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from inpaint_anon.atomic import remove_stale_partials, write_atomic
from inpaint_anon.checks import check_bool
from inpaint_anon.errors import ConfigError, InpaintAnonError, InputError, one_line
from inpaint_anon.types import RunResult
from inpaint_anon.versions import versions

if TYPE_CHECKING:
    from inpaint_anon.inpaint.base import Inpainter
    from inpaint_anon.pipeline import AnonymizePipeline
    from inpaint_anon.realtime import RealtimeSettings
    from inpaint_anon.video import VideoSettings
    from inpaint_anon.video.live import LiveSource

logger = logging.getLogger("inpaint_anon")

RUN_RECORD = "run.json"
PHOTO_DETECT_SIZE = 1024  # longest side (px) whitelist reference photos are searched for their face at
DETECTION_RUN_KEYS = ("stride", "cache")  # detector config keys that set up the detection stage, not the model
INPAINTER_RUN_KEYS = ("key_file", "allow_lossy")  # inpainter config keys read by this module, not the inpainter
SUBCOMMANDS = {"evaluate": "inpaint_anon.evaluate", "unscramble": "inpaint_anon.unscramble", "ui": "inpaint_anon.ui",
               "corpus": "inpaint_anon.corpus_run"}
"""``inpaint-anon NAME ARGS`` -> ``<module>.main(ARGS)`` (imported only when asked for)."""
INTERRUPT_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")
"""Signals that end a run cleanly (partial files removed) with exit code 128 + the signal number."""


def main(argv: Sequence[str] | None = None) -> int | None:
    """Console script ``inpaint-anon``: a subcommand (:data:`SUBCOMMANDS`) or a run; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SUBCOMMANDS:
        return importlib.import_module(SUBCOMMANDS[args[0]]).main(args[1:])
    return hydra_command(_hydra_main, args)


@hydra.main(version_base="1.3", config_path="conf", config_name="run")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        return run(cfg)
    except Interrupted as interrupted:
        # an Exception, so that Hydra records the job as failed and RunFolder.on_job_end cleans up
        raise InterruptedJob(interrupted) from None


# -- the command-line edge shared with evaluate ---------------------------------------------------------


class Interrupted(BaseException):
    """A termination signal, raised in the main thread by :func:`interruptible`.

    A BaseException, so that no ``except Exception`` on the way out (the pipeline's fail-closed fallback,
    Hydra's job runner) takes it for an error to handle, and every context manager aborts its partial file.
    ``written``: an output that was complete before the signal came (its run record may be missing)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.written: Path | None = None

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process killed by it (SIGINT 130, SIGTERM 143)."""
        return 128 + self.signum

    @property
    def message(self) -> str:
        if self.written is None:
            return "interrupted: no output written"
        return f"interrupted: {self.written} was written; its run.json or metrics.json may be missing"


class InterruptedJob(Exception):
    """:class:`Interrupted`, carried out of a Hydra job as an Exception (Hydra then calls ``on_job_end``)."""

    def __init__(self, interrupted: Interrupted) -> None:
        super().__init__(interrupted.message)
        self.interrupted = interrupted


class _Abort(BaseException):
    """A user error carried out of a Hydra callback: Hydra turns a callback's Exception into a warning."""

    def __init__(self, error: InpaintAnonError) -> None:
        super().__init__(str(error))
        self.error = error


@contextmanager
def interruptible() -> Iterator[None]:
    """Within: SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` in the main thread. The first one wins:
    the others are ignored until the block is left, so the clean-up it starts is not cut short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        for name in INTERRUPT_SIGNALS:
            signal.signal(getattr(signal, name), signal.SIG_IGN)
        raise Interrupted(signum)

    with _handling_signals(interrupt):
        yield


@contextmanager
def _handling_signals(handler: Callable[[int, object], None]) -> Iterator[dict[str, Any]]:
    """Within: ``handler`` for each of :data:`INTERRUPT_SIGNALS`. Yields the handlers it replaced (name ->
    handler), which are put back on the way out."""
    previous = {name: signal.signal(getattr(signal, name), handler) for name in INTERRUPT_SIGNALS}
    try:
        yield previous
    finally:
        for name, old in previous.items():
            signal.signal(getattr(signal, name), old)


def hydra_command(app: Callable[[], Any], args: Sequence[str]) -> int:
    """Run the ``@hydra.main`` function ``app`` with ``args`` as its command line; returns the exit code.

    1. ``key=value`` arguments whose value holds non-ASCII characters are quoted for Hydra's grammar;
    2. the run is :func:`interruptible`;
    3. a user error prints one ``error:`` line (exit 2), a signal one ``interrupted:`` line (128 + signal).
    """
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let composition errors reach us instead of Hydra's printer
    saved = sys.argv
    sys.argv = [saved[0] if saved else "inpaint-anon", *(quote_non_ascii(short_realtime(arg)) for arg in args)]
    try:
        with interruptible():
            app()
    except SystemExit as done:  # --help, --version, --info
        return done.code if isinstance(done.code, int) else int(done.code is not None)
    except (Interrupted, InterruptedJob) as stopped:
        interrupted = stopped.interrupted if isinstance(stopped, InterruptedJob) else stopped
        print(interrupted.message, file=sys.stderr, flush=True)
        return interrupted.exit_code
    except _Abort as aborted:
        return _error(str(aborted.error), aborted.error.exit_code)
    except InpaintAnonError as err:
        return _error(str(err), err.exit_code)
    except MissingConfigException as err:
        return _error(_explain_missing_choice(err))
    except OverrideParseException as err:
        reason = str(err.message).splitlines()[1:2] or [str(err.message)]
        return _error(f"cannot read the argument {err.override!r} ({reason[0].strip()}); write it as key=value, "
                      "quoting a value that holds spaces, brackets or quotes: key='value'")
    except (ConfigCompositionException, OmegaConfBaseException) as err:
        lines = [one_line(str(e), limit=10_000).rstrip(".") for e in (err, err.__cause__) if e is not None and str(e)]
        return _error(f"{': '.join(lines)}; check the key and value (`--cfg job` prints the config)")
    finally:
        sys.argv = saved
    return 0


def _error(message: str, exit_code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return exit_code


def short_realtime(arg: str) -> str:
    """``realtime=true`` -> ``realtime.enabled=true`` (and ``false``, any case): the switch of the ``realtime:``
    block, which also holds its settings (``realtime.max_latency_ms=100``)."""
    key, sep, value = arg.partition("=")
    if sep and key.lstrip("+") == "realtime" and value.lower() in ("true", "false"):
        return f"realtime.enabled={value.lower()}"
    return arg


def quote_non_ascii(arg: str) -> str:
    """``key=value`` with a non-ASCII value quoted for Hydra, which reads only ASCII outside quotes:
    ``input=/v/ünï.mp4`` -> ``input='/v/ünï.mp4'``; each item of a sweep ``a,b`` is quoted on its own
    (``${...}`` interpolations still resolve inside quotes).

    Left as they are: flags, ASCII values, lists, dicts, sweep functions (``choice(...)``), values holding a
    quote or ending with a backslash; Hydra then names the argument and the error says how to quote it."""
    key, sep, value = arg.partition("=")
    if arg.startswith("-") or not sep or value.isascii() or value[:1] in "[{" or value.endswith("\\"):
        return arg
    if any(c in value for c in "'\"()"):
        return arg
    items = [value] if "${" in value else value.split(",")
    return f"{key}=" + ",".join(f"'{item}'" for item in items)


def _explain_missing_choice(err: MissingConfigException) -> str:
    missing = err.missing_cfg_file or ""
    group, _, choice = missing.rpartition("/")
    if group and err.options:
        return f"unknown {group} '{choice}'; choose one of: {', '.join(sorted(err.options))}"
    return f"{one_line(str(err), limit=10_000)}; check the name"


class ErrorLine(Callback):
    """Hydra callback (``hydra.callbacks.error_line``): a job's user error or interruption reaches
    :func:`hydra_command` as one line, without Hydra's "Error executing job with overrides: [...]" line (the
    overrides may hold a scramble key), and stops a sweep (the remaining jobs are not started)."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status is not JobStatus.FAILED:
            return
        # the job's exception (the public getter prints the overrides, then raises); BaseExceptions pass
        # through Hydra's callback runner and its launcher
        error = job_return._return_value
        if isinstance(error, InterruptedJob):
            raise error.interrupted from None
        if isinstance(error, InpaintAnonError):
            raise _Abort(error) from None


class RunFolder(ErrorLine):
    """Hydra callback (``hydra.callbacks.run_folder``) that keeps run folders honest (and is an
    :class:`ErrorLine`).

    - A run (or sweep) whose folder already holds a run record (``run.json``) is refused before Hydra writes its
      ``.hydra/`` into it: a second run must never replace the first one's record or scramble key.
    - A failed job's folder is removed when this run created it and no ``run.json`` was written (no empty
      folder holding only ``.hydra/`` is left behind).
    """

    def __init__(self) -> None:
        self._existing: set[Path] = set()  # job folders that were there before this run

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = _absolute(config.hydra.run.dir)
        _refuse_recorded(folder, "hydra.run.dir")
        if folder.exists():
            self._existing.add(folder)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = _absolute(config.hydra.sweep.dir)
        if sweep.is_dir():
            for job in sweep.iterdir():
                _refuse_recorded(job, "hydra.sweep.dir")
                self._existing.add(job)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status is not JobStatus.FAILED:
            return
        folder = _absolute(config.hydra.runtime.output_dir)
        if folder not in self._existing and not (folder / RUN_RECORD).exists():
            shutil.rmtree(folder, ignore_errors=True)
        super().on_job_end(config, job_return)


def _absolute(folder: Any) -> Path:
    return Path(os.path.abspath(str(folder)))


def _refuse_recorded(folder: Path, key: str) -> None:
    if (folder / RUN_RECORD).exists():
        raise _Abort(InputError(f"{folder} already holds a run ({RUN_RECORD}); a new run would replace its "
                                  f"record: choose another {key} or move that run away"))


# -- one run ------------------------------------------------------------------------------------------------


def run(cfg: DictConfig) -> float | None:
    """One run from a composed config. Returns the run.json value named by ``optimized_metric``.

    1. check the run's own settings, input, output and encoder settings before loading any model, and remove
       the partial files that killed runs left in the output, run and cache folders;
    2. build the components; 3. run the pipeline; 4. write run.json; 5. evaluate (``metrics=default``).
    """
    import torch

    from inpaint_anon.detect.cache import CachedDetector
    from inpaint_anon.inpaint.fast import ScrambleInpainter
    from inpaint_anon.inpaint.router import ClassRouter
    from inpaint_anon.pipeline import AnonymizePipeline
    from inpaint_anon.scramble import PIXELS_FILE
    from inpaint_anon.video import check_output, probe
    from inpaint_anon.video.live import LiveSource

    # 0. secrets given on the command line are removed from the files Hydra saved at job start
    _redact_hydra_files(cfg)
    # 1. resolve and check input, output and encoder settings before loading any model
    for name in ("overwrite", "keep_metadata", "pipeline.progress", "detector.cache"):
        check_bool(name, OmegaConf.select(cfg, name, default=False))
    method_nodes = _method_nodes(cfg)
    lossless = _needs_lossless(cfg.inpainter) or any(
        _needs_lossless(node) for node in method_nodes.values() if node is not None)
    if _is_batch(cfg):
        return _run_batch(cfg, method_nodes, lossless)
    source, target = _resolve_paths(cfg, lossless)
    output = Path(target)  # for its suffix and folder; a stream URL (a str target) has neither
    live = isinstance(source, LiveSource)
    realtime = _realtime_settings(cfg, scrambles=lossless)
    video = _video_settings(cfg, output, lossless)
    meta = None if live else probe(source, max_pixels=video.max_pixels)  # a live source is opened once
    if live and OmegaConf.select(cfg, "detector.cache", default=False):
        raise ConfigError(f"detector.cache=true needs a file input, not the live source {source}; "
                          "pass detector.cache=false")
    check_output(target, source=source, overwrite=cfg.overwrite, video=video)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    _remove_stale_partials(cfg, output, run_dir)

    # 2. build the components from their _target_ configs (stride and cache are run settings, not the model's);
    # seeded first, so whatever draws from torch's global generator (e.g. a model built from a yaml) repeats
    torch.manual_seed(cfg.seed)
    stride, use_cache = cfg.detector.get("stride", 1), cfg.detector.get("cache", False)  # checked in step 1
    detector, detector_cfg, detector_events = _build_detector(cfg)
    backends = _detector_backends(detector)
    tracker = _instantiate("tracker", cfg.tracker) if cfg.get("tracker") is not None else None
    whitelist = _build_whitelist(cfg)
    inpainter = _build_inpainter(cfg, method_nodes, set(detector.names.values()), run_dir, output)
    compositor = _instantiate("compositor", cfg.compositor)
    metrics = _instantiate("metrics", cfg.metrics) if cfg.get("metrics") is not None else None  # checked now
    if use_cache:
        settings = {**detector_cfg, "stride": stride}
        detector = CachedDetector(detector, cfg.paths.cache, source, settings)
    pipe = AnonymizePipeline(detector=detector, inpainter=inpainter, compositor=compositor, tracker=tracker,
                             detect_stride=stride, realtime=realtime, whitelist=whitelist, **_plain(cfg.pipeline))
    # a scramble records the exact pixels it changed in each frame: what unscrambling needs besides the key
    used = inpainter.inpainters if isinstance(inpainter, ClassRouter) else (inpainter,)
    scrambler = next((each for each in used if isinstance(each, ScrambleInpainter)), None)
    if scrambler is not None and meta is None:
        raise ConfigError(f"a scramble records every frame's pixels and needs a file input, not the live source "
                          f"{source}; record the stream to a file first, or choose another method")
    recorder = scrambler.record_pixels(run_dir / PIXELS_FILE, meta.height, meta.width) if scrambler else None
    if recorder is not None:
        _log_scramble_output(output, video, _lossless_output(output, video), run_dir)

    # 3. run (a detection cache and the scrambled pixel record are finished only when the whole run succeeded)
    try:
        with _stopping_live(source):
            result = pipe(source, target, overwrite=cfg.overwrite, keep_metadata=cfg.keep_metadata,
                          record_detections=run_dir / "detections.dets", video=video)
    except BaseException as stopped:
        if isinstance(stopped, Interrupted) and live and output.is_file():  # stopping a live source: kept
            stopped.written = output
        if use_cache:
            detector.abort()
        if recorder is not None:
            recorder.abort()
        raise
    result.events[:0] = detector_events
    if use_cache:
        detector.close()
        result.events.append({"event": "detection_cache", "hit": detector.hit, "path": str(detector.path)})
    if recorder is not None:
        recorder.commit(result.frames_out)

    # 4. record and report (the output is complete from here on, whatever happens next)
    try:
        record = {**_run_record(cfg, result, source, inpainter), "detector_backends": backends}
        record["output"] = str(target)  # a stream URL as given (result.out_path is a Path)
        if result.whitelist is not None:
            record["whitelist"] = result.whitelist
        if result.realtime is not None:
            record["realtime"] = result.realtime
            _log_realtime(result.realtime)
        if live:
            record["live"] = {"frames": source.frames, "reconnects": source.reconnects,
                              "ended": "lost" if source.lost is not None else "stopped" if source.stopping else "end"}
        if recorder is not None:
            record["scramble"].update(pixels=PIXELS_FILE, lossless_output=_lossless_output(output, video),
                                      codec=video.codec)
        write_atomic(run_dir / RUN_RECORD, json.dumps(record, indent=2, default=str) + "\n")
        if isinstance(source, LiveSource) and source.lost is not None:  # dropped for good; the output is kept
            raise source.lost
        for event in result.events:
            if event.get("event") == "fallback":
                logger.warning("region filled by fallback: %s", event)
        # 5. evaluate (metrics=default): metrics.json beside run.json
        if metrics is not None:
            from inpaint_anon.evaluate import evaluate_run

            result.metrics = evaluate_run(run_dir, metrics)["classes"]
    except Interrupted as interrupted:
        interrupted.written = result.out_path
        raise
    print(target, flush=True)
    return _optimized_value(cfg.get("optimized_metric"), record, result.metrics)


def _build_whitelist(cfg: DictConfig) -> Any:
    """``whitelist=FOLDER`` (``FOLDER/<person>/*.jpg|png``): a :class:`~inpaint_anon.whitelist.Whitelist` whose
    photos' faces are found by the shipped CenterFace detector and embedded with SFace (``whitelist_weights``:
    null = ``face_recognition_sface_2021dec.onnx`` looked up in the weights folder), cached under
    ``paths.cache``; None without a whitelist."""
    folder = cfg.get("whitelist")
    if folder is None:
        return None
    if not isinstance(folder, str) or not folder:
        raise ConfigError(f"whitelist={folder!r} is not a folder path; pass whitelist=FOLDER (FOLDER/<person>/*.jpg)")
    from inpaint_anon.detect.faces import face_detector
    from inpaint_anon.whitelist import Whitelist, load_embedder

    embedder = load_embedder(cfg.get("whitelist_weights"), device=cfg.device)
    photos = face_detector(device=cfg.device, input_size=PHOTO_DETECT_SIZE)  # large photos are downscaled
    return Whitelist.from_folder(folder, embedder, photos,
                                 cache_dir=Path(cfg.paths.cache) / "whitelist")


# -- a batch: a folder or a .zip input (inpaint_anon.batch) ---------------------------------------------


BATCH_KEYS = ("max_unpacked_mb", "max_ratio")


def _is_batch(cfg: DictConfig) -> bool:
    """True for a folder or .zip ``input`` (a missing ``input`` is reported by :func:`_resolve_paths`)."""
    from inpaint_anon.batch import is_batch

    try:
        given = cfg.input
    except MissingMandatoryValue:
        return False
    return given is not None and is_batch(str(given), None if cfg.output is None else str(cfg.output))


def _batch_limits(cfg: DictConfig) -> tuple[int, float]:
    """The ``batch:`` block, checked: (largest unpacked archive in bytes, largest compression ratio)."""
    from inpaint_anon.batch import DEFAULT_MAX_RATIO, DEFAULT_MAX_UNPACKED_BYTES
    from inpaint_anon.checks import check_float, check_keys

    block = _plain(cfg.batch) if cfg.get("batch") is not None else {}
    check_keys("batch", block, BATCH_KEYS)
    given_mb = block.get("max_unpacked_mb", DEFAULT_MAX_UNPACKED_BYTES / 2**20)
    megabytes = check_float("", "batch.max_unpacked_mb", given_mb, 1e-6)
    ratio = check_float("", "batch.max_ratio", block.get("max_ratio", DEFAULT_MAX_RATIO), 1.0)
    return int(megabytes * 2**20), ratio


def _refuse_whole_file_settings(cfg: DictConfig, scrambles: bool, run: str, fix: str) -> None:
    """ConfigError for a setting that needs every frame of one input file per run, in a ``run`` that is not that
    (a realtime run, a batch): metrics, the detection cache, a scramble (``scrambles``: its pixel record)."""
    needs = (("metrics", cfg.get("metrics") is not None, "metrics=none"),
             ("detector.cache=true", OmegaConf.select(cfg, "detector.cache", default=False), "detector.cache=false"),
             ("a scramble", scrambles, "another method"))
    for name, used, instead in needs:
        if used:
            raise ConfigError(f"{name} needs every frame of one input file per run, and {run}; pass {instead}{fix}")


def _refuse_in_batch(cfg: DictConfig, lossless: bool) -> None:
    """ConfigError for what works on one file per run only: realtime, metrics, the detection cache, scrambling."""
    if OmegaConf.select(cfg, "realtime.enabled", default=False):
        raise ConfigError("realtime=true is for live sources, not a folder or .zip input; pass realtime=false")
    _refuse_whole_file_settings(cfg, lossless, "this is a folder or .zip input", ", or run the files one at a time")


def _run_batch(cfg: DictConfig, method_nodes: dict[str, DictConfig | None], lossless: bool) -> float | None:
    """A folder or .zip input into a folder or .zip output (:func:`inpaint_anon.batch.run_batch`).

    1. check the ``batch:`` limits, the settings that are per file only, the paths and encoder settings, before
       any model is loaded;
    2. build the components once (one model load for the whole batch); 3. run every file through one pipeline;
    4. write run.json with the ``batch`` block, print the summary on stderr and the output path last;
       :class:`~inpaint_anon.batch.BatchFailed` (exit 1) when any file failed.
    """
    import time

    from inpaint_anon.batch import BatchFailed, check_paths, default_output, remove_stale_partials_under, run_batch

    # 1. check everything that can be checked without a model (a killed batch's partial files go first, so that
    # an output folder holding only those counts as empty)
    max_unpacked_bytes, max_ratio = _batch_limits(cfg)
    _refuse_in_batch(cfg, lossless)
    source = Path(str(cfg.input)).expanduser()
    output = Path(str(cfg.output)).expanduser() if cfg.output is not None else default_output(source)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    _remove_stale_partials(cfg, output, run_dir)
    if output.is_dir():
        for removed in remove_stale_partials_under(output):
            logger.warning("removed %s, left by an interrupted run", removed)
    check_paths(source, output, overwrite=cfg.overwrite)
    video = _video_settings(cfg, output.with_suffix(".mp4"), lossless)

    # 2. the components, once
    built = build_pipeline(cfg, method_nodes, run_dir, output)
    pipe, inpainter, events, backends = built.pipe, built.inpainter, built.events, built.backends

    def anonymize(in_file: Path, out_file: Path) -> RunResult:
        return pipe(in_file, out_file, overwrite=cfg.overwrite, keep_metadata=cfg.keep_metadata, video=video)

    # 3. every file
    started = time.perf_counter()
    try:
        summary = run_batch(source, output, anonymize, overwrite=cfg.overwrite, max_unpacked_bytes=max_unpacked_bytes,
                            max_ratio=max_ratio, progress=bool(cfg.pipeline.get("progress", True)))
    except Interrupted as interrupted:  # a folder keeps the files finished before the signal (a .zip: nothing)
        if output.is_dir() and any(path.is_file() for path in output.rglob("*")):
            interrupted.written = output
        raise

    # 4. record and report
    record = {"input": str(source), "output": str(output), "wall_seconds": round(time.perf_counter() - started, 3),
              "device": str(inpainter.device), "inpainter": inpainter.name, **inpainter.run_record(),
              "events": events, "detector_backends": backends, "batch": summary.as_dict(), **_provenance(cfg)}
    write_atomic(run_dir / RUN_RECORD, json.dumps(record, indent=2, default=str) + "\n")
    for line in summary.lines():
        print(line, file=sys.stderr, flush=True)
    print(output, flush=True)
    if summary.failed:
        first = next(result for result in summary.files if result.status == "failed")
        raise BatchFailed(f"{summary.failed} of {len(summary.files)} files failed (the first: {first.source}: "
                          f"{first.reason}); the others are in {output}, each file's reason in {run_dir / RUN_RECORD}")
    return None


@dataclass
class BuiltPipeline:
    """The components of a run that processes many files with one model load (a batch, a corpus worker).

    pipe: the pipeline. inpainter: the run's inpainter (or class router), for run.json. events: the detector's
    events (model fallbacks). backends: detector key -> the runtime its model runs on."""

    pipe: AnonymizePipeline
    inpainter: Inpainter
    events: list[dict[str, Any]]
    backends: dict[str, str]


def build_pipeline(cfg: DictConfig, method_nodes: dict[str, DictConfig | None], run_dir: Path,
                   output: Path) -> BuiltPipeline:
    """Seed torch with ``cfg.seed``, build the detector, tracker, inpainter(s), compositor and whitelist from their
    ``_target_`` configs and the :class:`~inpaint_anon.pipeline.AnonymizePipeline` that joins them (no live
    source, no detection cache: a file at a time). ``method_nodes``: :func:`_method_nodes` of ``cfg``."""
    import torch

    from inpaint_anon.pipeline import AnonymizePipeline

    torch.manual_seed(cfg.seed)
    detector, _, events = _build_detector(cfg)
    backends = _detector_backends(detector)
    tracker = _instantiate("tracker", cfg.tracker) if cfg.get("tracker") is not None else None
    inpainter = _build_inpainter(cfg, method_nodes, set(detector.names.values()), run_dir, output)
    compositor = _instantiate("compositor", cfg.compositor)
    pipe = AnonymizePipeline(detector=detector, inpainter=inpainter, compositor=compositor, tracker=tracker,
                             detect_stride=cfg.detector.get("stride", 1), whitelist=_build_whitelist(cfg),
                             **_plain(cfg.pipeline))
    return BuiltPipeline(pipe, inpainter, events, backends)


@contextmanager
def _stopping_live(source: Path | LiveSource) -> Iterator[None]:
    """Within, for a live source: the first SIGINT / SIGTERM / SIGHUP ends its stream (:meth:`LiveSource.stop`:
    the run finishes normally with the frames received); the next one raises :class:`Interrupted`. A file source
    (or a thread other than the main one) keeps the handlers of :func:`interruptible`."""
    from inpaint_anon.video.live import LiveSource

    if not isinstance(source, LiveSource) or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        logger.warning("%s: stopping %s; the recording so far is finished (send it again to abort)",
                       signal.Signals(signum).name, source)
        source.stop()
        for name, handler in previous.items():  # the next signal interrupts
            signal.signal(getattr(signal, name), handler)

    previous: dict[str, Any] = {}
    with _handling_signals(stop) as replaced:
        previous.update(replaced)
        yield


def _realtime_settings(cfg: DictConfig, scrambles: bool = False) -> RealtimeSettings:
    """The ``realtime:`` block as RealtimeSettings. When enabled, its ``tracker`` and ``pipeline`` settings are
    merged into ``cfg.tracker`` / ``cfg.pipeline`` (no look-ahead, one frame per batch, short queues), so run.json
    records what ran. What needs every frame is refused, since a realtime run may drop frames: evaluation
    (``metrics``), the detection cache, and a scramble (``scrambles``: its record must hold every frame)."""
    from inpaint_anon.realtime import RealtimeSettings

    block = _plain(cfg.realtime) if cfg.get("realtime") is not None else {}
    overrides = {group: block.pop(group, None) or {} for group in ("tracker", "pipeline")}
    settings = RealtimeSettings.from_dict(block)
    if not settings.enabled:
        return settings
    _refuse_whole_file_settings(cfg, scrambles, "a realtime run may drop frames", ", or realtime=false")
    if cfg.get("tracker") is not None:
        cfg.tracker = OmegaConf.merge(cfg.tracker, overrides["tracker"])
    cfg.pipeline = OmegaConf.merge(cfg.pipeline, overrides["pipeline"])
    return settings


def _log_realtime(stats: dict[str, Any]) -> None:
    latency = stats["latency_ms"]
    logger.info("realtime: %d frames in, %d out, %d dropped before detection (%d detected, %d on held masks); "
                "%.1f fps out; latency p50 %s ms, p99 %s ms (bound %g ms)", stats["frames_in"], stats["frames_out"],
                stats["dropped"], stats["detected"], stats["held_only"], stats["fps_out"], latency["p50"],
                latency["p99"], stats["max_latency_ms"])


def _optimized_value(name: str | None, record: dict[str, Any], metrics: dict[str, Any]) -> float | None:
    """The value a sweeper optimizes: a run.json key, or ``CLASS/METRIC`` from metrics.json."""
    if not name:
        return None
    group, _, metric = name.rpartition("/")
    value = metrics.get(group, {}).get(metric) if group else record.get(name)
    return float(value) if isinstance(value, (int, float)) else None


def _resolve_paths(cfg: DictConfig, lossless: bool = False) -> tuple[Path | LiveSource, Path | str]:
    """(input, output); the default output is ``<stem>_anon`` beside the input: .mp4 for a video (.mkv
    when the inpainter needs a ``lossless`` output), the input's suffix for an image (.png when lossless needs
    it). A camera, URL or ``-`` input is a :class:`~inpaint_anon.video.live.LiveSource` (``live:`` settings)
    and needs an ``output``; a stream URL output stays a str."""
    from inpaint_anon.video.live import LiveSettings, LiveSource, StreamSpec, output_spec

    try:
        given = str(cfg.input)
    except MissingMandatoryValue:
        raise InputError("no input given; pass input=PATH (a video or image file)") from None
    if StreamSpec.parse(given).is_live:
        if cfg.output is None:
            raise InputError(f"a live input ({given}) needs an output; pass output=out.mp4, out.m3u8 or a stream "
                             "URL such as udp://127.0.0.1:5000")
        output = str(cfg.output)
        live = LiveSource.parse(given, LiveSettings.from_dict(_plain(cfg.live) if cfg.get("live") else {}))
        return live, output if output_spec(output).kind == "stream" else Path(output).expanduser()
    source = Path(given).expanduser()
    if not source.exists():
        raise InputError(f"input not found: {source}; check the path")
    if cfg.output is None:
        from inpaint_anon.video import IMAGE_SUFFIXES, LOSSLESS_IMAGE_SUFFIXES

        suffix = source.suffix.lower()
        if suffix not in IMAGE_SUFFIXES:
            suffix = ".mkv" if lossless else ".mp4"
        elif lossless and suffix not in LOSSLESS_IMAGE_SUFFIXES:
            suffix = ".png"
        output = source.with_name(f"{source.stem}_anon{suffix}")
    elif output_spec(str(cfg.output)).kind == "stream":
        return source, str(cfg.output)
    else:
        output = Path(str(cfg.output)).expanduser()
    return source, output


def _remove_stale_partials(cfg: DictConfig, output: Path, run_dir: Path) -> None:
    """Delete the partial files of dead processes (a SIGKILLed run) where this run writes."""
    folders = [output.parent, run_dir, Path(str(cfg.paths.cache)).expanduser()]
    stats = OmegaConf.select(cfg, "metrics.fid_stats_dir", default=None)
    if stats:
        folders.append(Path(str(stats)).expanduser())
    for folder in dict.fromkeys(folders):
        for removed in remove_stale_partials(folder):
            logger.warning("removed %s, left by an interrupted run", removed)


def _inpainter_class(node: DictConfig) -> type:
    """The class an inpainter config builds: its ``_target_``, or the class of a factory classmethod such as
    ``LatentInpainter.from_pretrained`` (imports the module, loads no model)."""
    name = str(node.get("_target_"))
    try:
        target = hydra.utils.get_object(name)
    except Exception as error:  # noqa: BLE001 - Hydra raises ImportError/ValueError/others for a bad path
        raise ConfigError(f"inpainter._target_={name} cannot be imported ({error}); check the name") from None
    return target.__self__ if inspect.ismethod(target) else target


def _needs_lossless(node: DictConfig) -> bool:
    """True when the inpainter's output must be lossless (:attr:`Inpainter.lossless`) and the user did not
    accept a lossy one (``inpainter.allow_lossy=true``)."""
    from inpaint_anon.inpaint.base import Inpainter

    cls = _inpainter_class(node)
    wants = isinstance(cls, type) and issubclass(cls, Inpainter) and cls.lossless
    return bool(wants and not node.get("allow_lossy", False))


def _video_settings(cfg: DictConfig, output: Path, lossless: bool) -> VideoSettings:
    """The encoder settings (``video.*``, checked); ``video.codec: null`` picks FFV1 for a ``lossless`` run into a
    .mkv output and libx264 otherwise. A lossless run refuses a lossy output.

    A lossless run accepts a video whose codec is lossless (FFV1; libx264rgb at crf 0) or a .png/.bmp/.tif still;
    anything else is a ConfigError naming the fix (a .mkv output, or ``inpainter.allow_lossy=true`` to accept an
    output that cannot be unscrambled exactly).
    """
    from inpaint_anon.video import IMAGE_SUFFIXES, VideoSettings

    values = _plain(cfg.video)
    if values.get("codec") is None:
        values["codec"] = "ffv1" if lossless and output.suffix.lower() == ".mkv" else "libx264"
    video = VideoSettings.from_dict(values)
    if not lossless or _lossless_output(output, video):
        return video
    suffix = output.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        raise ConfigError(f"{output.name} is a lossy image format, but this inpainter's output must be lossless "
                          f"to be reversible; use a .png output or pass inpainter.allow_lossy=true")
    raise ConfigError(f"video.codec={video.codec} in a {suffix or 'suffix-less'} output is lossy, but this "
                      "inpainter's output must be lossless to be reversible; use a .mkv output (FFV1, lossless: the "
                      "default output here) or pass inpainter.allow_lossy=true to accept an output that cannot be "
                      "undone exactly")


def _lossless_output(output: Path, video: VideoSettings) -> bool:
    """True when ``output`` written with ``video`` decodes to exactly the frames written: a lossless still format,
    or a lossless video codec (:attr:`VideoSettings.lossless`)."""
    from inpaint_anon.video import IMAGE_SUFFIXES, LOSSLESS_IMAGE_SUFFIXES

    suffix = output.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return suffix in LOSSLESS_IMAGE_SUFFIXES
    return video.lossless


def _log_scramble_output(output: Path, video: VideoSettings, lossless: bool, run_dir: Path) -> None:
    if lossless:
        logger.info("scramble: writing a lossless output (%s) to %s; undo it with: python -m inpaint_anon.unscramble "
                    "run_dir=%s output=RESTORED.mkv", video.codec, output, run_dir)
    else:
        logger.warning("scramble: the output %s is lossy (inpainter.allow_lossy=true): unscrambling it will not "
                       "restore the original pixels exactly", output)


METHODS = ("diffusion", "blur", "pixelate", "solid", "scramble", "none")
"""What ``anonymize.<class>`` may name: an inpainter config of ``conf/inpainter/`` or ``none`` (left as it is)."""
CONF_DIR = Path(__file__).resolve().parent / "conf"


def _build_detector(cfg: DictConfig) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    """The run's detector, its settings (for the detection cache key) and its events: ``detectors`` (name ->
    detector config; a :class:`~inpaint_anon.detect.multi.MultiDetector`) when set, else ``detector``. The run
    settings (:data:`DETECTION_RUN_KEYS`) are taken out of each config; they are read from ``detector`` only.
    A plate detector that fell back to another model (offline) gives a ``model_fallback`` event, and its
    settings name the model it uses, so its detections are never cached as the requested model's."""
    nodes = cfg.get("detectors")
    if nodes is None:
        settings = {k: v for k, v in _plain(cfg.detector).items() if k not in DETECTION_RUN_KEYS}
        detector = _instantiate("detector", settings)
        return detector, settings, _model_fallback("detector", detector, settings)
    from inpaint_anon.detect.multi import MultiDetector

    if not isinstance(nodes, DictConfig) or not any(node is not None for node in nodes.values()):
        raise ConfigError(f"detectors={OmegaConf.to_container(nodes) if isinstance(nodes, DictConfig) else nodes!r} "
                          "names no detector; give name: config pairs (e.g. +experiment=traffic) or detectors=null")
    children, settings, events = {}, {}, []
    for name, node in nodes.items():
        if node is None:
            continue
        settings[str(name)] = {k: v for k, v in _plain(node).items() if k not in DETECTION_RUN_KEYS}
        children[str(name)] = _instantiate(f"detectors.{name}", settings[str(name)])
        events += _model_fallback(f"detectors.{name}", children[str(name)], settings[str(name)])
    return MultiDetector(children), {"detectors": settings}, events


def _detector_backends(detector: Any) -> dict[str, str]:
    """Detector key (``detector`` or ``detectors.<name>``) -> the runtime its ultralytics model runs on
    (:attr:`~inpaint_anon.detect.yolo_seg.YoloSegDetector.backend_used`: torch, onnxruntime, ...)."""
    from inpaint_anon.detect.faces import FaceDetector
    from inpaint_anon.detect.multi import MultiDetector
    from inpaint_anon.detect.yolo_seg import YoloSegDetector

    children = ({f"detectors.{k}": d for k, d in detector.detectors.items()} if isinstance(detector, MultiDetector)
                else {"detector": detector})
    faces = {key: child.backend for key, child in children.items() if isinstance(child, FaceDetector)}
    return {key: child.backend_used for key, child in children.items() if isinstance(child, YoloSegDetector)} | faces


def _model_fallback(key: str, detector: Any, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """``[model_fallback event]`` when ``detector`` is a plate detector that replaced its weights by its
    fallback (``settings["weights"]`` then becomes the model used); else ``[]``."""
    from inpaint_anon.detect.plates import PlateDetector

    if not isinstance(detector, PlateDetector) or detector.fallback_reason is None:
        return []
    wanted, settings["weights"] = settings.get("weights"), detector.weights
    return [{"event": "model_fallback", "detector": key, "wanted": wanted, "used": detector.weights,
             "reason": detector.fallback_reason}]


def _method_nodes(cfg: DictConfig) -> dict[str, DictConfig | None]:
    """Method name -> its inpainter config, for every method ``anonymize`` names (None for ``none``): the run's
    ``inpainter`` config for the method it is (``runtime.choices.inpainter``); any other method's
    ``conf/inpainter/<method>.yaml`` with ``methods.<method>`` merged over it. ConfigError for an unknown
    method in ``anonymize`` or ``methods``, and for ``methods.<the run's inpainter>`` (that is ``inpainter.*``)."""
    chosen = _inpainter_choice()
    settings = cfg.get("methods") or {}
    for method in settings:
        if method not in METHODS or method == "none":
            raise ConfigError(f"methods.{method} is not a method with settings; use one of: "
                              f"{', '.join(m for m in METHODS if m != 'none')}")
        if method == chosen:
            raise ConfigError(f"methods.{method}: {method} is this run's inpainter; set inpainter.<key>=... instead")
    nodes: dict[str, DictConfig | None] = {}
    for class_name, method in (cfg.get("anonymize") or {}).items():
        if method is None or method in nodes:
            continue
        if method == chosen:
            nodes[method] = cfg.inpainter
        elif method == "none":
            nodes[method] = None
        elif method in METHODS:
            node = cfg.copy()  # keeps the root, so ${device} and ${seed} resolve
            node.inpainter = OmegaConf.merge(OmegaConf.load(CONF_DIR / "inpainter" / f"{method}.yaml"),
                                             settings.get(method) or {})
            nodes[method] = node.inpainter
        else:
            raise ConfigError(f"anonymize.{class_name}={method} is not a method; choose one of: {', '.join(METHODS)}")
    unused = sorted(set(settings) - set(nodes))
    if unused:
        logger.info("methods: no class of this run uses %s; its settings are ignored", ", ".join(unused))
    return nodes


def _anonymize_overrides() -> set[str]:
    """The classes given on the command line as ``anonymize.<class>=...`` (empty outside a Hydra run)."""
    try:
        task = HydraConfig.get().overrides.task
    except ValueError:
        return set()
    keys = (o.split("=", 1)[0].lstrip("+~") for o in task)
    return {key.removeprefix("anonymize.") for key in keys if key.startswith("anonymize.")}


def _inpainter_choice() -> str | None:
    """The ``inpainter`` group option of this run (e.g. ``blur``), None outside a Hydra run."""
    try:
        return HydraConfig.get().runtime.choices.get("inpainter")
    except ValueError:
        return None


def _build_inpainter(cfg: DictConfig, method_nodes: dict[str, DictConfig | None], classes: set[str], run_dir: Path,
                     output: Path) -> Any:
    """The run's inpainter: ``inpainter``, or with ``anonymize`` set a
    :class:`~inpaint_anon.inpaint.router.ClassRouter` of one inpainter per method (``inpainter`` as the default).
    ConfigError for a class in ``anonymize`` that no detector of the run reports (``classes``)."""
    default = _instantiate("inpainter", _inpainter_config(cfg.inpainter, run_dir, output))
    anonymize = {str(k): str(v) for k, v in (cfg.get("anonymize") or {}).items() if v is not None}
    unknown = sorted(_anonymize_overrides() - classes)
    if unknown:
        raise ConfigError(f"anonymize.{unknown[0]}: no detector of this run reports class {unknown[0]!r} (they "
                          f"report: {', '.join(sorted(classes))}); use one of those names or add a detector")
    unused = sorted(set(anonymize) - classes)
    if unused:  # set by an experiment for a detector this run does not have (e.g. ~detectors.plates)
        logger.info("anonymize: no detector of this run reports %s; ignored", ", ".join(unused))
    anonymize = {k: v for k, v in anonymize.items() if k in classes}
    if not anonymize:
        return default
    from inpaint_anon.inpaint.router import ClassRouter

    chosen = _inpainter_choice()
    built: dict[str, Any] = {}
    for method, node in method_nodes.items():
        if node is not None:
            built[method] = default if method == chosen else _instantiate(
                f"anonymize.{method}", _inpainter_config(node, run_dir, output))
    return ClassRouter({k: built.get(v) for k, v in anonymize.items()}, default=default)


def _inpainter_config(inpainter: DictConfig, run_dir: Path, output: Path) -> dict[str, Any]:
    """An inpainter's constructor config (resolved), without this module's keys (:data:`INPAINTER_RUN_KEYS`);
    for a keyed inpainter the key from :func:`_scramble_key`."""
    node = _plain(inpainter)
    run_keys = {name: node.pop(name) for name in INPAINTER_RUN_KEYS if name in node}
    if "key" in node:
        node["key"] = _scramble_key(node["key"], run_keys.get("key_file"), run_dir, output)
    return node


def _scramble_key(key: str | None, key_file: str | None, run_dir: Path, output: Path) -> str:
    """The scramble key: ``inpainter.key`` ($INPAINT_ANON_KEY), else the one in an existing ``key_file``, else a
    new one (:func:`~inpaint_anon.scramble.new_key`).

    A new key is saved only where the user asks (``key_file``, mode 600), else shown once on stderr (never logged,
    never stored in the run folder); a given key is saved to a ``key_file`` that does not exist yet. The key file
    may not lie in the output's folder nor anywhere in the run folder, which hold what the key protects.
    """
    from inpaint_anon.scramble import key_bytes, new_key, read_key_file, write_key_file

    if key_file is None:
        if key is not None:
            return key
        key = new_key()
        print(f"scramble: no key given; generated this one, shown only now and saved nowhere (keep it secret, "
              f"it undoes the scramble; pass inpainter.key_file=PATH to save it next time):\n{key}",
              file=sys.stderr, flush=True)
        return key
    path = _check_key_file(Path(str(key_file)).expanduser(), run_dir, output)
    if path.exists():
        stored = read_key_file(path)
        if key is not None and key_bytes(key) != key_bytes(stored):
            raise ConfigError(f"inpainter.key differs from the key in inpainter.key_file={path}; give only one")
        return stored
    generated = key is None
    key = new_key() if generated else key
    write_key_file(path, key)
    print(f"scramble: {'generated a new key and saved' if generated else 'saved the key'} to {path} (mode 600; "
          "keep it secret and apart from the video: it undoes the scramble)", file=sys.stderr, flush=True)
    return key


def _check_key_file(path: Path, run_dir: Path, output: Path) -> Path:
    """``path``, unless it lies in the output's folder or inside the run folder (ConfigError)."""
    resolved = path.resolve()
    run_folder = run_dir.resolve()
    if resolved.parent == output.parent.resolve() or run_folder == resolved or run_folder in resolved.parents:
        where = "run folder" if run_folder in resolved.parents else "output's folder"
        raise ConfigError(f"inpainter.key_file={path} lies in the {where}, beside what the key protects; "
                          "keep it elsewhere, e.g. inpainter.key_file=~/.config/inpaint_anon/video.key")
    return path


def _check_options(group: str, node: DictConfig | dict[str, Any]) -> None:
    """ConfigError for a key of ``node`` that its ``_target_`` does not take (e.g. ``+detector.blokcs=3``), with
    the options it does take; nothing when the target cannot be imported (instantiate then says why) or takes
    ``**kwargs``."""
    name = node.get("_target_") if isinstance(node, (DictConfig, dict)) else None
    if name is None:
        return
    try:
        target = hydra.utils.get_object(str(name))
        parameters = inspect.signature(target).parameters
    except Exception:  # noqa: BLE001 - Hydra raises ImportError/ValueError/others; instantiate reports them
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = [str(key) for key in node if not str(key).startswith("_") and str(key) not in parameters]
    if unknown:
        raise ConfigError(f"{group}.{unknown[0]} is not an option of {str(name).rsplit('.', 1)[-1]}; its options "
                          f"are: {', '.join(parameters)}")


def _instantiate(group: str, node: DictConfig | dict[str, Any]) -> Any:
    """Instantiate a component; its user errors are re-raised prefixed with the config group."""
    _check_options(group, node)
    try:
        return hydra.utils.instantiate(node, _convert_="all")
    except InstantiationException as err:
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, InpaintAnonError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise _prefixed(cause, group) from err
    except ConfigError as err:
        raise _prefixed(err, group) from err


def _prefixed(err: InpaintAnonError, group: str) -> InpaintAnonError:
    """The same error, its message starting with the config group unless it already names it."""
    message = str(err)
    return type(err)(message if message.startswith(f"{group}.") else f"{group}: {message}")


def _plain(node: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


def _run_record(cfg: DictConfig, result: RunResult, source: Path, inpainter: Inpainter) -> dict[str, Any]:
    """The content of run.json."""
    meta = result.meta
    return {
        "input": str(source),
        "output": str(result.out_path),
        "frames_in": result.frames_in,
        "frames_out": result.frames_out,
        "fps_processing": round(result.fps_processing, 3),
        "wall_seconds": round(result.wall_seconds, 3),
        "timings": {k: round(v, 4) for k, v in result.timings.items()},
        "device": str(inpainter.device),
        "inpainter": inpainter.name,
        **inpainter.run_record(),
        "events": result.events,
        "meta": {"width": meta.width, "height": meta.height, "fps": str(meta.fps), "n_frames": meta.n_frames,
                 "has_audio": meta.has_audio, "rotation": meta.rotation, "codec": meta.codec},
        **_provenance(cfg),
    }


def _provenance(cfg: DictConfig) -> dict[str, Any]:
    """What every run.json records about how it ran: package versions, overrides and config (secrets redacted)."""
    return {
        "versions": versions(),
        "overrides": [_redacted_override(o) for o in HydraConfig.get().overrides.task],
        "config": _redacted(OmegaConf.to_container(cfg, resolve=True)),
    }


SECRET_KEYS = ("key",)
REDACTED = "<redacted>"
HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")  # what Hydra saves in <run>/.hydra at job start


def _override_key(override: str) -> str:
    """The last component of an override's key: ``+inpainter.key=...`` -> ``key``."""
    return override.split("=", 1)[0].lstrip("+~").split(".")[-1]


def _redacted_override(override: str) -> str:
    return f"{override.split('=', 1)[0]}={REDACTED}" if _override_key(override) in SECRET_KEYS else override


def _redacted(node: Any) -> Any:
    """A copy of a config container with secret values (scramble keys) replaced by a marker."""
    if isinstance(node, dict):
        return {k: REDACTED if k in SECRET_KEYS and node[k] is not None else _redacted(v)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_redacted(v) for v in node]
    return node


def _secret_values(overrides: list[str], node: Any) -> set[str]:
    """The literal secret values in command-line overrides and in a config container (unresolved: a value from
    ``${oc.env:...}`` stays an interpolation and is saved as one)."""
    found = {o.split("=", 1)[1].strip().strip("'\"") for o in overrides if "=" in o and _override_key(o) in SECRET_KEYS}
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found.update(v.strip() for k, v in item.items() if k in SECRET_KEYS and isinstance(v, str)
                         and not v.startswith("${"))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return {value for value in found if value and value != REDACTED}


def _redact_text(text: str, values: set[str]) -> str:
    """``text`` with every whole occurrence of each secret value replaced by :data:`REDACTED`."""
    for value in sorted(values, key=len, reverse=True):
        text = re.sub(rf"(?<![0-9A-Za-z]){re.escape(value)}(?![0-9A-Za-z])", REDACTED, text)
    return text


def _redact_hydra_files(cfg: DictConfig) -> None:
    """Rewrite the files Hydra saved at job start (``.hydra/config.yaml``, ``hydra.yaml``, ``overrides.yaml``
    and a multirun's ``multirun.yaml``) with secret values (scramble keys) replaced by :data:`REDACTED`.

    Runs before any work, so a key given as ``inpainter.key=...`` does not stay in the run folder.
    """
    hydra_cfg = HydraConfig.get()
    values = _secret_values(list(hydra_cfg.overrides.task), OmegaConf.to_container(cfg, resolve=False))
    if not values:
        return
    from inpaint_anon.atomic import write_atomic

    files = []
    if hydra_cfg.output_subdir is not None:
        files += [Path(hydra_cfg.runtime.output_dir) / str(hydra_cfg.output_subdir) / name for name in HYDRA_FILES]
    if hydra_cfg.mode == RunMode.MULTIRUN:
        files.append(Path(hydra_cfg.sweep.dir) / "multirun.yaml")
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        redacted = _redact_text(text, values)
        if redacted != text:
            write_atomic(path, redacted)


if __name__ == "__main__":
    # through the imported module, so that Hydra's callbacks (inpaint_anon.run.RunFolder) and this command share
    # one copy of the classes they raise and catch
    from inpaint_anon.run import main as _main

    raise SystemExit(_main())

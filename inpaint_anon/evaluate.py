"""Evaluate a finished run folder: per-class metrics of the anonymized video against the original.

``evaluate_run(run_dir, config)`` streams the run's input video, its output video and its ``detections.dets``
(the final tracked masks) together, one frame at a time (memory stays flat), feeds a
:class:`~inpaint_anon.metrics.RunEvaluator` and writes ``metrics.json`` into the run folder::

    {"format": "inpaint_anon.metrics/1", "run_dir", "input", "output", "frames", "frames_evaluated",
     "classes": {"all": {"psnr_out": 41.2, ...}, "person": {...}, ...},   # class -> metric -> value
     "undefined": {class: {metric: reason}},      # values that are null, and why
     "metrics": {metric: {"direction": "higher"|"lower"|"", "arrow": "↑"|"↓"|"", "unit", "description"}},
     "ran": [group...], "skipped": {group: reason},  # e.g. {"fid": "FID: weights ... are not cached ..."}
     "counts": {class: {"frames", "regions", "crops", ...}}, "examples": {class: {"frame", "box", ...}},
     "config": {...}, "fid_real_statistics": {...}, "seconds": 12.3, "versions": {...}}

Values are floats, ``"inf"`` for an infinite PSNR (identical pixels), or null (reason in ``undefined``).

The metrics config is, in order: the ``config`` argument; else ``run.json``'s ``config.metrics`` (Hydra
interpolations ``${a.b}`` and ``${oc.env:NAME,default}`` are resolved against run.json); else the defaults.

Command line (``key=value`` arguments, no Hydra)::

    python -m inpaint_anon.evaluate run_dir=PATH [metrics.lpips=false] [metrics.fid_weights=/w.pth] ...

prints a summary, then the path of ``metrics.json`` as its last line. A bad run folder (no run.json, no
detections.dets, missing videos) or a bad option prints one ``error: ...`` line and exits with code 2; a metric
whose weights are unavailable is skipped with a ``warning:`` line and the others still run.

Relative ``input`` / ``output`` paths in run.json are looked up from the current folder first, then from each
folder above the run folder (runs are written under ``<root>/experiments/...`` with paths relative to
``<root>``). ``input=`` / ``output=`` arguments replace them.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from inpaint_anon.atomic import write_atomic
from inpaint_anon.errors import ConfigError, InpaintAnonError, InputError
from inpaint_anon.metrics.config import METRICS, MetricsConfig, parse_value
from inpaint_anon.metrics.evaluator import ALL, RunEvaluator
from inpaint_anon.types import Detections

METRICS_FILE = "metrics.json"
FORMAT = "inpaint_anon.metrics/1"
CLI_KEYS = ("run_dir", "input", "output")


@dataclass(frozen=True)
class RunFolder:
    """A run folder's parts: ``path``, the parsed ``record`` (run.json), ``input`` and ``output`` videos and
    ``detections`` (detections.dets), all checked to exist."""

    path: Path
    record: dict[str, Any]
    input: Path
    output: Path
    detections: Path

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE


def _locate(value: Any, role: str, run_dir: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise InputError(f"run {run_dir}: run.json has no {role!r} path; pass {role}=PATH")
    path = Path(value).expanduser()
    candidates = [path] if path.is_absolute() else [path, *(folder / path for folder in run_dir.resolve().parents)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InputError(f"run {run_dir}: {role} video {value} not found (looked in the current folder and above the "
                     f"run folder); pass {role}=PATH")


def load_run(run_dir: str | Path, *, input: str | Path | None = None, output: str | Path | None = None) -> RunFolder:
    """Check and open a run folder (run.json, detections.dets, both videos); InputError naming what is wrong."""
    path = Path(run_dir).expanduser()
    if not path.is_dir():
        raise InputError(f"run folder {path} not found; pass run_dir=<a folder written by inpaint_anon.run>")
    record_path = path / "run.json"
    if not record_path.is_file():
        raise InputError(f"{path} has no run.json, so it is not a run folder; pass the folder of one run")
    try:
        record = json.loads(record_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{record_path} cannot be read as JSON ({error}); the run did not finish cleanly") from error
    if not isinstance(record, dict):
        raise InputError(f"{record_path} is not a JSON object; the run did not finish cleanly")
    detections = path / "detections.dets"
    if not detections.is_file():
        raise InputError(f"{path} has no detections.dets (the run's masks); re-run the anonymization with this "
                         "version, which records them")
    source = Path(input).expanduser() if input is not None else _locate(record.get("input"), "input", path)
    result = Path(output).expanduser() if output is not None else _locate(record.get("output"), "output", path)
    for role, file in (("input", source), ("output", result)):
        if not file.is_file():
            raise InputError(f"run {path}: {role} video {file} not found; pass {role}=PATH")
    return RunFolder(path, record, source, result, detections)


# -- config from run.json ---------------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{([^}]*)\}")


def _resolve(value: Any, root: Mapping[str, Any], key: str, depth: int = 0) -> Any:
    """``value`` with ``${a.b}`` / ``${oc.env:NAME,default}`` interpolations resolved against ``root``."""
    if not isinstance(value, str) or "${" not in value:
        return value
    if depth > 10:
        raise ConfigError(f"metrics.{key}: interpolation {value!r} in run.json does not resolve; pass metrics.{key}=")

    def lookup(expression: str) -> Any:
        if expression.startswith("oc.env:"):
            name, comma, default = expression[len("oc.env:"):].partition(",")
            if name.strip() in os.environ:
                return os.environ[name.strip()]
            if comma:
                return parse_value(default.strip())
            raise ConfigError(f"metrics.{key}: environment variable {name.strip()} is not set; set it or pass "
                              f"metrics.{key}=VALUE")
        node: Any = root
        for part in expression.split("."):
            if not isinstance(node, Mapping) or part not in node or ":" in expression:
                raise ConfigError(f"metrics.{key}={value!r} in run.json cannot be resolved outside Hydra; pass "
                                  f"metrics.{key}=VALUE")
            node = node[part]
        return _resolve(node, root, key, depth + 1)

    whole = _INTERPOLATION.fullmatch(value)
    if whole:
        return lookup(whole.group(1))
    return _INTERPOLATION.sub(lambda m: str(lookup(m.group(1))), value)


def run_metrics_config(record: Mapping[str, Any], overrides: Sequence[str] = ()) -> MetricsConfig:
    """The run's metrics config (run.json ``config.metrics``, interpolations resolved, or the defaults) with
    ``metrics.<key>=<value>`` overrides applied. ConfigError for unknown keys or bad values."""
    config = record.get("config") if isinstance(record.get("config"), Mapping) else {}
    stored = config.get("metrics") if isinstance(config, Mapping) else None
    overridden = {item.partition("=")[0].removeprefix("metrics.") for item in overrides}
    values: dict[str, Any] = {}
    if isinstance(stored, Mapping):
        values = {k: _resolve(v, config, k) for k, v in stored.items() if k not in overridden and k != "_target_"}
    return MetricsConfig.from_dict(values).with_overrides(overrides)


# -- streaming ------------------------------------------------------------------------------------------


def _fit(anonymized: np.ndarray, height: int, width: int, index: int, output: Path) -> np.ndarray:
    """The anonymized frame at the original's size (the encoder pads odd sizes by one pixel)."""
    h, w = anonymized.shape[:2]
    if (h, w) == (height, width):
        return anonymized
    if height <= h <= height + 1 and width <= w <= width + 1:
        return anonymized[:height, :width]
    raise InputError(f"frame {index} of {output} is {w}x{h} but the original is {width}x{height}; evaluate the "
                     "output of this run's input")


def iter_frames(run: RunFolder) -> Iterator[tuple[int, np.ndarray, np.ndarray, Detections]]:
    """(index, original uint8 (H, W, 3), anonymized uint8 (H, W, 3), Detections) for every frame, streamed.

    Raises InputError when the two videos and the detections disagree on frame count or size."""
    from inpaint_anon.records import DetectionReader
    from inpaint_anon.video import VideoReader

    reader = DetectionReader(run.detections)
    if not reader.complete:
        raise InputError(f"{run.detections} is unfinished (the run did not complete); evaluate a finished run")
    with VideoReader(run.input) as originals, VideoReader(run.output) as anonymizeds:
        streams = {"input": iter(originals), "output": iter(anonymizeds), "detections.dets": iter(reader)}
        index = 0
        while True:
            items = {name: next(stream, None) for name, stream in streams.items()}
            if any(item is None for item in items.values()):
                break
            original, anonymized, (recorded, detections) = items.values()
            if recorded != index:
                raise InputError(f"{run.detections} has no record of frame {index} (its next is frame {recorded}); "
                                 "evaluate a run folder's detections.dets, which holds every frame")
            height, width = original.rgb.shape[:2]
            if (detections.height, detections.width) != (height, width):
                raise InputError(f"detections of frame {index} are {detections.width}x{detections.height} but the "
                                 f"input frame is {width}x{height} (WxH); the run folder mixes different videos")
            yield index, original.rgb, _fit(anonymized.rgb, height, width, index, run.output), detections
            index += 1
        counts = {name: index + (item is not None) + sum(1 for _ in streams[name]) for name, item in items.items()}
        if len(set(counts.values())) > 1:
            found = ", ".join(f"{name} {n}" for name, n in counts.items())
            raise InputError(f"run {run.path}: frame counts differ ({found}); the videos and detections must be "
                             "the same run's")


# -- the evaluation ---------------------------------------------------------------------------------------


def _fid_store(run: RunFolder, config: MetricsConfig, evaluator: RunEvaluator) -> Any:
    """The RealStatsStore of this run, or None when statistics are not saved."""
    if not config.fid_stats_dir or evaluator.features is None:
        return None
    from inpaint_anon.fingerprints import content_fingerprint
    from inpaint_anon.metrics.fid import RealStatsStore, masks_digest
    from inpaint_anon.records import DetectionReader

    key = {
        "input": content_fingerprint(run.input),
        "masks": masks_digest(DetectionReader(run.detections)),
        "crop": {"size": config.crop_size, "padding": config.crop_padding, "min_side": config.min_crop_side,
                 "frame_stride": config.frame_stride},
        "features": evaluator.features.name,
    }
    return RealStatsStore(config.fid_stats_dir, key)


def _versions() -> dict[str, str]:
    found = {}
    for name in ("torch", "torchmetrics", "lpips", "torch-fidelity", "scipy", "numpy"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def evaluate_run(run_dir: str | Path, config: MetricsConfig | Mapping[str, Any] | None = None, *,
                 input: str | Path | None = None, output: str | Path | None = None,
                 evaluator: RunEvaluator | None = None, write: bool = True) -> dict[str, Any]:
    """Evaluate one run folder and write ``<run_dir>/metrics.json`` (module docstring); returns its content.

    config: a MetricsConfig or a dict of its fields; None = the run's own (run.json) or the defaults.
    input, output: replace the video paths recorded in run.json.
    evaluator: a ready RunEvaluator (e.g. with random-weight networks in tests); None = built from config,
        networks loaded as configured (a metric whose weights are missing is skipped, with the reason).
    write: False = only return the result.
    Raises InputError for a bad run folder, ConfigError for a bad config."""
    started = time.perf_counter()
    run = load_run(run_dir, input=input, output=output)
    if config is None and evaluator is not None:
        config = evaluator.config
    elif config is None:
        config = run_metrics_config(run.record)
    elif not isinstance(config, MetricsConfig):
        config = MetricsConfig.from_dict(config)
    from inpaint_anon.metrics.leak import load_annotations
    from inpaint_anon.records import DetectionReader

    reader = DetectionReader(run.detections)
    annotations: dict[int, list[Any]] = {}
    skipped: dict[str, str] = {}
    if config.leak and config.annotations:
        annotations = load_annotations(config.annotations, reader.n_frames)
    elif config.leak:
        skipped["leak"] = ("no ground truth: set metrics.annotations=PATH (JSON lines, format in "
                           "inpaint_anon/metrics/leak.py)")
    if evaluator is None:
        evaluator = RunEvaluator.from_config(config, skipped=skipped)
    else:
        if evaluator.config != config:
            raise ConfigError("the evaluator given to evaluate_run has another config than the one given")
        evaluator.skipped.update({k: v for k, v in skipped.items() if k not in evaluator.skipped})
        evaluator.reset()
    store = _fid_store(run, config, evaluator)
    loaded = []
    if store is not None:
        stats = {name: s for name in [ALL, *reader.names.values()] if (s := store.load(name)) is not None}
        evaluator.load_real_statistics(stats)
        loaded = sorted(stats)

    frames = evaluated = 0
    for index, original, anonymized, detections in iter_frames(run):
        evaluator.update(index, original, anonymized, detections, annotations.get(index, ()))
        frames += 1
        evaluated += index % config.frame_stride == 0
    result = evaluator.compute()
    saved = []
    if store is not None:
        for name, state in evaluator.real_statistics().items():
            store.save(name, state)
            saved.append(name)

    present = {metric for row in result["classes"].values() for metric in row}
    document = {
        "format": FORMAT,
        "run_dir": str(run.path),
        "input": str(run.input),
        "output": str(run.output),
        "frames": frames,
        "frames_evaluated": evaluated,
        **result,
        "metrics": {name: {"direction": info.direction, "arrow": info.arrow, "unit": info.unit,
                           "description": info.description} for name, info in METRICS.items() if name in present},
        "config": config.as_dict(),
        "fid_real_statistics": {"store": str(store.folder) if store else None, "loaded": loaded, "saved": saved},
        "seconds": round(time.perf_counter() - started, 3),
        "versions": _versions(),
    }
    if write:
        _write_json(run.metrics_path, document)
    return document


# -- command line -----------------------------------------------------------------------------------------

USAGE = """usage: python -m inpaint_anon.evaluate run_dir=PATH [input=PATH] [output=PATH] [metrics.KEY=VALUE ...]

Evaluates a run folder and writes metrics.json into it. Metric options (metrics.KEY):
  {keys}
"""


def parse_args(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """(run_dir/input/output values, metrics overrides) from ``key=value`` arguments; ConfigError when bad."""
    paths: dict[str, str] = {}
    overrides: list[str] = []
    known = MetricsConfig.field_names()
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            raise ConfigError(f"argument {arg!r} is not key=value; e.g. run_dir=experiments/runs/<run>")
        if key in CLI_KEYS:
            paths[key] = value
        elif key.startswith("metrics.") and key.removeprefix("metrics.") in known:
            overrides.append(arg)
        else:
            raise ConfigError(f"unknown option {key!r}; use run_dir, input, output or metrics.<key> with key one of "
                              f"{', '.join(known)}")
    if "run_dir" not in paths:
        raise ConfigError("no run folder given; pass run_dir=PATH")
    return paths, overrides


def _summary(document: Mapping[str, Any]) -> str:
    names = [name for name in METRICS if any(name in row for row in document["classes"].values())]
    lines = ["class".ljust(10) + "".join(f"{name} {METRICS[name].arrow}".rjust(16) for name in names)]
    for row, values in document["classes"].items():
        cells = []
        for name in names:
            value = values.get(name)
            cells.append(("-" if value is None else value if isinstance(value, str) else f"{value:.4g}").rjust(16))
        lines.append(row.ljust(10) + "".join(cells))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m inpaint_anon.evaluate``; returns the exit code (0, or 2 after one ``error:`` line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(arg in ("-h", "--help", "help") for arg in argv):
        print(USAGE.format(keys=", ".join(MetricsConfig.field_names())))
        return 0
    try:
        paths, overrides = parse_args(argv)
        run = load_run(paths["run_dir"], input=paths.get("input"), output=paths.get("output"))
        config = run_metrics_config(run.record, overrides)
        document = evaluate_run(run.path, config, input=run.input, output=run.output)
    except InpaintAnonError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    for group, reason in document["skipped"].items():
        if not reason.startswith("disabled"):
            print(f"warning: {group} skipped: {reason}", file=sys.stderr)
    print(_summary(document))
    print(run.metrics_path, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

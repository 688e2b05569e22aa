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

The metrics config is, in order: the ``config`` argument; else ``run.json``'s ``config.metrics`` (resolved
when the run wrote it; a run.json of an older version that kept ``${...}`` interpolations is resolved here with
OmegaConf, or refused with a message that says what to pass); else the defaults.

Command line, a Hydra entry point (``conf/evaluate.yaml``, which reuses the ``metrics`` group)::

    python -m inpaint_anon.evaluate run_dir=PATH [metrics.lpips=false] [metrics.fid_weights=/w.pth] ...
    inpaint-anon evaluate run_dir=PATH ...

A ``metrics.<key>=`` argument replaces that key of the run's own metrics config (``metrics=default``: the
defaults, not the run's). It prints a summary, then the path of ``metrics.json`` as its last line, and writes
nothing else (no Hydra output folder or log). A bad run folder (no run.json, no detections.dets, missing videos)
or a bad option prints one ``error: ...`` line and exits with code 2; a metric whose weights are unavailable is
skipped with a ``warning:`` line and the others still run.

Relative ``input`` / ``output`` paths in run.json are looked up from the current folder first, then from each
folder above the run folder (runs are written under ``<root>/experiments/...`` with paths relative to
``<root>``). ``input=`` / ``output=`` arguments replace them.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from inpaint_anon.atomic import write_atomic
from inpaint_anon.errors import ConfigError, InputError, one_line
from inpaint_anon.metrics.config import METRICS, MetricsConfig
from inpaint_anon.metrics.evaluator import ALL, RunEvaluator
from inpaint_anon.types import Detections
from inpaint_anon.versions import versions

METRICS_FILE = "metrics.json"
FORMAT = "inpaint_anon.metrics/1"


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


def run_metrics_config(record: Mapping[str, Any], composed: Mapping[str, Any] | None = None,
                       overridden: Collection[str] = ()) -> MetricsConfig:
    """The metrics config of a run: run.json's ``config.metrics`` (else ``composed``, else the defaults), with
    the keys named in ``overridden`` taken from ``composed`` (the command line's config). ConfigError when a
    value is bad or an old run.json keeps an interpolation that cannot be resolved."""
    composed = dict(composed or {})
    stored = _stored_metrics(record, skip=overridden)
    values = composed if stored is None else {**stored, **{k: composed[k] for k in overridden if k in composed}}
    return MetricsConfig.from_dict(values)


def _stored_metrics(record: Mapping[str, Any], skip: Collection[str]) -> dict[str, Any] | None:
    """run.json's ``config.metrics`` without the ``skip`` keys, resolved; None when the run stored none."""
    config = record.get("config")
    stored = config.get("metrics") if isinstance(config, Mapping) else None
    if not isinstance(stored, Mapping):
        return None
    values = {k: v for k, v in stored.items() if k not in skip}
    unresolved = [k for k, v in values.items() if isinstance(v, str) and "${" in v]
    if not unresolved:
        return values
    # written by a version that stored the config unresolved: let OmegaConf resolve it against that config;
    # ${hydra:...} would resolve against this command's Hydra, not the run's, so it is refused
    hydra_only = [k for k in unresolved if "${hydra:" in values[k]]
    key = (hydra_only or unresolved)[0]
    fix = f"pass metrics.{key}=VALUE, or re-run the anonymization with this version (it records the resolved config)"
    if hydra_only:
        raise ConfigError(f"run.json keeps metrics.{key}={values[key]!r}, which only that run's Hydra could resolve; "
                          f"{fix}")
    try:
        root = OmegaConf.create({**config, "metrics": values})
        return OmegaConf.to_container(root.metrics, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as error:
        raise ConfigError(f"run.json keeps metrics.{key}={values[key]!r} unresolved and it does not resolve here "
                          f"({one_line(str(error), limit=10_000)}); {fix}") from None


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
        "versions": versions(),
    }
    if write:
        _write_json(run.metrics_path, document)
    return document


# -- command line -----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m inpaint_anon.evaluate`` / ``inpaint-anon evaluate``; returns the exit code (0, 2 after one
    ``error:`` line, 128 + signal after an ``interrupted:`` line)."""
    from inpaint_anon.run import hydra_command

    return hydra_command(_hydra_main, list(sys.argv[1:] if argv is None else argv))


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def _hydra_main(cfg: DictConfig) -> None:
    evaluate_command(cfg, HydraConfig.get().overrides.task)


def evaluate_command(cfg: DictConfig, overrides: Sequence[str]) -> dict[str, Any]:
    """Evaluate ``cfg.run_dir`` (``conf/evaluate.yaml``), print the summary and the metrics.json path."""
    if OmegaConf.is_missing(cfg, "run_dir"):
        raise ConfigError("no run folder given; pass run_dir=PATH (a folder written by inpaint_anon.run)")
    if cfg.get("metrics") is None:
        raise ConfigError("metrics=none evaluates nothing; drop it, or switch metric groups off with "
                          "metrics.<group>=false")
    run = load_run(str(cfg.run_dir), input=_optional_path(cfg.input), output=_optional_path(cfg.output))
    composed = OmegaConf.to_container(cfg.metrics, resolve=True)
    config = run_metrics_config(run.record, composed, overridden_metrics(overrides))  # type: ignore[arg-type]
    document = evaluate_run(run.path, config, input=run.input, output=run.output)
    for group, reason in document["skipped"].items():
        if not reason.startswith("disabled"):
            print(f"warning: {group} skipped: {reason}", file=sys.stderr)
    print(_summary(document))
    print(run.metrics_path, flush=True)
    return document


def _optional_path(value: Any) -> str | None:
    return None if value is None else str(value)


def overridden_metrics(overrides: Sequence[str]) -> set[str]:
    """The MetricsConfig keys that command-line ``overrides`` set (``metrics=...`` sets them all), read with
    Hydra's own override parser."""
    keys: set[str] = set()
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        name = override.key_or_group
        if name == "metrics":
            return set(MetricsConfig.field_names())
        if name.startswith("metrics."):
            keys.add(name.removeprefix("metrics.").split(".")[0])
    return keys


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


if __name__ == "__main__":
    from inpaint_anon.evaluate import main as _main  # one copy of the module for Hydra and this command

    raise SystemExit(_main())

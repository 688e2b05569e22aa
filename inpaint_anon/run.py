"""Command line entry point: ``python -m inpaint_anon.run`` and the ``inpaint-anon`` console script.

The only module that imports Hydra/OmegaConf: it composes ``conf/``, instantiates the components
(``_target_`` configs, ``_convert_="all"`` so the package only ever sees plain Python), runs the
:class:`~inpaint_anon.pipeline.AnonymizePipeline`, writes ``run.json`` into the Hydra run folder and
prints the output path as the last line. A user error (:class:`~inpaint_anon.errors.InpaintAnonError`,
an unknown config choice or key) prints one ``error: ...`` line on stderr and exits with code 2.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import secrets
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, InstantiationException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from inpaint_anon.errors import ConfigError, InpaintAnonError, InputError
from inpaint_anon.types import RunResult

logger = logging.getLogger("inpaint_anon")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
DETECTION_RUN_KEYS = ("stride", "cache")  # detector config keys that set up the detection stage, not the model
VERSIONED_PACKAGES = ("inpaint_anon", "torch", "torchvision", "diffusers", "transformers",
                      "ultralytics-opencv-headless", "ultralytics", "av", "numpy", "hydra-core")


def main() -> Any:
    """Console script: compose the config from the command line and run; exit 2 on user errors."""
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let composition errors reach us instead of Hydra's printer
    try:
        return _hydra_main()
    except MissingConfigException as err:
        _fail(_explain_missing_choice(err))
    except (ConfigCompositionException, OmegaConfBaseException) as err:
        cause = err.__cause__ if err.__cause__ is not None else err
        _fail(f"{str(cause).splitlines()[0]}; check the key and value (`--cfg job` prints the config)")


@hydra.main(version_base="1.3", config_path="conf", config_name="run")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        return run(cfg)
    except InpaintAnonError as err:
        _fail(str(err))  # SystemExit passes through Hydra untouched (it only catches Exception)


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def _explain_missing_choice(err: MissingConfigException) -> str:
    missing = err.missing_cfg_file or ""
    group, _, choice = missing.rpartition("/")
    if group and err.options:
        return f"unknown {group} '{choice}'; choose one of: {', '.join(sorted(err.options))}"
    return f"{str(err).splitlines()[0]}; check the name"


def run(cfg: DictConfig) -> float | None:
    """One run from a composed config. Returns the run.json value named by ``optimized_metric``."""
    import torch

    from inpaint_anon.detect.cache import CachedDetector
    from inpaint_anon.pipeline import AnonymizePipeline
    from inpaint_anon.video import VideoSettings, check_output, probe

    # 1. resolve and check input, output and encoder settings before loading any model
    source, output = _resolve_paths(cfg)
    video = VideoSettings.from_dict(_plain(cfg.video))
    probe(source, max_pixels=video.max_pixels)
    check_output(output, source=source, overwrite=cfg.overwrite, video=video)
    run_dir = Path(HydraConfig.get().runtime.output_dir)

    # 2. build the components from their _target_ configs (stride and cache are run settings, not the model's);
    # seeded first, so whatever draws from torch's global generator (e.g. a model built from a yaml) repeats
    torch.manual_seed(cfg.seed)
    detector_cfg = {k: v for k, v in _plain(cfg.detector).items() if k not in DETECTION_RUN_KEYS}
    stride, use_cache = cfg.detector.get("stride", 1), cfg.detector.get("cache", False)
    inpainter_cfg = _inpainter_config(cfg, run_dir)
    detector = _instantiate("detector", detector_cfg)
    tracker = _instantiate("tracker", cfg.tracker) if cfg.get("tracker") is not None else None
    inpainter = _instantiate("inpainter", inpainter_cfg)
    compositor = _instantiate("compositor", cfg.compositor)
    if use_cache:
        settings = {**detector_cfg, "stride": stride}
        detector = CachedDetector(detector, cfg.paths.cache, source, settings)
    pipe = AnonymizePipeline(detector=detector, inpainter=inpainter, compositor=compositor, tracker=tracker,
                             detect_stride=stride, **_plain(cfg.pipeline))

    # 3. run (a detection cache is finished only when the whole run succeeded)
    try:
        result = pipe(source, output, overwrite=cfg.overwrite, keep_metadata=cfg.keep_metadata,
                      record_detections=run_dir / "detections.dets", video=video)
    except BaseException:
        if use_cache:
            detector.abort()
        raise
    if use_cache:
        detector.close()
        result.events.append({"event": "detection_cache", "hit": detector.hit, "path": str(detector.path)})

    # 4. record and report
    record = _run_record(cfg, result, source, inpainter)
    (run_dir / "run.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    for event in result.events:
        if event.get("event") == "fallback":
            logger.warning("region filled by fallback: %s", event)
    # 5. evaluate (metrics=default): metrics.json beside run.json
    if cfg.get("metrics") is not None:
        from inpaint_anon.evaluate import evaluate_run

        result.metrics = evaluate_run(run_dir, _instantiate("metrics", cfg.metrics))["classes"]
    print(result.out_path, flush=True)
    return _optimized_value(cfg.get("optimized_metric"), record, result.metrics)


def _optimized_value(name: str | None, record: dict[str, Any], metrics: dict[str, Any]) -> float | None:
    """The value a sweeper optimizes: a run.json key, or ``CLASS/METRIC`` from metrics.json."""
    if not name:
        return None
    group, _, metric = name.rpartition("/")
    value = metrics.get(group, {}).get(metric) if group else record.get(name)
    return float(value) if isinstance(value, (int, float)) else None


def _resolve_paths(cfg: DictConfig) -> tuple[Path, Path]:
    try:
        source = Path(str(cfg.input)).expanduser()
    except MissingMandatoryValue:
        raise InputError("no input given; pass input=PATH (a video or image file)") from None
    if not source.exists():
        raise InputError(f"input not found: {source}; check the path")
    if cfg.output is None:
        suffix = source.suffix.lower() if source.suffix.lower() in IMAGE_SUFFIXES else ".mp4"
        output = source.with_name(f"{source.stem}_anon{suffix}")
    else:
        output = Path(str(cfg.output)).expanduser()
    return source, output


def _inpainter_config(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """The inpainter config, with a new scramble key generated (and saved) when none was given, and a
    fresh per-video nonce when none was given."""
    node = cfg.inpainter
    if "nonce" in node and node.nonce is None:
        node = OmegaConf.merge(node, {"nonce": secrets.token_hex(16)})
    if "key" in node and node.key is None:
        key = secrets.token_hex(32)
        key_file = run_dir / "scramble.key"
        key_file.touch(mode=0o600)
        key_file.write_text(key + "\n")
        logger.warning("no scramble key given: generated one and saved it to %s (keep it secret; "
                       "set INPAINT_ANON_KEY or inpainter.key to choose your own)", key_file)
        node = OmegaConf.merge(node, {"key": key})
    return node


def _instantiate(group: str, node: DictConfig | dict[str, Any]) -> Any:
    """Instantiate a component; its user errors are re-raised prefixed with the config group."""
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


def _run_record(cfg: DictConfig, result: RunResult, source: Path, inpainter: Any) -> dict[str, Any]:
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
        "device": str(getattr(inpainter, "device", "cpu")),
        "inpainter": getattr(inpainter, "name", type(inpainter).__name__),
        **({"scramble": {"nonce": inpainter.nonce, "key_fingerprint": inpainter.key_fingerprint}}
           if hasattr(inpainter, "key_fingerprint") else {}),
        "events": result.events,
        "meta": {"width": meta.width, "height": meta.height, "fps": str(meta.fps), "n_frames": meta.n_frames,
                 "has_audio": meta.has_audio, "rotation": meta.rotation, "codec": meta.codec},
        "versions": _versions(),
        "overrides": [o if o.split("=")[0].lstrip("+~").split(".")[-1] not in SECRET_KEYS
                      else o.split("=")[0] + "=<redacted>" for o in HydraConfig.get().overrides.task],
        "config": _redacted(OmegaConf.to_container(cfg, resolve=False)),
    }


SECRET_KEYS = ("key",)


def _redacted(node: Any) -> Any:
    """A copy of a config container with secret values (scramble keys) replaced by a marker."""
    if isinstance(node, dict):
        return {k: "<redacted>" if k in SECRET_KEYS and node[k] is not None else _redacted(v)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_redacted(v) for v in node]
    return node


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


if __name__ == "__main__":
    main()

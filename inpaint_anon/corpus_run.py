"""Command line of a corpus job: ``python -m inpaint_anon.corpus`` / ``inpaint-anon corpus`` (``conf/corpus.yaml``).

The Hydra edge of :mod:`inpaint_anon.corpus` (which is plain Python): it composes the same groups as a single run
(``+experiment=traffic`` works), turns the corpus keys into :class:`~inpaint_anon.corpus.CorpusSettings` and hands
the engine a :class:`HydraWorkerFactory`: a picklable recipe that every worker (a Ray actor, or the process itself
with ``launcher=local``) turns into one loaded pipeline with :func:`inpaint_anon.run.build_pipeline`, exactly as a
folder batch does, and runs each file as a single-file run would (same encoder settings, ``run.json`` from
:func:`inpaint_anon.run._run_record` with a ``corpus`` block: config hash, input fingerprint, regions per class).
With ``metrics=default`` each worker loads the metric networks once, writes each file's ``metrics.json`` into its
record folder (:func:`inpaint_anon.evaluate.evaluate_run`) and the evaluator's mergeable states beside it, which
the report merges (:func:`inpaint_anon.corpus.merge_metrics`).

Reused from :mod:`inpaint_anon.run` (the other Hydra edge): :func:`~inpaint_anon.run.build_pipeline`,
``_method_nodes``, ``_needs_lossless``, ``_video_settings``, ``_run_record``, ``_instantiate`` and
:func:`~inpaint_anon.run.hydra_command` (error lines and exit codes).

Exit status: 0 every file done; 1 ``error: N of M files failed ...`` (the report names each reason); 2 the job could
not start (one ``error:`` line); 128 + signal when interrupted (the finished files stay done, a resume goes on).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from inpaint_anon.checks import check_bool
from inpaint_anon.corpus import (
    METRIC_STATES,
    CorpusFailed,
    CorpusItem,
    CorpusSettings,
    FileOutcome,
    FileTask,
    RaySettings,
    config_hash,
    default_launcher,
    run_corpus,
)
from inpaint_anon.errors import ConfigError, InputError

CORPUS_KEYS = ("inputs", "output_dir", "resume", "retries", "shard", "launcher", "ray", "input", "output",
               "overwrite", "paths", "optimized_metric")
"""Keys of the composed config that say how the job runs, not what a file's output is: left out of the config
hash (so a resume after changing ``ray.workers`` or the shard still finds its files done)."""
RAY_KEYS = ("address", "workers", "cpus_per_worker", "init_timeout_s")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m inpaint_anon.corpus ARGS``; returns the exit code."""
    from inpaint_anon.run import hydra_command

    return hydra_command(_hydra_main, list(sys.argv[1:] if argv is None else argv))


@hydra.main(version_base="1.3", config_path="conf", config_name="corpus")
def _hydra_main(cfg: DictConfig) -> None:
    corpus(cfg)


def corpus(cfg: DictConfig) -> None:
    """Run the corpus job of a composed config; CorpusFailed (exit 1) after the report when a file failed."""
    settings = corpus_settings(cfg)
    if OmegaConf.is_missing(cfg, "inputs") or OmegaConf.is_missing(cfg, "output_dir"):
        raise InputError("a corpus needs inputs and output_dir; pass inputs='footage/**/*.mp4' (a glob, a folder or "
                         "a .jsonl/.csv manifest) output_dir=anon/")
    _refuse_unsupported(cfg)
    factory = HydraWorkerFactory.of(cfg)
    output_dir = Path(str(cfg.output_dir)).expanduser()
    report = run_corpus(str(cfg.inputs), output_dir, factory, settings)
    print(report.summary(), file=sys.stderr, flush=True)
    print(output_dir, flush=True)
    if report.failed:
        failed = [f for f in report.files if f.status == "failed"]
        first = (f"{failed[0].input}: {failed[0].reason}" if failed
                 else f"manifest line {report.bad_lines[0].line}: {report.bad_lines[0].reason}")
        stem = "corpus" if not settings.shard else "corpus-{}of{}".format(*settings.shard.split("/"))
        raise CorpusFailed(f"{report.failed} of {report.totals()['files']} files failed (the first: {first}); the "
                           f"others are in {output_dir}, every reason in {output_dir / (stem + '.md')}")


def corpus_settings(cfg: DictConfig) -> CorpusSettings:
    """The corpus keys of ``cfg`` (checked) as CorpusSettings."""
    for name in ("resume", "pipeline.progress"):
        check_bool(name, OmegaConf.select(cfg, name, default=False))
    ray_block = OmegaConf.to_container(cfg.ray, resolve=True) if cfg.get("ray") is not None else {}
    assert isinstance(ray_block, dict)
    unknown = sorted(set(ray_block) - set(RAY_KEYS))
    if unknown:
        raise ConfigError(f"unknown ray setting ray.{unknown[0]}; the settings are: {', '.join(RAY_KEYS)}")
    workers = ray_block.get("workers")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"ray.workers={workers} is not a positive number of workers; pass ray.workers=2 or null")
    retries = cfg.get("retries", 1)
    if not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"retries={retries} is not a count; pass retries=0 or more")
    launcher = cfg.get("launcher") or default_launcher()
    shard = cfg.get("shard")
    return CorpusSettings(
        resume=bool(cfg.resume), retries=retries, shard=None if shard is None else str(shard), launcher=str(launcher),
        progress=bool(cfg.pipeline.get("progress", True)),
        ray=RaySettings(address=ray_block.get("address"), workers=workers,
                        cpus_per_worker=float(ray_block.get("cpus_per_worker") or 1.0),
                        init_timeout_s=float(ray_block.get("init_timeout_s") or 30.0)))


def _refuse_unsupported(cfg: DictConfig) -> None:
    """ConfigError for what a corpus does not run: realtime, the detection cache, a scramble (its key and pixel
    record are per run)."""
    from inpaint_anon.run import _method_nodes, _needs_lossless

    if OmegaConf.select(cfg, "realtime.enabled", default=False):
        raise ConfigError("realtime=true is for live sources, not a corpus; pass realtime=false")
    if OmegaConf.select(cfg, "detector.cache", default=False):
        raise ConfigError("detector.cache=true is not used by a corpus (a resume skips whole files); pass "
                          "detector.cache=false")
    nodes = _method_nodes(cfg)
    if _needs_lossless(cfg.inpainter) or any(_needs_lossless(n) for n in nodes.values() if n is not None):
        raise ConfigError("a scramble keeps a key and a pixel record per run, which a corpus does not; choose "
                          "another method, or run the files one at a time with inpaint_anon.run")


def _with_overrides(config: dict[str, Any], overrides: tuple[tuple[str, str], ...]) -> DictConfig:
    cfg = OmegaConf.create(config)
    if overrides:
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([f"{k}={v}" for k, v in overrides]))
        except Exception as error:  # noqa: BLE001 - OmegaConf raises several types for a bad key or value
            raise InputError(f"bad per-file overrides {dict(overrides)} ({error}); check the manifest") from error
    assert isinstance(cfg, DictConfig)
    return cfg


@dataclass
class HydraWorkerFactory:
    """A picklable recipe of workers: the resolved config (``config``) and the Hydra node of the job
    (``hydra_cfg``: the inpainter choice, the overrides that run.json records). uses_gpu: ``device`` is
    ``cuda[:N]``, or ``auto`` on a driver that has a GPU."""

    config: dict[str, Any]
    hydra_cfg: DictConfig | None
    uses_gpu: bool

    @classmethod
    def of(cls, cfg: DictConfig) -> HydraWorkerFactory:
        from inpaint_anon.device import resolve_device

        config = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(config, dict)
        device = str(cfg.device)  # cuda on a driver without a GPU (a cluster's head node) is for the workers
        uses_gpu = device.startswith("cuda") or resolve_device(device).type == "cuda"
        return cls(config, HydraConfig.instance().cfg if HydraConfig.initialized() else None, uses_gpu)

    def config_hash(self, overrides: tuple[tuple[str, str], ...]) -> str:
        values = OmegaConf.to_container(_with_overrides(self.config, overrides), resolve=True)
        assert isinstance(values, dict)
        kept = {k: v for k, v in values.items() if k not in CORPUS_KEYS}
        kept["pipeline"] = {k: v for k, v in kept.get("pipeline", {}).items() if k != "progress"}
        return config_hash(kept)

    def __call__(self) -> HydraFileWorker:
        if self.hydra_cfg is not None and not HydraConfig.initialized():  # a Ray actor: the driver's Hydra node
            HydraConfig.instance().set_config(self.hydra_cfg)
        return HydraFileWorker(self)


@dataclass
class HydraFileWorker:
    """One loaded pipeline per distinct set of per-file overrides (the corpus' own config first)."""

    factory: HydraWorkerFactory
    built: dict[tuple[tuple[str, str], ...], Any] = field(default_factory=dict)
    evaluators: dict[str, Any] = field(default_factory=dict)  # metrics config -> RunEvaluator (networks loaded once)

    def _evaluate(self, cfg: DictConfig, item: CorpusItem) -> None:
        """``metrics=default``: metrics.json in the record folder (as a single run writes it) and the evaluator's
        mergeable states (:data:`~inpaint_anon.corpus.METRIC_STATES`), which the report merges over the corpus."""
        import json

        import torch

        from inpaint_anon.atomic import AtomicPath
        from inpaint_anon.evaluate import evaluate_run
        from inpaint_anon.metrics import RunEvaluator
        from inpaint_anon.run import _instantiate

        config = _instantiate("metrics", cfg.metrics)
        key = json.dumps(config.as_dict(), sort_keys=True, default=str)
        if key not in self.evaluators:
            self.evaluators = {key: RunEvaluator.from_config(config)}  # one set of networks at a time
        evaluator = self.evaluators[key]
        evaluate_run(item.record_dir, config, evaluator=evaluator)
        with AtomicPath(item.record_dir / METRIC_STATES) as out:
            torch.save(evaluator.states(), out.temp)

    def _pipeline(self, overrides: tuple[tuple[str, str], ...], cfg: DictConfig, item_output: Path) -> Any:
        from inpaint_anon.run import _method_nodes, build_pipeline

        if overrides not in self.built:
            if len(self.built) > 1:  # the corpus' own pipeline and the latest per-file one
                self.built.pop(next(key for key in self.built if key != ()))
            cfg.pipeline.progress = False
            self.built[overrides] = build_pipeline(cfg, _method_nodes(cfg), item_output.parent, item_output)
        return self.built[overrides]

    def process(self, task: FileTask) -> FileOutcome:
        """Anonymize one file as a single-file run does; write its run.json (with the ``corpus`` block)."""
        import json

        from inpaint_anon.atomic import write_atomic
        from inpaint_anon.run import _run_record, _video_settings

        item = task.item
        (item.record_dir / METRIC_STATES).unlink(missing_ok=True)  # an earlier config's states are not merged
        cfg = _with_overrides(self.factory.config, item.overrides)
        built = self._pipeline(item.overrides, cfg, item.output)
        video = _video_settings(cfg, item.output, False)
        item.output.parent.mkdir(parents=True, exist_ok=True)
        item.record_dir.mkdir(parents=True, exist_ok=True)
        result = built.pipe(item.input, item.output, overwrite=True, keep_metadata=cfg.keep_metadata,
                            record_detections=item.record_dir / "detections.dets", video=video)
        result.events[:0] = built.events
        record = {**_run_record(cfg, result, item.input, built.inpainter), "detector_backends": built.backends,
                  "corpus": {"config_hash": task.config_hash, "input_fingerprint": task.input_fingerprint,
                             "overrides": dict(item.overrides), "classes": dict(result.regions),
                             "attempt": task.attempt}}
        if cfg.get("metrics") is not None:  # evaluate reads run.json; without its corpus block it is not done yet
            unfinished = {key: value for key, value in record.items() if key != "corpus"}
            write_atomic(item.record, json.dumps(unfinished, indent=2, default=str) + "\n")
            self._evaluate(cfg, item)
        write_atomic(item.record, json.dumps(record, indent=2, default=str) + "\n")
        return FileOutcome(frames=result.frames_out, seconds=result.wall_seconds, classes=dict(result.regions))


if __name__ == "__main__":
    # through the imported module, so that Hydra's callbacks and this command share one copy of their classes
    from inpaint_anon.corpus_run import main as _main

    raise SystemExit(_main())

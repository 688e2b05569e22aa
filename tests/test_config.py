"""Every config group composes and every option instantiates (the diffusion inpainter with ``model=tiny``), every
experiment and sweep composes, and evaluate's own config composes (Hydra compose API)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from inpaint_anon.composite import Compositor
from inpaint_anon.detect.yolo_seg import YoloSegDetector
from inpaint_anon.inpaint.diffusion import LatentInpainter
from inpaint_anon.inpaint.fast import BlurInpainter, PixelateInpainter, ScrambleInpainter, SolidInpainter
from inpaint_anon.metrics import MetricsConfig
from inpaint_anon.prompts import DEFAULT_NEGATIVE_PROMPT, DEFAULT_PROMPT, DEFAULT_PROMPTS
from inpaint_anon.run import DETECTION_RUN_KEYS, INPAINTER_RUN_KEYS
from inpaint_anon.track import Tracker

CONF = Path(__file__).resolve().parents[1] / "conf"
KEY = "00112233445566778899aabbccddeeff"
STREET_CLASSES = ["person", "bicycle", "car", "motorcycle", "bus", "truck"]


def compose_run(*overrides: str, hydra_config: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="run", overrides=["input=x.mp4", *overrides], return_hydra_config=hydra_config)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def build(node: Any) -> Any:
    """Instantiate a component config as run.py does: the inpainter's run keys (key_file, allow_lossy) taken out."""
    plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    return instantiate({k: v for k, v in plain.items() if k not in INPAINTER_RUN_KEYS}, _convert_="all")


def test_package_conf_is_the_checkout_conf() -> None:
    """The configs the console script finds (inside the package) are the top-level conf/."""
    packaged = Path(__file__).resolve().parents[1] / "inpaint_anon" / "conf"
    assert packaged.resolve() == CONF.resolve()


# -- every group, every option -----------------------------------------------------------------------------

INPAINTERS = {"blur": BlurInpainter, "pixelate": PixelateInpainter, "solid": SolidInpainter,
              "scramble": ScrambleInpainter, "diffusion": LatentInpainter, "tiny": LatentInpainter,
              "diffusion_fast": LatentInpainter, "tiny_fast": LatentInpainter}
TINY_MODEL = {"diffusion": ["inpainter.model=tiny", "inpainter.resolution=64", "inpainter.steps=2"],
              "diffusion_fast": ["inpainter.model=tiny", "inpainter.resolution=64", "inpainter.lcm_lora=null",
                                 "inpainter.vae=tiny"]}  # the hub models are not here
GROUP_OPTIONS = {
    "compositor": ["default"], "detector": ["centerface", "plate_cascade", "platedet", "yolov8_seg"],
    "experiment": ["street", "traffic"], "hydra": ["default"],
    "inpainter": sorted(INPAINTERS), "metrics": ["default", "none"], "paths": ["default"], "prompts": ["street"],
    "sweep": ["street_fast", "street_steps"], "tracker": ["default", "none"],
}


def test_every_group_and_option_is_tested_here() -> None:
    """A new group or option must get its expectations in this file."""
    groups = {p.name for p in CONF.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert {group: options(group) for group in groups} == GROUP_OPTIONS


@pytest.mark.parametrize("inpainter", sorted(INPAINTERS))
def test_inpainters_instantiate(inpainter: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INPAINT_ANON_KEY", KEY)
    monkeypatch.setenv("INPAINT_ANON_CACHE", str(tmp_path / "cache"))  # the unpacked tokenizer (tiny model)
    cfg = compose_run(f"inpainter={inpainter}", "device=cpu", *TINY_MODEL.get(inpainter, []))
    built = build(cfg.inpainter)
    assert type(built) is INPAINTERS[inpainter]
    assert built.name == ("diffusion" if INPAINTERS[inpainter] is LatentInpainter else inpainter)
    assert str(built.device) == "cpu"


def test_diffusion_config_reaches_the_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INPAINT_ANON_CACHE", str(tmp_path / "cache"))
    cfg = compose_run("inpainter=tiny", "device=cpu", "inpainter.steps=3", "inpainter.guidance_scale=1.0")
    built = build(cfg.inpainter)
    assert (built.steps, built.guidance_scale, built.resolution) == (3, 1.0, 64)
    assert set(built.prompt_embeds.cond) == {*STREET_CLASSES, "face", "plate"}


def test_detector_instantiates_without_its_run_settings() -> None:
    cfg = compose_run("detector.weights=yolov8n-seg.yaml", "detector.imgsz=64", "device=cpu")
    settings = {k: v for k, v in OmegaConf.to_container(cfg.detector, resolve=True).items()
                if k not in DETECTION_RUN_KEYS}
    detector = build(settings)
    assert type(detector) is YoloSegDetector and detector.batch_size == 4 and detector.device == "cpu"
    assert sorted(detector.names[i] for i in detector.class_ids) == sorted(STREET_CLASSES)
    assert (cfg.detector.stride, cfg.detector.cache) == (1, False)


def test_face_and_plate_detectors_instantiate(tmp_path: Path) -> None:
    """detector=centerface builds the shipped face detector, detector=plate_cascade the shipped plate cascade;
    detector=platedet with local weights (no download)."""
    from inpaint_anon.detect.faces import FaceDetector
    from inpaint_anon.detect.plates import PlateDetector, shipped_plate_cascade
    from tests.test_plates import end2end_onnx

    faces = build(compose_run("detector=centerface", "device=cpu").detector)
    assert type(faces) is FaceDetector and faces.names == {0: "face"} and faces.batch_size == 4
    weights = end2end_onnx(tmp_path / "plates.onnx", [[0, 8, 8, 24, 16, 0, 0.9]], names="{0: 'license_plate'}")
    node = compose_run("detector=platedet", f"detector.weights={weights}", "device=cpu").detector
    plates = build(node)
    assert type(plates) is PlateDetector and plates.names == {0: "plate"} and plates.batch_size == 4
    cascade = build(compose_run("detector=plate_cascade", "device=cpu").detector)  # shipped: no download
    assert type(cascade) is PlateDetector and cascade.names == {0: "plate"} and cascade.batch_size == 4
    assert cascade.weights == str(shipped_plate_cascade())


def test_compositor_instantiates() -> None:
    compositor = build(compose_run().compositor)
    assert type(compositor) is Compositor
    assert (compositor.dilate, compositor.dilate_rel, compositor.feather) == (4, 0.02, 6)


def test_tracker_config_builds_a_tracker_per_video() -> None:
    make = build(compose_run().tracker)
    first, second = make(fps=25.0), make(fps=25.0)
    assert type(first) is Tracker and first is not second
    assert (first.hold_frames, first.backfill_frames, first.max_gap) == (12, 6, 12)
    assert compose_run("tracker=none").tracker is None


def test_metrics_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INPAINT_ANON_HOME", raising=False)
    config = build(compose_run("metrics=default", "device=cpu").metrics)
    assert config == MetricsConfig(device="cpu", fid_stats_dir="./experiments/cache/fid_stats")
    assert compose_run("metrics=none").metrics is None
    assert compose_run().metrics is None  # the default: no evaluation after a run


def test_paths_follow_inpaint_anon_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INPAINT_ANON_HOME", "/srv/anon")
    paths = OmegaConf.to_container(compose_run().paths, resolve=True)
    assert paths == {"root": "/srv/anon", "experiments": "/srv/anon/experiments", "data": "/srv/anon/data",
                     "cache": "/srv/anon/experiments/cache"}


def test_prompt_config_mirrors_package_defaults() -> None:
    prompts = OmegaConf.to_container(compose_run().prompts, resolve=True)
    assert prompts["classes"] == dict(DEFAULT_PROMPTS)
    assert prompts["negative"] == DEFAULT_NEGATIVE_PROMPT
    assert prompts["default"] == DEFAULT_PROMPT


def test_hydra_config_keeps_run_folders_honest() -> None:
    cfg = compose_run(hydra_config=True)
    assert cfg.hydra.callbacks.run_folder._target_ == "inpaint_anon.run.RunFolder"
    assert cfg.hydra.job.chdir is False and cfg.hydra.help.app_name == "inpaint-anon"
    assert "$APP_CONFIG_GROUPS" in cfg.hydra.help.template


def test_run_settings_are_booleans_where_they_are_booleans() -> None:
    cfg = compose_run()
    flags = {"overwrite": cfg.overwrite, "keep_metadata": cfg.keep_metadata, "progress": cfg.pipeline.progress,
             "cache": cfg.detector.cache, "half": cfg.detector.half}
    assert flags == {"overwrite": False, "keep_metadata": False, "progress": True, "cache": False, "half": False}


# -- experiments and sweeps --------------------------------------------------------------------------------

EXPERIMENTS = {"street": {"inpainter": "inpaint_anon.inpaint.diffusion.LatentInpainter.from_pretrained",
                          "classes": STREET_CLASSES, "input": "./data/street.mp4",
                          "detectors": ["objects", "faces", "plates"]},
               "traffic": {"inpainter": "inpaint_anon.inpaint.fast.BlurInpainter", "classes": STREET_CLASSES,
                           "input": "???", "detectors": ["faces", "plates"]}}


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiments_compose(experiment: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INPAINT_ANON_HOME", raising=False)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="run", overrides=[f"+experiment={experiment}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    expected = EXPERIMENTS[experiment]
    assert resolved["inpainter"]["_target_"] == expected["inpainter"]
    assert resolved["detector"]["classes"] == expected["classes"] and resolved["input"] == expected["input"]
    assert list(resolved["detectors"]) == expected["detectors"]


def test_street_uses_the_diffusion_engine_and_cli_choice_wins() -> None:
    assert compose_run("+experiment=street").inpainter.model == "stable-diffusion-v1-5/stable-diffusion-inpainting"
    assert compose_run("+experiment=street", "inpainter=blur").inpainter._target_.endswith("BlurInpainter")


def test_optimized_metric_reads_run_json_or_metrics() -> None:
    from inpaint_anon.run import _optimized_value

    record = {"fps_processing": 12.5, "output": "x.mp4"}
    metrics = {"all": {"psnr_out": 31.0, "fid": None}, "person": {"lpips": 0.4}}
    assert _optimized_value("fps_processing", record, metrics) == 12.5
    assert _optimized_value("person/lpips", record, metrics) == 0.4
    assert _optimized_value("all/fid", record, metrics) is None  # undefined metric: nothing to optimize
    assert _optimized_value("output", record, metrics) is None and _optimized_value(None, record, metrics) is None


@pytest.mark.parametrize("sweep", options("sweep"))
def test_sweeps_compose_as_multiruns(sweep: str) -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="run", overrides=["+experiment=street", f"+sweep={sweep}"], return_hydra_config=True)
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert OmegaConf.to_container(cfg)["output"] == "${hydra:runtime.output_dir}/anon.mp4", "one output per job"
    assert cfg.detector.cache is True and cfg.pipeline.progress is False
    params = dict(cfg.hydra.sweeper.params)
    if sweep == "street_steps":
        assert params == {"inpainter": "diffusion", "inpainter.steps": "10,20,30",
                          "inpainter.guidance_scale": "1.0,4.0,7.5"}
        assert cfg.inpainter.model.startswith("stable-diffusion-v1-5/")
    else:
        assert params == {"inpainter": "blur,pixelate,solid", "detector.stride": "1,2,4"}


# -- evaluate's config ---------------------------------------------------------------------------------------


def test_evaluate_config_composes_with_the_metrics_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INPAINT_ANON_HOME", raising=False)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=["run_dir=r", "metrics.lpips=false"],
                      return_hydra_config=True)
    assert build(cfg.metrics) == MetricsConfig(lpips=False, fid_stats_dir="./experiments/cache/fid_stats")
    assert (cfg.run_dir, cfg.input, cfg.output) == ("r", None, None)
    assert cfg.hydra.output_subdir is None and cfg.hydra.run.dir == "."  # writes nothing but metrics.json
    assert cfg.hydra.callbacks.error_line._target_ == "inpaint_anon.run.ErrorLine"

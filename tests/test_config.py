"""Every config composes, every component config instantiates, every experiment composes (Hydra compose API)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from inpaint_anon.composite import Compositor
from inpaint_anon.inpaint.base import Inpainter
from inpaint_anon.prompts import DEFAULT_NEGATIVE_PROMPT, DEFAULT_PROMPT, DEFAULT_PROMPTS
from inpaint_anon.run import INPAINTER_RUN_KEYS

CONF = Path(__file__).resolve().parents[1] / "conf"
KEY = "00112233445566778899aabbccddeeff"


def compose_run(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="run", overrides=["input=x.mp4", *overrides], return_hydra_config=False)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_package_conf_is_the_checkout_conf() -> None:
    """The configs the console script finds (inside the package) are the top-level conf/."""
    packaged = Path(__file__).resolve().parents[1] / "inpaint_anon" / "conf"
    assert packaged.resolve() == CONF.resolve()


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiments_compose(experiment: str) -> None:
    cfg = compose_run(f"+experiment={experiment}")
    assert OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("inpainter", [o for o in options("inpainter") if o != "diffusion"])
def test_inpainters_instantiate(inpainter: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INPAINT_ANON_KEY", KEY)
    cfg = compose_run(f"inpainter={inpainter}", "device=cpu")
    node = {k: v for k, v in OmegaConf.to_container(cfg.inpainter, resolve=True).items() if k not in INPAINTER_RUN_KEYS}
    built = instantiate(node, _convert_="all")  # as run.py does: its own keys (key_file, allow_lossy) taken out
    assert isinstance(built, Inpainter)


def test_compositor_instantiates() -> None:
    assert isinstance(instantiate(compose_run().compositor, _convert_="all"), Compositor)


def test_street_uses_the_diffusion_engine_and_cli_choice_wins() -> None:
    assert compose_run("+experiment=street").inpainter.model.startswith("stable-diffusion-v1-5/")
    assert compose_run("+experiment=street", "inpainter=blur").inpainter._target_.endswith("BlurInpainter")


def test_prompt_config_mirrors_package_defaults() -> None:
    prompts = OmegaConf.to_container(compose_run().prompts, resolve=True)
    assert prompts["classes"] == dict(DEFAULT_PROMPTS)
    assert prompts["negative"] == DEFAULT_NEGATIVE_PROMPT
    assert prompts["default"] == DEFAULT_PROMPT


def test_tracker_config_builds_a_tracker_per_video() -> None:
    from inpaint_anon.track import Tracker

    make = instantiate(compose_run().tracker, _convert_="all")
    assert isinstance(make(fps=25.0), Tracker) and make(fps=25.0) is not make(fps=25.0)
    assert compose_run("tracker=none").tracker is None


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
    assert cfg.hydra.mode.name == "MULTIRUN" and cfg.hydra.sweeper.params
    assert OmegaConf.to_container(cfg)["output"] == "${hydra:runtime.output_dir}/anon.mp4", "one output per job"
    assert cfg.detector.cache is True
    if sweep == "street_steps":
        assert {"inpainter.steps", "inpainter.guidance_scale"} <= set(cfg.hydra.sweeper.params)
        assert cfg.inpainter.model.startswith("stable-diffusion-v1-5/")

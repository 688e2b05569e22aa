"""evaluate_run and ``python -m inpaint_anon.evaluate`` on tiny generated runs (scripted ground-truth masks with
track ids, solid / blur fills, or an unchanged copy): metrics.json, leak rate 1.0 / 0.0, merge == one pass,
reused FID statistics, CLI errors. Helpers here (:func:`make_run`) are shared with test_report.py."""

from __future__ import annotations

import json
import math
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from inpaint_anon.detect.scripted import ScriptedDetector
from inpaint_anon.errors import ConfigError, InputError
from inpaint_anon.evaluate import evaluate_run, iter_frames, load_run, main, run_metrics_config
from inpaint_anon.inpaint.fast import BlurInpainter, SolidInpainter
from inpaint_anon.metrics import ALL, MetricsConfig, RunEvaluator
from inpaint_anon.metrics.networks import FeatureExtractor, random_backbone_lpips
from inpaint_anon.pipeline import AnonymizePipeline
from inpaint_anon.records import DetectionWriter
from inpaint_anon.types import Detections
from tests.clips import make_clip, object_masks

SIZE = (96, 64)
FRAMES = 8
NAMES = {0: "person", 1: "bicycle", 2: "car"}


pytestmark = pytest.mark.usefixtures("one_thread")


def truth(index: int, size: tuple[int, int] = SIZE, n_frames: int = FRAMES, tracks: bool = True) -> Detections:
    """The clip's exact person and car masks as tracked detections (ids 1 and 2)."""
    masks = object_masks(index, size, n_frames)
    return Detections.from_masks(np.stack([masks["person"], masks["car"]]), [0, 2], NAMES,
                                 track_ids=[1, 2] if tracks else None)


def make_run(root: Path, name: str, clip: Path, inpainter: Any | None, *, settings: dict[str, Any] | None = None,
             tracks: bool = True, size: tuple[int, int] = SIZE, n_frames: int = FRAMES) -> Path:
    """A run folder like ``inpaint_anon.run`` writes: run.json, detections.dets, the output video.

    inpainter None = the output is an unchanged copy of the input."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    if inpainter is None:
        output = run_dir / f"anon{clip.suffix}"
        shutil.copy(clip, output)
        with DetectionWriter(run_dir / "detections.dets", key={}, names=NAMES) as writer:
            for index in range(n_frames):
                writer.write(index, truth(index, size, n_frames, tracks))
    else:
        output = run_dir / "anon.mp4"
        detector = ScriptedDetector(lambda i: truth(i, size, n_frames, tracks), NAMES)
        AnonymizePipeline(detector, inpainter, progress=False)(
            clip, output, record_detections=run_dir / "detections.dets", preset="ultrafast")
    config = {"input": str(clip), "inpainter": {"_target_": f"inpaint_anon.inpaint.fast.{type(inpainter).__name__}"},
              "video": {"crf": 18}, **(settings or {})}
    record = {"input": str(clip), "output": str(output), "frames_in": n_frames, "frames_out": n_frames,
              "inpainter": getattr(inpainter, "name", "copy"), "config": config,
              "overrides": [f"{k}={v}" for k, v in (settings or {}).items()]}
    (run_dir / "run.json").write_text(json.dumps(record, indent=2))
    return run_dir


def write_annotations(path: Path, size: tuple[int, int] = SIZE, n_frames: int = FRAMES) -> Path:
    """Ground truth of the clip: the person as a box, the car as a mask PNG, every frame."""
    (path.parent / "gt").mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(n_frames):
        masks = object_masks(index, size, n_frames)
        ys, xs = np.nonzero(masks["person"])
        box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        lines.append(json.dumps({"frame": index, "class": "person", "box": box}))
        Image.fromarray(masks["car"].astype(np.uint8) * 255).save(path.parent / "gt" / f"{index:04d}_car.png")
        lines.append(json.dumps({"frame": index, "class": "car", "mask": f"gt/{index:04d}_car.png"}))
    path.write_text("\n".join(lines) + "\n")
    return path


class TinyFeatures(torch.nn.Module):
    """A random-weight conv feature extractor: uint8 (N, 3, S, S) -> float (N, 8)."""

    num_features = 8

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 5, stride=4)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=generator) * 0.2)
            self.conv.bias.copy_(torch.randn(self.conv.bias.shape, generator=generator) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.float() / 255).mean((2, 3))


def tiny_evaluator(config: MetricsConfig) -> RunEvaluator:
    """RunEvaluator with offline random networks (the same ones on every call): LPIPS with a random AlexNet, FID
    on TinyFeatures."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        lpips_model = random_backbone_lpips("alex")
    return RunEvaluator(config, lpips_model=lpips_model,
                        feature_extractor=FeatureExtractor(TinyFeatures(), name="tiny-features"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    clip = make_clip(root / "clip.mp4", n_frames=FRAMES, size=SIZE)
    return {
        "clip": clip,
        "solid": make_run(root, "solid", clip, SolidInpainter(device="cpu")),
        "blur": make_run(root, "blur", clip, BlurInpainter(device="cpu")),
        "copy": make_run(root, "copy", clip, None),
        "annotations": write_annotations(root / "truth" / "gt.jsonl"),
    }


TINY = MetricsConfig(fid_min_crops=4, crop_size=32, min_crop_side=4, device="cpu")


# -- evaluate_run ----------------------------------------------------------------------------------------------


def test_evaluate_run_writes_per_class_metrics_json(runs: dict[str, Path]) -> None:
    document = evaluate_run(runs["blur"], TINY, evaluator=tiny_evaluator(TINY))
    written = json.loads((runs["blur"] / "metrics.json").read_text())
    assert written == json.loads(json.dumps(document))
    assert written["format"] == "inpaint_anon.metrics/1" and written["frames"] == written["frames_evaluated"] == 8
    assert list(written["classes"]) == [ALL, "car", "person"]
    for row in written["classes"].values():
        assert set(row) == {"psnr_out", "psnr_in", "ssim_out", "ssim_in", "lpips", "fid", "flicker",
                            "flicker_orig", "flicker_ratio"}
        assert all(isinstance(v, float) for v in row.values())
    assert written["ran"] == ["psnr", "ssim", "lpips", "fid", "flicker"]
    assert "metrics.annotations" in written["skipped"]["leak"]
    assert written["metrics"]["psnr_out"]["arrow"] == "↑" and written["metrics"]["fid"]["direction"] == "lower"
    person, car = written["classes"]["person"], written["classes"]["car"]
    assert person["psnr_in"] != car["psnr_in"] and person["lpips"] != car["lpips"]
    assert person["psnr_out"] > person["psnr_in"]  # the blur changes the regions far more than the rest
    assert written["counts"]["person"] == {"frames": 8, "regions": 8, "crops": 8, "small_regions": 0,
                                           "track_pairs": 7, "annotated": 0}
    assert written["examples"]["person"]["frame"] in range(8) and len(written["examples"]["car"]["box"]) == 4
    assert written["config"]["crop_size"] == 32


def test_leak_rate_is_one_for_an_unchanged_video(runs: dict[str, Path]) -> None:
    config = MetricsConfig(lpips=False, fid=False, annotations=str(runs["annotations"]))
    document = evaluate_run(runs["copy"], config)
    for name in (ALL, "person", "car"):
        assert document["classes"][name]["leak_rate"] == 1.0
        assert document["classes"][name]["leak_pixels"] == 1.0
        assert document["classes"][name]["psnr_in"] == "inf"
    assert document["counts"][ALL]["annotated"] == 16
    assert document["classes"]["person"]["flicker_ratio"] == pytest.approx(1.0)


def test_leak_rate_is_zero_for_a_blacked_out_video(runs: dict[str, Path]) -> None:
    config = MetricsConfig(lpips=False, fid=False, annotations=str(runs["annotations"]))
    document = evaluate_run(runs["solid"], config)
    for name in (ALL, "person", "car"):
        assert document["classes"][name]["leak_rate"] == 0.0
        assert document["classes"][name]["leak_pixels"] == 0.0
    assert document["classes"]["person"]["psnr_in"] < 10


def test_merging_two_halves_equals_one_pass(runs: dict[str, Path]) -> None:
    config = TINY.replace(annotations=str(runs["annotations"]), batch_size=3)
    run = load_run(runs["blur"])
    from inpaint_anon.metrics.leak import load_annotations

    annotations = load_annotations(config.annotations)
    frames = list(iter_frames(run))
    whole, first, second = tiny_evaluator(config), tiny_evaluator(config), tiny_evaluator(config)
    for index, original, anonymized, detections in frames:
        whole.update(index, original, anonymized, detections, annotations.get(index, ()))
    split = 5
    for index, original, anonymized, detections in frames[:split]:
        first.update(index, original, anonymized, detections, annotations.get(index, ()))
    second.set_context(*frames[split - 1])
    for index, original, anonymized, detections in frames[split:]:
        second.update(index, original, anonymized, detections, annotations.get(index, ()))
    first.merge(second)
    merged, expected = first.compute(), whole.compute()
    assert merged["counts"] == expected["counts"] and merged["examples"] == expected["examples"]
    assert merged["classes"].keys() == expected["classes"].keys()
    for name, row in expected["classes"].items():
        assert row.keys() == merged["classes"][name].keys()
        for metric, value in row.items():
            # the networks run in float32 and other batch compositions round differently: 1e-6 for them
            rel = 1e-6 if metric in ("lpips", "fid") else 1e-9
            assert merged["classes"][name][metric] == pytest.approx(value, rel=rel, abs=1e-12), (name, metric)


def test_a_class_only_in_the_annotations_gets_leak_numbers_only(runs: dict[str, Path], tmp_path: Path) -> None:
    gt = tmp_path / "faces.jsonl"
    gt.write_text('{"frame": 2, "class": "face", "box": [0, 0, 8, 8]}\n')
    document = evaluate_run(runs["solid"], MetricsConfig(lpips=False, fid=False, annotations=str(gt)), write=False)
    face = document["classes"]["face"]
    assert face["leak_rate"] == 1.0 and face["psnr_in"] is None  # the corner is background, left unchanged
    assert "only in the annotations" in document["undefined"]["face"]["psnr_in"]
    assert document["classes"]["person"]["leak_rate"] is None and document["classes"][ALL]["leak_rate"] == 1.0


def test_an_evaluator_with_another_config_is_refused(runs: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="another config"):
        evaluate_run(runs["solid"], MetricsConfig(lpips=False), evaluator=tiny_evaluator(TINY), write=False)


def test_few_crops_give_a_null_fid_with_the_reason(runs: dict[str, Path]) -> None:
    config = TINY.replace(fid_min_crops=50)
    document = evaluate_run(runs["solid"], config, evaluator=tiny_evaluator(config), write=False)
    assert document["classes"]["person"]["fid"] is None
    assert "fewer than metrics.fid_min_crops=50" in document["undefined"]["person"]["fid"]
    assert "8 original / 8 anonymized" in document["undefined"]["person"]["fid"]
    assert isinstance(document["classes"]["person"]["lpips"], float)


def test_regions_too_small_to_crop_are_counted_not_cropped(runs: dict[str, Path]) -> None:
    config = TINY.replace(min_crop_side=60, psnr=False, ssim=False, flicker=False)
    document = evaluate_run(runs["solid"], config, evaluator=tiny_evaluator(config), write=False)
    assert document["counts"]["person"]["small_regions"] == 8 and document["counts"]["person"]["crops"] == 0
    assert "min_crop_side=60" in document["undefined"]["person"]["lpips"]


def test_original_side_fid_statistics_are_reused(runs: dict[str, Path], tmp_path: Path) -> None:
    config = TINY.replace(fid_stats_dir=str(tmp_path / "fid"), lpips=False, psnr=False, ssim=False)
    first = evaluate_run(runs["solid"], config, evaluator=tiny_evaluator(config), write=False)
    assert first["fid_real_statistics"]["saved"] == [ALL, "car", "person"]
    assert first["fid_real_statistics"]["loaded"] == []
    assert len(list((tmp_path / "fid").glob("fid_real_*.pt"))) == 3
    again = evaluate_run(runs["solid"], config, evaluator=tiny_evaluator(config), write=False)
    assert again["fid_real_statistics"] == {"store": str(tmp_path / "fid"), "loaded": [ALL, "car", "person"],
                                            "saved": []}
    for name in (ALL, "car", "person"):
        assert again["classes"][name]["fid"] == pytest.approx(first["classes"][name]["fid"], rel=1e-9)
    other = evaluate_run(runs["blur"], config, evaluator=tiny_evaluator(config), write=False)  # same input
    assert other["fid_real_statistics"]["loaded"] == [ALL, "car", "person"]
    fresh = evaluate_run(runs["blur"], config.replace(fid_stats_dir=None), evaluator=tiny_evaluator(
        config.replace(fid_stats_dir=None)), write=False)
    assert other["classes"]["person"]["fid"] == pytest.approx(fresh["classes"]["person"]["fid"], rel=1e-9)
    changed = config.replace(crop_size=48)  # other crop settings: another key
    assert evaluate_run(runs["solid"], changed, evaluator=tiny_evaluator(changed),
                        write=False)["fid_real_statistics"]["loaded"] == []


def test_missing_weights_skip_lpips_and_fid_only(runs: dict[str, Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    document = evaluate_run(runs["solid"], MetricsConfig(download=False, device="cpu"), write=False)
    assert "metrics.lpips_weights" in document["skipped"]["lpips"]
    assert "metrics.fid_weights" in document["skipped"]["fid"]
    assert document["ran"] == ["psnr", "ssim", "flicker"]
    assert isinstance(document["classes"]["person"]["psnr_out"], float)


def test_run_without_tracks_skips_flicker(tmp_path: Path, runs: dict[str, Path]) -> None:
    run_dir = make_run(tmp_path, "untracked", runs["clip"], None, tracks=False)
    document = evaluate_run(run_dir, MetricsConfig(lpips=False, fid=False), write=False)
    assert "no track ids" in document["skipped"]["flicker"] and "flicker" not in document["classes"][ALL]


def test_frame_stride_evaluates_every_kth_frame(runs: dict[str, Path]) -> None:
    config = MetricsConfig(lpips=False, fid=False, frame_stride=3)
    document = evaluate_run(runs["blur"], config, write=False)
    assert document["frames"] == 8 and document["frames_evaluated"] == 3  # frames 0, 3, 6
    assert document["counts"]["person"]["track_pairs"] == 2  # (2, 3) and (5, 6)


def test_real_inception_and_lpips_paths_from_config(runs: dict[str, Path], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The configured path end to end: weights files given by metrics.lpips_weights / metrics.fid_weights
    (random weights saved to disk), networks loaded by RunEvaluator.from_config."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe
    from torchvision import models

    with monkeypatch.context() as patch:  # build a random InceptionV3 state dict without a download
        patch.setattr(fe, "load_state_dict_from_url", lambda *a, **k: {})
        patch.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        inception = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["64"])
    torch.save(inception.state_dict(), tmp_path / "inception.pth")
    torch.save(models.alexnet(weights=None).state_dict(), tmp_path / "alex.pth")
    config = MetricsConfig(lpips_weights=str(tmp_path / "alex.pth"), fid_weights=str(tmp_path / "inception.pth"),
                           fid_features=64, fid_min_crops=4, crop_size=32, download=False, device="cpu")
    document = evaluate_run(runs["blur"], config, write=False)
    assert document["skipped"] == {"leak": document["skipped"]["leak"]}
    assert math.isfinite(document["classes"]["person"]["fid"]) and document["classes"]["person"]["lpips"] > 0


def test_odd_frame_size_output_is_cropped_back(tmp_path: Path) -> None:
    size = (95, 63)
    clip = make_clip(tmp_path / "odd.mp4", n_frames=4, size=size)
    run_dir = make_run(tmp_path, "odd", clip, SolidInpainter(device="cpu"), size=size, n_frames=4)
    document = evaluate_run(run_dir, MetricsConfig(lpips=False, fid=False), write=False)
    assert document["frames"] == 4 and isinstance(document["classes"][ALL]["psnr_out"], float)


# -- bad run folders -----------------------------------------------------------------------------------------


def _broken_copy(runs: dict[str, Path], tmp_path: Path, name: str) -> Path:
    run_dir = tmp_path / name
    shutil.copytree(runs["solid"], run_dir)
    return run_dir


def test_bad_run_folders_are_input_errors(runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        evaluate_run(tmp_path / "nothing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no run.json"):
        evaluate_run(empty)
    no_dets = _broken_copy(runs, tmp_path, "no_dets")
    (no_dets / "detections.dets").unlink()
    with pytest.raises(InputError, match="no detections.dets"):
        evaluate_run(no_dets)
    bad_json = _broken_copy(runs, tmp_path, "bad_json")
    (bad_json / "run.json").write_text("{oops")
    with pytest.raises(InputError, match="cannot be read as JSON"):
        evaluate_run(bad_json)
    no_video = _broken_copy(runs, tmp_path, "no_video")
    (no_video / "anon.mp4").unlink()
    record = json.loads((no_video / "run.json").read_text())
    record["output"] = str(no_video / "anon.mp4")
    (no_video / "run.json").write_text(json.dumps(record))
    with pytest.raises(InputError, match="output video .* not found"):
        evaluate_run(no_video)
    no_input_key = _broken_copy(runs, tmp_path, "no_input_key")
    (no_input_key / "run.json").write_text(json.dumps({"output": "x"}))
    with pytest.raises(InputError, match="no 'input' path; pass input=PATH"):
        evaluate_run(no_input_key)


def test_mismatched_or_unfinished_inputs_are_input_errors(runs: dict[str, Path], tmp_path: Path) -> None:
    short = make_clip(tmp_path / "short.mp4", n_frames=5, size=SIZE)
    with pytest.raises(InputError, match="frame counts differ \\(input 8, output 5, detections.dets 8\\)"):
        evaluate_run(runs["solid"], MetricsConfig(lpips=False, fid=False), output=short, write=False)
    other_size = make_clip(tmp_path / "big.mp4", n_frames=8, size=(128, 96))
    with pytest.raises(InputError, match="detections of frame 0 are 96x64"):
        evaluate_run(runs["solid"], MetricsConfig(lpips=False, fid=False), input=other_size, write=False)
    unfinished = _broken_copy(runs, tmp_path, "unfinished")
    data = (unfinished / "detections.dets").read_bytes()
    (unfinished / "detections.dets").write_bytes(data[:-21])  # drop the end marker
    with pytest.raises(InputError, match="unfinished"):
        evaluate_run(unfinished, MetricsConfig(lpips=False, fid=False))
    with pytest.raises(InputError, match="past the video's 8 frames"):
        gt = tmp_path / "late.jsonl"
        gt.write_text('{"frame": 8, "class": "person", "box": [0, 0, 2, 2]}\n')
        evaluate_run(runs["solid"], MetricsConfig(lpips=False, fid=False, annotations=str(gt)))


def test_relative_paths_are_found_above_the_run_folder(runs: dict[str, Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "project"
    (root / "data").mkdir(parents=True)
    shutil.copy(runs["clip"], root / "data" / "clip.mp4")
    run_dir = root / "experiments" / "runs" / "r1"
    shutil.copytree(runs["solid"], run_dir)
    record = json.loads((run_dir / "run.json").read_text())
    record.update(input="data/clip.mp4", output="experiments/runs/r1/anon.mp4")
    (run_dir / "run.json").write_text(json.dumps(record))
    monkeypatch.chdir(tmp_path)
    run = load_run(run_dir)
    assert run.input == root / "data" / "clip.mp4" and run.output == run_dir / "anon.mp4"


# -- config from run.json ------------------------------------------------------------------------------------


def test_run_metrics_config_takes_the_run_s_resolved_config_and_overridden_keys() -> None:
    record = {"config": {"metrics": {"_target_": "inpaint_anon.metrics.MetricsConfig", "device": "cpu",
                                     "crop_size": 64, "download": False}}}
    assert run_metrics_config(record) == MetricsConfig(device="cpu", crop_size=64, download=False)
    composed = {"crop_size": 32, "download": True, "device": "auto", "lpips": False}
    config = run_metrics_config(record, composed, {"crop_size", "lpips"})
    assert (config.crop_size, config.lpips, config.download, config.device) == (32, False, False, "cpu")
    assert run_metrics_config({}) == MetricsConfig()
    assert run_metrics_config({"config": {"metrics": None}}, composed, set()) == MetricsConfig(**composed)


def test_old_unresolved_run_json_is_resolved_with_omegaconf_or_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """run.json of the previous version kept ``${...}`` interpolations: resolved against that config by OmegaConf;
    a ${hydra:...} one (only the run's Hydra knew it) or an unset variable is one ConfigError with the fix."""
    monkeypatch.setenv("EVAL_TEST_HOME", "/data")
    record = {"config": {"device": "cpu", "paths": {"root": "${oc.env:EVAL_TEST_HOME,.}", "cache": "${paths.root}/c"},
                         "metrics": {"_target_": "inpaint_anon.metrics.MetricsConfig", "device": "${device}",
                                     "fid_stats_dir": "${paths.cache}/fid", "crop_size": 64,
                                     "annotations": "${oc.env:EVAL_TEST_MISSING,null}"}}}
    config = run_metrics_config(record)
    assert (config.device, config.fid_stats_dir, config.crop_size, config.annotations) == ("cpu", "/data/c/fid", 64,
                                                                                          None)
    hydra_only = {"config": {"metrics": {"fid_stats_dir": "${hydra:runtime.output_dir}/fid"}}}
    with pytest.raises(ConfigError, match="only that run's Hydra could resolve; pass metrics.fid_stats_dir=VALUE, or "
                                          "re-run the anonymization with this version"):
        run_metrics_config(hydra_only)
    assert run_metrics_config(hydra_only, {"fid_stats_dir": None}, {"fid_stats_dir"}).fid_stats_dir is None
    with pytest.raises(ConfigError, match="metrics.annotations=.*does not resolve here.*EVAL_TEST_MISSING.*re-run"):
        run_metrics_config({"config": {"metrics": {"annotations": "${oc.env:EVAL_TEST_MISSING}"}}})


# -- command line --------------------------------------------------------------------------------------------


def _errors(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(("args", "needle"), [
    ([], "no run folder given; pass run_dir=PATH"),
    (["run_dir"], "cannot read the argument 'run_dir'"),
    (["{run}", "metrics.nope=1"], "Could not override 'metrics.nope'"),
    (["{run}", "lpips=false"], "Could not override 'lpips'"),
    (["{run}", "metrics.crop_size=0"], "metrics.crop_size=0 is invalid"),
    (["{run}", "metrics.lpips_net=resnet"], "metrics.lpips_net='resnet'"),
    (["{run}", "metrics.lpips=no"], "metrics.lpips='no' is not a boolean"),
    (["{run}", "metrics.download='false'"], "metrics.download='false' is not a boolean"),
    (["{run}", "metrics=none"], "metrics=none evaluates nothing"),
    (["{run}", "metrics=nope"], "unknown metrics 'nope'; choose one of: default, none"),
    (["run_dir={missing}"], "not found"),
    (["run_dir={empty}"], "no run.json"),
    (["{run}", "output={missing}"], "output video"),
    (["run_dir={no_dets}"], "no detections.dets"),
])
def test_cli_errors_exit_2_with_one_line(args: list[str], needle: str, runs: dict[str, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "no_dets").mkdir()
    shutil.copy(runs["solid"] / "run.json", tmp_path / "no_dets" / "run.json")
    values = {"run": f"run_dir={runs['solid']}", "missing": str(tmp_path / "missing"), "empty": str(tmp_path / "empty"),
              "no_dets": str(tmp_path / "no_dets")}
    assert main([a.format(**values) for a in args]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], errors
    assert "Error executing job" not in err and "Traceback" not in err, err


def test_cli_writes_metrics_and_nothing_else(runs: dict[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A Hydra entry point that does not litter: no .hydra/, log file or outputs/ folder, in the current folder or
    the run folder; only metrics.json appears."""
    run_dir = tmp_path / "cli_run"
    shutil.copytree(runs["solid"], run_dir)
    (run_dir / "metrics.json").unlink(missing_ok=True)  # other tests evaluate the shared run folder
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = sorted(p.name for p in run_dir.iterdir())
    assert main([f"run_dir={run_dir}", "metrics.lpips=false", "metrics.fid=false", "metrics.device=cpu"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == str(run_dir / "metrics.json") and "psnr_out ↑" in out[0]
    assert sorted(p.name for p in run_dir.iterdir()) == sorted([*before, "metrics.json"])
    assert list(cwd.iterdir()) == []
    document = json.loads((run_dir / "metrics.json").read_text())
    assert document["skipped"]["lpips"].startswith("disabled") and document["config"]["lpips"] is False
    assert document["versions"]["python"] == platform.python_version()


def test_cli_overrides_replace_keys_of_the_run_s_own_config(runs: dict[str, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "own_config"
    shutil.copytree(runs["solid"], run_dir)
    record = json.loads((run_dir / "run.json").read_text())
    record["config"]["metrics"] = {"_target_": "inpaint_anon.metrics.MetricsConfig", "lpips": False, "fid": False,
                                   "crop_size": 32, "device": "cpu", "fid_stats_dir": None}
    (run_dir / "run.json").write_text(json.dumps(record))
    assert main([f"run_dir={run_dir}", "metrics.crop_size=48", "metrics.flicker=false"]) == 0
    config = json.loads((run_dir / "metrics.json").read_text())["config"]
    assert (config["crop_size"], config["flicker"], config["lpips"], config["fid"]) == (48, False, False, False)
    assert main([f"run_dir={run_dir}", "metrics=default", "metrics.lpips=false", "metrics.fid=false",
                 "metrics.fid_stats_dir=null"]) == 0  # the group: the defaults, not the run's
    config = json.loads((run_dir / "metrics.json").read_text())["config"]
    assert (config["crop_size"], config["flicker"], config["device"]) == (128, True, "auto")


def test_cli_help_shows_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("inpaint-anon evaluate: per-class metrics") and "run_dir=PATH" in text
    assert "metrics.lpips=false" in text and "fid_min_crops: 50" in text


def test_cli_subprocess_exit_code(runs: dict[str, Path], tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "inpaint_anon.evaluate", f"run_dir={tmp_path / 'nope'}"],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [
        f"error: run folder {tmp_path / 'nope'} not found; pass run_dir=<a folder written by inpaint_anon.run>"]

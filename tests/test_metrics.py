"""Metric building blocks against reference implementations: masked PSNR/SSIM vs scikit-image, FID vs
scipy.linalg.sqrtm, LPIPS vs the lpips package with the same (random, offline) backbone; flicker, leak,
config and weights errors. All on small synthetic arrays (no video)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from inpaint_anon.errors import ConfigError, InputError, WeightsError
from inpaint_anon.metrics import (
    ALL,
    METRICS,
    LeakRate,
    MaskedPSNR,
    MaskedSSIM,
    MetricsConfig,
    RunEvaluator,
    TemporalFlicker,
    load_annotations,
    masked_psnr,
    masked_ssim,
    ssim_map,
)
from inpaint_anon.metrics.crops import resize_crops, square_crop_box
from inpaint_anon.metrics.evaluator import merge_metric
from inpaint_anon.metrics.fid import RealStatsStore, fid_value, merge_fid, new_fid, real_state, set_real_state
from inpaint_anon.metrics.leak import unchanged_fraction
from inpaint_anon.metrics.networks import (
    FeatureExtractor,
    LPIPSScorer,
    load_inception,
    load_lpips,
    random_backbone_lpips,
    resolve_checkpoint,
)
from inpaint_anon.metrics.pixel import outside_region, squared_error_map
from inpaint_anon.metrics.temporal import centre_shift, track_pair_change
from inpaint_anon.types import Detections, mask_box

pytestmark = pytest.mark.usefixtures("one_thread")


def _pair(seed: int = 0, shape: tuple[int, int] = (48, 64), noise: float = 25.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    b = np.clip(a + rng.normal(0, noise, a.shape), 0, 255).astype(np.uint8)
    return a, b


def _blob(shape: tuple[int, int] = (48, 64), seed: int = 1) -> np.ndarray:
    """An irregular mask that touches the frame border (borders are where SSIM paddings differ)."""
    rng = np.random.default_rng(seed)
    mask = rng.random(shape) > 0.6
    mask[:10, :12] = True
    return mask


def _skimage_ssim_full(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    _, full = structural_similarity(a, b, channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, full=True)
    return full


# -- PSNR / SSIM vs scikit-image --------------------------------------------------------------------------


def test_masked_psnr_equals_skimage_on_masked_pixels() -> None:
    a, b = _pair()
    mask = _blob()
    expected = peak_signal_noise_ratio(a[mask], b[mask], data_range=255)
    assert masked_psnr(b, a, mask) == pytest.approx(expected, abs=1e-4)
    assert masked_psnr(b, a, ~mask) == pytest.approx(peak_signal_noise_ratio(a[~mask], b[~mask], data_range=255),
                                                     abs=1e-4)
    full = np.ones(mask.shape, dtype=bool)
    assert masked_psnr(b, a, full) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-4)


def test_masked_psnr_pools_mse_over_frames() -> None:
    (a1, b1), (a2, b2) = _pair(0), _pair(5, noise=5.0)
    m1, m2 = _blob(seed=1), _blob(seed=2)
    metric = MaskedPSNR()
    metric.update(squared_error_map(b1, a1), m1)
    metric.update(squared_error_map(b2, a2), m2)
    pooled = peak_signal_noise_ratio(np.concatenate([a1[m1], a2[m2]]), np.concatenate([b1[m1], b2[m2]]),
                                     data_range=255)
    assert float(metric.compute()) == pytest.approx(pooled, abs=1e-4)


def test_psnr_of_identical_pixels_is_infinite_and_empty_is_nan() -> None:
    a, _ = _pair()
    assert math.isinf(masked_psnr(a, a, _blob()))
    assert math.isnan(masked_psnr(a, a, np.zeros((48, 64), dtype=bool)))


def test_ssim_map_equals_skimage_full_map_everywhere() -> None:
    a, b = _pair()
    np.testing.assert_allclose(ssim_map(b, a), _skimage_ssim_full(a, b).mean(axis=2), atol=1e-10)


def test_masked_ssim_equals_skimage_full_map_averaged_over_mask() -> None:
    a, b = _pair(3, noise=12.0)
    full = _skimage_ssim_full(a, b)
    for mask in (_blob(), ~_blob(), np.ones((48, 64), dtype=bool)):
        assert masked_ssim(b, a, mask) == pytest.approx(full[mask].mean(), abs=1e-4)


def test_ssim_map_matches_torchmetrics_away_from_the_border() -> None:
    from torchmetrics.functional.image import structural_similarity_index_measure

    a, b = _pair(4)
    to_tensor = (lambda x: torch.from_numpy(x).permute(2, 0, 1)[None].double())  # noqa: E731
    _, full = structural_similarity_index_measure(to_tensor(b), to_tensor(a), data_range=255.0,
                                                  return_full_image=True)
    inner = (slice(5, -5), slice(5, -5))
    np.testing.assert_allclose(ssim_map(b, a)[inner], full[0].mean(0).numpy()[inner], atol=1e-8)


def test_masked_ssim_pools_over_frames() -> None:
    (a1, b1), (a2, b2) = _pair(0), _pair(6, noise=3.0)
    m1, m2 = _blob(seed=1), _blob(seed=3)
    metric = MaskedSSIM()
    metric.update(ssim_map(b1, a1), m1)
    metric.update(ssim_map(b2, a2), m2)
    expected = np.concatenate([_skimage_ssim_full(a1, b1)[m1], _skimage_ssim_full(a2, b2)[m2]]).mean()
    assert float(metric.compute()) == pytest.approx(expected, abs=1e-4)


def test_pixel_inputs_are_checked() -> None:
    a, b = _pair()
    with pytest.raises(ValueError, match="uint8"):
        ssim_map(a, b[:10])
    with pytest.raises(ValueError, match="uint8"):
        squared_error_map(a[..., 0], b[..., 0])
    with pytest.raises(ValueError, match="differ in shape"):
        MaskedSSIM().update(ssim_map(a, b), np.ones((3, 3), dtype=bool))


def test_outside_region_margin_is_chebyshev() -> None:
    union = np.zeros((9, 9), dtype=bool)
    union[4, 4] = True
    assert (outside_region(union) == ~union).all()
    near = ~outside_region(union, margin=2)
    assert near.sum() == 25 and near[2:7, 2:7].all()


def test_masked_states_merge_like_one_pass() -> None:
    (a1, b1), (a2, b2) = _pair(0), _pair(1)
    mask = _blob()
    one, first, second = MaskedPSNR(), MaskedPSNR(), MaskedPSNR()
    for metric, pairs in ((one, [(a1, b1), (a2, b2)]), (first, [(a1, b1)]), (second, [(a2, b2)])):
        for a, b in pairs:
            metric.update(squared_error_map(a, b), mask)
    merge_metric(first, second)
    assert float(first.compute()) == pytest.approx(float(one.compute()), rel=1e-12)


# -- crops ------------------------------------------------------------------------------------------------


def test_crops_are_square_inside_the_frame_and_resized() -> None:
    assert mask_box(np.zeros((4, 4), dtype=bool)) is None
    mask = np.zeros((50, 80), dtype=bool)
    mask[10:30, 70:80] = True
    box = mask_box(mask)
    assert box == (70, 10, 80, 30)
    x1, y1, x2, y2 = square_crop_box(box, 50, 80, padding=0.5)
    assert x2 - x1 == y2 - y1 == 30 and 0 <= x1 and x2 <= 80 and y1 >= 0 and y2 <= 50
    assert square_crop_box((0, 0, 80, 50), 50, 80, padding=0.1) == (15, 0, 65, 50)  # cut to the shorter side
    image = np.full((50, 80, 3), 77, dtype=np.uint8)
    crops = resize_crops(image, [(x1, y1, x2, y2)], 16)
    assert crops.shape == (1, 3, 16, 16) and crops.dtype == torch.uint8 and bool((crops == 77).all())
    assert resize_crops(image, [], 16).shape == (0, 3, 16, 16)


# -- FID ----------------------------------------------------------------------------------------------------


def _scipy_fid(real: np.ndarray, fake: np.ndarray) -> float:
    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


def test_fid_equals_frechet_distance_from_scipy_sqrtm() -> None:
    rng = np.random.default_rng(0)
    real = rng.normal(0, 1, (60, 12))
    fake = rng.normal(0.3, 1.4, (50, 12)) @ rng.normal(0, 0.5, (12, 12))
    fid = new_fid(12)
    fid.update(torch.from_numpy(real[:25]), real=True)
    fid.update(torch.from_numpy(real[25:]), real=True)
    fid.update(torch.from_numpy(fake), real=False)
    value, reason = fid_value(fid, min_crops=2)
    assert reason is None
    assert value == pytest.approx(_scipy_fid(real, fake), rel=1e-6)


def test_fid_with_too_few_crops_is_null_with_reason() -> None:
    fid = new_fid(4)
    fid.update(torch.ones(3, 4, dtype=torch.float64), real=True)
    fid.update(torch.ones(1, 4, dtype=torch.float64), real=False)
    value, reason = fid_value(fid, min_crops=50)
    assert value is None and "fid_min_crops=50" in reason and "3 original / 1 anonymized" in reason


def test_fid_merge_and_saved_real_statistics(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    real, fake = rng.normal(0, 1, (40, 6)), rng.normal(1, 2, (40, 6))
    one, first, second = new_fid(6), new_fid(6), new_fid(6)
    for fid, part in ((one, slice(None)), (first, slice(0, 17)), (second, slice(17, None))):
        fid.update(torch.from_numpy(real[part]), real=True)
        fid.update(torch.from_numpy(fake[part]), real=False)
    merge_fid(first, second)
    first._computed = None
    assert fid_value(first, 2)[0] == pytest.approx(fid_value(one, 2)[0], rel=1e-9)

    store = RealStatsStore(tmp_path / "stats", {"input": "abc", "crop": {"size": 64}})
    assert store.load("person") is None
    store.save("person", real_state(one))
    loaded = store.load("person")
    saved = real_state(one)
    assert sorted(loaded) == sorted(saved) and all(torch.equal(loaded[k], saved[k]) for k in saved)
    reused = new_fid(6)
    set_real_state(reused, loaded)
    reused.update(torch.from_numpy(fake), real=False)
    assert fid_value(reused, 2)[0] == pytest.approx(fid_value(one, 2)[0], rel=1e-12)
    other_key = RealStatsStore(tmp_path / "stats", {"input": "other", "crop": {"size": 64}})
    assert other_key.load("person") is None and store.load("car") is None
    store.path("car").write_bytes(b"not a torch file")
    assert store.load("car") is None


def test_fid_stats_dir_that_cannot_be_created_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="metrics.fid_stats_dir"):
        RealStatsStore(blocker / "sub", {})


# -- LPIPS vs the lpips package -----------------------------------------------------------------------------


@pytest.mark.parametrize("net", ["alex", "squeeze"])
def test_lpips_equals_lpips_package_with_the_same_backbone(net: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import lpips
    import lpips.pretrained_networks as pn
    from torchvision import models

    torch.manual_seed(0)
    builder = {"alex": models.alexnet, "squeeze": models.squeezenet1_1}[net]
    backbone = builder(weights=None)
    weights = tmp_path / f"{net}.pth"
    torch.save(backbone.state_dict(), weights)
    ours = LPIPSScorer(load_lpips(net, str(weights), download=False))
    # the reference: lpips' own pnet_rand=False path, with torchvision handing it the same backbone
    monkeypatch.setattr(pn.tv, {"alex": "alexnet", "squeeze": "squeezenet1_1"}[net], lambda **_: backbone)
    reference = lpips.LPIPS(net=net, pretrained=True, pnet_rand=False, verbose=False).eval()
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.integers(0, 256, (3, 3, 64, 64), dtype=np.uint8))
    b = torch.from_numpy(np.clip(a.numpy() + rng.normal(0, 30, a.shape), 0, 255).astype(np.uint8))
    with torch.no_grad():
        expected = reference(a.float() / 255, b.float() / 255, normalize=True).reshape(-1).double()
    np.testing.assert_allclose(ours(a, b).numpy(), expected.numpy(), rtol=1e-5, atol=1e-7)
    assert ours(a, a).abs().max() < 1e-6


def test_lpips_scorer_checks_shapes() -> None:
    scorer = LPIPSScorer(random_backbone_lpips("alex"))
    with pytest.raises(ValueError, match="crop batches"):
        scorer(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    assert scorer(torch.zeros(0, 3, 8, 8, dtype=torch.uint8), torch.zeros(0, 3, 8, 8, dtype=torch.uint8)).numel() == 0


# -- weights: one clear WeightsError naming metric and key ------------------------------------------------


@pytest.fixture
def empty_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home"


def test_uncached_weights_with_downloads_off_name_metric_and_key(empty_torch_home: Path) -> None:
    with pytest.raises(WeightsError) as lpips_error:
        load_lpips("vgg", None, download=False)
    message = str(lpips_error.value)
    assert "LPIPS (net=vgg)" in message and "metrics.lpips_weights" in message and "vgg16-397923af.pth" in message
    assert "\n" not in message and str(empty_torch_home) in message
    with pytest.raises(WeightsError) as fid_error:
        load_inception(2048, None, download=False)
    message = str(fid_error.value)
    assert message.startswith("FID") and "metrics.fid_weights" in message and "\n" not in message


def test_cached_weights_are_found_in_the_hub_cache(empty_torch_home: Path) -> None:
    cached = empty_torch_home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    cached.parent.mkdir(parents=True)
    from torchvision import models

    state = models.alexnet(weights=None).state_dict()
    torch.save(state, cached)
    assert resolve_checkpoint("https://x/alexnet-owt-7be5be79.pth", None, metric="LPIPS", key="k",
                              download=False) == cached
    model = load_lpips("alex", None, download=False)
    assert torch.equal(model.net.slice1[0].weight, state["features.0.weight"])  # the cached backbone, loaded


def test_failed_download_is_a_weights_error(empty_torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError, match="download failed \\(OSError: Name or service not known\\); download .*"
                                          "metrics.fid_weights"):  # the package's one one-line form (errors.one_line)
        load_inception(64, None, download=True)


def test_bad_local_weights_files(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="metrics.lpips_weights=.*is not a file"):
        load_lpips("alex", str(tmp_path / "missing.pth"))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not torch")
    with pytest.raises(WeightsError, match="cannot be read as PyTorch weights"):
        load_lpips("alex", str(garbage))
    wrong = tmp_path / "wrong.pth"
    torch.save({"some.weight": torch.zeros(1)}, wrong)
    with pytest.raises(WeightsError, match="not a torchvision alex state dict \\(RuntimeError: Error"):
        load_lpips("alex", str(wrong))
    listed = tmp_path / "list.pth"
    torch.save([1, 2], listed)
    with pytest.raises(WeightsError, match="not a state dict"):
        load_lpips("alex", str(listed))
    with pytest.raises(WeightsError, match="not the FID InceptionV3 weights.*metrics.fid_weights"):
        load_inception(64, str(wrong))


def test_evaluator_skips_a_metric_without_weights_and_runs_the_others(empty_torch_home: Path) -> None:
    evaluator = RunEvaluator.from_config(MetricsConfig(download=False, device="cpu"))
    a, b = _pair()
    detections = Detections.from_masks(_blob()[None], [0], {0: "person"})
    evaluator.update(0, a, b, detections)
    result = evaluator.compute()
    assert "metrics.lpips_weights" in result["skipped"]["lpips"]
    assert "metrics.fid_weights" in result["skipped"]["fid"]
    assert result["ran"] == ["psnr", "ssim", "leak"]
    assert "no track ids" in result["skipped"]["flicker"]
    assert "lpips" not in result["classes"]["person"] and "psnr_in" in result["classes"]["person"]


# -- per-class routing in the evaluator -----------------------------------------------------------------------


class _TinyFeatures(torch.nn.Module):
    """A random-weight conv feature extractor: uint8 (N, 3, S, S) -> float (N, 8)."""

    num_features = 8

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 5, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.float() / 255).mean((2, 3))


def _two_class_frame(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, Detections]:
    original = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    person = np.zeros((48, 64), dtype=bool)
    person[5:30, 5:20] = True
    car = np.zeros((48, 64), dtype=bool)
    car[30:45, 30:60] = True
    anonymized = original.copy()
    anonymized[person] = 0  # the person is replaced, the car is left as it is
    detections = Detections.from_masks(np.stack([person, car]), [0, 2], {0: "person", 1: "bicycle", 2: "car"},
                                       track_ids=[7, 9])
    return original, anonymized, detections


def test_two_classes_get_separate_rows() -> None:
    rng = np.random.default_rng(0)
    config = MetricsConfig(fid_min_crops=2, crop_size=32, min_crop_side=4, device="cpu")
    evaluator = RunEvaluator(config, lpips_model=random_backbone_lpips("alex"),
                             feature_extractor=FeatureExtractor(_TinyFeatures()))
    frames = [_two_class_frame(rng) for _ in range(3)]
    for index, (original, anonymized, detections) in enumerate(frames):
        evaluator.update(index, original, anonymized, detections)
    result = evaluator.compute()
    person, car, every = result["classes"]["person"], result["classes"]["car"], result["classes"][ALL]
    assert list(result["classes"]) == [ALL, "car", "person"]  # bicycle never appears
    assert car["psnr_in"] == "inf" and car["ssim_in"] == pytest.approx(1.0)
    assert person["psnr_in"] < 10 and person["ssim_in"] < 0.1
    assert car["lpips"] == pytest.approx(0.0, abs=1e-6) and person["lpips"] > 0.01
    assert car["fid"] == pytest.approx(0.0, abs=1e-6) and person["fid"] > 0
    person_pixels = [o[d.by_class("person").union_mask().numpy()] for o, _, d in frames]
    assert person["psnr_in"] == pytest.approx(
        peak_signal_noise_ratio(np.concatenate(person_pixels), np.zeros_like(np.concatenate(person_pixels)),
                                data_range=255), abs=1e-4)
    union = frames[0][2].union_mask().numpy()
    expected_in = peak_signal_noise_ratio(np.concatenate([o[union] for o, _, _ in frames]),
                                          np.concatenate([a[union] for _, a, _ in frames]), data_range=255)
    assert every["psnr_in"] == pytest.approx(expected_in, abs=1e-4)
    assert every["psnr_out"] == person["psnr_out"] == car["psnr_out"] == "inf"  # outside untouched
    assert result["counts"]["person"]["crops"] == 3 and result["counts"][ALL]["crops"] == 6
    assert result["counts"]["car"]["track_pairs"] == 2
    # the person's random texture is replaced by black: flicker 0 where the original changes a lot
    assert person["flicker"] == 0.0 and person["flicker_orig"] > 50 and person["flicker_ratio"] == 0.0
    assert car["flicker_ratio"] == pytest.approx(1.0)
    assert result["skipped"] == {} and person["leak_rate"] is None
    assert result["undefined"]["person"]["leak_rate"] == "no annotated region of this class"


def test_evaluator_checks_its_inputs() -> None:
    rng = np.random.default_rng(0)
    original, anonymized, detections = _two_class_frame(rng)
    evaluator = RunEvaluator(MetricsConfig(lpips=False, fid=False))
    with pytest.raises(ValueError, match="one size"):
        evaluator.update(0, original, anonymized[:10], detections)
    with pytest.raises(ValueError, match="detections are"):
        evaluator.update(0, original[:10], anonymized[:10], detections)
    evaluator.update(0, original, anonymized, detections)
    with pytest.raises(RuntimeError, match="before the first update"):
        evaluator.load_real_statistics({})
    with pytest.raises(ValueError, match="different configs"):
        evaluator.merge(RunEvaluator(MetricsConfig(lpips=False, fid=False, psnr=False)))


def test_missing_networks_are_reported_as_skipped() -> None:
    result = RunEvaluator(MetricsConfig(psnr=False, leak=False)).compute()
    assert result["skipped"]["lpips"] == "no LPIPS model was given"
    assert result["skipped"]["fid"] == "no FID feature extractor was given"
    assert result["skipped"]["psnr"].startswith("disabled")


# -- temporal flicker -----------------------------------------------------------------------------------------


def test_flicker_compensates_box_motion() -> None:
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    prev_mask = np.zeros((60, 80), dtype=bool)
    prev_mask[10:30, 10:25] = True
    cur_mask = np.roll(prev_mask, (3, 5), axis=(0, 1))
    prev = texture
    cur = np.roll(texture, (3, 5), axis=(0, 1))  # the object (and everything) moves by (dx, dy) = (5, 3)
    assert centre_shift(prev_mask, cur_mask) == (5, 3)
    assert centre_shift(prev_mask, np.zeros_like(prev_mask)) is None
    shifted_anon = cur.astype(np.int16)
    shifted_anon[cur_mask] += 6
    anonymized = np.clip(shifted_anon, 0, 255).astype(np.uint8)
    (anon_sum, orig_sum), pixels = track_pair_change((prev, prev), (anonymized, cur), prev_mask, cur_mask)
    assert pixels == 20 * 15 and orig_sum == 0.0
    expected = np.abs(anonymized[cur_mask].astype(int) - cur[cur_mask].astype(int)).mean(axis=1).sum()
    assert anon_sum == pytest.approx(expected)
    metric = TemporalFlicker()
    metric.update(anon_sum, orig_sum, pixels)
    flicker, original, ratio = metric.compute().tolist()
    assert flicker == pytest.approx(expected / pixels) and original == 0.0 and math.isnan(ratio)
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert all(math.isnan(v) for v in TemporalFlicker().compute().tolist())


# -- leak --------------------------------------------------------------------------------------------------


def _write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_annotations_boxes_and_masks(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "masks").mkdir()
    mask = np.zeros((20, 30), dtype=np.uint8)
    mask[2:6, 3:9] = 255
    Image.fromarray(mask).save(tmp_path / "masks" / "m.png")
    path = _write(tmp_path / "gt.jsonl", "# ground truth", "",
                  '{"frame": 0, "class": "person", "box": [1.5, 2, 4.2, 5]}',
                  '{"frame": 1, "class": "car", "mask": "masks/m.png", "id": 4}')
    annotations = load_annotations(path, n_frames=2)
    box = annotations[0][0]
    assert box.is_box and box.region(20, 30).sum() == 3 * 4  # x in [1, 5), y in [2, 5)
    region = annotations[1][0].region(20, 30)
    assert (region == (mask > 0)).all()
    with pytest.raises(InputError, match="is 30x20 but the frame is 40x20"):
        annotations[1][0].region(20, 40)


@pytest.mark.parametrize(("line", "problem"), [
    ("{not json", "not JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"frame": -1, "class": "person", "box": [0, 0, 1, 1]}', "frame=-1"),
    ('{"frame": true, "class": "person", "box": [0, 0, 1, 1]}', "frame=True"),
    ('{"frame": 0, "box": [0, 0, 1, 1]}', "class=None"),
    ('{"frame": 0, "class": "person"}', "exactly one of box or mask"),
    ('{"frame": 0, "class": "person", "box": [0, 0, 1, 1], "mask": "m.png"}', "exactly one of box or mask"),
    ('{"frame": 0, "class": "person", "box": [5, 0, 1, 1]}', "x1 < x2"),
    ('{"frame": 0, "class": "person", "box": [0, 0, 1]}', "must be \\[x1, y1, x2, y2\\]"),
    ('{"frame": 0, "class": "person", "mask": "missing.png"}', "not found"),
    ('{"frame": 0, "class": "person", "mask": 3}', "must be a PNG path"),
    ('{"frame": 9, "class": "person", "box": [0, 0, 1, 1]}', "past the video's 5 frames"),
])
def test_bad_annotation_lines_name_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    path = _write(tmp_path / "gt.jsonl", '{"frame": 0, "class": "person", "box": [0, 0, 2, 2]}', line)
    with pytest.raises(InputError, match=problem) as error:
        load_annotations(path, n_frames=5)
    assert f"{path}:2" in str(error.value)


def test_annotation_file_problems(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found; check metrics.annotations"):
        load_annotations(tmp_path / "none.jsonl")
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InputError, match="UTF-8"):
        load_annotations(binary)
    unreadable = _write(tmp_path / "gt.jsonl", '{"frame": 0, "class": "car", "mask": "bad.png"}')
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot be read"):
        load_annotations(unreadable)[0][0].region(4, 4)
    outside = load_annotations(_write(tmp_path / "out.jsonl", '{"frame": 0, "class": "car", "box": [50, 50, 60, 60]}'))
    with pytest.raises(InputError, match="no pixel inside"):
        outside[0][0].region(10, 10)


def test_corrupt_mask_after_ultralytics_import(tmp_path: Path) -> None:
    """CI failure: ultralytics' patched Image.open retries unknown files as HEIF and raised ModuleNotFoundError
    (no pi-heif) instead of the InputError."""
    import ultralytics.utils.patches  # noqa: F401 - applies the patch, as the detector does in a real run

    annotations = _write(tmp_path / "gt.jsonl", '{"frame": 0, "class": "car", "mask": "bad.png"}')
    (tmp_path / "bad.png").write_bytes(b"not a png" * 100)
    with pytest.raises(InputError, match="cannot be read"):
        load_annotations(annotations)[0][0].region(4, 4)


def test_leak_rate_unchanged_and_blacked_out() -> None:
    rng = np.random.default_rng(0)
    original = rng.integers(20, 256, (20, 30, 3), dtype=np.uint8)
    region = np.zeros((20, 30), dtype=bool)
    region[3:12, 4:20] = True
    noisy = np.clip(original.astype(int) + rng.integers(-8, 9, original.shape), 0, 255).astype(np.uint8)
    assert unchanged_fraction(original, noisy, region, tolerance=8) == 1.0
    blacked = original.copy()
    blacked[region] = 0
    assert unchanged_fraction(original, blacked, region, tolerance=8) == 0.0
    metric = LeakRate()
    metric.update([1.0, 0.0, 0.7], [True, False, True])
    assert metric.compute().tolist() == pytest.approx([2 / 3, 1.7 / 3])
    with pytest.raises(ValueError, match="leak flags"):
        metric.update([1.0], [])


# -- config -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value"), [
    ("psnr", "yes"), ("frame_stride", 0), ("outside_margin", -1), ("crop_size", 8), ("crop_padding", -0.1),
    ("crop_padding", float("nan")), ("min_crop_side", 0), ("batch_size", 1.5), ("lpips_net", "resnet"),
    ("fid_features", 1000), ("fid_features", 2048.0), ("fid_min_crops", 1), ("leak_tolerance", 256),
    ("leak_fraction", 1.0), ("leak_fraction_box", -0.5), ("annotations", ""), ("fid_weights", 3),
    ("device", ""), ("download", 1),
])
def test_bad_config_values_name_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"metrics.{key}="):
        MetricsConfig(**{key: value})


def test_config_from_dict_and_replace() -> None:
    config = MetricsConfig.from_dict({"_target_": "inpaint_anon.metrics.MetricsConfig", "lpips": False})
    assert config.lpips is False and config.enabled_groups == ("psnr", "ssim", "fid", "flicker", "leak")
    assert MetricsConfig.from_dict(None) == MetricsConfig()
    changed = config.replace(crop_size=64, fid_weights="/w.pth")
    assert (changed.crop_size, changed.fid_weights, changed.lpips) == (64, "/w.pth", False)
    with pytest.raises(ConfigError, match="unknown metrics option"):
        MetricsConfig.from_dict({"lpip": False})
    with pytest.raises(ConfigError, match="not a mapping"):
        MetricsConfig.from_dict([1])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown metrics option"):
        config.replace(nope=1)


@pytest.mark.parametrize("value", ["no", "false", "False", "maybe", "", 0, 1, None])
def test_switches_accept_only_booleans(value: object) -> None:
    """`metrics.lpips=no` or `'false'` is a string (truthy): refused, never read as on or off."""
    with pytest.raises(ConfigError, match=f"metrics.lpips={value!r} is not a boolean; write metrics.lpips=true"):
        MetricsConfig(lpips=value)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="metrics.download="):
        MetricsConfig.from_dict({"download": value})


def test_every_reported_metric_has_a_direction() -> None:
    assert {info.arrow for info in METRICS.values()} == {"↑", "↓", ""}
    assert METRICS["psnr_out"].arrow == "↑" and METRICS["fid"].arrow == "↓" and METRICS["flicker_orig"].arrow == ""
    assert "NOT changed" in METRICS["psnr_in"].description

"""Compositor: dilation radii, feathered alpha (privacy invariants), fill regions, the paste of fills, the guard."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt

from inpaint_anon.composite import Compositor
from inpaint_anon.errors import ConfigError
from inpaint_anon.inpaint.base import RegionFill
from inpaint_anon.types import Detections, masks_to_boxes


def random_masks(generator: torch.Generator, n: int, h: int, w: int) -> torch.Tensor:
    """bool (n, h, w): a mix of ellipses, rectangles, speckle and empty masks, some touching the borders."""
    ys = torch.arange(h)[:, None].float()
    xs = torch.arange(w)[None, :].float()
    masks = torch.zeros((n, h, w), dtype=torch.bool)
    for i in range(n):
        kind = int(torch.randint(0, 4, (1,), generator=generator))
        cy, cx = float(torch.rand(1, generator=generator)) * h, float(torch.rand(1, generator=generator)) * w
        ry, rx = (
            1 + float(torch.rand(1, generator=generator)) * h / 3,
            1 + float(torch.rand(1, generator=generator)) * w / 3,
        )
        if kind == 0:
            masks[i] = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1
        elif kind == 1:
            masks[i] = ((ys - cy).abs() <= ry) & ((xs - cx).abs() <= rx)
        elif kind == 2:
            masks[i] = torch.rand((h, w), generator=generator) < 0.01
        # kind 3: empty mask
    return masks


def reference_distances(masks: torch.Tensor) -> np.ndarray:
    """float64 (n, h, w) exact Euclidean distance to each mask (inf for an empty one), via scipy."""
    out = np.full(masks.shape, np.inf)
    for i, mask in enumerate(masks.numpy()):
        if mask.any():
            out[i] = distance_transform_edt(~mask)
    return out


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dilate": -1},
        {"dilate": 1.5},
        {"dilate": True},
        {"dilate": 513},
        {"dilate_rel": -0.1},
        {"dilate_rel": 1.5},
        {"dilate_rel": "0.1"},
        {"feather": -1},
        {"feather": 257},
        {"feather": 2.0},
    ],
)
def test_bad_parameters_raise_config_error_naming_them(kwargs):
    ((name, value),) = kwargs.items()
    with pytest.raises(ConfigError, match=f"{name}={value!r}.*from"):
        Compositor(**kwargs)


def test_no_regions_gives_zero_alpha_and_no_fill():
    comp = Compositor()
    masks = torch.zeros((0, 30, 40), dtype=torch.bool)
    fill, alpha = comp.fill_and_alpha(masks)
    assert fill.shape == (0, 30, 40)
    assert alpha.shape == (30, 40) and alpha.dtype == torch.float32 and (alpha == 0).all()
    assert (comp.alpha(masks, feather=False) == 0).all()


@pytest.mark.parametrize("seed", range(24))
def test_alpha_privacy_invariants_on_random_masks(seed):
    generator = torch.Generator().manual_seed(seed)
    h, w = 16 + seed * 7 % 50, 16 + seed * 13 % 60
    n = 1 + seed % 12  # up to 12 regions: more than one chunk
    masks = random_masks(generator, n, h, w)
    comp = Compositor(dilate=seed % 4, dilate_rel=0.05 * (seed % 3), feather=seed % 5 + 1)
    fill, alpha = comp.fill_and_alpha(masks)
    dilated, hard_alpha = comp.fill_and_alpha(masks, feather=False)
    assert alpha.dtype == torch.float32 and ((alpha >= 0) & (alpha <= 1)).all()
    assert (alpha[masks.any(dim=0)] == 1.0).all(), "an original mask pixel would leak through the feather"
    assert (alpha[dilated.any(dim=0)] == 1.0).all(), "a dilated mask pixel would leak through the feather"
    assert (alpha[~fill.any(dim=0)] == 0).all()
    assert torch.equal(alpha > 0, fill.any(dim=0))
    assert (masks <= dilated).all() and (dilated <= fill).all()
    assert torch.equal(hard_alpha, dilated.any(dim=0).float())
    # Grown masks match an exact Euclidean distance transform (away from float ties at the radius).
    dist = reference_distances(masks)
    radii = comp.radii(masks_to_boxes(masks)).numpy()[:, None, None]
    clear = np.abs(dist - radii) > 1e-3
    assert np.array_equal(dilated.numpy()[clear], (dist <= radii)[clear])
    clear = np.abs(dist - radii - comp.feather) > 1e-3
    assert np.array_equal(fill.numpy()[clear], (dist < radii + comp.feather)[clear])


def test_feather_band_ramps_linearly_outside_the_dilated_mask():
    masks = torch.zeros((1, 21, 31), dtype=torch.bool)
    masks[0, 10, 10] = True
    alpha = Compositor(dilate=2, dilate_rel=0.0, feather=4).alpha(masks)
    row = alpha[10, 10:20].tolist()
    assert row[:3] == [1.0, 1.0, 1.0]
    assert row[3:8] == pytest.approx([0.75, 0.5, 0.25, 0.0, 0.0])


def test_without_feather_alpha_is_the_hard_dilated_mask():
    masks = torch.zeros((1, 21, 21), dtype=torch.bool)
    masks[0, 10, 10] = True
    for comp, feather in (
        (Compositor(dilate=3, dilate_rel=0, feather=5), False),
        (Compositor(3, 0, 0), True),
    ):
        alpha = comp.alpha(masks, feather=feather)
        assert set(alpha.unique().tolist()) == {0.0, 1.0}
        assert int(alpha.sum()) == 29  # pixels within Euclidean distance 3 of one pixel
        assert torch.equal(comp.fill_regions(masks, feather=feather)[0], alpha > 0)


def test_relative_dilation_is_sized_by_the_given_boxes():
    masks = torch.zeros((1, 200, 200), dtype=torch.bool)
    masks[0, 98:102, 98:102] = True
    comp = Compositor(dilate=0, dilate_rel=0.2, feather=0)
    small = comp.fill_regions(masks)  # tight box diagonal 5.66 -> radius 1.13
    assert masks_to_boxes(small).tolist() == [[97.0, 97.0, 103.0, 103.0]]
    assert int(small.sum()) == 16 + 4 * 4
    big = comp.fill_regions(masks, torch.tensor([[0.0, 0.0, 150.0, 200.0]]))  # diagonal 250 -> radius 50
    assert int(big[0, 100].sum()) == 4 + 2 * 50
    huge = comp.fill_regions(masks, torch.tensor([[0.0, 0.0, 1e6, 1e6]]))  # capped at 0.2 x frame diagonal
    assert int(huge[0, 100].sum()) == 4 + 2 * 56


def test_broken_boxes_cannot_break_the_privacy_invariant():
    masks = torch.zeros((3, 30, 40), dtype=torch.bool)
    masks[0, 2:8, 3:9] = True
    masks[1, 20:25, 30:38] = True
    masks[2, 10:12, 10:30] = True
    boxes = torch.tensor([[0.0, 0.0, math.nan, 5.0], [0.0, 0.0, math.inf, 1.0], [50.0, 50.0, -1e9, 0.0]])
    fill, alpha = Compositor(dilate=1, dilate_rel=0.1, feather=2).fill_and_alpha(masks, boxes)
    assert (alpha[masks.any(dim=0)] == 1).all() and (masks <= fill).all()
    assert int(fill[0].sum()) < 30 * 40  # NaN box: the base dilation only


def test_regions_at_borders_and_growth_larger_than_the_frame():
    masks = torch.zeros((3, 10, 12), dtype=torch.bool)
    masks[0, 0, 0] = True
    masks[1, 9, 11] = True
    masks[2] = True
    fill, alpha = Compositor(dilate=30, dilate_rel=0.5, feather=8).fill_and_alpha(masks)
    assert fill.all() and (alpha == 1).all()


def test_each_region_grows_independently_of_the_others():
    generator = torch.Generator().manual_seed(7)
    masks = random_masks(generator, 20, 40, 50)
    comp = Compositor(dilate=2, dilate_rel=0.1, feather=3)
    fill, alpha = comp.fill_and_alpha(masks)
    singles = [comp.fill_and_alpha(masks[i : i + 1]) for i in range(20)]
    assert torch.equal(fill, torch.cat([f for f, _ in singles]))
    assert torch.equal(alpha, torch.stack([a for _, a in singles]).amax(dim=0))


def test_uint8_masks_are_accepted_and_bad_shapes_rejected():
    masks = torch.zeros((2, 10, 10), dtype=torch.uint8)
    masks[0, 5, 5] = 1
    assert Compositor().fill_regions(masks).dtype == torch.bool
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        Compositor().alpha(torch.zeros((10, 10), dtype=torch.bool))
    with pytest.raises(ValueError, match="boxes_xyxy"):
        Compositor().alpha(masks.bool(), torch.zeros((3, 4)))


def test_prepare_returns_fill_detections_and_alpha():
    masks = torch.zeros((2, 30, 30), dtype=torch.bool)
    masks[0, 5:10, 5:10] = True
    masks[1, 20:25, 18:28] = True
    det = Detections.from_masks(masks, [0, 1], {0: "person", 1: "car"}, track_ids=[7, 9])
    comp = Compositor(dilate=2, dilate_rel=0.0, feather=2)
    grown, alpha = comp.prepare(det)
    fill, expected_alpha = comp.fill_and_alpha(masks, det.boxes_xyxy)
    assert torch.equal(grown.masks, fill) and torch.equal(alpha, expected_alpha)
    # the detection boxes grown by dilation + feather (4 px), clamped to the frame, covering the fill
    assert grown.boxes_xyxy.tolist() == [[1.0, 1.0, 14.0, 14.0], [14.0, 16.0, 30.0, 29.0]]
    tight = masks_to_boxes(fill)
    assert (grown.boxes_xyxy[:, :2] <= tight[:, :2]).all() and (grown.boxes_xyxy[:, 2:] >= tight[:, 2:]).all()
    assert grown.track_ids.tolist() == [7, 9] and grown.class_names == ["person", "car"]
    assert det.masks is masks  # the input is not modified


def whole_frame_fills(fills: torch.Tensor) -> list[RegionFill]:
    """uint8 (B, 3, H, W) -> one fill per frame covering it entirely."""
    b, _, h, w = fills.shape
    return [RegionFill(i, 0, (0, 0, w, h), fills[i], torch.ones((h, w), dtype=torch.bool)) for i in range(b)]


def test_compose_is_exact_at_alpha_zero_and_one_and_linear_between():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 20, 30), dtype=torch.uint8, generator=generator)
    fills = torch.randint(0, 256, (2, 3, 20, 30), dtype=torch.uint8, generator=generator)
    alphas = torch.rand((2, 20, 30), generator=generator)
    alphas[:, :, :10] = 0.0
    alphas[:, :, 20:] = 1.0
    before = images.clone()
    out = Compositor().compose(images, whole_frame_fills(fills), alphas)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert torch.equal(images, before), "the original frames must not be modified"
    assert torch.equal(out[..., :10], images[..., :10])
    assert torch.equal(out[..., 20:], fills[..., 20:])
    expected = images.float() + alphas[:, None] * (fills.float() - images.float())
    assert (out.float() - expected).abs().max() <= 0.5


def test_compose_pastes_each_fill_under_its_mask_in_its_window_only():
    images = torch.full((2, 3, 10, 12), 50, dtype=torch.uint8)
    mask = torch.tensor([[True, False, True], [False, True, True]])
    rgb = torch.arange(18, dtype=torch.uint8).reshape(3, 2, 3) + 100
    out = Compositor.compose(images, [RegionFill(1, 0, (4, 6, 7, 8), rgb, mask)])
    expected = images.clone()
    expected[1, :, 6:8, 4:7] = torch.where(mask, rgb, expected[1, :, 6:8, 4:7])
    assert torch.equal(out, expected)
    assert int((out != images).any(dim=1).sum()) == 4


def test_a_later_fill_wins_and_every_fill_blends_from_the_original_pixels():
    images = torch.full((1, 3, 4, 4), 100, dtype=torch.uint8)
    alphas = torch.full((1, 4, 4), 0.5)
    everywhere = torch.ones((4, 4), dtype=torch.bool)
    first = RegionFill(0, 0, (0, 0, 4, 4), torch.full((3, 4, 4), 200, dtype=torch.uint8), everywhere)
    second = RegionFill(0, 1, (2, 0, 4, 4), torch.zeros((3, 4, 2), dtype=torch.uint8), everywhere[:, :2])
    out = Compositor.compose(images, [first, second], alphas)
    assert (out[0, :, :, :2] == 150).all()  # 100 + 0.5 * (200 - 100)
    assert (out[0, :, :, 2:] == 50).all()  # 100 + 0.5 * (0 - 100): from the original, not from 150
    swapped = Compositor.compose(images, [second, first], alphas)
    assert (swapped[0] == 150).all()


def test_compose_in_place_equals_compose_into_a_copy():
    generator = torch.Generator().manual_seed(4)
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8, generator=generator)
    alphas = torch.rand((2, 16, 16), generator=generator)
    fills = [
        RegionFill(b, i, (x, y, x + 8, y + 8), torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8, generator=generator),
                   torch.rand((8, 8), generator=generator) > 0.3)
        for b in range(2) for i, (x, y) in enumerate([(0, 0), (4, 4), (8, 2)])
    ]
    expected = Compositor.compose(images, fills, alphas)
    same = images.clone()
    assert Compositor.compose(same, fills, alphas, out=same) is same
    assert torch.equal(same, expected)


def test_compose_with_compositor_alpha_hides_every_masked_pixel():
    generator = torch.Generator().manual_seed(1)
    masks = random_masks(generator, 6, 40, 60)
    comp = Compositor()
    fill_regions, alpha = comp.fill_and_alpha(masks)
    images = torch.randint(0, 256, (1, 3, 40, 60), dtype=torch.uint8, generator=generator)
    boxes = masks_to_boxes(fill_regions).long().tolist()
    fills = [
        RegionFill(0, i, (x0, y0, x1, y1), torch.zeros((3, y1 - y0, x1 - x0), dtype=torch.uint8),
                   fill_regions[i, y0:y1, x0:x1])
        for i, (x0, y0, x1, y1) in enumerate(boxes) if x1 > x0
    ]
    out = comp.compose(images, fills, alpha[None])
    assert (out[0][:, masks.any(dim=0)] == 0).all()
    assert torch.equal(out[0][:, alpha == 0], images[0][:, alpha == 0])


def black_fill(frame: int, window: tuple[int, int, int, int]) -> RegionFill:
    x0, y0, x1, y1 = window
    size = (y1 - y0, x1 - x0)
    return RegionFill(frame, 0, window, torch.zeros((3, *size), dtype=torch.uint8), torch.ones(size, dtype=torch.bool))


@pytest.mark.parametrize(
    "images, fills, alphas, match",
    [
        (torch.zeros((1, 3, 4, 4)), [], None, "images"),
        (torch.zeros((1, 3, 4, 4), dtype=torch.uint8), [], torch.zeros((4, 4)), "alphas"),
        (torch.zeros((1, 3, 4, 4), dtype=torch.uint8), [], torch.zeros((1, 4, 4), dtype=torch.uint8), "alphas"),
        (torch.zeros((1, 3, 4, 4), dtype=torch.uint8), [black_fill(1, (0, 0, 2, 2))], None, "frame 1"),
        (torch.zeros((1, 3, 4, 4), dtype=torch.uint8), [black_fill(0, (3, 0, 5, 2))], None, "outside"),
    ],
)
def test_compose_rejects_bad_inputs(images, fills, alphas, match):
    with pytest.raises(ValueError, match=match):
        Compositor().compose(images, fills, alphas)


@pytest.mark.parametrize(
    "window, rgb, mask, match",
    [
        ((2, 0, 2, 3), (3, 3, 0), (3, 0), "window"),
        ((0, 0, 2, 3), (3, 2, 2), (3, 2), "rgb"),
        ((0, 0, 2, 3), (3, 3, 2), (2, 3), "mask"),
    ],
)
def test_region_fill_checks_its_shapes(window, rgb, mask, match):
    with pytest.raises(ValueError, match=match):
        RegionFill(0, 0, window, torch.zeros(rgb, dtype=torch.uint8), torch.ones(mask, dtype=torch.bool))


# ------------------------------------------------------------------------------------------------ guard


def test_changes_are_the_mean_absolute_difference_over_each_mask():
    images = torch.full((3, 8, 8), 100, dtype=torch.uint8)
    composed = images.clone()
    composed[0, 0:2, 0:2] = 112  # region 0: 4 pixels, one channel +12 -> mean 4.0
    composed[:, 4:8, 4:8] = 90  # region 1: half of its 32 pixels -10 on 3 channels -> mean 5.0
    masks = torch.zeros((3, 8, 8), dtype=torch.bool)
    masks[0, 0:2, 0:2] = True
    masks[1, 4:8, 0:8] = True  # region 2 stays empty
    change = Compositor().changes(images, composed, masks)
    assert change.tolist() == [4.0, 5.0, math.inf]


def test_unchanged_lists_the_regions_below_min_change():
    images = torch.full((2, 3, 8, 8), 100, dtype=torch.uint8)
    composed = images.clone()
    composed[0, :, :, 0:4] = 0  # frame 0: region 0 (left half) changed by 100, region 1 (right half) unchanged
    composed[1, :, :, 4:] = 107  # frame 1: region 1 changed by 7
    masks = torch.zeros((2, 8, 8), dtype=torch.bool)
    masks[0, :, 0:4] = True
    masks[1, :, 4:] = True
    dets = [Detections.from_masks(masks, [0, 0], {0: "person"})] * 2
    assert Compositor(min_change=8.0).unchanged(images, composed, dets) == [(0, 1, 0.0), (1, 0, 0.0), (1, 1, 7.0)]
    assert Compositor(min_change=7.0).unchanged(images, composed, dets) == [(0, 1, 0.0), (1, 0, 0.0)]
    assert Compositor(min_change=0.0).unchanged(images, composed, dets) == []


@pytest.mark.parametrize("value", [-1.0, 256.0, "8", True, math.nan])
def test_bad_min_change_is_a_config_error(value):
    with pytest.raises(ConfigError, match=f"min_change={value!r}.*from 0.0 to 255.0"):
        Compositor(min_change=value)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    generator = torch.Generator().manual_seed(3)
    masks = random_masks(generator, 12, 60, 80)
    comp = Compositor(dilate=3, dilate_rel=0.05, feather=5)
    fill, alpha = comp.fill_and_alpha(masks)
    fill_cuda, alpha_cuda = comp.fill_and_alpha(masks.cuda())
    assert alpha_cuda.device.type == "cuda"
    assert torch.equal(fill_cuda.cpu(), fill)
    assert torch.allclose(alpha_cuda.cpu(), alpha, atol=1e-6)
    images = torch.randint(0, 256, (1, 3, 60, 80), dtype=torch.uint8, generator=generator)
    fills = whole_frame_fills(torch.randint(0, 256, (1, 3, 60, 80), dtype=torch.uint8, generator=generator))
    composed = comp.compose(images.cuda(), fills, alpha_cuda[None]).cpu()
    assert (composed.int() - comp.compose(images, fills, alpha[None]).int()).abs().max() <= 1

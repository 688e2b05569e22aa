"""Fast inpainters (blur, pixelate, solid, scramble) and make_inpainter (scramble primitives: test_scramble.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from inpaint_anon.composite import Compositor
from inpaint_anon.detect.shapes import ellipse_masks
from inpaint_anon.errors import ConfigError
from inpaint_anon.inpaint import (
    INPAINTERS,
    BlurInpainter,
    Fallback,
    InpaintBatch,
    Inpainter,
    PixelateInpainter,
    RegionFill,
    ScrambleInpainter,
    SolidInpainter,
    make_inpainter,
)
from inpaint_anon.inpaint.fast import FALLBACK_RGB, _collect_regions, _sample_windows
from inpaint_anon.scramble import unscramble, video_key
from inpaint_anon.types import Detections, masks_to_boxes

NAMES = {0: "person", 1: "car"}
KEY = "0123456789abcdef" * 4


def texture(generator: torch.Generator, b: int, h: int, w: int) -> torch.Tensor:
    """uint8 (b, 3, h, w) uniform random texture."""
    return torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=generator)


def box_masks(boxes: list[tuple[int, int, int, int]], h: int, w: int) -> torch.Tensor:
    """bool (N, h, w) rectangles given as (x1, y1, x2, y2), exclusive."""
    masks = torch.zeros((len(boxes), h, w), dtype=torch.bool)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        masks[i, y1:y2, x1:x2] = True
    return masks


def random_detections(generator: torch.Generator, n: int, h: int, w: int) -> Detections:
    """n regions of random size (1 px to a third of the frame), ellipses or boxes, possibly overlapping."""
    ys, xs = torch.arange(h)[:, None].float(), torch.arange(w)[None, :].float()
    masks = torch.zeros((n, h, w), dtype=torch.bool)
    for i in range(n):
        cy, cx, ry, rx, kind = torch.rand(5, generator=generator).tolist()
        cy, cx, ry, rx = cy * h, cx * w, 0.5 + ry * h / 6, 0.5 + rx * w / 6
        if kind < 0.5:
            masks[i] = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1
        else:
            masks[i] = ((ys - cy).abs() <= ry) & ((xs - cx).abs() <= rx)
        masks[i, int(cy), int(cx)] = True
    return Detections.from_masks(masks, torch.randint(0, 2, (n,), generator=generator), NAMES)


def make_all() -> list[Inpainter]:
    return [
        BlurInpainter(device="cpu"),
        PixelateInpainter(noise=5.0, device="cpu"),
        SolidInpainter((255, 0, 128), device="cpu"),
        ScrambleInpainter(KEY, device="cpu"),
    ]


@dataclass
class Filled:
    """An inpainter's fills and fallbacks, and ``images``: the frames with the fills pasted at full opacity."""

    images: torch.Tensor
    fills: list[RegionFill]
    fallbacks: list[Fallback]


def run(
    inpainter: Inpainter, images: torch.Tensor, detections: list[Detections], frame_indices: list[int] | None = None
) -> Filled:
    frame_indices = list(range(len(detections))) if frame_indices is None else frame_indices
    out = inpainter(InpaintBatch(images, detections, frame_indices))
    return Filled(Compositor.compose(images, out.fills), out.fills, out.fallbacks)


def laplacian_variance(image: torch.Tensor, mask: torch.Tensor) -> float:
    """Variance of the 4-neighbour Laplacian of uint8 (3, H, W) ``image`` over the (H, W) ``mask``."""
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).expand(3, 1, 3, 3)
    lap = F.conv2d(image[None].float(), kernel, padding=1, groups=3)[0]
    return float(lap[:, mask].var())


# --- device --------------------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_config_error():
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        PixelateInpainter(device="cuda")


# --- behaviour shared by all inpainters -------------------------------------------------------------


@pytest.mark.parametrize("inpainter", make_all(), ids=lambda i: i.name)
def test_empty_detections_leave_frames_unchanged(inpainter):
    images = texture(torch.Generator().manual_seed(0), 2, 24, 32)
    out = run(inpainter, images, [Detections.empty(24, 32, NAMES)] * 2)
    assert out.fills == [] and out.fallbacks == []


@pytest.mark.parametrize("inpainter", make_all(), ids=lambda i: i.name)
def test_batches_of_frames_with_0_to_20_regions(inpainter):
    generator = torch.Generator().manual_seed(1)
    h, w = 48, 64
    images = texture(generator, 4, h, w)
    detections = [random_detections(generator, n, h, w) for n in (0, 1, 7, 20)]
    out = run(inpainter, images, detections)
    assert out.images.dtype == torch.uint8 and out.images.shape == images.shape
    assert out.fallbacks == []
    for b, det in enumerate(detections):
        union = det.union_mask()
        assert torch.equal(out.images[b][:, ~union], images[b][:, ~union]), (
            "pixels outside the regions changed"
        )
        if len(det):
            changed = (out.images[b][:, union] != images[b][:, union]).any(dim=0).float().mean()
            assert changed > 0.9, f"{inpainter.name}: only {changed:.0%} of masked pixels changed"


@pytest.mark.parametrize("inpainter", make_all()[:3], ids=lambda i: i.name)
def test_one_fill_per_region_on_its_mask_box(inpainter):
    """Blur, pixelate and solid return one fill per non-empty region, on the tight box of its fill mask, providing
    exactly the mask's pixels: work and memory follow the regions, not the frames."""
    generator = torch.Generator().manual_seed(15)
    h, w = 48, 64
    images = texture(generator, 3, h, w)
    detections = [random_detections(generator, n, h, w) for n in (2, 0, 5)]
    detections[2].masks[3] = False  # an empty mask gets no fill
    out = run(inpainter, images, detections)
    assert sorted((f.frame, f.region) for f in out.fills) == [(0, 0), (0, 1), (2, 0), (2, 1), (2, 2), (2, 4)]
    for fill in out.fills:
        mask = detections[fill.frame].masks[fill.region]
        x0, y0, x1, y1 = fill.window
        assert [x0, y0, x1, y1] == masks_to_boxes(mask[None]).long()[0].tolist()
        assert torch.equal(fill.mask, mask[y0:y1, x0:x1])
        assert fill.rgb.dtype == torch.uint8 and fill.rgb.shape == (3, y1 - y0, x1 - x0)


def test_scramble_returns_one_fill_per_frame_over_the_union():
    generator = torch.Generator().manual_seed(16)
    h, w = 40, 56
    images = texture(generator, 3, h, w)
    detections = [random_detections(generator, n, h, w) for n in (3, 0, 1)]
    inpainter = ScrambleInpainter(KEY, device="cpu")
    out = run(inpainter, images, detections, [7, 8, 9])
    assert [(f.frame, f.region) for f in out.fills] == [(0, -1), (2, -1)]
    for fill in out.fills:
        union = detections[fill.frame].union_mask()
        x0, y0, x1, y1 = fill.window
        assert [x0, y0, x1, y1] == masks_to_boxes(union[None]).long()[0].tolist()
        assert torch.equal(fill.mask, union[y0:y1, x0:x1])
        restored = unscramble(out.images[fill.frame].permute(1, 2, 0), union, video_key(KEY, inpainter.nonce),
                              7 + fill.frame)
        assert torch.equal(restored, images[fill.frame].permute(1, 2, 0))


def test_overlapping_fills_come_smallest_first_so_the_largest_wins():
    images = texture(torch.Generator().manual_seed(17), 1, 60, 60)
    # region 1 is the largest, regions 0 and 2 are the same size: ties keep the region order
    masks = box_masks([(20, 20, 30, 30), (5, 5, 50, 50), (40, 40, 50, 50)], 60, 60)
    for inpainter in (BlurInpainter(device="cpu"), PixelateInpainter(device="cpu")):
        out = run(inpainter, images, [Detections.from_masks(masks, [0, 0, 1], NAMES)])
        assert [f.region for f in out.fills] == [0, 2, 1]


@pytest.mark.parametrize("inpainter", make_all(), ids=lambda i: i.name)
def test_non_contiguous_frames_give_the_same_result(inpainter):
    generator = torch.Generator().manual_seed(13)
    images = texture(generator, 2, 24, 40)
    detections = [random_detections(generator, 3, 24, 40), random_detections(generator, 2, 24, 40)]
    channels_last = images.contiguous(memory_format=torch.channels_last)
    expected = run(inpainter, images, detections).images
    assert torch.equal(run(inpainter, channels_last, detections).images, expected)
    hwc_views = torch.stack([img.permute(1, 2, 0).contiguous() for img in images]).permute(0, 3, 1, 2)
    assert torch.equal(run(inpainter, hwc_views, detections).images, expected)


@pytest.mark.parametrize("inpainter", make_all(), ids=lambda i: i.name)
def test_geometry_comes_from_the_masks_not_the_boxes(inpainter):
    # A region whose box is degenerate (zero area) but whose mask is not must still be filled entirely.
    images = texture(torch.Generator().manual_seed(2), 1, 32, 32)
    masks = box_masks([(4, 4, 20, 24)], 32, 32)
    det = Detections(masks=masks, class_ids=[0], scores=[1.0], boxes_xyxy=torch.zeros((1, 4)), names=NAMES)
    out = run(inpainter, images, [det])
    assert (out.images[0][:, masks[0]] != images[0][:, masks[0]]).any(dim=0).float().mean() > 0.9
    assert torch.equal(out.images[0][:, ~masks[0]], images[0][:, ~masks[0]])


@pytest.mark.parametrize("inpainter", make_all(), ids=lambda i: i.name)
def test_masks_at_the_wrong_size_are_rejected(inpainter):
    images = texture(torch.Generator().manual_seed(3), 1, 32, 32)
    det = Detections.from_masks(box_masks([(1, 1, 5, 5)], 16, 16), [0], NAMES)
    with pytest.raises(ValueError, match="frame resolution"):
        run(inpainter, images, [det])


def test_regions_at_frame_borders_and_single_pixels_are_filled_without_fallback():
    generator = torch.Generator().manual_seed(4)
    images = texture(generator, 1, 20, 30)
    masks = box_masks([(0, 0, 1, 1), (29, 19, 30, 20), (0, 5, 30, 8), (10, 0, 12, 20), (3, 3, 4, 4)], 20, 30)
    det = Detections.from_masks(masks, [0] * 5, NAMES)
    for inpainter in make_all():
        out = run(inpainter, images, [det])
        assert out.fallbacks == []
        union = masks.any(dim=0)
        assert (out.images[0][:, union] != images[0][:, union]).any(dim=0).float().mean() > 0.9


# --- blur --------------------------------------------------------------------------------------------


def test_blur_removes_high_frequency_structure():
    generator = torch.Generator().manual_seed(5)
    images = texture(generator, 1, 128, 160)
    masks = box_masks([(20, 30, 80, 100), (100, 10, 130, 40)], 128, 160)
    out = run(BlurInpainter(device="cpu"), images, [Detections.from_masks(masks, [0, 0], NAMES)])
    for mask in masks:
        inner = F.max_pool2d((~mask).float()[None], 3, 1, 1)[0] == 0  # skip the Laplacian's 1 px edge
        before, after = laplacian_variance(images[0], inner), laplacian_variance(out.images[0], inner)
        assert after < 0.1 * before, f"Laplacian variance only fell from {before:.0f} to {after:.0f}"


def test_blur_sigma_scales_with_region_size_and_strength():
    # Sigma is proportional to the shorter side, so the same texture stays rougher in a small region.
    generator = torch.Generator().manual_seed(6)
    images = texture(generator, 1, 120, 200)
    small, large = box_masks([(10, 10, 30, 30), (60, 10, 180, 110)], 120, 200)
    for_small = Detections.from_masks(small[None], [0], NAMES)
    for_large = Detections.from_masks(large[None], [0], NAMES)
    inner_small, inner_large = box_masks([(13, 13, 27, 27), (63, 13, 177, 107)], 120, 200)
    blur = BlurInpainter(device="cpu")
    rough_small = laplacian_variance(run(blur, images, [for_small]).images[0], inner_small)
    rough_large = laplacian_variance(run(blur, images, [for_large]).images[0], inner_large)
    assert rough_large < rough_small
    weak = laplacian_variance(
        run(BlurInpainter(strength=0.1, device="cpu"), images, [for_large]).images[0], inner_large
    )
    assert weak > 10 * rough_large


def test_blur_uses_the_neighbourhood_and_ignores_pixels_outside_the_frame():
    # A flat grey frame with a white square far away: a corner region must stay grey (no black from outside
    # the frame, no white from far away).
    images = torch.full((1, 3, 100, 100), 90, dtype=torch.uint8)
    images[:, :, 80:, 80:] = 255
    masks = box_masks([(0, 0, 20, 20)], 100, 100)
    out = run(BlurInpainter(device="cpu"), images, [Detections.from_masks(masks, [0], NAMES)])
    assert (out.images[0][:, masks[0]].int() - 90).abs().max() <= 1


@pytest.mark.parametrize("strength", [0.0, 0.01, 11.0, "strong", True, math.nan])
def test_blur_rejects_bad_strength(strength):
    with pytest.raises(ConfigError, match="strength"):
        BlurInpainter(strength=strength)


class _BrokenBlur(BlurInpainter):
    """Produces NaN for region 1 of every frame, to exercise the fail-closed path."""

    def _values(self, images, regions):
        values = super()._values(images, regions)
        return [torch.full_like(v, math.nan) if i == 1 else v for v, i in zip(values, regions.index.tolist())]


def test_a_region_that_cannot_be_processed_is_filled_solid_and_reported():
    images = texture(torch.Generator().manual_seed(8), 2, 40, 40)
    masks = box_masks([(2, 2, 12, 12), (20, 20, 35, 30)], 40, 40)
    detections = [Detections.from_masks(masks, [0, 1], NAMES)] * 2
    out = run(_BrokenBlur(device="cpu"), images, detections, [10, 11])
    fallback = torch.tensor(FALLBACK_RGB, dtype=torch.uint8)[:, None]
    assert (out.images[:, :, masks[1]] == fallback).all()
    assert not (out.images[:, :, masks[0]] == fallback).all(dim=1).all()
    assert [(f.frame_index, f.region, f.class_name, f.used) for f in out.fallbacks] == [
        (10, 1, "car", "solid"),
        (11, 1, "car", "solid"),
    ]
    assert "non-finite" in out.fallbacks[0].reason


def test_overlapping_regions_are_filled_by_the_larger_one():
    images = texture(torch.Generator().manual_seed(9), 1, 60, 60)
    masks = box_masks([(20, 20, 30, 30), (5, 5, 50, 50)], 60, 60)  # the face inside the person
    both = run(BlurInpainter(device="cpu"), images, [Detections.from_masks(masks, [0, 0], NAMES)])
    larger = run(BlurInpainter(device="cpu"), images, [Detections.from_masks(masks[1:], [0], NAMES)])
    assert torch.equal(both.images, larger.images)


# --- pixelate ---------------------------------------------------------------------------------------


def test_pixelate_makes_square_blocks_anchored_to_the_box():
    images = texture(torch.Generator().manual_seed(10), 1, 80, 100)
    masks = box_masks([(10, 20, 90, 60)], 80, 100)  # 80 x 40: blocks of 10 px, 8 x 4 of them
    out = run(PixelateInpainter(blocks=8, device="cpu"), images, [Detections.from_masks(masks, [0], NAMES)])
    region = out.images[0, :, 20:60, 10:90].float()
    blocks = region.reshape(3, 4, 10, 8, 10)
    assert (blocks == blocks[:, :, :1, :, :1]).all(), "pixels of one block differ"
    expected = images[0, :, 20:60, 10:90].float().reshape(3, 4, 10, 8, 10).mean(dim=(2, 4))
    assert (blocks[:, :, 0, :, 0] - expected).abs().max() < 10  # roughly the block's mean
    assert len(torch.unique(blocks[:, :, 0, :, 0].reshape(3, -1), dim=1).T) == 32


def test_pixelate_noise_follows_the_track_id():
    flat = torch.full((3, 3, 64, 64), 128, dtype=torch.uint8)
    pixelate = PixelateInpainter(blocks=4, noise=20.0, seed=3, device="cpu")

    def noise_of(x: int, y: int, track_id: int | None) -> torch.Tensor:
        masks = box_masks([(x, y, x + 16, y + 16)], 64, 64)
        det = Detections.from_masks(masks, [0], NAMES, track_ids=None if track_id is None else [track_id])
        out = run(pixelate, flat[:1], [det])
        return out.images[0, :, y : y + 16, x : x + 16].int() - 128

    same_object = noise_of(0, 0, 5)
    assert same_object.abs().float().mean() > 8  # N(0, 20) per block: mean |noise| about 16
    assert torch.equal(same_object, noise_of(40, 30, 5)), "a tracked object's noise changed between frames"
    assert not torch.equal(same_object, noise_of(0, 0, 6))
    assert torch.equal(noise_of(10, 10, None), noise_of(30, 20, 0)), "untracked region 0 should use id 0"
    other_seed = PixelateInpainter(blocks=4, noise=20.0, seed=4).block_noise(torch.tensor([5]))
    assert not torch.equal(other_seed, pixelate.block_noise(torch.tensor([5])))


def test_pixelate_without_noise_keeps_a_flat_colour():
    flat = torch.full((1, 3, 32, 32), 77, dtype=torch.uint8)
    det = Detections.from_masks(box_masks([(0, 0, 13, 7)], 32, 32), [0], NAMES)
    assert torch.equal(run(PixelateInpainter(device="cpu"), flat, [det]).images, flat)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"blocks": 0},
        {"blocks": 257},
        {"blocks": 2.5},
        {"noise": -1.0},
        {"noise": 256.0},
        {"seed": -1},
        {"seed": "7"},
    ],
)
def test_pixelate_rejects_bad_parameters(kwargs):
    ((name, value),) = kwargs.items()
    with pytest.raises(ConfigError, match=f"{name}={value!r}"):
        PixelateInpainter(**kwargs)


# --- solid ------------------------------------------------------------------------------------------


def test_solid_fills_exactly_the_masks_with_the_colour():
    images = texture(torch.Generator().manual_seed(11), 1, 30, 30)
    masks = box_masks([(3, 4, 10, 20), (8, 8, 25, 12)], 30, 30)
    out = run(
        SolidInpainter([10, 200, 30], device="cpu"), images, [Detections.from_masks(masks, [0, 1], NAMES)]
    )
    union = masks.any(dim=0)
    assert (out.images[0][:, union] == torch.tensor([10, 200, 30], dtype=torch.uint8)[:, None]).all()
    assert torch.equal(out.images[0][:, ~union], images[0][:, ~union])


@pytest.mark.parametrize("color", [(1, 2), (0, 0, 256), (0, -1, 0), "red", (0.5, 0, 0), (True, 0, 0), 7])
def test_solid_rejects_bad_colours(color):
    with pytest.raises(ConfigError, match="color"):
        SolidInpainter(color)


# --- scramble ---------------------------------------------------------------------------------------


def test_scramble_inpainter_round_trips_through_the_compositor():
    generator = torch.Generator().manual_seed(12)
    h, w = 48, 64
    images = texture(generator, 3, h, w)
    detections = [random_detections(generator, n, h, w) for n in (3, 0, 6)]
    inpainter = ScrambleInpainter(KEY, device="cpu")
    assert inpainter.feather is False and KEY not in repr(inpainter)
    comp = Compositor()
    prepared = [comp.prepare(det, feather=inpainter.feather) for det in detections]
    fills = inpainter(InpaintBatch(images, [p[0] for p in prepared], [100, 101, 102])).fills
    alphas = torch.stack([p[1] for p in prepared])
    assert set(alphas.unique().tolist()) <= {0.0, 1.0}
    output = comp.compose(images, fills, alphas)
    for b in range(3):
        frame = output[b].permute(1, 2, 0).numpy()
        restored = unscramble(frame, (alphas[b] > 0).numpy(), video_key(KEY, inpainter.nonce), 100 + b)
        assert np.array_equal(restored, images[b].permute(1, 2, 0).numpy())


# --- make_inpainter ---------------------------------------------------------------------------------


def test_make_inpainter_builds_each_registered_inpainter():
    assert set(INPAINTERS) == {"blur", "pixelate", "solid", "scramble", "diffusion"}
    built = [
        make_inpainter("blur", strength=2.0, device="cpu"),
        make_inpainter("pixelate", blocks=4),
        make_inpainter("solid", color=[1, 2, 3]),
        make_inpainter("scramble", key=KEY),
    ]
    assert [type(i) for i in built] == [BlurInpainter, PixelateInpainter, SolidInpainter, ScrambleInpainter]
    assert [i.name for i in built] == ["blur", "pixelate", "solid", "scramble"]
    assert built[0].strength == 2.0 and built[1].blocks == 4 and built[2].color == (1, 2, 3)


def test_make_inpainter_rejects_unknown_names_and_options():
    with pytest.raises(ConfigError, match="unknown inpainter 'gauss'; choose one of: blur, diffusion, pixelate"):
        make_inpainter("gauss")
    with pytest.raises(ConfigError, match="'blur'.*options are: strength, device"):
        make_inpainter("blur", blocks=4)
    with pytest.raises(ConfigError, match="'scramble'.*key"):
        make_inpainter("scramble")
    with pytest.raises(ConfigError, match="blocks=0"):
        make_inpainter("pixelate", blocks=0)


# --- CUDA (run with: pytest -m gpu) ------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    "name, kwargs", [("blur", {}), ("pixelate", {"noise": 9.0}), ("solid", {}), ("scramble", {"key": KEY})]
)
def test_cuda_matches_cpu(name, kwargs):
    generator = torch.Generator().manual_seed(14)
    images = texture(generator, 3, 72, 96)
    detections = [random_detections(generator, n, 72, 96) for n in (0, 4, 12)]
    expected = run(make_inpainter(name, device="cpu", **kwargs), images, detections).images
    on_cuda = run(
        make_inpainter(name, device="cuda", **kwargs), images.cuda(), [d.to("cuda") for d in detections]
    )
    assert on_cuda.images.device.type == "cuda" and all(f.rgb.is_cuda and f.mask.is_cuda for f in on_cuda.fills)
    tolerance = 1 if name in ("blur", "pixelate") else 0  # float rounding may differ by one level
    assert (on_cuda.images.cpu().int() - expected.int()).abs().max() <= tolerance


def test_a_steady_box_keeps_the_pixelate_grid_steady_while_the_mask_jitters():
    """With tracking, boxes are smoothed; the mosaic is anchored to them, so mask jitter does not move it."""
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8, generator=g)
    outputs = []
    for shift in (0, 1, 2):
        mask = torch.zeros(1, 64, 64, dtype=torch.bool)
        mask[0, 10 + shift : 50, 12 + shift : 52] = True  # jittering top-left edge
        dets = Detections(masks=mask, class_ids=[0], scores=[1.0], boxes_xyxy=[[8, 8, 54, 54]], names={0: "person"},
                          track_ids=[7])
        outputs.append(run(PixelateInpainter(blocks=6, device="cpu"), image, [dets], [shift]).images)
    interior = (slice(None), slice(None), slice(14, 50), slice(14, 52))
    assert torch.equal(outputs[0][interior], outputs[1][interior])
    assert torch.equal(outputs[0][interior], outputs[2][interior])


def test_a_per_video_nonce_separates_videos_scrambled_with_one_key():
    from inpaint_anon.scramble import new_nonce, unscramble, video_key

    g = torch.Generator().manual_seed(3)
    image = torch.randint(0, 256, (1, 3, 24, 32), dtype=torch.uint8, generator=g)
    mask = torch.zeros(1, 24, 32, dtype=torch.bool)
    mask[0, 4:20, 6:26] = True
    dets = Detections.from_masks(mask, [0], {0: "person"})
    first, second = new_nonce(), new_nonce()
    a = run(ScrambleInpainter(KEY, nonce=first, device="cpu"), image, [dets], [5]).images[0]
    b = run(ScrambleInpainter(KEY, nonce=second, device="cpu"), image, [dets], [5]).images[0]
    assert not torch.equal(a[:, mask[0]], b[:, mask[0]]), "same key, different videos: different keystreams"
    restored = unscramble(a.permute(1, 2, 0), mask[0], video_key(KEY, first), 5)
    assert torch.equal(restored, image[0].permute(1, 2, 0))
    with pytest.raises(ConfigError, match="nonce"):
        ScrambleInpainter(KEY, nonce="zz", device="cpu")


def _gathered(crops, rois, regions, bilinear):
    """The per-pixel gather that ``fast._sample_windows`` replaced (reference): each masked pixel's value."""
    _, c, h, w = crops.shape
    values = []
    for k, (x0, y0, _, _) in enumerate(regions.tight.tolist()):
        y, x = torch.nonzero(regions.masks[k], as_tuple=True)
        y, x = y + y0, x + x0
        roi = rois[k]
        u = (x + 0.5 - roi[0]) / (roi[2] - roi[0]) * w
        v = (y + 0.5 - roi[1]) / (roi[3] - roi[1]) * h
        table = crops[k].permute(1, 2, 0).reshape(h * w, c)
        if not bilinear:
            values.append(table[v.floor().long().clamp_(0, h - 1) * w + u.floor().long().clamp_(0, w - 1)])
            continue
        u, v = u - 0.5, v - 0.5
        u0, v0 = u.floor(), v.floor()
        fu, fv = (u - u0)[:, None], (v - v0)[:, None]
        cols = (u0.long().clamp(0, w - 1), (u0.long() + 1).clamp(0, w - 1))
        rows = (v0.long().clamp(0, h - 1) * w, (v0.long() + 1).clamp(0, h - 1) * w)
        top = table[rows[0] + cols[0]] * (1 - fu) + table[rows[0] + cols[1]] * fu
        bottom = table[rows[1] + cols[0]] * (1 - fu) + table[rows[1] + cols[1]] * fu
        values.append(top * (1 - fv) + bottom * fv)
    return values


@pytest.mark.parametrize("bilinear", [True, False])
def test_window_sampling_equals_the_per_pixel_gather(bilinear):
    """Blur and pixelate read their crops back on each region's window, separably (columns, then rows): the
    same values, bit for bit, as the per-pixel bilinear (or nearest) gather it replaced, at every masked pixel,
    for regions inside the frame, cut by its edges, and of very different sizes."""
    generator = torch.Generator().manual_seed(11)
    images = texture(generator, 2, 90, 130)
    masks = ellipse_masks(torch.tensor([[-20.0, 10, 40, 80], [30, 20, 125, 89], [60, 40, 70, 47]]), None, 90, 130)
    detections = Detections.from_masks(masks, [0, 0, 0], NAMES)
    batch = InpaintBatch(images=images, detections=[detections, detections[1:]], frame_indices=[0, 1])
    regions = _collect_regions(batch, torch.device("cpu"))
    crops = torch.rand((len(regions), 3, 17, 23), generator=generator) * 255
    rois = regions.boxes + torch.tensor([-7.5, -3.25, 6.0, 9.75])
    windows = _sample_windows(crops, rois, regions, bilinear=bilinear)
    for window, mask, reference in zip(windows, regions.masks, _gathered(crops, rois, regions, bilinear), strict=True):
        assert tuple(window.shape[1:]) == tuple(mask.shape)
        assert torch.equal(window[:, mask].T, reference)

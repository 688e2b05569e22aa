"""Cost that follows the masked area (issue 11, part 1): the fast methods, the compositor and the pipeline's
prepare/composite steps touch windows around the regions only, and give the full-frame formulas' results.

Equality: each windowed computation is compared with the full-frame formula it replaced, written out here
(blur/pixelate canonical crops from a whole-frame float image, scramble of the whole frame, the frame alpha as
one dense tensor), on the generated clips' frames and on random regions that touch the frame's edges.
Cost: counted, not timed: every tensor torch allocates is recorded (a dispatch mode) and its elements counted.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from evaluation.bench.roi import full_frame_canonical_crops
from inpaint_anon.composite import Compositor, WindowAlpha, _min_plus_pass, _squared_distance_cpu
from inpaint_anon.detect.base import Detector
from inpaint_anon.inpaint import BlurInpainter, InpaintBatch, PixelateInpainter, ScrambleInpainter, SolidInpainter, fast
from inpaint_anon.pipeline import AnonymizePipeline
from inpaint_anon.scramble import scramble_chw, video_key
from inpaint_anon.types import Detections, Frame
from tests.clips import frame_image, object_masks

KEY = "0123456789abcdef" * 4
NAMES = {0: "person", 1: "car"}


def clip_batch(size=(160, 96), indices=(0, 7, 13)) -> tuple[torch.Tensor, list[Detections]]:
    """The generated clip's exact frames and object masks (as in tests/clips.py), uint8 (B, 3, H, W)."""
    images, dets = [], []
    for index in indices:
        images.append(torch.from_numpy(frame_image(index, size, 16)).permute(2, 0, 1))
        masks = object_masks(index, size, 16)
        dets.append(Detections.from_masks(torch.from_numpy(np.stack([masks["person"], masks["car"]])),
                                          torch.tensor([0, 1]), NAMES))
    return torch.stack(images), dets


def edge_batch(seed: int, h: int = 72, w: int = 104) -> tuple[torch.Tensor, list[Detections]]:
    """Random texture with random rectangles, several touching or crossing the frame's edges."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (2, 3, h, w), dtype=torch.uint8, generator=gen)
    dets = []
    for _ in range(2):
        masks = torch.zeros((4, h, w), dtype=torch.bool)
        for i in range(4):
            x0, y0 = (int(v) for v in torch.randint(-10, w - 4, (1,), generator=gen).tolist() +
                      torch.randint(-10, h - 4, (1,), generator=gen).tolist())
            bw, bh = (int(v) for v in torch.randint(2, 40, (2,), generator=gen).tolist())
            masks[i, max(y0, 0):max(y0 + bh, 1), max(x0, 0):max(x0 + bw, 1)] = True
        dets.append(Detections.from_masks(masks, torch.tensor([0, 1, 0, 1]), NAMES))
    return images, dets


def run_fast(inpainter, images, dets, compositor=None):
    """prepare_windows -> inpainter -> compose with the window alphas; (output, fills, alphas)."""
    compositor = compositor or Compositor()
    prepared = [compositor.prepare_windows(d, feather=inpainter.feather) for d in dets]
    batch = InpaintBatch(images=images, detections=[p[0] for p in prepared], frame_indices=list(range(len(dets))))
    output = inpainter(batch)
    alphas = [p[1] for p in prepared]
    return Compositor.compose(images, output.fills, alphas), output.fills, alphas


@pytest.mark.parametrize("make", [lambda: BlurInpainter(device="cpu"), lambda: BlurInpainter(3.0, device="cpu"),
                                  lambda: PixelateInpainter(blocks=6, noise=4.0, device="cpu")],
                         ids=["blur", "blur-strong", "pixelate"])
@pytest.mark.parametrize("data", ["clip", "edges0", "edges1", "edges2"])
def test_windowed_crops_equal_the_full_frame_formula(monkeypatch, make, data) -> None:
    images, dets = clip_batch() if data == "clip" else edge_batch(int(data[-1]))
    windowed, _, _ = run_fast(make(), images, dets)
    monkeypatch.setattr(fast, "_canonical_crops", full_frame_canonical_crops)
    reference, _, _ = run_fast(make(), images, dets)
    diff = (windowed.to(torch.int16) - reference.to(torch.int16)).abs()
    # Within rounding: the window origin shift is exact, but roi_align's float32 sample positions are rounded
    # at a smaller magnitude, so a value lying on .5 may round the other way.
    assert int(diff.max()) <= 1
    assert int((diff > 0).sum()) <= diff.numel() // 1000
    assert int((windowed != images).sum()) > 0  # the regions were filled at all


@pytest.mark.parametrize("data", ["clip", "edges0", "edges1"])
def test_scramble_on_the_union_box_equals_the_whole_frame_scramble(data) -> None:
    images, dets = clip_batch() if data == "clip" else edge_batch(int(data[-1]))
    inpainter = ScrambleInpainter(KEY, nonce="00" * 8, device="cpu")
    out, fills, _ = run_fast(inpainter, images, dets)
    compositor = Compositor()
    for fill in fills:
        union = compositor.fill_regions(dets[fill.frame].masks, dets[fill.frame].boxes_xyxy, feather=False).any(0)
        whole = scramble_chw(images[fill.frame], union, video_key(KEY, "00" * 8), fill.frame, True)
        x0, y0, x1, y1 = fill.window
        assert torch.equal(fill.rgb[:, fill.mask], whole[:, y0:y1, x0:x1][:, fill.mask])
        assert torch.equal(out[fill.frame][:, union], whole[:, union])  # hard paste: exactly the scramble
        assert torch.equal(out[fill.frame][:, ~union], images[fill.frame][:, ~union])


@pytest.mark.parametrize("data", ["clip", "edges0", "edges1", "edges2"])
@pytest.mark.parametrize("feather", [True, False])
def test_window_alpha_equals_the_dense_alpha_and_is_one_on_every_mask_pixel(data, feather) -> None:
    images, dets = clip_batch() if data == "clip" else edge_batch(int(data[-1]))
    compositor = Compositor(dilate=3, dilate_rel=0.05, feather=5)
    for d in dets:
        fill, alpha = compositor.fill_and_window_alpha(d.masks, d.boxes_xyxy, feather)
        # The dense alpha the old code scattered: the maximum of every region's tile, 0 elsewhere.
        dense = torch.zeros((alpha.height, alpha.width))
        for (x0, y0, x1, y1), tile in zip(alpha.windows, alpha.tiles, strict=True):
            dense[y0:y1, x0:x1] = torch.maximum(dense[y0:y1, x0:x1], tile)
        assert torch.equal(alpha.dense(), dense)
        assert torch.equal(compositor.alpha(d.masks, d.boxes_xyxy, feather), dense)
        assert torch.equal(fill.any(0), dense > 0)
        assert bool((dense[d.masks.any(0)] == 1.0).all())  # fail closed: no mask pixel shows through
        assert bool((dense[fill.any(0)] > 0).all())
        assert torch.equal(alpha.crop((3, 2, 50, 40)), dense[2:40, 3:50])
    # compose gives the same bytes with dense and window alphas
    inpainter = BlurInpainter(device="cpu")
    out, fills, alphas = run_fast(inpainter, images, dets, compositor)
    dense_out = Compositor.compose(images, fills, torch.stack([a.dense() for a in alphas]))
    assert torch.equal(out, dense_out)


def test_compose_rejects_window_alphas_of_another_frame_size() -> None:
    alpha = WindowAlpha(10, 12, (), (), torch.device("cpu"))
    with pytest.raises(ValueError, match="WindowAlpha of 8x12"):
        Compositor.compose(torch.zeros((1, 3, 8, 12), dtype=torch.uint8), [], [alpha])
    with pytest.raises(ValueError, match="WindowAlpha"):
        Compositor.compose(torch.zeros((2, 3, 10, 12), dtype=torch.uint8), [], [alpha])


class Allocations(TorchDispatchMode):
    """Counts the elements of every tensor torch allocates (outputs that alias no input), per dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: dict[torch.dtype, int] = {}
        self.largest: dict[torch.dtype, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        aliasing = any(r.alias_info is not None for r in func._schema.returns)
        if not aliasing:
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    self.elements[t.dtype] = self.elements.get(t.dtype, 0) + t.numel()
                    self.largest[t.dtype] = max(self.largest.get(t.dtype, 0), t.numel())
        return out


def two_faces(h: int = 720, w: int = 1280) -> tuple[torch.Tensor, Detections]:
    masks = torch.zeros((2, h, w), dtype=torch.bool)
    masks[0, 300:320, 500:520] = True
    masks[1, 310:330, 560:580] = True
    images = torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return images, Detections.from_masks(masks, torch.tensor([0, 0]), NAMES)


def count_fast_path(inpainter, h: int, w: int) -> tuple[Allocations, torch.Tensor, torch.Tensor, WindowAlpha]:
    """Allocations of prepare_windows -> inpainter -> compose -> guard on two 20 x 20 faces in an h x w frame."""
    images, dets = two_faces(h, w)
    out = images.clone()
    compositor = Compositor()
    with Allocations() as counted:
        fill_regions, alpha = compositor.prepare_windows(dets, feather=inpainter.feather)
        batch = InpaintBatch(images=images, detections=[fill_regions], frame_indices=[0])
        fills = inpainter(batch).fills
        compositor.compose(images, fills, [alpha], out=out)
        weak = compositor.unchanged(images, out, [dets])
    assert weak == []
    return counted, images, out, alpha


@pytest.mark.parametrize("make", [lambda: BlurInpainter(device="cpu"), lambda: PixelateInpainter(device="cpu"),
                                  lambda: SolidInpainter(device="cpu"),
                                  lambda: ScrambleInpainter(KEY, nonce="00" * 8, device="cpu")],
                         ids=["blur", "pixelate", "solid", "scramble"])
def test_two_small_faces_cost_their_area_not_the_frame(make) -> None:
    counted, images, out, alpha = count_fast_path(make(), 720, 1280)
    frame = 720 * 1280
    assert int((out != images).any(0).sum()) >= 2 * 20 * 20  # both faces were obscured
    # Float, integer and uint8 work: windows around the two faces, never a frame-size tensor...
    numeric = (torch.float32, torch.uint8, torch.int16, torch.int64)
    for dtype in numeric:
        assert counted.largest.get(dtype, 0) < frame // 20, dtype
    assert alpha.pixels < frame // 100
    # ... and the same work at 1080p: it follows the regions, not the frame.
    bigger, _, _, _ = count_fast_path(make(), 1080, 1920)
    dense = (torch.float32, torch.int16)
    assert {d: bigger.elements.get(d, 0) for d in dense} == {d: counted.elements.get(d, 0) for d in dense}
    # uint8 and int64: only the tight boxes' per-row and per-column scans and indices (masks_to_boxes) grow,
    # with H + W, not H * W.
    for dtype in (torch.uint8, torch.int64):
        grown = bigger.elements[dtype] - counted.elements[dtype]
        assert 0 <= grown <= 32 * ((1080 - 720) + (1920 - 1280)), dtype
    # bool: the fill regions are (N, H, W) frame-size masks (the Detections contract) and the tight boxes'
    # row/column scans; nothing larger.
    assert counted.largest[torch.bool] <= 2 * frame


class ListedDetector(Detector):
    """Gives fixed detections per frame index (an empty Detections for frames not listed)."""

    names = NAMES
    batch_size = 2

    def __init__(self, by_index: dict[int, Detections], h: int, w: int) -> None:
        self.by_index, self.h, self.w = by_index, h, w

    def __call__(self, frames):
        return [self.by_index.get(f.index, Detections.empty(self.h, self.w, NAMES)) for f in frames]


def test_pipeline_passes_frames_without_regions_through_and_batches_only_frames_with_regions() -> None:
    images, dets = clip_batch(indices=(3,))
    h, w = images.shape[2:]
    rgb = [np.ascontiguousarray(frame_image(i, (w, h), 16)) for i in range(4)]
    frames = [Frame(i, i, rgb[i]) for i in range(4)]
    empty = Detections.empty(h, w, NAMES)
    pipeline = AnonymizePipeline(ListedDetector({}, h, w), BlurInpainter(device="cpu"), progress=False)
    # A batch without any region: no batch, no compose; the very same arrays come out.
    work = pipeline._prepare([(f, empty) for f in frames], timings=None)
    assert work.batch is None and work.done
    out = pipeline._composite(work, [])
    assert all(o.rgb is f.rgb for o, f in zip(out, frames))
    # A mixed batch: only frame 2 goes to the inpainter; the others are passed on untouched.
    pairs = [(frames[0], empty), (frames[1], empty), (frames[2], dets[0]), (frames[3], empty)]
    work = pipeline._prepare(pairs, timings=None)
    assert work.members == [2] and tuple(work.batch.images.shape) == (1, 3, h, w)
    assert work.batch.frame_indices == [2]
    pipeline._run_step(pipeline.inpainter.stages()[-1], True, work, [])
    out = pipeline._composite(work, [])
    assert [o.index for o in out] == [0, 1, 2, 3]
    assert all(out[j].rgb is frames[j].rgb for j in (0, 1, 3))
    assert np.array_equal(frames[2].rgb, frame_image(2, (w, h), 16))  # the decoded frame is not written into
    # Frame 2 equals the old full-frame path: dense alpha, a copy of the frame, the same fills.
    fill_regions, alpha = Compositor().prepare(dets[0])
    batch = InpaintBatch(images=torch.from_numpy(rgb[2].copy()).permute(2, 0, 1)[None], detections=[fill_regions],
                         frame_indices=[2])
    reference = Compositor.compose(batch.images, BlurInpainter(device="cpu")(batch).fills, alpha[None])
    assert np.array_equal(out[2].rgb, reference[0].permute(1, 2, 0).numpy())
    assert out[2].rgb.flags.c_contiguous


def test_pipeline_guard_fallback_reads_the_original_frames(monkeypatch) -> None:
    """The guard's blur fallback is computed from the decoded frames, not from the pasted copy."""
    images, dets = clip_batch(indices=(5,))
    h, w = images.shape[2:]
    frame = Frame(5, 5, np.ascontiguousarray(frame_image(5, (w, h), 16)))

    class Identity(SolidInpainter):
        name = "identity"

        def __call__(self, batch):  # returns every region as it was: the guard must obscure it
            out = super().__call__(batch)
            for fill in out.fills:
                x0, y0, x1, y1 = fill.window
                fill.rgb = batch.images[fill.frame, :, y0:y1, x0:x1].clone()
            return out

    pipeline = AnonymizePipeline(ListedDetector({}, h, w), Identity(device="cpu"), progress=False)
    work = pipeline._prepare([(frame, dets[0])], timings=None)
    pipeline._run_step(pipeline.inpainter.stages()[-1], True, work, [])
    events: list = []
    (out,) = pipeline._composite(work, events)
    assert [e["used"] for e in events] == ["blur", "blur"]
    # Reference: the blur fallback pasted over the original frame with the same alphas.
    fill_regions, alpha = Compositor().prepare(dets[0])
    batch = InpaintBatch(images=images, detections=[fill_regions], frame_indices=[5])
    reference = Compositor.compose(images, BlurInpainter(device="cpu")(batch).fills, alpha[None])
    assert np.array_equal(out.rgb, reference[0].permute(1, 2, 0).numpy())


def test_cpu_distance_transform_equals_the_min_plus_passes() -> None:
    """The CPU path of the compositor's distance (OpenCV's exact transform) gives the same integers as the
    separable min-plus passes that other devices run, wherever those are exact (up to ``reach``), and more than
    ``reach ** 2`` elsewhere; a window without a mask pixel is inf."""
    generator = torch.Generator().manual_seed(0)
    for trial in range(20):
        h, w = torch.randint(5, 90, (2,), generator=generator).tolist()
        masks = torch.rand((3, h, w), generator=generator) > (0.98 if trial % 2 else 0.6)
        masks[:, h // 2, w // 3] = True
        reach = int(torch.randint(1, 40, (1,), generator=generator))
        reference = torch.where(masks, 0.0, math.inf)
        for dim in (2, 1):
            reference = _min_plus_pass(reference, reach, dim)
        fast = _squared_distance_cpu(masks)
        exact = reference <= reach * reach
        assert torch.equal(fast[exact], reference[exact]) and bool((fast[~exact] > reach * reach).all())
        assert torch.equal(fast, fast.round())  # integers: squared distances between pixel centres
    assert _squared_distance_cpu(torch.zeros((1, 4, 5), dtype=torch.bool)).isinf().all()
    line = torch.zeros((1, 1, 9), dtype=torch.bool)
    line[0, 0, 2] = True
    assert _squared_distance_cpu(line)[0, 0].tolist() == [4, 1, 0, 1, 4, 9, 16, 25, 36]

"""LatentInpainter on whole frames: crop, batch, seed, paste back, fail closed. Tiny models, 2 steps."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel

from inpaint_anon.device import resolve_dtype
from inpaint_anon.errors import ConfigError
from inpaint_anon.inpaint.base import InpaintBatch, Inpainter, InpaintOutput
from inpaint_anon.inpaint.diffusion import CropWindow, LatentInpainter, region_seed
from inpaint_anon.inpaint.tiny import tiny_components
from inpaint_anon.types import Detections, PromptEmbeds, SDComponents

H, W = 48, 64
NAMES = {0: "person", 2: "car"}
BOXES = {"person": (6, 4, 20, 30), "car": (30, 20, 58, 40)}  # x0, y0, x1, y1


@pytest.fixture(scope="module")
def components() -> SDComponents:
    return tiny_components(unet_in_channels=9)


@pytest.fixture(scope="module")
def prompt_embeds() -> PromptEmbeds:
    g = torch.Generator().manual_seed(1)
    person, car, uncond, default = torch.randn(4, 77, 32, generator=g)
    return PromptEmbeds(cond={"person": person, "car": car}, uncond=uncond, default=default)


def make_inpainter(components: SDComponents, prompt_embeds: PromptEmbeds, **kwargs) -> LatentInpainter:
    settings = {"steps": 2, "guidance_scale": 6.0, "resolution": 32, "device": "cpu"} | kwargs
    return LatentInpainter(components, prompt_embeds, **settings)


def make_frame(seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (3, H, W), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def make_detections(classes: list[str], track_ids: list[int] | None = None) -> Detections:
    masks = torch.zeros(len(classes), H, W, dtype=torch.bool)
    for i, name in enumerate(classes):
        x0, y0, x1, y1 = BOXES[name]
        masks[i, y0:y1, x0:x1] = True
        masks[i, y0, x0] = False  # not a plain rectangle
    ids = {name: cid for cid, name in NAMES.items()}
    return Detections.from_masks(masks, [ids[c] for c in classes], NAMES, track_ids=track_ids)


def make_batch(n_frames: int = 2, track_ids: bool = False, first_frame: int = 0) -> InpaintBatch:
    dets = [make_detections(["person", "car"], [10, 11] if track_ids else None) for _ in range(n_frames)]
    images = torch.stack([make_frame(i) for i in range(n_frames)])
    return InpaintBatch(images, dets, list(range(first_frame, first_frame + n_frames)))


def fill_masks(batch: InpaintBatch) -> torch.Tensor:
    """bool (B, H, W): the union of each frame's fill masks."""
    return torch.stack([d.union_mask() for d in batch.detections])


class GrayFill(Inpainter):
    """Test fallback: paints every region mid-gray."""

    name = "gray"

    def __call__(self, batch: InpaintBatch) -> InpaintOutput:
        images = batch.images.clone()
        for b, dets in enumerate(batch.detections):
            images[b][:, dets.union_mask()] = 128
        return InpaintOutput(images=images)


class Broken(Inpainter):
    name = "broken"

    def __call__(self, batch: InpaintBatch) -> InpaintOutput:
        raise RuntimeError("broken fallback")


# ------------------------------------------------------------------------------------------- filling


def test_fills_every_mask_and_leaves_every_other_pixel(components, prompt_embeds):
    batch = make_batch()
    inpainter = make_inpainter(components, prompt_embeds)
    out = inpainter(batch)
    assert out.images.dtype == torch.uint8 and out.images.shape == batch.images.shape
    assert out.fallbacks == []
    inside = fill_masks(batch)
    changed = (out.images != batch.images).any(dim=1)
    assert torch.equal(out.images.permute(0, 2, 3, 1)[~inside], batch.images.permute(0, 2, 3, 1)[~inside])
    for b, dets in enumerate(batch.detections):
        for mask in dets.masks:
            assert changed[b][mask].float().mean() > 0.95
    assert {"crop", "vae_encode", "unet", "vae_decode", "paste"} <= set(inpainter.timings)
    assert all(seconds >= 0 for seconds in inpainter.timings.values())


def test_no_regions_returns_frames_unchanged(components, prompt_embeds):
    images = torch.stack([make_frame(0)])
    batch = InpaintBatch(images, [Detections.empty(H, W, NAMES)], [0])
    out = make_inpainter(components, prompt_embeds)(batch)
    assert torch.equal(out.images, images) and out.fallbacks == []


def test_tiny_region_is_filled_whole(components, prompt_embeds):
    """A 1-pixel-wide mask still covers whole latent cells, so none of its pixels keeps the original."""
    masks = torch.zeros(1, H, W, dtype=torch.bool)
    masks[0, 10:30, 33] = True
    batch = InpaintBatch(make_frame(3)[None], [Detections.from_masks(masks, [0], NAMES)], [0])
    out = make_inpainter(components, prompt_embeds)(batch)
    changed = (out.images != batch.images).any(dim=1)[0]
    assert changed[masks[0]].float().mean() > 0.9
    assert not changed[~masks[0]].any()


def test_four_and_nine_channel_unets_both_fill(prompt_embeds):
    batch = make_batch(n_frames=1)
    for channels in (4, 9):
        out = make_inpainter(tiny_components(unet_in_channels=channels), prompt_embeds)(batch)
        changed = (out.images != batch.images).any(dim=1)
        assert changed[fill_masks(batch)].float().mean() > 0.95
        assert not changed[~fill_masks(batch)].any()


@pytest.mark.parametrize(
    "scheduler",
    [
        "DPMSolverMultistepScheduler",
        "EulerDiscreteScheduler",
        "DDIMScheduler",
        "LCMScheduler",
        "PNDMScheduler",
    ],
)
def test_every_scheduler_runs_two_steps(components, prompt_embeds, scheduler):
    batch = make_batch(n_frames=1)
    inpainter = make_inpainter(components, prompt_embeds, scheduler=scheduler)
    assert type(inpainter.scheduler).__name__ == scheduler
    out = inpainter(batch)
    assert out.fallbacks == []
    assert (out.images != batch.images).any(dim=1)[fill_masks(batch)].float().mean() > 0.95


# ------------------------------------------------------------------------------------- batch and seeds


def test_batching_gives_the_same_pixels_as_one_region_at_a_time(components, prompt_embeds):
    batch = make_batch(n_frames=2)
    together = make_inpainter(components, prompt_embeds, max_batch=8)(batch).images
    one_by_one = make_inpainter(components, prompt_embeds, max_batch=1)(batch).images
    assert (together.int() - one_by_one.int()).abs().max() <= 1


def test_inpaint_crops_batched_equals_single_in_float(components, prompt_embeds):
    inpainter = make_inpainter(components, prompt_embeds)
    g = torch.Generator().manual_seed(5)
    images = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    masks = (torch.rand(3, 1, 32, 32, generator=g) > 0.5).float()
    cond = torch.stack([prompt_embeds.cond["person"], prompt_embeds.cond["car"], prompt_embeds.default])
    seeds = [3, 1, 4]
    together = inpainter.inpaint_crops(images, masks, cond, [torch.Generator().manual_seed(s) for s in seeds])
    for i, s in enumerate(seeds):
        single = inpainter.inpaint_crops(
            images[i : i + 1], masks[i : i + 1], cond[i : i + 1], [torch.Generator().manual_seed(s)]
        )
        assert (single[0] - together[i]).abs().max() <= 1e-4
    assert together.dtype == torch.float32 and together.min() >= 0 and together.max() <= 1


def test_same_seed_same_pixels_other_seed_other_pixels(components, prompt_embeds):
    batch = make_batch(n_frames=1)
    first = make_inpainter(components, prompt_embeds, seed=0)(batch).images
    again = make_inpainter(components, prompt_embeds, seed=0)(batch).images
    other = make_inpainter(components, prompt_embeds, seed=1)(batch).images
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_a_track_keeps_its_noise_across_frames(components, prompt_embeds):
    """Same track id, identical crop in two frames -> identical fill; without ids, frames differ."""
    frame = make_frame(0)
    dets = make_detections(["person"], track_ids=[42])
    inpainter = make_inpainter(components, prompt_embeds)
    tracked = inpainter(InpaintBatch(torch.stack([frame, frame]), [dets, dets], [3, 9])).images
    assert torch.equal(tracked[0], tracked[1])
    later = inpainter(InpaintBatch(frame[None], [dets], [100])).images
    assert torch.equal(later[0], tracked[0])

    untracked = make_detections(["person"])
    per_frame = inpainter(InpaintBatch(torch.stack([frame, frame]), [untracked, untracked], [3, 9])).images
    assert not torch.equal(per_frame[0], per_frame[1])


def test_region_seed():
    assert region_seed(0, track_id=5) == region_seed(0, track_id=5, frame_index=9, region=2)
    assert region_seed(0, track_id=5) != region_seed(1, track_id=5)
    assert region_seed(0, track_id=5) != region_seed(0, track_id=6)
    assert region_seed(0, frame_index=1, region=0) != region_seed(0, frame_index=0, region=1)
    assert 0 <= region_seed(123, frame_index=4, region=7) < 2**63


# -------------------------------------------------------------------------------------- crop windows


@pytest.mark.parametrize(
    ("box", "height", "width"),
    [
        ((10, 10, 20, 30), 100, 100),
        ((0, 0, 5, 5), 100, 200),
        ((90, 40, 100, 50), 50, 100),
        ((0, 0, 100, 20), 40, 100),
        ((10, 0, 20, 50), 50, 30),
    ],
)
def test_crop_window_contains_box_and_stays_in_frame(box, height, width):
    win = CropWindow.around(box, height, width, padding=0.25)
    assert 0 <= win.x0 <= box[0] and box[2] <= win.x1 <= width
    assert 0 <= win.y0 <= box[1] and box[3] <= win.y1 <= height
    side = round(max(box[2] - box[0], box[3] - box[1]) * 1.5) + 8
    assert (win.x1 - win.x0, win.y1 - win.y0) == (min(side, width), min(side, height))


# ---------------------------------------------------------------------------------------- fail closed


def patch_unet(monkeypatch, unet, predicate, error: Exception | None = None) -> None:
    """Make ``unet`` raise ``error`` (or return NaN when None) on the forward calls matching ``predicate``."""
    original = unet.forward

    def forward(sample, timestep, encoder_hidden_states, *args, **kwargs):
        if predicate(sample, encoder_hidden_states):
            if error is not None:
                raise error
            out = original(sample, timestep, encoder_hidden_states, *args, **kwargs)
            return (torch.full_like(out[0], float("nan")),)
        return original(sample, timestep, encoder_hidden_states, *args, **kwargs)

    monkeypatch.setattr(unet, "forward", forward)


def test_a_failing_chunk_is_retried_one_region_at_a_time(components, prompt_embeds, monkeypatch):
    batch = make_batch(n_frames=2)
    expected = make_inpainter(components, prompt_embeds)(batch).images
    patch_unet(monkeypatch, components.unet, lambda x, _: x.shape[0] > 2, torch.OutOfMemoryError("CUDA OOM"))
    out = make_inpainter(components, prompt_embeds, fallback=GrayFill())(batch)
    assert out.fallbacks == []
    assert (out.images.int() - expected.int()).abs().max() <= 1


def test_a_region_that_keeps_failing_is_filled_by_the_fallback(components, prompt_embeds, monkeypatch):
    batch = make_batch(n_frames=2, first_frame=5)
    expected = make_inpainter(components, prompt_embeds)(batch).images
    car = prompt_embeds.cond["car"]
    patch_unet(
        monkeypatch,
        components.unet,
        lambda _, cond: (cond == car).all(dim=(1, 2)).any(),
        ValueError("car crops break"),
    )
    out = make_inpainter(components, prompt_embeds, fallback=GrayFill())(batch)

    assert [(f.frame_index, f.region, f.class_name, f.used) for f in out.fallbacks] == [
        (5, 1, "car", "gray"),
        (6, 1, "car", "gray"),
    ]
    assert all(f.reason == "ValueError: car crops break" for f in out.fallbacks)
    for b, dets in enumerate(batch.detections):
        person, car_mask = dets.masks
        assert (out.images[b][:, car_mask] == 128).all()
        # regenerated alone after its chunk failed: equal to the batched result within 1 (batching parity)
        assert (out.images[b][:, person].int() - expected[b][:, person].int()).abs().max() <= 1
    outside = ~fill_masks(batch)
    assert torch.equal(out.images.permute(0, 2, 3, 1)[outside], batch.images.permute(0, 2, 3, 1)[outside])


def test_nan_is_caught_and_reported(components, prompt_embeds, monkeypatch):
    batch = make_batch(n_frames=1)
    patch_unet(monkeypatch, components.unet, lambda *_: True)
    out = make_inpainter(components, prompt_embeds, fallback=GrayFill())(batch)
    assert [(f.region, f.used) for f in out.fallbacks] == [(0, "gray"), (1, "gray")]
    assert all("NaN" in f.reason for f in out.fallbacks)
    assert (out.images[0][:, fill_masks(batch)[0]] == 128).all()


def test_nan_in_decoded_crop_is_caught(components, prompt_embeds, monkeypatch):
    batch = make_batch(n_frames=1)
    inpainter = make_inpainter(components, prompt_embeds, fallback=GrayFill())
    decode = components.vae.decode
    monkeypatch.setattr(components.vae, "decode", lambda z, **kw: (decode(z, **kw)[0] * float("nan"),))
    out = inpainter(batch)
    assert [f.reason for f in out.fallbacks] == ["NonFiniteError: NaN/inf in decoded crop"] * 2


def test_a_failing_fallback_paints_regions_black(components, prompt_embeds, monkeypatch):
    batch = make_batch(n_frames=1)
    patch_unet(monkeypatch, components.unet, lambda *_: True, RuntimeError("boom"))
    out = make_inpainter(components, prompt_embeds, fallback=Broken())(batch)
    assert [f.used for f in out.fallbacks] == ["solid", "solid"]
    assert (out.images[0][:, fill_masks(batch)[0]] == 0).all()


def test_default_fallback_blurs(components, prompt_embeds, monkeypatch):
    batch = make_batch(n_frames=1)
    patch_unet(monkeypatch, components.unet, lambda *_: True, RuntimeError("boom"))
    out = make_inpainter(components, prompt_embeds)(batch)
    assert [f.used for f in out.fallbacks] == ["blur", "blur"]
    inside = fill_masks(batch)[0]
    assert (out.images[0] != batch.images[0]).any(dim=0)[inside].float().mean() > 0.9
    assert torch.equal(out.images[0][:, ~inside], batch.images[0][:, ~inside])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", ["auto", "bfloat16"])
def test_cuda_half_precision_fills_every_mask(prompt_embeds, dtype):
    batch = make_batch(n_frames=2)
    batch = InpaintBatch(batch.images.cuda(), [d.to("cuda") for d in batch.detections], batch.frame_indices)
    inpainter = make_inpainter(tiny_components(), prompt_embeds, device="cuda", dtype=dtype)
    assert inpainter.dtype == (torch.float16 if dtype == "auto" else torch.bfloat16)
    assert inpainter.unet.dtype == inpainter.vae.dtype == inpainter.dtype
    out = inpainter(batch)
    assert out.images.is_cuda and out.fallbacks == []
    inside = fill_masks(batch)
    changed = (out.images != batch.images).any(dim=1)
    assert changed[inside].float().mean() > 0.95 and not changed[~inside].any()
    one_by_one = make_inpainter(tiny_components(), prompt_embeds, device="cuda", dtype=dtype, max_batch=1)(
        batch
    )
    assert (out.images.int() - one_by_one.images.int()).abs().float().mean() < 2


# ---------------------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"guidance_scale": -1.0}, "guidance_scale"),
        ({"strength": 0.0}, "strength"),
        ({"strength": 1.5}, "strength"),
        ({"steps": 2, "strength": 0.4}, "no denoising step"),
        ({"resolution": 60}, "resolution"),
        ({"resolution": 0}, "resolution"),
        ({"padding": -0.1}, "padding"),
        ({"max_batch": 0}, "max_batch"),
        ({"dtype": "float8"}, "dtype"),
        ({"device": "toaster"}, "device"),
        ({"scheduler": "NoSuchScheduler"}, "DDIMScheduler"),
        ({"scheduler": "AutoencoderKL"}, "scheduler"),
    ],
)
def test_bad_settings_are_rejected(components, prompt_embeds, kwargs, words):
    with pytest.raises(ConfigError, match=words):
        make_inpainter(components, prompt_embeds, **kwargs)


def test_unet_with_other_input_channels_is_rejected(components, prompt_embeds):
    unet = UNet2DConditionModel.from_config({**components.unet.config, "in_channels": 5})
    bad = SDComponents(vae=components.vae, unet=unet, scheduler=components.scheduler)
    with pytest.raises(ConfigError, match="5 input channels"):
        make_inpainter(bad, prompt_embeds)


def test_resolution_the_model_cannot_downsample_is_rejected(components, prompt_embeds):
    unet = UNet2DConditionModel(
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        in_channels=9,
        down_block_types=("DownBlock2D",) * 4,
        up_block_types=("UpBlock2D",) * 4,
        norm_num_groups=8,
        cross_attention_dim=32,
    )
    bad = SDComponents(vae=components.vae, unet=unet, scheduler=components.scheduler)
    with pytest.raises(ConfigError, match="multiple of 16"):
        make_inpainter(bad, prompt_embeds, resolution=40)


def test_prompt_embeddings_of_another_width_are_rejected(components):
    embeds = PromptEmbeds(cond={}, uncond=torch.zeros(77, 768), default=torch.zeros(77, 768))
    with pytest.raises(ConfigError, match="width 768"):
        make_inpainter(components, embeds)


def test_masks_not_at_frame_size_are_rejected(components, prompt_embeds):
    masks = torch.ones(1, H // 2, W // 2, dtype=torch.bool)
    batch = InpaintBatch(make_frame(0)[None], [Detections.from_masks(masks, [0], NAMES)], [0])
    with pytest.raises(ValueError, match="masks are 24x32 but the frame is 48x64"):
        make_inpainter(components, prompt_embeds)(batch)


def test_inpaint_crops_rejects_mismatched_inputs(components, prompt_embeds):
    inpainter = make_inpainter(components, prompt_embeds)
    with pytest.raises(ValueError, match="disagree"):
        inpainter.inpaint_crops(
            torch.zeros(2, 3, 32, 32), torch.zeros(2, 1, 32, 32), torch.zeros(2, 77, 32), [torch.Generator()]
        )


def test_dtype_auto_is_float32_on_cpu_and_float16_on_cuda():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16


# --------------------------------------------------------------------------------------------- tiny


def test_tiny_components_depend_on_the_seed_alone():
    state = torch.random.get_rng_state()
    a, b, c = tiny_components(seed=3), tiny_components(seed=3), tiny_components(seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    for name in ("vae", "unet", "text_encoder"):
        pa = torch.cat([p.flatten() for p in getattr(a, name).parameters()])
        assert torch.equal(pa, torch.cat([p.flatten() for p in getattr(b, name).parameters()]))
        assert not torch.equal(pa, torch.cat([p.flatten() for p in getattr(c, name).parameters()]))
    assert a.unet.config.in_channels == 9 and tiny_components(unet_in_channels=4).unet.config.in_channels == 4
    assert a.text_encoder.config.vocab_size == 49408 and a.tokenizer is None


@pytest.mark.parametrize(
    ("kwargs", "words"), [({"unet_in_channels": 5}, "unet_in_channels"), ({"scheduler": "Nope"}, "scheduler")]
)
def test_tiny_components_reject_bad_values(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        tiny_components(**kwargs)


def test_the_model_never_sees_another_regions_original_pixels(components, prompt_embeds, monkeypatch):
    """Each crop's model mask covers every region in the crop, not only its own (privacy); only its own is pasted."""
    batch = make_batch(n_frames=1)
    inpainter = make_inpainter(components, prompt_embeds, padding=2.0)  # crops wide enough to hold both regions
    seen: list[torch.Tensor] = []
    original = LatentInpainter._prepare_latents

    def record(self, images, masks, cond, generators):
        seen.append(masks.clone())
        return original(self, images, masks, cond, generators)

    monkeypatch.setattr(LatentInpainter, "_prepare_latents", record)
    out = inpainter(batch)
    masks = torch.cat(seen)
    person_window = CropWindow.around(list(BOXES["person"]), H, W, 2.0)
    car = batch.detections[0].masks[1]
    assert car[person_window.y0 : person_window.y1, person_window.x0 : person_window.x1].any(), "test setup"
    # the person's crop (model resolution) is masked wherever the car's pixels fall inside it
    w = person_window
    car_in_crop = car[w.y0 : w.y1, w.x0 : w.x1].float()[None, None]
    car_at_model_res = torch.nn.functional.interpolate(car_in_crop, size=masks.shape[-2:], mode="nearest")[0, 0]
    assert car_at_model_res.any() and (masks[0, 0][car_at_model_res > 0] == 1).all()
    outside = ~fill_masks(batch)
    assert torch.equal(out.images.permute(0, 2, 3, 1)[outside], batch.images.permute(0, 2, 3, 1)[outside])


def test_crop_windows_follow_a_steady_tracked_box(components, prompt_embeds):
    """Mask jitter does not move the crop when the tracker's (smoothed) box stays put: steadier identity."""
    inpainter = make_inpainter(components, prompt_embeds)
    windows = []
    for shift in (0, 2):
        masks = torch.zeros(1, H, W, dtype=torch.bool)
        masks[0, 10 + shift : 30, 10 + shift : 30] = True
        dets = Detections(masks=masks, class_ids=[0], scores=[1.0], boxes_xyxy=[[8, 8, 32, 32]], names=NAMES,
                          track_ids=[3])
        batch = InpaintBatch(make_frame(0)[None], [dets], [shift])
        windows.append(inpainter._list_regions(batch, H, W)[0].window)
    assert windows[0] == windows[1]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_path_runs_end_to_end(dtype):
    """The FP16/BF16 plumbing (weights, latents, masks, prompt embeddings) that CUDA uses, exercised on CPU."""
    components = tiny_components(unet_in_channels=9)
    g = torch.Generator().manual_seed(2)
    person, uncond, default = torch.randn(3, 77, 32, generator=g)
    embeds = PromptEmbeds(cond={"person": person}, uncond=uncond, default=default)
    inpainter = make_inpainter(components, embeds, dtype=dtype)
    assert inpainter.unet.dtype == getattr(torch, dtype)
    batch = make_batch(n_frames=1)
    out = inpainter(batch)
    assert out.fallbacks == [] and out.images.dtype == torch.uint8
    inside, outside = fill_masks(batch), ~fill_masks(batch)
    assert (out.images.permute(0, 2, 3, 1)[inside] != batch.images.permute(0, 2, 3, 1)[inside]).any()
    assert torch.equal(out.images.permute(0, 2, 3, 1)[outside], batch.images.permute(0, 2, 3, 1)[outside])

"""LatentInpainter.inpaint_crops gives the pixels diffusers' StableDiffusionInpaintPipeline gives.

Same tiny components, scheduler, steps, prompt embeddings and seed; one full-frame 64x64 crop. On CPU the
pixels are the same to the bit (same operations in the same order), so any difference is a divergence.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel

from inpaint_anon.inpaint.diffusion import LatentInpainter
from inpaint_anon.inpaint.schedulers import scheduler_class
from inpaint_anon.inpaint.tiny import tiny_components
from inpaint_anon.types import PromptEmbeds, SDComponents

SIZE = 64
SEED = 7
TOLERANCE = 0.0  # bit-for-bit
# our [-1, 1] crops are handed to diffusers as (crop + 1) / 2, which it maps back: float rounding
ROUNDING = 1e-5


@pytest.fixture(scope="module", params=[9, 4], ids=["unet9", "unet4"])
def components(request) -> SDComponents:
    return tiny_components(unet_in_channels=request.param)


@pytest.fixture(scope="module")
def inputs() -> dict[str, torch.Tensor]:
    """image float (1, 3, 64, 64) in [0, 1], mask (1, 1, 64, 64) in {0, 1}, cond/uncond (1, 77, 32)."""
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(1, 1, SIZE, SIZE)
    mask[..., 12:44, 20:50] = 1
    return {
        "image": torch.rand(1, 3, SIZE, SIZE, generator=g),
        "mask": mask,
        "cond": torch.randn(1, 77, 32, generator=g),
        "uncond": torch.randn(1, 77, 32, generator=g),
    }


def _diffusers(
    components: SDComponents, inputs: dict, scheduler: str, steps: int, guidance_scale: float, strength: float
) -> torch.Tensor:
    pipe = components.to_pipeline(scheduler_class(scheduler).from_config(components.scheduler.config))
    return pipe(
        prompt_embeds=inputs["cond"],
        negative_prompt_embeds=inputs["uncond"],
        image=inputs["image"],
        mask_image=inputs["mask"],
        height=SIZE,
        width=SIZE,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        strength=strength,
        generator=torch.Generator().manual_seed(SEED),
        output_type="pt",
    ).images


def _ours(
    components: SDComponents, inputs: dict, scheduler: str, steps: int, guidance_scale: float, strength: float
) -> torch.Tensor:
    cond = inputs["cond"][0]
    prompt_embeds = PromptEmbeds(cond={"person": cond}, uncond=inputs["uncond"][0], default=cond)
    inpainter = LatentInpainter(
        components,
        prompt_embeds,
        steps=steps,
        guidance_scale=guidance_scale,
        strength=strength,
        scheduler=scheduler,
        resolution=SIZE,
        device="cpu",
    )
    return inpainter.inpaint_crops(
        inputs["image"] * 2 - 1, inputs["mask"], inputs["cond"], [torch.Generator().manual_seed(SEED)]
    )


@pytest.mark.parametrize(
    ("scheduler", "steps", "guidance_scale", "strength"),
    [
        ("DDIMScheduler", 2, 6.0, 1.0),
        ("PNDMScheduler", 3, 7.5, 1.0),
        ("EulerAncestralDiscreteScheduler", 2, 6.0, 1.0),  # draws noise in step(): random streams line up
        ("LCMScheduler", 2, 1.0, 1.0),  # draws noise in step(); no guidance
        ("DDIMScheduler", 4, 6.0, 0.5),
        ("DPMSolverMultistepScheduler", 4, 6.0, 0.75),
        ("EulerDiscreteScheduler", 3, 6.0, 0.75),  # scale_model_input() sets the step index: stateful
    ],
)
def test_inpaint_crops_matches_diffusers(components, inputs, scheduler, steps, guidance_scale, strength):
    expected = _diffusers(components, inputs, scheduler, steps, guidance_scale, strength)
    ours = _ours(components, inputs, scheduler, steps, guidance_scale, strength)
    assert ours.shape == expected.shape == (1, 3, SIZE, SIZE)
    assert (ours - expected).abs().max().item() <= TOLERANCE


def test_saved_and_reloaded_components_give_identical_output(components, inputs, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("vae", "unet", "scheduler", "text_encoder"):
        getattr(components, name).save_pretrained(tmp_path / name)
    reloaded = SDComponents(
        vae=AutoencoderKL.from_pretrained(tmp_path / "vae"),
        unet=UNet2DConditionModel.from_pretrained(tmp_path / "unet"),
        scheduler=type(components.scheduler).from_pretrained(tmp_path / "scheduler"),
        text_encoder=CLIPTextModel.from_pretrained(tmp_path / "text_encoder"),
    )
    args = (inputs, "DDIMScheduler", 2, 6.0, 1.0)
    assert torch.equal(_ours(reloaded, *args), _ours(components, *args))
    assert (_ours(reloaded, *args) - _diffusers(components, *args)).abs().max().item() <= TOLERANCE


def test_guidance_embedding_unet_matches_diffusers(components, inputs):
    """U-Nets distilled with a guidance-scale embedding (LCM) get it, and no classifier-free guidance."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DConditionModel.from_config({**components.unet.config, "time_cond_proj_dim": 256}).eval()
    lcm = replace(components, unet=unet)
    args = (inputs, "LCMScheduler", 2, 6.0, 1.0)
    assert (_ours(lcm, *args) - _diffusers(lcm, *args)).abs().max().item() <= TOLERANCE


def test_frame_crops_give_diffusers_the_same_inputs(components):
    """model_inputs (used by the generative benchmark to call diffusers per frame) are exactly what our loop
    denoises: diffusers on them gives our crops."""
    from inpaint_anon.inpaint.base import InpaintBatch
    from inpaint_anon.types import Detections

    g = torch.Generator().manual_seed(1)
    embeds = torch.randn(2, 77, 32, generator=g)
    prompt_embeds = PromptEmbeds(cond={"person": embeds[0]}, uncond=embeds[1], default=embeds[0])
    inpainter = LatentInpainter(components, prompt_embeds, steps=2, guidance_scale=6.0, resolution=SIZE,
                                scheduler="DDIMScheduler", device="cpu")
    masks = torch.zeros(2, 96, 128, dtype=torch.bool)
    masks[0, 10:40, 10:30] = True
    masks[1, 50:90, 70:120] = True
    detections = Detections.from_masks(masks, [0, 0], {0: "person"})
    batch = InpaintBatch(torch.randint(0, 256, (1, 3, 96, 128), dtype=torch.uint8, generator=g), [detections], [0])

    crops, crop_masks, cond, generators = inpainter.model_inputs(batch)
    assert crops.shape == (2, 3, SIZE, SIZE) and crop_masks.shape == (2, 1, SIZE, SIZE) and len(generators) == 2
    ours = inpainter.inpaint_crops(crops, crop_masks, cond, generators)
    crops, crop_masks, cond, generators = inpainter.model_inputs(batch)  # fresh generators
    pipe = components.to_pipeline(inpainter.scheduler)
    expected = pipe(prompt_embeds=cond, negative_prompt_embeds=prompt_embeds.uncond.expand(2, -1, -1),
                    image=(crops + 1) / 2, mask_image=crop_masks, height=SIZE, width=SIZE, num_inference_steps=2,
                    guidance_scale=6.0, generator=generators, output_type="pt").images
    assert (ours - expected).abs().max().item() <= ROUNDING
    empty = InpaintBatch(batch.images, [Detections.from_masks(masks[:0], [], {0: "person"})], [0])
    assert inpainter.model_inputs(empty)[0].shape == (0, 3, SIZE, SIZE)

"""Real-size SD-1.5 inpainting architecture with random weights: for timing only (no download).

Configs are those of ``stable-diffusion-v1-5/stable-diffusion-inpainting`` (U-Net 9 -> 4 channels, blocks
320/640/1280/1280, cross-attention 768; VAE 128/256/512/512; PNDM with the SD betas); the prompt embeddings
are random (77, 768) tensors, so no text encoder is built.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel

from inpaint_anon.inpaint.diffusion import LatentInpainter
from inpaint_anon.types import PromptEmbeds, SDComponents


def random_sd15_components(seed: int = 0) -> SDComponents:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=64, in_channels=9, out_channels=4, cross_attention_dim=768, attention_head_dim=8,
            block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
        )
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, sample_size=512, layers_per_block=2,
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        )
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, skip_prk_steps=True, steps_offset=1,
                              set_alpha_to_one=False)
    return SDComponents(vae=vae.eval(), unet=unet.eval(), scheduler=scheduler)


def random_sd15_inpainter(**kwargs: object) -> LatentInpainter:
    generator = torch.Generator().manual_seed(0)
    embeds = torch.randn(3, 77, 768, generator=generator)
    prompts = PromptEmbeds(cond={"person": embeds[0], "car": embeds[0]}, uncond=embeds[1], default=embeds[2])
    return LatentInpainter(random_sd15_components(), prompts, **kwargs)  # type: ignore[arg-type]

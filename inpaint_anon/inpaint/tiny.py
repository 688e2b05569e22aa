"""Tiny random Stable Diffusion 1.5-shaped components, for tests and dry runs.

Built from configs exactly as diffusers' own inpainting tests build them (``get_dummy_components``), with a
CLIP text encoder whose vocabulary fits the real CLIP tokenizer. 64x64 images, latents 4x32x32 (the tiny
VAE downsamples by 2), text embeddings (77, 32). Also a tiny random ``AutoencoderTiny`` (TAESD) of the same
latent size and a tiny random LoRA file for the tiny U-Net.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from inpaint_anon.errors import ConfigError
from inpaint_anon.inpaint.schedulers import scheduler_class
from inpaint_anon.types import SDComponents

# The scheduler config of stable-diffusion-v1-5 (scheduler/scheduler_config.json).
SD15_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}


def tiny_components(
    unet_in_channels: int = 9, seed: int = 0, scheduler: str = "DDIMScheduler", tokenizer: Any | None = None
) -> SDComponents:
    """Random tiny vae/unet/text encoder (float32, CPU, eval mode) and a ``scheduler`` built from the SD-1.5
    scheduler config.

    unet_in_channels: 9 (inpainting U-Net) or 4 (plain SD-1.5 U-Net).
    seed: the weights are a function of it alone; the global RNG is left as it was.
    tokenizer: a ``CLIPTokenizer`` to include (e.g. the real SD-1.5 one), or None.
    """
    if unet_in_channels not in (4, 9):
        raise ConfigError(
            f"unet_in_channels must be 9 (inpainting U-Net) or 4 (plain U-Net), got {unet_in_channels}"
        )
    scheduler_cls = scheduler_class(scheduler)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=2,
            sample_size=32,
            in_channels=unet_in_channels,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
        )
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            block_out_channels=[32, 64],
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
            up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
            latent_channels=4,
            sample_size=128,
        )
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                bos_token_id=49406,
                eos_token_id=49407,
                pad_token_id=49407,
                hidden_size=32,
                intermediate_size=37,
                layer_norm_eps=1e-05,
                num_attention_heads=4,
                num_hidden_layers=5,
                max_position_embeddings=77,
                vocab_size=49408,
            )
        )
    return SDComponents(
        vae=vae.eval(),
        unet=unet.eval(),
        scheduler=scheduler_cls.from_config(SD15_SCHEDULER_CONFIG),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
    )


def tiny_autoencoder_tiny(seed: int = 0) -> AutoencoderTiny:
    """A random tiny ``AutoencoderTiny`` (TAESD-shaped, float32, CPU, eval mode) that downsamples by 2 and has
    4 latent channels, like :func:`tiny_components`' VAE, so either can encode for the other's decoder.

    seed: the weights are a function of it alone; the global RNG is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderTiny(
            encoder_block_out_channels=(32, 32),  # 2 blocks: one stride-2 downsampling
            decoder_block_out_channels=(32, 32),  # 2 blocks: one 2x upsampling (config block_out_channels)
            num_encoder_blocks=(1, 1),
            num_decoder_blocks=(1, 1),
            latent_channels=4,
        )
    return vae.eval()


def save_tiny_lora(folder: str | Path, unet: Any | None = None, seed: int = 0, rank: int = 4) -> Path:
    """Save a random LoRA for ``unet`` (default: :func:`tiny_components`' 9-channel U-Net) in diffusers' format,
    as diffusers' own LoRA tests build one: peft ``LoraConfig(r=rank, target_modules=to_q/to_k/to_v/to_out.0,
    init_lora_weights=False)`` on a copy of the U-Net, saved with ``save_lora_weights``. Returns the file
    (``folder/pytorch_lora_weights.safetensors``). The global RNG is left as it was."""
    from diffusers import StableDiffusionInpaintPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from inpaint_anon.atomic import AtomicPath

    model = copy.deepcopy(tiny_components().unet if unet is None else unet)
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                        init_lora_weights=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.add_adapter(config)
    target = Path(folder) / "pytorch_lora_weights.safetensors"
    with AtomicPath(target) as out:
        StableDiffusionInpaintPipeline.save_lora_weights(
            out.temp.parent, unet_lora_layers=get_peft_model_state_dict(model), weight_name=out.temp.name
        )
    return target

"""Class prompts and their CLIP text embeddings, computed once per run.

Each detected class is repainted from its own prompt, which describes a *different*, anonymous instance of
that class (new face and clothes, new car colour and model, no readable text). Embeddings follow diffusers'
``StableDiffusionInpaintPipeline.encode_prompt`` exactly: tokens padded to ``tokenizer.model_max_length``
(77), the CLIP text encoder's last hidden state (or, with ``clip_skip``, an earlier layer through the final
layer norm).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import torch

from inpaint_anon.errors import ConfigError
from inpaint_anon.types import PromptEmbeds

logger = logging.getLogger(__name__)

_QUALITY = "photorealistic, natural lighting, high quality"

DEFAULT_PROMPTS: Mapping[str, str] = MappingProxyType(
    {
        "person": f"a photo of a person walking on the street, different face, hair and clothes, {_QUALITY}",
        "bicycle": f"a photo of a bicycle on the street, different model and colour, {_QUALITY}",
        "car": f"a photo of a car on the street, different make, model and colour, {_QUALITY}",
        "motorcycle": f"a photo of a motorcycle on the street, different model and colour, {_QUALITY}",
        "bus": f"a photo of a city bus on the street, different model and colours, no writing, {_QUALITY}",
        "truck": f"a photo of a truck on the street, different model and colour, no logos, {_QUALITY}",
        "face": f"a photo of the face of a different person, natural expression, {_QUALITY}",
        "plate": f"a blank licence plate of a different car, no letters or numbers, {_QUALITY}",
    }
)
"""Street class name (COCO objects, ``face``, ``plate``) -> prompt describing a different, anonymous instance of
that class (read-only; copy with ``dict(DEFAULT_PROMPTS)`` to change it)."""

DEFAULT_NEGATIVE_PROMPT = (
    "text, letters, numbers, watermark, logo, readable license plate, blurry, deformed, distorted, "
    "disfigured, extra limbs, cartoon, painting, drawing, low quality, artifacts"
)
"""Negative prompt (classifier-free guidance) shared by all classes."""

DEFAULT_PROMPT = f"a photo of a street scene, {_QUALITY}"
"""Prompt for regions of a class that has no prompt of its own."""


def encode_prompts(
    prompts: Mapping[str, str],
    negative_prompt: str,
    tokenizer: Any,
    text_encoder: Any,
    *,
    default_prompt: str = DEFAULT_PROMPT,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    clip_skip: int | None = None,
) -> PromptEmbeds:
    """Encode every class prompt, the negative prompt and the default prompt with the CLIP text encoder.

    prompts: class name -> prompt (may be empty: every class then uses ``default_prompt``).
    negative_prompt: the unconditional prompt of classifier-free guidance (``""`` for none).
    tokenizer: a ``CLIPTokenizer`` whose ``model_max_length`` (77) fits the text encoder.
    text_encoder: a ``CLIPTextModel``; it runs where it is, under ``torch.no_grad``, once per distinct text.
    device, dtype: where and in which dtype the embeddings are returned (default: the text encoder's).
    clip_skip: use the output of the layer this many layers before the last (diffusers' meaning); None: last.
    Returns PromptEmbeds with float tensors (77, D): D is the text encoder's hidden size (768 for SD-1.5).
    A prompt longer than 77 tokens is truncated with a warning naming its class.
    """
    table = _check_prompt_table(prompts)
    for name, text in (("negative_prompt", negative_prompt), ("default_prompt", default_prompt)):
        if not isinstance(text, str):
            raise ConfigError(f"{name} must be a string, got {type(text).__name__}: use '' for none")
    if clip_skip is not None and not (
        isinstance(clip_skip, int) and 0 <= clip_skip < _num_layers(text_encoder)
    ):
        raise ConfigError(
            f"clip_skip must be None or an int in [0, {_num_layers(text_encoder)}), got {clip_skip!r}"
        )
    _check_lengths(tokenizer, text_encoder)

    labels: dict[str, list[str]] = {}  # distinct text -> who uses it (for warnings)
    for label, text in [
        ("negative prompt", negative_prompt),
        ("default prompt", default_prompt),
        *((f"class {name!r}", text) for name, text in table.items()),
    ]:
        labels.setdefault(text, []).append(label)
    out_device = torch.device(device) if device is not None else text_encoder.device
    out_dtype = dtype if dtype is not None else text_encoder.dtype
    with torch.no_grad():
        embeds = {
            text: encode_text(text, tokenizer, text_encoder, clip_skip=clip_skip, label=", ".join(users)).to(
                device=out_device, dtype=out_dtype
            )
            for text, users in labels.items()
        }
    return PromptEmbeds(
        cond={name: embeds[text] for name, text in table.items()},
        uncond=embeds[negative_prompt],
        default=embeds[default_prompt],
    )


def encode_text(
    text: str, tokenizer: Any, text_encoder: Any, *, clip_skip: int | None = None, label: str = "prompt"
) -> torch.Tensor:
    """One prompt -> float Tensor (77, D) on the text encoder's device, in its dtype, as diffusers'
    ``encode_prompt`` computes it. Warns (naming ``label``) when the prompt is truncated."""
    max_length = tokenizer.model_max_length
    inputs = tokenizer(
        text, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
    )
    untruncated = tokenizer(text, padding="longest", return_tensors="pt").input_ids
    if untruncated.shape[-1] > max_length:
        removed = tokenizer.batch_decode(untruncated[:, max_length - 1 : -1])[0]
        logger.warning("%s: prompt truncated to CLIP's %d tokens, dropped: %r", label, max_length, removed)
    encoder_device = text_encoder.device
    attention_mask = None
    if getattr(text_encoder.config, "use_attention_mask", False):
        attention_mask = inputs.attention_mask.to(encoder_device)
    input_ids = inputs.input_ids.to(encoder_device)
    if clip_skip is None:
        hidden = text_encoder(input_ids, attention_mask=attention_mask)[0]
    else:
        states = text_encoder(input_ids, attention_mask=attention_mask, output_hidden_states=True)[-1]
        hidden = _final_layer_norm(text_encoder)(states[-(clip_skip + 1)])
    return hidden.to(dtype=text_encoder.dtype)[0]


def _final_layer_norm(text_encoder: Any) -> torch.nn.Module:
    """The text encoder's final LayerNorm: ``text_encoder.final_layer_norm`` in transformers 5,
    ``text_encoder.text_model.final_layer_norm`` before (where diffusers' clip_skip still looks for it)."""
    norm = getattr(text_encoder, "final_layer_norm", None)
    return norm if norm is not None else text_encoder.text_model.final_layer_norm


def _check_prompt_table(prompts: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(prompts, Mapping):
        raise ConfigError(f"prompts must be a mapping class name -> prompt, got {type(prompts).__name__}")
    for name, text in prompts.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(
                f"prompt table key {name!r} is not a class name: use non-empty strings like 'person'"
            )
        if not isinstance(text, str):
            raise ConfigError(
                f"prompt for class {name!r} must be a string, got {type(text).__name__}: quote it"
            )
    return dict(prompts)


def _num_layers(text_encoder: Any) -> int:
    return int(text_encoder.config.num_hidden_layers)


def _check_lengths(tokenizer: Any, text_encoder: Any) -> None:
    max_length = getattr(tokenizer, "model_max_length", None)
    positions = int(text_encoder.config.max_position_embeddings)
    if not isinstance(max_length, int) or not 2 <= max_length <= positions:
        raise ConfigError(
            f"tokenizer.model_max_length is {max_length!r} but the text encoder takes at most {positions} "
            f"tokens: load the tokenizer with model_max_length={positions} "
            f"(inpaint_anon.tokenizer.clip_tokenizer() does)"
        )

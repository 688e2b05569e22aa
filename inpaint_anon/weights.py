"""Resolve a model reference and load it as Stable Diffusion 1.5 components.

A reference is one of:

- ``"tiny"``: tiny random components (their output is noise) for smoke runs, tests and CPU notebooks;
- a local diffusers folder (``unet/ vae/ text_encoder/ scheduler/``, optionally ``tokenizer/``);
- a single checkpoint file in the original (LDM) layout: ``.safetensors``, or a pickle (``.ckpt``, ``.pt``,
  ``.pth``, ``.bin``) when explicitly allowed;
- a Hugging Face hub id (default :data:`DEFAULT_SD_INPAINT`), read from the normal HF cache and downloaded
  there when it is missing and the machine is online.

Everything is loaded with diffusers/transformers' own ``from_pretrained`` / ``from_single_file`` and
``local_files_only=True``; the hub is only contacted by an explicit, time-limited download, so an offline
machine fails in seconds with a :class:`~inpaint_anon.errors.WeightsError` that says how to provide the files.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from inpaint_anon.checks import check_bool, check_float
from inpaint_anon.device import resolve_device, resolve_dtype
from inpaint_anon.errors import ConfigError, InpaintAnonError, WeightsError, one_line
from inpaint_anon.inpaint.schedulers import scheduler_class
from inpaint_anon.tokenizer import CLIP_VOCAB_SIZE, clip_tokenizer
from inpaint_anon.types import SDComponents

logger = logging.getLogger(__name__)

DEFAULT_SD_INPAINT = "stable-diffusion-v1-5/stable-diffusion-inpainting"
SD15_BASE = "stable-diffusion-v1-5/stable-diffusion-v1-5"
TINY_REF = "tiny"

SAFE_SINGLE_FILE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
HUB_TIMEOUT_S = 5.0  # seconds: timeout of the hub metadata request and of each file's connection

# Parts of a diffusers SD-1.5 folder: name -> weight file stem (None: config only).
REQUIRED_PARTS: dict[str, str | None] = {
    "unet": "diffusion_pytorch_model",
    "vae": "diffusion_pytorch_model",
    "text_encoder": "model",
    "scheduler": None,
}
_PART_CONFIG = {
    "unet": "config.json",
    "vae": "config.json",
    "text_encoder": "config.json",
    "scheduler": "scheduler_config.json",
}
# A single-file checkpoint's model type (diffusers' inference from its keys) -> hub repo with its configs.
_SINGLE_FILE_CONFIG_REPOS = {"inpainting": DEFAULT_SD_INPAINT, "v1": SD15_BASE}
_LDM_UNET_KEY = "model.diffusion_model.input_blocks.0.0.weight"




def _download_hint(repo: str, local: str = "a local diffusers folder or a single .safetensors file") -> str:
    """How to provide hub repo ``repo`` offline, or ``local`` instead."""
    return (
        f"on a connected machine run `hf download {repo}` (or `huggingface-cli download {repo}`) and copy "
        f"the HF cache here (or set HF_HOME to it), or pass {local}"
    )


def load_sd_components(
    ref: str | os.PathLike[str] = DEFAULT_SD_INPAINT,
    *,
    device: str = "auto",
    dtype: str = "auto",
    variant: str | None = "auto",
    allow_ckpt: bool = False,
    scheduler: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    config: str | os.PathLike[str] | None = None,
) -> SDComponents:
    """Load the SD-1.5 (inpainting) model ``ref`` as :class:`SDComponents`, in eval mode without gradients.

    ref: ``"tiny"``, a hub id, a diffusers folder or a single checkpoint file (see the module docstring).
    device: ``"auto"`` (cuda when available, else cpu), ``"cpu"``, ``"cuda"``, ``"cuda:N"``...
    dtype: ``"auto"`` (float16 on cuda, float32 elsewhere), ``"float32"``, ``"float16"`` or ``"bfloat16"``.
    variant: weight-file variant (``"fp16"``...) for hub ids and folders; ``"auto"`` means ``"fp16"`` when
        the dtype is float16, else none. A variant that is not there falls back to the default files.
    allow_ckpt: allow pickle checkpoints (``.ckpt``/``.pt``/``.pth``/``.bin``), which can run code on load.
    scheduler: diffusers scheduler class name (``"DPMSolverMultistepScheduler"``...) replacing the model's
        own, built from its config; None keeps the model's scheduler.
    cache_dir: HF hub cache folder (default: the standard HF cache, ``$HF_HOME/hub``).
    config: single files only: a diffusers folder or hub id whose configs describe the checkpoint (default:
        the SD-1.5 inpainting or base repo, chosen from the checkpoint's U-Net input channels).
    Raises WeightsError when the model cannot be found or loaded, ConfigError for bad arguments.
    """
    ref = _check_ref(ref)
    check_bool("inpainter.allow_ckpt", allow_ckpt)  # a string ("no") would be truthy and load a pickle
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    variant_name = _resolve_variant(variant, torch_dtype)
    swap_to = scheduler_class(scheduler) if scheduler is not None else None  # fail before loading gigabytes

    components = _load(ref, torch_dtype, variant_name, allow_ckpt, cache_dir, config)
    _check_fit(components, ref)
    if swap_to is not None:
        components.scheduler = swap_to.from_config(components.scheduler.config)
    for model in (components.vae, components.unet, components.text_encoder):
        _place(model, torch_device, torch_dtype)
    return components


def _place(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Move ``model`` to ``device`` and ``dtype`` (only when needed: diffusers warns on every dtype cast),
    in eval mode without gradients."""
    if model.dtype != dtype:
        model.to(dtype=dtype)
    model.to(device=device).eval().requires_grad_(False)


def _load(
    ref: str,
    torch_dtype: torch.dtype,
    variant: str | None,
    allow_ckpt: bool,
    cache_dir: str | os.PathLike[str] | None,
    config: str | os.PathLike[str] | None,
) -> SDComponents:
    path = Path(ref).expanduser()
    if config is not None and not path.is_file():
        raise ConfigError(
            f"config={os.fspath(config)!r} only applies to single checkpoint files, not to {ref!r}: drop it"
        )
    if ref == TINY_REF:
        return _load_tiny()
    if path.is_dir():
        return load_diffusers_folder(path, torch_dtype=torch_dtype, variant=variant)
    if path.is_file():
        return load_single_file(
            path, torch_dtype=torch_dtype, allow_ckpt=allow_ckpt, config=config, cache_dir=cache_dir
        )
    if _looks_like_path(ref):
        raise WeightsError(
            f"model {ref!r}: no such file or folder; pass an existing diffusers folder or checkpoint file, "
            f"or a hub id such as {DEFAULT_SD_INPAINT!r}"
        )
    return load_diffusers_folder(
        hub_snapshot(ref, variant=variant, cache_dir=cache_dir), torch_dtype=torch_dtype, variant=variant
    )


def _check_ref(ref: Any) -> str:
    if isinstance(ref, os.PathLike):
        ref = os.fspath(ref)
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError(
            f"model reference must be a non-empty string, got {ref!r}: pass a hub id (e.g. "
            f"{DEFAULT_SD_INPAINT!r}), a folder, a .safetensors file or 'tiny'"
        )
    return ref.strip()


def _resolve_variant(variant: str | None, torch_dtype: torch.dtype) -> str | None:
    if variant == "auto":
        return "fp16" if torch_dtype == torch.float16 else None
    if variant is not None and (not isinstance(variant, str) or not variant or "/" in variant):
        raise ConfigError(
            f"unknown weights variant {variant!r}: use 'auto', None or a variant name such as 'fp16'"
        )
    return variant


def _looks_like_path(ref: str) -> bool:
    """True when ``ref`` cannot be a hub id (``name`` or ``org/name``) and so must have meant a path."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if ref.lower().endswith(SAFE_SINGLE_FILE_SUFFIXES + PICKLE_SUFFIXES):
        return True
    if ref.startswith(("/", ".", "~")) or "\\" in ref or (len(ref) > 1 and ref[1] == ":"):
        return True
    try:
        validate_repo_id(ref)
    except HFValidationError:
        return True
    return False


def _load_tiny() -> SDComponents:
    from inpaint_anon.inpaint.tiny import tiny_components

    logger.warning(
        "model 'tiny': random tiny weights, the inpainted regions will be noise (for smoke tests only)"
    )
    return tiny_components(tokenizer=clip_tokenizer())


# --- diffusers folders ------------------------------------------------------------------------------------


def _weight_files(part_dir: Path, stem: str) -> list[Path]:
    """Weight files (``.safetensors`` or pytorch ``.bin``, any variant, sharded or not) in ``part_dir``."""
    if not part_dir.is_dir():
        return []
    pytorch_stem = "pytorch_model" if stem == "model" else stem
    return sorted(
        p
        for p in part_dir.iterdir()
        if p.is_file()
        and (
            (p.name.startswith(stem) and ".safetensors" in p.name)
            or (p.name.startswith(pytorch_stem) and p.name.endswith((".bin", ".bin.index.json")))
        )
    )


def missing_parts(folder: str | os.PathLike[str]) -> list[str]:
    """Names of the required SD-1.5 parts (``unet``, ``vae``, ``text_encoder``, ``scheduler``) that
    ``folder`` lacks: no sub-folder, no config file, or no weight file."""
    root = Path(folder)
    missing = []
    for part, stem in REQUIRED_PARTS.items():
        has_config = (root / part / _PART_CONFIG[part]).is_file()
        has_weights = stem is None or bool(_weight_files(root / part, stem))
        if not (has_config and has_weights):
            missing.append(part)
    return missing


def _variant_of(file_name: str) -> str | None:
    """Variant tag of a weight file name: ``model.fp16.safetensors`` -> ``"fp16"``,
    ``x.fp16-00001-of-00002.safetensors`` -> ``"fp16"``, ``x.safetensors.index.json`` -> None."""
    tokens = [t.split("-")[0] for t in file_name.split(".")[1:]]
    tags = [t for t in tokens if t not in ("", "safetensors", "bin", "index", "json")]
    return tags[0] if tags else None


def _part_variant(root: Path, part: str, variant: str | None) -> str | None:
    """The variant to load for ``part``: the requested one when present, else the default files, else the
    only variant there is (e.g. an fp16-only folder loaded in float32)."""
    stem = REQUIRED_PARTS[part]
    if stem is None:
        return None
    present = {_variant_of(p.name) for p in _weight_files(root / part, stem)}
    if variant in present:
        return variant
    chosen = None if None in present or not present else min(v for v in present if v)
    logger.info("%s: no %r weights for %s, loading %r", root, variant, part, chosen)
    return chosen


def _load_part(root: Path, part: str, loader: Callable[[], Any]) -> Any:
    try:
        return loader()
    except InpaintAnonError:
        raise
    except Exception as err:  # diffusers/transformers/safetensors raise many types for bad files
        raise WeightsError(
            f"cannot load {part!r} from {root / part} ({one_line(err)}); re-download or re-save that folder"
        ) from err


def load_diffusers_folder(
    folder: str | os.PathLike[str], *, torch_dtype: torch.dtype = torch.float32, variant: str | None = None
) -> SDComponents:
    """Load each part of a diffusers SD-1.5 folder with its own ``from_pretrained(local_files_only=True)``.

    The safety checker and feature extractor, if present, are not loaded. A folder without ``tokenizer/``
    gets the packaged SD-1.5 CLIP tokenizer (its text encoder must then have CLIP's 49408-token vocabulary).
    Raises WeightsError naming the first missing or unloadable part.
    """
    root = Path(folder)
    missing = missing_parts(root)
    if missing:
        raise WeightsError(
            f"{root} is not a complete diffusers SD-1.5 folder: missing {', '.join(missing)} "
            f"(sub-folder with config and weights); re-download or re-save it with save_pretrained"
        )
    unet, vae, text_encoder = (
        _load_part(root, part, lambda part=part: _load_model(root, part, torch_dtype, variant))
        for part in ("unet", "vae", "text_encoder")
    )
    scheduler = _load_part(root, "scheduler", lambda: _load_scheduler(root / "scheduler"))
    tokenizer = _load_part(root, "tokenizer", lambda: _load_tokenizer(root / "tokenizer", text_encoder))
    return SDComponents(
        vae=vae, unet=unet, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer
    )


def _load_model(root: Path, part: str, torch_dtype: torch.dtype, variant: str | None) -> Any:
    """``from_pretrained`` of one model part (unet, vae or text_encoder) of a diffusers folder, offline."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    part_variant = _part_variant(root, part, variant)
    if part == "text_encoder":  # transformers 5 calls it dtype, diffusers torch_dtype
        return CLIPTextModel.from_pretrained(
            root, subfolder=part, dtype=torch_dtype, variant=part_variant, local_files_only=True
        )
    model_class = UNet2DConditionModel if part == "unet" else AutoencoderKL
    return model_class.from_pretrained(
        root, subfolder=part, torch_dtype=torch_dtype, variant=part_variant, local_files_only=True
    )


def _load_scheduler(scheduler_dir: Path) -> Any:
    config = json.loads((scheduler_dir / "scheduler_config.json").read_text(encoding="utf-8"))
    return scheduler_class(str(config.get("_class_name", ""))).from_pretrained(scheduler_dir)


def _load_tokenizer(tokenizer_dir: Path, text_encoder: Any) -> Any:
    from transformers import CLIPTokenizer

    if tokenizer_dir.is_dir() and any(tokenizer_dir.iterdir()):
        return CLIPTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    if text_encoder.config.vocab_size != CLIP_VOCAB_SIZE:
        raise WeightsError(
            f"{tokenizer_dir} is missing and the text encoder's vocabulary ({text_encoder.config.vocab_size} "
            f"tokens) is not SD-1.5's CLIP one ({CLIP_VOCAB_SIZE}): add the model's tokenizer/ folder"
        )
    logger.info("%s is missing: using the packaged SD-1.5 CLIP tokenizer", tokenizer_dir)
    return clip_tokenizer()


def _check_fit(components: SDComponents, ref: str) -> None:
    """Raise WeightsError when the parts cannot work together as an SD-1.5 (inpainting) model."""
    unet, text_encoder, tokenizer = components.unet, components.text_encoder, components.tokenizer
    problems = []
    if unet.config.in_channels not in (4, 9):
        problems.append(f"U-Net has {unet.config.in_channels} input channels (expected 9, or 4)")
    if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
        problems.append(
            f"U-Net cross-attention width {unet.config.cross_attention_dim} != text encoder width "
            f"{text_encoder.config.hidden_size}"
        )
    if len(tokenizer) > text_encoder.config.vocab_size:
        problems.append(
            f"tokenizer has {len(tokenizer)} tokens, text encoder only {text_encoder.config.vocab_size}"
        )
    if problems:
        raise WeightsError(
            f"model {ref!r} is not a usable SD-1.5 model: {'; '.join(problems)}; "
            f"use an SD-1.5 (inpainting) model such as {DEFAULT_SD_INPAINT!r}"
        )


# --- hub ids ----------------------------------------------------------------------------------------------


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE is set now (read at call time, unlike huggingface_hub's import-time
    constant)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "")
    return bool(constants.HF_HUB_OFFLINE) or value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _cache_location(cache_dir: str | os.PathLike[str] | None) -> str:
    from huggingface_hub import constants

    return os.fspath(cache_dir) if cache_dir is not None else constants.HF_HUB_CACHE


def cached_snapshot(repo_id: str, cache_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The HF-cache snapshot folder of ``repo_id`` (its ``main`` revision) when its ``model_index.json`` is
    cached, else None. Never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "model_index.json", cache_dir=cache_dir)
    return Path(found).parent if isinstance(found, str) else None


def _hub_weight_patterns(repo_files: list[str], variant: str | None) -> list[str]:
    """allow_patterns for snapshot_download: configs, tokenizer, and one safetensors set per part (the
    variant's when the repo has it)."""
    patterns = ["model_index.json", "scheduler/*", "tokenizer/*"]
    for part, stem in REQUIRED_PARTS.items():
        if stem is None:
            continue
        patterns.append(f"{part}/config.json")
        wanted = f"{part}/{stem}.{variant}" if variant else None
        if wanted and any(name.startswith(wanted) and name.endswith(".safetensors") for name in repo_files):
            patterns.append(f"{wanted}*.safetensors")
            patterns.append(f"{part}/{stem}.safetensors.index.{variant}.json")
        else:
            patterns.append(f"{part}/{stem}.safetensors")
            patterns.append(f"{part}/{stem}-*.safetensors")
            patterns.append(f"{part}/{stem}.safetensors.index.json")
    return patterns


def hub_snapshot(
    repo_id: str, *, variant: str | None = None, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Local folder holding ``repo_id``'s diffusers files: the cached snapshot when it has every part (in
    whatever variant: :func:`load_diffusers_folder` falls back to the default files), else (online) a
    ``snapshot_download`` of only the needed safetensors files, ``variant``'s where the repo has them.

    Offline (HF_HUB_OFFLINE set) with nothing usable cached, or when the download fails, raises WeightsError
    at once, without waiting on the network. Downloads use timeouts of ``HUB_TIMEOUT_S`` seconds.
    """
    snapshot = cached_snapshot(repo_id, cache_dir)
    if snapshot is not None and not missing_parts(snapshot):
        return snapshot
    if hub_offline():
        state = (
            "is not in the HF cache" if snapshot is None else f"is incomplete in the HF cache ({snapshot})"
        )
        raise WeightsError(
            f"model {repo_id!r} {state} ({_cache_location(cache_dir)}) and cannot be downloaded "
            f"(HF_HUB_OFFLINE is set); {_download_hint(repo_id)}"
        )
    return _download_snapshot(repo_id, variant, cache_dir)


def _download_snapshot(repo_id: str, variant: str | None, cache_dir: str | os.PathLike[str] | None) -> Path:
    from huggingface_hub import HfApi, snapshot_download

    cause = f"is not in the HF cache ({_cache_location(cache_dir)}) and could not be downloaded"
    try:
        info = HfApi().model_info(repo_id, timeout=HUB_TIMEOUT_S)
        repo_files = [s.rfilename for s in info.siblings or []]
        folder = snapshot_download(
            repo_id,
            cache_dir=cache_dir,
            allow_patterns=_hub_weight_patterns(repo_files, variant),
            etag_timeout=HUB_TIMEOUT_S,
        )
    except Exception as err:  # network, auth, missing repo: all end the same way for the user
        raise WeightsError(f"model {repo_id!r} {cause} ({one_line(err)}); {_download_hint(repo_id)}") from err
    return Path(folder)


# --- single checkpoint files -----------------------------------------------------------------------------


def _checkpoint_shapes(path: Path) -> dict[str, torch.Tensor]:
    """Key -> tensor of a checkpoint, without reading weights for safetensors (meta tensors of the right
    shape, enough for diffusers' model-type inference)."""
    if path.suffix.lower() in SAFE_SINGLE_FILE_SUFFIXES:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}  # noqa: SIM118
    from diffusers.loaders.single_file_utils import load_single_file_checkpoint

    return load_single_file_checkpoint(str(path), local_files_only=True)


def _single_file_config_repo(path: Path) -> str:
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    try:
        checkpoint = _checkpoint_shapes(path)
    except Exception as err:  # safetensors/pickle errors for truncated or foreign files
        raise WeightsError(
            f"cannot read checkpoint {path} ({one_line(err)}); check the file is complete (re-download it)"
        ) from err
    if _LDM_UNET_KEY not in checkpoint:
        raise WeightsError(
            f"{path} is not a Stable Diffusion checkpoint in the original single-file layout "
            f"(no {_LDM_UNET_KEY}); pass a diffusers folder instead, or an SD-1.5 .safetensors checkpoint"
        )
    model_type = infer_diffusers_model_type(checkpoint)
    if model_type not in _SINGLE_FILE_CONFIG_REPOS:
        raise WeightsError(
            f"{path} looks like a {model_type!r} model, not SD-1.5; use an SD-1.5 (inpainting) checkpoint"
        )
    return _SINGLE_FILE_CONFIG_REPOS[model_type]


def _config_folder(config: str, cache_dir: str | os.PathLike[str] | None, checkpoint: Path) -> Path:
    """A local folder with the diffusers configs for a single-file checkpoint: ``config`` itself when it is a
    folder, else the cached (or, online, freshly downloaded: JSON and text files only) snapshot of hub id
    ``config``."""
    local = Path(config).expanduser()
    if local.is_dir():
        return local
    if _looks_like_path(config):
        raise WeightsError(f"config {config!r}: no such folder; pass a diffusers folder or a hub id")
    snapshot = cached_snapshot(config, cache_dir)
    if snapshot is not None:
        return snapshot
    if hub_offline():
        raise WeightsError(
            f"single-file checkpoint {checkpoint.name} needs the configs of {config!r}, which are not in "
            f"the HF cache ({_cache_location(cache_dir)}) and cannot be downloaded (HF_HUB_OFFLINE is set); "
            f"on a connected machine run `hf download {config} --include '*.json' '*.txt'` and copy the HF "
            f"cache here, or pass config= a local diffusers folder of the same model"
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                config,
                cache_dir=cache_dir,
                allow_patterns=["*.json", "*/*.json", "*/*.txt"],
                etag_timeout=HUB_TIMEOUT_S,
            )
        )
    except Exception as err:
        raise WeightsError(
            f"the configs of {config!r} for {checkpoint.name} could not be downloaded ({one_line(err)}); "
            f"pass config= a local diffusers folder of the same model"
        ) from err


def load_single_file(
    path: str | os.PathLike[str],
    *,
    torch_dtype: torch.dtype = torch.float32,
    allow_ckpt: bool = False,
    config: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> SDComponents:
    """Load an SD-1.5 checkpoint in the original single-file (LDM) layout with diffusers'
    ``StableDiffusionInpaintPipeline.from_single_file``, offline, with the packaged CLIP tokenizer.

    Pickle files (``.ckpt``/``.pt``/``.pth``/``.bin``) are refused unless ``allow_ckpt`` is True.
    config: see :func:`load_sd_components`. Raises WeightsError.
    """
    from diffusers import StableDiffusionInpaintPipeline

    file = Path(path).expanduser()
    suffix = file.suffix.lower()
    if suffix in PICKLE_SUFFIXES and not allow_ckpt:
        raise WeightsError(
            f"refusing to load {file.name}: {suffix} checkpoints are Python pickles that can run code when "
            f"loaded; convert it to .safetensors, or pass allow_ckpt=True if you trust it"
        )
    if suffix not in SAFE_SINGLE_FILE_SUFFIXES + PICKLE_SUFFIXES:
        raise WeightsError(
            f"{file}: unsupported model file type {suffix or '(none)'!r}; pass a .safetensors checkpoint "
            f"or a diffusers folder"
        )
    if not file.is_file():
        raise WeightsError(
            f"model {os.fspath(path)!r}: no such file or folder; pass an existing checkpoint file"
        )
    config_ref = os.fspath(config) if config is not None else _single_file_config_repo(file)
    config_dir = _config_folder(config_ref, cache_dir, file)
    try:
        pipe = StableDiffusionInpaintPipeline.from_single_file(
            str(file),
            config=str(config_dir),
            local_files_only=True,
            torch_dtype=torch_dtype,
            tokenizer=clip_tokenizer(),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    except InpaintAnonError:
        raise
    except Exception as err:
        raise WeightsError(
            f"cannot load checkpoint {file} with configs from {config_dir} ({one_line(err)}); "
            f"check that it is an SD-1.5 checkpoint matching those configs"
        ) from err
    return SDComponents.from_pipeline(pipe)


# --- few-step LoRAs (LCM, TCD, Hyper-SD) ------------------------------------------------------------------

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # diffusers' default LoRA file name (LCM-LoRA, TCD)
DEFAULT_LCM_LORA = "latent-consistency/lcm-lora-sdv1-5"


def hub_file(
    repo_id: str, filename: str, *, what: str, hint: str, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Local path of ``filename`` of hub repo ``repo_id``: the cached file, else (online) a time-limited
    download into the HF cache. Offline and uncached, or when the download fails, raises WeightsError at once
    naming ``what`` and the fix ``hint``."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
    if isinstance(found, str):
        return Path(found)
    where = f"{filename} of {repo_id!r} is not in the HF cache ({_cache_location(cache_dir)})"
    if hub_offline():
        raise WeightsError(f"{what}: {where} and cannot be downloaded (HF_HUB_OFFLINE is set); {hint}")
    try:
        return Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir, etag_timeout=HUB_TIMEOUT_S))
    except Exception as err:  # network, auth, missing repo or file
        raise WeightsError(f"{what}: {where} and could not be downloaded ({one_line(err)}); {hint}") from err


def lora_file(
    ref: str | os.PathLike[str], weight_name: str | None = None, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """The ``.safetensors`` file of LoRA ``ref``: the file itself, ``weight_name`` (or the only
    ``.safetensors`` file) in a local folder, or ``weight_name`` (default ``pytorch_lora_weights.safetensors``)
    of a hub repo, from the HF cache (see :func:`hub_file`). Raises WeightsError."""
    ref = _check_ref(ref)
    hint = _download_hint(ref, "lcm_lora= a local .safetensors file")
    path = Path(ref).expanduser()
    if path.is_dir():
        candidates = [path / weight_name] if weight_name else sorted(path.glob("*.safetensors"))
        if len(candidates) != 1 or not candidates[0].is_file():
            found = ", ".join(p.name for p in sorted(path.glob("*.safetensors"))) or "none"
            raise WeightsError(
                f"LoRA folder {path}: cannot choose its weights file (found: {found}); set lora_weight_name= "
                f"one .safetensors file in it"
            )
        path = candidates[0]
    elif path.is_file() or _looks_like_path(ref):
        if weight_name is not None and path.is_file():
            raise ConfigError(f"lora_weight_name={weight_name!r} applies to a folder or hub id, not to {ref!r}")
    else:
        path = hub_file(ref, weight_name or LORA_WEIGHT_NAME, what=f"LoRA {ref!r}", hint=hint, cache_dir=cache_dir)
    if not path.is_file():
        raise WeightsError(f"LoRA {ref!r}: no such file or folder; pass an existing .safetensors file, or a hub id "
                           f"such as {DEFAULT_LCM_LORA!r}")
    if path.suffix.lower() != ".safetensors":
        raise WeightsError(f"LoRA {path}: unsupported file type {path.suffix!r}; pass a .safetensors LoRA file")
    return path


def _lora_modules(state_dict: dict[str, torch.Tensor]) -> dict[str, set[str]]:
    """Model prefix (``unet``, ``text_encoder``...) -> names of the modules a diffusers-format LoRA state dict
    adapts (its keys in peft form: ``<module>.lora_A.weight``...)."""
    from diffusers.utils import convert_unet_state_dict_to_peft

    by_prefix: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        prefix, _, rest = key.partition(".")
        by_prefix.setdefault(prefix if rest else "", {})[rest or key] = value
    return {
        prefix: {key.split(".lora_")[0] for key in convert_unet_state_dict_to_peft(part) if ".lora_" in key}
        for prefix, part in by_prefix.items()
    }


def _check_lora_fits(components: SDComponents, state_dict: dict[str, torch.Tensor], path: Path) -> None:
    """Raise WeightsError when a LoRA adapts modules the model does not have (another architecture)."""
    models = {"unet": components.unet, "text_encoder": components.text_encoder}
    problems = []
    adapted = _lora_modules(state_dict)
    for prefix, modules in adapted.items():
        model = models.get(prefix)
        if model is None:
            problems.append(f"{len(modules)} modules of an unknown model {prefix or '(no prefix)'!r}")
            continue
        unknown = sorted(modules - {name for name, _ in model.named_modules()})
        if unknown:
            problems.append(f"{len(unknown)} of its {len(modules)} {prefix} modules are not in the model "
                            f"(e.g. {unknown[0]!r})")
    if not adapted.get("unet"):
        problems.append("it adapts no U-Net module")
    if problems:
        raise WeightsError(
            f"LoRA {path} does not fit this SD-1.5 U-Net: {'; '.join(problems)}; use a LoRA made for SD-1.5 "
            f"such as {DEFAULT_LCM_LORA!r}"
        )


def apply_lora(components: SDComponents, path: str | os.PathLike[str], *, scale: float = 1.0) -> None:
    """Fuse the LoRA file ``path`` into ``components`` (U-Net, and text encoder when the LoRA has one), in
    place, with diffusers' ``load_lora_weights`` + ``fuse_lora(lora_scale=scale)`` + ``unload_lora_weights``:
    the fused weights stay, the LoRA layers go (no per-step overhead). Raises WeightsError for an unreadable
    file or a LoRA that does not fit the model."""
    from diffusers import StableDiffusionInpaintPipeline
    from safetensors.torch import load_file

    file = Path(path)
    scale = check_float("", "lora_scale", scale, 0.0)
    try:
        raw = load_file(str(file))
        state_dict, _ = StableDiffusionInpaintPipeline.lora_state_dict(dict(raw))
    except Exception as err:  # safetensors/diffusers raise many types for foreign files
        raise WeightsError(f"cannot read LoRA {file} ({one_line(err)}); check it is a complete .safetensors "
                           f"LoRA (re-download it)") from err
    _check_lora_fits(components, state_dict, file)
    pipe = components.to_pipeline()
    try:
        pipe.load_lora_weights(dict(raw))
        pipe.fuse_lora(lora_scale=scale)
        pipe.unload_lora_weights()
    except Exception as err:  # peft: shape mismatches, no matching module
        raise WeightsError(f"LoRA {file} does not fit this SD-1.5 model ({one_line(err)}); use a LoRA made for "
                           f"SD-1.5 such as {DEFAULT_LCM_LORA!r}") from err
    for model in (components.unet, components.text_encoder):
        if model is not None:
            model.eval().requires_grad_(False)


# --- tiny VAE (TAESD, AutoencoderTiny) --------------------------------------------------------------------

DEFAULT_TINY_VAE = "madebyollin/taesd"
_TINY_VAE_FILES = ("config.json", "diffusion_pytorch_model.safetensors")


def tiny_vae_folder(ref: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The local folder of tiny VAE ``ref`` (None for ``"tiny"``): the folder itself, or hub id ``ref``'s files in
    the HF cache (see :func:`hub_file`). Raises WeightsError at once when it is not there."""
    ref = _check_ref(ref)
    if ref == TINY_REF:
        return None
    folder = Path(ref).expanduser()
    if folder.is_dir():
        return folder
    if _looks_like_path(ref):
        raise WeightsError(f"tiny VAE {ref!r}: no such folder; pass an AutoencoderTiny diffusers folder or a hub id "
                           f"such as {DEFAULT_TINY_VAE!r}")
    hint = _download_hint(ref, "vae= a local AutoencoderTiny folder")
    files = [hub_file(ref, name, what=f"tiny VAE {ref!r}", hint=hint, cache_dir=cache_dir) for name in _TINY_VAE_FILES]
    return files[0].parent


def load_tiny_vae(
    ref: str | os.PathLike[str],
    *,
    device: str = "auto",
    dtype: str = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
) -> Any:
    """An ``AutoencoderTiny`` (TAESD) in eval mode without gradients: ``"tiny"`` (random, matching
    :func:`~inpaint_anon.inpaint.tiny.tiny_components`' latent size), a local diffusers folder, or a hub id
    (default :data:`DEFAULT_TINY_VAE`; read from the HF cache, see :func:`hub_file`). Raises WeightsError."""
    from diffusers import AutoencoderTiny

    folder = tiny_vae_folder(ref, cache_dir)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    if folder is None:
        from inpaint_anon.inpaint.tiny import tiny_autoencoder_tiny

        vae = tiny_autoencoder_tiny()
    else:
        try:
            vae = AutoencoderTiny.from_pretrained(folder, torch_dtype=torch_dtype, local_files_only=True)
        except Exception as err:
            raise WeightsError(f"cannot load tiny VAE {os.fspath(ref)!r} from {folder} ({one_line(err)}); pass an "
                               f"AutoencoderTiny folder such as {DEFAULT_TINY_VAE!r}'s") from err
    _place(vae, torch_device, torch_dtype)
    return vae

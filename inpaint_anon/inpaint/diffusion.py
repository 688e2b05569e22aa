"""Generative inpainting: every region repainted by Stable Diffusion 1.5 latent inpainting.

Reads like diffusers' ``StableDiffusionInpaintPipeline``, of which :meth:`LatentInpainter.inpaint_crops`
is a batched, per-region-seeded copy (same random draws in the same order, so a crop gives the same
pixels as the pipeline): a 9-channel inpainting U-Net gets the mask and masked-image latents
concatenated to its input; a plain 4-channel SD-1.5 U-Net gets the known region re-noised and blended
back into the latents after every step. Around it, :meth:`LatentInpainter.__call__` crops each region
(mask box plus context) out of its frame, resizes it to the model resolution, inpaints the crops of
consecutive frames together and returns each result, resized back to its crop window, as the region's fill
(the compositor pastes it under the region's fill mask).

The steps, numbered alike in every docstring and comment of this module:

1. regions: every non-empty fill mask of every frame, with its crop window and noise seed;
2. crops: each window cut out of its frame and resized, with its mask, to its bucket (the smallest of the
   ``buckets`` sides >= the window's; one bucket, ``resolution``, by default);
3. latents, per chunk of up to ``max_batch`` crops of one bucket (padded to one of ``batch_sizes`` if given,
   for the compiled U-Net's fixed shapes): a diffusers pipeline with a scheduler of its own, the
   prompt embeddings, the timesteps, the noise, the VAE-encoded (masked) crops and the mask latents;
4. denoise: the U-Net loop;
5. decode: the VAE decodes the latents to pixels; a chunk that failed in step 3, 4 or 5 is retried one
   region at a time (steps 3-5 again, each region with a new scheduler);
6. fill: each decoded crop, resized back to its window, becomes its region's fill (the compositor pastes it
   under the region's fill mask);
7. fallback: a region that still failed gets the fallback inpainter's fill.

:meth:`~LatentInpainter.encode_step` runs steps 1-3, :meth:`~LatentInpainter.denoise_step` step 4 and
:meth:`~LatentInpainter.decode_step` steps 5-7, in overlapping threads of the pipeline;
:meth:`~LatentInpainter.inpaint_crops` runs steps 3-5 on crops it is given.

Schedulers keep state between steps (step index, the previous model outputs of multistep solvers), and the
three stage threads work on different batches at once, so no scheduler is shared: each chunk, and each
region of a retry, gets its own copy of :attr:`LatentInpainter.scheduler`, which itself is never stepped.

Privacy fails closed: a chunk of crops that raises (CUDA out of memory included) or produces NaN/inf is
retried one region at a time, and a region that still fails is filled by the fallback inpainter (blur),
or painted black if that fails too; each such region is reported as a :class:`Fallback`.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, AutoencoderTiny
from diffusers.image_processor import VaeImageProcessor
from diffusers.models.attention_processor import AttnProcessor2_0
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_inpaint import (
    StableDiffusionInpaintPipeline,
    retrieve_latents,
    retrieve_timesteps,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from inpaint_anon.checks import check_float
from inpaint_anon.device import resolve_device, resolve_dtype
from inpaint_anon.errors import ConfigError, one_line
from inpaint_anon.inpaint.base import Fallback, InpaintBatch, Inpainter, InpaintOutput, RegionFill
from inpaint_anon.inpaint.fallback import fail_closed_fills
from inpaint_anon.inpaint.schedulers import scheduler_class
from inpaint_anon.inpaint.temporal import TemporalMemory, TemporalPlan, WarmStart  # temporal:
from inpaint_anon.timing import Timings
from inpaint_anon.types import Detections, PromptEmbeds, SDComponents, cover_boxes, masks_to_boxes

logger = logging.getLogger(__name__)

MIN_CONTEXT_PX = 4  # context added on every side of a mask box, on top of ``padding``
VAE_USES = ("both", "decode")  # what a tiny VAE does (LatentInpainter.from_pretrained's vae_use)


class NonFiniteError(RuntimeError):
    """NaN or inf appeared in the latents or the decoded crops (e.g. float16 overflow)."""


def region_seed(seed: int, *, track_id: int | None = None, frame_index: int = 0, region: int = 0) -> int:
    """The noise seed of one region: from (seed, track id) when tracked, so a tracked object keeps its noise
    (and so its generated identity) across frames; else from (seed, frame index, region index)."""
    key = (
        f"{seed}/track/{track_id}" if track_id is not None else f"{seed}/frame/{frame_index}/region/{region}"
    )
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") >> 1


@dataclass(frozen=True)
class CropWindow:
    """A crop in frame pixels: rows ``y0:y1``, columns ``x0:x1`` (exclusive ends)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @classmethod
    def around(cls, box_xyxy: Sequence[float], height: int, width: int, padding: float) -> CropWindow:
        """A square window around ``box_xyxy`` (side: the box's longer side times ``1 + 2 * padding``, plus
        ``MIN_CONTEXT_PX`` on each side), shifted to lie inside the ``height`` x ``width`` frame; it is cut
        to the frame (and so no longer square) only where the frame is smaller than the side."""
        x0, y0, x1, y1 = (float(v) for v in box_xyxy)
        side = round(max(x1 - x0, y1 - y0) * (1 + 2 * padding)) + 2 * MIN_CONTEXT_PX
        win_w, win_h = min(side, width), min(side, height)
        left = min(max(round((x0 + x1 - win_w) / 2), 0), width - win_w)
        top = min(max(round((y0 + y1 - win_h) / 2), 0), height - win_h)
        return cls(left, top, left + win_w, top + win_h)


@dataclass(frozen=True)
class _Region:
    """One region to fill: frame ``b`` of the batch, region ``index`` of its Detections."""

    b: int
    index: int
    frame_index: int
    class_name: str
    window: CropWindow
    seed: int
    size: int  # side in pixels of its model-resolution crop: the bucket of its window
    box: tuple[float, float, float, float]  # xyxy frame pixels: the (tracked) box grown to cover the mask


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of float (B, C, h, w) to ``size`` (antialiased when shrinking)."""
    return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)


def _to(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """``model`` in eval mode on ``device``, cast to ``dtype`` only if it is not already (diffusers warns on
    every cast)."""
    model = model.to(device).eval()
    return model if model.dtype == dtype else model.to(dtype=dtype)


def _vae_scale_factor(vae: AutoencoderKL | AutoencoderTiny, use: str) -> int:
    """Pixels per latent cell of ``vae`` when it does ``use`` ("encode" or "decode"): ``AutoencoderKL`` halves
    the size in each block but the last; ``AutoencoderTiny`` (whose config ``block_out_channels`` are the
    decoder's) has its own encoder and decoder block lists."""
    config = vae.config
    if isinstance(vae, AutoencoderTiny):
        if use == "encode":
            return 2 ** (len(config.encoder_block_out_channels) - 1)
        return config.upsampling_scaling_factor ** (len(config.decoder_block_out_channels) - 1)
    return 2 ** (len(config.block_out_channels) - 1)


def _check_vaes(encoder: AutoencoderKL | AutoencoderTiny, decoder: AutoencoderKL | AutoencoderTiny) -> None:
    """ConfigError when ``decoder`` cannot decode ``encoder``'s latents (other size or channel count)."""
    encode_f, decode_f = _vae_scale_factor(encoder, "encode"), _vae_scale_factor(decoder, "decode")
    channels = (encoder.config.latent_channels, decoder.config.latent_channels)
    if encode_f != decode_f or channels[0] != channels[1]:
        raise ConfigError(
            f"the decoding VAE ({type(decoder).__name__}: /{decode_f}, {channels[1]} latent channels) does not "
            f"fit the encoding VAE ({type(encoder).__name__}: /{encode_f}, {channels[0]} channels): use a tiny "
            f"VAE made for this model (madebyollin/taesd for SD-1.5, 'tiny' for the tiny model)"
        )


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _check_sizes(name: str, sizes: Sequence[int], example: str) -> list[int]:
    """``sizes`` as a list if they are positive integers in increasing order, else ConfigError."""
    sizes = list(sizes)
    if not sizes or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in sizes):
        raise ConfigError(f"{name} must be a non-empty list of positive integers, got {sizes!r}: use e.g. {example}")
    if sizes != sorted(set(sizes)):
        raise ConfigError(f"{name} must be sorted and without repeats, got {sizes!r}: use {sorted(set(sizes))}")
    return sizes


def _compile_wanted(compile: bool | str, device: torch.device) -> str | None:  # noqa: A002
    """None if the U-Net is to be compiled, else why not (the reason run_record gives)."""
    if compile not in (True, False, "auto"):
        raise ConfigError(f"compile must be true, false or auto, got {compile!r}: use auto (compile on CUDA only)")
    if compile == "auto":
        return None if device.type == "cuda" else f"compile=auto on {device.type}: compiled on CUDA only"
    return None if compile else "compile=false"


def _is_compile_error(err: Exception) -> bool:
    """Whether ``err`` is torch.compile failing (tracing, lowering, or the C++/CUDA compiler) rather than the
    model itself (out of memory, NaN...)."""
    from torch._dynamo.exc import TorchDynamoException
    from torch._inductor.exc import InductorError

    return isinstance(err, (TorchDynamoException, InductorError))


def _compile_cause(err: BaseException) -> BaseException:
    """The compiler's own error inside torch's wrappers (BackendCompilerFailed, InductorError...)."""
    from torch._dynamo.exc import BackendCompilerFailed

    while True:
        if isinstance(err, BackendCompilerFailed):
            err = err.inner_exception
        elif err.__cause__ is not None:
            err = err.__cause__
        else:
            return err


def _repeat_last(rows: torch.Tensor, extra: int) -> torch.Tensor:
    """``rows`` (B, ...) with its last row repeated ``extra`` more times (the padding of a chunk)."""
    return rows if extra <= 0 else torch.cat([rows, rows[-1:].expand(extra, *rows.shape[1:])])


def _bucket(side: int, buckets: list[int]) -> int:
    """The smallest of ``buckets`` (increasing) that is >= ``side``; the largest if none is."""
    return next((b for b in buckets if b >= side), buckets[-1])


class _Streams:
    """CUDA only: one stream per stage thread, so that the encode work of batch k+1, the U-Net of batch k and
    the decode of batch k-1 overlap on the GPU (on one stream, the default, they would run one after another).

    :meth:`stage` runs a stage on its own stream, after the GPU work of the job's previous stage (an event the
    stream waits for), and records the job's new event at the end. The stage also waits for its own stream
    before it hands the job on (as :meth:`LatentInpainter._timed` does), so that no tensor made on one stream
    is freed or reused by the caching allocator while another stream still reads it; tensors handed out of the
    stages (decoded crops, the frames) are marked with :meth:`hand_over` for the caller's stream. Frames are
    copied to the GPU from pinned memory, without blocking, on the encode stream (:meth:`to_device`).
    """

    NAMES = ("encode", "unet", "decode")

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.streams = {name: torch.cuda.Stream(device) for name in self.NAMES}

    @contextmanager
    def stage(self, name: str, job: _Job) -> Iterator[None]:
        stream = self.streams[name]
        if job.ready is not None:
            stream.wait_event(job.ready)
        with torch.cuda.stream(stream):
            yield
            job.ready = torch.cuda.Event()
            job.ready.record(stream)
        stream.synchronize()

    def to_device(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` on the GPU: a non-blocking copy from pinned memory, on the current stream (the encode
        stream in :meth:`LatentInpainter.encode_step`), so the stream's later work is ordered after it."""
        if images.device.type != "cpu":
            return images.to(self.device)
        return images.pin_memory().to(self.device, non_blocking=True)

    def hand_over(self, job: _Job, tensors: Sequence[torch.Tensor]) -> None:
        """The caller's (current) stream waits for the job's GPU work; ``tensors`` are marked as used by it."""
        current = torch.cuda.current_stream(self.device)
        if job.ready is not None:
            current.wait_event(job.ready)
        for tensor in tensors:
            if tensor.is_cuda:
                tensor.record_stream(current)


@dataclass
class _ChunkLatents:
    """A chunk of crops ready for the U-Net (what step 3, :meth:`LatentInpainter._prepare_latents`, hands on).

    pipeline: diffusers' pipeline over the inpainter's VAE and U-Net with this chunk's own scheduler, set to
    ``timesteps`` (those left after ``strength``); latents, noise: (B, 4, h/f, w/f); image_latents: the crops'
    latents (4-channel U-Net or strength < 1) or None; mask: (B, 1, h/f, w/f); masked_image_latents:
    (B, 4, h/f, w/f) for a 9-channel U-Net, else None; prompt_embeds: ([uncond,] cond) (B or 2B, 77, D);
    timestep_cond: guidance embedding or None; generators: one per crop; anchor_t: the warm-start timestep at
    which a chunk generated from noise keeps its latents (temporal), else None.
    """

    pipeline: StableDiffusionInpaintPipeline
    timesteps: torch.Tensor
    latents: torch.Tensor
    noise: torch.Tensor
    image_latents: torch.Tensor | None
    mask: torch.Tensor
    masked_image_latents: torch.Tensor | None
    prompt_embeds: torch.Tensor
    timestep_cond: torch.Tensor | None
    generators: list[torch.Generator]
    anchor_t: torch.Tensor | None = None  # temporal: keep the latents as they are at this timestep


@dataclass
class _Chunk:
    """Up to ``max_batch`` regions going through the model together.

    crops: float32 (R, 3, res, res) in [-1, 1]; masks: float32 (R, 1, res, res) in {0, 1}; state: the
    latest step's result (_ChunkLatents after step 3, then latents after 4, then decoded crops after 5);
    error: why a step failed; anchors: temporal only, the latents (R', 4, res/f, res/f) of a chunk generated
    from noise as they were at the warm-start timestep (the next frames of each track resume from them).
    """

    regions: list[_Region]
    crops: torch.Tensor
    masks: torch.Tensor
    state: Any = None
    error: str | None = None
    anchors: torch.Tensor | None = None


@dataclass
class _Job:
    """One InpaintBatch on its way through :meth:`LatentInpainter.stages` (batch already on the device)."""

    batch: InpaintBatch
    chunks: list[_Chunk]
    ready: Any = None  # CUDA only: a torch.cuda.Event recorded after the job's latest stage (see _Streams)
    temporal: TemporalPlan | None = None  # temporal: which regions warm-start or reuse their track's last fill


class LatentInpainter(Inpainter):
    """Stable Diffusion 1.5 latent inpainting of every region, one crop per region.

    Args:
        components: vae (``AutoencoderKL``, or an ``AutoencoderTiny``; it encodes, and decodes unless
            ``decode_vae`` is given), unet (9 input channels: inpainting U-Net; 4: plain SD-1.5) and scheduler;
            they are moved to ``device``/``dtype`` here, once (in place, as ``DiffusionPipeline.to`` does).
        prompt_embeds: CLIP embeddings of the class prompts; D must equal the U-Net's cross-attention dim.
        steps: denoising steps (>= 1) before ``strength`` is applied, as diffusers' ``num_inference_steps``.
        guidance_scale: classifier-free guidance weight (>= 0); guidance is skipped when <= 1.
        strength: in (0, 1]; 1 starts from pure noise, less keeps some of the original region.
        scheduler: diffusers scheduler class name to use instead of ``components.scheduler``, built with
            ``from_config`` from its config (``"DPMSolverMultistepScheduler"``, ``"LCMScheduler"``...). Either
            way the inpainter holds it as :attr:`scheduler`, a template that each chunk copies and that is
            never stepped itself.
        resolution: side in pixels of the model-resolution crops (multiple of 8) when ``buckets`` is None.
        padding: context around each mask box, as a fraction of the box's longer side (>= 0).
        max_batch: crops denoised together (>= 1); crops of all frames of a call are mixed.
        seed: base seed; each region's noise comes from its own generator seeded by :func:`region_seed`.
        device: ``"auto"`` (cuda when available), ``"cpu"``, ``"cuda"``...
        dtype: ``"auto"`` (float16 on CUDA, float32 on CPU), ``"float32"``, ``"float16"``, ``"bfloat16"``.
        fallback: fills regions the model could not fill; default ``BlurInpainter``.
        decode_vae: the VAE that decodes (an ``AutoencoderTiny`` such as TAESD, or an ``AutoencoderKL``); None:
            ``components.vae``, which always encodes (and may itself be an ``AutoencoderTiny``). Both must have
            the same downsampling and latent channels; each (un)scales latents by its own ``scaling_factor``.
        buckets: crop sides in pixels (increasing, multiples of the model's downsampling); each region's window
            is resized to the smallest side >= its own (the largest if none is), so a small face costs a small
            U-Net pass, and the U-Net sees a fixed set of shapes. None: ``[resolution]``.
        batch_sizes: chunk sizes (increasing); a chunk of n crops is padded to the smallest >= n (the padding
            repeats its last crop and is dropped). None: no padding. ``max_batch`` must not exceed the largest.
        compile: ``torch.compile`` the U-Net (True, False, or "auto": on CUDA only); a compile failure warns and
            runs eagerly (``compiled: false`` and the reason in :meth:`run_record`).
        compile_mode: torch.compile's mode, e.g. "max-autotune" (CUDA graphs), "default".
        temporal_strength: None or 1.0: off; in (0, 1): a tracked region with a remembered fill starts from it,
            warped by its box motion, noised to this strength (:mod:`inpaint_anon.inpaint.temporal`).
        reuse_threshold: None: off; >= 0: a tracked region whose context changed (mean absolute change, 0-1
            units) less than this since its last generation reuses that fill, moved with the box.
    """

    name = "diffusion"

    def __init__(
        self,
        components: SDComponents,
        prompt_embeds: PromptEmbeds,
        *,
        steps: int = 20,
        guidance_scale: float = 7.5,
        strength: float = 1.0,
        scheduler: str | None = None,
        resolution: int = 512,
        padding: float = 0.25,
        max_batch: int = 8,
        seed: int = 0,
        device: str = "auto",
        dtype: str = "auto",
        fallback: Inpainter | None = None,
        decode_vae: AutoencoderKL | AutoencoderTiny | None = None,
        buckets: Sequence[int] | None = None,
        batch_sizes: Sequence[int] | None = None,
        compile: bool | str = False,  # noqa: A002 - the option's name in the configs
        compile_mode: str = "max-autotune",
        temporal_strength: float | None = None,
        reuse_threshold: float | None = None,
    ) -> None:
        self._check_settings(steps, guidance_scale, strength, resolution, padding, max_batch)
        self._temporal = TemporalMemory(temporal_strength, reuse_threshold, steps=steps)  # temporal: checks both
        self.buckets = _check_sizes("buckets", [resolution] if buckets is None else buckets, "[256, 384, 512]")
        self.batch_sizes = None if batch_sizes is None else _check_sizes("batch_sizes", batch_sizes, "[1, 2, 4, 8]")
        if self.batch_sizes is not None and max_batch > self.batch_sizes[-1]:
            raise ConfigError(
                f"max_batch {max_batch} is larger than the largest of batch_sizes {self.batch_sizes}: lower "
                f"max_batch to {self.batch_sizes[-1]} or add {max_batch} to batch_sizes"
            )
        if compile_mode not in COMPILE_MODES:
            raise ConfigError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}, got {compile_mode!r}: "
                              "use max-autotune")
        self._device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self._device)
        self.steps, self.guidance_scale, self.strength = steps, float(guidance_scale), float(strength)
        self.resolution, self.padding, self.max_batch, self.seed = resolution, float(padding), max_batch, seed
        self.fallback = fallback
        self.vae_scale_factor = _vae_scale_factor(components.vae, "encode")
        _check_vaes(components.vae, components.vae if decode_vae is None else decode_vae)
        self._check_model(components.unet, prompt_embeds)
        base_scheduler = components.scheduler
        scheduler_cls = type(base_scheduler) if scheduler is None else scheduler_class(scheduler)

        self.vae = _to(components.vae, self._device, self.dtype)  # encodes
        self.decode_vae = self.vae if decode_vae is None else _to(decode_vae, self._device, self.dtype)
        self.sources: dict[str, Any] = {}  # what from_pretrained loaded (model, LoRA, tiny VAE), for run.json
        self.unet = _to(components.unet, self._device, self.dtype)
        self._eager_unet = self.unet
        self.compiled, self.compile_reason = False, _compile_wanted(compile, self._device)
        self.compile_mode = compile_mode
        if self.compile_reason is None:
            self._compile_unet()
        self.warmup_s: float | None = None
        self._streams = _Streams(self._device) if self._device.type == "cuda" else None
        # the template every chunk copies (see _new_pipeline); diffusers' pipeline checks (and, for old
        # configs, fixes) its config once, here
        self.scheduler = self._pipeline(scheduler_cls.from_config(base_scheduler.config)).scheduler
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        self.prompt_embeds = prompt_embeds.to(self._device, self.dtype)

    @classmethod
    def from_pretrained(
        cls,
        model: str = "stable-diffusion-v1-5/stable-diffusion-inpainting",
        *,
        prompts: Mapping[str, str] | None = None,
        negative_prompt: str | None = None,
        default_prompt: str | None = None,
        variant: str | None = "auto",
        allow_ckpt: bool = False,
        device: str = "auto",
        dtype: str = "auto",
        lcm_lora: str | None = None,
        lora_weight_name: str | None = None,
        lora_scale: float = 1.0,
        vae: str | None = None,
        vae_use: str = "both",
        warmup: bool | str = False,
        **kwargs: Any,
    ) -> LatentInpainter:
        """Load a model (and optionally a few-step LoRA and a tiny VAE) and encode the class prompts once; the
        text encoder is then let go.

        1. check the options, and find the LoRA file and the tiny VAE (offline and uncached fails at once);
        2. load the model; 3. fuse the LoRA into it; 4. load the tiny VAE; 5. encode the prompts.

        model: a hub id (the HF cache is used; offline and uncached fails at once, saying how to provide
            it), a local diffusers folder, a single ``.safetensors`` file (``.ckpt`` with ``allow_ckpt``),
            or ``"tiny"`` (tiny random components: smoke runs only, the output is noise).
        prompts: class name -> prompt (default :data:`inpaint_anon.prompts.DEFAULT_PROMPTS`);
            negative_prompt / default_prompt: None for the package defaults.
        lcm_lora: a few-step LoRA (LCM-LoRA ``latent-consistency/lcm-lora-sdv1-5``, TCD, Hyper-SD): hub id,
            local folder or ``.safetensors`` file; fused into the U-Net (``fuse_lora(lora_scale=lora_scale)``)
            and unloaded. With it and no ``scheduler``, the scheduler becomes ``LCMScheduler`` (pass
            ``scheduler="TCDScheduler"`` for TCD). lora_weight_name: the file inside a hub repo or folder
            holding several (Hyper-SD); default ``pytorch_lora_weights.safetensors``.
        vae: an ``AutoencoderTiny`` (TAESD): hub id (``madebyollin/taesd``), local folder, or ``"tiny"``
            (random, for the tiny model); vae_use: ``"both"`` (it encodes and decodes) or ``"decode"`` (the
            model's own VAE still encodes the crops).
        warmup: run :meth:`LatentInpainter.warmup` before returning (compiles every crop and batch shape now,
            not on the first frames; its seconds go to run_record's ``warmup_s``): True, False, or "auto" (only
            when the U-Net is compiled).
        Other keyword arguments go to :class:`LatentInpainter`.
        """
        from inpaint_anon import prompts as defaults
        from inpaint_anon.weights import apply_lora, load_sd_components, load_tiny_vae, lora_file, tiny_vae_folder

        # 1. Options, the LoRA file and the tiny VAE's folder (before loading gigabytes)
        if vae_use not in VAE_USES:
            raise ConfigError(f"vae_use must be one of {', '.join(VAE_USES)}, got {vae_use!r}: use 'both' to "
                              f"encode and decode with the tiny VAE, 'decode' to decode only")
        if vae_use != "both" and vae is None:
            raise ConfigError(f"vae_use={vae_use!r} needs a tiny VAE: set vae= (e.g. madebyollin/taesd)")
        lora_scale = check_float("", "lora_scale", lora_scale, 0.0)
        if not (isinstance(warmup, bool) or warmup == "auto"):
            raise ConfigError(f"warmup must be true, false or auto, got {warmup!r}: use auto (when compiled)")
        if lcm_lora is None and lora_weight_name is not None:
            raise ConfigError(f"lora_weight_name={lora_weight_name!r} needs lcm_lora=: set both, or neither")
        lora_path = None if lcm_lora is None else lora_file(lcm_lora, lora_weight_name)
        vae_folder = None if vae is None else tiny_vae_folder(vae)
        if lcm_lora is not None and kwargs.get("scheduler") is None:
            kwargs["scheduler"] = "LCMScheduler"
        # 2. The model
        components = load_sd_components(model, device=device, dtype=dtype, variant=variant, allow_ckpt=allow_ckpt)
        # 3. The LoRA, fused (text encoder too, when it has one: before the prompts are encoded)
        if lora_path is not None:
            apply_lora(components, lora_path, scale=lora_scale)
        # 4. The tiny VAE
        decode_vae = None
        if vae is not None:
            tiny_vae = load_tiny_vae(vae if vae_folder is None else vae_folder, device=device, dtype=dtype)
            if vae_use == "both":
                components = replace(components, vae=tiny_vae)
            else:
                decode_vae = tiny_vae
        # 5. Prompts
        embeds = defaults.encode_prompts(
            defaults.DEFAULT_PROMPTS if prompts is None else prompts,
            defaults.DEFAULT_NEGATIVE_PROMPT if negative_prompt is None else negative_prompt,
            components.tokenizer,
            components.text_encoder,
            default_prompt=defaults.DEFAULT_PROMPT if default_prompt is None else default_prompt,
        )
        components = replace(components, text_encoder=None, tokenizer=None)
        inpainter = cls(components, embeds, device=device, dtype=dtype, decode_vae=decode_vae, **kwargs)
        inpainter.sources = {"model": str(model)}
        if lcm_lora is not None:
            inpainter.sources.update(lcm_lora=str(lcm_lora), lora_weight_name=lora_weight_name,
                                     lora_scale=lora_scale)
        if vae is not None:
            inpainter.sources.update(vae=str(vae), vae_use=vae_use)
        if warmup is True or (warmup == "auto" and inpainter.compiled):
            inpainter.warmup()
        return inpainter

    def run_record(self) -> dict[str, Any]:
        """``{"diffusion": {...}}`` for run.json: the model, LoRA and tiny VAE loaded (None: not used, or not
        loaded by :meth:`from_pretrained`), the scheduler, steps, guidance, whether classifier-free guidance
        (a doubled U-Net batch) runs, :meth:`shapes_record`, and the temporal settings and region counts."""
        return {"diffusion": {
            "model": None, "lcm_lora": None, "lora_weight_name": None, "lora_scale": None, "vae": None,
            "vae_use": None, **self.sources,
            "encode_vae": type(self.vae).__name__, "decode_vae": type(self.decode_vae).__name__,
            "scheduler": type(self.scheduler).__name__, "steps": self.steps, "guidance_scale": self.guidance_scale,
            "strength": self.strength, "cfg": self.do_classifier_free_guidance, **self.shapes_record(),
            **self._temporal.record(),  # temporal: the settings and this video's fresh / warm / reused counts
        }}

    @staticmethod
    def _check_settings(
        steps: int, guidance_scale: float, strength: float, resolution: int, padding: float, max_batch: int
    ) -> None:
        if not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"steps must be an integer >= 1, got {steps!r}: set inpainter.steps to e.g. 20")
        if guidance_scale < 0:
            raise ConfigError(
                f"guidance_scale must be >= 0, got {guidance_scale}: use e.g. 7.5 (<= 1 disables it)"
            )
        if not 0 < strength <= 1:
            raise ConfigError(f"strength must be in (0, 1], got {strength}: use 1.0 to repaint regions fully")
        if int(steps * strength) < 1:
            raise ConfigError(
                f"steps * strength = {steps * strength:g} leaves no denoising step: raise steps or strength"
            )
        if not isinstance(resolution, int) or resolution < 8 or resolution % 8:
            raise ConfigError(
                f"resolution must be a positive multiple of 8, got {resolution!r}: use e.g. 512"
            )
        if padding < 0:
            raise ConfigError(f"padding must be >= 0, got {padding}: use e.g. 0.25 (a quarter of the box)")
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ConfigError(
                f"max_batch must be an integer >= 1, got {max_batch!r}: use e.g. 8 (lower on OOM)"
            )

    def _check_model(self, unet: torch.nn.Module, prompt_embeds: PromptEmbeds) -> None:
        in_channels = unet.config.in_channels
        if in_channels not in (4, 9):
            raise ConfigError(
                f"the U-Net has {in_channels} input channels: use an SD-1.5 inpainting U-Net (9) "
                "or a plain SD-1.5 U-Net (4)"
            )
        multiple = self.vae_scale_factor * 2 ** (len(unet.config.block_out_channels) - 1)
        if self.resolution % multiple:
            raise ConfigError(
                f"resolution {self.resolution} does not fit the VAE and U-Net downsampling: use a "
                f"multiple of {multiple} (e.g. 512)"
            )
        for size in self.buckets:
            if size % multiple:
                raise ConfigError(
                    f"bucket {size} does not fit the VAE and U-Net downsampling: use multiples of {multiple} "
                    f"in buckets (e.g. [256, 384, 512])"
                )
        dim = prompt_embeds.uncond.shape[-1]
        if dim != unet.config.cross_attention_dim:
            raise ConfigError(
                f"prompt embeddings have width {dim} but the U-Net expects "
                f"{unet.config.cross_attention_dim}: encode the prompts with this model's "
                "text encoder"
            )

    @property
    def device(self) -> torch.device:
        return self._device

    def start_video(self) -> None:
        """A new video: the temporal memory forgets every track."""
        self._temporal.start_video()  # temporal:

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self.guidance_scale > 1 and self.unet.config.time_cond_proj_dim is None

    def _stage(self, name: str, job: _Job) -> AbstractContextManager[None]:
        """The stage ``name`` ("encode", "unet", "decode") of ``job`` on its own CUDA stream (:class:`_Streams`);
        on CPU nothing."""
        return nullcontext() if self._streams is None else self._streams.stage(name, job)

    # ----------------------------------------------------------------------------------- compilation

    def _compile_unet(self) -> None:
        """``torch.compile`` the U-Net (channels_last, SDPA attention, ``fullgraph``, :attr:`compile_mode`);
        compilation itself happens at the first call of each shape, where a failure falls back to eager
        (:meth:`_unet_forward`). A failure already here falls back at once."""
        try:
            if not all(isinstance(p, AttnProcessor2_0) for p in self.unet.attn_processors.values()):
                self.unet.set_attn_processor(AttnProcessor2_0())
            self.unet.to(memory_format=torch.channels_last)
            self.unet = torch.compile(self._eager_unet, mode=self.compile_mode, fullgraph=True)
            self.compiled = True
        except Exception as err:  # noqa: BLE001 - never a crash: eager works
            self._compile_failed(err)

    def _compile_failed(self, err: BaseException) -> None:
        err = _compile_cause(err)
        logger.warning("torch.compile of the U-Net failed (%s); running it eagerly", one_line(err))
        self.unet, self.compiled, self.compile_reason = self._eager_unet, False, f"failed: {one_line(err)}"

    def _unet_forward(self, *args: Any, **kwargs: Any) -> Any:
        """The U-Net's forward; if the compiled U-Net fails to compile, the eager one (from then on).

        A compiled U-Net's outputs may live in a CUDA graph's memory, which its next call overwrites: each call
        is marked as a new step, and its output is copied out (latents are small)."""
        unet = self.unet
        if unet is not self._eager_unet:
            try:
                torch.compiler.cudagraph_mark_step_begin()
                return [output.clone() for output in unet(*args, **kwargs)]
            except Exception as err:
                if not _is_compile_error(err):
                    raise
                self._compile_failed(err)
        return self._eager_unet(*args, **kwargs)

    @torch.no_grad()
    def warmup(self) -> float:
        """Steps 3-5 once on a dummy chunk (all-zero crops, full masks) for every (bucket, batch size) pair
        (batch sizes: :attr:`batch_sizes`, or ``max_batch`` alone without padding), so that a compiled U-Net
        compiles every shape it will see before the first frame. Returns the seconds it took, also kept as
        :attr:`warmup_s` (run_record's ``warmup_s``, apart from the steady-state timings)."""
        start = time.perf_counter()
        cond = self.prompt_embeds.default
        for size in self.buckets:
            for n in self.batch_sizes or [self.max_batch]:
                self.inpaint_crops(torch.zeros(n, 3, size, size), torch.ones(n, 1, size, size),
                                   cond[None].expand(n, -1, -1), [torch.Generator().manual_seed(0) for _ in range(n)])
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
        self.warmup_s = time.perf_counter() - start
        return self.warmup_s

    def shapes_record(self) -> dict[str, Any]:
        """The static-shape and compilation facts for run.json: buckets, batch_sizes, compiled (and
        compile_reason: why not, else None), compile_mode, warmup_s (None when :meth:`warmup` did not run)."""
        return {"buckets": list(self.buckets), "batch_sizes": self.batch_sizes, "compiled": self.compiled,
                "compile_reason": self.compile_reason, "compile_mode": self.compile_mode, "warmup_s": self.warmup_s}

    @contextmanager
    def _timed(self, timings: Timings, name: str) -> Iterator[None]:
        """Add the seconds spent in the block to ``timings[name]`` (CUDA work waited for); ``timings`` is the
        batch's (:attr:`InpaintBatch.timings`), so each run reports its own."""
        with timings(name):
            try:
                yield
            finally:
                # each stage thread queues its work on a stream of its own (see _Streams): this waits for
                # this stage's work only, so the steps' times do not include each other's
                if self._device.type == "cuda":
                    torch.cuda.current_stream(self._device).synchronize()

    # ------------------------------------------------------------------------------------------ frames

    def stages(self) -> tuple[Callable[[Any], Any], ...]:
        """Three steps the pipeline runs in overlapping threads: steps 1-3 (crop, VAE-encode) of batch k+1
        while step 4 (the U-Net) denoises batch k and steps 5-7 decode batch k-1 into fills. The threads
        share the models but no scheduler. On CUDA each step runs on a CUDA stream of its own (frames copied
        in from pinned memory without blocking; each step waits for the event its job's previous step
        recorded), so the GPU work of the three overlaps too (:class:`_Streams`); on CPU no stream exists."""
        return (self.encode_step, self.denoise_step, self.decode_step)

    @torch.no_grad()
    def __call__(self, batch: InpaintBatch) -> InpaintOutput:
        """Steps 1-7: fill every region of ``batch``: one fill per region (its crop window, its fill mask), on
        this inpainter's device, in region order; the fallbacks' fills come last. Seconds spent go to
        ``batch.timings`` ("crop", "vae_encode", "unet", "vae_decode", "paste", "fallback")."""
        return self.decode_step(self.denoise_step(self.encode_step(batch)))

    @torch.no_grad()
    def encode_step(self, batch: InpaintBatch) -> _Job:
        """Steps 1-3: list the regions, crop them at model resolution, prepare each chunk's latents."""
        job = _Job(batch, [])
        with self._stage("encode", job):
            # 1. Regions: check the inputs and list the regions to fill
            job.batch, regions = self._on_device(batch)
            plan = job.temporal = self._temporal.plan(job.batch, regions)  # temporal: fresh, warm-started, reused
            for group in self._temporal.groups(plan, regions):  # temporal: one strength per chunk
                for chunk_regions in self._chunk_regions(group):
                    # 2. Crops at their bucket's size
                    with self._timed(job.batch.timings, "crop"):
                        crops, masks = self._prepare_crops(job.batch.images, job.batch.detections, chunk_regions)
                    chunk = _Chunk(chunk_regions, crops, masks)
                    # 3. Latents (a scheduler of the chunk's own, noise, VAE-encoded crops), padded to a batch size
                    self._attempt(chunk, lambda c=chunk: self._prepare_latents(
                        *self._padded(c.regions, c.crops, c.masks), timings=job.batch.timings,
                        init=self._padded_init(self._temporal.warm_start(plan, c.regions, c.crops.shape[2:],
                                                                         self.vae_scale_factor),
                                               len(c.regions))))  # temporal: init=
                    job.chunks.append(chunk)
        return job

    @torch.no_grad()
    def denoise_step(self, job: _Job) -> _Job:
        """Step 4: the U-Net loop of every chunk, each with its own scheduler."""
        # 4. Denoise
        with self._stage("unet", job):
            for chunk in job.chunks:
                kept: list[torch.Tensor] = []  # temporal: the latents at the warm-start timestep
                self._attempt(chunk, lambda c=chunk, k=kept: self._denoise(c.state, job.batch.timings, keep=k))
                chunk.anchors = kept[0] if kept and chunk.error is None else None
        return job

    @torch.no_grad()
    def decode_step(self, job: _Job) -> InpaintOutput:
        """Steps 5-7: VAE-decode, retry failed chunks one region at a time, make each region's fill, fill what
        failed by the fallback."""
        timings = job.batch.timings
        self._temporal.decoding(job.temporal)  # temporal: every earlier batch is finished
        fills: list[RegionFill] = []
        failures: list[tuple[_Region, str]] = []
        decoded: list[list[torch.Tensor | str]] = []
        with self._stage("decode", job):
            for chunk in job.chunks:
                # 5. Decode (a chunk that failed in step 3, 4 or 5 is retried one region at a time; padding
                # crops are dropped)
                self._attempt(chunk, lambda c=chunk: self._decode(c.state, timings))
                decoded.append(list(chunk.state) if chunk.error is None else self._retry_one_by_one(chunk, timings))
        if self._streams is not None:  # steps 6-7 on the caller's stream
            self._streams.hand_over(job, [job.batch.images, *(c for d in decoded for c in d if not isinstance(c, str))])
        for chunk, chunk_decoded in zip(job.chunks, decoded):
            # 6. Fill: each decoded crop, back at its window's size, is its region's fill
            with self._timed(timings, "paste"):
                for region, crop in zip(chunk.regions, chunk_decoded):
                    if isinstance(crop, str):
                        failures.append((region, crop))
                    else:
                        fills.append(self._fill(job.batch.detections, region, crop))
        fills.sort(key=lambda fill: (fill.frame, fill.region))  # region order, whatever the buckets' order
        # 7. Fill what failed with the fallback (after the others, so it wins where it overlaps a generated fill)
        with self._timed(timings, "fallback"):
            fallback_fills, fallbacks = self._fill_failures(job.batch, failures)
        if job.temporal is not None:  # temporal: remember the generated fills, add the reused ones
            with self._timed(timings, "temporal"):
                anchors = {(r.b, r.index): c.anchors[i] for c in job.chunks if c.anchors is not None
                           for i, r in enumerate(c.regions)}
                fills += self._temporal.finish(job.temporal, fills, job.batch.detections, self._fill, anchors)
        return InpaintOutput(fills=fills + fallback_fills, fallbacks=fallbacks)

    def _on_device(self, batch: InpaintBatch) -> tuple[InpaintBatch, list[_Region]]:
        """The batch with its frames and masks on the inpainter's device, and its regions to fill."""
        images = batch.images.to(self._device) if self._streams is None else self._streams.to_device(batch.images)
        batch = InpaintBatch(images, [d.to(self._device) for d in batch.detections], list(batch.frame_indices),
                             batch.timings)
        return batch, self._list_regions(batch, height=images.shape[2], width=images.shape[3])

    def _chunk_regions(self, regions: list[_Region]) -> Iterator[list[_Region]]:
        """The regions grouped by bucket (smallest first; region order within each), in chunks of up to
        ``max_batch``: every chunk's crops have one size."""
        for size in self.buckets:
            yield from _chunks([r for r in regions if r.size == size], self.max_batch)

    def _list_regions(self, batch: InpaintBatch, height: int, width: int) -> list[_Region]:
        """Step 1: every non-empty fill mask of every frame, with its crop window, noise seed and bucket (the
        smallest of :attr:`buckets` >= the window's longer side, else the largest)."""
        regions = []
        for b, (dets, frame_index) in enumerate(zip(batch.detections, batch.frame_indices)):
            if len(dets) and (dets.height, dets.width) != (height, width):
                raise ValueError(
                    f"frame {frame_index}: masks are {dets.height}x{dets.width} but the frame is "
                    f"{height}x{width}"
                )
            # the (tracked, smoothed) box grown to cover the mask: a steady crop window for a steady identity
            boxes = cover_boxes(dets.boxes_xyxy, masks_to_boxes(dets.masks)).tolist()
            names = dets.class_names
            for i, box in enumerate(boxes):
                if box[2] <= box[0]:
                    continue  # empty mask: nothing to fill
                track_id = None if dets.track_ids is None else int(dets.track_ids[i])
                seed = region_seed(self.seed, track_id=track_id, frame_index=frame_index, region=i)
                window = CropWindow.around(box, height, width, self.padding)
                side = max(window.x1 - window.x0, window.y1 - window.y0)
                regions.append(_Region(b, i, frame_index, names[i], window, seed, _bucket(side, self.buckets),
                                       tuple(box)))
        return regions

    def _prepare_crops(
        self, images: torch.Tensor, detections: list[Detections], regions: list[_Region]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 2: crops float32 (R, 3, s, s) in [-1, 1] and their masks float32 (R, 1, s, s) in {0, 1}, at the
        regions' bucket side ``s`` (all of ``regions`` share one bucket).

        A crop's mask is the union of *every* region's fill mask in its frame, not only its own: the model
        never sees a neighbouring region's original pixels as context (only the crop's own region is pasted
        back, so the extra masked pixels cost nothing but keep identities out of the model's input).

        A mask covers every model pixel its region touches, rounded out to whole latent cells, so that the
        mask at latent resolution (nearest-neighbour, as diffusers does) still covers the whole region.
        """
        if len({r.size for r in regions}) != 1:
            raise ValueError(f"_prepare_crops: regions of several buckets {sorted({r.size for r in regions})}")
        size = (regions[0].size, regions[0].size)
        known = {b: detections[b].union_mask() for b in {r.b for r in regions}}
        crops, masks = [], []
        for r in regions:
            w = r.window
            crop = images[r.b, :, w.y0 : w.y1, w.x0 : w.x1].float() / 127.5 - 1
            mask = known[r.b][w.y0 : w.y1, w.x0 : w.x1].float()
            crops.append(_resize(crop[None], size))
            masks.append(_resize(mask[None, None], size) > 0)
        f = self.vae_scale_factor
        masks = F.interpolate(F.max_pool2d(torch.cat(masks).float(), f), scale_factor=f, mode="nearest")
        return torch.cat(crops), masks

    def _attempt(self, chunk: _Chunk, work: Callable[[], Any]) -> None:
        """Run one step of a chunk that has not failed yet; keep its result, or the failure as one line."""
        if chunk.error is not None:
            return
        try:
            chunk.state = work()
        except Exception as err:  # noqa: BLE001 - privacy fails closed, whatever went wrong
            chunk.error, chunk.state = self._recover(err), None

    def _retry_one_by_one(self, chunk: _Chunk, timings: Timings) -> list[torch.Tensor | str]:
        """Step 5's retry, per region of a failed chunk: steps 3-5 for that region alone (a new scheduler each
        time, so the retry cannot disturb a chunk another thread is denoising; a warm-started region starts again
        from noise at full strength); returns its fill float (3, s, s) in [0, 1], or why it failed."""
        if len(chunk.regions) == 1:
            return [chunk.error or "failed"]
        logger.warning("%d crops failed together (%s); retrying one at a time", len(chunk.regions), chunk.error)
        fills: list[torch.Tensor | str] = []
        for i, region in enumerate(chunk.regions):
            try:
                crops, masks = chunk.crops[i : i + 1], chunk.masks[i : i + 1]
                fills.append(self.inpaint_crops(*self._padded([region], crops, masks), timings=timings)[0])
            except Exception as err:  # noqa: BLE001
                fills.append(self._recover(err))
        return fills

    def _recover(self, err: Exception) -> str:
        """Free what a failed attempt left on the GPU; return the failure as one line."""
        logger.debug("inpainting failed", exc_info=err)
        if self._device.type == "cuda":
            torch.cuda.empty_cache()
        return one_line(err)

    def _padded(
        self, regions: list[_Region], crops: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Generator]]:
        """Step 3's inputs for ``regions``: crops, masks, prompt embeddings and generators, padded up to the
        smallest of :attr:`batch_sizes` >= len(regions) by repeating the last region (its crop, mask, prompt and
        a generator with its seed): a fixed set of batch shapes for the compiled U-Net. Each crop's noise comes
        from its own generator, so the padding does not change the real crops' results; it is dropped after
        decoding (step 5)."""
        extra = self._padding(len(regions))
        regions = regions + [regions[-1]] * extra
        return (_repeat_last(crops, extra), _repeat_last(masks, extra), *self._conditions(regions))

    def _padded_init(self, init: WarmStart | None, n: int) -> WarmStart | None:
        """A chunk's warm start padded as :meth:`_padded` pads its crops (the last latents repeated)."""
        if init is None:
            return None
        return replace(init, latents=_repeat_last(init.latents, self._padding(n)))

    def _padding(self, n: int) -> int:
        """How many rows pad a chunk of ``n`` up to the smallest of :attr:`batch_sizes` >= n (0 without)."""
        return 0 if self.batch_sizes is None else _bucket(n, self.batch_sizes) - n

    def _conditions(self, regions: list[_Region]) -> tuple[torch.Tensor, list[torch.Generator]]:
        """The regions' prompt embeddings (R, 77, D) and fresh generators seeded per region."""
        cond = torch.stack([self.prompt_embeds.for_class(r.class_name) for r in regions])
        return cond, [torch.Generator("cpu").manual_seed(r.seed) for r in regions]

    def _fill(self, detections: list[Detections], region: _Region, crop: torch.Tensor) -> RegionFill:
        """The region's fill: decoded ``crop`` (3, s, s) in [0, 1] (``s`` its bucket) resized to its window, as
        uint8, over the region's fill mask in that window."""
        w = region.window
        rgb = _resize(crop[None].float(), (w.y1 - w.y0, w.x1 - w.x0))[0]
        rgb = (rgb * 255).round().clamp(0, 255).to(torch.uint8)
        mask = detections[region.b].masks[region.index, w.y0 : w.y1, w.x0 : w.x1]
        return RegionFill(region.b, region.index, (w.x0, w.y0, w.x1, w.y1), rgb, mask)

    def _fill_failures(
        self, batch: InpaintBatch, failures: list[tuple[_Region, str]]
    ) -> tuple[list[RegionFill], list[Fallback]]:
        """Fills of the failed regions by the fallback inpainter (solid black if it fails too), and reports."""
        if not failures:
            return [], []
        fills, used = fail_closed_fills(batch, [(r.b, r.index) for r, _ in failures], self.fallback)
        reports = []
        for region, reason in failures:
            logger.warning(
                "frame %d region %d (%s): %s; filled by %s",
                region.frame_index,
                region.index,
                region.class_name,
                reason,
                used,
            )
            reports.append(Fallback(region.frame_index, region.index, region.class_name, used, reason))
        return fills, reports

    # ------------------------------------------------------------------------------------------- crops

    @torch.no_grad()
    def model_inputs(
        self, batch: InpaintBatch, bucket: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Generator]]:
        """Steps 1-2 alone: what :meth:`inpaint_crops` receives for the regions of ``batch`` whose bucket is
        ``bucket`` (one of :attr:`buckets`; None: the only one, an error if there are several), in region order
        (e.g. to give diffusers the same crops; unpadded): images float32 (R, 3, s, s) in [-1, 1], masks float32
        (R, 1, s, s) in {0, 1} with ``s = bucket``, the prompt embeddings (R, 77, D) and one seeded generator per
        region. Call it once per bucket for all of a frame's regions."""
        if bucket is None:
            if len(self.buckets) > 1:
                raise ValueError(f"model_inputs: several buckets {self.buckets}: pass bucket= (one of them)")
            bucket = self.buckets[0]
        if bucket not in self.buckets:
            raise ValueError(f"model_inputs: bucket {bucket} is not one of {self.buckets}")
        batch, regions = self._on_device(batch)
        regions = [r for r in regions if r.size == bucket]
        if not regions:
            dim = self.prompt_embeds.uncond.shape[-1]
            return torch.zeros(0, 3, bucket, bucket), torch.zeros(0, 1, bucket, bucket), torch.zeros(0, 77, dim), []
        crops, masks = self._prepare_crops(batch.images, batch.detections, regions)
        return (crops, masks, *self._conditions(regions))

    @torch.no_grad()
    def inpaint_crops(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        cond: torch.Tensor,
        generators: list[torch.Generator],
        timings: Timings | None = None,
    ) -> torch.Tensor:
        """Steps 3-5: inpaint model-resolution crops, as ``StableDiffusionInpaintPipeline`` does with the same
        inputs. Safe to call from several threads at once (each call has its own scheduler).

        Args:
            images: float (B, 3, h, w) in [-1, 1]; h and w multiples of the latent downsampling.
            masks: float (B, 1, h, w) in {0, 1}; 1 = repaint.
            cond: float (B, 77, D), each crop's prompt embedding (``uncond`` comes from ``prompt_embeds``).
            generators: B CPU ``torch.Generator``, one per crop; all of a crop's noise comes from its own.
            timings: where to add the seconds of "vae_encode", "unet" and "vae_decode" (default: nowhere).

        Returns:
            float32 (B, 3, h, w) in [0, 1], the decoded crops.

        Raises:
            NonFiniteError: NaN/inf in the latents or decoded crops.
        """
        timings = Timings() if timings is None else timings
        latents = self._prepare_latents(images, masks, cond, generators, timings=timings)
        return self._decode(self._denoise(latents, timings), timings)

    def _prepare_latents(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        cond: torch.Tensor,
        generators: list[torch.Generator],
        *,
        timings: Timings,
        init: WarmStart | None = None,
    ) -> _ChunkLatents:
        """Step 3: a pipeline with a new scheduler, embeddings, timesteps, noise, VAE-encoded (masked) crops.

        The new scheduler goes with the chunk to steps 4 and 5: no other chunk or thread steps it. ``init``: the
        temporal warm start: the latents to resume from at its strength's first timestep (each track's own
        latents from an earlier frame, warped), instead of noise at :attr:`strength`.
        """
        # 3a. Check inputs
        b, _, h, w = images.shape
        if masks.shape != (b, 1, h, w) or cond.shape[0] != b or len(generators) != b:
            raise ValueError(
                f"inpaint_crops: images {tuple(images.shape)}, masks {tuple(masks.shape)}, cond "
                f"{tuple(cond.shape)} and {len(generators)} generators disagree"
            )
        device, dtype, f = self._device, self.dtype, self.vae_scale_factor
        nine_channels = self.unet.config.in_channels == 9
        strength = self.strength if init is None else init.strength  # temporal: a warm start's own strength
        is_strength_max = strength == 1.0
        pipeline = self._new_pipeline()
        scheduler = pipeline.scheduler

        # 3b. Prompt embeddings ([uncond, cond] for classifier-free guidance, as diffusers)
        prompt_embeds = cond.to(device=device, dtype=dtype)
        if self.do_classifier_free_guidance:
            prompt_embeds = torch.cat([self.prompt_embeds.uncond.expand(b, -1, -1), prompt_embeds])

        # 3c. Timesteps (shortened by strength)
        timesteps = self._timesteps(pipeline, strength)  # temporal: strength
        latent_timestep = timesteps[:1].repeat(b)

        # 3d. Latents: noise, or the image latents noised to the first timestep when strength < 1
        images = images.to(device=device, dtype=torch.float32)
        image_latents = None
        if not nine_channels or (not is_strength_max and init is None):
            with self._timed(timings, "vae_encode"):
                image_latents = self._encode(images, generators)
        latent_shape = (b, self.vae.config.latent_channels, h // f, w // f)
        noise = randn_tensor(latent_shape, generator=generators, device=device, dtype=dtype)
        if init is not None:  # temporal: resume each track's own latents (never the crop's pixels)
            latents = init.latents.to(device=device, dtype=dtype)
        elif is_strength_max:
            latents = noise * scheduler.init_noise_sigma
        else:
            latents = scheduler.add_noise(image_latents, noise, latent_timestep)
        anchor_t = self._temporal.anchor_timestep(scheduler.timesteps, self.steps) if init is None else None

        # 3e. Mask latents
        mask = F.interpolate(masks.to(device=device, dtype=torch.float32), size=(h // f, w // f))
        mask = mask.to(dtype=dtype)
        masked_image = images * (masks.to(device) < 0.5)
        masked_image_latents = None
        if nine_channels:
            with self._timed(timings, "vae_encode"):
                masked_image_latents = self._encode(masked_image, generators)
        else:
            # diffusers encodes the masked image for a 4-channel U-Net too (and discards it): draw the same
            # numbers so that the schedulers that draw noise in step() stay in line with it
            randn_tensor(latent_shape, generator=generators, device=device, dtype=dtype)
        return _ChunkLatents(pipeline, timesteps, latents, noise, image_latents, mask, masked_image_latents,
                             prompt_embeds, self._timestep_cond(pipeline, b), generators, anchor_t)

    def _denoise(self, chunk: _ChunkLatents, timings: Timings, keep: list[torch.Tensor] | None = None
                 ) -> torch.Tensor:
        """Step 4: the U-Net loop with the chunk's own scheduler; returns the final latents (B, 4, h/f, w/f).
        ``keep``: gets a copy of the latents as they are at ``chunk.anchor_t`` (temporal)."""
        nine_channels = self.unet.config.in_channels == 9
        scheduler, timesteps = chunk.pipeline.scheduler, chunk.timesteps
        extra_step_kwargs = chunk.pipeline.prepare_extra_step_kwargs(chunk.generators, 0.0)
        latents, mask = chunk.latents, chunk.mask
        with self._timed(timings, "unet"):
            for i, t in enumerate(timesteps):
                if keep is not None and chunk.anchor_t is not None and t == chunk.anchor_t:
                    keep.append(latents.detach().clone())  # temporal: where the next frames resume
                noise_pred = self._predict_noise(
                    scheduler, latents, t, chunk.prompt_embeds, chunk.timestep_cond, mask, chunk.masked_image_latents
                )
                latents = scheduler.step(noise_pred, t, latents, **extra_step_kwargs).prev_sample
                if not nine_channels:
                    known = chunk.image_latents
                    if i < len(timesteps) - 1:
                        known = scheduler.add_noise(chunk.image_latents, chunk.noise, timesteps[i + 1 : i + 2])
                    latents = (1 - mask) * known + mask * latents
        if not torch.isfinite(latents).all():
            raise NonFiniteError("NaN/inf in latents after denoising")
        return latents

    def _pipeline(self, scheduler: SchedulerMixin) -> StableDiffusionInpaintPipeline:
        """diffusers' inpainting pipeline over the inpainter's VAE and U-Net (no text encoder) and ``scheduler``:
        its methods prepare the timesteps, the scheduler's step arguments and the guidance embedding (it never
        calls the U-Net, so it holds the eager one, not the compiled one)."""
        return SDComponents(vae=self.vae, unet=self._eager_unet, scheduler=scheduler).to_pipeline()

    def _new_pipeline(self) -> StableDiffusionInpaintPipeline:
        """A pipeline with a scheduler of its own: a deep copy of :attr:`scheduler` (``from_config`` would parse
        the config again and repeat its warnings on every chunk); step 3c's ``set_timesteps`` then clears any
        step state the copy could carry."""
        return self._pipeline(copy.deepcopy(self.scheduler))

    def _timesteps(self, pipeline: StableDiffusionInpaintPipeline, strength: float) -> torch.Tensor:
        """Step 3c: set the pipeline's scheduler to ``steps`` and return the timesteps left after ``strength``,
        as diffusers does."""
        _, steps = retrieve_timesteps(pipeline.scheduler, self.steps, self._device)
        return pipeline.get_timesteps(steps, strength, self._device)[0]  # temporal: strength

    def _decode(self, latents: torch.Tensor, timings: Timings) -> torch.Tensor:
        """Step 5: :attr:`decode_vae` decodes the (its ``scaling_factor``-unscaled) latents to float32
        (B, 3, h, w) in [0, 1]."""
        with self._timed(timings, "vae_decode"):
            decoded = self.decode_vae.decode(latents / self.decode_vae.config.scaling_factor, return_dict=False)[0]
        if not torch.isfinite(decoded).all():
            raise NonFiniteError("NaN/inf in decoded crop")
        return self.image_processor.postprocess(decoded, output_type="pt").float()

    def _encode(self, images: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        """Scaled VAE latents of ``images`` (B, 3, h, w) in [-1, 1], each sampled with its own generator (an
        ``AutoencoderTiny`` returns its latents as they are: they are already SD's scaled latents, factor 1)."""
        images = images.to(device=self._device, dtype=self.dtype)
        return self.vae.config.scaling_factor * retrieve_latents(
            self.vae.encode(images), generator=generators
        )

    def _timestep_cond(self, pipeline: StableDiffusionInpaintPipeline, batch_size: int) -> torch.Tensor | None:
        """Guidance-scale embedding for U-Nets distilled with it (LCM), as diffusers; else None."""
        dim = self.unet.config.time_cond_proj_dim
        if dim is None:
            return None
        w = torch.tensor(self.guidance_scale - 1).repeat(batch_size)
        embedding = pipeline.get_guidance_scale_embedding(w, embedding_dim=dim)
        return embedding.to(device=self._device, dtype=self.dtype)

    def _predict_noise(
        self,
        scheduler: SchedulerMixin,
        latents: torch.Tensor,
        t: torch.Tensor,
        prompt_embeds: torch.Tensor,
        timestep_cond: torch.Tensor | None,
        mask: torch.Tensor,
        masked_image_latents: torch.Tensor | None,
    ) -> torch.Tensor:
        """One guided U-Net noise prediction (B, 4, h/f, w/f); ``scheduler`` is the chunk's own."""
        copies = 2 if self.do_classifier_free_guidance else 1
        model_input = scheduler.scale_model_input(torch.cat([latents] * copies), t)
        if masked_image_latents is not None:
            model_input = torch.cat(
                [model_input, torch.cat([mask] * copies), torch.cat([masked_image_latents] * copies)], dim=1
            )
        noise_pred = self._unet_forward(
            model_input,
            t,
            encoder_hidden_states=prompt_embeds,
            timestep_cond=timestep_cond,
            return_dict=False,
        )[0]
        if copies == 2:
            noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
            noise_pred = noise_pred_uncond + self.guidance_scale * (noise_pred_text - noise_pred_uncond)
        return noise_pred

"""The fast generative path (issue 13, parts 1-2): a few-step LoRA fused into the U-Net, LCMScheduler, no doubled
U-Net batch without guidance, and a tiny VAE (AutoencoderTiny) encoding and decoding or decoding only.

Tiny random models on CPU: a tiny random LoRA built with peft (as diffusers' own LoRA tests build one), a tiny
random AutoencoderTiny of the tiny VAE's latent size; parity with diffusers' StableDiffusionInpaintPipeline on the
same components and crops, as in tests/test_diffusers_parity.py.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderTiny, LCMScheduler, StableDiffusionInpaintPipeline
from safetensors.torch import load_file, save_file

from inpaint_anon.errors import ConfigError, WeightsError
from inpaint_anon.inpaint.diffusion import LatentInpainter
from inpaint_anon.inpaint.schedulers import scheduler_class
from inpaint_anon.inpaint.tiny import save_tiny_lora, tiny_autoencoder_tiny, tiny_components
from inpaint_anon.types import PromptEmbeds, SDComponents
from inpaint_anon.weights import apply_lora
from tests.test_diffusers_parity import ROUNDING, SEED, SIZE
from tests.test_diffusers_parity import _diffusers as diffusers_output

LORA_MODULE = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"


pytestmark = pytest.mark.usefixtures("offline_hub")  # tests/conftest.py


@pytest.fixture(scope="module")
def lora(tmp_path_factory) -> Path:
    """A tiny random LoRA (peft, r=4, attention projections) for the tiny 9-channel U-Net, as a file."""
    return save_tiny_lora(tmp_path_factory.mktemp("lora"), seed=1)


@pytest.fixture(scope="module")
def inputs() -> dict[str, torch.Tensor]:
    """2 crops: image float (2, 3, 64, 64) in [0, 1], mask (2, 1, 64, 64) in {0, 1}, cond/uncond (2, 77, 32)."""
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(2, 1, SIZE, SIZE)
    mask[..., 12:44, 20:50] = 1
    return {"image": torch.rand(2, 3, SIZE, SIZE, generator=g), "mask": mask,
            "cond": torch.randn(2, 77, 32, generator=g),
            "uncond": torch.randn(1, 77, 32, generator=g).expand(2, -1, -1)}


def _generators(n: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(SEED + i) for i in range(n)]


def _ours(inpainter: LatentInpainter, inputs: dict[str, torch.Tensor], n: int = 2) -> torch.Tensor:
    return inpainter.inpaint_crops(inputs["image"][:n] * 2 - 1, inputs["mask"][:n], inputs["cond"][:n],
                                   _generators(n))


def _pipeline_output(pipe: StableDiffusionInpaintPipeline, inputs: dict, steps: int, guidance_scale: float,
                     n: int = 2) -> torch.Tensor:
    return pipe(prompt_embeds=inputs["cond"][:n], negative_prompt_embeds=inputs["uncond"][:n],
                image=inputs["image"][:n], mask_image=inputs["mask"][:n], height=SIZE, width=SIZE,
                num_inference_steps=steps, guidance_scale=guidance_scale, generator=_generators(n),
                output_type="pt").images


def _embeds(inputs: dict[str, torch.Tensor]) -> PromptEmbeds:
    cond = inputs["cond"][0]
    return PromptEmbeds(cond={"person": cond}, uncond=inputs["uncond"][0], default=cond)


def _fast(**kwargs: Any) -> LatentInpainter:
    """from_pretrained on the tiny model (one class prompt: encoding prompts is most of its time)."""
    settings = {"steps": 2, "guidance_scale": 1.0, "resolution": SIZE, "device": "cpu",
                "prompts": {"person": "a person"}, **kwargs}
    return LatentInpainter.from_pretrained("tiny", **settings)


@pytest.fixture(scope="module")
def fast(lora, tokenizer_cache) -> LatentInpainter:
    """The tiny model with the tiny LoRA fused: LCMScheduler (by default), 2 steps, no guidance."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("INPAINT_ANON_CACHE", str(tokenizer_cache))
        return _fast(lcm_lora=str(lora))


@pytest.fixture(scope="module")
def fast_out(fast, inputs) -> torch.Tensor:
    """``fast``'s crops float32 (2, 3, 64, 64) in [0, 1]."""
    return _ours(fast, inputs)


@pytest.fixture(scope="module")
def split(lora, tokenizer_cache) -> LatentInpainter:
    """The tiny model with the LoRA, its own VAE encoding and a tiny TAESD decoding; strength 0.75 (so the crops
    are encoded too), 4 steps."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("INPAINT_ANON_CACHE", str(tokenizer_cache))
        return _fast(lcm_lora=str(lora), vae="tiny", vae_use="decode", strength=0.75, steps=4)


def _record_batches(monkeypatch, unet: torch.nn.Module) -> list[int]:
    """The batch size of every U-Net forward from now on."""
    batches: list[int] = []
    forward = unet.forward

    def recording(sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        batches.append(sample.shape[0])
        return forward(sample, *args, **kwargs)

    monkeypatch.setattr(unet, "forward", recording)
    return batches


# -- part 1: few-step LoRA -------------------------------------------------------------------------------------


def test_lora_is_fused_changes_the_output_and_brings_lcm_scheduler(fast, fast_out, inputs):
    with_lora = fast
    without = LatentInpainter(tiny_components(), _embeds(inputs), steps=2, guidance_scale=1.0,
                              scheduler="LCMScheduler", resolution=SIZE, device="cpu")
    assert type(with_lora.scheduler) is LCMScheduler
    base = tiny_components().unet.get_submodule(LORA_MODULE).weight
    fused = with_lora.unet.get_submodule(LORA_MODULE)
    assert type(fused) is torch.nn.Linear  # the LoRA layers are gone: fused, then unloaded
    assert not any("lora" in name for name, _ in with_lora.unet.named_modules())
    assert (fused.weight - base).abs().max().item() > 1e-2
    assert (fast_out - _ours(without, inputs)).abs().mean().item() > 1e-3


def test_lora_output_matches_diffusers_with_the_same_lora_fused(fast_out, lora, inputs):
    ours = fast_out
    components = tiny_components()
    pipe = components.to_pipeline(LCMScheduler.from_config(components.scheduler.config))
    pipe.load_lora_weights(str(lora.parent), weight_name=lora.name)
    pipe.fuse_lora(lora_scale=1.0)
    expected = _pipeline_output(pipe, inputs, steps=2, guidance_scale=1.0)
    assert ours.shape == expected.shape == (2, 3, SIZE, SIZE)
    assert (ours - expected).abs().max().item() <= ROUNDING


def test_lora_scale_scales_the_fused_delta(lora):
    half, full, base = tiny_components(), tiny_components(), tiny_components()
    apply_lora(half, lora, scale=0.5)
    apply_lora(full, lora)
    delta_half = half.unet.get_submodule(LORA_MODULE).weight - base.unet.get_submodule(LORA_MODULE).weight
    delta_full = full.unet.get_submodule(LORA_MODULE).weight - base.unet.get_submodule(LORA_MODULE).weight
    torch.testing.assert_close(delta_half * 2, delta_full, atol=1e-6, rtol=1e-4)
    assert delta_full.abs().max().item() > 1e-2


def test_kohya_format_lora_fuses_the_same_weights(lora, tmp_path):
    """The LCM-LoRA file is in the kohya format (``lora_unet_..._to_q.lora_down.weight``, ``.alpha``): it passes the
    fit check and fuses into the same weights as the diffusers-format file."""
    from diffusers.utils import convert_state_dict_to_kohya

    plain = {key.removeprefix("unet."): value for key, value in load_file(str(lora)).items()}
    kohya = {f"lora_unet_{key}": value for key, value in convert_state_dict_to_kohya(plain).items()}
    save_file(kohya, str(tmp_path / "kohya.safetensors"))
    from_kohya, from_diffusers = tiny_components(), tiny_components()
    apply_lora(from_kohya, tmp_path / "kohya.safetensors")
    apply_lora(from_diffusers, lora)
    assert torch.equal(from_kohya.unet.get_submodule(LORA_MODULE).weight,
                       from_diffusers.unet.get_submodule(LORA_MODULE).weight)


def test_no_guidance_runs_one_unet_batch_of_the_crops_not_two(fast, inputs, monkeypatch):
    batches = _record_batches(monkeypatch, fast.unet)
    _ours(fast, inputs)
    assert batches == [2, 2]  # 2 steps, batch = crops
    guided = LatentInpainter(SDComponents(vae=fast.vae, unet=fast.unet, scheduler=fast.scheduler), _embeds(inputs),
                             steps=2, guidance_scale=7.5, resolution=SIZE, device="cpu")
    batches.clear()
    _ours(guided, inputs)
    assert batches == [4, 4]  # classifier-free guidance: unconditional + conditional
    assert (fast.do_classifier_free_guidance, guided.do_classifier_free_guidance) == (False, True)


def test_run_record_names_the_fast_settings(split, lora, inputs):
    record = split.run_record()["diffusion"]
    expected = {"model": "tiny", "lcm_lora": str(lora), "lora_weight_name": None, "lora_scale": 1.0,
                "vae": "tiny", "vae_use": "decode", "encode_vae": "AutoencoderKL", "decode_vae": "AutoencoderTiny",
                "scheduler": "LCMScheduler", "steps": 4, "guidance_scale": 1.0, "strength": 0.75, "cfg": False,
                **split.shapes_record()}
    assert {k: record[k] for k in expected} == expected  # (the temporal keys: tests/test_diffusion_temporal.py)
    plain = LatentInpainter(tiny_components(), _embeds(inputs), resolution=SIZE, device="cpu")
    plain = plain.run_record()["diffusion"]
    assert (plain["lcm_lora"], plain["vae"], plain["scheduler"], plain["cfg"]) == (None, None, "DDIMScheduler", True)


# -- part 2: tiny VAE ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("unet_in_channels", [9, pytest.param(4, marks=pytest.mark.slow)])
def test_tiny_vae_for_both_matches_diffusers_with_that_vae(inputs, unet_in_channels):
    components = replace(tiny_components(unet_in_channels=unet_in_channels), vae=tiny_autoencoder_tiny())
    single = {k: v[:1] for k, v in inputs.items()}
    expected = diffusers_output(components, single | {"uncond": inputs["uncond"][:1]}, "DDIMScheduler", 2, 6.0, 1.0)
    ours = LatentInpainter(components, _embeds(inputs), steps=2, guidance_scale=6.0, scheduler="DDIMScheduler",
                           resolution=SIZE, device="cpu").inpaint_crops(
        single["image"] * 2 - 1, single["mask"], single["cond"], [torch.Generator().manual_seed(SEED)])
    assert ours.shape == expected.shape == (1, 3, SIZE, SIZE)
    assert (ours - expected).abs().max().item() <= ROUNDING


def _record_calls(monkeypatch, calls: list[str], vae: torch.nn.Module, name: str) -> None:
    for method in ("encode", "decode"):
        original = getattr(vae, method)

        def recording(*args: Any, _original=original, _label=f"{name}.{method}", **kwargs: Any) -> Any:
            calls.append(_label)
            return _original(*args, **kwargs)

        monkeypatch.setattr(vae, method, recording)


def test_tiny_vae_for_decoding_only_keeps_the_model_vae_for_encoding(split, inputs, monkeypatch):
    assert (type(split.vae), type(split.decode_vae)) == (AutoencoderKL, AutoencoderTiny)
    calls: list[str] = []
    _record_calls(monkeypatch, calls, split.vae, "kl")
    _record_calls(monkeypatch, calls, split.decode_vae, "tiny")
    out = _ours(split, inputs, n=2)
    assert calls == ["kl.encode", "kl.encode", "tiny.decode"]  # image latents, masked-image latents, decode
    assert out.shape == (2, 3, SIZE, SIZE)


def test_decode_unscales_by_the_decoding_vae_s_own_factor(split):
    """TAESD's latents are SD's scaled latents: it decodes them as they are (scaling_factor 1.0), while the SD VAE
    divides by its 0.18215; the split decodes exactly what TAESD makes of the final latents."""
    latents = torch.randn(1, 4, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(3))
    expected = split.decode_vae.decode(latents, return_dict=False)[0]
    from inpaint_anon.timing import Timings

    torch.testing.assert_close(split._decode(latents, Timings()), (expected / 2 + 0.5).clamp(0, 1))
    assert split.vae.config.scaling_factor != split.decode_vae.config.scaling_factor == 1.0


def test_a_tiny_vae_of_another_latent_size_is_refused(inputs):
    with pytest.raises(ConfigError, match=r"decoding VAE \(AutoencoderTiny: /8.*encoding VAE \(AutoencoderKL: /2"):
        LatentInpainter(tiny_components(), _embeds(inputs), resolution=SIZE, device="cpu",
                        decode_vae=AutoencoderTiny())


# -- errors ----------------------------------------------------------------------------------------------------


def test_missing_lora_file_is_one_weights_error(tmp_path):
    with pytest.raises(WeightsError, match=r"LoRA .*nope\.safetensors.*no such file or folder; pass an existing"):
        _fast(lcm_lora=str(tmp_path / "nope.safetensors"))


def test_lora_with_keys_the_unet_lacks_is_one_weights_error(lora, tmp_path):
    foreign = {k.replace("to_q", "to_query"): v for k, v in load_file(str(lora)).items()}
    save_file(foreign, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(WeightsError, match=r"does not fit this SD-1.5 U-Net: 12 of its 48 unet modules are not in "
                                           r"the model \(e.g. '.*to_query'\)"):
        _fast(lcm_lora=str(tmp_path / "foreign.safetensors"))


def test_lora_for_a_wider_unet_is_one_weights_error(tmp_path):
    """Same module names, other shapes (a LoRA made for another architecture): peft's error, as one line."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        wide = type(tiny_components().unet).from_config({**tiny_components().unet.config,
                                                           "block_out_channels": (64, 128)})
    path = save_tiny_lora(tmp_path, unet=wide)
    with pytest.raises(WeightsError, match=r"LoRA .* does not fit this SD-1.5 model \(RuntimeError: Error\(s\) in "
                                           r"loading state_dict"):
        _fast(lcm_lora=str(path))


def test_offline_uncached_hub_lora_fails_at_once_saying_how_to_get_it():
    with pytest.raises(WeightsError, match=r"LoRA 'latent-consistency/lcm-lora-sdv1-5': pytorch_lora_weights"
                                           r"\.safetensors .*HF_HUB_OFFLINE is set.*`hf download "
                                           r"latent-consistency/lcm-lora-sdv1-5`.*local \.safetensors"):
        _fast(lcm_lora="latent-consistency/lcm-lora-sdv1-5")


def test_offline_uncached_tiny_vae_fails_saying_how_to_get_it():
    with pytest.raises(WeightsError, match=r"tiny VAE 'madebyollin/taesd': config\.json .*HF_HUB_OFFLINE is set.*"
                                           r"`hf download madebyollin/taesd`"):
        _fast(vae="madebyollin/taesd")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"vae": "tiny", "vae_use": "encode"}, r"vae_use must be one of both, decode, got 'encode'"),
    ({"vae_use": "decode"}, r"vae_use='decode' needs a tiny VAE: set vae="),
    ({"lora_weight_name": "x.safetensors"}, r"lora_weight_name='x.safetensors' needs lcm_lora="),
    ({"lora_scale": "full"}, r"lora_scale='full' is invalid; use a number >= 0.0"),
])
def test_bad_fast_options_are_one_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        _fast(**kwargs)


def test_lora_folder_with_several_files_needs_a_weight_name(lora, tmp_path):
    for name in ("a.safetensors", "b.safetensors"):
        (tmp_path / name).write_bytes(lora.read_bytes())
    with pytest.raises(WeightsError, match=r"cannot choose its weights file \(found: a.safetensors, b.safetensors\)"):
        _fast(lcm_lora=str(tmp_path))
    chosen = _fast(lcm_lora=str(tmp_path), lora_weight_name="b.safetensors", scheduler="TCDScheduler")
    record = chosen.run_record()["diffusion"]
    assert (record["lora_weight_name"], record["scheduler"]) == ("b.safetensors", "TCDScheduler")  # kept, not LCM


# -- the presets -----------------------------------------------------------------------------------------------


def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose(config_name="run", overrides=["input=x.mp4", "device=cpu", *overrides])


def test_fast_preset_offline_is_one_weights_error_exit_2():
    """`python -m inpaint_anon.run inpainter=diffusion_fast` on an offline machine without the LoRA: the CLI's own
    instantiation (run._instantiate) raises one WeightsError (exit code 2) naming the LoRA and the download."""
    from inpaint_anon import run as run_module

    cfg = _compose("inpainter=diffusion_fast")
    node = cfg.inpainter
    assert (node.lcm_lora, node.steps, node.guidance_scale, node.vae) == (
        "latent-consistency/lcm-lora-sdv1-5", 4, 1.0, "madebyollin/taesd")
    with pytest.raises(WeightsError, match=r"^inpainter: LoRA 'latent-consistency/lcm-lora-sdv1-5'.*"
                                           r"hf download latent-consistency/lcm-lora-sdv1-5") as caught:
        run_module._instantiate("inpainter", node)
    assert caught.value.exit_code == 2


def test_tiny_fast_preset_builds_the_fast_path_on_the_tiny_model():
    from inpaint_anon import run as run_module

    built = run_module._instantiate("inpainter", _compose("inpainter=tiny_fast",
                                                                     "inpainter.prompts={person: a person}").inpainter)
    record = built.run_record()["diffusion"]
    assert (record["scheduler"], record["steps"], record["cfg"], record["encode_vae"], record["decode_vae"]) == (
        "LCMScheduler", 2, False, "AutoencoderTiny", "AutoencoderTiny")
    assert built.decode_vae is built.vae  # vae_use=both: one tiny VAE encodes and decodes
    assert scheduler_class(record["scheduler"]) is LCMScheduler

"""load_sd_components: tiny, diffusers folders, the HF cache, single files and every refusal, all offline."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

from inpaint_anon.errors import ConfigError, WeightsError
from inpaint_anon.inpaint.schedulers import SCHEDULER_EXAMPLES, scheduler_class
from inpaint_anon.inpaint.tiny import tiny_components
from inpaint_anon.tokenizer import clip_tokenizer
from inpaint_anon.types import SDComponents
from inpaint_anon.weights import DEFAULT_SD_INPAINT, load_sd_components

MODELS = ("unet", "vae", "text_encoder")
LDM_UNET_KEY = "model.diffusion_model.input_blocks.0.0.weight"


pytestmark = pytest.mark.usefixtures("offline_hub")  # tests/conftest.py


@pytest.fixture(scope="module")
def original(tokenizer_cache) -> SDComponents:
    return tiny_components(seed=3, tokenizer=clip_tokenizer(tokenizer_cache))


def _save(components: SDComponents, folder: Path, variant: str | None = None) -> Path:
    components.to_pipeline().save_pretrained(folder, variant=variant)
    return folder


@pytest.fixture(scope="module")
def saved(original, tmp_path_factory) -> Path:
    """The tiny model as a diffusers folder (default float32 files)."""
    return _save(original, tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="module")
def saved_fp16_only(original, tmp_path_factory) -> Path:
    """The tiny model as a diffusers folder holding only ``.fp16``-named weight files (float32 inside)."""
    return _save(original, tmp_path_factory.mktemp("tiny_sd_fp16"), variant="fp16")


def _copy_without(src: Path, dst: Path, *names: str) -> Path:
    shutil.copytree(src, dst, ignore=lambda _dir, files: [f for f in files if f in names])
    return dst


def _assert_same_weights(loaded: SDComponents, original: SDComponents, dtype: torch.dtype) -> None:
    """Every weight of ``loaded`` is ``dtype`` and equals ``original``'s cast to ``dtype``."""
    for part in MODELS:
        want = getattr(original, part).state_dict()
        got = getattr(loaded, part).state_dict()
        assert want.keys() == got.keys(), part
        for key, tensor in want.items():
            assert got[key].dtype == dtype, (part, key)
            assert torch.equal(got[key], tensor.to(dtype)), (part, key)


def _public(config) -> dict:
    """A diffusers config without its bookkeeping keys (``_class_name``, ``_use_default_values``...)."""
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


def _fake_hub_cache(cache: Path, repo_id: str, snapshot: Path | None) -> Path:
    """An HF hub cache holding ``snapshot``'s files as the ``main`` revision of ``repo_id``."""
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text("0123456789abcdef0123456789abcdef01234567")
    target = repo_dir / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    if snapshot is None:
        target.mkdir(parents=True)
        (target / "model_index.json").write_text("{}")
    else:
        shutil.copytree(snapshot, target)
    return cache


# --- tiny --------------------------------------------------------------------------------------------------


def test_tiny_gives_sd_shaped_components_with_the_real_tokenizer_and_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="inpaint_anon.weights"):
        components = load_sd_components("tiny", device="cpu", scheduler="EulerDiscreteScheduler")
    assert "noise" in caplog.text
    assert components.unet.config.in_channels == 9
    assert len(components.tokenizer) == 49408 and components.tokenizer.model_max_length == 77
    assert type(components.scheduler).__name__ == "EulerDiscreteScheduler"
    for part in MODELS:
        model = getattr(components, part)
        assert model.dtype == torch.float32 and not model.training
        assert not any(p.requires_grad for p in model.parameters())


def test_tiny_in_bfloat16():
    components = load_sd_components("tiny", device="cpu", dtype="bfloat16")
    assert {getattr(components, part).dtype for part in MODELS} == {torch.bfloat16}


# --- diffusers folders -------------------------------------------------------------------------------------


def test_folder_round_trip_gives_identical_weights_scheduler_and_tokenizer(saved, original):
    loaded = load_sd_components(str(saved), device="cpu", dtype="float32")
    _assert_same_weights(loaded, original, torch.float32)
    assert type(loaded.scheduler) is type(original.scheduler)
    assert _public(loaded.scheduler.config) == _public(original.scheduler.config)
    prompt = "a person, walking; café 東京!"
    assert loaded.tokenizer(prompt).input_ids == original.tokenizer(prompt).input_ids
    assert loaded.tokenizer.model_max_length == 77


def test_folder_accepts_a_path_object_and_swaps_the_scheduler(saved, original):
    loaded = load_sd_components(saved, device="cpu", scheduler="DPMSolverMultistepScheduler")
    assert type(loaded.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert loaded.scheduler.config.beta_schedule == original.scheduler.config.beta_schedule


@pytest.mark.parametrize(
    ("folder", "dtype", "variant"),
    [
        ("saved_fp16_only", "float16", "auto"),  # auto -> fp16 files
        ("saved_fp16_only", "float32", "auto"),  # no default files: the only variant, upcast
        ("saved", "float16", "fp16"),  # no fp16 files: falls back to the default ones
    ],
)
def test_folder_variants_fall_back(request, original, folder, dtype, variant):
    loaded = load_sd_components(
        str(request.getfixturevalue(folder)), device="cpu", dtype=dtype, variant=variant
    )
    _assert_same_weights(loaded, original, getattr(torch, dtype))


@pytest.mark.parametrize("part", ["unet", "vae", "text_encoder", "scheduler"])
def test_folder_missing_a_part_names_it(saved, tmp_path, part):
    folder = _copy_without(saved, tmp_path / "partial", part)
    with pytest.raises(WeightsError, match=rf"missing {part}\b"):
        load_sd_components(str(folder), device="cpu")


def test_folder_missing_weight_file_names_the_part(saved, tmp_path):
    folder = _copy_without(saved, tmp_path / "partial", "diffusion_pytorch_model.safetensors")
    with pytest.raises(WeightsError, match="missing unet, vae"):
        load_sd_components(str(folder), device="cpu")


def test_folder_with_a_corrupt_weight_file_names_the_part(saved, tmp_path):
    folder = _copy_without(saved, tmp_path / "corrupt")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsError, match="cannot load 'unet'"):
        load_sd_components(str(folder), device="cpu")


def test_folder_with_an_unknown_scheduler_class(saved, tmp_path):
    folder = _copy_without(saved, tmp_path / "bad_scheduler")
    config = folder / "scheduler" / "scheduler_config.json"
    config.write_text(config.read_text().replace('"DDIMScheduler"', '"NoSuchScheduler"'))
    with pytest.raises(ConfigError, match="NoSuchScheduler"):
        load_sd_components(str(folder), device="cpu")


def test_folder_without_tokenizer_uses_the_packaged_one(saved, tmp_path):
    folder = _copy_without(saved, tmp_path / "no_tokenizer", "tokenizer")
    loaded = load_sd_components(str(folder), device="cpu")
    assert len(loaded.tokenizer) == 49408 and loaded.tokenizer.model_max_length == 77


def test_folder_without_tokenizer_and_a_foreign_vocabulary(original, tmp_path):
    foreign = SDComponents(**{**original.__dict__, "text_encoder": _text_encoder(hidden_size=32, vocab=1000)})
    folder = _copy_without(_save(foreign, tmp_path / "foreign"), tmp_path / "no_tokenizer", "tokenizer")
    with pytest.raises(WeightsError, match="tokenizer/ folder"):
        load_sd_components(str(folder), device="cpu")


def test_folder_whose_parts_do_not_fit(original, tmp_path):
    mismatched = SDComponents(**{**original.__dict__, "text_encoder": _text_encoder(hidden_size=16)})
    folder = _save(mismatched, tmp_path / "mismatched")
    with pytest.raises(WeightsError, match="cross-attention width 32 != text encoder width 16"):
        load_sd_components(str(folder), device="cpu")


def _text_encoder(hidden_size: int, vocab: int = 49408) -> CLIPTextModel:
    config = CLIPTextConfig(
        hidden_size=hidden_size,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        vocab_size=vocab,
        bos_token_id=min(49406, vocab - 2),
        eos_token_id=min(49407, vocab - 1),
        pad_token_id=min(49407, vocab - 1),
    )
    return CLIPTextModel(config).eval()


# --- hub ids and the HF cache ------------------------------------------------------------------------------


def test_hub_id_found_in_the_hf_cache_loads_offline(saved, original, tmp_path):
    cache = _fake_hub_cache(tmp_path / "hub", DEFAULT_SD_INPAINT, saved)
    loaded = load_sd_components(DEFAULT_SD_INPAINT, device="cpu", cache_dir=cache)
    _assert_same_weights(loaded, original, torch.float32)


def test_uncached_hub_id_offline_fails_fast_and_says_how_to_fix(tmp_path):
    start = time.monotonic()
    with pytest.raises(WeightsError) as err:
        load_sd_components("someone/not-cached-sd", device="cpu", cache_dir=tmp_path / "empty_cache")
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert "'someone/not-cached-sd'" in message and "not in the HF cache" in message
    assert str(tmp_path / "empty_cache") in message and "hf download someone/not-cached-sd" in message
    assert "\n" not in message


def test_incomplete_cached_hub_id_offline(tmp_path):
    cache = _fake_hub_cache(tmp_path / "hub", DEFAULT_SD_INPAINT, None)
    with pytest.raises(WeightsError, match="incomplete in the HF cache"):
        load_sd_components(DEFAULT_SD_INPAINT, device="cpu", cache_dir=cache)


@pytest.fixture
def online(monkeypatch):
    """Pretend the hub may be contacted; each test replaces the network calls themselves."""
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return huggingface_hub


def test_download_failure_is_one_weights_error(online, monkeypatch, tmp_path):
    def unreachable(*args, **kwargs):
        raise ConnectionError("[Errno -2] Name or service not known")

    monkeypatch.setattr(online.HfApi, "model_info", unreachable)
    with pytest.raises(WeightsError, match="could not be downloaded.*ConnectionError.*hf download org/sd"):
        load_sd_components("org/sd", device="cpu", cache_dir=tmp_path / "cache")


@pytest.mark.parametrize(("variant", "dtype"), [("auto", "float16"), (None, "float32")])
def test_download_fetches_only_the_needed_safetensors(online, monkeypatch, saved, tmp_path, variant, dtype):
    repo_files = ["model_index.json", "safety_checker/model.safetensors", "unet/diffusion_pytorch_model.bin"]
    for part, stem in (
        ("unet", "diffusion_pytorch_model"),
        ("vae", "diffusion_pytorch_model"),
        ("text_encoder", "model"),
    ):
        repo_files += [f"{part}/config.json", f"{part}/{stem}.safetensors", f"{part}/{stem}.fp16.safetensors"]
    calls = {}

    def model_info(self, repo_id, timeout=None, **kwargs):
        calls["timeout"] = timeout
        return SimpleNamespace(siblings=[SimpleNamespace(rfilename=f) for f in repo_files])

    def snapshot_download(repo_id, allow_patterns=None, **kwargs):
        calls["patterns"] = allow_patterns
        return str(saved)

    monkeypatch.setattr(online.HfApi, "model_info", model_info)
    monkeypatch.setattr(online, "snapshot_download", snapshot_download)
    loaded = load_sd_components("org/sd", device="cpu", dtype=dtype, variant=variant, cache_dir=tmp_path)
    assert loaded.unet.dtype == getattr(torch, dtype)
    assert 0 < calls["timeout"] <= 10
    patterns = calls["patterns"]
    if variant == "auto":  # float16: the fp16 files only
        assert {
            "unet/diffusion_pytorch_model.fp16*.safetensors",
            "text_encoder/model.fp16*.safetensors",
        } <= set(patterns)
        assert "unet/diffusion_pytorch_model.safetensors" not in patterns
    else:
        assert "unet/diffusion_pytorch_model.safetensors" in patterns
        assert not any("fp16" in p for p in patterns)
    assert {"model_index.json", "scheduler/*", "tokenizer/*", "vae/config.json"} <= set(patterns)
    assert not any("safety_checker" in p or p.endswith(".bin") for p in patterns)


# --- single files ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin"])
def test_pickle_checkpoints_are_refused_without_allow_ckpt(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(WeightsError, match=r"pickle.*allow_ckpt=True") as err:
        load_sd_components(str(path), device="cpu")
    assert "\n" not in str(err.value)


def test_pickle_checkpoint_is_read_with_allow_ckpt(tmp_path):
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"not.a.unet": torch.zeros(1)}}, path)
    with pytest.raises(WeightsError, match="not a Stable Diffusion checkpoint"):
        load_sd_components(str(path), device="cpu", allow_ckpt=True)


def test_safetensors_that_is_not_a_stable_diffusion_checkpoint(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"foo": torch.zeros(2)}, path)
    with pytest.raises(WeightsError, match="not a Stable Diffusion checkpoint"):
        load_sd_components(str(path), device="cpu")


def test_truncated_safetensors(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header")
    with pytest.raises(WeightsError, match="cannot read checkpoint"):
        load_sd_components(str(path), device="cpu")


def test_safetensors_of_another_model_family(tmp_path):
    path = tmp_path / "sdxl.safetensors"
    xl_key = "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias"
    save_file({LDM_UNET_KEY: torch.zeros(1, 9, 1, 1), xl_key: torch.zeros(1)}, path)
    with pytest.raises(WeightsError, match="xl_inpaint.*not SD-1.5"):
        load_sd_components(str(path), device="cpu")


def _ldm_stub(path: Path, in_channels: int) -> Path:
    save_file({LDM_UNET_KEY: torch.zeros(4, in_channels, 1, 1)}, path)
    return path


@pytest.mark.parametrize(
    ("in_channels", "repo"),
    [(9, DEFAULT_SD_INPAINT), (4, "stable-diffusion-v1-5/stable-diffusion-v1-5")],
)
def test_single_file_without_cached_configs_offline(tmp_path, in_channels, repo):
    path = _ldm_stub(tmp_path / "model.safetensors", in_channels)
    start = time.monotonic()
    with pytest.raises(WeightsError, match=rf"needs the configs of '{repo}'.*hf download {repo}.*config="):
        load_sd_components(str(path), device="cpu", cache_dir=tmp_path / "empty_cache")
    assert time.monotonic() - start < 5


def test_single_file_with_a_config_folder_reaches_from_single_file(tmp_path, saved):
    path = _ldm_stub(tmp_path / "model.safetensors", 9)  # configs found, but the weights are missing
    with pytest.raises(WeightsError, match=f"cannot load checkpoint .* with configs from {saved}"):
        load_sd_components(str(path), device="cpu", config=str(saved))


def test_single_file_with_configs_from_the_hf_cache(tmp_path, saved):
    cache = _fake_hub_cache(tmp_path / "hub", DEFAULT_SD_INPAINT, saved)
    path = _ldm_stub(tmp_path / "model.safetensors", 9)
    with pytest.raises(WeightsError, match="cannot load checkpoint .* with configs from .*models--"):
        load_sd_components(str(path), device="cpu", cache_dir=cache)


def test_single_file_with_a_missing_config_folder(tmp_path):
    path = _ldm_stub(tmp_path / "model.safetensors", 9)
    with pytest.raises(WeightsError, match="no such folder"):
        load_sd_components(str(path), device="cpu", config=str(tmp_path / "nope"))


# --- writing tiny components as an original (LDM) single-file checkpoint -----------------------------------
# The inverse of diffusers' single-file conversion, for the block layout of any UNet2DConditionModel /
# AutoencoderKL config (diffusers' own reverse script hard-codes SD-1.5's four levels).

_LDM_RESNET = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
]
_LDM_VAE_ATTENTION = [
    ("group_norm.", "norm."),
    ("to_q.", "q."),
    ("to_k.", "k."),
    ("to_v.", "v."),
    ("to_out.0.", "proj_out."),
]


def _ldm_unet_prefixes(config) -> list[tuple[str, str]]:
    """(diffusers prefix, LDM prefix) of every block of a UNet2DConditionModel config."""
    per, n = config["layers_per_block"], len(config["down_block_types"])
    pairs = [
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("conv_in.", "input_blocks.0.0."),
        ("conv_norm_out.", "out.0."),
        ("conv_out.", "out.2."),
        ("mid_block.resnets.0.", "middle_block.0."),
        ("mid_block.attentions.0.", "middle_block.1."),
        ("mid_block.resnets.1.", "middle_block.2."),
    ]
    for i, kind in enumerate(config["down_block_types"]):
        for j in range(per):
            block = 1 + i * (per + 1) + j
            pairs.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{block}.0."))
            if "CrossAttn" in kind:
                pairs.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{block}.1."))
        if i < n - 1:
            pairs.append(
                (f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(i + 1) * (per + 1)}.0.op.")
            )
    for i, kind in enumerate(config["up_block_types"]):
        attention = "CrossAttn" in kind
        for j in range(per + 1):
            pairs.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{i * (per + 1) + j}.0."))
            if attention:
                pairs.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{i * (per + 1) + j}.1."))
        if i < n - 1:
            upsampler = f"output_blocks.{i * (per + 1) + per}.{2 if attention else 1}."
            pairs.append((f"up_blocks.{i}.upsamplers.0.", upsampler))
    return pairs


def _ldm_vae_prefixes(config) -> list[tuple[str, str]]:
    """(diffusers prefix, LDM prefix) of every block of an AutoencoderKL config."""
    per, n = config["layers_per_block"], len(config["down_block_types"])
    pairs = []
    for part in ("encoder", "decoder"):
        pairs.append((f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1."))
        pairs += [(f"{part}.mid_block.resnets.{k}.", f"{part}.mid.block_{k + 1}.") for k in range(2)]
        pairs.append((f"{part}.conv_norm_out.", f"{part}.norm_out."))
    for i in range(n):
        pairs += [
            (f"encoder.down_blocks.{i}.resnets.{j}.", f"encoder.down.{i}.block.{j}.") for j in range(per)
        ]
        up = n - 1 - i  # LDM numbers decoder levels from the bottom
        pairs += [
            (f"decoder.up_blocks.{i}.resnets.{j}.", f"decoder.up.{up}.block.{j}.") for j in range(per + 1)
        ]
        if i < n - 1:
            pairs.append((f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."))
            pairs.append((f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{up}.upsample."))
    return pairs


def _renamed(key: str, pairs: list[tuple[str, str]]) -> str:
    for diffusers_prefix, ldm_prefix in pairs:
        if key.startswith(diffusers_prefix):
            return ldm_prefix + key[len(diffusers_prefix) :]
    return key


def _ldm_state_dict(components: SDComponents) -> dict[str, torch.Tensor]:
    """The tiny model's weights under the key names of an original SD-1.5 checkpoint."""
    out = {}
    unet_pairs = _ldm_unet_prefixes(components.unet.config)
    for key, value in components.unet.state_dict().items():
        new = _renamed(key, unet_pairs)
        if ".resnets." in key:
            for diffusers_name, ldm_name in _LDM_RESNET:
                new = new.replace(f".{diffusers_name}.", f".{ldm_name}.")
        out[f"model.diffusion_model.{new}"] = value
    vae_pairs = _ldm_vae_prefixes(components.vae.config)
    for key, value in components.vae.state_dict().items():
        new = _renamed(key, vae_pairs).replace("conv_shortcut", "nin_shortcut")
        if ".attn_1." in new:
            for diffusers_name, ldm_name in _LDM_VAE_ATTENTION:
                new = new.replace(f".attn_1.{diffusers_name}", f".attn_1.{ldm_name}")
            if new.endswith(("q.weight", "k.weight", "v.weight", "proj_out.weight")):
                value = value.reshape(*value.shape, 1, 1)  # LDM uses 1x1 convolutions
        out[f"first_stage_model.{new}"] = value
    for key, value in components.text_encoder.state_dict().items():
        key = key if key.startswith("text_model.") else f"text_model.{key}"  # transformers 5 flattened it
        out[f"cond_stage_model.transformer.{key}"] = value
    return {k: v.contiguous() for k, v in out.items()}


@pytest.fixture(scope="module")
def ldm_checkpoint(original, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ldm") / "tiny-inpainting.safetensors"
    save_file(_ldm_state_dict(original), path)
    return path


def test_single_file_with_a_config_folder_loads_identical_weights(ldm_checkpoint, saved, original):
    loaded = load_sd_components(str(ldm_checkpoint), device="cpu", config=str(saved))
    _assert_same_weights(loaded, original, torch.float32)
    assert len(loaded.tokenizer) == 49408 and loaded.tokenizer.model_max_length == 77
    assert _public(loaded.scheduler.config) == _public(original.scheduler.config)


def test_single_file_finds_its_configs_in_the_hf_cache(ldm_checkpoint, saved, original, tmp_path):
    """9 input channels -> the SD-1.5 inpainting repo's configs, taken from the (fake) HF cache, offline."""
    cache = _fake_hub_cache(tmp_path / "hub", DEFAULT_SD_INPAINT, saved)
    loaded = load_sd_components(str(ldm_checkpoint), device="cpu", dtype="bfloat16", cache_dir=cache)
    _assert_same_weights(loaded, original, torch.bfloat16)


def test_pickle_checkpoint_loads_with_allow_ckpt(ldm_checkpoint, saved, original, tmp_path):
    from safetensors.torch import load_file

    path = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": load_file(ldm_checkpoint)}, path)
    loaded = load_sd_components(str(path), device="cpu", allow_ckpt=True, config=str(saved))
    _assert_same_weights(loaded, original, torch.float32)


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"onnx")
    with pytest.raises(WeightsError, match="unsupported model file type '.onnx'"):
        load_sd_components(str(path), device="cpu")


# --- references and arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref", ["./no/such/folder", "/no/such/model", "weights/model.safetensors", "a/b/c", "~/missing.ckpt"]
)
def test_missing_paths(ref):
    with pytest.raises(WeightsError, match="no such file or folder"):
        load_sd_components(ref, device="cpu")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dtype": "float8"}, "unknown dtype 'float8'"),
        ({"device": "gpu0"}, "device='gpu0' is not a device"),
        ({"variant": ""}, "unknown weights variant"),
        ({"scheduler": "NoSuchScheduler"}, "unknown scheduler 'NoSuchScheduler'"),
        ({"config": "some/folder"}, "only applies to single checkpoint files"),
    ],
)
def test_bad_arguments_are_rejected_before_loading(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        load_sd_components("someone/never-looked-up", **{"device": "cpu", **kwargs})


@pytest.mark.parametrize("ref", ["", "   ", None, 3])
def test_bad_reference(ref):
    with pytest.raises(ConfigError, match="model reference"):
        load_sd_components(ref, device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu():
    with pytest.raises(ConfigError, match="no CUDA GPU.*device=cpu"):
        load_sd_components("tiny", device="cuda")


# --- scheduler lookup -------------------------------------------------------------------------------------


def test_every_scheduler_example_is_a_diffusers_scheduler_of_that_name():
    assert [scheduler_class(name).__name__ for name in SCHEDULER_EXAMPLES] == list(SCHEDULER_EXAMPLES)


@pytest.mark.parametrize("name", ["NoSuchScheduler", "AutoencoderKL", "SchedulerMixin", "", 5, None])
def test_scheduler_class_rejects_what_is_no_scheduler(name):
    with pytest.raises(ConfigError, match=f"unknown scheduler {name!r}: use a diffusers scheduler class name"):
        scheduler_class(name)


def test_loading_weights_or_tiny_components_does_not_import_the_engine():
    """The scheduler lookup is a leaf module: weights.py and tiny.py no longer import inpaint/diffusion.py
    (which imports weights.py back), so there is no import cycle between the three."""
    code = (
        "import sys, inpaint_anon.weights, inpaint_anon.inpaint.tiny; "
        "print([m in sys.modules for m in ('inpaint_anon.inpaint.diffusion', 'inpaint_anon.inpaint.schedulers')])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert result.stdout.strip() == "[False, True]"

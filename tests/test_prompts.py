"""encode_prompts: shapes, exact parity with diffusers' encode_prompt, truncation warnings, validation."""

from __future__ import annotations

import logging

import pytest
import torch
from diffusers import StableDiffusionInpaintPipeline

from inpaint_anon.errors import ConfigError
from inpaint_anon.inpaint.tiny import tiny_components
from inpaint_anon.prompts import DEFAULT_NEGATIVE_PROMPT, DEFAULT_PROMPT, DEFAULT_PROMPTS, encode_prompts
from inpaint_anon.tokenizer import clip_tokenizer

LONG_PROMPT = "a photo of a person walking " + "in a long red coat with many buttons " * 12


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    return tiny_components(seed=1, tokenizer=clip_tokenizer(tmp_path_factory.mktemp("tokenizer_cache")))


@pytest.fixture(scope="module")
def pipe(components) -> StableDiffusionInpaintPipeline:
    return components.to_pipeline()


def _encode(components, prompts, negative=DEFAULT_NEGATIVE_PROMPT, **kwargs):
    return encode_prompts(prompts, negative, components.tokenizer, components.text_encoder, **kwargs)


def test_default_prompts_cover_the_street_classes():
    assert set(DEFAULT_PROMPTS) == {"person", "bicycle", "car", "motorcycle", "bus", "truck", "face", "plate"}
    assert all("different" in text and "realistic" in text for text in DEFAULT_PROMPTS.values())
    with pytest.raises(TypeError):
        DEFAULT_PROMPTS["person"] = "changed"  # read-only: copy it to change it


def test_default_prompts_fit_in_77_tokens(components):
    for text in [*DEFAULT_PROMPTS.values(), DEFAULT_NEGATIVE_PROMPT, DEFAULT_PROMPT]:
        assert len(components.tokenizer(text).input_ids) <= 77, text


def test_shapes_dtype_and_device(components):
    embeds = _encode(components, DEFAULT_PROMPTS)
    hidden = components.text_encoder.config.hidden_size
    assert set(embeds.cond) == set(DEFAULT_PROMPTS)
    for tensor in [*embeds.cond.values(), embeds.uncond, embeds.default]:
        assert tensor.shape == (77, hidden) and tensor.dtype == torch.float32
        assert tensor.device.type == "cpu" and not tensor.requires_grad
    assert not torch.equal(embeds.cond["person"], embeds.cond["car"])
    assert torch.equal(embeds.for_class("dog"), embeds.default)


def test_output_dtype_is_honoured(components):
    embeds = _encode(components, {"car": "a red car"}, device="cpu", dtype=torch.float16)
    assert {t.dtype for t in [embeds.cond["car"], embeds.uncond, embeds.default]} == {torch.float16}


def test_equal_to_diffusers_encode_prompt(components, pipe):
    prompts = {"person": DEFAULT_PROMPTS["person"], "car": "a car, café; 東京 🚗 (blue)!"}
    embeds = _encode(components, prompts, negative="blurry, text")
    for name, text in prompts.items():
        cond, uncond = pipe.encode_prompt(text, torch.device("cpu"), 1, True, negative_prompt="blurry, text")
        assert (embeds.cond[name] - cond[0]).abs().max().item() == 0
        assert (embeds.uncond - uncond[0]).abs().max().item() == 0


def test_clip_skip(components):
    """diffusers' own clip_skip path looks for ``text_encoder.text_model``, which transformers 5 removed, so
    compare with the computation written out: hidden state ``-(clip_skip + 1)`` through the final norm."""
    prompts = {"car": "a blue car"}
    last = _encode(components, prompts)
    assert torch.equal(_encode(components, prompts, clip_skip=0).cond["car"], last.cond["car"])
    skipped = _encode(components, prompts, clip_skip=1)
    tokens = components.tokenizer("a blue car", padding="max_length", max_length=77, return_tensors="pt")
    ids = tokens.input_ids
    with torch.no_grad():
        states = components.text_encoder(ids, output_hidden_states=True).hidden_states
        want = components.text_encoder.final_layer_norm(states[-2])[0]
    assert torch.equal(skipped.cond["car"], want)
    assert not torch.equal(skipped.cond["car"], last.cond["car"])


def test_long_prompt_is_truncated_with_a_warning_naming_the_class(components, pipe, caplog):
    with caplog.at_level(logging.WARNING, logger="inpaint_anon.prompts"):
        embeds = _encode(components, {"person": LONG_PROMPT, "car": "a car"})
    warnings = [r.getMessage() for r in caplog.records if r.name == "inpaint_anon.prompts"]
    assert len(warnings) == 1
    assert "class 'person'" in warnings[0] and "truncated" in warnings[0]
    cond, _ = pipe.encode_prompt(LONG_PROMPT, torch.device("cpu"), 1, False)
    assert torch.equal(embeds.cond["person"], cond[0])


def test_empty_prompt_table_uses_the_default(components, pipe):
    embeds = _encode(components, {}, default_prompt="a street")
    assert embeds.cond == {}
    default, _ = pipe.encode_prompt("a street", torch.device("cpu"), 1, False)
    assert torch.equal(embeds.for_class("person"), default[0])


def test_shared_texts_are_encoded_once(components, monkeypatch):
    calls = []
    forward = components.text_encoder.forward

    def counting_forward(*args, **kwargs):
        calls.append(1)
        return forward(*args, **kwargs)

    monkeypatch.setattr(components.text_encoder, "forward", counting_forward)
    embeds = _encode(components, {"car": "a vehicle", "truck": "a vehicle"}, negative="", default_prompt="")
    assert len(calls) == 2  # "a vehicle" and ""
    assert torch.equal(embeds.cond["car"], embeds.cond["truck"])


@pytest.mark.parametrize(
    ("prompts", "kwargs", "match"),
    [
        (["person"], {}, "mapping class name -> prompt"),
        ({"": "x"}, {}, "not a class name"),
        ({"car": 3}, {}, "class 'car' must be a string"),
        ({"car": "x"}, {"negative": None}, "negative_prompt must be a string"),
        ({"car": "x"}, {"default_prompt": 1}, "default_prompt must be a string"),
        ({"car": "x"}, {"clip_skip": 99}, "clip_skip"),
    ],
)
def test_bad_arguments(components, prompts, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        _encode(components, prompts, **kwargs)


def test_tokenizer_longer_than_the_text_encoder(components, monkeypatch):
    monkeypatch.setattr(components.tokenizer, "model_max_length", 1000000000000000019884624838656)
    with pytest.raises(ConfigError, match="model_max_length=77"):
        _encode(components, {"car": "x"})

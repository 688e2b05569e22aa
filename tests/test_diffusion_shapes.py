"""LatentInpainter's static shapes: crop buckets, padded batches, torch.compile (with its eager fallback),
warmup(), and the CPU path that creates no CUDA stream. Tiny models (downsampling multiple 4), 1 step, no
guidance, crops of 16 and 32 px: the machine is small."""

from __future__ import annotations

import logging
from contextlib import nullcontext

import pytest
import torch
from torch._dynamo.exc import BackendCompilerFailed

from inpaint_anon.errors import ConfigError
from inpaint_anon.inpaint.base import InpaintBatch, InpaintOutput
from inpaint_anon.inpaint.diffusion import LatentInpainter, _bucket, _Streams
from inpaint_anon.inpaint.tiny import tiny_components
from inpaint_anon.types import Detections, PromptEmbeds, SDComponents

H, W = 112, 112
NAMES = {0: "person"}
# mask sides -> crop window sides round(s * 1.5) + 8 (padding 0.25, 4 px context each side)
SIDES = {4: 14, 16: 32, 17: 34, 40: 68, 60: 98}


@pytest.fixture(scope="module")
def components() -> SDComponents:
    return tiny_components(unet_in_channels=9)


@pytest.fixture(scope="module")
def prompt_embeds() -> PromptEmbeds:
    g = torch.Generator().manual_seed(1)
    person, uncond, default = torch.randn(3, 77, 32, generator=g)
    return PromptEmbeds(cond={"person": person}, uncond=uncond, default=default)


@pytest.fixture(scope="module")
def plain_out(components, prompt_embeds) -> InpaintOutput:
    """The default inpainter's output on ``make_batch([4, 5])``: the unbucketed, unpadded, eager, CPU path."""
    return make(components, prompt_embeds)(make_batch([4, 5]))


def make(components: SDComponents, prompt_embeds: PromptEmbeds, **kwargs) -> LatentInpainter:
    settings = {"steps": 1, "guidance_scale": 1.0, "resolution": 16, "device": "cpu"} | kwargs
    return LatentInpainter(components, prompt_embeds, **settings)


def make_batch(sides: list[int]) -> InpaintBatch:
    """One 112x112 frame with a square region of each side."""
    masks = torch.zeros(len(sides), H, W, dtype=torch.bool)
    corners = [(2, 2), (60, 4), (4, 60), (50, 50), (30, 30)]
    for i, side in enumerate(sides):
        y, x = corners[i]
        masks[i, y : y + side, x : x + side] = True
    image = torch.randint(0, 256, (1, 3, H, W), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    return InpaintBatch(image, [Detections.from_masks(masks, [0] * len(sides), NAMES)], [0])


def by_region(out: InpaintOutput) -> dict[int, tuple]:
    return {f.region: (f.window, f.rgb, f.mask) for f in out.fills}


def count_unet_shapes(monkeypatch, components: SDComponents, run: bool = True) -> list[tuple[int, ...]]:
    """The input shapes of every U-Net call from now on (``run`` False: the U-Net predicts zeros, faster)."""
    shapes: list[tuple[int, ...]] = []
    original = components.unet.forward

    def forward(sample, *args, **kwargs):
        shapes.append(tuple(sample.shape))
        return original(sample, *args, **kwargs) if run else (torch.zeros_like(sample[:, :4]),)

    monkeypatch.setattr(components.unet, "forward", forward)
    return shapes


# -------------------------------------------------------------------------------------------- buckets


def test_each_window_goes_to_the_smallest_bucket_that_holds_it(components, prompt_embeds):
    assert [_bucket(s, [32, 64, 96]) for s in (1, 32, 33, 64, 65, 96, 97, 500)] == [32, 32, 64, 64, 96, 96, 96, 96]
    inpainter = make(components, prompt_embeds, buckets=[16, 32, 64])
    batch = make_batch(list(SIDES))
    regions = inpainter._list_regions(batch, H, W)
    assert [r.window.x1 - r.window.x0 for r in regions] == list(SIDES.values())
    assert [r.size for r in regions] == [16, 32, 64, 64, 64]  # 14, 32, 34, 68, 98 (the largest: 64)
    for size in (16, 32, 64):
        crops, masks = inpainter._prepare_crops(batch.images, batch.detections, [r for r in regions if r.size == size])
        assert crops.shape[1:] == (3, size, size) and masks.shape[1:] == (1, size, size)


def test_one_bucket_equal_to_resolution_is_the_unbucketed_path(components, prompt_embeds, plain_out):
    plain = plain_out
    bucketed = make(components, prompt_embeds, buckets=[16])(make_batch([4, 5]))
    assert [(f.region, f.window) for f in bucketed.fills] == [(f.region, f.window) for f in plain.fills]
    assert all(torch.equal(a.rgb, b.rgb) and torch.equal(a.mask, b.mask) for a, b in zip(bucketed.fills, plain.fills))


def test_buckets_paste_on_the_same_pixels_and_match_unbucketed_where_sizes_coincide(components, prompt_embeds):
    """Regions 0, 2 go to bucket 16, region 1 to 32 (chunks: 0, 2 then 1): each fill has the unbucketed
    fill's window and mask, and its pixels are those of the unbucketed inpainter at that resolution (max_batch 1:
    the same U-Net batches), in region order."""
    batch = make_batch([4, 16, 5])
    bucketed = make(components, prompt_embeds, buckets=[16, 32], max_batch=1)(batch)
    at16 = by_region(make(components, prompt_embeds, resolution=16, max_batch=1)(batch))
    at32 = by_region(make(components, prompt_embeds, resolution=32, max_batch=1)(batch))
    assert [(f.frame, f.region) for f in bucketed.fills] == [(0, 0), (0, 1), (0, 2)]  # region order
    for fill in bucketed.fills:
        expected = (at16 if fill.region in (0, 2) else at32)[fill.region]
        assert fill.window == expected[0] == at16[fill.region][0]
        assert torch.equal(fill.mask, expected[2]) and torch.equal(fill.mask, batch.detections[0].masks[fill.region][
            fill.window[1] : fill.window[3], fill.window[0] : fill.window[2]])
        assert torch.equal(fill.rgb, expected[1])
    assert not torch.equal(bucketed.fills[1].rgb, at16[1][1])  # bucket 32 really ran at 32


def test_model_inputs_are_given_per_bucket(components, prompt_embeds):
    batch = make_batch([4, 5, 12])
    inpainter = make(components, prompt_embeds, buckets=[16, 32])
    with pytest.raises(ValueError, match="bucket="):
        inpainter.model_inputs(batch)
    crops16, masks16, cond16, gens16 = inpainter.model_inputs(batch, bucket=16)
    crops32, *_ = inpainter.model_inputs(batch, bucket=32)
    assert crops16.shape == (2, 3, 16, 16) and masks16.shape == (2, 1, 16, 16) and len(gens16) == 2
    assert crops32.shape == (1, 3, 32, 32) and cond16.shape == (2, 77, 32)


# ------------------------------------------------------------------------------------------- padding


def test_padding_to_a_batch_size_leaves_the_real_crops_unchanged(components, prompt_embeds, monkeypatch):
    batch = make_batch([4, 5, 3])
    settings = {"max_batch": 4, "guidance_scale": 6.0}
    plain = make(components, prompt_embeds, **settings)(batch)
    shapes = count_unet_shapes(monkeypatch, components)
    padded = make(components, prompt_embeds, batch_sizes=[4], **settings)(batch)
    assert shapes == [(8, 9, 8, 8)]  # 3 crops padded to 4, twice for guidance, 1 step
    assert [(f.region, f.window) for f in padded.fills] == [(f.region, f.window) for f in plain.fills]
    assert all(torch.equal(a.rgb, b.rgb) for a, b in zip(padded.fills, plain.fills)) and padded.fallbacks == []


# ---------------------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"buckets": [30, 64]}, "bucket 30 does not fit .* multiples of 4"),
        ({"buckets": [64, 32]}, r"sorted .* use \[32, 64\]"),
        ({"buckets": [32, 32]}, "without repeats"),
        ({"buckets": []}, "non-empty"),
        ({"buckets": [32.0]}, "integers"),
        ({"batch_sizes": [0, 2]}, "batch_sizes"),
        ({"batch_sizes": [1, 2, 4], "max_batch": 8}, "max_batch 8 is larger .* add 8 to batch_sizes"),
        ({"compile": "yes"}, "compile must be true, false or auto"),
        ({"compile_mode": "fast"}, "compile_mode"),
    ],
)
def test_bad_shape_settings_are_rejected(components, prompt_embeds, kwargs, words):
    with pytest.raises(ConfigError, match=words):
        make(components, prompt_embeds, **kwargs)


# ---------------------------------------------------------------------------------------- compilation


def test_compile_auto_is_off_on_cpu_and_said_so(components, prompt_embeds):
    inpainter = make(components, prompt_embeds, compile="auto")
    assert inpainter.unet is inpainter._eager_unet
    record = inpainter.run_record()["diffusion"]
    assert record["compiled"] is False and "CUDA only" in record["compile_reason"] and record["warmup_s"] is None


@pytest.mark.slow
def test_compiled_unet_traces_whole_and_matches_eager(components, prompt_embeds, monkeypatch):
    """fullgraph tracing of the U-Net (dynamo, no graph break), with the eager backend so that no C++ is built."""
    batch = make_batch([4, 16])
    eager = make(components, prompt_embeds)(batch)
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, mode, fullgraph: real_compile(model, backend="eager",
                                                                                      fullgraph=fullgraph))
    inpainter = make(components, prompt_embeds, compile=True)
    try:
        out = inpainter(batch)
        assert inpainter.compiled and inpainter.run_record()["diffusion"]["compile_reason"] is None
        assert inpainter.unet is not inpainter._eager_unet
        for a, b in zip(out.fills, eager.fills):
            assert (a.rgb.int() - b.rgb.int()).abs().max() <= 1
    finally:
        components.unet.to(memory_format=torch.contiguous_format)
        torch._dynamo.reset()


def test_compile_failure_falls_back_to_eager_and_records_why(components, prompt_embeds, plain_out, monkeypatch,
                                                             caplog):
    """torch.compile is lazy: it fails at the first call, as BackendCompilerFailed (what dynamo raises when
    inductor finds no C compiler) around the compiler's error."""
    batch, eager = make_batch([4, 5]), plain_out

    class NoCompiler(torch.nn.Module):
        """A compiled U-Net as the inpainter sees it: the model's config, and a first call that fails to compile."""

        def __init__(self, unet: torch.nn.Module) -> None:
            super().__init__()
            self.config = unet.config

        def forward(self, *args, **kwargs):
            raise BackendCompilerFailed(self.forward, RuntimeError("no C compiler found"), None)

    monkeypatch.setattr(torch, "compile", lambda model, mode, fullgraph: NoCompiler(model))
    inpainter = make(components, prompt_embeds, compile=True)
    assert inpainter.compiled and isinstance(inpainter.unet, NoCompiler)
    try:
        with caplog.at_level(logging.WARNING):
            out = inpainter(batch)
        record = inpainter.run_record()["diffusion"]
        assert record["compiled"] is False and "no C compiler found" in record["compile_reason"]
        assert "running it eagerly" in caplog.text and out.fallbacks == []
        assert inpainter.unet is inpainter._eager_unet
        assert all((a.rgb.int() - b.rgb.int()).abs().max() <= 1 for a, b in zip(out.fills, eager.fills))
        assert len(out.fills) == 2
    finally:
        components.unet.to(memory_format=torch.contiguous_format)


@pytest.mark.slow
def test_inductor_compile_on_cpu_matches_eager(prompt_embeds):
    """The real torch.compile (inductor, C++ kernels built with the system compiler) on the tiny U-Net."""
    components = tiny_components(unet_in_channels=9)
    batch = make_batch([4])
    eager = make(components, prompt_embeds)(batch)
    inpainter = make(components, prompt_embeds, compile=True, compile_mode="default")
    try:
        out = inpainter(batch)
    finally:
        torch._dynamo.reset()
    record = inpainter.run_record()["diffusion"]
    if not record["compiled"]:  # no working C compiler here: the eager fallback, with its reason
        assert record["compile_reason"].startswith("failed: ")
    assert all((a.rgb.int() - b.rgb.int()).abs().max() <= 2 for a, b in zip(out.fills, eager.fills))


# ---------------------------------------------------------------------------------------------- warmup


def test_warmup_runs_every_bucket_and_batch_size_once(components, prompt_embeds, monkeypatch):
    inpainter = make(components, prompt_embeds, buckets=[16, 32], batch_sizes=[1, 2], max_batch=2)
    shapes = count_unet_shapes(monkeypatch, components, run=False)
    seconds = inpainter.warmup()
    # 1 step each, no guidance; latents at half the crop side
    assert shapes == [(1, 9, 8, 8), (2, 9, 8, 8), (1, 9, 16, 16), (2, 9, 16, 16)]
    assert seconds > 0 and inpainter.run_record()["diffusion"]["warmup_s"] == seconds


def test_from_pretrained_warms_up_when_asked(monkeypatch):
    warmed: list[LatentInpainter] = []
    monkeypatch.setattr(LatentInpainter, "warmup", lambda self: warmed.append(self) or 1.0)
    cold = LatentInpainter.from_pretrained("tiny", resolution=16, device="cpu")
    warm = LatentInpainter.from_pretrained("tiny", resolution=16, device="cpu", warmup=True)
    assert warmed == [warm] and cold is not warm
    # auto: only a compiled U-Net is warmed up (compile=auto stays eager on CPU)
    auto = LatentInpainter.from_pretrained("tiny", resolution=16, device="cpu", warmup="auto", compile="auto")
    assert warmed == [warm] and auto.compiled is False
    with pytest.raises(ConfigError, match="warmup must be true, false or auto, got 'yes'"):
        LatentInpainter.from_pretrained("tiny", resolution=16, device="cpu", warmup="yes")


# ------------------------------------------------------------------------------------- streams on CPU


def test_cpu_path_creates_no_cuda_stream_or_event(components, prompt_embeds, plain_out, monkeypatch):
    batch, before = make_batch([4, 5]), plain_out

    def forbidden(*args, **kwargs):
        raise AssertionError("a CUDA stream or event was created on CPU")

    for name in ("Stream", "Event", "stream", "current_stream"):
        monkeypatch.setattr(torch.cuda, name, forbidden)
    inpainter = make(components, prompt_embeds)
    assert inpainter._streams is None
    job = inpainter.encode_step(batch)
    out = inpainter.decode_step(inpainter.denoise_step(job))
    assert job.ready is None
    assert all(torch.equal(a.rgb, b.rgb) for a, b in zip(out.fills, before.fills)) and len(out.fills) == 2


def test_stages_run_on_their_own_streams_in_order(components, prompt_embeds, plain_out, monkeypatch):
    """The CUDA-only _Streams logic with stand-in streams and events (this machine has no GPU): each stage waits
    for the event of the job's previous stage, records its own and waits for its stream; the caller's stream
    waits for the last one. The fills are those of the plain CPU path."""
    log: list[tuple[str, str]] = []

    class FakeStream:
        def __init__(self, name: str) -> None:
            self.name = name

        def wait_event(self, event) -> None:
            log.append((self.name, f"wait {event.stream}"))

        def synchronize(self) -> None:
            log.append((self.name, "sync"))

    class FakeEvent:
        def record(self, stream: FakeStream) -> None:
            self.stream = stream.name
            log.append((stream.name, "record"))

    names = iter(_Streams.NAMES)
    monkeypatch.setattr(torch.cuda, "Stream", lambda device: FakeStream(next(names)))
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: FakeStream("caller"))
    monkeypatch.setattr(_Streams, "to_device", lambda self, images: images)
    batch, plain = make_batch([4, 5]), plain_out
    inpainter = make(components, prompt_embeds)
    inpainter._streams = _Streams(torch.device("cpu"))
    out = inpainter(batch)
    assert log == [("encode", "record"), ("encode", "sync"),
                   ("unet", "wait encode"), ("unet", "record"), ("unet", "sync"),
                   ("decode", "wait unet"), ("decode", "record"), ("decode", "sync"),
                   ("caller", "wait decode")]
    assert all(torch.equal(a.rgb, b.rgb) for a, b in zip(out.fills, plain.fills)) and len(out.fills) == 2

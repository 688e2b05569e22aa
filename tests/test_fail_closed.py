"""Privacy fails closed, end to end: every pixel of every known region is obscured whatever the inpainter does.

The clips are lossless (FFV1) with textured objects (random noise under the person and car masks) and the
output is written losslessly too, so "obscured" is checked per pixel: each region pixel must equal what the
fail-closed fallback makes of it (the blur fallback composited by the same Compositor), or be the solid black of
the last resort. A region left as it was would fail every one of these checks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inpaint_anon.composite import MIN_CHANGE, Compositor
from inpaint_anon.detect.scripted import ScriptedDetector
from inpaint_anon.errors import ConfigError
from inpaint_anon.inpaint.base import InpaintBatch, Inpainter, InpaintOutput, RegionFill
from inpaint_anon.inpaint.diffusion import LatentInpainter
from inpaint_anon.inpaint.fast import BlurInpainter, PixelateInpainter, ScrambleInpainter, SolidInpainter
from inpaint_anon.inpaint.tiny import tiny_components
from inpaint_anon.pipeline import AnonymizePipeline
from inpaint_anon.types import PromptEmbeds, masks_to_boxes
from tests.textured import (
    NAMES,
    SIZE,
    N,
    assert_every_region_pixel_is,
    fallback_frame,
    read_all,
    run_lossless,
    truth,
    truth_detector,
)
from tests.textured import textured_clip as make_textured_clip

KEY = "0123456789abcdef" * 4


@pytest.fixture
def textured_clip(tmp_path: Path) -> Path:
    return make_textured_clip(tmp_path / "in.mkv")


def fallback_events(events: list[dict]) -> list[tuple[int, int, str]]:
    return sorted((e["frame_index"], e["region"], e["used"]) for e in events if e["event"] == "fallback")


def raising(cls: type[Inpainter]) -> type[Inpainter]:
    """A subclass of ``cls`` whose every call raises (a crashed generator)."""

    def fail(self: Inpainter, batch: InpaintBatch) -> InpaintOutput:
        raise RuntimeError(f"{self.name} crashed")

    return type(f"Raising{cls.__name__}", (cls,), {"__call__": fail})


FAST = {
    "blur": lambda cls: cls(device="cpu"),
    "pixelate": lambda cls: cls(device="cpu"),
    "solid": lambda cls: cls(device="cpu"),
    "scramble": lambda cls: cls(KEY, device="cpu"),
}
FAST_CLASSES = {"blur": BlurInpainter, "pixelate": PixelateInpainter, "solid": SolidInpainter,
                "scramble": ScrambleInpainter}


@pytest.mark.parametrize("name", sorted(FAST))
def test_a_crashing_fast_inpainter_is_replaced_by_the_blur_fallback(name: str, textured_clip: Path,
                                                                    tmp_path: Path) -> None:
    inpainter = FAST[name](raising(FAST_CLASSES[name]))
    out = tmp_path / "out.mkv"
    pipe = AnonymizePipeline(truth_detector(), inpainter, batch_frames=4, progress=False)
    result = run_lossless(pipe, textured_clip, out)
    assert fallback_events(result.events) == [(i, r, "blur") for i in range(N) for r in (0, 1)]
    for i, (src, dst) in enumerate(zip(read_all(textured_clip), read_all(out))):
        assert_every_region_pixel_is(fallback_frame(src, truth(i), feather=inpainter.feather), dst, truth(i), i)


def tiny_diffusion(**kwargs) -> LatentInpainter:
    g = torch.Generator().manual_seed(1)
    person, car, uncond, default = torch.randn(4, 77, 32, generator=g)
    embeds = PromptEmbeds(cond={"person": person, "car": car}, uncond=uncond, default=default)
    settings = {"steps": 2, "guidance_scale": 1.0, "resolution": 32, "device": "cpu", "max_batch": 4} | kwargs
    return LatentInpainter(tiny_components(unet_in_channels=9), embeds, **settings)


def test_a_crashing_generator_is_replaced_by_the_blur_fallback(textured_clip: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The diffusion path: the U-Net raises on every chunk and every retry; each region is blurred instead."""
    inpainter = tiny_diffusion()

    def broken_unet(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(inpainter.unet, "forward", broken_unet)
    out = tmp_path / "out.mkv"
    pipe = AnonymizePipeline(truth_detector(), inpainter, batch_frames=3, progress=False)
    result = run_lossless(pipe, textured_clip, out)
    events = [e for e in result.events if e["event"] == "fallback"]
    assert fallback_events(events) == [(i, r, "blur") for i in range(N) for r in (0, 1)]
    assert {e["reason"] for e in events} == {"OutOfMemoryError: CUDA out of memory"}
    for i, (src, dst) in enumerate(zip(read_all(textured_clip), read_all(out))):
        assert_every_region_pixel_is(fallback_frame(src, truth(i)), dst, truth(i), i)
    assert {"inpaint.vae_encode", "inpaint.fallback", "inpaint.paste"} <= set(result.timings)


def test_a_working_generator_changes_every_region_and_reports_its_own_timings(textured_clip: Path,
                                                                               tmp_path: Path) -> None:
    inpainter = tiny_diffusion()
    pipe = AnonymizePipeline(truth_detector(), inpainter, batch_frames=3, progress=False)
    result = run_lossless(pipe, textured_clip, tmp_path / "out.mkv")
    assert fallback_events(result.events) == []
    for i, (src, dst) in enumerate(zip(read_all(textured_clip), read_all(tmp_path / "out.mkv"))):
        change = Compositor().changes(torch.from_numpy(src).permute(2, 0, 1), torch.from_numpy(dst).permute(2, 0, 1),
                                      truth(i).masks)
        assert (change >= MIN_CHANGE).all(), f"frame {i}: {change.tolist()}"
    steps = {"crop", "vae_encode", "unet", "vae_decode", "paste", "fallback"}
    assert {k for k in result.timings if k.startswith("inpaint.")} == {f"inpaint.{s}" for s in steps}
    assert result.timings["inpaint.unet"] <= result.timings["inpaint"]  # a sub-step of the inpaint stage
    # each run reports its own seconds: a run in which the same inpainter gets no batch reports none of them
    nothing = ScriptedDetector(lambda i: {}, names=NAMES)
    empty = run_lossless(AnonymizePipeline(nothing, inpainter, progress=False), textured_clip, tmp_path / "empty.mkv")
    assert not [k for k in empty.timings if k.startswith("inpaint.")]


class IdentityInpainter(Inpainter):
    """A generator that "succeeds" but gives every region back as it was (a broken model, strength ~ 0)."""

    name = "identity"

    def __call__(self, batch: InpaintBatch) -> InpaintOutput:
        fills = []
        for b, dets in enumerate(batch.detections):
            for i, (x0, y0, x1, y1) in enumerate(masks_to_boxes(dets.masks).long().tolist()):
                rgb = batch.images[b, :, y0:y1, x0:x1]
                fills.append(RegionFill(b, i, (x0, y0, x1, y1), rgb, dets.masks[i, y0:y1, x0:x1]))
        return InpaintOutput(fills=fills)


def test_a_generator_that_returns_the_input_is_caught_and_blurred(textured_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mkv"
    pipe = AnonymizePipeline(truth_detector(), IdentityInpainter(), progress=False)
    result = run_lossless(pipe, textured_clip, out)
    events = [e for e in result.events if e["event"] == "fallback"]
    assert fallback_events(events) == [(i, r, "blur") for i in range(N) for r in (0, 1)]
    assert all(e["reason"] == f"left nearly unchanged: mean change 0.00 < min_change {MIN_CHANGE:g}" for e in events)
    assert [e["class_name"] for e in events[:2]] == NAMES
    for i, (src, dst) in enumerate(zip(read_all(textured_clip), read_all(out))):
        assert_every_region_pixel_is(fallback_frame(src, truth(i)), dst, truth(i), i)


def test_min_change_zero_turns_the_guard_off(textured_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mkv"
    pipe = AnonymizePipeline(truth_detector(), IdentityInpainter(), Compositor(min_change=0.0), progress=False)
    result = run_lossless(pipe, textured_clip, out)
    assert fallback_events(result.events) == []
    for src, dst in zip(read_all(textured_clip), read_all(out)):
        assert np.array_equal(src, dst)


def test_a_flat_region_that_blurs_to_itself_ends_solid_black_without_looping(tmp_path: Path) -> None:
    """Uniform grey: the identity fill and then the blur fallback both leave the region as it was; the last resort
    paints it black (one event per region, no further round)."""
    rgb = np.full((SIZE[1], SIZE[0], 3), 120, dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "flat.png")
    mask = np.zeros(rgb.shape[:2], dtype=bool)
    mask[20:50, 30:60] = True
    detector = ScriptedDetector(lambda i: {"person": mask}, names=NAMES)
    compositor = Compositor()
    pipe = AnonymizePipeline(detector, IdentityInpainter(), compositor, progress=False)
    result = run_lossless(pipe, tmp_path / "flat.png", tmp_path / "out.png")
    assert fallback_events(result.events) == [(0, 0, "solid")]
    dst = np.asarray(Image.open(tmp_path / "out.png").convert("RGB"))
    dilated = compositor.fill_regions(torch.from_numpy(mask)[None], feather=False)[0].numpy()
    assert (dst[dilated] == 0).all() and dilated.sum() > mask.sum()
    alpha = compositor.alpha(torch.from_numpy(mask)[None]).numpy()
    assert (dst[alpha == 0] == 120).all()


def test_a_region_the_generator_obscured_is_not_touched_by_the_guard(textured_clip: Path, tmp_path: Path) -> None:
    """The guard acts per region: a solid fill (clearly changed) stays as it is, with no event."""
    out = tmp_path / "out.mkv"
    pipe = AnonymizePipeline(truth_detector(), SolidInpainter((255, 0, 255), device="cpu"), progress=False)
    result = run_lossless(pipe, textured_clip, out)
    assert fallback_events(result.events) == []
    for i, dst in enumerate(read_all(out)):
        for mask in truth(i).masks.numpy():
            assert (dst[mask] == (255, 0, 255)).all()


@pytest.mark.parametrize("value", [-0.5, 255.5, "high"])
def test_min_change_is_validated_where_the_config_enters(value: object) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="run", overrides=["input=x.mp4", f"compositor.min_change={value}"])
    with pytest.raises(Exception) as info:
        instantiate(cfg.compositor, _convert_="all")
    cause: BaseException | None = info.value
    while cause is not None and not isinstance(cause, ConfigError):
        cause = cause.__cause__ or cause.__context__
    assert cause is not None and "min_change" in str(cause) and "0.0 to 255.0" in str(cause)


def test_the_default_config_sets_the_default_min_change() -> None:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="run", overrides=["input=x.mp4"])
    assert instantiate(cfg.compositor, _convert_="all").min_change == MIN_CHANGE == 8.0

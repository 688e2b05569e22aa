"""Inpainters: the shared interface (batches in, per-region fills out), the fast anonymizers, and
:func:`make_inpainter` to build one by name."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from inpaint_anon.errors import ConfigError
from inpaint_anon.inpaint.base import Fallback, InpaintBatch, Inpainter, InpaintOutput, RegionFill
from inpaint_anon.inpaint.fast import BlurInpainter, PixelateInpainter, ScrambleInpainter, SolidInpainter


def _diffusion() -> Callable[..., Inpainter]:
    """The generative engine's builder, imported only when asked for (diffusers is a heavy import)."""
    from inpaint_anon.inpaint.diffusion import LatentInpainter

    return LatentInpainter.from_pretrained


# name -> a function returning what builds that inpainter (called with its options)
INPAINTERS: dict[str, Callable[[], Callable[..., Inpainter]]] = {
    "diffusion": _diffusion,
    "blur": lambda: BlurInpainter,
    "pixelate": lambda: PixelateInpainter,
    "solid": lambda: SolidInpainter,
    "scramble": lambda: ScrambleInpainter,
}

__all__ = [
    "INPAINTERS",
    "BlurInpainter",
    "Fallback",
    "InpaintBatch",
    "InpaintOutput",
    "Inpainter",
    "PixelateInpainter",
    "RegionFill",
    "ScrambleInpainter",
    "SolidInpainter",
    "make_inpainter",
]


def make_inpainter(name: str, **kwargs: Any) -> Inpainter:
    """Build the inpainter registered as ``name`` ("blur", "pixelate", "solid", "scramble", "diffusion"), given kwargs.

    Raises ConfigError for an unknown name (listing the choices) or an option the inpainter does not take
    (listing its options); bad option values raise the inpainter's own ConfigError.
    """
    builder = INPAINTERS.get(name)
    if builder is None:
        raise ConfigError(f"unknown inpainter {name!r}; choose one of: {', '.join(sorted(INPAINTERS))}")
    cls = builder()
    signature = inspect.signature(cls)
    try:
        signature.bind(**kwargs)
    except TypeError as err:
        raise ConfigError(
            f"inpainter {name!r}: {err}; its options are: {', '.join(signature.parameters)}"
        ) from None
    return cls(**kwargs)

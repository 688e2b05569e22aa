"""Inpainters: the shared interface (batches in, per-region fills out), the fast anonymizers, and
:func:`make_inpainter` to build one by name."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from inpaint_anon.errors import ConfigError
from inpaint_anon.inpaint.base import Fallback, InpaintBatch, Inpainter, InpaintOutput, RegionFill
from inpaint_anon.inpaint.fast import BlurInpainter, PixelateInpainter, ScrambleInpainter, SolidInpainter

# name -> "module:class", imported only when asked for (so the generative engine's heavy imports, e.g.
# diffusers, happen only when it is used).
INPAINTERS: dict[str, str] = {
    "diffusion": "inpaint_anon.inpaint.diffusion:LatentInpainter.from_pretrained",
    "blur": "inpaint_anon.inpaint.fast:BlurInpainter",
    "pixelate": "inpaint_anon.inpaint.fast:PixelateInpainter",
    "solid": "inpaint_anon.inpaint.fast:SolidInpainter",
    "scramble": "inpaint_anon.inpaint.fast:ScrambleInpainter",
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
    target = INPAINTERS.get(name)
    if target is None:
        raise ConfigError(f"unknown inpainter {name!r}; choose one of: {', '.join(sorted(INPAINTERS))}")
    module_name, attribute = target.split(":")
    cls = importlib.import_module(module_name)
    for part in attribute.split("."):
        cls = getattr(cls, part)
    signature = inspect.signature(cls)
    try:
        signature.bind(**kwargs)
    except TypeError as err:
        raise ConfigError(
            f"inpainter {name!r}: {err}; its options are: {', '.join(signature.parameters)}"
        ) from None
    return cls(**kwargs)

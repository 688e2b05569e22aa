"""Inpainters: the shared interface, the fast anonymizers, and :func:`make_inpainter` to build one by name."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from inpaint_anon.errors import ConfigError
from inpaint_anon.inpaint.base import Fallback, InpaintBatch, Inpainter, InpaintOutput
from inpaint_anon.inpaint.fast import BlurInpainter, PixelateInpainter, ScrambleInpainter, SolidInpainter

# name -> "module:class", imported only when asked for (so the generative engine's heavy imports, e.g.
# diffusers, happen only when it is used). The generative engine adds its entry here.
INPAINTERS: dict[str, str] = {
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
    "ScrambleInpainter",
    "SolidInpainter",
    "make_inpainter",
]


def make_inpainter(name: str, **kwargs: Any) -> Inpainter:
    """Build the inpainter registered as ``name`` ("blur", "pixelate", "solid", "scramble"...), given kwargs.

    Raises ConfigError for an unknown name (listing the choices) or an option the inpainter does not take
    (listing its options); bad option values raise the inpainter's own ConfigError.
    """
    target = INPAINTERS.get(name)
    if target is None:
        raise ConfigError(f"unknown inpainter {name!r}; choose one of: {', '.join(sorted(INPAINTERS))}")
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    signature = inspect.signature(cls)
    try:
        signature.bind(**kwargs)
    except TypeError as err:
        raise ConfigError(
            f"inpainter {name!r}: {err}; its options are: {', '.join(signature.parameters)}"
        ) from None
    return cls(**kwargs)

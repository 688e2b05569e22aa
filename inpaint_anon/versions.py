"""The versions table recorded in ``run.json`` and ``metrics.json``: what produced a result."""

from __future__ import annotations

import platform
from importlib import metadata

VERSIONED_PACKAGES = ("inpaint_anon", "torch", "torchvision", "diffusers", "transformers",
                      "ultralytics-opencv-headless", "ultralytics", "av", "numpy", "hydra-core", "omegaconf",
                      "torchmetrics", "lpips", "torch-fidelity", "scipy")
"""Distribution names (as pip spells them) whose versions are recorded; absent ones are left out."""


def versions() -> dict[str, str]:
    """``{"python": "3.11.7", "<distribution>": "<version>", ...}`` for the installed :data:`VERSIONED_PACKAGES`."""
    found = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found

"""Diffusers schedulers by class name: the one lookup the engine, the weight loader and the tiny models share.

A leaf module (it imports only diffusers and our errors), so that :mod:`inpaint_anon.weights`,
:mod:`inpaint_anon.inpaint.tiny` and :mod:`inpaint_anon.inpaint.diffusion` can all use it without importing
each other.
"""

from __future__ import annotations

import diffusers
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from inpaint_anon.errors import ConfigError

# Named in the error for an unknown scheduler; any diffusers scheduler class works.
SCHEDULER_EXAMPLES = (
    "DDIMScheduler",
    "DPMSolverMultistepScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "LCMScheduler",
    "PNDMScheduler",
    "UniPCMultistepScheduler",
)


def scheduler_class(name: str) -> type[SchedulerMixin]:
    """The diffusers scheduler class called ``name`` (e.g. ``"DDIMScheduler"``); ConfigError if none."""
    cls = getattr(diffusers, name, None) if isinstance(name, str) and name.endswith("Scheduler") else None
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise ConfigError(
            f"unknown scheduler {name!r}: use a diffusers scheduler class name, "
            f"e.g. {', '.join(SCHEDULER_EXAMPLES)}"
        )
    return cls

"""User-facing errors.

Every error a user can fix (bad input, bad config, missing weights) is an :class:`InpaintAnonError`
whose message names the problem *and* the fix in one line. The CLI prints it as ``error: <message>``
on stderr and exits with code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class InpaintAnonError(Exception):
    """Base class of errors the user can fix; ``str(err)`` is one line: problem, then fix."""

    exit_code = 2


class InputError(InpaintAnonError):
    """The input (or output path) is missing, unreadable, corrupt, truncated or otherwise unusable."""


class ConfigError(InpaintAnonError, ValueError):
    """A configuration value is out of range, of the wrong type, or names something unknown."""


class WeightsError(InpaintAnonError):
    """Model weights cannot be found or loaded (offline and not cached, bad file, wrong format)."""

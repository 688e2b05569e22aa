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


def one_line(error: BaseException | str, limit: int = 200) -> str:
    """The one-line form of an error for messages and run.json events: ``Type: first line of the message``
    (just ``Type`` when it has none; a string is taken as the message itself), cut to ``limit`` characters
    with ``...``."""
    if isinstance(error, BaseException):
        text = str(error).strip().splitlines()[0] if str(error).strip() else ""
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    else:
        text = error.strip().splitlines()[0] if error.strip() else "no message"
    return text if len(text) <= limit else text[: limit - 3] + "..."

"""The package's one set of value validators, used wherever a setting enters (config, command line, API).

Each returns the value (as the checked type) or raises :class:`~inpaint_anon.errors.ConfigError` naming the
setting, the value given and what to write instead. ``owner`` is the component (``"Tracker"``,
``"BlurInpainter"``) or ``""``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from inpaint_anon.errors import ConfigError


def _named(owner: str, name: str) -> str:
    return f"{owner} {name}" if owner else name


def check_int(owner: str, name: str, value: object, low: int, high: int | None = None) -> int:
    """``value`` if it is an int in [low, high] (``high`` None: no upper bound), else a ConfigError naming the
    parameter, value and range."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value or (high is not None and value > high):
        allowed = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
        raise ConfigError(f"{_named(owner, name)}={value!r} is invalid; use {allowed}")
    return value


def check_float(owner: str, name: str, value: object, low: float, high: float | None = None) -> float:
    """``value`` as a float if it is a finite number in [low, high] (``high`` None: no upper bound), else a
    ConfigError naming it and the range."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not (ok and low <= value and (high is None or value <= high)):  # type: ignore[operator]
        allowed = f"a number >= {low}" if high is None else f"a number from {low} to {high}"
        raise ConfigError(f"{_named(owner, name)}={value!r} is invalid; use {allowed}")
    return float(value)


def check_number(name: str, value: object, low: float, high: float | None = None, integer: bool = False) -> None:
    """:func:`check_int` (``integer``) or :func:`check_float` for a setting named as a user writes it
    (``detector.conf``)."""
    (check_int if integer else check_float)("", name, value, low, high)  # type: ignore[operator]


def check_bool(name: str, value: object) -> bool:
    """``value`` if it is a bool (``true``/``false`` in YAML and on Hydra's command line), else a ConfigError.

    ``name`` is the setting as a user writes it (``keep_metadata``, ``detector.half``, ``metrics.lpips``).
    Strings are refused, spelled ``"no"``, ``"false"`` or otherwise: any non-empty string is truthy in Python,
    so ``keep_metadata=no`` would otherwise keep the GPS tags it asks to strip."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name}={value!r} is not a boolean; write {name}=true or {name}=false (unquoted)")
    return value


def check_keys(section: str, values: Mapping[object, object], known: Iterable[str]) -> None:
    """ConfigError naming every key of ``values`` that is not in ``known``, and the known ones, as settings of the
    config block ``section`` (``unknown video setting video.foo; known: video.codec, ...``)."""
    known = list(known)
    unknown = sorted(str(key) for key in values if key not in known)
    if unknown:
        raise ConfigError(f"unknown {section} setting {', '.join(f'{section}.{key}' for key in unknown)}; "
                          f"known: {', '.join(f'{section}.{key}' for key in known)}")

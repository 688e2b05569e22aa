"""The package's one set of value validators, used wherever a setting enters (config, command line, API).

Each returns the value (as the checked type) or raises :class:`~inpaint_anon.errors.ConfigError` naming the
setting, the value given and what to write instead. ``owner`` is the component (``"Tracker"``,
``"BlurInpainter"``) or ``""``.
"""

from __future__ import annotations

from inpaint_anon.errors import ConfigError


def _named(owner: str, name: str) -> str:
    return f"{owner} {name}" if owner else name


def check_int(owner: str, name: str, value: object, low: int, high: int) -> int:
    """``value`` if it is an int in [low, high], else a ConfigError naming the parameter, value and range."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{_named(owner, name)}={value!r} is invalid; use an integer from {low} to {high}")
    return value


def check_float(owner: str, name: str, value: object, low: float, high: float) -> float:
    """``value`` as a float if it is a number in [low, high], else a ConfigError naming it and the range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(f"{_named(owner, name)}={value!r} is invalid; use a number from {low} to {high}")
    return float(value)


def check_bool(name: str, value: object) -> bool:
    """``value`` if it is a bool (``true``/``false`` in YAML and on Hydra's command line), else a ConfigError.

    ``name`` is the setting as a user writes it (``keep_metadata``, ``detector.half``, ``metrics.lpips``).
    Strings are refused, spelled ``"no"``, ``"false"`` or otherwise: any non-empty string is truthy in Python,
    so ``keep_metadata=no`` would otherwise keep the GPS tags it asks to strip."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name}={value!r} is not a boolean; write {name}=true or {name}=false (unquoted)")
    return value

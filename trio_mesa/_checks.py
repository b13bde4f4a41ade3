"""Validation shared by the policy values: numbers of seconds and counts, checked on
construction with an error that names the field and the value it was given."""

from __future__ import annotations

import math

__all__ = ["check_count", "check_seconds"]


def check_seconds(name: str, value: object, *, positive: bool = False) -> float:
    """``value`` as a float if it is a finite number ``>= 0`` (``> 0`` if ``positive``).

    Raises:
        TypeError: ``value`` is not an int or float (a ``bool`` is refused: ``True``
            seconds is a bug, not a duration).
        ValueError: ``value`` is NaN, infinite, negative, or zero when ``positive``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {value!r}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        kind = "positive" if positive else "non-negative"
        raise ValueError(f"{name} must be a finite, {kind} number, not {value!r}")
    return float(value)


def check_count(name: str, value: object, *, minimum: int = 1) -> int:
    """``value`` if it is an int ``>= minimum``.

    Raises:
        TypeError: ``value`` is not an int (``bool`` is refused).
        ValueError: ``value < minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value!r}")
    return value

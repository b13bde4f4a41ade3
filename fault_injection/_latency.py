"""Latency distributions for fake LLM calls: `Fixed`, `Uniform` and heavy-tailed `LogNormal`.

A distribution draws seconds of (virtual) time from the generator it is given (anything
with ``random.Random``'s ``uniform`` and ``gauss``), so
a seeded plan draws the same latencies on every run. Values are in model seconds: the
runner sleeps them as they are under virtual time and scaled down in real time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from trio_mesa._checks import check_seconds


def _seconds(name: str, value: Any, *, positive: bool = False) -> float:
    return check_seconds(name, value, positive=positive)


@dataclass(frozen=True, slots=True)
class Fixed:
    """Always ``seconds``."""

    seconds: float

    def __post_init__(self) -> None:
        _seconds("Fixed.seconds", self.seconds)

    def sample(self, rng: Any) -> float:
        return self.seconds


@dataclass(frozen=True, slots=True)
class Uniform:
    """Uniformly between ``low`` and ``high`` seconds."""

    low: float
    high: float

    def __post_init__(self) -> None:
        _seconds("Uniform.low", self.low)
        _seconds("Uniform.high", self.high)
        if self.high < self.low:
            raise ValueError(f"Uniform.high ({self.high}) must not be below low ({self.low})")

    def sample(self, rng: Any) -> float:
        return rng.uniform(self.low, self.high)


@dataclass(frozen=True, slots=True)
class LogNormal:
    """Log-normal with the given ``median`` and log-space ``sigma``, capped at ``cap``.

    The heavy right tail is what real LLM endpoints show: most calls near the median,
    a few many times slower. ``sigma=1`` puts the 95th percentile at about 5x the median.
    """

    median: float
    sigma: float = 1.0
    cap: float = 3600.0

    def __post_init__(self) -> None:
        _seconds("LogNormal.median", self.median, positive=True)
        _seconds("LogNormal.sigma", self.sigma)
        _seconds("LogNormal.cap", self.cap, positive=True)

    def sample(self, rng: Any) -> float:
        return min(self.cap, self.median * math.exp(self.sigma * rng.gauss(0.0, 1.0)))


Latency = Fixed | Uniform | LogNormal

_KINDS: dict[str, type] = {"fixed": Fixed, "uniform": Uniform, "lognormal": LogNormal}


def latency_from_value(value: Any, where: str = "latency") -> Latency:
    """A distribution from a number (fixed seconds) or a table with a ``kind`` key.

    Raises:
        ValueError, TypeError: naming ``where`` and the offending key or value.
    """
    if isinstance(value, (Fixed, Uniform, LogNormal)):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Fixed(value)
    if not isinstance(value, dict):
        raise TypeError(f"{where}: expected seconds or a table with 'kind', not {value!r}")
    params = dict(value)
    kind = params.pop("kind", None)
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"{where}: 'kind' must be one of {sorted(_KINDS)}, not {kind!r}")
    try:
        return cls(**params)
    except TypeError as exc:
        raise TypeError(f"{where}: bad parameters for {kind!r} latency: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None

"""Argument checks every store makes before it touches any state (or sends anything),
so that `MemoryStore` and `RedisStore` refuse the same bad input with the same error."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .._checks import check_count, check_seconds
from ._types import MAX_AMOUNT, Settlement, Spend, Verdict

__all__ = ["count", "delta", "hold_off_ms", "settlements", "spends", "verdicts", "weights"]


def weights(weights: Sequence[int]) -> tuple[int, ...]:
    out = tuple(weights)
    if not out:
        raise ValueError("weights must hold at least one weight")
    for w in out:
        check_count("a weight", w, maximum=MAX_AMOUNT)
    return out


def count(n: int) -> int:
    return check_count("n", n, maximum=MAX_AMOUNT)


def delta(delta: int) -> int:
    if isinstance(delta, bool) or not isinstance(delta, int) or abs(delta) > MAX_AMOUNT:
        raise TypeError(f"delta must be an int within +-2**50, not {delta!r}")
    return delta


def hold_off_ms(seconds: float) -> int:
    check_seconds("hold-off seconds", seconds, positive=True)
    if seconds > 86_400 * 365:
        raise ValueError(f"a hold-off of {seconds!r} s is longer than a year")
    return max(1, math.ceil(seconds * 1000 - 1e-9))


def spends(spends: Sequence[Spend]) -> tuple[Spend, ...]:
    out = tuple(spends)
    for s in out:
        if not isinstance(s, Spend):
            raise TypeError(f"spends must be Spend values, not {s!r}")
    return out


def settlements(settlements: Sequence[Settlement]) -> tuple[Settlement, ...]:
    out = tuple(settlements)
    for s in out:
        if not isinstance(s, Settlement):
            raise TypeError(f"settlements must be Settlement values, not {s!r}")
    return out


def verdicts(verdicts: Sequence[Verdict]) -> tuple[Verdict, ...]:
    out = tuple(verdicts)
    for v in out:
        if not isinstance(v, Verdict):
            raise TypeError(f"verdicts must be Verdict values, not {v!r}")
    return out

"""Argument checks every store makes before it touches any state (or sends anything),
so that `MemoryStore` and `RedisStore` refuse the same bad input with the same error."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .._checks import check_count as _check_count
from .._checks import check_seconds
from ._types import MAX_AMOUNT, Quota, Settlement, Spend, Verdict

__all__ = [
    "count",
    "deltas",
    "hold_off_ms",
    "quotas",
    "settlements",
    "spends",
    "verdicts",
    "weights",
]


def check_count(name: str, value: object, *, minimum: int = 1) -> int:
    return _check_count(name, value, minimum=minimum, maximum=MAX_AMOUNT)


def quotas(quota: Quota | Sequence[Quota]) -> tuple[Quota, ...]:
    """One `Quota` per bucket (1 to 4 of them)."""
    out = (quota,) if isinstance(quota, Quota) else tuple(quota)
    if not 1 <= len(out) <= 4 or not all(isinstance(q, Quota) for q in out):
        raise TypeError(f"quota must be a Quota or 1 to 4 of them, not {quota!r}")
    return out


def weights(
    weights: Sequence[int] | Sequence[Sequence[int]], buckets: int = 1
) -> tuple[tuple[int, ...], ...]:
    """Each weight as one int per bucket: an int ``>= 1`` with one bucket, a sequence
    of ``buckets`` ints ``>= 0`` with more."""
    out: tuple[object, ...] = tuple(weights)
    if not out:
        raise ValueError("weights must hold at least one weight")
    if buckets == 1:
        # An int each; a 1-tuple (already checked here) is taken as well.
        return tuple(
            (check_count("a weight", w[0] if type(w) is tuple and len(w) == 1 else w),) for w in out
        )
    result: list[tuple[int, ...]] = []
    for w in out:
        if not isinstance(w, Sequence) or isinstance(w, str) or len(w) != buckets:
            raise TypeError(f"each weight must be {buckets} ints (one per bucket), not {w!r}")
        result.append(tuple(check_count("a weight", part, minimum=0) for part in w))
    return tuple(result)


def deltas(delta: int | Sequence[int], buckets: int) -> tuple[int, ...]:
    """One delta per bucket."""
    out = (delta,) if isinstance(delta, int) else tuple(delta)
    if len(out) != buckets:
        raise TypeError(f"delta must be {buckets} ints (one per bucket), not {delta!r}")
    return tuple(_delta(d) for d in out)


def count(n: int) -> int:
    return check_count("n", n)


def _delta(delta: int) -> int:
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

"""`Quota` and `TokenBucket`: a provider's request quota, as the chaos server enforces it.

Real providers publish per-minute limits but enforce them over short windows (OpenAI:
"your rate limit may be quantized, enforced over shorter periods of time": 600 RPM can
mean 10 requests a second). A token bucket models that: it holds at most ``burst``
tokens, refills continuously at ``rate`` tokens per second, and each request takes one
token or is refused. Refused requests take nothing, and the bucket says exactly how long
until the next token, which is what an honest ``Retry-After`` reports. The clock is
injectable (``time.monotonic`` by default) so tests can step it by hand.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from trio_mesa._checks import check_count, check_number, shown

# A client that waits exactly the advertised time must be admitted: float rounding in
# ``tokens + elapsed * rate`` must not leave it a hair short of one token.
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Quota:
    """A request quota: ``rate`` requests per second, with bursts of up to ``burst``.

    Attributes:
        rate: tokens added per second (requests per second, sustained).
        burst: the bucket's capacity: how many requests an idle client may send at once
            (default: ``rate`` rounded up, at least 1, i.e. one second's worth).
    """

    rate: float
    burst: int | None = None

    def __post_init__(self) -> None:
        rate = check_number(
            "Quota.rate", self.rate, minimum=0, above=True, what="a number of requests per second"
        )
        if self.burst is not None:
            check_count("Quota.burst", self.burst, maximum=1_000_000_000)
        object.__setattr__(self, "rate", rate)

    @property
    def capacity(self) -> int:
        """The bucket's size: ``burst``, or one second's worth of requests."""
        return self.burst if self.burst is not None else max(1, math.ceil(self.rate))

    def describe(self) -> str:
        """``"50 requests/s, burst 50"``."""
        return f"{self.rate:g} requests/s, burst {self.capacity}"


def quota_from_value(value: Quota | float | None, where: str = "quota") -> Quota | None:
    """A `Quota` from itself, a number of requests per second, or ``None``."""
    if value is None or isinstance(value, Quota):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{where} must be a Quota or requests per second, not {shown(value)}")
    return Quota(value)


class TokenBucket:
    """A `Quota`'s token bucket; full when created. Thread-safe.

    Args:
        quota: the rate and capacity.
        clock: seconds, monotonic (default ``time.monotonic``).

    Attributes:
        quota, clock; admitted and refused: how many `take` calls got a token and not.
    """

    def __init__(self, quota: Quota, clock: Callable[[], float] = time.monotonic) -> None:
        self.quota = quota
        self.clock = clock
        self.admitted = 0
        self.refused = 0
        self._tokens = float(quota.capacity)
        self._last = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self.clock()
        elapsed = max(0.0, now - self._last)
        self._last = now
        self._tokens = min(float(self.quota.capacity), self._tokens + elapsed * self.quota.rate)

    def take(self) -> float:
        """Take a token: ``0.0`` if one was there, else the seconds until one will be.

        A refused call takes nothing: a client that waits the returned time (and is not
        beaten to the token by another) gets the next token.
        """
        with self._lock:
            self._refill()
            if self._tokens >= 1.0 - _EPSILON:
                self._tokens = max(0.0, self._tokens - 1.0)
                self.admitted += 1
                return 0.0
            self.refused += 1
            return (1.0 - self._tokens) / self.quota.rate

    @property
    def tokens(self) -> float:
        """The tokens in the bucket now (fractional while it refills)."""
        with self._lock:
            self._refill()
            return self._tokens

    def stats(self) -> dict[str, float | int]:
        """``rate``, ``burst``, ``tokens`` (now), ``admitted`` and ``refused``."""
        tokens = self.tokens
        with self._lock:
            return {
                "rate": self.quota.rate,
                "burst": self.quota.capacity,
                "tokens": round(tokens, 6),
                "admitted": self.admitted,
                "refused": self.refused,
            }

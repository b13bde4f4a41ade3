"""`Quota` and `TokenBucket`: a provider's request (and token) quota, as the chaos server
enforces it.

Real providers publish per-minute limits but enforce them over short windows (OpenAI:
"your rate limit may be quantized, enforced over shorter periods of time": 600 RPM can
mean 10 requests a second). A token bucket models that: it holds at most ``burst``
tokens, refills continuously at ``rate`` tokens per second, and each request takes one
token or is refused. Refused requests take nothing, and the bucket says exactly how long
until the next token, which is what an honest ``Retry-After`` reports. The clock is
injectable (``time.monotonic`` by default) so tests can step it by hand.

A quota may also limit tokens (``tokens=``, per second: a provider's tokens per minute
enforced over seconds, as OpenAI does): a second bucket, of LLM tokens, that a request
must find holding its prompt tokens to be admitted; they are taken then, and its
completion tokens once it is answered (`TokenBucket.charge`, which may leave the bucket
in debt: later requests wait for it to refill). That is the usage the server reports.
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
        tokens: LLM tokens (prompt plus completion, as the server counts them in its
            replies' ``usage``) allowed per second, or ``None`` (no token limit). A
            provider's TPM of ``T`` enforced per second is ``tokens=T / 60``.
        token_burst: the token bucket's capacity (default: one second's worth).
    """

    rate: float
    burst: int | None = None
    tokens: float | None = None
    token_burst: int | None = None

    def __post_init__(self) -> None:
        rate = check_number(
            "Quota.rate", self.rate, minimum=0, above=True, what="a number of requests per second"
        )
        if self.burst is not None:
            check_count("Quota.burst", self.burst, maximum=1_000_000_000)
        object.__setattr__(self, "rate", rate)
        if self.tokens is not None:
            tokens = check_number(
                "Quota.tokens",
                self.tokens,
                minimum=0,
                above=True,
                what="a number of tokens per second",
            )
            object.__setattr__(self, "tokens", tokens)
        if self.token_burst is not None:
            if self.tokens is None:
                raise ValueError("Quota.token_burst needs Quota.tokens")
            check_count("Quota.token_burst", self.token_burst, maximum=10**15)

    @property
    def capacity(self) -> int:
        """The bucket's size: ``burst``, or one second's worth of requests."""
        return self.burst if self.burst is not None else max(1, math.ceil(self.rate))

    @property
    def token_capacity(self) -> int:
        """The token bucket's size: ``token_burst``, or one second's worth (0: no limit)."""
        if self.tokens is None:
            return 0
        if self.token_burst is not None:
            return self.token_burst
        return max(1, math.ceil(self.tokens))

    def describe(self) -> str:
        """``"50 requests/s, burst 50"`` (``"; 3000 tokens/s, burst 3000"`` after it)."""
        text = f"{self.rate:g} requests/s, burst {self.capacity}"
        if self.tokens is not None:
            text += f"; {self.tokens:g} tokens/s, burst {self.token_capacity}"
        return text


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
        self.refused_for_tokens = 0
        self.llm_tokens_charged = 0
        self._tokens = float(quota.capacity)
        self._llm = float(quota.token_capacity)  # the LLM-token bucket (tokens=)
        self._last = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self.clock()
        elapsed = max(0.0, now - self._last)
        self._last = now
        self._tokens = min(float(self.quota.capacity), self._tokens + elapsed * self.quota.rate)
        if self.quota.tokens is not None:
            self._llm = min(
                float(self.quota.token_capacity), self._llm + elapsed * self.quota.tokens
            )

    def take(self, prompt_tokens: int = 0) -> float:
        """Take a token: ``0.0`` if one was there, else the seconds until one will be.

        With a token limit the request's ``prompt_tokens`` must be in the token bucket
        too (all of it, or a full bucket for a prompt larger than the bucket) and are
        taken with it; refused, the wait is the longer of the two.

        A refused call takes nothing: a client that waits the returned time (and is not
        beaten to the token by another) gets the next token.
        """
        with self._lock:
            self._refill()
            wait = 0.0
            if self._tokens < 1.0 - _EPSILON:
                wait = (1.0 - self._tokens) / self.quota.rate
            rate = self.quota.tokens
            need = float(min(prompt_tokens, self.quota.token_capacity))
            if rate is not None and self._llm < need - _EPSILON:
                token_wait = (need - self._llm) / rate
                if token_wait > wait:
                    self.refused_for_tokens += 1
                wait = max(wait, token_wait)
            if wait == 0.0:
                self._tokens = max(0.0, self._tokens - 1.0)
                if rate is not None:
                    self._llm -= prompt_tokens
                    self.llm_tokens_charged += prompt_tokens
                self.admitted += 1
                return 0.0
            self.refused += 1
            return wait

    def charge(self, tokens: int) -> None:
        """Take ``tokens`` more LLM tokens (an admitted request's completion) from the
        token bucket, into debt if need be; nothing without a token limit."""
        if self.quota.tokens is None or tokens <= 0:
            return
        with self._lock:
            self._refill()
            self._llm -= tokens
            self.llm_tokens_charged += tokens

    @property
    def tokens(self) -> float:
        """The tokens in the bucket now (fractional while it refills)."""
        with self._lock:
            self._refill()
            return self._tokens

    def stats(self) -> dict[str, float | int]:
        """``rate``, ``burst``, ``tokens`` (now), ``admitted`` and ``refused``; with a
        token limit also ``llm_tokens_per_s``, ``llm_token_burst``, ``llm_tokens`` (in
        the bucket now), ``llm_tokens_charged`` and ``refused_for_tokens``."""
        tokens = self.tokens
        with self._lock:
            out: dict[str, float | int] = {
                "rate": self.quota.rate,
                "burst": self.quota.capacity,
                "tokens": round(tokens, 6),
                "admitted": self.admitted,
                "refused": self.refused,
            }
            if self.quota.tokens is not None:
                out.update(
                    llm_tokens_per_s=self.quota.tokens,
                    llm_token_burst=self.quota.token_capacity,
                    llm_tokens=round(self._llm, 6),
                    llm_tokens_charged=self.llm_tokens_charged,
                    refused_for_tokens=self.refused_for_tokens,
                )
            return out

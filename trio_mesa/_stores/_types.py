"""What a state store is: the async interface (`StateStore`) shared by `MemoryStore` and
`RedisStore`, the settings each call carries (`Quota`, `BreakerRule`, `BudgetLimits`) and
the values it answers with. Every time in an answer is relative to "now" on the store's
own clock (seconds from now, seconds left), never an absolute reading: a caller sleeps
on its own clock, and no two machines' clocks are ever compared.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from .._checks import check_count, check_number, check_seconds, shown

__all__ = [
    "MAX_AMOUNT",
    "BreakerClaim",
    "BreakerRule",
    "BreakerState",
    "BreakerStatus",
    "BudgetGrant",
    "BudgetLimits",
    "BudgetTotals",
    "Fallback",
    "FallbackKind",
    "Grant",
    "HoldOffResult",
    "Quota",
    "Settlement",
    "Spend",
    "StateStore",
    "StoreError",
    "StoreUnreachable",
    "Verdict",
    "VerdictKind",
    "check_name",
]

#: The largest weight, amount or count a store accepts: 2**50, so that sums stay exact
#: in a double (Redis's Lua numbers) with room for a thousand of them.
MAX_AMOUNT = 2**50

BreakerState = Literal["closed", "open", "half_open"]
VerdictKind = Literal["outage", "success", "neutral"]
FallbackKind = Literal["rate_limit", "breaker", "budget"]

_NAME = re.compile(r"[A-Za-z0-9_.:/@+=-]{1,200}")


def check_name(name: object) -> str:
    """``name`` if it can name a limiter in a store: 1 to 200 of ``A-Z a-z 0-9 _ . : / @
    + = -`` (no braces: the name becomes a Redis Cluster hash tag).

    Raises:
        TypeError, ValueError: anything else (the message shows it).
    """
    if not isinstance(name, str):
        raise TypeError(f"a store name must be a str, not {shown(name)}")
    if not _NAME.fullmatch(name):
        raise ValueError(
            "a store name must be 1 to 200 of A-Z a-z 0-9 _ . : / @ + = - "
            f"(no spaces or braces), not {shown(name)}"
        )
    return name


def _check_amounts(what: str, values: Sequence[int], *, minimum: int) -> tuple[int, ...]:
    out = tuple(values)
    for value in out:
        check_count(what, value, minimum=minimum, maximum=MAX_AMOUNT)
    return out


@dataclass(frozen=True, slots=True)
class Quota:
    """A GCRA limit in whole microseconds: ``rate`` units (requests or tokens) per
    ``per`` seconds, of which ``burst`` may start at once after an idle spell.

    The store works in integer microseconds so that `MemoryStore` and `RedisStore`
    (whose Lua numbers are doubles) give the very same answers: `interval_us`, the cost
    of one unit, is ``per / rate`` rounded *up* to a whole microsecond, so the limit errs
    on the slow side (3 per second is 333,334 us apart: 2.999994 per second).

    Raises:
        TypeError, ValueError: ``rate`` or ``per`` not a finite number ``> 0``, ``burst``
            not an int ``>= 1``, or an interval shorter than a microsecond.
    """

    rate: float
    per: float = 1.0
    burst: int = 1

    def __post_init__(self) -> None:
        check_number("Quota rate", self.rate, minimum=0, above=True, what="a number of units")
        check_seconds("Quota per", self.per, positive=True)
        check_count("Quota burst", self.burst, maximum=MAX_AMOUNT)
        interval = self.per * 1_000_000 / self.rate
        if not math.isfinite(interval) or interval > MAX_AMOUNT:
            raise ValueError(
                f"Quota per / rate is not a usable interval: {self.per!r} / {self.rate!r}"
            )

    @property
    def interval_us(self) -> int:
        """Microseconds one unit of weight costs: ``ceil(per / rate)``, at least 1."""
        return max(1, math.ceil(self.per * 1_000_000 / self.rate - 1e-6))

    def share(self, workers: int) -> Quota:
        """This quota split among ``workers`` processes: ``rate / workers`` and
        ``burst // workers`` (at least 1). Used by a store's local fallback, so that
        ``workers`` processes falling back at once still stay within the whole quota."""
        workers = check_count("workers", workers)
        return Quota(self.rate / workers, self.per, max(1, self.burst // workers))


@dataclass(frozen=True, slots=True)
class Grant:
    """The start times handed out by one `StateStore.rate_reserve` (or `rate_confirm`).

    Attributes:
        offsets: for each weight asked for, in order, the seconds from "now" (the store's
            clock, when it answered) at which that caller may start; ``0.0`` means at
            once. Sleep that long on your own clock.
        epoch: hold-offs the limit had seen when it answered: give it back to
            `StateStore.rate_confirm` after sleeping.
        hold_off_left: seconds the limit's hold-off still had to run then (``0.0``: none).
    """

    offsets: tuple[float, ...]
    epoch: int
    hold_off_left: float = 0.0


@dataclass(frozen=True, slots=True)
class HoldOffResult:
    """What `StateStore.rate_hold_off` did.

    Attributes:
        moved: whether the hold-off now ends later than before (a shorter one never
            shortens it; ``False`` then, and nothing is counted).
        left: seconds the hold-off has left, after the call.
        epoch: hold-offs counted so far (moved ones only).
    """

    moved: bool
    left: float
    epoch: int


@dataclass(frozen=True, slots=True)
class BreakerRule:
    """A `CircuitBreaker`'s settings, as a store applies them (same meanings as there).

    Times are kept in whole milliseconds for the open spell (a Redis TTL) and whole
    microseconds for the window.
    """

    failure_rate: float = 0.5
    min_calls: int = 20
    window: float = 10.0
    reset_after: float = 30.0
    probes: int = 1

    def __post_init__(self) -> None:
        check_number(
            "failure_rate", self.failure_rate, minimum=0, maximum=1, above=True, what="a fraction"
        )
        check_count("min_calls", self.min_calls)
        check_seconds("window", self.window, positive=True)
        check_seconds("reset_after", self.reset_after)
        check_count("probes", self.probes)

    @property
    def window_us(self) -> int:
        """``window`` in whole microseconds (at least 1)."""
        return max(1, round(self.window * 1_000_000))

    @property
    def reset_after_ms(self) -> int:
        """``reset_after`` in whole milliseconds, rounded up."""
        return math.ceil(self.reset_after * 1000 - 1e-9)


@dataclass(frozen=True, slots=True)
class Verdict:
    """How one call admitted by the breaker ended.

    Attributes:
        kind: ``"outage"`` (the provider is down: counts as a failure),
            ``"success"``, or ``"neutral"`` (no verdict on the provider: a 429,
            cancelled; it only frees a probe slot).
        probe: whether `StateStore.breaker_claim` admitted it as a probe.
        reason: for an outage, what failed (``"InternalServerError: ..."``): the
            reason of an opening it causes.
    """

    kind: VerdictKind
    probe: bool = False
    reason: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("outage", "success", "neutral"):
            raise ValueError(
                f"a verdict is 'outage', 'success' or 'neutral', not {shown(self.kind)}"
            )


@dataclass(frozen=True, slots=True)
class BreakerStatus:
    """A breaker's state as the store saw it.

    Attributes:
        state: ``"closed"``, ``"open"`` or ``"half_open"`` (an open spell that has run
            out reads ``"half_open"``, as `CircuitBreaker.state_at` does).
        half_opens_in: seconds until it half-opens (``0.0`` unless open).
        openings: how many times it has opened.
        reason: why it last opened (``""`` if never).
        calls: verdicts in the window (while closed).
        failed: outages among them.
        opened: whether the call that answered opened (or reopened) it.
        closed: whether the call that answered closed it.
    """

    state: BreakerState
    half_opens_in: float = 0.0
    openings: int = 0
    reason: str = ""
    calls: int = 0
    failed: int = 0
    opened: bool = False
    closed: bool = False


@dataclass(frozen=True, slots=True)
class BreakerClaim:
    """The answer to `StateStore.breaker_claim` for a group of ``n`` attempts.

    Attributes:
        admitted: how many of them may call (the first ``admitted`` of the group):
            all of them while closed, none while open, at most the free probe slots
            while half-open.
        probes: how many of the admitted are probes (pass ``probe=True`` in their
            `Verdict`).
        status: the state after the claim.
    """

    admitted: int
    probes: int
    status: BreakerStatus


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    """A shared budget's limits in integers: micro-dollars and tokens (``None``: none).

    Raises:
        TypeError, ValueError: a limit that is not ``None`` or an int in
            ``[0, MAX_AMOUNT]``.
    """

    max_micro_usd: int | None = None
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_micro_usd", "max_tokens"):
            value = getattr(self, name)
            if value is not None:
                check_count(name, value, minimum=0, maximum=MAX_AMOUNT)

    @staticmethod
    def micro_usd(dollars: float) -> int:
        """``dollars`` as whole micro-dollars, rounded down (a limit never grows)."""
        check_number("dollars", dollars, minimum=0, what="a number (USD)")
        return math.floor(dollars * 1_000_000 + 1e-6)


@dataclass(frozen=True, slots=True)
class Spend:
    """An amount to reserve from a budget: ``micro_usd`` and ``tokens`` (ints >= 0)."""

    micro_usd: int = 0
    tokens: int = 0

    def __post_init__(self) -> None:
        _check_amounts("Spend", (self.micro_usd, self.tokens), minimum=0)


@dataclass(frozen=True, slots=True)
class Settlement:
    """The end of a granted reservation: give back ``reserved``, spend ``actual``.

    ``actual`` may exceed ``reserved`` (a response longer than estimated): it is spent
    all the same, and the totals may then pass the limit: the money is gone.
    """

    reserved: Spend
    actual: Spend


@dataclass(frozen=True, slots=True)
class BudgetTotals:
    """A budget's figures: what was spent (settled) and what is reserved (in flight).

    Attributes:
        spent_micro_usd, spent_tokens: settled so far.
        reserved_micro_usd, reserved_tokens: granted and not yet settled.
        settled: settlements recorded.
    """

    spent_micro_usd: int = 0
    spent_tokens: int = 0
    reserved_micro_usd: int = 0
    reserved_tokens: int = 0
    settled: int = 0


@dataclass(frozen=True, slots=True)
class BudgetGrant:
    """The answer to `StateStore.budget_reserve`.

    Attributes:
        granted: for each `Spend` asked for, in order, whether it was reserved. Each is
            judged on its own, so a smaller one after a refused one may fit.
        totals: the figures after the call.
        unavailable: ``True`` when the store could not be reached and the budget failed
            closed: nothing was granted.
    """

    granted: tuple[bool, ...]
    totals: BudgetTotals
    unavailable: bool = False


@dataclass(frozen=True, slots=True)
class Fallback:
    """A store that could not reach its server and fell back, for the report.

    Attributes:
        kind: ``"rate_limit"`` (a local limiter at ``quota / workers``),
            ``"breaker"`` (local state) or ``"budget"`` (fails closed: refuses).
        name: the limiter that met the outage first.
        reason: what failed (the URL redacted).
    """

    kind: FallbackKind
    name: str
    reason: str


class StoreError(Exception):
    """A state store failed in a way it cannot fall back from."""


class StoreUnreachable(StoreError):
    """The store's server cannot be reached or refused us, at start (`StateStore.check`):
    the message names the URL, its password redacted."""


@runtime_checkable
class StateStore(Protocol):
    """Where `RateLimit`, `CircuitBreaker` and `Budget` state can live, shared.

    Every method is one atomic read-modify-write (for Redis, one Lua script: one round
    trip) that may serve a whole group of agents at once. Time is the store's own clock
    (Redis: the server's ``TIME``); answers give times relative to it. Names select one
    logical limiter; a limiter's settings travel with each call, so every process must
    pass the same ones for a name.

    Cancellation: a call cancelled while in flight may or may not have been applied (a
    script, once sent, runs to its end); the errors are those of the store's transport.
    """

    @property
    def fallbacks(self) -> tuple[Fallback, ...]:
        """Each fallback taken so far, once per kind and outage (empty for memory)."""
        ...

    async def check(self) -> None:
        """Raise `StoreUnreachable` unless the store answers now."""
        ...

    async def rate_reserve(
        self,
        name: str,
        quota: Quota | Sequence[Quota],
        weights: Sequence[int] | Sequence[Sequence[int]],
    ) -> Grant:
        """Reserve one start per weight, in order, first come first served.

        GCRA in integer microseconds (`_maths.gcra_reserve`), with ``T =
        quota.interval_us`` and ``C = quota.burst``: a weight ``w`` starts at ``max(now,
        max(tat, now) - (C - min(w, C)) * T, hold-off end)`` and moves the limit's
        ``tat`` to ``max(tat, start) + w * T``. With weight 1 this is `RateLimit`'s
        slot; a weight above ``C`` waits for a full bucket and leaves it in debt.
        Weights are ints in ``[1, MAX_AMOUNT]``.

        Several quotas (``[Quota(50), Quota(30_000, per=60, burst=30_000)]``: requests
        and tokens, `RateLimit`'s request mode) are buckets of one limit, reserved
        together atomically: each weight is then one int ``>= 0`` per bucket, and a
        reservation starts when every bucket allows it (only the first waits for the
        hold-off; each bucket keeps its own schedule).
        """
        ...

    async def rate_confirm(
        self,
        name: str,
        quota: Quota | Sequence[Quota],
        epoch: int,
        weights: Sequence[int] | Sequence[Sequence[int]],
    ) -> Grant | None:
        """After sleeping until a grant's start: ``None`` if those callers may start,
        or a new grant for them when a hold-off came after ``epoch`` and still runs
        (their slots are void: `RateLimit.confirm`)."""
        ...

    async def rate_hold_off(
        self, name: str, quota: Quota | Sequence[Quota], seconds: float
    ) -> HoldOffResult:
        """Pause everyone for ``seconds`` (rounded up to a millisecond): a TTL'd key
        extended with max(), never shortened. Starts then resume one at a time (the
        first bucket's; a token bucket keeps what it holds)."""
        ...

    async def rate_settle(
        self, name: str, quota: Quota | Sequence[Quota], delta: int | Sequence[int]
    ) -> None:
        """Take ``delta`` more units (``< 0``: give them back) per bucket, e.g. once a
        response's real token count is known: ``tat = max(tat, now) + delta * T``."""
        ...

    async def breaker_claim(self, name: str, rule: BreakerRule, n: int = 1) -> BreakerClaim:
        """Ask for ``n`` attempts; an open spell that has run out half-opens here."""
        ...

    async def breaker_record(
        self, name: str, rule: BreakerRule, verdicts: Sequence[Verdict]
    ) -> BreakerStatus:
        """Record how admitted attempts ended, in order; may open or close it."""
        ...

    async def breaker_status(self, name: str, rule: BreakerRule) -> BreakerStatus:
        """The breaker's state now; changes nothing."""
        ...

    async def budget_reserve(
        self, name: str, limits: BudgetLimits, spends: Sequence[Spend]
    ) -> BudgetGrant:
        """Reserve each spend that keeps ``spent + reserved + spend`` within every
        limit (at the limit is allowed), in order; refuse the others."""
        ...

    async def budget_settle(self, name: str, settlements: Sequence[Settlement]) -> BudgetTotals:
        """Settle granted reservations: release what was reserved, add what was spent."""
        ...

    async def budget_totals(self, name: str) -> BudgetTotals:
        """The budget's figures now; changes nothing."""
        ...

"""`FaultPlan`: the fate of every fake LLM call, drawn from a scenario and a seed.

Each call ``(unique_id, n)`` (an agent's n-th call) gets its own random generator keyed
by ``(seed, unique_id, n)``, so what a call does depends on nothing else: not on the
order Mesa shuffles agents into, not on which host runs them, not on other agents. The
fake client executes a `PlannedCall`; the oracle predicts outcomes from the same one.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from trio_mesa import Flavor

from ._scenario import EXCEPTION_NAMES, TRANSIENT_KINDS, FaultKind, Scenario

# Latencies are rounded to odd multiples of 2**-11 s: sums of such values are exact in
# floating point, and no latency can equal a "round" time limit, so a call never ties
# with its timeout (a tie's winner would depend on the scheduler).
_GRID = 2.0**-11

#: Real seconds a latency is kept away from its time limit in real-time runs: scheduling
#: jitter (GC pauses, a busy event loop) must not decide whether a call timed out.
REAL_TIME_MARGIN = 0.05


_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


_OK = FaultKind.OK
_HANG = FaultKind.HANG
_INTERRUPT = FaultKind.INTERRUPT
_SYNC = Flavor.SYNC
_ASYNCIO = Flavor.ASYNCIO


class CallRandom:
    """A tiny SplitMix64 generator keyed by integers.

    Methods: ``random``, ``uniform``, ``gauss``, ``choice``.

    Seeding a ``random.Random`` costs about 20 us; a run draws one generator per call
    (10,000 in a 100 x 100 run), so calls use this instead. Same key, same numbers, on
    every platform and Python version. SplitMix64's mixing function is written out in
    ``__init__`` and ``random``: a Python call per mix was a third of a plan's cost.
    """

    __slots__ = ("_state",)

    def __init__(self, *key: int) -> None:
        state = _GOLDEN
        for k in key:
            # state = mix((state ^ k) * _GOLDEN), all modulo 2**64
            z = (state ^ (k & _MASK)) * _GOLDEN & _MASK
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
            state = z ^ (z >> 31)
        self._state = state

    def random(self) -> float:
        """A float in [0, 1)."""
        # SplitMix64's next output (advance the state by _GOLDEN, mix it); its top 53
        # bits, scaled to [0, 1)
        self._state = z = (self._state + _GOLDEN) & _MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return ((z ^ (z >> 31)) >> 11) * 2.0**-53

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.random()

    def gauss(self, mu: float = 0.0, sigma: float = 1.0) -> float:
        # Box-Muller; 1 - random() is in (0, 1], so the log is finite.
        r = math.sqrt(-2.0 * math.log(1.0 - self.random()))
        return mu + sigma * r * math.cos(2.0 * math.pi * self.random())

    def choice(self, seq: Any) -> Any:
        return seq[int(self.random() * len(seq))]


@dataclass(frozen=True, slots=True)
class PlannedCall:
    """What one call does.

    Attributes:
        unique_id: the agent's ``unique_id``.
        call: the agent's 1-based call number.
        flavor: the agent's flavor.
        kind: what the call does, already adjusted for the flavor (see `FaultKind`).
        latency: model seconds before it returns or raises (``inf`` for ``HANG``); the
            sync agents do not sleep it (see `FakeLLM`).
        retry_after: for ``RATE_LIMIT``, the seconds the error asks to wait.
    """

    unique_id: int
    call: int
    flavor: Flavor
    kind: FaultKind
    latency: float
    retry_after: float = 0.0

    @property
    def exception_name(self) -> str | None:
        """The type name of the exception the agent's step raises, or ``None``."""
        return EXCEPTION_NAMES.get(self.kind)


class FaultPlan:
    """Every call's `PlannedCall` for one scenario, seed and agent count.

    Args:
        scenario: the `Scenario`.
        seed: overrides ``scenario.seed`` when given.
        agents: overrides ``scenario.agents`` when given.
    """

    def __init__(self, scenario: Scenario, seed: int | None = None, agents: int | None = None):
        if agents is not None and agents != scenario.agents:
            scenario = scenario.replace(agents=agents)
        self.scenario = scenario
        self.seed = scenario.seed if seed is None else seed
        self.agents = scenario.agents
        self.flavors: dict[int, Flavor] = _assign_flavors(scenario, self.seed)
        self._targets: list[frozenset[int]] = []
        for i, rule in enumerate(scenario.rules):
            if rule.agents is not None:
                self._targets.append(frozenset(rule.agents))
            else:
                k = max(1, round(rule.share * self.agents)) if rule.share > 0 else 0
                rng = random.Random(f"{self.seed}/rule/{i}")
                self._targets.append(frozenset(rng.sample(range(1, self.agents + 1), k)))
        self._background = sorted(scenario.faults.items(), key=lambda kv: kv[0].value)
        self._rules = tuple(zip(scenario.rules, self._targets, strict=True))
        self._limit = limit = scenario.limit
        # Latencies within `band` of the limit are moved out of it (see _away_from_limit).
        self._band = (
            max(scenario.guard * limit, REAL_TIME_MARGIN / scenario.real_time_scale)
            if limit != math.inf
            else 0.0
        )
        self.retry = scenario.retry
        # With a retry: per agent, (attempt within its turn, model seconds into the turn)
        # of each call planned so far (see `position`).
        self._positions: dict[int, list[tuple[int, float]]] = {}
        self._turns: dict[int, list[int]] = {}
        self.call = lru_cache(maxsize=None)(self._call)

    # A run directory snapshots the model, plan included (`trio_mesa.simulate(checkpoint=)`):
    # the cache of planned calls is rebuilt on load (the plan is a pure function of the
    # state kept).
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["call"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.call = lru_cache(maxsize=None)(self._call)

    def __repr__(self) -> str:
        flavors = ", ".join(
            f"{f.value}={n}" for f, n in sorted(Counter(self.flavors.values()).items(), key=str)
        )
        return (
            f"<FaultPlan {self.scenario.name!r} seed={self.seed} agents={self.agents} "
            f"steps={self.scenario.steps} ({flavors})>"
        )

    def position(self, unique_id: int, n: int) -> tuple[int, float]:
        """Where agent ``unique_id``'s ``n``-th call falls: ``(attempt, offset)``.

        ``attempt`` is its 1-based attempt within the agent's turn (a step), ``offset``
        the model seconds from the start of that turn to the attempt's start. Without a
        retry every call is ``(1, 0.0)``: call n is step n. With one, call n+1 is a retry
        of call n exactly when the engine would retry it: call n fails with a transient
        kind, attempts remain, it ends within the time limit, and the wait after it
        (its ``retry_after``, or the backoff) ends before the limit.
        """
        if self.retry is None:
            return (1, 0.0)
        known = self._positions.setdefault(unique_id, [(1, 0.0)])
        while len(known) < n:
            m = len(known)
            attempt, offset = known[m - 1]
            call = self.call(unique_id, m)
            delay = self._retry_delay(call.kind, call.retry_after, attempt)
            end = offset + (0.0 if call.flavor is _SYNC else call.latency)
            limit = math.inf if call.flavor is _SYNC else self._limit
            if delay is not None and end <= limit and end + delay < limit:
                known.append((attempt + 1, end + delay))
            else:
                known.append((1, 0.0))
        return known[n - 1]

    def first_call(self, unique_id: int, step: int) -> int:
        """The number of agent ``unique_id``'s first call in model step ``step``."""
        if self.retry is None:
            return step
        turns = self._turns.setdefault(unique_id, [1])
        n = turns[-1]
        while len(turns) < step:
            n += 1
            if self.position(unique_id, n)[0] == 1:
                turns.append(n)
        return turns[step - 1]

    def _retry_delay(self, kind: FaultKind, retry_after: float, attempt: int) -> float | None:
        """The engine's wait after a failed attempt, or ``None`` if it is not retried
        (whatever the time limit says)."""
        retry = self.retry
        if retry is None or kind not in TRANSIENT_KINDS or attempt >= retry.attempts:
            return None
        if kind is FaultKind.RATE_LIMIT and retry.honor_retry_after:
            if retry.max_retry_after is not None and retry_after > retry.max_retry_after:
                return None
            return retry_after
        return retry.backoff(attempt)

    def _call(self, unique_id: int, n: int) -> PlannedCall:
        """The `PlannedCall` for agent ``unique_id``'s ``n``-th call (cached).

        An id outside ``1..agents`` (the chaos server meets agents no scenario counted)
        plans as an asyncio agent that only background faults and rules listing it reach.
        """
        # Runs once per call of a run (10,000 in a 100 x 100 one): draws are in a fixed
        # order (rule rate, background fault, retry_after, latency), so keep it that way.
        flavor = self.flavors.get(unique_id, _ASYNCIO)
        rng = CallRandom(self.seed, unique_id, n)
        kind = _OK
        latency_dist = self.scenario.latency
        for rule, targets in self._rules:
            if unique_id not in targets or (rule.calls is not None and n not in rule.calls):
                continue
            if rule.rate >= 1 or rng.random() < rule.rate:
                if rule.kind is _INTERRUPT and flavor is _SYNC:
                    continue
                kind = rule.kind
                if rule.latency is not None:
                    latency_dist = rule.latency
                break
        else:
            u = rng.random()
            for fault, rate in self._background:
                if u < rate:
                    kind = fault
                    break
                u -= rate
        if flavor is _SYNC:
            if kind is _HANG:
                kind = FaultKind.TIMEOUT
            elif kind is _INTERRUPT:
                kind = _OK
        retry_after = 0.0
        if kind is FaultKind.RATE_LIMIT:
            retry_after = float(rng.choice(self.scenario.retry_afters))
        if kind is _HANG:
            return PlannedCall(unique_id, n, flavor, kind, math.inf)
        if self.retry is None or flavor is _SYNC or self._limit == math.inf:
            latency = self._away_from_limit(latency_dist.sample(rng))
        else:
            attempt, offset = self.position(unique_id, n)
            delay = self._retry_delay(kind, retry_after, attempt)
            latency = self._away_in_turn(latency_dist.sample(rng), offset, delay)
        return PlannedCall(unique_id, n, flavor, kind, latency, retry_after)

    def _away_in_turn(self, latency: float, offset: float, delay: float | None) -> float:
        """`_away_from_limit` for an attempt ``offset`` seconds into its turn: its end,
        and (if it is retried after ``delay``) the end of that wait, are kept ``band``
        away from the limit, so neither "did it time out" nor "is there time to retry"
        is a race."""
        limit, band = self._limit, self._band
        zones = [(limit - band, limit + band)]
        if delay is not None:
            zones.append((limit - band - delay, limit + band - delay))
        zones.sort()
        merged: list[list[float]] = []
        for lo, hi in zones:
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        end = offset + max(latency, 0.0)
        for lo, hi in merged:
            if lo < end < hi:
                end = lo if end - lo < hi - end and lo > offset else hi
        k = math.floor(max(end - offset, 0.0) / (2 * _GRID))
        latency = (2 * k + 1) * _GRID
        while any(lo < offset + latency < hi for lo, hi in merged):
            latency += 2 * _GRID
        return latency

    def _away_from_limit(self, latency: float) -> float:
        limit = self._limit
        if limit != math.inf:
            band = self._band
            if abs(latency - limit) < band:
                latency = limit - band if latency < limit else limit + band
        # Round down to an odd multiple of the grid (see _GRID)
        k = math.floor(max(latency, 0.0) / (2 * _GRID))
        latency = (2 * k + 1) * _GRID
        if latency == limit:  # only for a limit that is itself an odd multiple of the grid
            latency += 2 * _GRID
        return latency


def _assign_flavors(scenario: Scenario, seed: int) -> dict[int, Flavor]:
    """Flavor counts proportional to the weights (largest remainder), seeded placement."""
    n = scenario.agents
    names = [name for name in ("asyncio", "trio", "sync") if scenario.flavors.get(name, 0) > 0]
    total = sum(scenario.flavors[name] for name in names)
    exact = [scenario.flavors[name] * n / total for name in names]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(names)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    pool = [Flavor(name) for name, c in zip(names, counts, strict=True) for _ in range(c)]
    random.Random(f"{seed}/flavors").shuffle(pool)
    return {uid: pool[uid - 1] for uid in range(1, n + 1)}

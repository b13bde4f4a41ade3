"""`Scenario`: a declarative, seedable description of a fault-injection run.

A scenario says how many agents of which flavors a model has, how long their fake LLM
calls take, which faults strike which calls, and the step policy they run under
(per-agent ``timeout``, whole-step ``deadline``, ``strict``). Together with a seed it
determines every call's fate (see `FaultPlan`) and so, before anything runs, every
agent's outcome in every step (see `expected_run`). Scenarios are plain frozen values;
`dataclasses.replace` (or `Scenario.replace`) derives variants.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trio_mesa import Flavor, RateLimit, Retry, StepPolicy
from trio_mesa._checks import MAX_COUNT, check_bool, check_count, check_number, check_seconds, shown

from ._latency import Fixed, Latency, latency_from_value
from ._quota import Quota, quota_from_value


class FaultKind(enum.Enum):
    """What one fake LLM call does.

    ``OK``: returns a valid reply (with a rule's latency: a slow success). The faults are
    modelled on what real LLM clients raise: ``RATE_LIMIT`` (`RateLimitError`, HTTP 429,
    with ``retry_after``), ``TIMEOUT`` (the client's own request `Timeout`),
    ``CONNECTION_ERROR`` (`APIConnectionError`), ``SERVER_ERROR`` (`InternalServerError`,
    500), ``SERVICE_UNAVAILABLE`` (`ServiceUnavailableError`, 503), ``CONTENT_FILTER``
    (`ContentPolicyViolationError`); ``MALFORMED_JSON`` (the reply is cut-off JSON: the
    agent's ``json.loads`` raises ``json.JSONDecodeError``); ``BAD_TOOL_CALL`` (the reply's
    tool call has no name: the agent raises `ToolCallParseError`); ``HANG`` (the call
    never returns, so only a timeout or deadline ends it); ``INTERRUPT`` (raises
    ``KeyboardInterrupt``, opt-in, to test that it propagates and nothing keeps running).

    Sync agents run inline on the host thread, where the step cannot interrupt them: for
    them a ``HANG`` surfaces as the client's own request ``TIMEOUT``, and ``INTERRUPT`` does
    not apply (the call succeeds).
    """

    OK = "ok"
    RATE_LIMIT = "rate_limit"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    SERVER_ERROR = "server_error"
    SERVICE_UNAVAILABLE = "service_unavailable"
    MALFORMED_JSON = "malformed_json"
    BAD_TOOL_CALL = "bad_tool_call"
    CONTENT_FILTER = "content_filter"
    HANG = "hang"
    INTERRUPT = "interrupt"

    def __repr__(self) -> str:
        return f"FaultKind.{self.name}"


#: The exception type name an agent's outcome carries for each failing kind.
EXCEPTION_NAMES: dict[FaultKind, str] = {
    FaultKind.RATE_LIMIT: "RateLimitError",
    FaultKind.TIMEOUT: "Timeout",
    FaultKind.CONNECTION_ERROR: "APIConnectionError",
    FaultKind.SERVER_ERROR: "InternalServerError",
    FaultKind.SERVICE_UNAVAILABLE: "ServiceUnavailableError",
    FaultKind.MALFORMED_JSON: "JSONDecodeError",
    FaultKind.BAD_TOOL_CALL: "ToolCallParseError",
    FaultKind.CONTENT_FILTER: "ContentPolicyViolationError",
}


def _kind(value: Any, where: str) -> FaultKind:
    if isinstance(value, FaultKind):
        return value
    try:
        return FaultKind(value)
    except ValueError:
        names = ", ".join(k.value for k in FaultKind)
        raise ValueError(f"{where}: unknown fault kind {value!r} (one of: {names})") from None


def _probability(value: Any, where: str) -> float:
    return check_number(where, value, minimum=0, maximum=1, what="a probability")


def _positive_int(value: Any, where: str, maximum: int = MAX_COUNT) -> int:
    return check_count(where, value, maximum=maximum)


def _int_tuple(value: Any, where: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{where} must be a list of positive integers, not {shown(value)}")
    return tuple(_positive_int(v, f"{where} item") for v in value)


@dataclass(frozen=True, slots=True)
class FaultRule:
    """Make ``kind`` happen on some calls of some agents.

    Attributes:
        kind: what the matching calls do (`FaultKind` or its string value).
        agents: the ``unique_id``s this rule targets; ``None`` targets by ``share``.
        share: with ``agents=None``, the fraction of agents targeted (at least one),
            picked by a seeded draw; ``1.0`` (default) is every agent.
        calls: the 1-based call numbers (an agent's Nth call; every agent is called
            once per step, so call N is step N) it applies to; ``None`` is every call.
        rate: the probability that a matching call gets ``kind`` (1.0: always).
        latency: how long the call takes before the fault (or the slow success)
            surfaces; ``None`` uses the scenario's latency. Ignored for ``HANG``.
    """

    kind: FaultKind
    agents: tuple[int, ...] | None = None
    share: float = 1.0
    calls: tuple[int, ...] | None = None
    rate: float = 1.0
    latency: Latency | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "kind", _kind(self.kind, "FaultRule.kind"))
        set_(self, "agents", _int_tuple(self.agents, "FaultRule.agents"))
        set_(self, "calls", _int_tuple(self.calls, "FaultRule.calls"))
        set_(self, "share", _probability(self.share, "FaultRule.share"))
        set_(self, "rate", _probability(self.rate, "FaultRule.rate"))
        if self.latency is not None:
            set_(self, "latency", latency_from_value(self.latency, "FaultRule.latency"))


FLAVOR_NAMES = tuple(f.value for f in Flavor)

#: Upper bounds of a `Scenario`, far beyond any real run but keeping one bounded: a
#: plan and an oracle hold a record per agent and per step.
MAX_AGENTS = 1_000_000
MAX_STEPS = 100_000
MAX_NAME = 200

#: The kinds whose exception `trio_mesa.is_transient` accepts: a `Retry` tries them again.
TRANSIENT_KINDS = frozenset(
    {
        FaultKind.RATE_LIMIT,
        FaultKind.TIMEOUT,
        FaultKind.CONNECTION_ERROR,
        FaultKind.SERVER_ERROR,
        FaultKind.SERVICE_UNAVAILABLE,
    }
)

#: The keys of a scenario's ``retry`` table (TOML ``[retry]``): `trio_mesa.Retry`'s fields
#: that the oracle can follow (``jitter`` must be off, ``on`` is the default).
RETRY_KEYS = ("attempts", "initial", "max_delay", "honor_retry_after", "max_retry_after", "jitter")


def _retry(value: Any, where: str) -> Retry | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(RETRY_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(RETRY_KEYS)}")
        try:
            value = Retry(**{"jitter": False, **value})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None
    if not isinstance(value, Retry):
        raise TypeError(f"{where} must be a trio_mesa.Retry, a table or None, not {value!r}")
    if value.jitter:
        raise ValueError(
            f"{where}: jitter must be false: the oracle predicts each wait exactly, "
            "and a jittered wait is a random draw"
        )
    if value.on is not None:
        raise ValueError(
            f"{where}: on must be left at its default (trio_mesa.is_transient), not {value.on!r}"
        )
    return value


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named, seedable fault-injection run.

    Attributes:
        name: how ``python -m fault_injection run NAME`` finds it.
        description: one line for ``list``.
        agents: number of fake LLM agents (``unique_id`` 1..agents), at most
            ``MAX_AGENTS`` (1,000,000).
        steps: number of model steps, at most ``MAX_STEPS`` (100,000).
        seed: the default seed (``--seed`` overrides it).
        flavors: weights of ``"asyncio"``, ``"trio"`` and ``"sync"`` agents; the counts
            are proportional (largest remainder) and which agent gets which is seeded.
        latency: how long a call takes, in model seconds.
        faults: background per-call probabilities of each fault kind (summing to <= 1).
        rules: targeted faults (`FaultRule`), checked in order before the background
            faults; the first matching rule whose ``rate`` draw hits decides the call.
        timeout: per-agent timeout in model seconds (``None``: none).
        deadline: whole-step deadline in model seconds (``None``: none).
        strict: run steps in strict mode (`trio_mesa.StepFailed` on any failure).
        guard: latencies closer than ``guard * limit`` (and at least 50 ms of real time
            at ``real_time_scale``) to the effective time limit are moved that far away
            from it, so that a call's fate never depends on a race with its timeout:
            this keeps real-time runs as deterministic as virtual-time ones.
        real_time_scale: real seconds per model second when running in real time (the
            asyncio host, or ``--real-time``).
        retry: a `trio_mesa.Retry` (``jitter=False``, default ``on``) the steps run
            under, or a table of its fields; ``None`` (default): no retries. A retry is
            the agent's next planned call (see `FaultPlan.position`).
        retry_afters: the waits (model seconds) a ``RATE_LIMIT`` call's ``retry_after``
            is drawn from, one draw per call whatever the values.
        rate_limit: a `trio_mesa.RateLimit` of this many attempt starts per model second
            (``None``: none); ``rate_limit_burst`` is its ``burst``.
        quota: the provider quota the fake client enforces (`Quota` or requests per
            model second): a token bucket on the run's clock; an empty bucket answers
            `RateLimitError` (429) with the honest ``retry_after``, and the call counts.
            It needs a ``rate_limit`` no faster and no burstier than the quota, so that
            the oracle's answer (no 429 at all) is exact.

    The oracle predicts retries and rate limits exactly where start order does not
    matter, so some combinations are refused: a ``retry`` with ``interrupt`` faults, or
    with sync agents and a ``deadline`` (an inline sync agent's waits delay every agent
    after it); a ``rate_limit`` (or ``quota``) with a ``timeout``, ``deadline`` or
    ``interrupt`` faults (each agent's first slot depends on its place in the order).
    """

    name: str
    description: str = ""
    agents: int = 20
    steps: int = 5
    seed: int = 0
    flavors: Mapping[str, float] = field(default_factory=lambda: {"asyncio": 1.0})
    latency: Latency = Fixed(1.0)  # noqa: RUF009 - frozen: one shared default is safe
    faults: Mapping[FaultKind, float] = field(default_factory=dict)
    rules: tuple[FaultRule, ...] = ()
    timeout: float | None = None
    deadline: float | None = None
    strict: bool = False
    guard: float = 0.05
    real_time_scale: float = 0.01
    retry: Retry | None = None
    retry_afters: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 30.0)
    rate_limit: float | None = None
    rate_limit_burst: int | None = None
    quota: Quota | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if not isinstance(self.name, str) or not self.name or len(self.name) > MAX_NAME:
            raise ValueError(
                f"Scenario.name must be a non-empty string of at most {MAX_NAME} characters, "
                f"not {shown(self.name)}"
            )
        where = f"scenario {self.name!r}"
        _positive_int(self.agents, f"{where}: agents", MAX_AGENTS)
        _positive_int(self.steps, f"{where}: steps", MAX_STEPS)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"{where}: seed must be an int, not {shown(self.seed)}")
        if not isinstance(self.description, str):
            raise TypeError(f"{where}: description must be a string, not {shown(self.description)}")
        if not isinstance(self.flavors, Mapping) or not self.flavors:
            raise ValueError(f"{where}: flavors must be a non-empty table of weights")
        for name, weight in self.flavors.items():
            if name not in FLAVOR_NAMES:
                raise ValueError(f"{where}: unknown flavor {shown(name)} (one of: {FLAVOR_NAMES})")
            check_number(f"{where}: flavors.{name}", weight, minimum=0, what="a weight")
        if sum(self.flavors.values()) <= 0:
            raise ValueError(f"{where}: flavor weights must not all be zero")
        set_(self, "flavors", dict(self.flavors))
        set_(self, "latency", latency_from_value(self.latency, f"{where}: latency"))
        faults = {
            _kind(k, f"{where}: faults"): _probability(v, f"{where}: faults.{k}")
            for k, v in dict(self.faults).items()
        }
        if FaultKind.OK in faults:
            raise ValueError(f"{where}: faults lists failure rates; 'ok' is what remains")
        if sum(faults.values()) > 1 + 1e-9:
            raise ValueError(f"{where}: fault rates sum to {sum(faults.values())}, above 1")
        set_(self, "faults", faults)
        rules = tuple(self.rules)
        for i, rule in enumerate(rules):
            if not isinstance(rule, FaultRule):
                raise TypeError(f"{where}: rules[{i}] must be a FaultRule, not {rule!r}")
            if rule.agents is not None:
                for uid in rule.agents:
                    if uid > self.agents:
                        raise ValueError(
                            f"{where}: rules[{i}] targets agent {uid}, but the scenario has "
                            f"only {self.agents} agents (unique_id 1..{self.agents})"
                        )
        set_(self, "rules", rules)
        for name in ("timeout", "deadline"):
            value = getattr(self, name)
            if value is not None:
                check_seconds(f"{where}: {name}", value, positive=True)
        check_bool(f"{where}: strict", self.strict)
        check_number(f"{where}: guard", self.guard, minimum=0, maximum=0.5, below=True)
        check_number(f"{where}: real_time_scale", self.real_time_scale, minimum=0, above=True)
        hangs = self._strikes(FaultKind.HANG)
        if hangs and self.limit == math.inf:
            raise ValueError(
                f"{where}: a 'hang' fault never returns, so it needs a timeout or a deadline "
                "(without one the step would wait forever)"
            )
        self._check_recovery(where)

    def _strikes(self, kind: FaultKind) -> bool:
        return self.faults.get(kind, 0) > 0 or any(
            r.kind is kind and r.rate > 0 for r in self.rules
        )

    def _check_recovery(self, where: str) -> None:
        set_ = object.__setattr__
        set_(self, "retry", _retry(self.retry, f"{where}: retry"))
        ras = self.retry_afters
        if isinstance(ras, (str, bytes)) or not hasattr(ras, "__iter__"):
            raise TypeError(f"{where}: retry_afters must be a list of seconds, not {shown(ras)}")
        ras = tuple(ras)
        if not ras:
            raise ValueError(f"{where}: retry_afters must be a non-empty list of seconds")
        set_(
            self,
            "retry_afters",
            tuple(check_seconds(f"{where}: retry_afters[{i}]", v) for i, v in enumerate(ras)),
        )
        rate, burst = self.rate_limit, self.rate_limit_burst
        if rate is not None:
            check_number(
                f"{where}: rate_limit",
                rate,
                minimum=0,
                above=True,
                what="a number of starts per second",
            )
        if burst is not None:
            _positive_int(burst, f"{where}: rate_limit_burst")
            if rate is None:
                raise ValueError(f"{where}: rate_limit_burst needs a rate_limit")
        try:
            set_(self, "quota", quota_from_value(self.quota, f"{where}: quota"))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{where}: {exc}") from None
        interrupts = self._strikes(FaultKind.INTERRUPT)
        if self.retry is not None:
            if interrupts:
                raise ValueError(
                    f"{where}: retry with 'interrupt' faults is not predictable (which "
                    "retries start before the interrupt is a race); drop one of them"
                )
            if self.deadline is not None and self.flavors.get("sync", 0) > 0:
                raise ValueError(
                    f"{where}: retry with sync agents and a deadline is not predictable (an "
                    "inline sync agent's waits delay the agents after it, against the "
                    "deadline); drop the deadline or the sync agents"
                )
        if rate is not None and (self.limit != math.inf or interrupts):
            raise ValueError(
                f"{where}: rate_limit with a timeout, deadline or 'interrupt' faults is not "
                "predictable (each agent's first slot depends on its place in the start order)"
            )
        quota = self.quota
        if quota is not None and (
            rate is None or rate > quota.rate or (burst or 1) > quota.capacity
        ):
            raise ValueError(
                f"{where}: quota ({quota.describe()}) needs a rate_limit no faster and no "
                f"burstier than it (rate_limit={rate!r}, rate_limit_burst={burst!r}), so "
                "that no request is refused"
            )

    @property
    def limit(self) -> float:
        """The time an async agent may run: ``min(timeout, deadline)`` (``inf`` if none)."""
        limits = [v for v in (self.timeout, self.deadline) if v is not None]
        return float(min(limits)) if limits else math.inf

    def replace(self, **changes: Any) -> Scenario:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def policy(self, scale: float = 1.0) -> StepPolicy:
        """The `trio_mesa.StepPolicy` the steps run under, with times multiplied by ``scale``."""
        retry = self.retry
        if retry is not None and scale != 1.0:
            retry = dataclasses.replace(
                retry,
                initial=retry.initial * scale,
                max_delay=retry.max_delay * scale,
                max_retry_after=None
                if retry.max_retry_after is None
                else retry.max_retry_after * scale,
            )
        rate_limit = None
        if self.rate_limit is not None:
            # a rate is per second: in scaled time, more of them per real second
            rate_limit = RateLimit(self.rate_limit / scale, burst=self.rate_limit_burst)
        return StepPolicy(
            strict=self.strict,
            timeout=None if self.timeout is None else self.timeout * scale,
            deadline=None if self.deadline is None else self.deadline * scale,
            retry=retry,
            rate_limit=rate_limit,
        )

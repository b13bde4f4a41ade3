"""`RedisStore`: state shared by every process that names the same Redis, through coredis
(anyio: the same client runs on a Trio and on an asyncio host). Each call is one Lua
script (`_lua`), sent with EVALSHA and loaded again on NOSCRIPT. When the server cannot
be reached the store falls back, by kind, and says so once: a rate limit to a local
limiter at ``quota / workers``, a breaker to local state, a budget to refusing.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from .._checks import check_count, check_seconds
from .._text import clean
from . import _args, _lua
from ._memory import MemoryStore
from ._types import (
    BreakerClaim,
    BreakerRule,
    BreakerStatus,
    BudgetGrant,
    BudgetLimits,
    BudgetTotals,
    Fallback,
    FallbackKind,
    Grant,
    HoldOffResult,
    Quota,
    Settlement,
    Spend,
    StoreError,
    StoreUnreachable,
    Verdict,
    check_name,
)
from ._url import RedisURL, parse_redis_url, redact_url

if TYPE_CHECKING:
    import coredis

__all__ = ["RedisStore", "redact_url"]

logger = logging.getLogger("trio_mesa")

_FALLBACK_TEXT: dict[FallbackKind, str] = {
    "rate_limit": "rate limit {name!r} falls back to a local limiter at 1/{workers} of its quota",
    "breaker": "breaker {name!r} falls back to this process's own state",
    "budget": "budget {name!r} fails closed: every reservation is refused",
}


class _Script:
    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


_RATE_RESERVE = _Script(_lua.RATE_RESERVE)
_RATE_HOLD_OFF = _Script(_lua.RATE_HOLD_OFF)
_RATE_SETTLE = _Script(_lua.RATE_SETTLE)
_BREAKER_CLAIM = _Script(_lua.BREAKER_CLAIM)
_BREAKER_RECORD = _Script(_lua.BREAKER_RECORD)
_BREAKER_STATUS = _Script(_lua.BREAKER_STATUS)
_BUDGET_RESERVE = _Script(_lua.BUDGET_RESERVE)
_BUDGET_SETTLE = _Script(_lua.BUDGET_SETTLE)
_BUDGET_TOTALS = _Script(_lua.BUDGET_TOTALS)
_ALL = (
    _RATE_RESERVE,
    _RATE_HOLD_OFF,
    _RATE_SETTLE,
    _BREAKER_CLAIM,
    _BREAKER_RECORD,
    _BREAKER_STATUS,
    _BUDGET_RESERVE,
    _BUDGET_SETTLE,
    _BUDGET_TOTALS,
)


class _Down(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the server could not be reached or did not answer in time."""
    import anyio
    from coredis.exceptions import ConnectionError as RedisConnectionError

    if isinstance(exc, BaseExceptionGroup):
        return all(_unreachable(e) for e in exc.exceptions)
    return isinstance(
        exc,
        RedisConnectionError
        | TimeoutError
        | OSError
        | anyio.BrokenResourceError
        | anyio.ClosedResourceError
        | anyio.EndOfStream,
    )


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisStore:
    """A `StateStore` in Redis, shared by every process (on any machine) that uses the
    same URL and names. Use it as an async context manager, on Trio or asyncio::

        async with RedisStore("redis://localhost:6379/0", workers=4) as store:
            grant = await store.rate_reserve("openai", Quota(50), [1] * 8)

    Entering connects and checks the server (`check`): an unreachable server, or one
    that refuses our password, raises `StoreUnreachable` before anything is reserved.
    A URL that is not a ``redis://`` or ``rediss://`` URL is refused on construction
    (``ValueError``). The URL's password appears in no repr, log line or error message.

    Keys are ``{<prefix>:<name>}:<part>``: one hash tag per limiter, so its keys share a
    Redis Cluster slot. Idle keys expire by themselves.

    **When the server is unreachable** (a connection refused or lost, or no answer within
    ``timeout`` seconds) during a call, the call is answered locally, and so is every
    call in the next ``retry_after`` seconds (on this process's monotonic clock); then
    Redis is tried again:

    * rate limit: a local `MemoryStore` limiter at ``quota.share(workers)`` (``rate /
      workers``): ``workers`` processes falling back together stay within the quota.
      It is a fresh limiter: the shared one's state is not known.
    * breaker: local state (fresh: closed).
    * budget: fails closed: `budget_reserve` grants nothing (``unavailable=True``),
      `budget_totals` raises `StoreUnreachable`, and `budget_settle` keeps its
      settlements to send first when the server answers again (one that failed in
      flight may or may not have been applied: the server does not say).

    A store belongs to the task tree that entered it (one event loop, as its coredis
    client does): share it between that tree's tasks, not between threads or runs.

    Each kind's fallback is logged once per outage (a warning on the ``"trio_mesa"``
    logger) and recorded in `fallbacks`; the server answering again is logged too.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]`` or ``rediss://...`` (TLS;
            ``?ssl_ca_certs=PATH&ssl_cert_reqs=none|optional|required``).
        workers: how many processes share the quota: the fallback limiter's divisor.
        prefix: the first part of every key's hash tag.
        timeout: seconds to connect, and to wait for an answer, before the server counts
            as unreachable.
        retry_after: seconds to answer locally before trying the server again.
        clock: the local fallback's clock (seconds; ``time.monotonic``).

    Raises:
        TypeError, ValueError: on construction, a bad URL (redacted in the message) or
            option.
    """

    def __init__(
        self,
        url: str,
        *,
        workers: int,
        prefix: str = "trio-mesa",
        timeout: float = 2.0,
        retry_after: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url: RedisURL = parse_redis_url(url)
        self._workers = check_count("workers", workers)
        self._prefix = check_name(prefix)
        self._timeout = check_seconds("timeout", timeout, positive=True)
        self._retry_after = check_seconds("retry_after", retry_after)
        self._local = MemoryStore(clock=clock)
        self._client: coredis.Redis[bytes] | None = None
        self._stack: AsyncExitStack | None = None
        self._down_until: float | None = None
        self._down_reason = ""
        self._fell_back: set[FallbackKind] = set()
        self._fallbacks: list[Fallback] = []
        self._pending: list[tuple[str, tuple[Settlement, ...]]] = []
        self._reloads = 0

    def __repr__(self) -> str:
        return f"RedisStore({self._url.redacted!r}, workers={self._workers})"

    @property
    def url(self) -> str:
        """The server's URL, its password redacted."""
        return self._url.redacted

    @property
    def workers(self) -> int:
        """Processes sharing each quota: a rate limit falls back to ``1 / workers`` of it."""
        return self._workers

    @property
    def fallbacks(self) -> tuple[Fallback, ...]:
        """Each fallback taken so far, once per kind and outage, oldest first."""
        return tuple(self._fallbacks)

    @property
    def falling_back(self) -> bool:
        """Whether calls are being answered locally now (the server was unreachable
        less than ``retry_after`` seconds ago)."""
        return self._down_until is not None

    @property
    def script_reloads(self) -> int:
        """Scripts loaded again after the server answered NOSCRIPT (e.g. a restart or a
        ``SCRIPT FLUSH``)."""
        return self._reloads

    def key(self, name: str, part: str) -> str:
        """The Redis key of ``part`` of limiter ``name``: ``{prefix:name}:part``."""
        return f"{{{self._prefix}:{check_name(name)}}}:{part}"

    # Lifetime ----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        import coredis
        from coredis.retry import NoRetryPolicy

        if self._stack is not None:
            raise RuntimeError(f"{self!r} is already open")
        url = self._url
        client: coredis.Redis[bytes] = coredis.Redis(
            host=url.host,
            port=url.port,
            db=url.db,
            username=url.username,
            password=url.password,
            ssl_context=url.ssl_context(),
            connect_timeout=self._timeout,
            stream_timeout=self._timeout,
            retry_policy=NoRetryPolicy(),
        )
        stack = AsyncExitStack()
        try:
            await stack.enter_async_context(client)
        except Exception as exc:
            await stack.aclose()
            raise self._unreachable_error(exc) from None
        self._stack, self._client = stack, client
        try:
            await self.check()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Disconnect (entering again reconnects)."""
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def check(self) -> None:
        """PING the server and load the scripts.

        Raises:
            StoreUnreachable: the server cannot be reached, does not answer in time, or
                refuses us (e.g. a wrong password); the message names the URL, redacted.
        """
        client = self._connected()
        try:
            await client.ping()
            for script in _ALL:
                await client.script_load(script.source)
        except Exception as exc:
            raise self._unreachable_error(exc) from None

    def _unreachable_error(self, exc: BaseException) -> StoreUnreachable:
        return StoreUnreachable(f"Redis at {self.url} is unreachable: {self._describe(exc)}")

    def _describe(self, exc: BaseException) -> str:
        leaf = _leaf(exc)
        return self._url.hide(clean(f"{type(leaf).__name__}: {leaf}", 300))

    def _connected(self) -> coredis.Redis[bytes]:
        if self._client is None:
            raise RuntimeError(f"{self!r} is not open: use `async with store:` first")
        return self._client

    # One round trip ----------------------------------------------------------------

    async def _eval(self, script: _Script, keys: list[str], args: list[object]) -> Any:
        from coredis.exceptions import NoScriptError

        client = self._connected()
        if self._down_until is not None and time.monotonic() < self._down_until:
            raise _Down(self._down_reason)
        try:
            try:
                result = await client.evalsha(script.sha, keys, args)  # type: ignore[arg-type]
            except NoScriptError:
                self._reloads += 1
                await client.script_load(script.source)
                result = await client.evalsha(script.sha, keys, args)  # type: ignore[arg-type]
        except Exception as exc:
            if not _unreachable(exc):
                raise StoreError(f"Redis at {self.url}: {self._describe(exc)}") from None
            if self._down_until is None:
                self._down_reason = f"Redis at {self.url} is unreachable: {self._describe(exc)}"
            self._down_until = time.monotonic() + self._retry_after
            raise _Down(self._down_reason) from None
        if self._down_until is not None:
            logger.warning("trio_mesa: Redis at %s answers again; shared state resumes", self.url)
            self._down_until = None
            self._fell_back.clear()
        return result

    def _fall_back(self, kind: FallbackKind, name: str, reason: str) -> None:
        if kind in self._fell_back:
            return
        self._fell_back.add(kind)
        what = _FALLBACK_TEXT[kind].format(name=name, workers=self._workers)
        self._fallbacks.append(Fallback(kind, name, reason))
        logger.warning("trio_mesa: %s; %s", reason, what)

    # Rate limits -------------------------------------------------------------------

    def _rate_keys(self, name: str) -> list[str]:
        return [self.key(name, "rate"), self.key(name, "hold")]

    async def rate_reserve(
        self,
        name: str,
        quota: Quota | Sequence[Quota],
        weights: Sequence[int] | Sequence[Sequence[int]],
    ) -> Grant:
        """See `StateStore.rate_reserve`."""
        return await self._rate_reserve(name, quota, -1, weights)  # type: ignore[return-value]

    async def rate_confirm(
        self,
        name: str,
        quota: Quota | Sequence[Quota],
        epoch: int,
        weights: Sequence[int] | Sequence[Sequence[int]],
    ) -> Grant | None:
        """See `StateStore.rate_confirm`."""
        return await self._rate_reserve(
            name, quota, check_count("epoch", epoch, minimum=0), weights
        )

    async def _rate_reserve(
        self,
        name: str,
        quota: Quota | Sequence[Quota],
        epoch: int,
        weights: Sequence[int] | Sequence[Sequence[int]],
    ) -> Grant | None:
        quotas = _args.quotas(quota)
        parts = _args.weights(weights, len(quotas))
        args: list[object] = [epoch, len(quotas)]
        for q in quotas:
            args += [q.interval_us, q.burst]
        for weight in parts:
            args += weight
        try:
            r = await self._eval(_RATE_RESERVE, self._rate_keys(name), args)
        except _Down as down:
            self._fall_back("rate_limit", name, down.reason)
            local = [q.share(self._workers) for q in quotas]
            if epoch < 0:
                return await self._local.rate_reserve(name, local, parts)
            return await self._local.rate_confirm(name, local, epoch, parts)
        if not r[0]:
            return None
        return Grant(tuple(int(o) / 1_000_000 for o in r[3:]), int(r[1]), int(r[2]) / 1000)

    async def rate_hold_off(
        self, name: str, quota: Quota | Sequence[Quota], seconds: float
    ) -> HoldOffResult:
        """See `StateStore.rate_hold_off`."""
        quotas = _args.quotas(quota)
        ms = _args.hold_off_ms(seconds)
        first = quotas[0]
        keys = self._rate_keys(name)
        try:
            r = await self._eval(_RATE_HOLD_OFF, keys, [first.interval_us, first.burst, ms])
        except _Down as down:
            self._fall_back("rate_limit", name, down.reason)
            local = [q.share(self._workers) for q in quotas]
            return await self._local.rate_hold_off(name, local, seconds)
        return HoldOffResult(bool(r[0]), int(r[1]) / 1000, int(r[2]))

    async def rate_settle(
        self, name: str, quota: Quota | Sequence[Quota], delta: int | Sequence[int]
    ) -> None:
        """See `StateStore.rate_settle`."""
        quotas = _args.quotas(quota)
        deltas = _args.deltas(delta, len(quotas))
        args: list[object] = [len(quotas)]
        for q, moved in zip(quotas, deltas, strict=True):
            args += [q.interval_us, moved]
        try:
            await self._eval(_RATE_SETTLE, self._rate_keys(name)[:1], args)
        except _Down as down:
            self._fall_back("rate_limit", name, down.reason)
            local = [q.share(self._workers) for q in quotas]
            await self._local.rate_settle(name, local, deltas)

    # Breakers ----------------------------------------------------------------------

    def _breaker_call(self, name: str, rule: BreakerRule) -> tuple[list[str], list[object]]:
        keys = [self.key(name, part) for part in ("breaker", "open", "calls", "failures")]
        args: list[object] = [
            repr(rule.failure_rate),
            rule.min_calls,
            rule.window_us,
            rule.reset_after_ms,
            rule.probes,
            f"{rule.window:g}",
        ]
        return keys, args

    async def breaker_claim(self, name: str, rule: BreakerRule, n: int = 1) -> BreakerClaim:
        """See `StateStore.breaker_claim`."""
        n = _args.count(n)
        keys, args = self._breaker_call(name, rule)
        try:
            r = await self._eval(_BREAKER_CLAIM, keys, [*args, n])
        except _Down as down:
            self._fall_back("breaker", name, down.reason)
            return await self._local.breaker_claim(name, rule, n)
        return BreakerClaim(int(r[0]), int(r[1]), _status(r[2:]))

    async def breaker_record(
        self, name: str, rule: BreakerRule, verdicts: Sequence[Verdict]
    ) -> BreakerStatus:
        """See `StateStore.breaker_record`."""
        verdicts = _args.verdicts(verdicts)
        keys, args = self._breaker_call(name, rule)
        for v in verdicts:
            args += [v.kind, int(v.probe), clean(v.reason, 500)]
        try:
            r = await self._eval(_BREAKER_RECORD, keys, args)
        except _Down as down:
            self._fall_back("breaker", name, down.reason)
            return await self._local.breaker_record(name, rule, verdicts)
        return _status(r)

    async def breaker_status(self, name: str, rule: BreakerRule) -> BreakerStatus:
        """See `StateStore.breaker_status`."""
        keys, args = self._breaker_call(name, rule)
        try:
            r = await self._eval(_BREAKER_STATUS, keys, args)
        except _Down as down:
            self._fall_back("breaker", name, down.reason)
            return await self._local.breaker_status(name, rule)
        return _status(r)

    # Budgets -----------------------------------------------------------------------

    async def _flush_pending(self) -> None:
        while self._pending:
            name, settlements = self._pending[0]
            await self._eval(_BUDGET_SETTLE, [self.key(name, "budget")], _settle_args(settlements))
            self._pending.pop(0)

    async def budget_reserve(
        self, name: str, limits: BudgetLimits, spends: Sequence[Spend]
    ) -> BudgetGrant:
        """See `StateStore.budget_reserve`. Fails closed when the server is unreachable."""
        spends = _args.spends(spends)
        args: list[object] = [
            -1 if limits.max_micro_usd is None else limits.max_micro_usd,
            -1 if limits.max_tokens is None else limits.max_tokens,
        ]
        for s in spends:
            args += [s.micro_usd, s.tokens]
        try:
            await self._flush_pending()
            r = await self._eval(_BUDGET_RESERVE, [self.key(name, "budget")], args)
        except _Down as down:
            self._fall_back("budget", name, down.reason)
            return BudgetGrant((False,) * len(spends), BudgetTotals(), unavailable=True)
        return BudgetGrant(tuple(bool(g) for g in r[5:]), BudgetTotals(*map(int, r[:5])))

    async def budget_settle(self, name: str, settlements: Sequence[Settlement]) -> BudgetTotals:
        """See `StateStore.budget_settle`. While the server is unreachable, settlements
        are kept and sent first once it answers; this raises `StoreUnreachable` then."""
        settlements = _args.settlements(settlements)
        key = self.key(name, "budget")
        try:
            await self._flush_pending()
            r = await self._eval(_BUDGET_SETTLE, [key], _settle_args(settlements))
        except _Down as down:
            self._pending.append((name, settlements))
            self._fall_back("budget", name, down.reason)
            raise StoreUnreachable(
                f"{down.reason}; budget {name!r}: {len(settlements)} settlement(s) kept, "
                "to be sent when it answers"
            ) from None
        return BudgetTotals(*map(int, r))

    async def budget_totals(self, name: str) -> BudgetTotals:
        """See `StateStore.budget_totals`.

        Raises:
            StoreUnreachable: the server cannot be reached (a budget never guesses).
        """
        try:
            await self._flush_pending()
            r = await self._eval(_BUDGET_TOTALS, [self.key(name, "budget")], [])
        except _Down as down:
            self._fall_back("budget", name, down.reason)
            raise StoreUnreachable(f"{down.reason}; budget {name!r} unknown") from None
        return BudgetTotals(*map(int, r))

    @property
    def pending_settlements(self) -> int:
        """Budget settlements kept while the server was unreachable, not yet sent."""
        return sum(len(s) for _, s in self._pending)


def _status(r: list[Any]) -> BreakerStatus:
    state = _text(r[0])
    assert state in ("closed", "open", "half_open"), state
    return BreakerStatus(
        state,  # type: ignore[arg-type]
        int(r[1]) / 1000,
        int(r[2]),
        _text(r[3]),
        int(r[4]),
        int(r[5]),
        bool(r[6]),
        bool(r[7]),
    )


def _settle_args(settlements: Sequence[Settlement]) -> list[object]:
    args: list[object] = []
    for s in settlements:
        args += [s.reserved.micro_usd, s.reserved.tokens, s.actual.micro_usd, s.actual.tokens]
    return args

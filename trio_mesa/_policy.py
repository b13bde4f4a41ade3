"""`StepPolicy`: the options that shape one step, validated before any agent runs."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import trio

SyncMode = Literal["inline", "thread"]


@dataclass(frozen=True, slots=True)
class StepPolicy:
    """How a step runs its agents. Every field is validated on construction.

    Attributes:
        strict: raise `StepFailed` after every agent has finished if any failed.
        fail_fast: the first ``FAILED`` or ``TIMED_OUT`` agent cancels the others (they
            end ``CANCELLED``); with ``strict`` the step then raises, without it returns.
        timeout: seconds one agent call may run before it is cancelled (``TIMED_OUT``).
            ``None`` means no limit. Counted from the moment the agent starts, so time
            spent waiting for a concurrency slot does not count.
        deadline: seconds the whole step may take, counted from the step's start. Agents
            still running then are cancelled and agents not yet started are not started;
            both end ``TIMED_OUT`` and the report is still complete.
        max_concurrency: at most this many agents in flight at once in this step.
        limiter: a ``trio.CapacityLimiter`` to share between steps (and models): at most
            ``limiter.total_tokens`` agents in flight across all of them. Exclusive
            with ``max_concurrency``. Like every Trio synchronization primitive it is
            not thread-safe: share it between steps of one Trio run, or of runs made
            one after another (each ``run_step`` or sync compat call is a run of its
            own), never between runs going on at the same time in different threads.
        sync_mode: how sync ``step()`` agents run. ``"inline"`` (default): one after
            another, in start order, on the Trio thread, as Mesa would; they cannot be
            interrupted, so ``timeout`` does not apply to them (the ``deadline`` still
            keeps later ones from starting). ``"thread"``: each in a worker thread, so
            blocking calls (an HTTP request) overlap.
        max_threads: at most this many worker threads for ``sync_mode="thread"``.
        abandon_threads: threads cannot be cancelled. With ``False`` (default) a thread
            agent that outlives its timeout or the deadline is waited for: the step
            returns only when the thread has finished, a warning is logged, and the
            outcome is what the thread did (``OK`` with its result, or ``FAILED``), its
            ``duration`` showing the overrun. Nothing is left running. With ``True`` the
            step stops waiting at the timeout: the outcome is ``TIMED_OUT`` with
            ``abandoned=True``, a warning is logged, the report's ``str()`` says so, and
            the thread keeps running (its side effects may still happen).
    """

    strict: bool = False
    fail_fast: bool = False
    timeout: float | None = None
    deadline: float | None = None
    max_concurrency: int | None = None
    limiter: trio.CapacityLimiter | None = None
    sync_mode: SyncMode = "inline"
    max_threads: int = 128
    abandon_threads: bool = False

    def __post_init__(self) -> None:
        for name in ("timeout", "deadline"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number of seconds or None, not {value!r}")
            if math.isnan(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative number of seconds, not {value!r}")
        if self.max_concurrency is not None:
            mc = self.max_concurrency
            if isinstance(mc, bool) or not isinstance(mc, int):
                raise TypeError(f"max_concurrency must be an int or None, not {mc!r}")
            if mc < 1:
                raise ValueError(f"max_concurrency must be at least 1, not {mc!r}")
            if self.limiter is not None:
                raise ValueError(
                    "pass either max_concurrency or limiter, not both "
                    f"(max_concurrency={mc!r}, limiter={self.limiter!r})"
                )
        if self.limiter is not None and not isinstance(self.limiter, trio.CapacityLimiter):
            raise TypeError(f"limiter must be a trio.CapacityLimiter, not {self.limiter!r}")
        if self.sync_mode not in ("inline", "thread"):
            raise ValueError(f"sync_mode must be 'inline' or 'thread', not {self.sync_mode!r}")
        mt = self.max_threads
        if isinstance(mt, bool) or not isinstance(mt, int) or mt < 1:
            raise ValueError(f"max_threads must be a positive int, not {mt!r}")

    def replace(self, **changes: Any) -> StepPolicy:
        """A copy with ``changes`` applied (and validated)."""
        return replace(self, **changes)

    def as_kwargs(self) -> dict[str, Any]:
        """The fields as keyword arguments for `step_agents` / `run_step`."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def effective_timeout(self) -> float:
        return math.inf if self.timeout is None else float(self.timeout)


POLICY_FIELDS = frozenset(f.name for f in fields(StepPolicy))

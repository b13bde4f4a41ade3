"""The request seam's per-step state: `Seam`, and `current_seam`, the context variable
that names it in every agent task and worker thread of the step (see `trio_mesa._seam`,
which sets it, and `trio_mesa._transport`, which reads it for each request)."""

from __future__ import annotations

import contextvars
import random
import threading

from ._rate_limit import RateLimit
from ._recording import Recording
from ._retry import Retry


class Seam:
    """One step's (or one run's) seam: what the transports do with its agents' requests.

    Attributes:
        recording: the `Recording` in use, or ``None``.
        retry: the `Retry` for requests, or ``None``.
        rate_limit: the request-mode `RateLimit` every request passes, or ``None``.
        rng: draws the retry jitter (seeded per step, as step retries are).
        litellm: whether the seam is installed on litellm for this step (then usage
            comes from the seam, not from litellm's late logging events).
        unattributed: requests that passed through made outside any agent.
    """

    __slots__ = ("_lock", "litellm", "rate_limit", "recording", "retry", "rng", "unattributed")

    def __init__(
        self,
        recording: Recording | None,
        retry: Retry | None,
        seed: str = "",
        rate_limit: RateLimit | None = None,
    ) -> None:
        self.recording = recording
        self.retry = retry
        self.rate_limit = rate_limit
        self.rng = random.Random(seed)
        self.litellm = False
        self.unattributed = 0
        self._lock = threading.Lock()

    def count_unattributed(self) -> None:
        with self._lock:
            self.unattributed += 1


#: The seam of the step whose task (or agent task, or worker thread) this is.
current_seam: contextvars.ContextVar[Seam | None] = contextvars.ContextVar(
    "trio_mesa_seam", default=None
)


__all__ = ["Seam", "current_seam"]

"""State stores: where rate-limit, breaker and budget state can live, in memory or in
Redis shared by every process of a sweep. Private for now: the policies adopt them
later (CONTRIBUTING, "Past one machine")."""

from ._memory import MemoryStore
from ._redis import RedisStore, redact_url
from ._types import (
    MAX_AMOUNT,
    BreakerClaim,
    BreakerRule,
    BreakerState,
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
    StateStore,
    StoreError,
    StoreUnreachable,
    Verdict,
    VerdictKind,
)

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
    "MemoryStore",
    "Quota",
    "RedisStore",
    "Settlement",
    "Spend",
    "StateStore",
    "StoreError",
    "StoreUnreachable",
    "Verdict",
    "VerdictKind",
    "redact_url",
]

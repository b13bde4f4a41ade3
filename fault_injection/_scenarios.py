"""The named scenarios (`SCENARIOS`) that ``python -m fault_injection list`` shows.

Each models one way LLM calls go wrong in practice. Default sizes are small so that every
scenario runs on both hosts in the test suite in about a second of real time;
``--agents``/``--steps`` scale them up. ``real_time_scale`` keeps each one's time limits
at 0.2 s or more of real time, so real-time runs stay deterministic.
"""

from __future__ import annotations

from trio_mesa import Retry

from ._latency import Fixed, LogNormal, Uniform
from ._quota import Quota
from ._scenario import FaultKind, FaultRule, Scenario

K = FaultKind

_ALL: tuple[Scenario, ...] = (
    Scenario(
        name="demo",
        description=(
            "100 mixed agents, realistic latencies and errors, one hung call, retries "
            "(real seconds)"
        ),
        agents=100,
        steps=6,
        seed=2024,
        flavors={"asyncio": 2, "trio": 1, "sync": 1},
        latency=LogNormal(median=0.25, sigma=0.8, cap=10),
        faults={
            K.RATE_LIMIT: 0.02,
            K.TIMEOUT: 0.005,
            K.CONNECTION_ERROR: 0.005,
            K.SERVER_ERROR: 0.005,
            K.MALFORMED_JSON: 0.01,
            K.CONTENT_FILTER: 0.003,
        },
        rules=(FaultRule(K.HANG, share=0.01, calls=(3,)),),
        timeout=1.5,
        real_time_scale=1.0,
        # Transient failures are tried again within the agent's 1.5 s; a 429 asks for a
        # sub-second wait (as OpenAI's retry-after-ms often does), which is honoured.
        retry=Retry(attempts=3, initial=0.1, max_delay=1.0, jitter=False),
        retry_afters=(0.1, 0.2, 0.3, 0.5, 1.0),
    ),
    Scenario(
        name="quota",
        description=(
            "a provider quota of 50 requests/s (429 + honest retry_after when empty); "
            "RateLimit(50) + retry: every agent completes, no 429"
        ),
        agents=100,
        steps=3,
        flavors={"asyncio": 2, "trio": 1, "sync": 1},
        latency=Uniform(0.2, 1.0),
        faults={K.SERVER_ERROR: 0.01},
        quota=Quota(50, burst=50),
        rate_limit=50,
        retry=Retry(attempts=3, initial=0.25, max_delay=2.0, jitter=False),
        real_time_scale=0.02,
    ),
    Scenario(
        name="flaky",
        description="about 5% of calls fail transiently, in every way a provider can fail",
        agents=50,
        steps=10,
        latency=Uniform(0.5, 3.0),
        faults={
            K.RATE_LIMIT: 0.01,
            K.TIMEOUT: 0.005,
            K.CONNECTION_ERROR: 0.01,
            K.SERVER_ERROR: 0.005,
            K.SERVICE_UNAVAILABLE: 0.005,
            K.MALFORMED_JSON: 0.01,
            K.BAD_TOOL_CALL: 0.0025,
            K.CONTENT_FILTER: 0.0025,
        },
        timeout=10,
        real_time_scale=0.02,
    ),
    Scenario(
        name="rate-limit-storm",
        description="calls 3-5 hit a wall of fast HTTP 429s (retry_after set)",
        agents=40,
        steps=8,
        latency=Uniform(0.5, 2.0),
        faults={K.RATE_LIMIT: 0.02},
        rules=(FaultRule(K.RATE_LIMIT, calls=(3, 4, 5), rate=0.7, latency=Fixed(0.05)),),
        timeout=10,
        real_time_scale=0.02,
    ),
    Scenario(
        name="hung-agent",
        description="a few calls never return; the step deadline ends them, the rest finish",
        agents=20,
        steps=5,
        flavors={"asyncio": 1, "trio": 1},
        latency=Uniform(0.2, 2.0),
        rules=(
            FaultRule(K.HANG, share=0.05),
            FaultRule(K.HANG, share=0.1, calls=(2, 4)),
        ),
        deadline=5,
        real_time_scale=0.05,
    ),
    Scenario(
        name="dead-agent",
        description="two agents fail every call: one cannot connect, one always gets HTTP 503",
        agents=20,
        steps=5,
        flavors={"asyncio": 1, "sync": 1},
        latency=Uniform(0.2, 1.0),
        rules=(
            FaultRule(K.CONNECTION_ERROR, share=0.05),
            FaultRule(K.SERVICE_UNAVAILABLE, share=0.05, latency=Fixed(0.01)),
        ),
        timeout=5,
        real_time_scale=0.05,
    ),
    Scenario(
        name="slow-tail",
        description=(
            "heavy-tailed (log-normal) latencies: the timeout cuts the tail, slow successes pass"
        ),
        agents=100,
        steps=5,
        flavors={"asyncio": 1, "trio": 2, "sync": 1},
        latency=LogNormal(median=2.0, sigma=1.2, cap=120),
        rules=(FaultRule(K.OK, share=0.05, latency=Fixed(15.0)),),
        timeout=20,
        deadline=30,
        real_time_scale=0.02,
    ),
    Scenario(
        name="mixed-flavors",
        description="asyncio, Trio and sync agents side by side, each failing its own way",
        agents=30,
        steps=6,
        flavors={"asyncio": 1, "trio": 1, "sync": 1},
        latency=LogNormal(median=1.0, sigma=0.7, cap=30),
        faults={
            K.RATE_LIMIT: 0.05,
            K.HANG: 0.03,
            K.MALFORMED_JSON: 0.03,
            K.BAD_TOOL_CALL: 0.03,
            K.SERVER_ERROR: 0.03,
        },
        timeout=4,
        real_time_scale=0.05,
    ),
    Scenario(
        name="strict",
        description="strict mode: each step raises StepFailed with exactly the planned failures",
        agents=20,
        steps=4,
        flavors={"asyncio": 1, "trio": 1, "sync": 1},
        latency=Uniform(0.2, 2.0),
        faults={K.RATE_LIMIT: 0.05, K.CONNECTION_ERROR: 0.03, K.HANG: 0.03},
        timeout=3,
        strict=True,
        real_time_scale=0.1,
    ),
    Scenario(
        name="interrupt",
        description="KeyboardInterrupt in one agent's 3rd call propagates; nothing keeps running",
        agents=20,
        steps=5,
        flavors={"asyncio": 1, "trio": 1},
        latency=Uniform(0.2, 2.0),
        faults={K.RATE_LIMIT: 0.05},
        rules=(FaultRule(K.INTERRUPT, share=0.05, calls=(3,), latency=Fixed(1.1)),),
        timeout=5,
        real_time_scale=0.05,
    ),
)

#: The named scenarios, by name.
SCENARIOS: dict[str, Scenario] = {s.name: s for s in _ALL}

"""The chaos server's named scenarios (`SERVER_SCENARIOS`).

They are ordinary `Scenario` values, read by the server as: ``latency`` and ``faults``
(and any ``rules``) per request, ``seed``, and ``real_time_scale`` (real seconds per
model second of latency and of ``Retry-After``). ``agents`` is only the id range that
share-based rules draw from; ``timeout`` is the client time limit a scenario is written
for (latencies keep clear of it, and a scenario with ``hang`` must name one).

A scenario may also come with a provider quota (`SERVER_QUOTAS`, by name): ``quota``
is a clean provider that allows 50 requests a second (a token bucket, burst 50) and
answers 429 with an honest ``Retry-After`` beyond that. The quota is in real seconds.
"""

from __future__ import annotations

from .._latency import Fixed, Uniform
from .._quota import Quota
from .._scenario import FaultKind, Scenario

K = FaultKind

_ALL: tuple[Scenario, ...] = (
    Scenario(
        name="clean",
        description="every request answered, 0-10 ms",
        agents=100,
        latency=Uniform(0.0, 0.5),
        real_time_scale=0.02,
    ),
    Scenario(
        name="flaky",
        description="about 1 request in 5 fails, in every way a provider can fail",
        agents=100,
        latency=Uniform(0.5, 3.0),
        faults={
            K.RATE_LIMIT: 0.03,
            K.SERVICE_UNAVAILABLE: 0.02,
            K.SERVER_ERROR: 0.02,
            K.TIMEOUT: 0.02,
            K.CONNECTION_ERROR: 0.03,
            K.MALFORMED_JSON: 0.03,
            K.BAD_TOOL_CALL: 0.03,
            K.CONTENT_FILTER: 0.01,
            K.HANG: 0.01,
        },
        timeout=100,
        real_time_scale=0.02,
    ),
    Scenario(
        name="rate-limit-storm",
        description="4 requests in 5 get HTTP 429 with Retry-After; the rest succeed",
        agents=100,
        latency=Fixed(0.5),
        faults={K.RATE_LIMIT: 0.8},
        real_time_scale=0.02,
    ),
    Scenario(
        name="quota",
        description="a provider quota of 50 requests/s (burst 50): beyond it, 429 with an "
        "honest Retry-After; every admitted request answered, 0-10 ms",
        agents=200,
        latency=Uniform(0.0, 0.5),
        real_time_scale=0.02,
    ),
    Scenario(
        name="blackhole",
        description="no request is ever answered: only the client's time limit ends it",
        agents=100,
        faults={K.HANG: 1.0},
        timeout=100,
        real_time_scale=0.02,
    ),
)

#: The chaos server's named scenarios, by name.
SERVER_SCENARIOS: dict[str, Scenario] = {s.name: s for s in _ALL}

#: The provider quota a named server scenario enforces (`ChaosApp`'s default ``quota``).
SERVER_QUOTAS: dict[str, Quota] = {"quota": Quota(50)}


def resolve_server_scenario(scenario: Scenario | str) -> Scenario:
    """A `Scenario` from itself or a name in `SERVER_SCENARIOS`.

    Raises:
        KeyError: an unknown name (the message lists the known ones).
        ValueError: the scenario plans ``interrupt``, which no HTTP reply can carry.
    """
    if isinstance(scenario, str):
        try:
            scenario = SERVER_SCENARIOS[scenario]
        except KeyError:
            names = ", ".join(SERVER_SCENARIOS)
            raise KeyError(f"unknown server scenario {scenario!r} (one of: {names})") from None
    if not isinstance(scenario, Scenario):
        raise TypeError(f"expected a Scenario or a scenario name, not {scenario!r}")
    if scenario.faults.get(K.INTERRUPT, 0) > 0 or any(
        r.kind is K.INTERRUPT for r in scenario.rules
    ):
        raise ValueError(
            f"scenario {scenario.name!r} plans 'interrupt', which a server cannot send"
        )
    return scenario

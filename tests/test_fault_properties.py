"""Property: for any scenario, every step does exactly what the oracle predicted.

Hypothesis draws random scenarios (flavor mixes, latency distributions, background
faults, targeted rules including hangs and interrupts, timeouts, deadlines, strict mode)
and seeds; each runs on the Trio host in virtual time, so 500 examples take seconds.
"""

from __future__ import annotations

import logging

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fault_injection import FaultKind, FaultRule, Fixed, LogNormal, Scenario, Uniform, run_scenario

FAULTS = [k for k in FaultKind if k not in (FaultKind.OK, FaultKind.INTERRUPT)]

latencies = st.one_of(
    st.builds(Fixed, st.floats(0, 20)),
    st.tuples(st.floats(0, 10), st.floats(0, 10)).map(lambda t: Uniform(min(t), max(t))),
    st.builds(LogNormal, st.floats(0.05, 10), st.floats(0, 2), st.floats(1, 100)),
)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    agents = draw(st.integers(1, 10))
    flavors = draw(
        st.dictionaries(st.sampled_from(["asyncio", "trio", "sync"]), st.integers(1, 3), min_size=1)
    )
    kinds = draw(st.lists(st.sampled_from(FAULTS), max_size=3, unique=True))
    faults = {k: draw(st.floats(0, 0.3)) for k in kinds}
    rules = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(list(FaultKind)))
        targets = draw(
            st.one_of(st.none(), st.lists(st.integers(1, agents), min_size=1, max_size=3))
        )
        rules.append(
            FaultRule(
                kind,
                agents=targets,
                share=draw(st.floats(0, 1)),
                calls=draw(
                    st.one_of(st.none(), st.lists(st.integers(1, 4), min_size=1, max_size=2))
                ),
                rate=draw(st.sampled_from([1.0, 0.5])),
                latency=draw(st.one_of(st.none(), latencies)),
            )
        )
    timeout = draw(st.one_of(st.none(), st.floats(0.5, 30)))
    deadline = draw(st.one_of(st.none(), st.floats(0.5, 30)))
    if timeout is None and deadline is None:
        # a hang needs a limit; without one, drop hangs
        faults.pop(FaultKind.HANG, None)
        rules = [r for r in rules if r.kind is not FaultKind.HANG]
    return Scenario(
        "random",
        agents=agents,
        steps=draw(st.integers(1, 4)),
        flavors=flavors,
        latency=draw(latencies),
        faults=faults,
        rules=tuple(rules),
        timeout=timeout,
        deadline=deadline,
        strict=draw(st.booleans()),
    )


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios(), seed=st.integers(0, 2**32))
def test_random_scenarios_match_the_oracle(scenario: Scenario, seed: int) -> None:
    logging.getLogger("trio_mesa").disabled = True
    try:
        result = run_scenario(scenario, seed)
    finally:
        logging.getLogger("trio_mesa").disabled = False
    assert result.mismatches == []

"""Failures and tokens per step of a whole run, from Mesa's own DataCollector.

A model of fault_injection's fake LLM agents (the ``flaky`` scenario: about 5% of calls
fail transiently, every way a provider can fail) runs through `trio_mesa.simulate` in
virtual time (a seeded run: the same figures every time). The model's ``step()``
collects `trio_mesa.model_reporters` into its own ``DataCollector``; the example prints
the run's summary and the collector's table, then plots failures and tokens per step
with matplotlib when it is installed (``pip install 'trio-mesa[plot]'``).

    python examples/plot_failures.py [failures.png]

The README's picture is this plot: ``python examples/plot_failures.py
docs/_static/failures.png`` draws it, and a test checks that the figures it shows are
the ones this script computes today (they are written into the PNG's metadata).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from mesa import DataCollector
from trio.testing import MockClock

import trio_mesa
from fault_injection import SCENARIOS, FakeLLMModel, FaultPlan

SCENARIO = SCENARIOS["flaky"]
SEED = 7


class FlakyTown(FakeLLMModel):
    """The scenario's fake agents, stepped by the model's own ``step()``."""

    def __init__(self) -> None:
        super().__init__(FaultPlan(SCENARIO, SEED))
        self.datacollector = DataCollector(model_reporters=trio_mesa.model_reporters())

    def step(self) -> None:
        self.agents.shuffle_do("step")
        self.datacollector.collect(self)  # this step's figures: see model_reporters


def run() -> tuple[trio_mesa.RunReport, Any]:
    """Run the model; return the `RunReport` and the DataCollector's data frame."""
    model = FlakyTown()
    report = trio_mesa.simulate(
        model,
        SCENARIO.steps,
        policy=SCENARIO.policy(),
        clock=MockClock(autojump_threshold=0),  # the fake latencies in virtual time
        progress=False,
    )
    frame = model.datacollector.get_model_vars_dataframe()
    frame.index = range(1, len(frame) + 1)
    frame.index.name = "step"
    return report, frame


def figures(frame: Any) -> str:
    """What the plot shows, as JSON: kept in the PNG so a test can tell a stale picture."""
    columns = ("failed", "timed_out", "tokens")
    return json.dumps({c: [int(v) for v in frame[c]] for c in columns}, sort_keys=True)


def plot(frame: Any, path: str) -> bool:
    """Draw failures and tokens per step into ``path``; ``False`` without matplotlib."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (failures, tokens) = plt.subplots(2, 1, sharex=True, figsize=(7, 5))
    failures.bar(frame.index, frame["failed"], label="failed")
    failures.bar(frame.index, frame["timed_out"], bottom=frame["failed"], label="timed out")
    failures.set_ylabel("agents")
    failures.legend()
    tokens.plot(frame.index, frame["tokens"], marker="o")
    tokens.set_ylim(0, frame["tokens"].max() * 1.2)
    tokens.set_ylabel("tokens")
    tokens.set_xlabel("step")
    fig.suptitle(f"{SCENARIO.name}: {SCENARIO.description}", fontsize=9)
    # No "Software" entry (the matplotlib version): the same figures make the same file.
    fig.savefig(path, metadata={"Software": None, "Description": figures(frame)})
    plt.close(fig)
    return True


def main(argv: list[str]) -> int:
    path = argv[0] if argv else "failures.png"
    report, frame = run()
    print(report)
    print()
    print(frame.to_string())
    if plot(frame, path):
        print(f"\nplot written to {path}")
    else:
        print("\nmatplotlib is not installed (pip install 'trio-mesa[plot]'): table only")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

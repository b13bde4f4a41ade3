"""Agents that flush partial lines, under `simulate`'s default progress: run by
``tests/test_terminal_partial_prints.py`` on a terminal and piped.

Twelve sync agents in worker threads each print a line in pieces with ``flush=True``
(``end=""``, as progress dots and some loggers do), one piece holding text that reads as
rich markup (``[/done]``). The script prints every agent outcome (``OUTCOME step id
status exception``) and ``END``.
"""

from __future__ import annotations

import sys
import time

import mesa

import trio_mesa


class Dotty(mesa.Agent):
    def step(self) -> None:
        tag = f"agent {self.unique_id} step {self.model.steps}"
        print(f"{tag} [/done] ", end="", flush=True)
        time.sleep(0.001)
        print("..", end="", flush=True)
        print(" says bye", flush=True)
        print(f"{tag} warns [bold]", file=sys.stderr, flush=True)


class Model(mesa.Model):
    def __init__(self) -> None:
        super().__init__(rng=0)
        for _ in range(12):
            Dotty(self)

    def step(self) -> None:
        self.agents.shuffle_do("step")


run = trio_mesa.simulate(Model(), 3, sync_mode="thread")
for number, step in enumerate(run.steps, 1):
    for report in step.reports:
        for outcome in report.outcomes:
            print(
                "OUTCOME", number, outcome.unique_id, outcome.status.name, repr(outcome.exception)
            )
print("END")

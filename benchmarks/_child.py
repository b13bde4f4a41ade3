"""Run one workload in this (fresh) interpreter: ``python -m benchmarks._child NAME CONFIG``.

Prints the workload's rows as one JSON list on the last line of stdout.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from dataclasses import asdict

from benchmarks._harness import Config


def main() -> None:
    name, config = sys.argv[1], Config(**json.loads(sys.argv[2]))
    # Benchmarked agents do not fail; keep any log line from interleaving with the JSON.
    logging.getLogger("trio_mesa").addHandler(logging.NullHandler())
    logging.getLogger("trio_mesa").propagate = False
    rows = importlib.import_module(f"benchmarks.{name}").run(config)
    print(json.dumps([asdict(row) for row in rows]))


if __name__ == "__main__":
    main()

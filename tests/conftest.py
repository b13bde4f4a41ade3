"""Shared test set-up: pytest-trio runs every ``async def`` test (``trio_mode = true``)."""

from __future__ import annotations

import gc
import os

import pytest
import trio.testing

# litellm (an optional test extra) fetches a model cost map from the internet at import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# The chaos LLM server fixture (chaos_llm_server) and its chaos_server marker are loaded
# by the repository's root conftest.py (pytest_plugins belongs in the top-level one).


def pytest_collection_finish(session: pytest.Session) -> None:
    # Collection imported Mesa, numpy, pandas, litellm...: about 150,000 long-lived
    # objects that every full collection walked again, pausing the test process for up
    # to 0.2 s, the whole budget of some real-time tests (the asyncio host's scaled-down
    # timeouts). Frozen, they are skipped: `python -m fault_injection` does the same.
    gc.collect()
    gc.freeze()


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    """Virtual time that jumps ahead whenever every task is blocked."""
    return trio.testing.MockClock(autojump_threshold=0)

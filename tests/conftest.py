"""Shared test set-up: pytest-trio runs every ``async def`` test (``trio_mode = true``)."""

from __future__ import annotations

import os

import pytest
import trio.testing

# litellm (an optional test extra) fetches a model cost map from the internet at import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# The chaos LLM server fixture (chaos_llm_server) and its chaos_server marker.
pytest_plugins = ["fault_injection.pytest_plugin"]


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    """Virtual time that jumps ahead whenever every task is blocked."""
    return trio.testing.MockClock(autojump_threshold=0)

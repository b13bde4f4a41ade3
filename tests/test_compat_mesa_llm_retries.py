"""`trio_mesa.compat._mesa_llm_retries`: bounding mesa-llm 0.3.2's endless ``ModuleLLM`` retry.

One subprocess (``tests/mesa_llm_retries_check.py``: importing mesa_llm patches Mesa's
AgentSet process-wide) drives a real ``ModuleLLM`` through litellm against a chaos
server that answers every request with 429, and counts the HTTP requests each case
made. Without the switch, a call is still retrying when its window ends (mesa-llm's
tenacity loop has no stop); with it, exactly the bounded number of requests, then the
``RateLimitError`` itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HELPER = Path(__file__).with_name("mesa_llm_retries_check.py")


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    pytest.importorskip("mesa_llm")
    proc = subprocess.run(
        [sys.executable, str(HELPER)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_without_the_switch_mesa_llm_keeps_retrying(result) -> None:
    # Each ModuleLLM try is 3 HTTP requests (litellm's OpenAI client retries twice):
    # more than 3 means mesa-llm slept and tried again, and it was still at it.
    for case in ("unbounded", "after_restore"):
        assert result[case]["outcome"] == "still retrying", result[case]
        assert result[case]["requests"] > 3, result[case]


def test_bounded_to_one_try_is_one_request_and_the_rate_limit_error_itself(result) -> None:
    for case in ("bound_1", "bound_1_sync"):
        assert result[case]["outcome"] == "RateLimitError", result[case]
        assert result[case]["requests"] == 1, result[case]
        # mesa-llm's rebuilt error keeps the response: a step-level Retry can read it.
        assert result[case]["headers"]["retry-after"] == "1"
    assert result["state"] == "MesaLLMRetryBound(attempts=1, sdk_retries=0)"


def test_attempts_and_sdk_retries_count_exactly(result) -> None:
    assert (result["bound_2"]["outcome"], result["bound_2"]["requests"]) == ("RateLimitError", 2)
    # sdk_retries=None leaves litellm's default: 3 requests for the one try.
    sdk_default = result["bound_1_sdk_default"]
    assert (sdk_default["outcome"], sdk_default["requests"]) == ("RateLimitError", 3)


def test_a_bounded_client_still_answers_when_the_provider_does(result) -> None:
    assert result["clean"]["requests"] == 1
    assert "agent_unique_id: 4" in result["clean"]["text"]


def test_the_switch_is_lazy_idempotent_and_reversible(result) -> None:
    assert result["mesa_llm_imported_by_compat"] is False
    assert result["restore_before_any_bound"] is None
    assert result["first_bound"] == "MesaLLMRetryBound(attempts=1, sdk_retries=0)"
    assert result["bound_again"] == "MesaLLMRetryBound(attempts=1, sdk_retries=0)"
    assert result["restored"] == "MesaLLMRetryBound(attempts=2, sdk_retries=0)"
    assert result["originals_back"] is True
    assert result["restore_again"] is None
    assert result["state_at_end"] == "None"


def test_bad_bounds_name_the_value(result) -> None:
    assert result["bad_attempts"] == "attempts must be a positive integer, not 0"
    assert result["bad_sdk_retries"] == "sdk_retries must be None or an integer >= 0, not -1"


def test_litellm_reads_our_integer_retry_after_and_would_ignore_a_float(result) -> None:
    # litellm parses Retry-After with int(): "0.5" is -1 (unknown) and it falls back to
    # its own backoff. This pins why the chaos server's header is whole seconds.
    assert result["litellm_parses"] == [1, 3, -1]

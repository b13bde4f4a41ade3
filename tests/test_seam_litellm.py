"""litellm through the request seam (``tests/seam_litellm.py``, in a subprocess: litellm
and mesa-llm's imports are slow and patch process-wide state)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HELPER = Path(__file__).with_name("seam_litellm.py")


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> dict[str, Any]:
    cassette = tmp_path_factory.mktemp("seam-litellm") / "run.jsonl"
    done = subprocess.run(
        [sys.executable, str(HELPER), str(cassette)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_sync_completion_in_threads_is_attributed_recorded_and_replayed_offline(result) -> None:
    # Every agent sends the same prompts: the server keyed them by the seam's header.
    assert result["server"] == [[uid, call] for uid in (1, 2, 3, 4) for call in (1, 2)]
    assert result["replay"] == result["record"]
    assert result["record_usage"] == result["replay_usage"] == [2, 2, 2, 2]


def test_mesa_llm_retry_is_bounded_while_the_seam_retries_and_restored_after(result) -> None:
    assert result["bound_during"] == [1, 0]
    assert result["bound_after"] is None


def test_a_litellm_call_that_bypasses_the_seam_is_reported_loudly(result) -> None:
    assert result["bypass_status"] == "failed"  # the chaos server speaks no Anthropic
    [warning] = result["bypass_warnings"]
    assert "1 litellm call(s) of this step did not pass through" in warning
    assert "agent 1 (1)" in warning


def test_litellm_sessions_are_restored_after_each_step(result) -> None:
    assert result["sessions_restored"] == [True, True]


COST_SCRIPT = """
import contextlib, io, os
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
import litellm
from trio_mesa._transport import _cost

upstream = io.StringIO()
with contextlib.redirect_stdout(upstream), contextlib.suppress(Exception):
    litellm.cost_per_token(model="chaos", prompt_tokens=1, completion_tokens=1)
print("upstream prints:", "Provider List" in upstream.getvalue())
print("ours:", _cost("chaos", 1, 1), _cost("gpt-4o-mini", 1000, 1000) is not None)
"""


def test_pricing_a_model_litellm_does_not_know_prints_nothing() -> None:
    # Upstream: litellm 1.x prints "Provider List: ..." to stdout before raising for an
    # unknown model; the seam prices every response, so it must not ask for those.
    done = subprocess.run(
        [sys.executable, "-c", COST_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["upstream prints: True", "ours: None True"]

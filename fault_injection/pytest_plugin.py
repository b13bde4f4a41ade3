"""A pytest fixture serving the chaos LLM server: ``chaos_llm_server``.

Enable it in a ``conftest.py`` with ``pytest_plugins = ["fault_injection.pytest_plugin"]``.
Each test that asks for ``chaos_llm_server`` gets its own `ChaosServer` on a free
loopback port, started before the test and stopped after it. The scenario, seed and
other `ChaosServer` options come from the ``chaos_server`` marker (default: ``clean``)::

    @pytest.mark.chaos_server("flaky", seed=3)
    def test_my_model_survives(chaos_llm_server):
        model = MyModel(api_base=chaos_llm_server.api_base)
        ...
        chaos_llm_server.wait_idle()
        assert chaos_llm_server.log.faults()

A provider with a request quota: ``@pytest.mark.chaos_server("quota")`` (50 requests/s)
or ``@pytest.mark.chaos_server("clean", quota=Quota(5, burst=2))``.

Record once, replay forever: ``@pytest.mark.chaos_server(upstream=URL, record="run.jsonl")``
records a real model's exchanges; ``@pytest.mark.chaos_server(replay="run.jsonl")``
answers from them (``replay_mode="lenient"``; a faulty scenario overlays its faults,
``@pytest.mark.chaos_server("flaky", seed=7, replay="run.jsonl")``). A relative
``record`` or ``replay`` path is taken from the test file's directory, so a cassette
committed next to its test is found whatever directory pytest runs from.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .chaos import ChaosServer


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "chaos_server(scenario='clean', seed=None, **options): the scenario, seed and "
        "ChaosServer options of the chaos_llm_server fixture",
    )


@pytest.fixture
def chaos_llm_server(request: pytest.FixtureRequest) -> Iterator[ChaosServer]:
    """A running `ChaosServer` (see the ``chaos_server`` marker for its options)."""
    from .chaos import ChaosServer

    marker = request.node.get_closest_marker("chaos_server")
    args = marker.args if marker is not None else ()
    kwargs: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    for option in ("record", "replay"):
        value = kwargs.get(option)
        if isinstance(value, (str, Path)) and not Path(value).is_absolute():
            kwargs[option] = request.path.parent / value
    with ChaosServer(*args, **kwargs) as server:
        yield server

"""The request seam, in process: real HTTP on loopback to the chaos server, through
trio-mesa's httpx clients (`trio_mesa.async_http_client`, `trio_mesa.http_client`: what
``openai.AsyncOpenAI(http_client=...)`` is given), on every host and flavor.

Agents here send OpenAI chat requests with httpx directly; their prompts never name the
agent (every agent sends the same text), so any attribution is the seam's. litellm's
side (the seam installed on ``litellm.aclient_session``) is proven end to end with real
mesa-llm agents in ``tests/test_e2e_seam_replay.py`` and ``tests/test_seam_litellm.py``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from mesa import Agent, Model

import trio_mesa
from fault_injection import FaultKind, FaultRule, Scenario, chaos_server
from trio_mesa import Cassette, CassetteError, Retry, StepPolicy, trio_native

PROMPT = [{"role": "user", "content": "Where should I walk next?"}]  # no agent id in it


def _body(n: int) -> dict[str, Any]:
    return {"model": "chaos", "messages": [*PROMPT, {"role": "user", "content": f"turn {n}"}]}


class Town(Model):
    def __init__(self, api_base: str, kind: type[Agent], n: int = 4, calls: int = 2) -> None:
        super().__init__(rng=7)
        self.api_base = api_base
        self.calls = calls
        self.tools_run: dict[int, int] = {}
        self.replies: dict[int, list[str]] = {}
        for _ in range(n):
            kind(self)

    def tool(self, agent: Agent) -> None:
        """A side effect between an agent's requests (buying the shoes)."""
        self.tools_run[agent.unique_id] = self.tools_run.get(agent.unique_id, 0) + 1

    def keep(self, agent: Agent, response: httpx.Response) -> None:
        response.raise_for_status()
        text = response.json()["choices"][0]["message"]["content"]
        self.replies.setdefault(agent.unique_id, []).append(text)


class AioWalker(Agent):
    client: httpx.AsyncClient | None = None

    async def astep(self) -> None:
        client = AioWalker.client
        assert client is not None
        for n in range(self.model.calls):
            if n == 1:
                self.model.tool(self)
            r = await client.post(self.model.api_base + "/chat/completions", json=_body(n))
            self.model.keep(self, r)


class TrioWalker(Agent):
    client: httpx.AsyncClient | None = None

    @trio_native
    async def astep(self) -> None:
        client = TrioWalker.client
        assert client is not None
        for n in range(self.model.calls):
            if n == 1:
                self.model.tool(self)
            r = await client.post(self.model.api_base + "/chat/completions", json=_body(n))
            self.model.keep(self, r)


class SyncWalker(Agent):
    client: httpx.Client | None = None

    def step(self) -> None:
        client = SyncWalker.client
        assert client is not None
        for n in range(self.model.calls):
            if n == 1:
                self.model.tool(self)
            r = client.post(self.model.api_base + "/chat/completions", json=_body(n))
            self.model.keep(self, r)


@pytest.fixture(autouse=True)
def _clients():
    AioWalker.client = trio_mesa.async_http_client()
    TrioWalker.client = trio_mesa.async_http_client()
    SyncWalker.client = trio_mesa.http_client()
    yield
    SyncWalker.client.close()


def _keys(server: Any) -> list[tuple[int | None, int]]:
    return sorted((r.agent, r.call) for r in server.records())


def _run_trio(model: Town, **options: Any) -> trio_mesa.StepReport:
    return trio_mesa.run_step(model.agents, **options)


def _run_asyncio(model: Town, **options: Any) -> trio_mesa.StepReport:
    async def main() -> trio_mesa.StepReport:
        return await trio_mesa.aio_step_agents(model.agents, **options)

    return asyncio.run(main())


# Asyncio agents on the Trio host (trio-asyncio) are proven with litellm and real
# mesa-llm agents (tests/test_e2e_seam_replay.py). Raw httpx from such an agent inside
# this pytest process fails in httpcore's anyio shield ("no running event loop"), while
# the same code passes as a plain script: left out here, noted for the lead.
HOSTS = {
    "trio-agents": (TrioWalker, _run_trio, {}),
    "asyncio-agents-on-asyncio": (AioWalker, _run_asyncio, {}),
    "sync-threads": (SyncWalker, _run_trio, {"sync_mode": "thread"}),
    "sync-inline-on-asyncio": (SyncWalker, _run_asyncio, {}),
}


@pytest.mark.parametrize("case", list(HOSTS))
def test_every_request_names_its_agent_and_replays_offline(case, tmp_path: Path) -> None:
    kind, run, options = HOSTS[case]
    cassette = tmp_path / "run.jsonl"
    with chaos_server("clean", seed=3) as server:
        recorded = Town(server.api_base, kind)
        report = run(recorded, cassette=cassette, record="all", **options)
        assert report.all_ok, str(report)
        api_base = server.api_base
        keys = _keys(server)
    # Identical prompts, yet the server keyed each request by the agent that sent it:
    # the seam's X-Agent-Id header, numbered per agent.
    assert keys == [(uid, call) for uid in (1, 2, 3, 4) for call in (1, 2)]
    assert sorted((e.agent, e.call) for e in Cassette.load(cassette)) == keys
    assert [o.usage.calls for o in report] == [2] * 4
    # Offline: same api_base, nothing listening there any more.
    replayed = Town(api_base, kind)
    again = run(replayed, cassette=cassette, record="none", **options)
    assert again.all_ok, str(again)
    assert replayed.replies == recorded.replies
    assert [o.usage for o in again] == [o.usage for o in report]


def test_a_request_made_outside_any_agent_passes_through_untouched() -> None:
    seen: list[int] = []

    class Peek(trio_mesa.OutcomeHook):
        def on_report(self, report: trio_mesa.StepReport) -> None:
            # The step's own task, no agent's: sent as it is, with no X-Agent-Id.
            model = report.outcomes[0].agent.model
            reply = SyncWalker.client.post(  # type: ignore[union-attr]
                model.api_base + "/chat/completions", json=_body(0)
            )
            seen.append(reply.status_code)

    with chaos_server("clean") as server:
        model = Town(server.api_base, TrioWalker, n=2, calls=1)
        report = trio_mesa.run_step(model.agents, hooks=(Peek(),))
        records = server.records()
    assert seen == [200]
    assert sorted(r.agent for r in records if r.agent is not None) == [1, 2]
    assert [r.agent for r in records if r.agent is None] == [None]
    assert report.usage.calls == 2  # the hook's request is in no agent's usage


def _scenario(kind: FaultKind, agent: int = 1) -> Scenario:
    return Scenario(
        name="second-fails",
        agents=4,
        rules=(FaultRule(kind, agents=(agent,), calls=(2,)),),
        real_time_scale=0.01,
    )


@pytest.mark.parametrize("kind", [FaultKind.SERVER_ERROR, FaultKind.RATE_LIMIT])
@pytest.mark.parametrize("case", ["trio-agents", "asyncio-agents-on-asyncio", "sync-threads"])
def test_request_retry_sends_the_failed_request_again_and_nothing_else(kind, case) -> None:
    agent_kind, run, options = HOSTS[case]
    retry = Retry(attempts=3, initial=0.01, max_delay=0.05, jitter=False)
    with chaos_server(_scenario(kind)) as server:
        model = Town(server.api_base, agent_kind)
        report = run(model, request_retry=retry, **options)
        records = [(r.agent, r.call, r.fault) for r in server.records() if r.agent == 1]
    assert report.all_ok, str(report)
    # Agent 1's first request and its tool ran once; its second request failed and was
    # sent again at the seam, before the agent saw anything.
    assert sorted(records) == [(1, 1, "ok"), (1, 2, kind.value), (1, 3, "ok")]
    assert model.tools_run == {1: 1, 2: 1, 3: 1, 4: 1}
    by_id = report.by_id()
    assert by_id[1].attempts == 1 and by_id[1].usage.request_retries == 1
    assert by_id[1].usage.calls == 2
    assert report.usage.request_retries == 1
    assert "1 request(s) retried" in " ".join(str(report).split())  # wrapped lines


def test_a_step_retry_runs_the_tool_again_where_a_request_retry_does_not() -> None:
    retry = Retry(attempts=3, initial=0.01, max_delay=0.05, jitter=False)
    with chaos_server(_scenario(FaultKind.SERVER_ERROR)) as server:
        model = Town(server.api_base, TrioWalker)
        report = trio_mesa.run_step(model.agents, retry=retry)
    assert report.all_ok
    assert model.tools_run[1] == 2  # bought twice: the whole step ran again
    assert report.by_id()[1].attempts == 2 and report.usage.request_retries == 0


def test_request_retry_gives_up_after_its_attempts_and_the_agent_sees_the_last_answer() -> None:
    scenario = Scenario(
        name="always-500",
        agents=4,
        rules=(FaultRule(FaultKind.SERVER_ERROR, agents=(1,), calls=(2, 3)),),
        real_time_scale=0.01,
    )
    with chaos_server(scenario) as server:
        model = Town(server.api_base, TrioWalker)
        report = trio_mesa.run_step(
            model.agents, request_retry=Retry(attempts=2, initial=0.01, jitter=False)
        )
    failed = report.by_id()[1]
    assert failed.status is trio_mesa.Status.FAILED
    assert isinstance(failed.exception, httpx.HTTPStatusError)
    assert failed.exception.response.status_code == 500
    assert failed.usage.request_retries == 1


def test_request_retry_waits_are_cut_by_the_agent_timeout() -> None:
    scenario = Scenario(
        name="always-500",
        agents=4,
        rules=(FaultRule(FaultKind.SERVER_ERROR, agents=(1,), calls=(2,)),),
        real_time_scale=0.01,
    )
    with chaos_server(scenario) as server:
        model = Town(server.api_base, TrioWalker)
        report = trio_mesa.run_step(
            model.agents,
            timeout=2.0,
            request_retry=Retry(attempts=3, initial=60.0, max_delay=60.0, jitter=False),
        )
    assert report.by_id()[1].status is trio_mesa.Status.TIMED_OUT
    assert [o.status for o in report if o.unique_id != 1] == [trio_mesa.Status.OK] * 3


# -- record modes --------------------------------------------------------------------------


def _record(tmp_path: Path, calls: int = 2, mode: str = "all") -> tuple[Path, Town, str]:
    cassette = tmp_path / "run.jsonl"
    with chaos_server("clean", seed=3) as server:
        model = Town(server.api_base, TrioWalker, calls=calls)
        assert trio_mesa.run_step(model.agents, cassette=cassette, record=mode).all_ok
        return cassette, model, server.api_base


def test_once_records_an_absent_file_and_replays_a_present_one(tmp_path: Path) -> None:
    cassette, recorded, api_base = _record(tmp_path, mode="once")
    before = cassette.read_bytes()
    replayed = Town(api_base, TrioWalker)
    assert trio_mesa.run_step(replayed.agents, cassette=cassette, record="once").all_ok
    assert replayed.replies == recorded.replies
    assert cassette.read_bytes() == before


def test_none_refuses_a_call_beyond_the_recording_naming_agent_call_and_file(
    tmp_path: Path,
) -> None:
    cassette, _, api_base = _record(tmp_path, calls=1)
    model = Town(api_base, TrioWalker, calls=2)
    report = trio_mesa.run_step(model.agents, cassette=cassette, record="none")
    for outcome in report:
        exc = outcome.exception
        assert isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code == 400
        message = exc.response.json()["error"]["message"]
        assert f"agent {outcome.unique_id}, call 2 is beyond the recording" in message
        assert str(cassette) in message


def test_a_diverged_request_is_refused_with_its_first_difference(tmp_path: Path) -> None:
    cassette, _, api_base = _record(tmp_path, calls=1)
    global PROMPT
    saved = PROMPT
    PROMPT = [{"role": "user", "content": "Where should I run next?"}]
    try:
        model = Town(api_base, TrioWalker, calls=1)
        report = trio_mesa.run_step(model.agents, cassette=cassette, record="none")
    finally:
        PROMPT = saved
    exc = report.by_id()[2].exception
    assert isinstance(exc, httpx.HTTPStatusError)
    error = exc.response.json()["error"]
    assert error["code"] == "replay_diverged"
    assert "agent 2, call 1 differs" in error["message"]
    assert "$.messages[0].content" in error["message"]


def test_new_episodes_replays_what_is_there_and_records_the_rest(tmp_path: Path) -> None:
    cassette = tmp_path / "run.jsonl"
    with chaos_server("clean", seed=3) as server:
        first = Town(server.api_base, TrioWalker, calls=1)
        with trio_mesa.use_cassette(cassette, record="all"):
            trio_mesa.run_step(first.agents)
        n_first = len(server.records())
        # Resume: the first step's calls come from the file, the second's are new.
        model = Town(server.api_base, TrioWalker, calls=1)
        with trio_mesa.use_cassette(cassette, record="new_episodes") as recording:
            assert trio_mesa.run_step(model.agents).all_ok
            assert trio_mesa.run_step(model.agents).all_ok
        assert (recording.replayed, recording.recorded) == (4, 4)
        assert len(server.records()) == n_first + 4
    loaded = Cassette.load(cassette)
    assert sorted((e.agent, e.call) for e in loaded) == [
        (uid, call) for uid in (1, 2, 3, 4) for call in (1, 2)
    ]


def test_new_episodes_resumes_a_recording_cut_short(tmp_path: Path) -> None:
    cassette, recorded, _ = _record(tmp_path)
    lines = cassette.read_bytes().splitlines(keepends=True)
    cassette.write_bytes(b"".join(lines[:5]) + lines[5][:30])  # 4 exchanges, a torn 5th
    with chaos_server("clean", seed=3) as server:
        model = Town(server.api_base, TrioWalker)
        with trio_mesa.use_cassette(cassette, record="new_episodes") as recording:
            model.api_base = server.api_base
            assert trio_mesa.run_step(model.agents).all_ok
        assert (recording.replayed, recording.recorded) == (4, 4)
    assert model.replies == recorded.replies
    assert len(Cassette.load(cassette)) == 8


@pytest.mark.parametrize(
    ("damage", "line", "field"),
    [
        ("missing", 0, ""),
        ("truncated", 6, "end"),
        ("edited", 3, "digest"),
    ],
)
def test_a_bad_cassette_fails_before_any_agent_runs(tmp_path, damage, line, field) -> None:
    cassette, _, api_base = _record(tmp_path)
    if damage == "missing":
        cassette.unlink()
    elif damage == "truncated":
        cassette.write_bytes(b"".join(cassette.read_bytes().splitlines(keepends=True)[:5]))
    else:
        lines = cassette.read_bytes().splitlines(keepends=True)
        obj = json.loads(lines[2])
        obj["body"] = obj["body"].replace("Thought", "Thunk", 1)
        lines[2] = (json.dumps(obj) + "\n").encode()
        cassette.write_bytes(b"".join(lines))
    model = Town(api_base, TrioWalker)
    with pytest.raises(CassetteError) as err:
        trio_mesa.run_step(model.agents, cassette=cassette, record="none")
    assert (err.value.path, err.value.line, err.value.field) == (str(cassette), line, field)
    assert model.tools_run == {}  # no agent ran


def test_every_exchange_is_on_disk_as_soon_as_it_is_received(tmp_path: Path) -> None:
    cassette = tmp_path / "run.jsonl"
    lines_seen: list[int] = []

    class Peeking(TrioWalker):
        @trio_native
        async def astep(self) -> None:
            await TrioWalker.astep(self)
            lines_seen.append(len(cassette.read_bytes().splitlines()))

    with chaos_server("clean") as server:
        model = Town(server.api_base, Peeking, n=1)
        trio_mesa.run_step(model.agents, cassette=cassette, record="all")
    assert lines_seen == [3]  # header + both exchanges, before the step ended


def test_bad_cassette_arguments_are_refused_naming_the_function(tmp_path: Path) -> None:
    model = Town("http://127.0.0.1:9/v1", TrioWalker)
    with pytest.raises(ValueError, match=r"run_step\(\): record must be one of 'none'"):
        trio_mesa.run_step(model.agents, cassette=tmp_path / "x.jsonl", record="sometimes")
    with pytest.raises(ValueError, match=r"step_agents\(\): record='all' needs cassette"):
        trio.run(lambda: trio_mesa.step_agents(model.agents, record="all"))
    with pytest.raises(TypeError, match=r"request_retry must be a trio_mesa\.Retry"):
        StepPolicy(request_retry=3)  # type: ignore[arg-type]

"""Record once, replay forever: the chaos server as a recording proxy, exact replay, and
faults overlaid on recorded replies, over real HTTP on loopback.

The upstream is either a clean chaos server or a tiny stdlib HTTP server that checks
the API key it is sent (so we can see the key pass through and stay out of the
cassette) and answers a 429 with ``Retry-After`` on request. The end-to-end proof with
real mesa-llm agents is in ``test_e2e_replay.py``.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fault_injection import (
    Cassette,
    CassetteError,
    ChaosServer,
    Exchange,
    FaultKind,
    FaultPlan,
    FaultRule,
    Scenario,
    chaos_server,
)
from fault_injection.chaos._cassette import CassetteWriter
from fault_injection.chaos._cli import add_serve_parser, run_serve

K = FaultKind
KEY = "sk-test-SECRET-0123456789"
MOVE = {
    "type": "function",
    "function": {
        "name": "move_one_step",
        "parameters": {
            "type": "object",
            "properties": {"direction": {"type": "string", "enum": ["North", "South"]}},
            "required": ["direction"],
        },
    },
}


def chat(agent: int, text: str = "where next?", *, tools: bool = False) -> dict:
    body: dict = {
        "model": "chaos",
        "messages": [
            {"role": "system", "content": "You are a walker."},
            {"role": "user", "content": f"{{'agent_unique_id': {agent}}} {text}"},
        ],
    }
    if tools:
        body["tools"] = [MOVE]
        body["tool_choice"] = "auto"
    return body


class _KeyCheckingUpstream(BaseHTTPRequestHandler):
    """A provider that wants ``Authorization: Bearer KEY``; "please 429" gets a 429."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        text = body["messages"][-1]["content"]
        if self.headers.get("authorization") != f"Bearer {KEY}":
            status, headers = 401, {}
            reply: dict = {"error": {"message": "bad key", "type": "auth", "code": None}}
        elif "please 429" in text:
            status, headers = 429, {"Retry-After": "3", "X-Secret-Header": KEY}
            reply = {"error": {"message": "slow down", "type": "requests", "code": None}}
        else:
            status, headers = 200, {"X-Secret-Header": KEY}
            reply = {
                "id": "up-1",
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": f"echo: {text}"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            }
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def key_checking_upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KeyCheckingUpstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def faults(server: ChaosServer) -> list:
    """The server's faults once no request is in flight (a client has its response a
    moment before the server records how the exchange ended)."""
    return [r for r in server.records() if r.fault != "ok"]


def post(client: httpx.Client, server: ChaosServer, body: dict, **headers: str) -> httpx.Response:
    return client.post(server.api_base + "/chat/completions", json=body, headers=headers)


#: Five agents, two calls each (the second offers a tool), recorded in this order.
CALLS = [(agent, call) for call in (1, 2) for agent in (1, 2, 3, 4, 5)]


def _body(agent: int, call: int) -> dict:
    return chat(agent, f"call {call}", tools=call == 2)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, dict[tuple[int, int], bytes]]:
    """A cassette of `CALLS` against a clean chaos upstream, and the bytes each got."""
    path = tmp_path_factory.mktemp("cassette") / "run.jsonl"
    got = {}
    with (
        chaos_server("clean") as upstream,
        chaos_server(upstream=upstream.api_base, record=path) as proxy,
        httpx.Client(timeout=10) as c,
    ):
        for agent, call in CALLS:
            r = post(c, proxy, _body(agent, call))
            assert r.status_code == 200
            got[(agent, call)] = r.content
    return path, got


# -- record -------------------------------------------------------------------------------


def test_recording_passes_the_key_through_and_never_writes_it(tmp_path, client) -> None:
    path = tmp_path / "run.jsonl"
    with (
        key_checking_upstream() as upstream,
        chaos_server(upstream=upstream, record=path) as proxy,
    ):
        ok = post(client, proxy, chat(1), authorization=f"Bearer {KEY}")
        assert ok.status_code == 200, ok.text
        assert ok.json()["choices"][0]["message"]["content"].startswith("echo: ")
        limited = post(client, proxy, chat(1, "please 429"), authorization=f"Bearer {KEY}")
        assert (limited.status_code, limited.headers["retry-after"]) == (429, "3")
        # Written and flushed as it is sent: a crash now would keep both exchanges.
        assert len(Cassette.load(path, complete=False)) == 2
        assert post(client, proxy, chat(2)).status_code == 401  # no key: the upstream says
    text = path.read_text()
    assert KEY not in text and "authorization" not in text.lower()
    cassette = Cassette.load(path)
    assert [(e.agent, e.call, e.status) for e in cassette] == [
        (1, 1, 200),
        (1, 2, 429),
        (2, 1, 401),
    ]
    assert cassette.get(1, 2).headers == {"content-type": "application/json", "retry-after": "3"}
    assert cassette.get(1, 1).content == ok.content
    assert [r.status for r in proxy.records()] == [200, 429, 401]


def test_an_unreachable_upstream_is_a_502_naming_it_and_the_proxy_keeps_serving(
    tmp_path, client
) -> None:
    dead = "http://127.0.0.1:9/v1"  # the discard port: nothing listens on loopback
    path = tmp_path / "run.jsonl"
    with chaos_server(upstream=dead, record=path) as proxy:
        for _ in range(2):
            r = post(client, proxy, chat(1))
            assert r.status_code == 502
            error = r.json()["error"]
            assert error["code"] == "upstream_unreachable" and dead in error["message"]
        assert client.get(proxy.base_url + "/_chaos/health").json()["requests"] == 2
        assert client.get(proxy.api_base + "/models").status_code == 502
    # What the client got is recorded: a replay gives the same 502s.
    assert [(e.call, e.status) for e in Cassette.load(path)] == [(1, 502), (2, 502)]


def test_a_live_proxy_under_faults_never_forwards_a_call_it_will_reset(client) -> None:
    # Every call a connection error: the plan draws "reset" or "truncated" per call. A
    # reset needs no reply, so the paid upstream must not be billed for it.
    scenario = Scenario(
        name="drops",
        agents=4,
        latency=0.0,
        rules=(FaultRule(K.CONNECTION_ERROR),),
        real_time_scale=0.01,
    )
    with chaos_server("clean") as upstream:
        with chaos_server(scenario, seed=3, upstream=upstream.api_base) as proxy:
            for agent in (1, 2, 3, 4):
                for call in (1, 2, 3):
                    with pytest.raises(httpx.TransportError):
                        post(client, proxy, _body(agent, 1 + call % 2))
            assert proxy.wait_idle(10)
            drops = [(r.agent, r.call, r.detail) for r in proxy.records()]
        assert upstream.wait_idle(10)
        forwarded = [(r.agent, r.request) for r in upstream.records()]
    assert {d for _, _, d in drops} == {"reset", "truncated"}  # seed 3 draws both
    truncated = [(a, c) for a, c, d in drops if d == "truncated"]
    assert len(forwarded) == len(truncated)
    assert sorted(a for a, _ in forwarded) == sorted(a for a, _ in truncated)


def test_a_call_its_client_gave_up_on_is_replayed_as_one_it_gives_up_on_again(
    tmp_path, client
) -> None:
    # Agent 1's first call hangs at the provider and its client times out; then it
    # retries. Replay must make that client time out again, or every later call of the
    # agent (and what its model does) would come one call early.
    stuck = Scenario(
        name="stuck",
        agents=2,
        latency=0.0,
        rules=(FaultRule(K.HANG, agents=(1,), calls=(1,)),),
        timeout=1.0,  # what a scenario with a hang needs; here the client's is what counts
        real_time_scale=0.01,
    )
    path = tmp_path / "run.jsonl"
    with httpx.Client(timeout=httpx.Timeout(10.0, read=1.0)) as impatient:
        with chaos_server(stuck) as upstream:
            with chaos_server(upstream=upstream.api_base, record=path) as proxy:
                with pytest.raises(httpx.ReadTimeout):
                    post(impatient, proxy, chat(1))
                retried = post(client, proxy, chat(1))
                other = post(client, proxy, chat(2))
                assert proxy.wait_idle(10)
                recorded = [(r.agent, r.call, r.outcome) for r in proxy.records()]
            assert upstream.wait_idle(10)  # the hanging upstream call was let go
        assert (retried.status_code, other.status_code) == (200, 200)
        assert recorded == [(1, 1, "client_disconnected"), (1, 2, "sent"), (2, 1, "sent")]
        cassette = Cassette.load(path)
        assert [(e.agent, e.call, e.status, e.abandoned) for e in cassette] == [
            (1, 1, 499, True),
            (1, 2, 200, False),
            (2, 1, 200, False),
        ]
        assert '"abandoned": true' in path.read_text()
        with chaos_server(replay=path) as replay:
            with pytest.raises(httpx.ReadTimeout):
                post(impatient, replay, chat(1))
            assert post(client, replay, chat(1)).content == retried.content
            assert post(client, replay, chat(2)).content == other.content
            assert replay.wait_idle(10)
            replayed = replay.records()
    assert [(r.agent, r.call, r.outcome, r.fault) for r in replayed] == [
        (1, 1, "client_disconnected", "ok"),
        (1, 2, "sent", "ok"),
        (2, 1, "sent", "ok"),
    ]
    assert "hung up" in replayed[0].detail


def test_an_abandoned_exchange_cannot_claim_a_reply(tmp_path) -> None:
    path = tmp_path / "run.jsonl"
    lying = Exchange(1, 1, chat(1), 200, {}, "{}", abandoned=True)
    writer = CassetteWriter(path)
    writer.write(lying)
    writer.close()
    with pytest.raises(CassetteError) as info:
        Cassette.load(path)
    assert (info.value.line, info.value.field) == (2, "abandoned")


def test_models_are_forwarded_to_the_upstream(client) -> None:
    with chaos_server("clean") as upstream, chaos_server(upstream=upstream.api_base) as proxy:
        assert client.get(proxy.api_base + "/models").json()["data"][0]["id"] == "chaos"


# -- replay -------------------------------------------------------------------------------


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**32 - 1))
def test_replay_answers_each_agents_call_byte_for_byte_in_any_order(recorded, seed) -> None:
    path, got = recorded
    # Any interleaving of the agents that keeps each agent's own calls in order.
    pending = {agent: [1, 2] for agent in (1, 2, 3, 4, 5)}
    rng = random.Random(seed)
    order = []
    while pending:
        agent = rng.choice(sorted(pending))
        order.append((agent, pending[agent].pop(0)))
        if not pending[agent]:
            del pending[agent]
    with chaos_server(replay=path) as server, httpx.Client(timeout=10) as c:
        for agent, call in order:
            r = post(c, server, _body(agent, call))
            assert r.status_code == 200
            assert r.content == got[(agent, call)]
            assert r.headers["content-type"] == "application/json"
        assert faults(server) == []


def test_identical_prompts_from_two_agents_keep_their_own_replies(tmp_path, client) -> None:
    path = tmp_path / "run.jsonl"
    same = {"model": "chaos", "messages": [{"role": "user", "content": "the same prompt"}]}
    with chaos_server("clean") as up, chaos_server(upstream=up.api_base, record=path) as proxy:
        first = {a: post(client, proxy, same, **{"x-agent-id": str(a)}).content for a in (1, 2)}
    assert first[1] != first[2]  # the upstream's replies name the agent
    with chaos_server(replay=path) as server:
        for agent in (2, 1):
            assert post(client, server, same, **{"x-agent-id": str(agent)}).content == first[agent]


def test_a_diverged_request_is_refused_naming_agent_call_and_first_difference(
    recorded, client
) -> None:
    path, _ = recorded
    with chaos_server(replay=path) as server:
        assert post(client, server, _body(3, 1)).status_code == 200
        r = post(client, server, chat(3, "call 2 but the model changed its mind", tools=True))
        assert r.status_code == 400
        error = r.json()["error"]
        assert error["code"] == "replay_diverged"
        message = error["message"]
        assert "agent 3, call 2" in message and str(path) in message
        assert "$.messages[1].content: recorded \"{'agent_unique_id': 3} call 2\"" in message
        assert "changed its mind" in message
        [fault] = faults(server)
        assert (fault.agent, fault.call, fault.fault, fault.status) == (
            3,
            2,
            "replay_diverged",
            400,
        )
        assert fault.detail.startswith("$.messages[1].content")


def test_lenient_replay_serves_a_diverged_request_anyway(recorded, client) -> None:
    path, got = recorded
    with chaos_server(replay=path, replay_mode="lenient") as server:
        r = post(client, server, chat(4, "something else"))
        assert (r.status_code, r.content) == (200, got[(4, 1)])
        [record] = server.records()
        assert record.fault == "ok" and record.detail.startswith("diverged: $.messages[1]")


def test_a_call_beyond_the_recording_names_agent_and_call(recorded, client) -> None:
    path, _ = recorded
    with chaos_server(replay=path) as server:
        for call in (1, 2):
            assert post(client, server, _body(5, call)).status_code == 200
        r = post(client, server, _body(5, 2))
        assert r.status_code == 400
        error = r.json()["error"]
        assert error["code"] == "replay_exhausted"
        assert "agent 5, call 3 is beyond the recording" in error["message"]
        assert "2 call(s) of agent 5" in error["message"]
        assert [r.fault for r in faults(server)] == ["replay_exhausted"]
        unknown = post(client, server, chat(99))
        assert "agent 99, call 1" in unknown.json()["error"]["message"]


def test_a_second_client_run_is_told_to_reset_and_replays_again_after_a_reset(
    recorded, client
) -> None:
    # The server numbers each agent's calls from its start: a second run of the same
    # client against it continues the count. The error says so; a reset starts over.
    path, got = recorded
    with chaos_server(replay=path) as server:
        first_run = [post(client, server, _body(a, c)).content for a, c in CALLS]
        assert first_run == [got[k] for k in CALLS]
        second = post(client, server, _body(1, 1))
        assert second.status_code == 400
        message = second.json()["error"]["message"]
        assert "agent 1, call 3 is beyond the recording" in message
        assert "second client run" in message and "POST /_chaos/reset" in message
        r = client.post(server.base_url + "/_chaos/reset?wait_idle=5")
        assert r.status_code == 200 and r.json()["status"] == "reset"
        assert r.json()["requests"] == 0  # the log starts afresh too
        second_run = [post(client, server, _body(a, c)).content for a, c in CALLS]
        assert second_run == first_run
        assert [(r.agent, r.call) for r in server.records()] == CALLS
        server.reset()  # the same from Python
        assert post(client, server, _body(3, 1)).content == got[(3, 1)]


def test_a_reset_replays_the_plans_faults_from_each_agents_first_call(client) -> None:
    with chaos_server("rate-limit-storm", seed=4) as server:
        run = [post(client, server, chat(5)).status_code for _ in range(8)]
        assert 429 in run and 200 in run
        server.reset()
        assert [post(client, server, chat(5)).status_code for _ in range(8)] == run
        assert [r.call for r in server.records()] == list(range(1, 9))


def test_reset_is_refused_while_recording(tmp_path, client) -> None:
    with (
        chaos_server("clean") as upstream,
        chaos_server(upstream=upstream.api_base, record=tmp_path / "r.jsonl") as proxy,
    ):
        assert post(client, proxy, chat(1)).status_code == 200
        r = client.post(proxy.base_url + "/_chaos/reset")
        assert r.status_code == 409 and "recording a cassette" in r.json()["error"]["message"]
        with pytest.raises(RuntimeError, match="recording a cassette"):
            proxy.reset()
        assert post(client, proxy, chat(1)).status_code == 200
    assert [(e.agent, e.call) for e in Cassette.load(tmp_path / "r.jsonl")] == [(1, 1), (1, 2)]


def test_a_log_is_not_reset_under_a_request_in_flight() -> None:
    from fault_injection import FaultLog

    log = FaultLog()
    record = log.start(1, "ok", "ok", "chaos")
    with pytest.raises(RuntimeError, match="1 request\\(s\\) in flight"):
        log.reset()
    log.finish(record, outcome="sent")
    log.reset()
    assert len(log) == 0 and log.next_call(1) == 1


def test_a_recorded_error_is_replayed_with_its_status_and_headers(tmp_path, client) -> None:
    path = tmp_path / "run.jsonl"
    with key_checking_upstream() as up, chaos_server(upstream=up, record=path) as proxy:
        recorded = post(client, proxy, chat(1, "please 429"), authorization=f"Bearer {KEY}")
    with chaos_server(replay=path) as server:
        r = post(client, server, chat(1, "please 429"))
    assert (r.status_code, r.headers["retry-after"], r.content) == (429, "3", recorded.content)


def test_a_corrupt_cassette_fails_before_serving(recorded, tmp_path) -> None:
    path, _ = recorded
    lines = path.read_text().splitlines()
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join(lines[:3]) + "\n")  # cut short: no end line
    with pytest.raises(CassetteError, match=r"broken\.jsonl:4: end: missing"):
        ChaosServer(replay=broken)
    # Cassette.load(..., complete=False) replays what a crashed recording kept.
    assert (
        len(ChaosServer(replay=Cassette.load(broken, complete=False)).app.source.replay.cassette)
        == 2
    )


# -- fault overlay ------------------------------------------------------------------------


def test_overlay_faults_strike_by_the_plan_and_successes_get_recorded_replies(
    recorded, client
) -> None:
    path, got = recorded
    scenario = Scenario(
        name="overlay",
        agents=5,
        latency=0.0,
        rules=(
            FaultRule(K.RATE_LIMIT, agents=(1,), calls=(1,)),
            FaultRule(K.BAD_TOOL_CALL, agents=(2,), calls=(2,)),
            FaultRule(K.SERVER_ERROR, agents=(3,), calls=(2,)),
        ),
        real_time_scale=0.01,
    )
    with chaos_server(scenario, seed=5, replay=path) as server:
        assert post(client, server, _body(1, 1)).status_code == 429  # the plan's fate
        retried = post(client, server, _body(1, 1))  # the client retries: call 2
        assert (retried.status_code, retried.content) == (200, got[(1, 1)])
        assert post(client, server, _body(2, 1)).content == got[(2, 1)]
        spoiled = post(client, server, _body(2, 2))
        assert spoiled.status_code == 200
        [good] = json.loads(got[(2, 2)])["choices"][0]["message"]["tool_calls"]
        [bad] = spoiled.json()["choices"][0]["message"]["tool_calls"]
        assert bad["function"]["name"] == good["function"]["name"] == "move_one_step"
        with pytest.raises(ValueError):
            json.loads(bad["function"]["arguments"])
        # A request the recording never saw (the fault changed what the model sends)
        # still gets the agent's next recorded reply of the same kind.
        assert post(client, server, chat(3, "elsewhere")).content == got[(3, 1)]
        assert post(client, server, _body(3, 2)).status_code == 500
        assert post(client, server, _body(3, 2)).content == got[(3, 2)]
        # Each reply is served once: agent 3 has none left.
        assert post(client, server, _body(3, 2)).json()["error"]["code"] == "replay_exhausted"
        records = server.records()
    plan = FaultPlan(scenario, 5)
    for r in records:
        assert r.planned == plan.call(r.agent, r.call).kind.value
    assert [(r.agent, r.call, r.fault) for r in records if r.fault != "ok"] == [
        (1, 1, "rate_limit"),
        (2, 2, "bad_tool_call"),
        (3, 2, "server_error"),
        (3, 4, "replay_exhausted"),
    ]


def test_overlay_leaves_a_spoiled_reply_for_the_retry_and_never_crosses_kinds(
    recorded, client
) -> None:
    path, got = recorded
    scenario = Scenario(
        name="spoil",
        agents=5,
        latency=0.0,
        rules=(
            FaultRule(K.MALFORMED_JSON, agents=(1,), calls=(1,)),
            FaultRule(K.CONNECTION_ERROR, agents=(2,), calls=(1,)),
        ),
        real_time_scale=0.01,
    )
    with chaos_server(scenario, seed=1, replay=path) as server:
        cut = post(client, server, _body(1, 1))
        assert cut.status_code == 200 and cut.content != got[(1, 1)]
        # The client never read recorded call 1 intact, so its next attempt gets it.
        assert post(client, server, _body(1, 1)).content == got[(1, 1)]
        with pytest.raises(httpx.TransportError):
            post(client, server, _body(2, 1))
        assert post(client, server, _body(2, 1)).content == got[(2, 1)]
        # Agent 1's text replies are used up; a text request never gets its tool call.
        r = post(client, server, chat(1, "one more plan"))
        assert r.json()["error"]["code"] == "replay_exhausted"
        assert "no successful reply of this kind (text) of agent 1" in r.json()["error"]["message"]
        assert post(client, server, _body(1, 2)).content == got[(1, 2)]


def test_streaming_is_refused_when_proxying_and_nothing_is_forwarded(client) -> None:
    with chaos_server("clean") as up, chaos_server(upstream=up.api_base) as proxy:
        r = post(client, proxy, {**chat(1), "stream": True})
        assert r.status_code == 400
        assert "'stream': true is not supported" in r.json()["error"]["message"]
        assert up.records() == []


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"record": "x.jsonl"}, ValueError, "needs upstream"),
        ({"replay": "x.jsonl", "upstream": "http://127.0.0.1:1/v1"}, ValueError, "not both"),
        ({"replay_mode": "lenient"}, ValueError, "needs replay"),
        ({"replay_mode": "sloppy"}, ValueError, "replay_mode must be"),
        ({"upstream": "127.0.0.1:8000"}, ValueError, "http:// or https://"),
        ({"upstream": 8000}, TypeError, "upstream must be a URL"),
        ({"upstream": "http://"}, ValueError, "upstream must name a host"),
        ({"upstream": "https://[::1/v1"}, ValueError, "upstream must name a host"),
        ({"replay": 3}, TypeError, "replay must be a file path or a Cassette"),
        ({"replay": "/nonexistent/run.jsonl"}, CassetteError, "cannot read the cassette"),
    ],
)
def test_bad_options_fail_on_construction_naming_the_option(options, error, match) -> None:
    with pytest.raises(error, match=match):
        ChaosServer(**options)


def test_recording_a_faulty_scenario_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="record a clean run"):
        ChaosServer("flaky", upstream="http://127.0.0.1:1/v1", record=tmp_path / "r.jsonl")
    assert not (tmp_path / "r.jsonl").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--record", "r.jsonl"], "--record FILE needs --upstream URL"),
        (["--replay", "r.jsonl", "--upstream", "http://127.0.0.1:1/v1"], "give one of them"),
        (["--replay", "r.jsonl", "--record", "s.jsonl"], "exclude each other"),
        (["--replay-mode", "lenient"], "--replay-mode needs --replay FILE"),
        (
            ["--upstream", "http://127.0.0.1:1/v1", "--record", "r.jsonl", "--scenario", "flaky"],
            "--replay FILE --scenario flaky",
        ),
        (["--replay", "missing.jsonl"], "missing.jsonl: cannot read the cassette"),
        (["--upstream", "localhost:8000"], "http:// or https://"),
    ],
)
def test_serve_exits_2_on_flags_that_do_not_go_together(
    argv, message, capsys, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    parser = argparse.ArgumentParser()
    add_serve_parser(parser.add_subparsers(dest="command"))
    assert run_serve(parser.parse_args(["serve", *argv])) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r.jsonl").exists()


def test_exchange_is_the_cassettes_item(recorded) -> None:
    path, got = recorded
    cassette = Cassette.load(path)
    assert all(isinstance(e, Exchange) for e in cassette)
    assert {(e.agent, e.call): e.content for e in cassette} == got


# -- the pytest marker ---------------------------------------------------------------------

CASSETTE = Path(__file__).parent / "data" / "tiny_cassette.jsonl"


@pytest.mark.chaos_server(replay="data/tiny_cassette.jsonl")
def test_the_marker_replays_a_cassette_next_to_the_test(chaos_llm_server, client) -> None:
    r = post(client, chaos_llm_server, chat(1))
    assert r.status_code == 200
    assert r.content == Cassette.load(CASSETTE).get(1, 1).content


# -- the command line ---------------------------------------------------------------------


def test_serve_records_then_replays_from_a_shell(tmp_path) -> None:
    import signal

    from test_chaos_cli import post as cli_post
    from test_chaos_cli import serve

    cassette = tmp_path / "run.jsonl"
    body = chat(2)
    with chaos_server("clean") as upstream:
        record = ("--upstream", upstream.api_base, "--record", str(cassette))
        with serve(*record) as (proc, url):
            status, first = cli_post(url + "/v1/chat/completions", body)
            assert status == 200
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 0
            err = proc.stderr.read()
        assert f"forwarding to {upstream.api_base}; recording to {cassette}" in err
    assert len(Cassette.load(cassette)) == 1  # stopped cleanly: the end line is there
    with serve("--replay", str(cassette), "--replay-mode", "strict") as (proc, url):
        assert cli_post(url + "/v1/chat/completions", body) == (200, first)
        status, error = cli_post(url + "/v1/chat/completions", body)
        assert (status, error["error"]["code"]) == (400, "replay_exhausted")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "replaying" in proc.stderr.read()

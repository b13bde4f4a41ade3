"""The chaos LLM server over real HTTP on loopback: replies, faults, the log, bad requests.

Sync tests with an httpx client (the server runs in its own thread); the end-to-end
runs with real mesa-llm agents are in ``test_e2e_mesa_llm.py``.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap

import httpx
import pytest

from fault_injection import (
    SERVER_SCENARIOS,
    ChaosServer,
    FaultKind,
    FaultPlan,
    FaultRule,
    Scenario,
    chaos_server,
)
from fault_injection._plan import CallRandom
from fault_injection.chaos._replies import find_agent, validate_chat_request, value_for

K = FaultKind

MOVE = {
    "type": "function",
    "function": {
        "name": "move_one_step",
        "description": "Move one step.",
        "parameters": {
            "type": "object",
            "properties": {
                "direction": {
                    "type": "string",
                    "description": "Must be one of: 'North', 'South', 'East' or 'West'.",
                }
            },
            "required": ["direction"],
        },
    },
}


def chat(agent: int | None = None, *, tools: bool = False, **extra: object) -> dict:
    text = f"Current observation: {{'agent_unique_id': {agent}, 'location': (1, 2)}}"
    body: dict = {
        "model": "chaos",
        "messages": [
            {"role": "system", "content": "You are a walker."},
            {"role": "user", "content": text if agent is not None else "hello"},
        ],
    }
    if tools:
        body["tools"] = [MOVE]
        body["tool_choice"] = "auto"
    body.update(extra)
    return body


def one_fault(kind: FaultKind, **options: object) -> Scenario:
    """Agent 1's first call gets ``kind``; everything else is answered."""
    return Scenario(
        name=f"one-{kind.value}",
        agents=3,
        latency=0.0,
        rules=(FaultRule(kind, agents=(1,), calls=(1,)),),
        timeout=100,
        real_time_scale=0.01,
        **options,
    )


@pytest.fixture
def client() -> httpx.Client:
    with httpx.Client(timeout=10) as c:
        yield c


# -- a clean server ------------------------------------------------------------------


def test_models_and_a_plain_reply_that_names_the_agent(chaos_llm_server, client) -> None:
    base = chaos_llm_server.base_url
    assert base.startswith("http://127.0.0.1:")
    models = client.get(base + "/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == "chaos"

    r = client.post(base + "/v1/chat/completions", json=chat(7))
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "chaos"
    message = body["choices"][0]["message"]
    assert message["role"] == "assistant"
    assert "agent_unique_id: 7" in message["content"] and "Action:" in message["content"]
    assert body["usage"]["total_tokens"] > 0
    [record] = chaos_llm_server.records()
    assert (record.agent, record.call, record.fault, record.outcome) == (7, 1, "ok", "sent")


def test_tool_call_reply_follows_the_schema_and_the_plan(chaos_llm_server, client) -> None:
    url = chaos_llm_server.api_base + "/chat/completions"
    plan = client.post(url, json=chat(4, tools=True, tool_choice="none")).json()
    text = plan["choices"][0]["message"]["content"]
    assert "Action: call move_one_step" in text  # no tool call: tool_choice was "none"

    # mesa-llm sends the plan back (no observation in it) to get the tool call.
    follow_up = {
        "model": "chaos",
        "messages": [{"role": "system", "content": "executor"}, {"role": "user", "content": text}],
        "tools": [MOVE],
        "tool_choice": "auto",
    }
    reply = client.post(url, json=follow_up).json()
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "move_one_step"
    assert json.loads(call["function"]["arguments"])["direction"] in {
        "North",
        "South",
        "East",
        "West",
    }
    first, second = chaos_llm_server.records()
    assert (first.agent, first.call, first.tool) == (4, 1, None)
    assert (second.agent, second.call, second.tool) == (4, 2, "move_one_step")


def test_an_x_agent_id_header_names_the_agent(chaos_llm_server, client) -> None:
    url = chaos_llm_server.api_base + "/chat/completions"
    client.post(url, json=chat(None), headers={"X-Agent-Id": "12"})
    client.post(chaos_llm_server.base_url + "/chat/completions", json=chat(None))
    a, b = chaos_llm_server.records()
    assert (a.agent, a.call) == (12, 1)
    assert (b.agent, b.call) == (None, 1)  # unattributed: keyed as agent 0, by arrival


@pytest.mark.chaos_server("clean")
def test_response_format_json_schema_gets_a_matching_document(chaos_llm_server, client) -> None:
    schema = {
        "type": "object",
        "properties": {"reasoning": {"type": "string"}, "action": {"type": "string"}},
        "required": ["reasoning", "action"],
    }
    body = chat(3, response_format={"type": "json_schema", "json_schema": {"schema": schema}})
    r = client.post(chaos_llm_server.api_base + "/chat/completions", json=body)
    content = json.loads(r.json()["choices"][0]["message"]["content"])
    assert set(content) == {"reasoning", "action"}
    assert "agent_unique_id: 3" in content["reasoning"]


# -- faults ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        (K.RATE_LIMIT, 429, "rate_limit_exceeded"),
        (K.SERVICE_UNAVAILABLE, 503, "service_unavailable"),
        (K.SERVER_ERROR, 500, "internal_error"),
        (K.TIMEOUT, 408, "request_timeout"),
        (K.CONTENT_FILTER, 400, "content_filter"),
    ],
)
def test_error_faults_are_openai_error_responses(client, kind, status, code) -> None:
    with chaos_server(one_fault(kind)) as server:
        url = server.api_base + "/chat/completions"
        r = client.post(url, json=chat(1))
        assert r.status_code == status
        error = r.json()["error"]
        assert error["code"] == code and "agent 1, call 1" in error["message"]
        if kind in (K.RATE_LIMIT, K.SERVICE_UNAVAILABLE):
            assert int(r.headers["retry-after"]) >= 1
            assert int(r.headers["retry-after-ms"]) >= 1
        else:
            assert "retry-after" not in r.headers
        # The next call of the same agent, and other agents, are answered.
        assert client.post(url, json=chat(1)).status_code == 200
        assert client.post(url, json=chat(2)).status_code == 200
        first = server.records()[0]
        assert (first.planned, first.fault, first.status) == (kind.value, kind.value, status)
        assert [r.fault for r in server.log.faults()] == [kind.value]


def test_malformed_json_bodies_are_not_json(client) -> None:
    rules = tuple(FaultRule(K.MALFORMED_JSON, agents=(1,), calls=(n,)) for n in (1,))
    scenario = Scenario(name="malformed", agents=1, latency=0.0, faults={K.MALFORMED_JSON: 1.0})
    with chaos_server(scenario.replace(rules=rules)) as server:
        url = server.api_base + "/chat/completions"
        details = set()
        for _ in range(8):
            r = client.post(url, json=chat(1))
            assert r.status_code == 200 and r.headers["content-type"] == "application/json"
            with pytest.raises(json.JSONDecodeError):
                json.loads(r.content)
        details = {rec.detail for rec in server.records()}
    assert details == {"garbage", "cut"}


def test_bad_tool_call_arguments_are_not_json_and_plain_requests_are_spared(client) -> None:
    with chaos_server(one_fault(K.BAD_TOOL_CALL)) as server:
        url = server.api_base + "/chat/completions"
        reply = client.post(url, json=chat(1, tools=True)).json()
        arguments = reply["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
        with pytest.raises(json.JSONDecodeError):
            json.loads(arguments)
    scenario = one_fault(K.BAD_TOOL_CALL)
    with chaos_server(scenario) as server:
        r = client.post(server.api_base + "/chat/completions", json=chat(1))  # no tools
        assert r.status_code == 200 and "Action:" in r.json()["choices"][0]["message"]["content"]
        [record] = server.records()
        assert (record.planned, record.fault) == ("bad_tool_call", "ok")


def test_dropped_connections_reset_or_truncate(client) -> None:
    scenario = Scenario(name="drops", agents=1, latency=0.0, faults={K.CONNECTION_ERROR: 1.0})
    with chaos_server(scenario) as server:
        url = server.api_base + "/chat/completions"
        for _ in range(8):
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                client.post(url, json=chat(1))
        assert server.wait_idle()
        records = server.records()
        # The server is still up.
        assert client.get(server.base_url + "/v1/models").status_code == 200
    assert {r.detail for r in records} == {"reset", "truncated"}
    assert all(r.outcome == "dropped" for r in records)
    assert {r.status for r in records if r.detail == "reset"} == {None}


def test_a_hang_lasts_until_the_client_gives_up(client) -> None:
    with chaos_server(one_fault(K.HANG)) as server:
        url = server.api_base + "/chat/completions"
        with pytest.raises(httpx.ReadTimeout):
            client.post(url, json=chat(1), timeout=0.3)
        assert server.wait_idle(10)
        [record] = server.records()
        assert (record.fault, record.status, record.outcome) == (
            "hang",
            None,
            "client_disconnected",
        )
        assert client.post(url, json=chat(1)).status_code == 200


def test_latency_is_the_plans_scaled_to_real_seconds(client) -> None:
    scenario = Scenario(name="slow", agents=2, latency=5.0, real_time_scale=0.01)
    with chaos_server(scenario) as server:
        client.post(server.api_base + "/chat/completions", json=chat(2))
        [record] = server.records()
    assert record.latency == pytest.approx(FaultPlan(scenario).call(2, 1).latency * 0.01)


def test_stop_ends_a_request_that_is_still_hanging() -> None:
    scenario = Scenario(name="hang", agents=1, faults={K.HANG: 1.0}, timeout=1)
    server = ChaosServer(scenario, shutdown_timeout=0.2).start()
    with httpx.Client() as c:
        import threading

        errors: list[BaseException] = []

        def call() -> None:
            try:
                c.post(server.api_base + "/chat/completions", json=chat(1), timeout=30)
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=call)
        t.start()
        while not server.log.records():  # the request has been received and numbered
            server.log.wait_idle(0.01)
        server.stop()
        t.join(10)
    assert not t.is_alive() and errors  # the client saw the connection end


# -- determinism and the log -----------------------------------------------------------


def _fates(scenario: str, seed: int, order: list[int], client: httpx.Client) -> dict:
    with chaos_server(scenario, seed, time_scale=0.0) as server:
        url = server.api_base + "/chat/completions"
        for agent in order:
            with contextlib.suppress(httpx.HTTPError):
                client.post(url, json=chat(agent, tools=True), timeout=0.5)
        server.wait_idle()
        return {(r.agent, r.call): (r.fault, r.detail) for r in server.records()}


def test_same_seed_same_fault_per_agent_call_whatever_the_arrival_order(client) -> None:
    order = [a for _ in range(6) for a in range(1, 9)]
    shuffled = list(reversed(order))
    a = _fates("flaky", 5, order, client)
    b = _fates("flaky", 5, shuffled, client)
    assert a == b
    assert any(fault != "ok" for fault, _ in a.values())
    assert _fates("flaky", 6, order, client) != a
    plan = FaultPlan(SERVER_SCENARIOS["flaky"], 5)
    assert all(a[(u, n)][0] in (plan.call(u, n).kind.value, "ok") for (u, n) in a)


def test_rate_limit_storm_is_mostly_429_with_retry_after(client) -> None:
    with chaos_server("rate-limit-storm", 1) as server:
        url = server.api_base + "/chat/completions"
        statuses = [client.post(url, json=chat(a % 10 + 1)).status_code for a in range(60)]
    assert set(statuses) == {200, 429}
    assert statuses.count(429) > statuses.count(200)


def test_the_log_endpoints_and_the_json_lines_file(client, tmp_path) -> None:
    path = tmp_path / "faults.jsonl"
    with chaos_server(one_fault(K.SERVER_ERROR), log_path=str(path)) as server:
        url = server.api_base + "/chat/completions"
        client.post(url, json=chat(1))
        client.post(url, json=chat(2))
        log = client.get(server.base_url + "/_chaos/log?wait_idle=5").json()
        faults = client.get(server.base_url + "/_chaos/faults").json()
        health = client.get(server.base_url + "/_chaos/health").json()
    assert log["scenario"] == "one-server_error" and log["seed"] == 0
    assert [(r["agent"], r["fault"]) for r in log["requests"]] == [(1, "server_error"), (2, "ok")]
    assert [(r["agent"], r["status"]) for r in faults["faults"]] == [(1, 500)]
    assert health["status"] == "ok" and health["requests"] == 2 and health["idle"] is True
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == log["requests"]


# -- bad requests ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "status", "needle"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"\xff\xfe", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), 400, "'model'"),
        (json.dumps({"model": "chaos"}).encode(), 400, "'messages'"),
        (json.dumps({"model": "chaos", "messages": []}).encode(), 400, "'messages'"),
        (json.dumps({"model": "chaos", "messages": ["hi"]}).encode(), 400, "messages[0]"),
        (json.dumps({**chat(1), "stream": True}).encode(), 400, "stream"),
        (json.dumps({**chat(1), "tools": [{"type": "function"}]}).encode(), 400, "tools[0]"),
        (b'{"model": "chaos", "messages": [' + b" " * 5000 + b"]}", 413, "exceeds"),
    ],
)
def test_bad_requests_get_4xx_json_and_the_server_keeps_serving(
    client, content, status, needle
) -> None:
    with chaos_server(max_body=4096) as server:
        url = server.api_base + "/chat/completions"
        r = client.post(url, content=content, headers={"content-type": "application/json"})
        assert r.status_code == status
        assert needle in r.json()["error"]["message"]
        assert r.json()["error"]["type"] == "invalid_request_error"
        assert client.post(url, json=chat(1)).status_code == 200
        assert len(server.records()) == 1  # bad requests are not chat calls


def test_oversized_body_without_content_length_is_refused(client) -> None:
    def chunks():
        yield b'{"model": "chaos", "messages": ['
        for _ in range(10):
            yield b" " * 1000
        yield b"]}"

    with chaos_server(max_body=4096) as server:
        url = server.api_base + "/chat/completions"
        r = client.post(url, content=chunks())  # chunked: no Content-Length
        assert r.status_code == 413
        assert client.post(url, json=chat(1)).status_code == 200


def test_unknown_paths_and_methods_get_json_errors(chaos_llm_server, client) -> None:
    base = chaos_llm_server.base_url
    r = client.get(base + "/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()
    r = client.get(base + "/v1/chat/completions")
    assert r.status_code == 405 and "error" in r.json()
    assert client.post(base + "/v1/chat/completions", json=chat(1)).status_code == 200


def test_binds_loopback_and_scenarios_are_checked() -> None:
    server = ChaosServer()
    assert server.host == "127.0.0.1"
    with pytest.raises(KeyError, match="clean, flaky, rate-limit-storm"):
        ChaosServer("nope")
    interrupting = Scenario(name="int", faults={K.INTERRUPT: 0.1})
    with pytest.raises(ValueError, match="interrupt"):
        ChaosServer(interrupting)


# -- the reply builders ----------------------------------------------------------------


def test_find_agent_reads_mesa_llm_observations_and_our_replies() -> None:
    assert find_agent(chat(9)) == 9
    assert (
        find_agent({"messages": [{"role": "user", "content": "Thought: agent_unique_id: 4"}]}) == 4
    )
    parts = [{"type": "text", "text": "{'agent_unique_id': 11}"}]
    assert find_agent({"messages": [{"role": "user", "content": parts}]}) == 11
    assert find_agent(chat(None)) is None
    assert find_agent(chat(None), header="5") == 5


def test_value_for_satisfies_simple_schemas() -> None:
    rng = CallRandom(1, 2, 3)
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer"},
            "x": {"type": "number"},
            "ok": {"type": "boolean"},
            "ids": {"type": "array", "items": {"type": "integer"}, "minItems": 2},
            "mood": {"enum": ["calm", "angry"]},
            "either": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
        },
        "required": ["n", "x", "ok", "ids", "mood", "either"],
    }
    value = value_for(schema, rng, "args", 3)
    assert isinstance(value["n"], int) and isinstance(value["x"], float)
    assert isinstance(value["ok"], bool) and len(value["ids"]) == 2
    assert value["mood"] in ("calm", "angry") and isinstance(value["either"], int)


#: Tool parameter schemas as models write them: enums, ranges, required properties,
#: nested objects, $ref to $defs (pydantic), allOf, formats, tuples, unique items.
TOOL_SCHEMAS = [
    {
        "type": "object",
        "properties": {
            "brand": {"type": "string", "enum": ["A", "B"]},
            "price": {"type": "number", "minimum": 35, "maximum": 50},
            "quantity": {"type": "integer", "minimum": 1, "maximum": 10},
            "note": {"type": "string", "maxLength": 12},
        },
        "required": ["brand", "price", "quantity"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "percent": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 100},
            "step": {"type": "number", "multipleOf": 0.25, "minimum": 1, "maximum": 2},
            "even": {"type": "integer", "multipleOf": 2, "minimum": 11, "maximum": 15},
            "x": {"type": "number", "exclusiveMinimum": 0.5, "exclusiveMaximum": 0.51},
            "mode": {"const": "fast"},
            "code": {"type": "string", "minLength": 30},
            "when": {"type": "string", "format": "date-time"},
            "mail": {"type": "string", "format": "email"},
            "id": {"type": "string", "format": "uuid"},
            "maybe": {"type": ["null", "integer"], "minimum": 7},
        },
    },
    {
        "$defs": {
            "Offer": {
                "type": "object",
                "properties": {
                    "item": {"$ref": "#/$defs/Item"},
                    "price": {"type": "integer", "minimum": 100, "maximum": 120},
                },
                "required": ["item", "price"],
            },
            "Item": {"type": "string", "enum": ["shoes", "track suit"]},
        },
        "type": "object",
        "properties": {
            "offers": {
                "type": "array",
                "items": {"$ref": "#/$defs/Offer"},
                "minItems": 3,
                "maxItems": 3,
            },
            "to": {
                "type": "array",
                "items": {"type": "integer", "minimum": 1, "maximum": 4},
                "minItems": 4,
                "uniqueItems": True,
            },
            "at": {
                "type": "array",
                "prefixItems": [{"type": "integer", "maximum": -5}, {"type": "boolean"}],
                "items": False,
            },
        },
        "required": ["offers", "to", "at"],
    },
    {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "integer", "minimum": 5}}},
            {"properties": {"b": {"enum": [True]}}, "required": ["a", "b"]},
        ]
    },
]


@pytest.mark.parametrize("schema", TOOL_SCHEMAS)
def test_tool_arguments_follow_the_schema_and_validate(schema) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    for key in range(40):
        value = value_for(schema, CallRandom(7, key, 1, 1), "args", key)
        errors = [e.message for e in validator.iter_errors(value)]
        assert errors == [], (value, errors)
        # seeded: the same request (agent, call) gets the same arguments
        assert value_for(schema, CallRandom(7, key, 1, 1), "args", key) == value


def test_a_mesa_llm_tools_options_come_from_its_docstring(chaos_llm_server, client) -> None:
    # mesa-llm's @tool writes no enum: it lists the options in the description, quoted
    # with ' or " (the negotiation example: `either "A" or "B"`). A clean reply picks
    # one, so the model's own check of the argument passes and its logic runs.
    # The schema as mesa-llm 0.3.2 writes it, made in a subprocess: importing mesa_llm
    # patches Mesa's AgentSet, which this test session must not see.
    source = textwrap.dedent(
        '''
        import json
        from mesa_llm.tools.tool_decorator import tool
        from mesa_llm.tools.tool_manager import ToolManager

        def set_chosen_brand(agent, chosen_brand: str) -> str:
            """Set the buyer's brand of choice.

            Args:
                agent: The agent (provided automatically).
                chosen_brand: The brand of choice of the buyer agent, either "A" or "B".

            Returns:
                The brand chosen.
            """
            return chosen_brand

        print(json.dumps(tool(set_chosen_brand, tool_manager=ToolManager()).__tool_schema__))
        '''
    )
    out = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, timeout=120, check=True
    )
    schema = json.loads(out.stdout.splitlines()[-1])
    assert "enum" not in json.dumps(schema)  # only the description names the options
    url = chaos_llm_server.api_base + "/chat/completions"
    chosen = set()
    for agent in range(1, 9):
        body = {**chat(agent), "tools": [schema], "tool_choice": "required"}
        reply = client.post(url, json=body).json()
        [call] = reply["choices"][0]["message"]["tool_calls"]
        chosen.add(json.loads(call["function"]["arguments"])["chosen_brand"])
    assert chosen == {"A", "B"}


def test_validate_chat_request_accepts_what_litellm_sends() -> None:
    assert (
        validate_chat_request(chat(1, tools=True, response_format=None, tool_choice=None)) is None
    )
    assert validate_chat_request(chat(1, n=2)) is not None


def test_connections_are_tcp_nodelay(client) -> None:
    # Responses go out in two writes (head, body); with Nagle's algorithm on, the body
    # waited for the client's delayed ACK: ~40 ms per request.
    import socket

    with chaos_server() as server, httpx.Client() as c:
        c.get(server.base_url + "/v1/models")  # keeps the connection open
        [transport] = server.app.transports.values()
        sock = transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0

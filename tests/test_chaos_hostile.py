"""No request can take the chaos server down (issue 15, class 3).

Hypothesis sends one long-lived server, over real HTTP on loopback, request bodies with
arbitrary JSON in every field the server reads (content parts, tools and their schemas,
``tool_choice``, ``response_format``, agent ids), and checks every answer: a 2xx reply
or an OpenAI-shaped 4xx JSON error, never a 500, never a body beyond a bound; and after
the battery the server still answers a normal request.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fault_injection import ChaosServer, chaos_server
from fault_injection.chaos._cli import add_serve_parser, run_serve
from fault_injection.chaos._replies import MAX_REPLY_VALUES, check_schema
from fault_injection.chaos._server import is_loopback

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
SCHEMA_KEYS = st.sampled_from(
    ["type", "properties", "items", "anyOf", "oneOf", "enum", "required", "minItems",
     "maxItems", "description"]
)  # fmt: skip
SCHEMA = st.recursive(
    JSON,
    lambda inner: st.dictionaries(SCHEMA_KEYS, inner | st.sampled_from(
        ["object", "array", "string", "integer", ["null", "array"], 10**9, -1]
    ), max_size=5),
    max_leaves=30,
)  # fmt: skip


def base(agent: int = 1) -> dict[str, Any]:
    return {
        "model": "chaos",
        "messages": [
            {"role": "system", "content": "You are a walker."},
            {"role": "user", "content": f"{{'agent_unique_id': {agent}}} where to?"},
        ],
    }


def tool(parameters: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": "move", "parameters": parameters}}


@st.composite
def hostile_bodies(draw: st.DrawFn) -> Any:
    body = base(draw(st.integers(1, 50)))
    where = draw(
        st.sampled_from(
            [
                "model",
                "messages",
                "content",
                "role",
                "tools",
                "parameters",
                "tool_choice",
                "response_format",
                "json_schema",
                "stream",
                "n",
                "agent_id",
                "whole",
            ]
        )
    )
    value = draw(SCHEMA if where in ("parameters", "json_schema") else JSON)
    if where == "whole":
        return value
    if where == "content":
        body["messages"][1]["content"] = value
    elif where == "role":
        body["messages"][0]["role"] = value
    elif where == "parameters":
        body["tools"] = [tool(value)]
        body["tool_choice"] = draw(st.sampled_from(["auto", "required", None]))
    elif where == "json_schema":
        body["response_format"] = {"type": "json_schema", "json_schema": {"schema": value}}
    elif where == "agent_id":
        digits = draw(st.integers(1, 5000))
        body["messages"][1]["content"] = "agent_unique_id: " + "9" * digits
    else:
        body[where] = value
    return body


@pytest.fixture(scope="module")
def server():
    with chaos_server() as s:
        yield s


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=30) as c:
        yield c


def _check_answer(r: httpx.Response) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:300])
    assert len(r.content) < 1 << 20
    data = r.json()
    assert r.headers["content-type"].startswith("application/json")
    if r.status_code >= 400:
        error = data["error"]
        assert isinstance(error["message"], str) and error["type"] == "invalid_request_error"
        assert set(error) == {"message", "type", "param", "code"}
    else:
        assert data["object"] == "chat.completion"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=hostile_bodies(), header=st.none() | st.text(max_size=30) | st.just("9" * 40))
def test_every_hostile_request_gets_a_reply_or_a_4xx_json_error(
    server: ChaosServer, client: httpx.Client, body: Any, header: str | None
) -> None:
    headers = {"content-type": "application/json"}
    # What an HTTP client can send at all: h11 refuses a value with leading or trailing
    # whitespace (HTTP strips it), so such a value never reaches the server.
    sendable = header is not None and header.isascii() and header.isprintable()
    if sendable and header == header.strip(" \t"):
        headers["x-agent-id"] = header
    r = client.post(
        server.api_base + "/chat/completions", content=json.dumps(body), headers=headers
    )
    _check_answer(r)


def test_the_server_still_serves_after_the_battery(server: ChaosServer, client) -> None:
    r = client.post(server.api_base + "/chat/completions", json=base(7))
    assert r.status_code == 200 and "agent_unique_id: 7" in r.text


def nested_arrays(depth: int, width: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer"}
    for _ in range(depth):
        schema = {"type": "array", "minItems": width, "items": schema}
    return schema


@pytest.mark.parametrize(
    ("schema", "needle"),
    [
        # 50**6 values: this built a reply of 15 billion integers, hung the server and
        # grew it without bound.
        (nested_arrays(6, 50), f"more than {MAX_REPLY_VALUES} values"),
        (nested_arrays(200, 1), "nested more than 32 deep"),
        ({"type": "object", "properties": {str(i): {} for i in range(20_000)}}, "schemas"),
        ({"type": "array", "minItems": "many"}, "minItems"),
        ({"enum": 3}, "enum"),
        ({"type": "object", "required": [1]}, "required"),
    ],
)
def test_schemas_beyond_the_bounds_are_400_naming_the_limit(
    server: ChaosServer, client, schema: Any, needle: str
) -> None:
    body = {**base(3), "tools": [tool(schema)], "tool_choice": "required"}
    r = client.post(server.api_base + "/chat/completions", json=body)
    assert r.status_code == 400, r.text[:300]
    assert needle in r.json()["error"]["message"]
    assert "tools[0].function.parameters" in r.json()["error"]["message"]


def test_a_wide_but_bounded_array_is_answered_with_at_most_100_items(server, client) -> None:
    body = {**base(3), "tools": [tool(nested_arrays(1, 10**9))], "tool_choice": "required"}
    r = client.post(server.api_base + "/chat/completions", json=body)
    assert r.status_code == 200
    args = json.loads(r.json()["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])
    assert len(args) == 100


@pytest.mark.parametrize(
    "content",
    [b"[" * 200_000 + b"]" * 200_000, b'{"model": "chaos", "messages": ' + b"[" * 100_000 + b"}"],
)
def test_deeply_nested_json_is_a_400(server, client, content: bytes) -> None:
    r = client.post(
        server.api_base + "/chat/completions",
        content=content,
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_check_schema_accepts_what_mesa_llm_sends() -> None:
    schema = {
        "type": "object",
        "properties": {
            "direction": {"type": "string", "enum": ["North", "South"]},
            "position": {"type": "array", "items": {"type": "integer"}, "minItems": 2},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
        "required": ["direction"],
    }
    assert check_schema(schema, "p") is None


# -- loopback only ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("[::1]", True),
     ("localhost", True), ("LOCALHOST", True), ("0.0.0.0", False), ("::", False),
     ("192.168.1.4", False), ("example.com", False), ("", False)],
)  # fmt: skip
def test_only_loopback_hosts_are_bound_unless_allowed(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    if loopback:
        ChaosServer(host=host)
        return
    with pytest.raises(ValueError, match="allow_non_loopback"):
        ChaosServer(host=host)
    assert ChaosServer(host=host, allow_non_loopback=True).host == host


def test_serve_refuses_a_non_loopback_host_with_status_2(capsys) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_serve_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--host", "0.0.0.0"])
    assert run_serve(args) == 2
    err = capsys.readouterr().err
    assert "0.0.0.0" in err and "--allow-non-loopback" in err

"""What the chaos server says: OpenAI Chat Completions bodies, built from the request.

Pure functions, no I/O. `validate_chat_request` checks a request body the way the
OpenAI API does (a 4xx error message, or ``None``); `find_agent` reads which agent sent
it; `chat_reply` answers it: a Chain-of-Thought plan in text when no tool may be called
(what mesa-llm's reasoning modules parse), a ``tool_calls`` message when the request
offers tools and lets the model use them, and a JSON document matching the schema when
the request asks for ``response_format`` (mesa-llm's ReAct). Every reply names the
agent (``agent_unique_id: N``), so that a follow-up request quoting it (mesa-llm sends
the plan back to turn it into tool calls) is attributed to the same agent.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .._plan import CallRandom

#: mesa-llm puts ``'agent_unique_id': N`` in every observation it sends; our replies
#: write ``agent_unique_id: N``.
_AGENT_ID = re.compile(r"""agent_unique_id['"]?\s*[:=]\s*(-?\d+)""")
_QUOTED_WORD = re.compile(r"'([A-Za-z][A-Za-z0-9_-]*)'")


def validate_chat_request(body: Any) -> str | None:
    """``None`` if ``body`` is a chat-completion request we can answer, else why not."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return "'model' is a required property and must be a non-empty string."
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' is a required property and must be a non-empty array."
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            return f"messages[{i}] must be an object with a string 'role'."
    if body.get("stream"):
        return "'stream': true is not supported by the chaos server."
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            return "'tools' must be an array."
        for i, t in enumerate(tools):
            fn = t.get("function") if isinstance(t, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                return f"tools[{i}] must be an object with 'function': {{'name': ...}}."
    n = body.get("n", 1)
    if n is not None and n != 1:
        return "Only 'n': 1 is supported by the chaos server."
    return None


def _texts(messages: list[dict[str, Any]]) -> list[str]:
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out.extend(p["text"] for p in content if isinstance(p, dict) and "text" in p)
    return out


def find_agent(body: dict[str, Any], header: str | None = None) -> int | None:
    """The ``unique_id`` of the agent a request comes from, or ``None``.

    An ``X-Agent-Id`` header (``header``) wins; otherwise the first ``agent_unique_id``
    in the messages (mesa-llm's observation, or our own earlier reply).
    """
    if header is not None:
        try:
            return int(header)
        except ValueError:
            return None
    for text in _texts(body["messages"]):
        match = _AGENT_ID.search(text)
        if match:
            return int(match.group(1))
    return None


def _tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [t["function"] for t in body.get("tools") or []]


def wants_tool_call(body: dict[str, Any]) -> bool:
    """Whether the request offers tools and lets the model call them."""
    choice = body.get("tool_choice")
    return bool(_tools(body)) and choice != "none"


def _pick_tool(body: dict[str, Any], rng: CallRandom) -> dict[str, Any]:
    tools = _tools(body)
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        for t in tools:
            if t["name"] == wanted:
                return t
    # A plan we wrote names its tool ("Action: call NAME"): call that one.
    texts = _texts(body["messages"])
    for text in reversed(texts):
        for t in tools:
            if f"call {t['name']}" in text:
                return t
    return rng.choice(tools)


def value_for(schema: Any, rng: CallRandom, name: str, agent: int | None) -> Any:
    """A value that satisfies a (simple) JSON schema, drawn from ``rng``."""
    if not isinstance(schema, dict):
        return None
    if schema.get("enum"):
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return value_for(schema[key][0], rng, name, agent)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        required = schema.get("required") or list(props)
        return {k: value_for(props.get(k, {}), rng, k, agent) for k in required}
    if kind == "array":
        # Two items unless the schema says otherwise: an [x, y] position is the common case.
        count = int(schema.get("minItems", min(2, schema.get("maxItems", 2))))
        return [value_for(schema.get("items", {}), rng, name, agent) for _ in range(count)]
    if kind == "integer":
        return int(rng.random() * 3)
    if kind == "number":
        return round(rng.random() * 3, 2)
    if kind == "boolean":
        return rng.random() < 0.5
    # A string: mesa-llm's tools list their options in quotes in the description.
    options = _QUOTED_WORD.findall(str(schema.get("description", "")))
    if options:
        return rng.choice(options)
    who = f"agent_unique_id: {agent}" if agent is not None else "an agent"
    return f"{name} of {who}"


def _plan_text(body: dict[str, Any], agent: int | None, rng: CallRandom) -> str:
    who = f"agent_unique_id: {agent}" if agent is not None else "an unnamed agent"
    tools = _tools(body)
    action = f"call {rng.choice(tools)['name']}" if tools else "wait and observe"
    return (
        f"Thought 1: I am {who} and I have read my observation.\n"
        "Thought 2: My memory holds nothing that changes my course.\n"
        "Thought 3: Waiting is the alternative; acting now carries little risk.\n"
        "Thought 4: I act now.\n"
        f"Action: {action}"
    )


def chat_reply(
    body: dict[str, Any],
    agent: int | None,
    rng: CallRandom,
    request: int,
    *,
    bad_args: bool = False,
) -> tuple[dict[str, Any], str | None]:
    """The completion object answering ``body``, and the tool it calls (if any).

    ``bad_args`` makes the tool call's ``arguments`` invalid JSON (the
    ``bad_tool_call`` fault); it applies only when `wants_tool_call`.
    """
    message: dict[str, Any] = {"role": "assistant"}
    tool_name: str | None = None
    finish = "stop"
    response_format = body.get("response_format")
    if wants_tool_call(body):
        tool = _pick_tool(body, rng)
        tool_name = tool["name"]
        args = json.dumps(value_for(tool.get("parameters") or {}, rng, tool_name, agent))
        if bad_args:
            args = args[: max(1, len(args) // 2)]  # cut off: not valid JSON
        message["content"] = None
        message["tool_calls"] = [
            {
                "id": f"call_chaos_{request}",
                "type": "function",
                "function": {"name": tool_name, "arguments": args},
            }
        ]
        finish = "tool_calls"
    elif isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        message["content"] = json.dumps(value_for(schema, rng, "reply", agent))
    elif isinstance(response_format, dict) and response_format.get("type") == "json_object":
        message["content"] = json.dumps({"reasoning": _plan_text(body, agent, rng), "action": ""})
    else:
        message["content"] = _plan_text(body, agent, rng)
    prompt_tokens = sum(len(t.split()) for t in _texts(body["messages"]))
    completion_tokens = len(json.dumps(message).split())
    return (
        {
            "id": f"chatcmpl-chaos-{request}",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "system_fingerprint": "fault_injection",
            "choices": [
                {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        },
        tool_name,
    )


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict:
    """An OpenAI-shaped error object."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}

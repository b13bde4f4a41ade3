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


#: Bounds on what one request can make the server build: a schema's nesting and size,
#: the values a reply built from it may hold, an array's length.
MAX_SCHEMA_DEPTH = 32
MAX_SCHEMA_NODES = 10_000
MAX_REPLY_VALUES = 10_000
MAX_ITEMS = 100


def validate_chat_request(body: Any) -> str | None:
    """``None`` if ``body`` is a chat-completion request we can answer, else why not
    (the message of an OpenAI-shaped 400).

    Every field the server reads is checked here, once, for its type and its bounds:
    handler code after this never meets a wrongly typed value, and no schema can make
    the server build more than `MAX_REPLY_VALUES` values.
    """
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
        problem = _check_content(m.get("content"), f"messages[{i}].content")
        if problem is not None:
            return problem
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        return "'stream' must be a boolean."
    if stream:
        return "'stream': true is not supported by the chaos server."
    n = body.get("n", 1)
    if n is not None and (isinstance(n, bool) or n != 1):
        return "Only 'n': 1 is supported by the chaos server."
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            return "'tools' must be an array."
        for i, t in enumerate(tools):
            fn = t.get("function") if isinstance(t, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                return f"tools[{i}] must be an object with 'function': {{'name': ...}}."
            parameters = fn.get("parameters")
            if parameters is not None:
                problem = check_schema(parameters, f"tools[{i}].function.parameters")
                if problem is not None:
                    return problem
    choice = body.get("tool_choice")
    if choice is not None and not isinstance(choice, str):
        fn = choice.get("function") if isinstance(choice, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            return (
                "'tool_choice' must be a string or {'type': 'function', 'function': {'name': ...}}."
            )
    return _check_response_format(body.get("response_format"))


def _check_content(content: Any, where: str) -> str | None:
    if content is None or isinstance(content, str):
        return None
    if not isinstance(content, list):
        return f"'{where}' must be a string, an array of content parts, or null."
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            return f"'{where}[{j}]' must be an object with a string 'type'."
        if "text" in part and not isinstance(part["text"], str):
            return f"'{where}[{j}].text' must be a string."
    return None


def _check_response_format(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        return "'response_format' must be an object with a string 'type'."
    if value["type"] != "json_schema":
        return None
    spec = value.get("json_schema")
    if spec is None:
        return None
    if not isinstance(spec, dict):
        return "'response_format.json_schema' must be an object."
    schema = spec.get("schema")
    return None if schema is None else check_schema(schema, "response_format.json_schema.schema")


_LISTS = ("enum", "anyOf", "oneOf", "required")


def check_schema(schema: Any, where: str) -> str | None:
    """Why the JSON schema ``schema`` cannot be answered, or ``None``.

    Checks the keywords `value_for` reads (``type``, ``enum``, ``anyOf``/``oneOf``,
    ``properties``, ``required``, ``items``, ``minItems``/``maxItems``) for their types,
    and bounds the schema (at most `MAX_SCHEMA_DEPTH` deep, `MAX_SCHEMA_NODES` nodes)
    and what a reply to it holds (at most `MAX_REPLY_VALUES` values, arrays of at most
    `MAX_ITEMS`): a small schema of nested arrays would otherwise expand exponentially.
    Iterative, so no nesting can exhaust the stack.
    """
    nodes = 0
    stack: list[tuple[Any, str, int]] = [(schema, where, 0)]
    while stack:
        node, path, depth = stack.pop()
        nodes += 1
        if nodes > MAX_SCHEMA_NODES:
            return f"'{where}' has more than {MAX_SCHEMA_NODES} schemas."
        if depth > MAX_SCHEMA_DEPTH:
            return f"'{path}' is nested more than {MAX_SCHEMA_DEPTH} deep."
        if not isinstance(node, dict):
            return f"'{path}' must be a JSON schema object."
        kind = node.get("type")
        if (
            kind is not None
            and not isinstance(kind, str)
            and not (isinstance(kind, list) and all(isinstance(k, str) for k in kind))
        ):
            return f"'{path}.type' must be a string or an array of strings."
        for key in _LISTS:
            if key in node and not isinstance(node[key], list):
                return f"'{path}.{key}' must be an array."
        if not all(isinstance(r, str) for r in node.get("required") or ()):
            return f"'{path}.required' must be an array of strings."
        for key in ("minItems", "maxItems"):
            if key in node:
                v = node[key]
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    return f"'{path}.{key}' must be a non-negative integer."
        props = node.get("properties")
        if props is not None and not isinstance(props, dict):
            return f"'{path}.properties' must be an object."
        for key, sub in (props or {}).items():
            stack.append((sub, f"{path}.properties.{key}", depth + 1))
        for key in ("anyOf", "oneOf"):
            for i, sub in enumerate(node.get(key) or ()):
                stack.append((sub, f"{path}.{key}[{i}]", depth + 1))
        if "items" in node:
            stack.append((node["items"], f"{path}.items", depth + 1))
    if _reply_size(schema) > MAX_REPLY_VALUES:
        return (
            f"'{where}' would make a reply of more than {MAX_REPLY_VALUES} values "
            "(arrays within arrays multiply); the chaos server refuses it."
        )
    return None


def _item_count(schema: dict[str, Any]) -> int:
    return min(int(schema.get("minItems", min(2, schema.get("maxItems", 2)))), MAX_ITEMS)


def _reply_size(schema: Any) -> int:
    """How many values `value_for` builds for a checked ``schema`` (capped, so the
    count itself stays cheap)."""
    if not isinstance(schema, dict) or schema.get("enum"):
        return 1
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return _reply_size(schema[key][0])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        total = 1
        for k in schema.get("required") or list(props):
            total += _reply_size(props.get(k, {}))
            if total > MAX_REPLY_VALUES:
                break
        return total
    if kind == "array":
        count = _item_count(schema)
        return 1 + (count * _reply_size(schema.get("items", {})) if count else 0)
    return 1


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
    in the messages (mesa-llm's observation, or our own earlier reply). An id of more
    than 18 digits, or a header that is not an integer, names no agent.
    """
    if header is not None:
        header = header.strip()
        digits = header.removeprefix("-")
        if not (digits.isascii() and digits.isdigit()) or len(digits) > 18:
            return None  # not an agent id we could key a plan by: unnamed, as no header
        return int(header)
    for text in _texts(body["messages"]):
        match = _AGENT_ID.search(text)
        if match and len(match.group(1).removeprefix("-")) <= 18:
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
        count = _item_count(schema)
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

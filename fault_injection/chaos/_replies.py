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
import math
import re
from typing import Any

from .._plan import CallRandom

#: mesa-llm puts ``'agent_unique_id': N`` in every observation it sends; our replies
#: write ``agent_unique_id: N``.
_AGENT_ID = re.compile(r"""agent_unique_id['"]?\s*[:=]\s*(-?\d+)""")


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
    """A value that satisfies the JSON schema ``schema``, drawn from ``rng`` (so the
    same request, whose ``rng`` is keyed by agent and call, gets the same value).

    What it honours: ``const``, ``enum``, local ``$ref`` (``#/$defs/...``,
    ``#/definitions/...``), ``allOf`` (merged), ``anyOf``/``oneOf`` (the first branch
    that is not ``null``), ``type`` (a list: its first type other than ``null``);
    objects' ``required`` properties (all of ``properties`` when nothing is required;
    ``additionalProperties`` for a required name it does not list); arrays'
    ``minItems``/``maxItems``, ``uniqueItems``, ``prefixItems`` (or a list of
    ``items``); numbers' ``minimum``/``maximum``, ``exclusiveMinimum``/
    ``exclusiveMaximum`` and ``multipleOf``; strings' ``minLength``/``maxLength``,
    common ``format`` values, and ``examples``/``default``. A string with none of these
    is one of the options the description quotes (``'North'``, ``"A"``: how mesa-llm
    tools list them), else text naming the agent. A ``pattern`` is not generated
    (``examples`` that match it are the way to satisfy one). At most
    `MAX_REPLY_VALUES` values are built, however ``$ref`` nests.
    """
    return _Values(schema, rng, agent).value(schema, name, 0)


# Options a description lists in quotes: 'North', "A", `buy`. No spaces inside, so
# apostrophes in prose ("the agent's own 'choice'") are not taken for quotes.
_QUOTED_OPTION = re.compile(r"""(['"`])([A-Za-z0-9][A-Za-z0-9_.-]*)\1""")

_FORMATS = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "12:00:00Z",
    "email": "agent@example.com",
    "idn-email": "agent@example.com",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "uri": "https://example.com/",
    "iri": "https://example.com/",
    "uri-reference": "https://example.com/",
    "duration": "PT1S",
}


def _number_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


class _Values:
    """One reply's value, built from one root schema: `$ref` resolves against it, and
    a budget bounds how many values it can make."""

    def __init__(self, root: Any, rng: CallRandom, agent: int | None) -> None:
        self.root = root
        self.rng = rng
        self.agent = agent
        self.budget = MAX_REPLY_VALUES

    def resolve(self, schema: Any, depth: int) -> Any:
        """``schema`` with local ``$ref`` followed and ``allOf`` merged in."""
        while isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
            if depth > MAX_SCHEMA_DEPTH:
                return {}
            depth += 1
            target = self._pointer(schema["$ref"])
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **rest} if isinstance(target, dict) and rest else target
        if isinstance(schema, dict) and isinstance(schema.get("allOf"), list):
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                part = self.resolve(part, depth + 1)
                if not isinstance(part, dict):
                    continue
                for key, value in part.items():
                    if key == "properties" and isinstance(value, dict):
                        merged["properties"] = {**(merged.get("properties") or {}), **value}
                    elif key == "required" and isinstance(value, list):
                        merged["required"] = [*(merged.get("required") or []), *value]
                    else:
                        merged.setdefault(key, value)
            schema = merged
        return schema

    def _pointer(self, ref: str) -> Any:
        if not ref.startswith("#"):
            return {}  # a remote reference: nothing to follow
        node = self.root
        for part in ref[1:].split("/")[1:]:
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                return {}
            node = node[part]
        return node

    def value(self, schema: Any, name: str, depth: int) -> Any:
        self.budget -= 1
        schema = self.resolve(schema, depth)
        if not isinstance(schema, dict) or depth > MAX_SCHEMA_DEPTH:
            return None
        rng = self.rng
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return rng.choice(schema["enum"])
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                resolved = [self.resolve(b, depth + 1) for b in branches]
                chosen = next((b for b in resolved if not _is_null(b)), resolved[0])
                return self.value(chosen, name, depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind == "null":
            return None
        if kind == "object" or "properties" in schema:
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, name, depth)
        if kind in ("integer", "number"):
            return _number(schema, rng, integer=kind == "integer")
        if kind == "boolean":
            return rng.random() < 0.5
        return self._string(schema, name)

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        extra = schema.get("additionalProperties")
        required = schema.get("required")
        keys = required if isinstance(required, list) and required else list(props)
        out: dict[str, Any] = {}
        for key in keys:
            if isinstance(key, str) and key not in out:
                sub = props.get(key, extra if isinstance(extra, dict) else {})
                out[key] = self.value(sub, key, depth + 1)
        return out

    def _array(self, schema: dict[str, Any], name: str, depth: int) -> list[Any]:
        count = _item_count(schema)
        prefix = schema.get("prefixItems")
        items = schema.get("items", {})
        if isinstance(items, list):  # draft 4's tuple form
            prefix, items = items, schema.get("additionalItems", {})
        prefix = prefix if isinstance(prefix, list) else []
        count = max(count, min(len(prefix), MAX_ITEMS))
        unique = schema.get("uniqueItems") is True
        out: list[Any] = []
        for i in range(count):
            if self.budget <= 0:
                break
            sub = prefix[i] if i < len(prefix) else items
            value = self.value(sub, name, depth + 1)
            for _ in range(10):  # uniqueItems: draw again, a few times, on a repeat
                if not unique or value not in out:
                    break
                value = self.value(sub, name, depth + 1)
            out.append(value)
        return out

    def _string(self, schema: dict[str, Any], name: str) -> str:
        rng = self.rng
        low = schema.get("minLength")
        high = schema.get("maxLength")
        low = low if isinstance(low, int) and not isinstance(low, bool) else 0
        high = high if isinstance(high, int) and not isinstance(high, bool) else None

        def fits(text: Any) -> bool:
            return isinstance(text, str) and low <= len(text) <= (high or len(text))

        examples = schema.get("examples")
        candidates = [e for e in examples if fits(e)] if isinstance(examples, list) else []
        if not candidates and fits(schema.get("default")):
            candidates = [schema["default"]]
        if not candidates and fits(_FORMATS.get(str(schema.get("format")))):
            candidates = [_FORMATS[str(schema.get("format"))]]
        if not candidates and schema.get("format") == "uuid":
            digits = "".join(f"{int(rng.random() * 16):x}" for _ in range(32))
            candidates = [
                f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-a{digits[17:20]}-{digits[20:]}"
            ]
        if not candidates:
            options = _QUOTED_OPTION.findall(str(schema.get("description", "")))
            candidates = [o for _, o in options if fits(o)]
        if candidates:
            return rng.choice(candidates)
        who = f"agent_unique_id: {self.agent}" if self.agent is not None else "an agent"
        text = f"{name} of {who}"
        if len(text) < low:
            text += "." * (low - len(text))
        return text if high is None else text[:high]


def _is_null(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("type") == "null"


def _number(schema: dict[str, Any], rng: CallRandom, *, integer: bool) -> int | float:
    """A number within the schema's bounds (three apart when only one is given, 0 to 2
    when none is), a ``multipleOf`` when it asks for one."""
    low, high = _number_or_none(schema.get("minimum")), _number_or_none(schema.get("maximum"))
    low_open = high_open = False
    for key, is_low in (("exclusiveMinimum", True), ("exclusiveMaximum", False)):
        bound = schema.get(key)
        if bound is True:  # draft 4: the plain bound is exclusive
            low_open, high_open = (True, high_open) if is_low else (low_open, True)
            continue
        bound = _number_or_none(bound)
        if bound is None:
            continue
        if is_low and (low is None or bound >= low):
            low, low_open = bound, True
        elif not is_low and (high is None or bound <= high):
            high, high_open = bound, True
    if low is None and high is None:
        low, high = 0.0, 2.0
    elif low is None:
        low = high - 2 if high is not None else 0.0
    elif high is None:
        high = low + 2
    assert low is not None and high is not None
    step = _number_or_none(schema.get("multipleOf"))
    if integer:
        first = math.floor(low) + 1 if low_open and low == math.floor(low) else math.ceil(low)
        last = math.ceil(high) - 1 if high_open and high == math.ceil(high) else math.floor(high)
        if step is not None and step > 0 and step == int(step):
            k_first, k_last = math.ceil(first / step), math.floor(last / step)
            if k_first <= k_last:
                return int(step) * (k_first + int(rng.random() * (k_last - k_first + 1)))
        return first + int(rng.random() * (last - first + 1)) if first <= last else first
    if step is not None and step > 0:
        k_first, k_last = math.ceil(low / step), math.floor(high / step)
        # A float multiple the way a validator checks it: value / step a whole number.
        fine = [
            v
            for k in range(k_first, min(k_last, k_first + 50) + 1)
            for v in (k * step, round(k * step, 10))
            if (v / step) == int(v / step) and _inside(v, low, high, low_open, high_open)
        ]
        if fine:
            return rng.choice(fine)
    value = round(low + rng.random() * (high - low), 2)
    return value if _inside(value, low, high, low_open, high_open) else (low + high) / 2


def _inside(value: float, low: float, high: float, low_open: bool, high_open: bool) -> bool:
    above = low < value or (value == low and not low_open)
    return above and (value < high or (value == high and not high_open))


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


def count_prompt_tokens(body: dict[str, Any]) -> int:
    """The prompt tokens the server bills a request (and a token quota counts): the
    words of its messages' text."""
    return sum(len(t.split()) for t in _texts(body["messages"]))


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
    prompt_tokens = count_prompt_tokens(body)
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

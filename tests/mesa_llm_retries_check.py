"""mesa-llm's ``ModuleLLM`` retry, unbounded and bounded, against the chaos server.

Run as a script in a subprocess by ``tests/test_compat_mesa_llm_retries.py`` (importing
mesa_llm patches Mesa's AgentSet for the whole process). A real ``ModuleLLM`` with
``llm_model="openai/chaos"`` calls, through litellm over HTTP, a chaos server that
answers every request with 429 (``Retry-After`` of a few milliseconds); the server's
log counts the HTTP requests each case made. Prints one JSON document.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENAI_API_KEY", "sk-chaos-not-a-real-key")

from fault_injection import ChaosServer, FaultKind, Scenario, chaos_server
from fault_injection.chaos._app import retry_after_headers

#: How long an unbounded call is given: mesa-llm's first backoff is 1 s, so by then it
#: has tried twice; a bounded call has long given up.
WINDOW = 2.0
RATE_LIMITED = Scenario(name="always-429", agents=1, faults={FaultKind.RATE_LIMIT: 1.0})


def requests(server: ChaosServer, before: int) -> int:
    server.wait_idle(10)
    return len(server.log) - before


def call(server: ChaosServer, llm: Any, *, sync: bool = False) -> dict[str, Any]:
    """One ``agenerate`` (or ``generate``) call, given `WINDOW` seconds."""
    before = len(server.log)
    t = time.perf_counter()
    outcome = "returned"
    headers: dict[str, str] = {}
    try:
        if sync:
            llm.generate("{'agent_unique_id': 1}")
        else:
            asyncio.run(asyncio.wait_for(llm.agenerate("{'agent_unique_id': 1}"), WINDOW))
    except TimeoutError:
        outcome = "still retrying"
    except Exception as exc:
        outcome = type(exc).__name__
        response = getattr(exc, "response", None)
        if response is not None:
            headers = {k: response.headers[k] for k in ("retry-after", "retry-after-ms")}
    return {
        "outcome": outcome,
        "requests": requests(server, before),
        "seconds": round(time.perf_counter() - t, 2),
        "headers": headers,
    }


def call_unbounded(server: ChaosServer, llm: Any) -> dict[str, Any]:
    """One unbounded ``agenerate``, cancelled once it has shown it tries again.

    One mesa-llm try is 3 HTTP requests (litellm's OpenAI client retries twice), so a
    fourth request means mesa-llm slept and tried again. Waiting for that, rather than a
    fixed window, keeps a busy machine (slow first try) from failing the test; the cap
    only bounds a broken run.
    """
    before = len(server.log)
    t = time.perf_counter()

    async def until_it_retries() -> str:
        task = asyncio.ensure_future(llm.agenerate("{'agent_unique_id': 1}"))
        deadline = time.perf_counter() + 30.0
        try:
            while time.perf_counter() < deadline:
                if task.done():
                    return type(task.exception()).__name__ if task.exception() else "returned"
                if len(server.log) - before > 3:
                    return "still retrying"
                await asyncio.sleep(0.05)
            return "gave no sign within 30 s"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    outcome = asyncio.run(until_it_retries())
    return {
        "outcome": outcome,
        "requests": requests(server, before),
        "seconds": round(time.perf_counter() - t, 2),
        "headers": {},
    }


def main() -> None:
    import trio_mesa.compat  # noqa: F401 - must not import mesa_llm
    from trio_mesa.compat import _mesa_llm_retries as switch

    out: dict[str, Any] = {"mesa_llm_imported_by_compat": "mesa_llm" in sys.modules}
    out["restore_before_any_bound"] = switch.restore_mesa_llm_retries()
    # The first bound imports mesa_llm itself.
    out["first_bound"] = repr(switch.bound_mesa_llm_retries(1))
    switch.restore_mesa_llm_retries()

    import litellm
    from litellm.utils import _get_retry_after_from_exception_header as litellm_parse
    from mesa_llm import module_llm
    from mesa_llm.module_llm import ModuleLLM

    litellm.suppress_debug_info = True
    out["litellm_parses"] = [
        litellm_parse(h)
        for h in (retry_after_headers(0.25), retry_after_headers(2.5), {"retry-after": "0.5"})
    ]
    originals = (
        ModuleLLM.__dict__["generate"],
        module_llm.AsyncRetrying,
        module_llm.completion,
        module_llm.acompletion,
    )
    with chaos_server(RATE_LIMITED, time_scale=0.001) as server:
        llm = ModuleLLM(llm_model="openai/chaos", api_base=server.api_base)
        out["unbounded"] = call_unbounded(server, llm)
        switch.bound_mesa_llm_retries(3)
        out["bound_again"] = repr(switch.bound_mesa_llm_retries(1))  # replaces the first
        out["bound_1"] = call(server, llm)
        out["bound_1_sync"] = call(server, llm, sync=True)
        out["state"] = repr(switch.mesa_llm_retry_bound())
        switch.bound_mesa_llm_retries(1, sdk_retries=None)
        out["bound_1_sdk_default"] = call(server, llm)
        switch.bound_mesa_llm_retries(2)
        out["bound_2"] = call(server, llm)
        out["restored"] = repr(switch.restore_mesa_llm_retries())
        current = (
            ModuleLLM.__dict__["generate"],
            module_llm.AsyncRetrying,
            module_llm.completion,
            module_llm.acompletion,
        )
        out["originals_back"] = all(a is b for a, b in zip(current, originals, strict=True))
        out["restore_again"] = switch.restore_mesa_llm_retries()
        out["after_restore"] = call_unbounded(server, llm)
    with chaos_server("clean") as server:
        switch.bound_mesa_llm_retries(1)
        llm = ModuleLLM(llm_model="openai/chaos", api_base=server.api_base)
        reply = asyncio.run(llm.agenerate("{'agent_unique_id': 4}"))
        out["clean"] = {
            "text": reply.choices[0].message.content,
            "requests": requests(server, 0),
        }
        switch.restore_mesa_llm_retries()
    try:
        switch.bound_mesa_llm_retries(0)
    except ValueError as exc:
        out["bad_attempts"] = str(exc)
    try:
        switch.bound_mesa_llm_retries(1, sdk_retries=-1)
    except ValueError as exc:
        out["bad_sdk_retries"] = str(exc)
    out["state_at_end"] = repr(switch.mesa_llm_retry_bound())
    print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

"""fault_injection.chaos: the chaos LLM server, an OpenAI-compatible endpoint on loopback.

It fails on a seeded plan keyed by (agent ``unique_id``, that agent's call number), so a
seed reproduces every agent's faults whatever order requests arrive in; logs every
request and its fault (`FaultLog`); optionally enforces a provider's request quota.
`chaos_server` runs it in a thread for a test; ``python -m fault_injection serve`` runs
it from a shell. The names here are also importable from ``fault_injection`` itself.
`ChaosApp`, `ChaosServer` and `chaos_server` need the ``server`` extra (starlette,
uvicorn, httpx), imported on first use only.

Record once, replay forever: ``chaos_server(upstream=URL, record="run.jsonl")`` is a
proxy that records a real model's exchanges per (agent, call number) in a `Cassette`;
``chaos_server(replay="run.jsonl")`` answers each agent's n-th call with its recorded
reply, byte for byte, and with a faulty scenario overlays that plan's faults on them.

Modules: ``_app`` (the ASGI app), ``_replies`` (request validation and OpenAI-shaped
replies), ``_log`` (the request log), ``_scenarios`` (the server's named scenarios),
``_cassette`` (the cassette file: a re-export of ``trio_mesa``'s own), ``_proxy``
(upstream forwarding and replay), ``_server`` (uvicorn on loopback), ``_cli`` (the
``serve`` command).
"""

from typing import TYPE_CHECKING, Any

from trio_mesa._cassette import Cassette, CassetteError, Exchange

from ._log import FaultLog, RequestRecord
from ._scenarios import SERVER_SCENARIOS

if TYPE_CHECKING:
    from ._app import ChaosApp
    from ._server import ChaosServer, chaos_server

_LAZY = {"ChaosApp": "._app", "ChaosServer": "._server", "chaos_server": "._server"}


def __getattr__(name: str) -> Any:
    # The app needs starlette and uvicorn: import them on first use only.
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        value.__module__ = __name__
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SERVER_SCENARIOS",
    "Cassette",
    "CassetteError",
    "ChaosApp",
    "ChaosServer",
    "Exchange",
    "FaultLog",
    "RequestRecord",
    "chaos_server",
]

for _name in set(__all__) - set(_LAZY):
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith(__name__ + "._"):
        _obj.__module__ = __name__
del _name, _obj

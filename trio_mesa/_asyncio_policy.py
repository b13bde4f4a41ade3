"""Keep plain ``asyncio.run()`` working in a process that imported trio-asyncio.

trio-asyncio 0.16, on import, makes its ``TrioPolicy`` the process's event loop policy:
outside Trio, ``asyncio.new_event_loop()`` (and so ``asyncio.run()``) then returns a
``SyncTrioEventLoop``, which runs a whole Trio run in a greenlet. Asyncio code becomes
slower, and starting Trio in guest mode on such a loop fails ("Attempted to call run()
from inside a run()"), so `trio_mesa.compat` would break after any native Trio step with
asyncio agents. trio-asyncio falls back to a thread's "faked" policy when one is set
(its own mechanism for tests that install a custom policy); we set the default of that
fallback, for every thread, to the policy that was in force before trio-asyncio was
imported. Inside Trio, trio-asyncio keeps managing its loops exactly as before.
"""

from __future__ import annotations

from types import ModuleType


def restore_plain_asyncio_outside_trio(trio_asyncio: ModuleType) -> None:
    """Make ``asyncio.new_event_loop()`` outside Trio return asyncio's own loops again.

    Idempotent. A policy set explicitly with ``asyncio.set_event_loop_policy()`` in a
    thread still wins in that thread; a policy already installed as the process-wide
    fallback (by us or anyone) is left alone. Does nothing if trio-asyncio's internals
    are not the ones this was written against (0.15/0.16).
    """
    loop_module = getattr(trio_asyncio, "_loop", None)
    faked = getattr(loop_module, "_faked_policy", None)
    original = getattr(loop_module, "_original_policy", None)
    if faked is None or original is None:
        return
    faked_type = type(faked)
    if faked_type.__dict__.get("policy", None) is None:
        faked_type.policy = original


def rebind_asyncio_functions_imported_early() -> None:
    """Give modules that imported asyncio's functions before trio-asyncio its versions.

    trio-asyncio 0.16 replaces ``asyncio.current_task`` and ``asyncio.get_running_loop``
    on import, so that they see its loops. anyio 4's asyncio backend binds both at its
    own import (``from asyncio import current_task, get_running_loop``); when it was
    imported before trio-asyncio (any httpx request on a plain asyncio loop does that,
    and trio-mesa imports trio-asyncio lazily), every anyio cancel scope entered on a
    trio-asyncio loop raised "RuntimeError: no running event loop". httpcore enters one
    whenever it closes a pooled connection, so litellm's requests from asyncio agents on
    a Trio host failed after any earlier ``asyncio.run()`` in the process. trio-asyncio's
    replacements fall back to asyncio's own functions outside its loops, so rebinding is
    safe for plain asyncio too. Idempotent; does nothing when anyio's backend is not
    imported yet (it will then import the replacements itself).
    """
    import asyncio
    import sys

    backend = sys.modules.get("anyio._backends._asyncio")
    if backend is None:
        return
    for name in ("current_task", "get_running_loop"):
        if getattr(backend, name, None) is not getattr(asyncio, name):
            setattr(backend, name, getattr(asyncio, name))

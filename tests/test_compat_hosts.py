"""Both hosts in one process, in any order: native Trio (trio-asyncio) and compat on asyncio.

Each order runs in a fresh interpreter, so "first" really is first. The native path
with an asyncio agent imports trio-asyncio, which changes which loop asyncio.run() makes;
compat must still run in guest mode on a plain asyncio loop after it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import mesa, trio
    import trio_mesa
    from trio_mesa import compat

    class Model(mesa.Model):
        pass

    class Agent(mesa.Agent):
        async def astep(self):
            await asyncio.sleep(0)
            return type(asyncio.get_running_loop()).__module__

    model = Model(rng=1)
    agents = [Agent(model) for _ in range(3)]

    def native():
        report = trio_mesa.run_step(agents)
        assert report.all_ok, report
        print("native", "trio_asyncio" in sys.modules, report.outcomes[0].result)

    def guest():
        async def main():
            lock = asyncio.Lock()  # bound to this loop
            async with lock:
                pass
            report = await compat.step_agents_parallel(agents)
            assert report.all_ok, report
            return type(asyncio.get_running_loop()).__module__, report.outcomes[0].result
        print("compat", *asyncio.run(main()))

    if sys.argv[2] == "no-fix":
        import trio_mesa._asyncio_policy as fix
        fix.restore_plain_asyncio_outside_trio = lambda module: None
    for step in sys.argv[1]:
        native() if step == "n" else guest()
    """
)


def run(order: str, variant: str = "fix") -> list[list[str]]:
    env = {**os.environ}
    env.pop("TRIO_MESA_STRICT", None)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, order, variant],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return [line.split() for line in done.stdout.splitlines()]


PLAIN = "asyncio.unix_events" if sys.platform != "win32" else "asyncio.windows_events"


@pytest.mark.parametrize("order", ["ncnc", "cncn"])
def test_both_hosts_in_any_order(order: str) -> None:
    lines = run(order)
    assert [line[0] for line in lines] == ["native" if c == "n" else "compat" for c in order]
    for line in lines:
        if line[0] == "native":
            assert line[1] == "True"  # trio-asyncio was needed and imported
            assert line[2].startswith("trio_asyncio")
        else:
            # compat ran on asyncio's own loop, its agents on that very loop
            assert line[1:] == [PLAIN, PLAIN]


def test_without_the_policy_fix_asyncio_run_gets_a_trio_asyncio_loop() -> None:
    # Pins the upstream behaviour the fix undoes, and shows compat still works there
    # (the step then runs inside that loop's own Trio run).
    lines = run("nc", "no-fix")
    assert lines[1][0] == "compat"
    assert lines[1][1].startswith("trio_asyncio")


ANYIO_FIRST = textwrap.dedent(
    """
    import asyncio, sys
    import anyio, mesa
    import trio_mesa

    class Agent(mesa.Agent):
        async def astep(self):
            # What httpcore does when it closes a pooled connection (every litellm
            # request through httpx may): an anyio cancel scope on the running loop.
            with anyio.CancelScope(shield=True):
                await asyncio.sleep(0)
            return "ok"

    async def plain():  # imports anyio's asyncio backend before trio-asyncio exists
        with anyio.CancelScope():
            await asyncio.sleep(0)

    asyncio.run(plain())
    assert "trio_asyncio" not in sys.modules
    if sys.argv[1] == "no-fix":
        import trio_mesa._asyncio_policy as fix
        fix.rebind_asyncio_functions_imported_early = lambda: None
    model = mesa.Model(rng=1)
    agents = [Agent(model) for _ in range(3)]
    report = trio_mesa.run_step(agents)
    print(*[o.status.value for o in report.outcomes])
    errors = {f"{type(o.exception).__name__}: {o.exception}" for o in report.outcomes}
    print(*errors - {"NoneType: None"})
    """
)


@pytest.mark.parametrize("variant", ["fix", "no-fix"])
def test_anyio_imported_before_trio_asyncio_still_works_on_a_trio_host(variant: str) -> None:
    # Upstream: anyio 4 binds asyncio.current_task at its import; trio-asyncio 0.16
    # replaces asyncio.current_task at its (later) import; the stale binding raised
    # "no running event loop" in every anyio cancel scope on a trio-asyncio loop, and so
    # in httpcore under litellm after any earlier asyncio.run(). "no-fix" pins that.
    done = subprocess.run(
        [sys.executable, "-c", ANYIO_FIRST, variant],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    statuses, *errors = done.stdout.splitlines()
    if variant == "fix":
        assert statuses.split() == ["ok", "ok", "ok"]
    else:
        assert statuses.split() == ["failed", "failed", "failed"]
        assert errors == ["RuntimeError: no running event loop"]

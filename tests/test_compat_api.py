"""trio_mesa.compat's public surface: names, signatures, configuration, import cost."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import subprocess
import sys
import textwrap

import mesa
import pytest

import trio_mesa
from trio_mesa import compat
from trio_mesa.compat._config import current_policy

MESA_LLM_NAMES = (
    "step_agents_parallel",
    "step_agents_multithreaded",
    "step_agents_parallel_sync",
    "enable_automatic_parallel_stepping",
    "disable_automatic_parallel_stepping",
)


def run_python(code: str) -> str:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("TRIO_MESA_STRICT", None)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_signatures_equal_mesa_llm_0_3_2() -> None:
    # In a subprocess: importing mesa_llm patches Mesa's AgentSet for the whole process.
    out = run_python(
        """
        import inspect, json
        from mesa.agentset import AgentSet
        import mesa_llm.parallel_stepping as theirs
        import trio_mesa.compat as ours
        names = NAMES
        result = {n: inspect.signature(getattr(ours, n)).parameters
                     == inspect.signature(getattr(theirs, n)).parameters for n in names}
        result["do_async"] = (inspect.signature(ours._stepping.do_async).parameters
                              == inspect.signature(theirs._agentset_do_async).parameters)
        result["async"] = {n: inspect.iscoroutinefunction(getattr(ours, n))
                           == inspect.iscoroutinefunction(getattr(theirs, n)) for n in names}
        # Our import replaced mesa-llm's do_async, as documented.
        result["installed"] = AgentSet.do_async is ours._stepping.do_async
        print(json.dumps(result))
        """.replace("NAMES", repr(MESA_LLM_NAMES))
    )
    result = json.loads(out)
    assert result.pop("async") == dict.fromkeys(MESA_LLM_NAMES, True)
    assert result == {**dict.fromkeys(MESA_LLM_NAMES, True), "do_async": True, "installed": True}


def test_importing_compat_does_not_import_trio_asyncio() -> None:
    out = run_python(
        """
        import sys
        import trio_mesa.compat
        print("trio_asyncio" in sys.modules, "mesa_llm" in sys.modules)
        """
    )
    assert out.split() == ["False", "False"]


def test_public_names() -> None:
    assert set(MESA_LLM_NAMES) <= set(compat.__all__)
    assert {"configure", "policy", "AgentResults"} <= set(compat.__all__)
    assert inspect.iscoroutinefunction(compat.step_agents_parallel)
    assert trio_mesa.aio_step_agents is not None


@pytest.fixture
def restore_defaults():
    saved = compat.configure()
    yield
    compat.configure(**saved.as_kwargs())


def test_configure_sets_process_wide_defaults(restore_defaults) -> None:
    assert current_policy().strict is False
    compat.configure(strict=True, timeout=5)
    assert current_policy().strict is True
    assert current_policy().timeout == 5
    compat.configure(max_concurrency=3)
    assert current_policy().max_concurrency == 3
    assert current_policy().strict is True  # untouched options keep their value


def test_configure_validates_before_changing(restore_defaults) -> None:
    before = compat.configure()
    with pytest.raises(TypeError, match="unknown"):
        compat.configure(strict=True, retries=3)
    with pytest.raises(ValueError, match="timeout"):
        compat.configure(strict=True, timeout=-1)
    assert compat.configure() == before


def test_policy_is_scoped_nested_and_restored(restore_defaults) -> None:
    compat.configure(timeout=10)
    with compat.policy(strict=True) as outer:
        assert outer.strict and outer.timeout == 10
        with compat.policy(timeout=1) as inner:
            assert inner.strict and inner.timeout == 1
        assert current_policy().timeout == 10
        with pytest.raises(RuntimeError), compat.policy(fail_fast=True):
            raise RuntimeError
        assert current_policy().fail_fast is False
    assert current_policy().strict is False


def test_policy_is_per_task() -> None:
    async def inside():
        await asyncio.sleep(0)
        return current_policy().timeout

    async def main():
        with compat.policy(timeout=3):
            task = asyncio.ensure_future(inside())  # started inside: inherits
        other = asyncio.ensure_future(inside())  # started outside: does not
        return await task, await other

    assert asyncio.run(main()) == (3, None)


def test_env_var_turns_strict_mode_on(monkeypatch: pytest.MonkeyPatch) -> None:
    class Failing(mesa.Agent):
        async def astep(self) -> None:
            raise RuntimeError("LLM timeout")

    model = mesa.Model(rng=1)
    agents = [Failing(model)]
    assert not compat.step_agents_parallel_sync(agents).all_ok
    monkeypatch.setenv("TRIO_MESA_STRICT", "1")
    assert current_policy().strict is True
    with pytest.raises(trio_mesa.StepFailed):
        compat.step_agents_parallel_sync(agents)
    monkeypatch.setenv("TRIO_MESA_STRICT", "0")
    assert current_policy().strict is False

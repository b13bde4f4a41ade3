"""Start order follows Mesa's shuffle_do (same seed, same order); removed agents are skipped."""

from __future__ import annotations

import pytest
from core_agents import AsyncioAgent, Model, SyncAgent, TrioAgent
from mesa.agent import AgentSet

import trio_mesa
from trio_mesa import Status


def _populate(seed: int) -> Model:
    model = Model(seed=seed)
    for cls in (TrioAgent, AsyncioAgent, SyncAgent):
        for _ in range(12):
            cls(model)
    return model


def _mesa_order(model: Model, select) -> list[int]:
    order: list[int] = []
    select(model).shuffle_do(lambda agent: order.append(agent.unique_id))
    return order


SELECTIONS = {
    "model.agents": lambda m: m.agents,
    "agents_by_type": lambda m: m.agents_by_type[AsyncioAgent],
    "AgentSet": lambda m: AgentSet(list(m.agents), random=m.random),
}


@pytest.mark.parametrize("selection", SELECTIONS)
@pytest.mark.parametrize("seed", [0, 7, 42])
async def test_start_order_is_mesas_shuffle_do_order(selection, seed):
    select = SELECTIONS[selection]
    expected = _mesa_order(_populate(seed), select)
    model = _populate(seed)
    report = await trio_mesa.step_agents(select(model))
    assert [o.unique_id for o in report] == expected
    assert report.counts[Status.OK] == len(expected)


async def test_successive_steps_keep_drawing_from_the_model_rng():
    # Two steps in a row consume the RNG exactly as two shuffle_do calls would.
    reference = _populate(3)
    expected = [_mesa_order(reference, SELECTIONS["model.agents"]) for _ in range(2)]
    model = _populate(3)
    got = [[o.unique_id for o in await trio_mesa.step_agents(model.agents)] for _ in range(2)]
    assert got == expected
    assert got[0] != got[1]


async def test_plain_iterables_keep_their_order_unless_asked():
    model = _populate(1)
    agents = list(model.agents)[::-1]
    report = await trio_mesa.step_agents(agents)
    assert [o.unique_id for o in report] == [a.unique_id for a in agents]
    shuffled = await trio_mesa.step_agents(agents, shuffle=True)
    assert sorted(o.unique_id for o in shuffled) == sorted(a.unique_id for a in agents)
    assert [o.unique_id for o in shuffled] != [a.unique_id for a in agents]
    unshuffled = await trio_mesa.step_agents(model.agents, shuffle=False)
    assert [o.unique_id for o in unshuffled] == [a.unique_id for a in model.agents]


async def test_inline_sync_agents_run_in_start_order():
    model = Model(seed=5)
    for _ in range(20):
        SyncAgent(model)
    report = await trio_mesa.step_agents(model.agents)
    assert model.log == [o.unique_id for o in report]


async def test_agent_removed_before_its_turn_is_skipped():
    model = Model()
    victims: list[SyncAgent] = []

    class Remover(SyncAgent):
        def step(self):
            for victim in victims:
                victim.remove()
            return super().step()

    remover = Remover(model)
    victims.extend([SyncAgent(model), AsyncioAgent(model), TrioAgent(model)])
    bystander = TrioAgent(model)
    # max_concurrency=1 and a plain list: the remover surely runs before the others start.
    report = await trio_mesa.step_agents([remover, *victims, bystander], max_concurrency=1)
    assert [o.status for o in report] == [Status.OK] + [Status.SKIPPED] * 3 + [Status.OK]
    assert all(v.calls == 0 for v in victims)
    assert [o.attempts for o in report.skipped] == [0, 0, 0]
    assert report.failed == () and report.all_ok
    assert bystander.finished == 1

"""`Budget`: the limits a `trio_mesa.simulate` run stops at, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ._checks import check_count, check_number, shown
from ._usage import Usage

StopMode = Literal["after_step", "now"]


#: The largest ``max_calls`` or ``max_tokens``: a trillion, beyond any real run's spend.
MAX_BUDGET_COUNT = 10**12


def _check_limit(name: str, value: object, *, integer: bool) -> None:
    if value is None:
        return
    where = f"trio_mesa.Budget(): {name}"
    if integer:
        check_count(where, value, minimum=0, maximum=MAX_BUDGET_COUNT)
    elif name == "max_lost_fraction":
        check_number(where, value, minimum=0, maximum=1, what="a fraction of agent-steps")
    else:
        check_number(where, value, minimum=0, what="a number (USD)")


@dataclass(frozen=True, slots=True)
class Budget:
    """Limits on a `simulate` run; the run stops cleanly when one is reached.

    ``max_calls``, ``max_tokens`` (prompt + completion) and ``max_cost`` (the known cost,
    USD for litellm) are reached when the run's summed `Usage` is at or over them; they
    are checked as usage accrues, after each agent's outcome (litellm calls logged late
    are counted when their step ends). ``max_lost_fraction`` is reached when lost
    agent-steps (outcomes that are not ``OK`` or ``SKIPPED``) over the agent-steps so
    far *exceed* it (``0`` stops at the first loss); it is checked when each agent-set
    step ends, so the first outcomes of a step cannot trip it alone.

    ``stop`` says what happens then:

    * ``"after_step"`` (default): the model step running finishes normally (every
      agent-set step in it runs in full) and ``model.step()`` is not called again.
    * ``"now"``: the agent-set step running is cancelled at once: agents still running
      end ``CANCELLED`` (and agents not yet started too); any later agent-set step in the
      same ``model.step()`` call starts with every agent ``CANCELLED``. ``model.step()``
      itself returns normally (its own code after ``shuffle_do`` still runs, so the
      model is never left half-written between agent updates that trio-mesa drives),
      and it is not called again.

    `RunReport.stopped_because` names the limit and the figures.

    Raises:
        TypeError, ValueError: on construction, for a limit that is not ``None`` or a
            non-negative finite number (``bool`` refused; ``max_calls`` and
            ``max_tokens`` must be ``int``, at most 10**12), a ``max_lost_fraction``
            outside [0, 1], or another ``stop``.
    """

    max_calls: int | None = None
    max_tokens: int | None = None
    max_cost: float | None = None
    max_lost_fraction: float | None = None
    stop: StopMode = "after_step"

    def __post_init__(self) -> None:
        _check_limit("max_calls", self.max_calls, integer=True)
        _check_limit("max_tokens", self.max_tokens, integer=True)
        _check_limit("max_cost", self.max_cost, integer=False)
        _check_limit("max_lost_fraction", self.max_lost_fraction, integer=False)
        if self.stop not in ("after_step", "now"):
            raise ValueError(
                f"trio_mesa.Budget(): stop must be 'after_step' or 'now', not {shown(self.stop)}"
            )

    def usage_crossed(self, usage: Usage) -> str | None:
        """The limit ``usage`` has reached, with the figures, or ``None``."""
        if self.max_calls is not None and usage.calls >= self.max_calls:
            return f"max_calls={self.max_calls} crossed: {usage.calls} calls"
        if self.max_tokens is not None and usage.total_tokens >= self.max_tokens:
            return f"max_tokens={self.max_tokens} crossed: {usage.total_tokens} tokens"
        if self.max_cost is not None and usage.known_cost >= self.max_cost:
            return f"max_cost={self.max_cost:g} crossed: ${usage.known_cost:.4f}"
        return None

    def lost_crossed(self, lost: int, agent_steps: int) -> str | None:
        """The ``max_lost_fraction`` message when ``lost / agent_steps`` exceeds it."""
        limit = self.max_lost_fraction
        if limit is None or agent_steps == 0 or not lost / agent_steps > limit:
            return None
        return (
            f"max_lost_fraction={limit:g} crossed: {lost} of {agent_steps} agent-steps "
            f"lost ({lost / agent_steps:.1%})"
        )

    @property
    def limits_usage(self) -> bool:
        """Whether any usage limit is set (calls, tokens or cost)."""
        return not (self.max_calls is None and self.max_tokens is None and self.max_cost is None)


__all__ = ["Budget"]

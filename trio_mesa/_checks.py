"""The one validator of options: booleans, counts, finite numbers and durations, checked
on construction with an error that names the option and the value it was given.

`StepPolicy`, compat's ``configure``, `Retry`, `RateLimit`, `CircuitBreaker` and
fault_injection's `Scenario`, `FaultRule`, latencies and `Quota` all check their fields
here, so one rule holds everywhere:

- a boolean option takes only ``True`` or ``False`` (``"false"``, ``"no"``, ``0`` and
  ``2`` are refused: a truthy string would mean the opposite of what was written);
- a number is an ``int`` or ``float``, never a ``bool``, and finite unless the option
  says infinity means "no limit"; an int too large for a float is refused, not left to
  raise ``OverflowError`` later;
- a count is an ``int`` within its documented bounds (at most `MAX_COUNT`, a
  billion, unless the option says less).

Wrong type: `TypeError`. Right type, wrong value: `ValueError`. The value is shown with
`safe_repr`, cut short, so a hostile value cannot break the message itself.
"""

from __future__ import annotations

import math

from ._text import safe_repr

__all__ = ["MAX_COUNT", "check_bool", "check_count", "check_number", "check_seconds", "shown"]


def shown(value: object) -> str:
    """``value`` for an error message: its repr, safe and at most about 80 characters."""
    return safe_repr(value, limit=80)


def check_bool(name: str, value: object) -> bool:
    """``value`` if it is ``True`` or ``False``.

    Raises:
        TypeError: anything else, including ``0``, ``1`` and strings such as ``"false"``.
    """
    if value is not True and value is not False:
        raise TypeError(f"{name} must be True or False, not {shown(value)}")
    return value


def check_number(
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: bool = False,
    below: bool = False,
    allow_inf: bool = False,
    what: str = "a number",
) -> float:
    """``value`` as a float, if it is a real number in range.

    ``minimum``/``maximum`` are inclusive bounds, exclusive with ``above``/``below``.
    NaN is always refused; infinity unless ``allow_inf``. ``what`` names the kind of
    number in the message ("a number of seconds", "a probability").

    Raises:
        TypeError: not an int or float (a ``bool`` is refused).
        ValueError: NaN, infinite (unless allowed), too large for a float, or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be {what}, not {shown(value)}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond 1.8e308: no clock or sleep could take it
        hint = " (math.inf means no limit)" if allow_inf else ""
        raise ValueError(f"{name} is too large for {what}{hint}: {shown(value)}") from None
    ok = not math.isnan(number) and (allow_inf or not math.isinf(number))
    if ok and minimum is not None:
        ok = number > minimum if above else number >= minimum
    if ok and maximum is not None:
        ok = number < maximum if below else number <= maximum
    if not ok:
        raise ValueError(
            f"{name} must be {_wanted(what, minimum, maximum, above, below, allow_inf)}, "
            f"not {shown(value)}"
        )
    return number


def _wanted(
    what: str,
    minimum: float | None,
    maximum: float | None,
    above: bool,
    below: bool,
    allow_inf: bool,
) -> str:
    """``"a positive finite number of seconds"``, ``"a finite probability from 0 to 1"``."""
    article, _, noun = what.partition(" ")
    adjective = ""
    if minimum == 0 and maximum is None:
        adjective = "positive " if above else "non-negative "
    finite = "" if allow_inf else "finite "
    text = f"{'an' if (adjective or finite)[:1] in 'aeiou' and (adjective or finite) else 'a'} "
    text += f"{adjective}{finite}{noun}"
    if maximum is not None and minimum is not None:
        text += f" in {'(' if above else '['}{minimum:g}, {maximum:g}{')' if below else ']'}"
    else:
        if minimum is not None and not adjective:
            text += f" {'>' if above else '>='} {minimum:g}"
        if maximum is not None:
            text += f" {'<' if below else '<='} {maximum:g}"
    return text if article in ("a", "an") else what


def check_seconds(
    name: str, value: object, *, positive: bool = False, allow_inf: bool = False
) -> float:
    """``value`` as a float if it is a number of seconds ``>= 0`` (``> 0`` if
    ``positive``), finite unless ``allow_inf`` (where infinity means no limit).

    Raises:
        TypeError: ``value`` is not an int or float (a ``bool`` is refused: ``True``
            seconds is a bug, not a duration).
        ValueError: NaN, infinite (unless allowed), too large, negative, or zero when
            ``positive``.
    """
    return check_number(
        name, value, minimum=0, above=positive, allow_inf=allow_inf, what="a number of seconds"
    )


#: The largest count any option takes unless it says otherwise (attempts, bursts,
#: concurrency, threads): beyond any real run, and small enough for float arithmetic.
MAX_COUNT = 1_000_000_000


def check_count(name: str, value: object, *, minimum: int = 1, maximum: int = MAX_COUNT) -> int:
    """``value`` if it is an int with ``minimum <= value <= maximum``.

    Raises:
        TypeError: ``value`` is not an int (``bool`` is refused).
        ValueError: out of range.
    """
    wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be {wanted}, not {shown(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be {wanted}, not {shown(value)}")
    if value > maximum:
        raise ValueError(f"{name} must be {wanted} of at most {maximum:,}, not {shown(value)}")
    return int(value)

"""Scenarios from TOML files: `load_scenario` and `scenario_from_dict`.

Parsing uses the stdlib ``tomllib`` (data only: nothing in a file is executed). Every
key is checked: an unknown key, a wrong type or a bad value raises `ScenarioError`
naming the file and the key, before anything runs. The format mirrors `Scenario`::

    name = "my-provider"
    agents = 50
    steps = 10
    timeout = 10.0
    latency = { kind = "lognormal", median = 1.0, sigma = 0.8 }

    [flavors]
    asyncio = 3
    sync = 1

    [faults]            # background per-call probabilities
    rate_limit = 0.05
    malformed_json = 0.01

    [[rules]]           # targeted faults, first match wins
    kind = "hang"
    share = 0.1         # or: agents = [3, 7]
    calls = [2, 3]
"""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

from trio_mesa._checks import shown

from ._scenario import FaultRule, Scenario


class ScenarioError(ValueError):
    """A scenario file or table is invalid; the message names the file and the key."""


_SCENARIO_KEYS = {f.name for f in fields(Scenario)}
_RULE_KEYS = {f.name for f in fields(FaultRule)}


def load_scenario(path: str | Path) -> Scenario:
    """Read a `Scenario` from the TOML file at ``path``.

    Raises:
        ScenarioError: the file cannot be read, is not valid TOML, or describes an
            invalid scenario (the message says which key and why).
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read scenario file: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib parses nested arrays and tables recursively
        raise ScenarioError(f"{path}: not valid TOML: nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: not UTF-8 ({exc.reason})") from None
    data.setdefault("name", path.stem)
    return scenario_from_dict(data, source=str(path))


def scenario_from_dict(data: dict[str, Any], *, source: str = "scenario") -> Scenario:
    """Build a `Scenario` from a plain table (as parsed from TOML or JSON).

    Raises:
        ScenarioError: naming ``source`` and the offending key.
    """
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: expected a table, not {type(data).__name__}")
    unknown = sorted(set(data) - _SCENARIO_KEYS)
    if unknown:
        raise ScenarioError(
            f"{source}: unknown key(s) {unknown}; allowed: {sorted(_SCENARIO_KEYS)}"
        )
    values = dict(data)
    rules = values.pop("rules", [])
    if not isinstance(rules, list):
        raise ScenarioError(f"{source}: 'rules' must be an array of tables ([[rules]])")
    built = []
    for i, rule in enumerate(rules):
        where = f"{source}: rules[{i}]"
        if not isinstance(rule, dict):
            raise ScenarioError(f"{where}: expected a table, not {shown(rule)}")
        bad = sorted(set(rule) - _RULE_KEYS)
        if bad:
            raise ScenarioError(f"{where}: unknown key(s) {bad}; allowed: {sorted(_RULE_KEYS)}")
        if "kind" not in rule:
            raise ScenarioError(f"{where}: missing 'kind'")
        try:
            built.append(FaultRule(**rule))
        except (TypeError, ValueError, RecursionError) as exc:
            raise ScenarioError(f"{where}: {exc}") from None
    for key in ("flavors", "faults"):
        if key in values and not isinstance(values[key], dict):
            raise ScenarioError(f"{source}: '{key}' must be a table, not {shown(values[key])}")
    try:
        return Scenario(rules=tuple(built), **values)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ScenarioError(f"{source}: {exc}") from None

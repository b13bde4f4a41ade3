"""The cassette format: round trip, and every damage to a file named by line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fault_injection.chaos._cassette import Cassette, CassetteError, CassetteWriter, Exchange
from fault_injection.chaos._proxy import Replay, first_difference


def _exchanges() -> list[Exchange]:
    out = []
    for call in (1, 2):
        for agent in (3, 1, 2):
            request = {"model": "m", "messages": [{"role": "user", "content": f"a{agent} c{call}"}]}
            body = json.dumps({"id": f"r{agent}-{call}", "choices": []}).encode()
            headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-secret"}
            out.append(Exchange.from_response(agent, call, request, 200, headers, body))
    return out


def _record(path: Path, exchanges: list[Exchange]) -> None:
    writer = CassetteWriter(path)
    for e in exchanges:
        writer.write(e)
    writer.close()


def test_round_trip_keeps_exchanges_and_drops_other_headers(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    exchanges = _exchanges()
    _record(path, exchanges)
    cassette = Cassette.load(path)
    assert list(cassette) == exchanges
    assert cassette.get(2, 2) == exchanges[5] and cassette.get(2, 3) is None
    assert [e.call for e in cassette.calls(1)] == [1, 2]
    assert all(e.headers == {"content-type": "application/json"} for e in cassette)
    assert b"sk-secret" not in path.read_bytes()
    assert cassette.get(3, 1) is not None and cassette.get(3, 1).content == exchanges[0].content


def test_non_utf8_body_round_trips_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    raw = b"\xff\xfe not utf-8 \x00"
    _record(path, [Exchange.from_response(1, 1, {}, 500, {}, raw)])
    assert Cassette.load(path).get(1, 1).content == raw  # type: ignore[union-attr]


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(CassetteError, match=r"nope\.jsonl: cannot read"):
        Cassette.load(tmp_path / "nope.jsonl")


def test_cut_short_recording_needs_complete_false(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    writer = CassetteWriter(path)
    for e in _exchanges()[:4]:
        writer.write(e)
    # no close(): as if the recorder had crashed
    with pytest.raises(CassetteError, match=r"run\.jsonl:6: end: missing") as info:
        Cassette.load(path)
    assert info.value.line == 6 and info.value.field == "end"
    assert len(Cassette.load(path, complete=False)) == 4
    writer.close()


def test_hand_edit_is_caught_by_the_digest(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    _record(path, _exchanges())
    path.write_text(path.read_text().replace('\\"r1-2\\"', '\\"r1-X\\"'))
    with pytest.raises(CassetteError) as info:
        Cassette.load(path)
    assert (info.value.line, info.value.field) == (6, "digest")


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_damage_loads_identically_or_names_the_line(
    tmp_path: Path, data: st.DataObject
) -> None:
    path = tmp_path / "run.jsonl"
    _record(path, _exchanges())
    good = path.read_bytes()
    original = Cassette.load(path)
    if data.draw(st.booleans(), label="truncate"):
        damaged = good[: data.draw(st.integers(0, len(good) - 1), label="cut")]
    else:
        at = data.draw(st.integers(0, len(good) - 1), label="at")
        byte = data.draw(st.integers(0, 255), label="byte")
        damaged = good[:at] + bytes([byte]) + good[at + 1 :]
    path.write_bytes(damaged)
    try:
        loaded = Cassette.load(path)
    except CassetteError as exc:
        assert 1 <= exc.line <= damaged.count(b"\n") + 2
        assert str(exc).startswith(f"{path}:{exc.line}: ")
    else:
        assert loaded == original


def test_first_difference_names_the_path_and_both_values() -> None:
    recorded = {"model": "m", "messages": [{"role": "user", "content": "north"}]}
    received = {"model": "m", "messages": [{"role": "user", "content": "south"}]}
    assert first_difference(recorded, recorded) is None
    assert first_difference(recorded, received) == (
        "$.messages[0].content: recorded 'north', received 'south'"
    )
    long = first_difference({"a": "x" * 200}, {"a": "y"})
    assert long is not None and len(long) < 200 and "..." in long


def test_replay_looks_up_by_agent_and_call_in_any_order(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    exchanges = _exchanges()
    _record(path, exchanges)
    replay = Replay(Cassette.load(path))
    for e in reversed(exchanges):
        found, diff = replay.lookup(e.agent, e.call, e.request)
        assert found == e and diff is None
    assert replay.lookup(1, 3, {}) == (None, None)
    with pytest.raises(ValueError, match="replay_mode"):
        Replay(Cassette.load(path), mode="sloppy")


@given(value=st.text(max_size=300))
def test_a_header_value_that_could_not_be_replayed_is_never_recorded(value: str) -> None:
    request = {"model": "m", "messages": []}
    headers = {"Retry-After": value, "Content-Type": "application/json"}
    kept = Exchange.from_response(1, 1, request, 429, headers, b"{}").headers
    replayable = value.isascii() and value.isprintable() and len(value) <= 200
    assert ("retry-after" in kept) is replayable
    assert kept.get("retry-after", value) == value


@pytest.mark.parametrize("value", ["1\r\nx-injected: yes", "\u00e9t\u00e9", "9" * 201])
def test_a_cassette_with_a_header_that_would_split_the_response_is_refused(
    tmp_path: Path, value: str
) -> None:
    path = tmp_path / "run.jsonl"
    # Written as a tool (or a hand) that recomputes the digest would: the digest holds.
    bad = Exchange(1, 1, {"model": "m", "messages": []}, 429, {"retry-after": value}, "{}")
    _record(path, [bad])
    with pytest.raises(CassetteError) as info:
        Cassette.load(path)
    assert (info.value.line, info.value.field) == (2, "headers.retry-after")
    assert "printable ASCII" in str(info.value)

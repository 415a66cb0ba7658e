"""Serving reads the keys the Redis sink writes: the formats must not drift apart."""

from __future__ import annotations

from dataflows.connectors import redis_sink
from serving import store


def test_key_formats_match_the_sink() -> None:
    for name in ("STATE_KEY", "VERSION_KEY", "BOARD_KEY", "EVENTS_KEY", "UPDATES_KEY", "RACES_KEY", "STINTS_KEY",
                 "STRATEGY_KEY"):
        assert getattr(store, name) == getattr(redis_sink, name), name
    if hasattr(redis_sink, "SESSION_KEY"):
        assert store.SESSION_KEY == redis_sink.SESSION_KEY


def test_drivers_from_state_rows() -> None:
    state = {"rows": [{"driver_number": 44, "code": "HAM", "team": "M", "team_colour": "00D2BE"},
                      {"driver_number": 1, "code": "VER", "team": "R", "team_colour": "1E41FF"}]}
    assert [d["code"] for d in store.drivers_from_state(state)] == ["VER", "HAM"]


def test_not_found_message_lists_known_races() -> None:
    assert str(store.RaceNotFound("x", ["a", "b"])) == "race 'x' not found; known races: a, b"
    many = [f"r{i}" for i in range(25)]
    assert str(store.RaceNotFound("x", many)).endswith("r19 (and 5 more)")
    assert str(store.RaceNotFound("x", [])).endswith("known races: none")

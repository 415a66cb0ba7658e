"""Serving's read side of Redis (the keys themselves: ``test_redis_layout.py``)."""

from __future__ import annotations

from serving import store


def test_drivers_from_state_rows() -> None:
    state = {"rows": [{"driver_number": 44, "code": "HAM", "team": "M", "team_colour": "00D2BE"},
                      {"driver_number": 1, "code": "VER", "team": "R", "team_colour": "1E41FF"}]}
    assert [d["code"] for d in store.drivers_from_state(state)] == ["VER", "HAM"]


def test_not_found_message_lists_known_races() -> None:
    assert str(store.RaceNotFound("x", ["a", "b"])) == "race 'x' not found; known races: a, b"
    many = [f"r{i}" for i in range(25)]
    assert str(store.RaceNotFound("x", many)).endswith("r19 (and 5 more)")
    assert str(store.RaceNotFound("x", [])).endswith("known races: none")

"""Report vs official results (pure checks)."""

from __future__ import annotations

from typing import Any

from simulator.verify import (
    Official,
    check_classification,
    check_lap_order,
    check_pit_stops,
    verify,
)


def _report() -> dict[str, Any]:
    return {
        "race_id": "r",
        "laps": {"1": ["AAA", "BBB", "CCC"], "2": ["BBB", "AAA"]},
        "classification": [
            {"position": 1, "driver": "BBB", "laps": 2, "status": "Finished"},
            {"position": 2, "driver": "AAA", "laps": 2, "status": "Finished"},
            {"position": 3, "driver": "CCC", "laps": 1, "status": "Retired"},
        ],
        "fastest_lap": {"driver": "AAA", "lap": 2, "lap_time_ms": 90000},
        "pit_stops": [{"driver": "AAA", "lap": 1}],
    }


def test_lap_order_rate_and_differences() -> None:
    chart = {1: ["AAA", "BBB", "CCC"], 2: ["AAA", "BBB"]}
    check = check_lap_order(_report(), chart)
    assert not check.passed and check.rate == 3 / 5
    assert "lap 2: AAA official P1, report P2" in check.details
    assert check_lap_order(_report(), {1: ["AAA", "BBB", "CCC"]}).passed


def test_classification_explains_penalty_and_retirement() -> None:
    official = [
        {"position": 1, "driver": "AAA", "laps": 2, "status": "Finished"},
        {"position": 2, "driver": "BBB", "laps": 2, "status": "Finished"},
        {"position": 3, "driver": "CCC", "laps": 1, "status": "Gearbox"},
    ]
    check = check_classification(_report(), official)
    assert not check.passed
    assert any("post-race time penalty" in d for d in check.details)
    assert any("CCC: classified after retiring" in d for d in check.details)
    official[0], official[1] = official[1] | {"position": 1}, official[0] | {"position": 2}
    assert check_classification(_report(), official).passed


def test_pit_stops_exclude_red_flag_stays() -> None:
    official = [{"driver": "AAA", "lap": 1, "duration_ms": 24000},
                {"driver": "BBB", "lap": 2, "duration_ms": 1_020_000}]
    check = check_pit_stops(_report(), official)
    assert check.passed and "excluded red-flag stays: BBB lap 2" in check.details
    missing = check_pit_stops({"pit_stops": []}, official)
    assert not missing.passed and missing.details[0] == "missing: AAA in-lap 1"


def test_verify_all() -> None:
    official = Official(
        classification=_report()["classification"],
        fastest_lap={"driver": "AAA", "lap": 2, "lap_time_ms": 90000},
        pit_stops=[{"driver": "AAA", "lap": 1, "duration_ms": 20000}],
        lap_chart={1: ["AAA", "BBB", "CCC"], 2: ["BBB", "AAA"]},
    )
    checks = verify(_report(), official)
    assert [c.name for c in checks] == ["lap-order", "classification", "fastest-lap", "pit-stops"]
    assert all(c.passed for c in checks), [c.lines() for c in checks]

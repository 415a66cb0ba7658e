"""2022 Bahrain GP replayed from its lap table through the real broker, dataflow and Redis.

The report (read back from Redis) must match the official results: the lap chart on every
driver-lap, the classification, LEC's 1:34.570 fastest lap on lap 51, every pit stop, and no
stop for Verstappen's drive into the pits when he retired on lap 55 (after 54 laps).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from infra.pipeline_run import run_through_pipeline
from simulator.sources.laptables import load_race
from simulator.verify import from_ergast, from_results_json, verify

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def bahrain(shared_data: Path, kafka_bootstrap: str, redis_url: str, registry_url: str) -> dict[str, Any]:
    race_dir = shared_data / "races" / "2022_bahrain_gp"
    race = load_race(race_dir / "laps.csv", race_dir / "results.json",
                     race_id=f"acc-bahrain-{uuid.uuid4().hex[:6]}")
    ver_54 = next(lap for lap in race.laps if lap.driver_number == 1 and lap.lap == 54)
    assert ver_54.pit_in, "the input carries VER's drive into the pits on his last lap"
    services = {"bootstrap": kafka_bootstrap, "redis_url": redis_url, "registry_url": registry_url}
    return run_through_pipeline(race, speed=None, timeout_s=110, services=services)


def test_lap_order_matches_official_lap_chart(bahrain: dict[str, Any], shared_data: Path) -> None:
    race_dir = shared_data / "races" / "2022_bahrain_gp"
    _off, race_id = from_results_json(race_dir / "results.json")
    assert race_id is not None
    official = from_ergast(shared_data / "ergast", race_id)
    assert sum(len(v) for v in official.lap_chart.values()) == 1123
    check = verify(bahrain, official)[0]
    assert check.name == "lap-order"
    assert check.rate == 1.0, check.details[:10]


def test_classification_fastest_lap_and_pit_stops(bahrain: dict[str, Any], shared_data: Path) -> None:
    official, _race_id = from_results_json(shared_data / "races" / "2022_bahrain_gp" / "results.json")
    assert [c["driver"] for c in bahrain["classification"]] == [c["driver"] for c in official.classification]
    assert [c["laps"] for c in bahrain["classification"]] == [c["laps"] for c in official.classification]
    assert bahrain["fastest_lap"] == {"driver": "LEC", "lap": 51, "lap_time_ms": 94570}
    ours = {(p["driver"], p["lap"]) for p in bahrain["pit_stops"]}
    assert ours == {(p["driver"], p["lap"]) for p in official.pit_stops}
    assert ("VER", 54) not in ours  # retiring into the pits is not a stop
    checks = verify(bahrain, official)
    assert all(c.passed for c in checks), [c.lines() for c in checks if not c.passed]


def test_report_shape(bahrain: dict[str, Any]) -> None:
    assert set(bahrain) == {"race_id", "session_type", "laps", "classification", "fastest_lap", "last_lap_hero",
                            "pit_stops", "overtakes", "strategy"}
    assert bahrain["session_type"] == "RACE"
    assert bahrain["laps"]["1"][:2] == ["LEC", "VER"]
    assert bahrain["last_lap_hero"]["lap"] == 57
    assert {o["kind"] for o in bahrain["overtakes"]} <= {"ON_TRACK", "PIT", "RETIREMENT"}


def test_strategy_calls_for_every_running_car_after_every_lap(bahrain: dict[str, Any]) -> None:
    """Lap 1 to 56 (no call after the last lap): one call per car still running at the end of the lap."""
    per_lap = {int(k): v for k, v in bahrain["strategy"]["calls_per_lap"].items()}
    assert sorted(per_lap) == list(range(1, 57))
    cars_on_lap = {int(lap): len(order) for lap, order in bahrain["laps"].items()}
    for lap, n in per_lap.items():
        # every car that completed the lap, plus any lapped car still running behind
        assert cars_on_lap[lap] <= n <= 20, (lap, n, cars_on_lap[lap])
    assert all(m.startswith("montecarlo") for m in bahrain["strategy"]["models"])
    assert bahrain["strategy"]["actions"].get("BOX_THIS_LAP", 0) > 0

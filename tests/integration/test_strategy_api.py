"""The strategy API against real Redis holding a race's real dataflow output (calls and stints
included), with the shipped models and the Numba simulator, read over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from dataflows.connectors.redis_sink import RedisWriter
from infra.bench.harness import serve_in_thread
from schemas.model import Recommendation
from schemas.redis_layout import RACES_KEY, race_keys_pattern
from schemas.settings import Settings
from serving.app import ServingOptions, create_app
from serving.replay import Output, play, race_outputs, write_session

pytestmark = pytest.mark.integration

LAPS = 10
#: simulations and strategy search need the operator role (RACEWIRE_API_KEY is an admin key)
KEY = "strategy-api-test-key-0123456789"
OPERATOR = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def recorded() -> tuple[Any, list[Output]]:
    return race_outputs("strat-api", seed=11, laps=LAPS, strategy=True)


@pytest.fixture(scope="module")
def api(redis_url: str) -> Iterator[str]:
    app = create_app(Settings(redis_url=redis_url, api_key=KEY),  # type: ignore[arg-type]
                     ServingOptions(rate_limit_per_s=1000, rate_limit_burst=1000))
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture
def finished_race(recorded: tuple[Any, list[Output]], redis_url: str, redis_client: redis.Redis) -> Iterator[str]:
    """The whole race, finished, in Redis (its id is the recorded one: calls carry it)."""
    session, outputs = recorded
    writer = RedisWriter(redis_url)
    write_session(writer, session)
    list(play(writer, outputs))
    yield session.race_id
    for key in redis_client.scan_iter(race_keys_pattern(session.race_id)):
        redis_client.delete(key)
    redis_client.hdel(RACES_KEY, session.race_id)


@pytest.fixture
def live_race(recorded: tuple[Any, list[Output]], redis_url: str, redis_client: redis.Redis) -> Iterator[str]:
    """The same race written up to half distance: still running."""
    session, outputs = recorded
    half = next(o.ts_ms for o in outputs if isinstance(o.item, Recommendation) and o.item.lap == LAPS // 2)
    writer = RedisWriter(redis_url)
    write_session(writer, session)
    list(play(writer, [o for o in outputs if o.ts_ms <= half]))
    yield session.race_id
    for key in redis_client.scan_iter(race_keys_pattern(session.race_id)):
        redis_client.delete(key)
    redis_client.hdel(RACES_KEY, session.race_id)


def _situation(lap: int = 20, total: int = 57, cars: int = 6) -> dict[str, Any]:
    compounds = ["MEDIUM", "SOFT", "HARD"]
    return {"circuit": "Bahrain Grand Prix", "lap": lap, "total_laps": total, "cars": [
        {"number": n, "code": f"C{n:02d}", "gap_s": 2.5 * i, "compound": compounds[i % 3], "tyre_age": 8 + i,
         "recent_laps_s": [95.0 + 0.1 * i, 95.1 + 0.1 * i, 95.2 + 0.1 * i]} for i, n in enumerate(range(1, cars + 1))]}


def test_live_calls_and_stints_of_a_race(api: str, live_race: str) -> None:
    r = httpx.get(f"{api}/api/races/{live_race}/strategy")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["lap"] == LAPS // 2 and body["model"].startswith("montecarlo")
    latest = body["calls"]
    assert all(c["lap"] == body["lap"] for c in latest)  # a retired car's last call is not among them
    assert all(c["lap"] < body["lap"] for c in body["earlier"])
    assert len(latest) >= 17 and len(latest) + len(body["earlier"]) == 20 and all(c["explanation"] for c in latest)
    assert len(body["stints"]) == 20
    stint = body["stints"][str(latest[0]["driver_number"])][0]
    assert stint["stint"] == 1 and stint["start_lap"] == 1 and stint["laps_used"] > 0
    assert httpx.get(f"{api}/api/races/no-such-race/strategy").status_code == 404


def test_simulate_a_live_race_and_refuse_a_finished_one(api: str, live_race: str) -> None:
    request = {"race_id": live_race, "sims": 500, "seed": 3}
    r = httpx.post(f"{api}/api/simulations/race", json=request, headers=OPERATOR, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["lap"] >= LAPS // 2 and body["total_laps"] == LAPS and len(body["cars"]) == 20
    for car in body["cars"]:
        assert abs(sum(car["position_probs"]) - 1.0) < 1e-3
    assert abs(sum(c["p_win"] for c in body["cars"]) - 1.0) < 1e-3
    again = httpx.post(f"{api}/api/simulations/race", json=request, headers=OPERATOR, timeout=60)
    assert again.json()["cars"] == body["cars"]  # same seed, same answer


def test_a_finished_race_has_nothing_to_simulate(api: str, finished_race: str) -> None:
    r = httpx.post(f"{api}/api/simulations/race", json={"race_id": finished_race}, headers=OPERATOR, timeout=60)
    assert r.status_code == 409 and "over" in r.json()["detail"]


def test_optimal_and_compare_for_a_posted_situation(api: str) -> None:
    situation = _situation()
    r = httpx.post(f"{api}/api/strategies/optimal", json={"situation": situation, "driver": 3, "sims": 400},
                   headers=OPERATOR, timeout=60)
    assert r.status_code == 200, r.text
    best = r.json()["strategies"]
    assert best and [s["expected_position"] for s in best[:1]]
    assert best[0]["delta_to_best_s"] == 0.0
    assert all(20 < stop[0] < 57 for s in best for stop in s["stops"])
    one_stop = {"stops": [{"lap": 30, "compound": "HARD"}]}
    silly = {"stops": [{"lap": lap, "compound": "SOFT"} for lap in (21, 22, 23)]}
    r = httpx.post(f"{api}/api/strategies/compare",
                   json={"situation": situation, "driver": 3, "sims": 400, "strategies": [silly, one_stop]},
                   headers=OPERATOR, timeout=60)
    assert r.status_code == 200, r.text
    ranked = r.json()["strategies"]
    assert ranked[0]["strategy"].startswith("box L30")  # three stops in three laps loses
    assert ranked[1]["expected_position"] > ranked[0]["expected_position"]


@pytest.mark.parametrize(("path", "body", "needle"), [
    ("/api/strategies/optimal", {"situation": _situation(), "driver": 99}, "car 99"),
    ("/api/strategies/compare", {"situation": _situation(), "driver": 1,
                                 "strategies": [{"stops": [{"lap": 10, "compound": "HARD"}]}]}, "in-lap 10"),
    ("/api/strategies/optimal", {"driver": 1}, "exactly one of race_id"),
    ("/api/simulations/race", {"situation": _situation(lap=57)}, "nothing left"),
    ("/api/simulations/race", {"situation": _situation(), "sims": 10**6}, "sims"),
    ("/api/predictions/lap-time", {"lap": 5, "total_laps": 57, "compound": "PURPLE", "tyre_age": 3}, "compound"),
    ("/api/predictions/lap-time", {"lap": 5, "total_laps": 57, "compound": "soft", "tyre_age": 3,
                                   "stint_lap": 4}, "stint_lap"),
    ("/api/predictions/degradation", {"compound": "HARD", "tyre_ages": [-1]}, "tyre ages"),
])
def test_bad_input_gets_a_precise_422(api: str, path: str, body: dict[str, Any], needle: str) -> None:
    r = httpx.post(f"{api}{path}", json=body, headers=OPERATOR, timeout=60)
    assert r.status_code == 422, r.text
    assert needle in r.text


def test_predictions(api: str, live_race: str) -> None:
    r = httpx.post(f"{api}/api/predictions/lap-time", json={
        "circuit": "Bahrain Grand Prix", "lap": 20, "total_laps": 57, "compound": "medium", "tyre_age": 12,
        "stint_lap": 12, "recent_laps_s": [96.1, 96.0, 96.2], "field_pace_s": 96.5})
    assert r.status_code == 200, r.text
    lap = r.json()
    assert 94.0 < lap["lap_time_s"] < 98.5 and lap["model"].startswith("lap-time lightgbm") and not lap["fallback"]
    r = httpx.post(f"{api}/api/predictions/degradation", json={"circuit": "Bahrain", "compound": "SOFT",
                                                                "tyre_ages": [1, 10, 20]})
    assert r.status_code == 200, r.text
    deg = r.json()
    assert deg["circuit"] == "bahrain" and [p["tyre_age"] for p in deg["curve"]] == [1, 10, 20]
    assert deg["curve"][0]["delta_s"] <= deg["curve"][1]["delta_s"] <= deg["curve"][2]["delta_s"]
    r = httpx.get(f"{api}/api/predictions/safety-car", params={"race": live_race, "lap": 1})
    assert r.status_code == 200, r.text
    sc = r.json()
    assert 0 < sc["sc"] < 1 and sc["sc_rest_of_race"] >= sc["sc"] and sc["total_laps"] == LAPS
    beyond = httpx.get(f"{api}/api/predictions/safety-car", params={"race": live_race, "lap": LAPS + 1})
    assert beyond.status_code == 422
    assert httpx.get(f"{api}/api/predictions/safety-car", params={"race": "nope"}).status_code == 404

"""History API over HTTP: laps, standings at lap N, a driver's laps, stints and the race list,
read from PostgreSQL as the PgWriter stored them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from dataflows.outputs import LapChart
from dataflows.race.driver import DriverUpdate
from infra.bench.harness import serve_in_thread
from schemas.model import Stint
from schemas.settings import Settings
from serving.app import ServingOptions, create_app
from strategy.representative import is_representative

FAST = ServingOptions(rate_limit_per_s=0, sse_ping_s=1, sse_block_ms=500, sse_linger_s=0.5)


@pytest.fixture(scope="module")
def http(stored: tuple[str, list[Any]], redis_url: str) -> Iterator[httpx.Client]:
    settings = Settings(redis_url=redis_url, database_url=stored[0], api_key="test-key-123")  # type: ignore[arg-type]
    with serve_in_thread(create_app(settings, FAST)) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def test_laps_filtered_and_paginated(http: httpx.Client, stored: tuple[str, list[Any]]) -> None:
    body = http.get("/api/races/r/laps").json()
    assert len(body["items"]) == 11 and body["next"] is None
    charts = {o.lap: o.order for o in stored[1] if isinstance(o, LapChart)}
    for lap, order in charts.items():
        rows = sorted((x for x in body["items"] if x["lap"] == lap), key=lambda x: x["position"])
        assert [x["driver_number"] for x in rows] == order

    pages, cursor = [], None
    while True:
        page = http.get("/api/races/r/laps", params={"limit": 4, **({"cursor": cursor} if cursor else {})}).json()
        pages.append(page["items"])
        cursor = page["next"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [4, 4, 3]
    assert [x for p in pages for x in p] == body["items"]

    mine = http.get("/api/races/r/laps", params={"driver": 4, "from_lap": 2, "to_lap": 3}).json()["items"]
    assert [(x["lap"], x["pit_out"], x["compound"], x["gap_ms"]) for x in mine] == [(2, True, "HARD", 25_000)]


def test_standings_at_lap_n(http: httpx.Client) -> None:
    lap2 = http.get("/api/races/r/standings", params={"lap": 2}).json()
    assert lap2["lap"] == 2 and [r["driver_number"] for r in lap2["rows"]][:3] == [1, 3, 2]
    latest = http.get("/api/races/r/standings").json()
    assert latest["lap"] == 3 and [r["driver_number"] for r in latest["rows"]] == [1, 3, 2, 4]
    missing = http.get("/api/races/r/standings", params={"lap": 9})
    assert missing.status_code == 404 and "lap 9" in missing.json()["detail"]


def test_driver_laps_stints_and_race_list(http: httpx.Client) -> None:
    laps = http.get("/api/drivers/3/laps", params={"race": "r"}).json()
    assert [x["lap"] for x in laps["items"]] == [1, 2, 3] and laps["next_offset"] is None
    assert http.get("/api/drivers/3/laps", params={"race": "r", "limit": 2}).json()["next_offset"] == 2

    stints = http.get("/api/races/r/stints").json()["stints"]
    car4 = [(s["stint"], s["compound"], s["start_lap"], s["end_lap"]) for s in stints if s["driver_number"] == 4]
    assert car4 == [(1, "SOFT", 1, 1), (2, "HARD", 2, 2)]

    races = http.get("/api/history/races").json()["races"]
    assert [(r["race_id"], r["status"], r["winner"], r["winner_code"]) for r in races] == [("r", "finished", 1, "AAA")]


def test_stints_are_the_flows_own(http: httpx.Client, stored: tuple[str, list[Any]]) -> None:
    """The history API serves the stints the race flow computed (latest emission of each), not a
    recomputation of its own: same pace, same representative laps, same degradation."""
    latest: dict[tuple[int, int], Stint] = {}
    for o in stored[1]:
        if isinstance(o, Stint):
            latest[(o.driver_number, o.stint)] = o
    served = http.get("/api/races/r/stints").json()["stints"]
    assert served == [latest[k].to_dict() for k in sorted(latest)]
    assert any(s["median_pace_ms"] is not None for s in served)


def test_laps_say_which_are_representative_by_the_one_rule(http: httpx.Client, stored: tuple[str, list[Any]]) -> None:
    laps = {(u.lap.driver_number, u.lap.lap): u.lap for u in stored[1] if isinstance(u, DriverUpdate)}
    body = http.get("/api/races/r/laps").json()["items"]
    got = {(x["driver_number"], x["lap"]): x["representative"] for x in body}
    want = {k: is_representative(x.lap, x.lap_time_ms, x.track_status, x.pit_in, x.pit_out) for k, x in laps.items()}
    assert got == want and any(want.values()) and not all(want.values())


def test_without_a_database_history_says_what_to_set(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, database_url=None, api_key="test-key-123")  # type: ignore[arg-type]
    with serve_in_thread(create_app(settings, FAST)) as url:
        r = httpx.get(f"{url}/api/races/r/laps", timeout=10)
    assert r.status_code == 503 and "RACEWIRE_DATABASE_URL" in r.json()["detail"]

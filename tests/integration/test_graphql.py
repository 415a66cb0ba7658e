"""GraphQL at /graphql over real PostgreSQL: the races, drivers, laps (paginated), events and
standings that PgWriter stored."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from dataflows.outputs import LapChart
from infra.bench.harness import serve_in_thread
from schemas.model import RaceEvent
from schemas.settings import Settings
from serving.app import create_app

# the same server options as the REST history tests; the `stored` race is in conftest.py
from tests.integration.test_history_api import FAST


@pytest.fixture(scope="module")
def gql(stored: tuple[str, list[Any]], redis_url: str) -> Iterator[Any]:
    settings = Settings(redis_url=redis_url, database_url=stored[0], api_key="test-key-123")  # type: ignore[arg-type]
    with serve_in_thread(create_app(settings, FAST)) as url, httpx.Client(base_url=url, timeout=10) as client:

        def query(q: str, **variables: Any) -> dict[str, Any]:
            r = client.post("/graphql", json={"query": q, "variables": variables})
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            assert "errors" not in body, body["errors"]
            return body["data"]

        query.client = client  # type: ignore[attr-defined]
        yield query


LAPS = """query($race: ID!, $driver: Int, $from: Int!, $to: Int!, $first: Int!, $after: String) {
  laps(race: $race, driver: $driver, fromLap: $from, toLap: $to, first: $first, after: $after) {
    edges { cursor node { driverNumber lap position gapMs compound pitOut lapTimeMs crossingMs } }
    pageInfo { hasNextPage endCursor } } }"""


def test_laps_as_stored_and_paginated(gql: Any, stored: tuple[str, list[Any]]) -> None:
    page = gql(LAPS, race="r", **{"from": 0, "to": 99, "first": 100})["laps"]
    laps = [e["node"] for e in page["edges"]]
    assert len(laps) == 11 and page["pageInfo"] == {"hasNextPage": False, "endCursor": page["edges"][-1]["cursor"]}
    charts = {o.lap: o.order for o in stored[1] if isinstance(o, LapChart)}
    for lap, order in charts.items():
        rows = sorted((x for x in laps if x["lap"] == lap), key=lambda x: x["position"])
        assert [x["driverNumber"] for x in rows] == order

    pages, after = [], None
    while True:
        p = gql(LAPS, race="r", **{"from": 0, "to": 99, "first": 4, "after": after})["laps"]
        pages.append([e["node"] for e in p["edges"]])
        after = p["pageInfo"]["endCursor"]
        if not p["pageInfo"]["hasNextPage"]:
            break
    assert [len(p) for p in pages] == [4, 4, 3] and [x for p in pages for x in p] == laps

    mine = [e["node"] for e in gql(LAPS, race="r", driver=4, **{"from": 2, "to": 3, "first": 10})["laps"]["edges"]]
    assert [(x["lap"], x["pitOut"], x["compound"], x["gapMs"]) for x in mine] == [(2, True, "HARD", 25_000)]


def test_standings_at_lap_n(gql: Any) -> None:
    q = """query($lap: Int) {
             standings(race: "r", lap: $lap) { lap trackStatus rows { position driverNumber code } } }"""
    lap2 = gql(q, lap=2)["standings"]
    assert lap2["lap"] == 2 and [r["driverNumber"] for r in lap2["rows"]][:3] == [1, 3, 2]
    latest = gql(q)["standings"]
    assert latest["lap"] == 3 and [r["driverNumber"] for r in latest["rows"]] == [1, 3, 2, 4]
    assert [r["position"] for r in latest["rows"]] == [1, 2, 3, 4]
    assert gql(q, lap=9)["standings"] is None


def test_races_drivers_and_events(gql: Any, stored: tuple[str, list[Any]]) -> None:
    data = gql("""{ races { id status winner winnerCode totalLaps drivers { number code } }
                   race(id: "r") { id name } missing: race(id: "nope") { id }
                   drivers(race: "r") { number code team gridPosition } }""")
    races = [(r["id"], r["status"], r["winner"], r["winnerCode"]) for r in data["races"]]
    assert races == [("r", "finished", 1, "AAA")]
    assert data["race"]["id"] == "r" and data["missing"] is None
    assert sorted(d["number"] for d in data["drivers"]) == [1, 2, 3, 4]
    assert {d["number"] for d in data["races"][0]["drivers"]} == {1, 2, 3, 4}

    truth = [o for o in stored[1] if isinstance(o, RaceEvent)]
    events = gql('{ events(race: "r") { eventId type lap driverNumber payload } }')["events"]
    assert sorted(e["eventId"] for e in events) == sorted(e.event_id for e in truth)
    kind = str(truth[0].type)
    typed = gql("query($t: String) { events(race: \"r\", type: $t) { type } }", t=kind)["events"]
    assert typed and {e["type"] for e in typed} == {kind}
    assert len(typed) == sum(1 for e in truth if str(e.type) == kind)


def test_bad_input_is_a_graphql_error(gql: Any) -> None:
    q = '{ laps(race: "r", after: "garbage") { pageInfo { hasNextPage } } }'
    r = gql.client.post("/graphql", json={"query": q})
    assert "invalid cursor" in r.json()["errors"][0]["message"]
    r = gql.client.post("/graphql", json={"query": '{ laps(race: "r", first: 0) { pageInfo { hasNextPage } } }'})
    assert "first must be" in r.json()["errors"][0]["message"]

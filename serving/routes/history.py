"""Race history from PostgreSQL (the store :mod:`dataflows.connectors.pg_sink` writes).

These endpoints read only PostgreSQL (``RACEWIRE_DATABASE_URL``), so they answer whether or not
Redis is up; they are 503 when no database is configured. Lists that can be long are paginated
with an opaque ``cursor`` (the previous page's ``next``; ``null`` on the last page).

The connections come from :class:`HistoryDb`, a small async pool made on first use and kept on
``app.state.history_db``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from psycopg.rows import dict_row

from serving.deps import PG_INT_MAX, RACE_ID_PATTERN, RateLimited
from strategy import representative

router = APIRouter(tags=["history"], dependencies=[RateLimited])

HistRaceId = Annotated[str, Path(pattern=RACE_ID_PATTERN, description="race id")]
Limit = Annotated[int, Query(ge=1, le=5000, description="page size")]
Cursor = Annotated[str | None, Query(pattern=r"^\d{1,6}\.\d{1,6}$", description="`next` of the previous page")]

# ``representative``: the lap shows the car's pace (:mod:`strategy.representative`, the rule the
# flow's stints and strategy calls use), as a condition generated from that module
_LAP_FIELDS = f"""race_id, driver_number, lap, lap_time_ms, sector1_ms, sector2_ms, sector3_ms, crossing_ms,
    position, gap_ms, compound, tyre_age, pit_in, pit_out, pit_lane_ms, track_status, deleted, personal_best, stint,
    {representative.sql_condition()} AS representative"""


class HistoryDb:
    """A few async connections (autocommit, read-only work), handed out one request at a time."""

    def __init__(self, conninfo: str, size: int = 8) -> None:
        self.conninfo, self.size = conninfo, size
        self._idle: asyncio.Queue[psycopg.AsyncConnection[dict[str, Any]]] = asyncio.Queue()
        self._opened = 0
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
        conn = await self._take()
        try:
            yield conn
        except psycopg.OperationalError:
            await conn.close()
            self._opened -= 1
            raise
        else:
            self._idle.put_nowait(conn)

    async def _take(self) -> psycopg.AsyncConnection[dict[str, Any]]:
        while not self._idle.empty():
            conn = self._idle.get_nowait()
            if not conn.closed:
                return conn
            self._opened -= 1
        async with self._lock:
            if self._opened < self.size:
                conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True, row_factory=dict_row)
                self._opened += 1
                return conn
        return await self._idle.get()

    async def fetch(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            async with self.connection() as conn:
                cur = await conn.execute(sql, params)
                return await cur.fetchall()
        except psycopg.OperationalError as e:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                                detail=f"the history database is unreachable ({e.__class__.__name__}); "
                                       "check RACEWIRE_DATABASE_URL and that PostgreSQL runs") from e

    async def close(self) -> None:
        while not self._idle.empty():
            await self._idle.get_nowait().close()
        self._opened = 0


def get_history_db(request: Request) -> HistoryDb:
    db: HistoryDb | None = getattr(request.app.state, "history_db", None)
    if db is None:
        url = request.app.state.settings.database_url
        if not url:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                                detail="race history needs PostgreSQL: set RACEWIRE_DATABASE_URL")
        db = request.app.state.history_db = HistoryDb(url)
    return db


def _page(rows: list[dict[str, Any]], limit: int, key: tuple[str, str]) -> dict[str, Any]:
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = f"{rows[-1][key[0]]}.{rows[-1][key[1]]}" if more else None
    return {"items": rows, "next": nxt}


def _cursor(cursor: str | None) -> tuple[int, int]:
    if cursor is None:
        return -1, -1
    a, b = cursor.split(".")
    return int(a), int(b)


@router.get("/history/races", summary="Stored races with status and winner, newest first")
async def races(request: Request, limit: Limit = 100,
                offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> dict[str, Any]:
    rows = await get_history_db(request).fetch(
        """SELECT r.race_id, r.name, r.circuit, r.start_time, r.total_laps, r.lap, r.status, r.track_status,
                  r.winner, d.code AS winner_code, d.name AS winner_name
           FROM races r LEFT JOIN drivers d ON d.race_id = r.race_id AND d.driver_number = r.winner
           ORDER BY r.start_time DESC NULLS LAST, r.race_id LIMIT %(limit)s OFFSET %(offset)s""",
        {"limit": limit + 1, "offset": offset})
    more = len(rows) > limit
    return {"races": rows[:limit], "next_offset": offset + limit if more else None}


@router.get("/races/{race_id}/laps", summary="Every stored lap of a race, by lap then driver (paginated)")
async def race_laps(request: Request, race_id: HistRaceId,
                    driver: Annotated[int | None, Query(ge=0, le=999)] = None,
                    from_lap: Annotated[int, Query(ge=0, le=PG_INT_MAX)] = 0,
                    to_lap: Annotated[int, Query(ge=0, le=PG_INT_MAX)] = 1_000_000,
                    limit: Limit = 1000, cursor: Cursor = None) -> dict[str, Any]:
    after_lap, after_driver = _cursor(cursor)
    rows = await get_history_db(request).fetch(
        f"""SELECT {_LAP_FIELDS} FROM laps
            WHERE race_id = %(race)s AND lap BETWEEN %(from)s AND %(to)s
              AND (%(driver)s::int IS NULL OR driver_number = %(driver)s::int)
              AND (lap, driver_number) > (%(al)s, %(ad)s)
            ORDER BY lap, driver_number LIMIT %(limit)s""",
        {"race": race_id, "from": from_lap, "to": to_lap, "driver": driver, "al": after_lap,
         "ad": after_driver, "limit": limit + 1})
    return {"race_id": race_id, **_page(rows, limit, ("lap", "driver_number"))}


@router.get("/races/{race_id}/standings", summary="The timing tower as it was at the end of lap N",
            responses={404: {"description": "no standings stored for that lap"}})
async def standings(request: Request, race_id: HistRaceId,
                    lap: Annotated[int | None, Query(ge=1, le=PG_INT_MAX,
                                                     description="default: the latest stored lap")] = None
                    ) -> dict[str, Any]:
    rows = await get_history_db(request).fetch(
        """SELECT race_id, lap, version, ts_ms, track_status, rows FROM standings
           WHERE race_id = %(race)s AND (%(lap)s::int IS NULL OR lap = %(lap)s::int)
           ORDER BY lap DESC LIMIT 1""", {"race": race_id, "lap": lap})
    if not rows:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            detail=f"no standings for race {race_id!r}" + (f" at lap {lap}" if lap else ""))
    return rows[0]


@router.get("/drivers/{number}/laps", summary="A driver's stored laps, by race then lap (paginated)")
async def driver_laps(request: Request, number: Annotated[int, Path(ge=0, le=999)],
                      race: Annotated[str | None, Query(pattern=RACE_ID_PATTERN)] = None,
                      limit: Limit = 1000,
                      offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> dict[str, Any]:
    rows = await get_history_db(request).fetch(
        f"""SELECT {_LAP_FIELDS} FROM laps
            WHERE driver_number = %(n)s AND (%(race)s::text IS NULL OR race_id = %(race)s::text)
            ORDER BY race_id, lap LIMIT %(limit)s OFFSET %(offset)s""",
        {"n": number, "race": race, "limit": limit + 1, "offset": offset})
    more = len(rows) > limit
    return {"driver_number": number, "items": rows[:limit], "next_offset": offset + limit if more else None}


@router.get("/races/{race_id}/stints",
            summary="Each driver's stints (consecutive laps on one set of tyres), as the race flow computed them")
async def stints(request: Request, race_id: HistRaceId) -> dict[str, Any]:
    """The flow's own stint features (``f1.driver.stints``, latest of each stint): compound, laps,
    tyre age, median pace and fuel-corrected degradation over the stint's representative laps.
    Nothing is recomputed here, so this answers what the live stints said."""
    rows = await get_history_db(request).fetch(
        "SELECT payload FROM stints WHERE race_id = %(race)s ORDER BY driver_number, stint", {"race": race_id})
    return {"race_id": race_id, "stints": [r["payload"] for r in rows]}

"""Live reads from PostgreSQL when Redis is unreachable (issue 6, "Without Redis"), or up but
without the race (issue 11: Redis lost its data).

:class:`~serving.store.RaceStore` calls :class:`PgFallback` when a Redis read fails with a connection
error or a timeout; for about a second after that it does not try Redis again (then one request
probes it, and answers come from Redis again as soon as it replies). It also calls it when Redis
answers but holds nothing of a race that PostgreSQL has (a flush, a restart without persistence:
the dataflow writes every live race back at once; a finished race stays in PostgreSQL only until
``racewire rebuild-cache`` restores it), and the race list adds the races only PostgreSQL knows.
The race routes say where an answer came from in the ``X-Racewire-Source`` header (``redis`` or
``postgresql``).

What PostgreSQL holds is the history the :class:`~dataflows.connectors.pg_sink.PgWriter` keeps, so
the documents built here are the Redis ones as far as that history allows: the state document is the
latest stored standings (the tower at the end of the last completed lap) with the race's status, the
fastest lap and the last-lap hero from the events table, and no car positions for the map; events
carry ids ``<ts_ms>-<n>`` (n orders events sharing a timestamp) rather than the Redis stream's ids;
commentary and the track outline are not stored.

The same documents feed ``racewire rebuild-cache`` (:mod:`infra.rebuild_cache`), which writes them
back to Redis in the layout of :mod:`schemas.redis_layout` (through the dataflow's writer).
"""

from __future__ import annotations

from typing import Any

import orjson
import psycopg
from fastapi import HTTPException, Request, status

from schemas.redis_layout import summary_document
from serving.store import RaceNotFound, StreamEntry, StreamId

SOURCE_HEADER = "X-Racewire-Source"

RACE_SQL = """SELECT race_id, name, circuit, total_laps, track_length_m, start_time, pit_loss_ms, source, grid,
                     status, lap, track_status, winner, board_version
              FROM races WHERE race_id = %(race)s"""
RACES_SQL = """SELECT r.race_id, r.name, r.lap, r.total_laps, r.status, r.track_status, r.board_version,
                      (SELECT s.rows -> 0 ->> 'code' FROM standings s WHERE s.race_id = r.race_id
                       ORDER BY s.lap DESC LIMIT 1) AS leader
               FROM races r ORDER BY r.race_id"""
STANDING_SQL = """SELECT lap, version, ts_ms, track_status, rows FROM standings
                  WHERE race_id = %(race)s ORDER BY lap DESC LIMIT 1"""
# the newest fastest lap and last-lap hero (a final hero beats a provisional one)
HIGHLIGHTS_SQL = """SELECT DISTINCT ON (type) type, payload FROM events
                    WHERE race_id = %(race)s AND type IN ('FASTEST_LAP', 'LAST_LAP_HERO')
                    ORDER BY type, (payload ->> 'provisional')::boolean IS NOT TRUE DESC, ts_ms DESC, event_id DESC"""
DRIVERS_SQL = """SELECT driver_number AS number, code, name, team, team_colour FROM drivers
                 WHERE race_id = %(race)s ORDER BY driver_number"""
_NUMBERED_EVENTS = """SELECT ts_ms, (row_number() OVER (PARTITION BY ts_ms ORDER BY event_id) - 1) AS seq,
                             event_id, type, payload
                      FROM events WHERE race_id = %(race)s"""
EVENTS_AFTER_SQL = f"""SELECT * FROM ({_NUMBERED_EVENTS}) e WHERE (ts_ms, seq) > (%(ms)s, %(seq)s)
                       ORDER BY ts_ms, seq LIMIT %(limit)s"""
LATEST_EVENTS_SQL = f"""SELECT * FROM ({_NUMBERED_EVENTS}) e ORDER BY ts_ms DESC, seq DESC LIMIT %(limit)s"""
ALL_EVENTS_SQL = f"""SELECT * FROM ({_NUMBERED_EVENTS}) e ORDER BY ts_ms, seq"""


def state_document(race: dict[str, Any], standing: dict[str, Any] | None,
                   highlights: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ``race:{id}:state`` document (:func:`~schemas.redis_layout.leaderboard_document`) rebuilt
    from PostgreSQL rows (None without standings)."""
    if standing is None:
        return None
    by_type = {h["type"]: h["payload"] for h in highlights}
    fast, hero = by_type.get("FASTEST_LAP"), by_type.get("LAST_LAP_HERO")
    status_ = race.get("status") or "live"
    return {
        "race_id": race["race_id"], "version": int(standing["version"]), "ts_ms": int(standing["ts_ms"]),
        "lap": max(int(race.get("lap") or 0), int(standing["lap"])),
        "total_laps": int(race.get("total_laps") or 0), "track_status": standing["track_status"],
        "finished": status_ in ("chequered", "finished"), "final": status_ == "finished",
        "rows": standing["rows"],
        "fastest_lap": None if fast is None else {
            "driver_number": fast["driver_number"], "code": fast.get("code") or "", "lap": fast["lap"],
            "lap_time_ms": fast.get("lap_time_ms") or 0, "crossing_ms": fast["ts_ms"]},
        "hero": None if hero is None else {
            "driver_number": hero["driver_number"], "code": hero.get("code") or "", "lap": hero["lap"],
            "lap_time_ms": hero.get("lap_time_ms") or 0, "positions_gained": hero.get("positions_gained") or 0,
            "final": not hero.get("provisional")},
        "reason": "timing",
    }


def race_summary_document(race: dict[str, Any], leader: str | None, version: int | None = None) -> dict[str, Any]:
    """The ``races`` hash entry (:func:`~schemas.redis_layout.race_summary`) of a ``races`` row."""
    return summary_document(race["race_id"], race.get("name"), race.get("lap"), race.get("total_laps"),
                            race.get("status"), race.get("track_status"), leader,
                            race.get("board_version") if version is None else version)


def session_document(race: dict[str, Any], drivers: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ``race:{id}:session`` document (:func:`~schemas.redis_layout.session_document`), when the
    race's session was stored (None otherwise)."""
    if race.get("name") is None and not drivers:
        return None
    start = race.get("start_time")
    return {"race_id": race["race_id"], "name": race.get("name"), "circuit": race.get("circuit"),
            "total_laps": race.get("total_laps"), "track_length_m": race.get("track_length_m"),
            "start_time": None if start is None else start.isoformat(), "pit_loss_ms": race.get("pit_loss_ms"),
            "source": race.get("source"), "grid": race.get("grid") or [], "drivers": drivers, "track_outline": []}


def _entry(row: dict[str, Any]) -> StreamEntry:
    return StreamEntry(StreamId(int(row["ts_ms"]), int(row["seq"])), row["type"], orjson.dumps(row["payload"]))


class PgFallback:
    """The reads of :class:`~serving.store.RaceStore`, answered from the history database. A database
    failure is a 503 naming both stores (Redis has already failed when this is asked)."""

    def __init__(self, request_app: Any) -> None:
        self.app = request_app
        self.redis_error: BaseException | None = None

    @property
    def configured(self) -> bool:
        """True when there is a history store to read (``RACEWIRE_DATABASE_URL``)."""
        return bool(self.app.state.settings.database_url)

    async def _fetch(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        from serving.routes.history import HistoryDb  # the app's history pool, shared with /api/history

        redis_says = f"Redis is unavailable ({self.redis_error})"
        db: HistoryDb | None = getattr(self.app.state, "history_db", None)
        if db is None:
            url = self.app.state.settings.database_url
            if not url:
                raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": "2"},
                                    detail=f"{redis_says} and there is no PostgreSQL fallback "
                                           "(RACEWIRE_DATABASE_URL is not set); retry shortly")
            db = self.app.state.history_db = HistoryDb(url)
        try:
            async with db.connection() as conn:
                cur = await conn.execute(sql, params)
                return await cur.fetchall()
        except (psycopg.OperationalError, psycopg.errors.UndefinedTable) as e:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": "2"},
                                detail=f"{redis_says} and PostgreSQL is unavailable too "
                                       f"({e.__class__.__name__}); retry shortly") from e

    async def _fetch_or_none(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]] | None:
        """:meth:`_fetch` for reads made while Redis is up: None instead of a 503 when PostgreSQL fails."""
        try:
            return await self._fetch(sql, params)
        except HTTPException:
            return None

    async def has_race(self, race_id: str) -> bool:
        """Whether the history store has the race (False when it cannot answer)."""
        rows = await self._fetch_or_none("SELECT 1 AS one FROM races WHERE race_id = %(race)s", {"race": race_id})
        return bool(rows)

    async def known_race_ids(self) -> list[str]:
        """Every stored race id ([] when the history store cannot answer)."""
        rows = await self._fetch_or_none("SELECT race_id FROM races ORDER BY race_id", {})
        return [r["race_id"] for r in rows or []]

    async def known_races(self) -> list[dict[str, Any]]:
        """Every stored race's summary ([] when the history store cannot answer)."""
        return [race_summary_document(r, r["leader"]) for r in await self._fetch_or_none(RACES_SQL, {}) or []]

    async def race_ids(self) -> list[str]:
        return [r["race_id"] for r in await self._fetch("SELECT race_id FROM races ORDER BY race_id", {})]

    async def races(self) -> list[dict[str, Any]]:
        return [race_summary_document(r, r["leader"]) for r in await self._fetch(RACES_SQL, {})]

    async def require(self, race_id: str) -> None:
        if not await self._fetch("SELECT 1 AS one FROM races WHERE race_id = %(race)s", {"race": race_id}):
            raise RaceNotFound(race_id, await self.race_ids())

    async def state_raw(self, race_id: str) -> bytes | None:
        races = await self._fetch(RACE_SQL, {"race": race_id})
        if not races:
            return None
        standings = await self._fetch(STANDING_SQL, {"race": race_id})
        highlights = await self._fetch(HIGHLIGHTS_SQL, {"race": race_id})
        doc = state_document(races[0], standings[0] if standings else None, highlights)
        return None if doc is None else orjson.dumps(doc)

    async def session(self, race_id: str) -> dict[str, Any] | None:
        races = await self._fetch(RACE_SQL, {"race": race_id})
        if not races:
            return None
        return session_document(races[0], await self._fetch(DRIVERS_SQL, {"race": race_id}))

    async def events_after(self, race_id: str, after: StreamId, limit: int) -> list[StreamEntry]:
        rows = await self._fetch(EVENTS_AFTER_SQL, {"race": race_id, "ms": after.ms, "seq": after.seq,
                                                    "limit": limit})
        return [_entry(r) for r in rows]

    async def latest_events(self, race_id: str, limit: int) -> list[StreamEntry]:
        rows = await self._fetch(LATEST_EVENTS_SQL, {"race": race_id, "limit": limit})
        return [_entry(r) for r in reversed(rows)]


def use_fallback(request: Request) -> None:
    """Router dependency: give the app's store its PostgreSQL fallback (once). Without a database
    the fallback answers 503 naming both stores."""
    store = request.app.state.store
    if getattr(store, "fallback", None) is None:
        store.fallback = PgFallback(request.app)

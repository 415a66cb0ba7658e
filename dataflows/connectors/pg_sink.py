"""PostgreSQL edge: the race's history, written idempotently (schema: ``infra/migrations``).

What each race-flow output becomes (every write is an upsert on the table's primary key, so
replays after a restart, duplicate deliveries and writing the same batch twice leave every row
exactly once):

- :class:`SessionDoc` (or a bare :class:`Session`) → ``races`` (metadata) and ``drivers``.
- :class:`DriverUpdate` (the per-driver step's output) or a bare :class:`Lap` → ``laps``.
- :class:`LapChart` (the race state's order at the line at the end of a lap) → ``lap_charts``; the
  position at the line of each lap is its place in the chart and the gap is its crossing time
  behind the chart's first car. Nothing is ranked again here: the order is the race state's. A
  lap and its chart may arrive in either order (and from several workers): whenever either is
  written, the laps of that lap number take their place from the stored chart, under a per-race
  transaction lock, so concurrent writers cannot leave them stale.
- :class:`RaceEvent` → ``events`` (``payload`` = the whole event as JSON).
- :class:`Stint` → ``stints``.
- :class:`BoardUpdate` / :class:`Leaderboard` → ``races`` status, lap and winner (newer version
  wins).
- :class:`~dataflows.race.towers.Tower` (the race state emits one at the end of every lap, whatever
  the batching) → ``standings``, one row per lap; a later emission of a lap (higher version) wins.

Anything else (commentary, rejections) is ignored, so the sink can take the same
stream as the Redis sink.

While PostgreSQL is unreachable a write is retried with backoff, holding the worker (see
:mod:`dataflows.connectors.retry`); the connection is opened again as needed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import psycopg
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from psycopg.types.json import Jsonb

from dataflows.connectors.retry import OutageRetry, RetryPolicy
from dataflows.outputs import LapChart, Tower
from dataflows.race.driver import DriverUpdate
from schemas.model import CarStatus, Lap, Leaderboard, RaceEvent, Session, Stint
from schemas.redis_layout import BoardUpdate, SessionDoc, race_summary

log = logging.getLogger("racewire.flow.postgres")

_UPSERT_RACE = """
INSERT INTO races (race_id, name, circuit, total_laps, track_length_m, start_time, pit_loss_ms,
                   source, grid)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (race_id) DO UPDATE SET
    name = EXCLUDED.name, circuit = EXCLUDED.circuit, total_laps = EXCLUDED.total_laps,
    track_length_m = EXCLUDED.track_length_m, start_time = EXCLUDED.start_time,
    pit_loss_ms = EXCLUDED.pit_loss_ms, source = EXCLUDED.source, grid = EXCLUDED.grid,
    updated_at = now()
WHERE (races.name, races.circuit, races.total_laps, races.track_length_m, races.start_time,
       races.pit_loss_ms, races.source, races.grid)
      IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.circuit, EXCLUDED.total_laps, EXCLUDED.track_length_m,
                        EXCLUDED.start_time, EXCLUDED.pit_loss_ms, EXCLUDED.source, EXCLUDED.grid)
"""

_UPSERT_DRIVER = """
INSERT INTO drivers (race_id, driver_number, code, name, team, team_colour, grid_position)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (race_id, driver_number) DO UPDATE SET
    code = EXCLUDED.code, name = EXCLUDED.name, team = EXCLUDED.team,
    team_colour = EXCLUDED.team_colour, grid_position = EXCLUDED.grid_position
WHERE (drivers.code, drivers.name, drivers.team, drivers.team_colour, drivers.grid_position)
      IS DISTINCT FROM (EXCLUDED.code, EXCLUDED.name, EXCLUDED.team, EXCLUDED.team_colour, EXCLUDED.grid_position)
"""

_LAP_COLUMNS = ("race_id", "driver_number", "lap", "event_id", "lap_time_ms", "sector1_ms", "sector2_ms",
                "sector3_ms", "crossing_ms", "compound", "tyre_age", "pit_in", "pit_out", "pit_lane_ms",
                "track_status", "deleted", "personal_best", "stint")
_UPSERT_LAP = f"""
INSERT INTO laps ({", ".join(_LAP_COLUMNS)})
VALUES ({", ".join(["%s"] * len(_LAP_COLUMNS))})
ON CONFLICT (race_id, driver_number, lap) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in _LAP_COLUMNS[3:])}
WHERE ({", ".join(f"laps.{c}" for c in _LAP_COLUMNS[3:])})
      IS DISTINCT FROM ({", ".join(f"EXCLUDED.{c}" for c in _LAP_COLUMNS[3:])})
"""

# a lap chart; a shorter one (an older emission, replayed) never replaces a longer one
_UPSERT_CHART = """
INSERT INTO lap_charts (race_id, lap, drivers) VALUES (%s, %s, %s)
ON CONFLICT (race_id, lap) DO UPDATE SET drivers = EXCLUDED.drivers
WHERE lap_charts.drivers IS DISTINCT FROM EXCLUDED.drivers
  AND cardinality(EXCLUDED.drivers) >= cardinality(lap_charts.drivers)
"""

# position at the line and gap to the first car, for the given laps of one race, from its lap charts
_PLACE_LAPS = """
UPDATE laps AS l SET position = c.position, gap_ms = l.crossing_ms - lead.crossing_ms
FROM lap_charts AS ch
CROSS JOIN LATERAL unnest(ch.drivers) WITH ORDINALITY AS c(driver_number, position)
LEFT JOIN laps AS lead ON lead.race_id = ch.race_id AND lead.lap = ch.lap AND lead.driver_number = ch.drivers[1]
WHERE ch.race_id = %(race_id)s AND ch.lap = ANY(%(laps)s)
  AND l.race_id = ch.race_id AND l.lap = ch.lap AND l.driver_number = c.driver_number
  AND (l.position IS DISTINCT FROM c.position OR l.gap_ms IS DISTINCT FROM l.crossing_ms - lead.crossing_ms)
"""

_UPSERT_EVENT = """
INSERT INTO events (race_id, event_id, type, lap, ts_ms, driver_number, other_driver_number, payload)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (race_id, event_id) DO UPDATE SET
    type = EXCLUDED.type, lap = EXCLUDED.lap, ts_ms = EXCLUDED.ts_ms,
    driver_number = EXCLUDED.driver_number, other_driver_number = EXCLUDED.other_driver_number,
    payload = EXCLUDED.payload
WHERE events.payload IS DISTINCT FROM EXCLUDED.payload
"""

_UPSERT_STINT = """
INSERT INTO stints (race_id, driver_number, stint, compound, start_lap, end_lap, length, open, payload)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (race_id, driver_number, stint) DO UPDATE SET
    compound = EXCLUDED.compound, start_lap = EXCLUDED.start_lap, end_lap = EXCLUDED.end_lap,
    length = EXCLUDED.length, open = EXCLUDED.open, payload = EXCLUDED.payload
WHERE stints.payload IS DISTINCT FROM EXCLUDED.payload
  -- only forward: a later lap, or the closed version of the same lap (replays arrive in any order)
  AND (EXCLUDED.end_lap, NOT EXCLUDED.open) >= (stints.end_lap, NOT stints.open)
"""

# a race's status from its latest snapshot; creates the row when the session is not stored yet
_UPSERT_RACE_STATUS = """
INSERT INTO races (race_id, total_laps, status, lap, track_status, winner, board_version)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (race_id) DO UPDATE SET
    status = EXCLUDED.status, lap = EXCLUDED.lap, track_status = EXCLUDED.track_status,
    winner = EXCLUDED.winner, board_version = EXCLUDED.board_version, updated_at = now()
WHERE races.board_version < EXCLUDED.board_version
"""

_UPSERT_STANDINGS = """
INSERT INTO standings (race_id, lap, version, ts_ms, track_status, rows)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (race_id, lap) DO UPDATE SET
    version = EXCLUDED.version, ts_ms = EXCLUDED.ts_ms, track_status = EXCLUDED.track_status,
    rows = EXCLUDED.rows
WHERE standings.version < EXCLUDED.version
"""

_RUNNING = (CarStatus.RUNNING, CarStatus.PIT)


#: errors that mean PostgreSQL is unreachable (a refused or broken connection, a server shutting
#: down or restarting, a deadlock or serialisation failure): the write is retried
TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError)


def standings_lap(board: Leaderboard) -> int | None:
    """The lap whose end a live ``board`` shows: the fewest laps completed by a running car
    (finished cars have completed every lap; retired ones are ignored). None before lap 1 and for
    snapshots that are not from the timing line. (The flow stores :class:`Tower` records, which do
    not depend on snapshots; tools that only have snapshots use this.)

    >>> from schemas.model import LeaderboardRow, TrackStatus
    >>> row = lambda n, laps, st: LeaderboardRow(n, n, "X", "T", "fff", laps, laps, st, n)
    >>> b = Leaderboard("r", 3, 0, 5, 50, TrackStatus.GREEN, False, False,
    ...                 [row(1, 5, CarStatus.RUNNING), row(2, 4, CarStatus.PIT), row(3, 1, CarStatus.RETIRED)])
    >>> standings_lap(b)
    4
    """
    if board.reason != "timing" or not board.rows:
        return None
    running = [r.laps for r in board.rows if r.status in _RUNNING]
    # when every car has finished or retired, the tower is final at the leader's lap
    lap = min(running) if running else max(r.laps for r in board.rows)
    return lap if lap >= 1 else None


def _board_of(item: Any) -> Leaderboard | None:
    if isinstance(item, BoardUpdate):
        return item.board
    if isinstance(item, Leaderboard):
        return item
    return None


def _lap_row(lap: Lap, update: DriverUpdate | None) -> tuple[Any, ...]:
    return (lap.race_id, lap.driver_number, lap.lap, lap.event_id, lap.lap_time_ms, lap.sector1_ms,
            lap.sector2_ms, lap.sector3_ms, lap.crossing_ms,
            update.compound if update is not None else lap.compound,
            update.tyre_age if update is not None else lap.tyre_age,
            lap.pit_in, lap.pit_out, lap.pit_lane_ms, str(lap.track_status), lap.deleted,
            update.personal_best if update is not None else None,
            update.stint if update is not None else None)


#: seconds to wait for a connection before counting PostgreSQL as unreachable
CONNECT_TIMEOUT_S = 5


class PgWriter:
    """Writes race-flow outputs to PostgreSQL, one transaction per :meth:`write` (idempotent).
    Usable outside Bytewax (tools, tests, loaders). The schema must exist: see
    :func:`infra.migrate.migrate`. While PostgreSQL is unreachable, :meth:`write` retries (see
    :class:`~dataflows.connectors.retry.OutageRetry`)."""

    def __init__(self, conninfo: str, retry: RetryPolicy | None = None) -> None:
        self.conninfo = conninfo
        self.retry = OutageRetry("postgres", TRANSIENT, retry)
        # the first connection is not retried: a wrong URL, or no server at start, fails at once
        self.conn: psycopg.Connection[Any] = self._connect()

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.conninfo, connect_timeout=CONNECT_TIMEOUT_S)

    def write(self, items: Iterable[Any]) -> None:
        sessions: dict[str, Session] = {}
        laps: dict[tuple[str, int, int], tuple[Any, ...]] = {}
        events: dict[tuple[str, str], RaceEvent] = {}
        stints: dict[tuple[str, int, int], Stint] = {}
        latest: dict[str, Leaderboard] = {}
        standings: dict[tuple[str, int], Tower] = {}
        charts: dict[tuple[str, int], list[int]] = {}
        for item in items:
            if isinstance(item, DriverUpdate):
                lap = item.lap
                laps[(lap.race_id, lap.driver_number, lap.lap)] = _lap_row(lap, item)
            elif isinstance(item, Lap):
                laps[(item.race_id, item.driver_number, item.lap)] = _lap_row(item, None)
            elif isinstance(item, RaceEvent):
                events[(item.race_id, item.event_id)] = item
            elif isinstance(item, SessionDoc):
                sessions[item.session.race_id] = item.session
            elif isinstance(item, Session):
                sessions[item.race_id] = item
            elif isinstance(item, Stint):
                key = (item.race_id, item.driver_number, item.stint)
                seen_stint = stints.get(key)
                if seen_stint is None or (item.end_lap, not item.open) >= (seen_stint.end_lap, not seen_stint.open):
                    stints[key] = item
            elif isinstance(item, LapChart):
                seen_chart = charts.get((item.race_id, item.lap))
                if seen_chart is None or len(item.order) >= len(seen_chart):
                    charts[(item.race_id, item.lap)] = list(item.order)
            elif isinstance(item, Tower):
                prev = standings.get((item.race_id, item.lap))
                if prev is None or item.version > prev.version:
                    standings[(item.race_id, item.lap)] = item
            else:
                board = _board_of(item)
                if board is None:
                    continue  # commentary, rejections: not history
                seen = latest.get(board.race_id)
                if seen is None or board.version > seen.version:
                    latest[board.race_id] = board
        if not (sessions or laps or events or stints or latest or standings or charts):
            return
        self.retry.call(lambda: self._store(sessions, laps, events, stints, latest, standings, charts))

    def _store(self, sessions: dict[str, Session], laps: dict[tuple[str, int, int], tuple[Any, ...]],
               events: dict[tuple[str, str], RaceEvent], stints: dict[tuple[str, int, int], Stint],
               latest: dict[str, Leaderboard], standings: dict[tuple[str, int], Tower],
               charts: dict[tuple[str, int], list[int]]) -> None:
        """One attempt: everything in one transaction (rolled back whole if the connection breaks)."""
        if self.conn.closed or self.conn.broken:
            self.conn.close()
            self.conn = self._connect()
        with self.conn.transaction(), self.conn.cursor() as cur:
            # one writer per race at a time for the places at the line (sorted: no lock-order deadlocks)
            touched: dict[str, set[int]] = {}
            for race_id, lap_no in [*((r, n) for r, _d, n in laps), *charts]:
                touched.setdefault(race_id, set()).add(lap_no)
            for race_id in sorted(touched):
                cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ("racewire:" + race_id,))
            if sessions:
                cur.executemany(_UPSERT_RACE, [
                    (s.race_id, s.name, s.circuit, s.total_laps, s.track_length_m, s.start_time,
                     s.pit_loss_ms, s.source, Jsonb(s.grid)) for s in sessions.values()])
                cur.executemany(_UPSERT_DRIVER, [
                    (s.race_id, d.number, d.code, d.name, d.team, d.team_colour,
                     s.grid.index(d.number) + 1 if d.number in s.grid else None)
                    for s in sessions.values() for d in s.drivers])
            if laps:
                cur.executemany(_UPSERT_LAP, [laps[k] for k in sorted(laps)])
            if charts:
                cur.executemany(_UPSERT_CHART, [(race_id, n, order) for (race_id, n), order in sorted(charts.items())])
            for race_id, lap_nos in sorted(touched.items()):
                cur.execute(_PLACE_LAPS, {"race_id": race_id, "laps": sorted(lap_nos)})
            if events:
                cur.executemany(_UPSERT_EVENT, [
                    (e.race_id, e.event_id, str(e.type), e.lap, e.ts_ms, e.driver_number,
                     e.other_driver_number, Jsonb(e.to_dict())) for _k, e in sorted(events.items())])
            if stints:
                cur.executemany(_UPSERT_STINT, [
                    (s.race_id, s.driver_number, s.stint, s.compound, s.start_lap, s.end_lap, s.length,
                     s.open, Jsonb(s.to_dict())) for _k, s in sorted(stints.items())])
            if latest:
                rows = []
                for race_id, board in sorted(latest.items()):
                    summary = race_summary(board)
                    winner = board.rows[0].driver_number if board.finished and board.rows else None
                    rows.append((race_id, board.total_laps, summary["status"], board.lap,
                                 str(board.track_status), winner, board.version))
                cur.executemany(_UPSERT_RACE_STATUS, rows)
            if standings:
                cur.executemany(_UPSERT_STANDINGS, [
                    (race_id, n, t.version, t.ts_ms, str(t.track_status), Jsonb([r.to_dict() for r in t.rows]))
                    for (race_id, n), t in sorted(standings.items())])

    def close(self) -> None:
        self.conn.close()


_HISTORY_EVENTS = "SELECT payload FROM events WHERE race_id = %s ORDER BY ts_ms, event_id"
_HISTORY_STINTS = "SELECT payload FROM stints WHERE race_id = %s ORDER BY driver_number, stint"
_HISTORY_CHART = "SELECT lap, drivers FROM lap_charts WHERE race_id = %s ORDER BY lap"


class HistoryReader:
    """What the history store holds of one race, as race-flow outputs: its events, stints and lap
    chart (the Redis writer restores a race from it that Redis lost while the flow was down). Best
    effort: when PostgreSQL cannot answer, it logs why and returns nothing."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo

    def __call__(self, race_id: str) -> list[Any]:
        try:
            with psycopg.connect(self.conninfo, connect_timeout=CONNECT_TIMEOUT_S) as conn:
                events = [RaceEvent.from_dict(p) for (p,) in conn.execute(_HISTORY_EVENTS, (race_id,))]
                stints = [Stint.from_dict(p) for (p,) in conn.execute(_HISTORY_STINTS, (race_id,))]
                chart: dict[int, list[int]] = {
                    lap: list(order) for lap, order in conn.execute(_HISTORY_CHART, (race_id,))}
        except psycopg.Error as e:
            log.warning("could not read race %s from PostgreSQL to restore it in Redis (%s: %s)", race_id,
                        type(e).__name__, e, extra={"race_id": race_id})
            return []
        return [*events, *stints, *(LapChart(race_id, lap, order) for lap, order in chart.items())]


class _Partition(StatelessSinkPartition[Any]):
    def __init__(self, writer: PgWriter) -> None:
        self.writer = writer

    def write_batch(self, items: list[Any]) -> None:
        self.writer.write(items)

    def close(self) -> None:
        self.writer.close()


class PgSink(DynamicSink[Any]):
    """Bytewax sink: one :class:`PgWriter` (one connection) per worker. Run
    :func:`infra.migrate.migrate` before the flow starts."""

    def __init__(self, conninfo: str, retry: RetryPolicy | None = None) -> None:
        self.conninfo = conninfo
        self.retry = retry

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        return _Partition(PgWriter(self.conninfo, self.retry))

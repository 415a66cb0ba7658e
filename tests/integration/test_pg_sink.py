"""PostgreSQL history store: migrations apply once; writing a race's outputs again (a replay, a
restart, one item at a time) leaves every row exactly once; row counts equal the race."""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from dataflows.connectors.pg_sink import PgWriter
from dataflows.outputs import LapChart, Tower
from dataflows.race.driver import DriverUpdate
from infra.migrate import MIGRATIONS_DIR, MigrationError, load_migrations, migrate
from schemas.model import ControlKind, Leaderboard, RaceEvent
from schemas.redis_layout import BoardUpdate, SessionDoc
from tests.support.race_builder import Race

TABLES = ("races", "drivers", "laps", "events", "stints", "standings", "lap_charts")


@pytest.fixture
def pg(postgres_url: str) -> Iterator[str]:
    """Conninfo whose ``search_path`` is a schema of this test's own (dropped afterwards)."""
    schema = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield make_conninfo(postgres_url, options=f"-csearch_path={schema}")
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


class _Race(Race):
    """The builder's race, keeping the per-driver step's outputs too (they carry the laps)."""

    def feed(self, record: Any) -> list[Any]:
        if isinstance(record, DriverUpdate):
            self.__dict__.setdefault("updates", []).append(record)
        return super().feed(record)


def _race() -> tuple[_Race, list[Any]]:
    """4 cars, 3 laps: a pit stop, an overtake, a retirement, the flag; the flow's outputs."""
    r = _Race(cars=4, laps=3)
    r.lap(1, 1, 90_000, compound="MEDIUM", tyre_age=0, sector1_ms=30_000, sector2_ms=30_000, sector3_ms=30_000)
    r.lap(2, 1, 90_500, compound="MEDIUM", tyre_age=0)
    r.lap(3, 1, 91_000, compound="HARD", tyre_age=0)
    r.lap(4, 1, 92_000, compound="SOFT", tyre_age=0, pit_in=True)
    r.lap(1, 2, 180_000, compound="MEDIUM", tyre_age=1)
    r.lap(3, 2, 180_400, 89_400, compound="HARD", tyre_age=1)  # 3 passes 2
    r.lap(2, 2, 181_000, compound="MEDIUM", tyre_age=1)
    r.lap(4, 2, 205_000, 113_000, compound="HARD", tyre_age=0, pit_out=True, pit_lane_ms=22_000)
    r.control(230_000, ControlKind.RETIREMENT, driver=4)
    r.control(269_000, ControlKind.CHEQUERED_FLAG, lap=3)
    r.lap(1, 3, 270_000, compound="MEDIUM", tyre_age=2)
    r.lap(3, 3, 270_300, compound="HARD", tyre_age=2)
    r.lap(2, 3, 270_900, compound="MEDIUM", tyre_age=2)
    out: list[Any] = [SessionDoc(r.session)]
    for o in r.outputs:
        out.append(BoardUpdate(o, {}, "Test GP") if isinstance(o, Leaderboard) else o)
    # as the flow would hand them over: driver updates first, race outputs after
    return r, [*r.__dict__["updates"], *out]


def _dump(conninfo: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(conninfo) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3").fetchall() if t != "races"
                else conn.execute("SELECT * FROM races ORDER BY 1").fetchall() for t in TABLES}


def test_migrations_apply_once_and_are_recorded(pg: str) -> None:
    versions = [m.version for m in load_migrations()]
    assert versions and versions == sorted(versions) and versions[0] == 1
    # two processes starting at once: the advisory lock lets one apply, the other finds it done
    results: list[list[int]] = []
    threads = [threading.Thread(target=lambda: results.append(migrate(pg))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [[], versions]
    assert migrate(pg) == []
    with psycopg.connect(pg) as conn:
        recorded = conn.execute("SELECT version, name, checksum FROM schema_migrations ORDER BY 1").fetchall()
        assert [(v, n, c) for v, n, c in recorded] == [(m.version, m.name, m.checksum) for m in load_migrations()]
        for table in TABLES:
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)


def test_an_edited_applied_migration_is_refused(pg: str, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, folder)
    migrate(pg, folder)
    first = sorted(folder.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(pg, folder)
    (folder / "0002_bad name.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="named"):
        load_migrations(folder)


def test_writing_a_race_twice_leaves_every_row_once(pg: str) -> None:
    migrate(pg)
    race, outputs = _race()
    writer = PgWriter(pg)
    try:
        writer.write(outputs)
        first = _dump(pg)
        writer.write(outputs)  # a replay
        for item in outputs:  # and one by one, as a restarted flow would
            writer.write([item])
        writer.write(list(reversed(outputs)))  # and out of order
    finally:
        writer.close()
    assert _dump(pg) == first

    updates: list[DriverUpdate] = race.__dict__["updates"]
    events = [o for o in outputs if isinstance(o, RaceEvent)]
    with psycopg.connect(pg) as conn:
        def one(sql: str) -> Any:
            row = conn.execute(sql).fetchone()
            assert row is not None
            return row[0] if len(row) == 1 else row

        # every lap completion exactly once
        assert one("SELECT count(*) FROM laps") == len(updates) == 11
        assert one("SELECT count(DISTINCT (race_id, driver_number, lap)) FROM laps") == 11
        assert one("SELECT count(*) FROM drivers") == 4
        assert one("SELECT count(*) FROM events") == len({e.event_id for e in events}) > 0
        assert {t for (t,) in conn.execute("SELECT DISTINCT type FROM events")} >= {
            "OVERTAKE", "PIT_STOP", "RETIREMENT", "FASTEST_LAP", "CLASSIFICATION"}

        # position at the line = the lap chart's order; gap = crossing time behind the first car
        charts = {o.lap: o.order for o in outputs if isinstance(o, LapChart)}
        assert charts
        for lap, order in charts.items():
            got = conn.execute("SELECT driver_number FROM laps WHERE lap = %s ORDER BY position", (lap,)).fetchall()
            assert [n for (n,) in got] == order
        assert conn.execute("SELECT driver_number, gap_ms FROM laps WHERE lap = 2 ORDER BY position").fetchall() == [
            (1, 0), (3, 400), (2, 1000), (4, 25_000)]
        assert one("SELECT pit_in, compound, sector1_ms, track_status FROM laps WHERE driver_number = 4 AND lap = 1"
                   ) == (True, "SOFT", None, "GREEN")
        assert one("SELECT pit_out, pit_lane_ms, compound, stint FROM laps WHERE driver_number = 4 AND lap = 2"
                   ) == (True, 22_000, "HARD", 2)
        assert one("SELECT sector1_ms FROM laps WHERE driver_number = 1 AND lap = 1") == 30_000

        # a standings row for every lap: the tower at its end, the latest emission of it
        assert [n for (n,) in conn.execute("SELECT lap FROM standings ORDER BY lap")] == [1, 2, 3]
        final = one("SELECT rows FROM standings WHERE lap = 3")
        assert [(row["driver_number"], row["status"]) for row in final] == [
            (1, "FINISHED"), (3, "FINISHED"), (2, "FINISHED"), (4, "RETIRED")]
        lap2 = one("SELECT rows FROM standings WHERE lap = 2")
        assert [row["driver_number"] for row in lap2] == [1, 3, 2, 4]
        assert [(row["gap_ms"], row["interval_ms"]) for row in lap2] == [
            (None, None), (400, 400), (1000, 600), (25_000, 24_000)]
        assert (lap2[3]["compound"], lap2[3]["pit_count"], lap2[3]["status"]) == ("HARD", 1, "RUNNING")
        lap1 = one("SELECT rows FROM standings WHERE lap = 1")
        assert (lap1[3]["driver_number"], lap1[3]["status"], lap1[3]["compound"]) == (4, "PIT", "SOFT")
        towers = [o for o in outputs if isinstance(o, Tower)]
        for (lap, version, ts_ms) in conn.execute("SELECT lap, version, ts_ms FROM standings"):
            newest = max((t for t in towers if t.lap == lap), key=lambda t: t.version)
            assert (version, ts_ms) == (newest.version, newest.ts_ms)

        status = one("SELECT name, total_laps, status, lap, winner FROM races WHERE race_id = 'r'")
        assert status == ("Test GP", 3, "finished", 3, 1)


def test_concurrent_writers_of_one_race_rank_every_lap(pg: str) -> None:
    """Laps of one race and the race state's lap charts written by several workers at once, in any
    order, still get the right positions: the charts' order, wherever the laps arrive."""
    migrate(pg)
    race, outputs = _race()
    updates: list[DriverUpdate] = race.__dict__["updates"]
    items: list[Any] = [*updates, *(o for o in outputs if isinstance(o, LapChart))]
    writers = [PgWriter(pg) for _ in items]  # one connection per worker, one item each
    try:
        threads = [threading.Thread(target=w.write, args=([u],)) for w, u in zip(writers, items, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for w in writers:
            w.close()
    charts = {o.lap: o.order for o in outputs if isinstance(o, LapChart)}
    with psycopg.connect(pg) as conn:
        for lap, order in charts.items():
            got = conn.execute("SELECT driver_number, position FROM laps WHERE lap = %s ORDER BY position",
                               (lap,)).fetchall()
            assert got == [(n, i + 1) for i, n in enumerate(order)]


def _simulated_outputs(race_id: str, laps: int, one_batch: bool) -> list[Any]:
    """A simulated race (20 cars, telemetry included) through the per-driver step and the race
    state, as the flow runs them: record by record (a flow keeping up, lap by lap), or every
    record in one batch (a flow catching up on a backlog); the outputs as the PostgreSQL sink gets them."""
    from dataflows.race.driver import DriverState
    from dataflows.race.processor import RaceProcessor
    from schemas.model import Lap
    from simulator.race import RaceSimulator

    drivers: dict[int, DriverState] = {}
    proc = RaceProcessor(race_id)
    records: list[tuple[Any, None]] = []
    laps_out: list[Any] = []
    for record in RaceSimulator(race_id, seed=3, laps=laps).records():
        if isinstance(record, Lap):
            update = drivers.setdefault(record.driver_number, DriverState()).update(record)
            assert isinstance(update, DriverUpdate)
            laps_out.append(update)
            record = update
        records.append((record, None))
    if one_batch:
        outputs = proc.on_batch(records, 1.0)
    else:
        outputs = [o for i, pair in enumerate(records) for o in proc.on_batch([pair], 1.0 + i / 1000)]
    session = proc.state.session if proc.state is not None else None
    assert session is not None
    return [SessionDoc(session), *laps_out,
            *(BoardUpdate(o, {}, session.name) if isinstance(o, Leaderboard) else o for o in outputs)]


def test_every_lap_has_its_tower_whatever_the_batching(postgres_url: str) -> None:
    """Finding 6 of issue 11: a backlog processed in one batch stores the tower at the end of every
    lap, equal to the towers a flow that kept up lap by lap stores."""
    laps = 6
    stored: list[list[tuple[Any, ...]]] = []
    for one_batch in (False, True):
        schema = f"t_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        conninfo = make_conninfo(postgres_url, options=f"-csearch_path={schema}")
        try:
            migrate(conninfo)
            writer = PgWriter(conninfo)
            try:
                writer.write(_simulated_outputs("towers", laps, one_batch))
            finally:
                writer.close()
            with psycopg.connect(conninfo) as conn:
                stored.append(conn.execute(
                    "SELECT lap, ts_ms, track_status, rows FROM standings ORDER BY lap").fetchall())
        finally:
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")
    lap_by_lap, backlog = stored
    assert [row[0] for row in lap_by_lap] == list(range(1, laps + 1))
    assert [row[0] for row in backlog] == list(range(1, laps + 1))
    assert backlog == lap_by_lap


def test_positions_at_the_line_are_the_race_states_not_ranked_again(pg: str) -> None:
    """laps.position and gap_ms come from the lap charts the race state emits: laps stored without
    a chart have no place yet, and a chart's order is taken as it is, whatever the crossing times."""
    migrate(pg)
    race, outputs = _race()
    updates: list[DriverUpdate] = race.__dict__["updates"]
    writer = PgWriter(pg)
    try:
        writer.write(updates)
        with psycopg.connect(pg) as conn:
            assert conn.execute("SELECT count(*) FROM laps WHERE position IS NOT NULL").fetchone() == (0,)
        # an order that is not the crossing order: the chart says who was where, not SQL
        writer.write([LapChart("r", 2, [3, 1, 2, 4])])
        with psycopg.connect(pg) as conn:
            assert conn.execute("SELECT driver_number, position, gap_ms FROM laps WHERE lap = 2 ORDER BY position"
                                ).fetchall() == [(3, 1, 0), (1, 2, -400), (2, 3, 600), (4, 4, 24_600)]
        writer.write([LapChart("r", 2, [3, 1])])  # an older, shorter emission replayed: no change
        with psycopg.connect(pg) as conn:
            assert conn.execute("SELECT driver_number FROM laps WHERE lap = 2 ORDER BY position").fetchall() == [
                (3,), (1,), (2,), (4,)]
        writer.write([o for o in outputs if isinstance(o, LapChart)])  # the flow's own (a later emission)
    finally:
        writer.close()
    with psycopg.connect(pg) as conn:
        assert conn.execute("SELECT driver_number, position, gap_ms FROM laps WHERE lap = 2 ORDER BY position"
                            ).fetchall() == [(1, 1, 0), (3, 2, 400), (2, 3, 1000), (4, 4, 25_000)]

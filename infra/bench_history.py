"""``racewire bench history --json``: load every race in ``../shared/data/laps_pool`` into PostgreSQL,
then time the history API.

1. **Load**: every lap table (each Grand Prix season and each sprint season, every round in them)
   is turned into a race by :func:`simulator.replay.build_race` and written through
   :class:`~dataflows.connectors.pg_sink.PgWriter`, one race (session, laps and towers) per
   batch. ``rows_per_s`` = laps stored / seconds spent writing (reading the CSVs is not counted:
   ``parse_s``).
2. **Standings**: the lap tables have no timing-tower snapshots, so the tower at the end of each
   lap is derived at load (:func:`towers`) from the laps alone, as :class:`Leaderboard`
   snapshots that PgWriter stores like the dataflow's own.
3. **Serve**: ``python -m serving.cli`` in a subprocess against that schema; one keep-alive
   client, one request at a time, times ``GET /api/races/{id}/laps?driver=N`` and
   ``GET /api/races/{id}/standings?lap=N`` for random races, drivers and laps.

PostgreSQL is ``RACEWIRE_DATABASE_URL`` when reachable, else an embedded one; either way the
benchmark writes into a fresh schema of its own and drops it at the end. Redis (the serving
process wants one) is ``RACEWIRE_REDIS_URL``, a local one on 6379, or embedded.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

log = logging.getLogger("racewire.bench.history")

DEFAULT_POOL = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "laps_pool"


def add_subcommands(sub: Any) -> None:
    p = sub.add_parser("history", help="load laps_pool into PostgreSQL, then time the history API")
    p.add_argument("--data", type=Path, default=DEFAULT_POOL,
                   help="laps_pool folder (default ../shared/data/laps_pool)")
    p.add_argument("--requests", type=int, default=3000, help="requests per endpoint (default 3000)")
    p.add_argument("--warmup", type=int, default=200, help="untimed requests per endpoint first")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.set_defaults(bench_func=bench_history)


def _peak_rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))], 2)


def lap_tables(pool: Path) -> list[tuple[str, int, Path]]:
    """(kind, season, path) of every lap table: ``grand_prix/*_YYYY.csv`` and ``sprint/*_YYYY.csv``."""
    found = []
    for path in sorted(pool.glob("*/*.csv")):
        season = path.stem.rsplit("_", 1)[-1]
        if season.isdigit():
            found.append(("gp" if path.parent.name == "grand_prix" else path.parent.name, int(season), path))
    return found


def towers(race: Any) -> list[Any]:
    """The timing tower at the end of each lap, derived from a replayed race's laps alone.

    The tower at lap N is the state when the last car that completes lap N crosses the line (as
    :func:`~dataflows.connectors.pg_sink.standings_lap` defines it): each car's latest lap by then,
    ordered by laps completed then crossing time; cars that took the flag are FINISHED, cars that
    never complete lap N are RETIRED (or FINISHED when they took the flag on fewer laps). Gaps and
    intervals are crossing-time differences on the same lap (null across a lap or for retired
    cars; ``gap_laps``/``interval_laps`` count the laps). The last tower is ``final``.

    As in the dataflow, a lap with no such moment (the last car to complete it is a lapped car
    taking the flag, when every other car has already finished) gets no tower of its own.
    """
    from schemas.model import CarStatus, Leaderboard, LeaderboardRow, TrackStatus

    session = race.session
    info = {d.number: d for d in session.drivers}
    laps = sorted(race.laps, key=lambda lap: (lap.crossing_ms, lap.driver_number))
    if not laps:
        return []
    last_lap = {lap.driver_number: lap for lap in laps}  # each car's final lap
    chequered = min(lap.crossing_ms for lap in laps if lap.lap == session.total_laps)  # the winner's flag
    ends: dict[int, int] = {}
    for lap in laps:
        ends[lap.lap] = max(ends.get(lap.lap, 0), lap.crossing_ms)
    crossings: dict[int, dict[int, int]] = {}  # driver -> lap -> crossing
    state: dict[int, dict[str, Any]] = {}
    boards = []
    i = 0
    for n, t_end in sorted(ends.items(), key=lambda kv: (kv[1], kv[0])):
        while i < len(laps) and laps[i].crossing_ms <= t_end:
            lap = laps[i]
            s = state.setdefault(lap.driver_number, {"best": None, "pits": 0})
            s.update(laps=lap.lap, crossing=lap.crossing_ms, last=lap.lap_time_ms, compound=lap.compound,
                     tyre_age=lap.tyre_age, track=lap.track_status)
            if lap.lap_time_ms is not None and (s["best"] is None or lap.lap_time_ms < s["best"]):
                s["best"] = lap.lap_time_ms
            s["pits"] += int(lap.pit_in)
            crossings.setdefault(lap.driver_number, {})[lap.lap] = lap.crossing_ms
            i += 1
        order = sorted(state, key=lambda d: (-state[d]["laps"], state[d]["crossing"], d))
        leader = order[0]
        rows = []
        prev: int | None = None
        for pos, d in enumerate(order, 1):
            s = state[d]
            done = s["laps"]
            if s["crossing"] >= chequered and last_lap[d].crossing_ms == s["crossing"]:
                status = CarStatus.FINISHED
            elif done >= n:
                status = CarStatus.RUNNING
            else:
                status = CarStatus.FINISHED if last_lap[d].crossing_ms >= chequered else CarStatus.RETIRED
            out = status == CarStatus.RETIRED
            gap_laps = state[leader]["laps"] - done
            lead_at = crossings[leader].get(done)
            gap = s["crossing"] - lead_at if lead_at is not None and gap_laps == 0 and not out else None
            ahead = crossings[prev].get(done) if prev is not None and state[prev]["laps"] == done else None
            car = info.get(d)
            rows.append(LeaderboardRow(
                position=pos, driver_number=d, code=car.code if car else str(d), team=car.team if car else "",
                team_colour=car.team_colour if car else "888888", laps=done, progress=float(done), status=status,
                timing_position=pos, gap_ms=gap if pos > 1 else None, gap_laps=gap_laps if pos > 1 else 0,
                interval_ms=s["crossing"] - ahead if ahead is not None and not out else None,
                interval_laps=state[prev]["laps"] - done if prev is not None else 0,
                last_lap_ms=s["last"], best_lap_ms=s["best"], compound=s["compound"], tyre_age=s["tyre_age"],
                pit_count=s["pits"]))
            prev = d
        final = n == max(ends)
        boards.append(Leaderboard(
            race_id=race.race_id, version=n, ts_ms=t_end, lap=min(state[leader]["laps"], session.total_laps),
            total_laps=session.total_laps, track_status=TrackStatus(state[leader]["track"]),
            finished=final, final=final, rows=rows))
    return boards


def load_pool(pool: Path) -> tuple[list[Any], list[str]]:
    """Every race of every table in ``pool`` (replayed); and the (table, round) pairs skipped."""
    import polars as pl

    from simulator.replay import RaceMeta, ReplayError, build_race, fastf1_rows

    races, skipped = [], []
    for kind, season, path in lap_tables(pool):
        frame = pl.read_csv(path, infer_schema_length=0)
        rounds = sorted({int(float(r)) for r in frame["RoundNumber"].drop_nulls().to_list()})
        for rnd in rounds:
            try:
                rows = fastf1_rows(frame, rnd)
                sel = frame.filter(pl.col("RoundNumber").cast(pl.Float64, strict=False) == rnd)
                name = f"{season} {sel['EventName'][0]}" + (" Sprint" if kind == "sprint" else "")
                races.append(build_race(rows, f"{kind}-{season}-{rnd:02d}", RaceMeta(name=name, circuit=name,
                                                                                      source="laps_pool")))
            except ReplayError as exc:
                skipped.append(f"{path.name} round {rnd}: {exc}")
    return races, skipped


@contextlib.contextmanager
def _postgres(workdir: Path) -> Iterator[tuple[str, str]]:
    """A fresh schema in RACEWIRE_DATABASE_URL's database (or an embedded PostgreSQL's): the server
    URL and the URL whose connections use that schema. The schema is dropped afterwards."""
    import psycopg

    from infra.services import EmbeddedPostgres, free_port, postgres_reachable
    from infra.settings import load_settings

    url = load_settings().database_url
    with contextlib.ExitStack() as stack:
        if not url or not postgres_reachable(url):
            if url:
                log.warning("RACEWIRE_DATABASE_URL is not reachable: using an embedded PostgreSQL")
            url = stack.enter_context(EmbeddedPostgres(free_port(), workdir / "postgres", fsync=False)).url
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        scoped = url + ("&" if "?" in url else "?") + "options=" + quote(f"-csearch_path={schema}")
        try:
            yield url, scoped
        finally:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")


@contextlib.contextmanager
def _redis(workdir: Path) -> Iterator[str]:
    from infra.services import EmbeddedRedis, free_port, redis_reachable
    from infra.settings import load_settings

    url = load_settings().redis_url or "redis://127.0.0.1:6379/0"
    if redis_reachable(url):
        yield url
        return
    with EmbeddedRedis(port=free_port(), data_dir=workdir / "redis") as server:
        yield server.url


def _time_requests(client: Any, paths: list[str], warmup: int) -> list[float]:
    for path in paths[:warmup]:
        client.get(path).raise_for_status()
    out = []
    for path in paths[warmup:]:
        t0 = time.perf_counter()
        r = client.get(path)
        out.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"GET {path} answered {r.status_code}: {r.text[:200]}")
    return out


def bench_history(args: argparse.Namespace) -> dict[str, Any]:
    import httpx
    import psycopg

    from dataflows.connectors.pg_sink import PgWriter, standings_lap
    from dataflows.race.towers import Tower
    from infra.migrate import migrate
    from serving.bench import serving_process

    pool: Path = args.data
    if not pool.is_dir() or not lap_tables(pool):
        raise SystemExit(f"racewire bench history: no lap tables in {pool} (../shared/data is absent); "
                         "pass --data PATH to a laps_pool folder")
    t0 = time.perf_counter()
    races, skipped = load_pool(pool)
    parse_s = time.perf_counter() - t0
    for s in skipped:
        log.warning("skipped %s", s)
    log.info("%d races, %d laps parsed in %.1f s", len(races), sum(len(r.laps) for r in races), parse_s)

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="racewire-bench-history-") as tmp, \
            _postgres(Path(tmp)) as (_server_url, url), _redis(Path(tmp)) as redis_url:
        migrate(url)
        writer = PgWriter(url)
        rows = towers_n = 0
        tower_laps: dict[str, list[int]] = {}
        write_s = 0.0
        try:
            for race in races:
                boards = towers(race)
                laps_of = [(n, b) for b in boards if (n := standings_lap(b)) is not None]
                tower_laps[race.race_id] = sorted({n for n, _b in laps_of})
                t = time.perf_counter()
                writer.write([race.session, *race.laps, *boards,
                              *(Tower(b.race_id, n, b.version, b.ts_ms, b.track_status, b.rows) for n, b in laps_of)])
                write_s += time.perf_counter() - t
                rows += len(race.laps)
                towers_n += len(boards)
        finally:
            writer.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE")
            stored = conn.execute("SELECT count(*) FROM laps").fetchone()
            stored_towers = conn.execute("SELECT count(*) FROM standings").fetchone()
        log.info("%d laps, %d towers written in %.1f s", rows, towers_n, write_s)

        driver_paths, standings_paths = [], []
        for _ in range(args.requests + args.warmup):
            race = rng.choice(races)
            lap = rng.choice(race.laps)
            driver_paths.append(f"/api/races/{race.race_id}/laps?driver={lap.driver_number}")
            race = rng.choice(races)
            standings_paths.append(f"/api/races/{race.race_id}/standings?lap={rng.choice(tower_laps[race.race_id])}")
        env = {"RACEWIRE_DATABASE_URL": url}
        with serving_process(redis_url, env=env) as (proc, port), \
                httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            driver_ms = _time_requests(client, driver_paths, args.warmup)
            standings_ms = _time_requests(client, standings_paths, args.warmup)
            server_rss = _peak_rss_mb(proc.pid)
    return {
        "benchmark": "history", "races": len(races), "skipped_races": len(skipped),
        "rows": rows, "rows_stored": stored[0] if stored else None, "rows_per_s": round(rows / write_s),
        "write_s": round(write_s, 2), "parse_s": round(parse_s, 2),
        "standings": stored_towers[0] if stored_towers else None,
        "requests": args.requests,
        "driver_laps_p50_ms": _percentile(driver_ms, 50), "driver_laps_p99_ms": _percentile(driver_ms, 99),
        "standings_p50_ms": _percentile(standings_ms, 50), "standings_p99_ms": _percentile(standings_ms, 99),
        "peak_rss_mb": round(_peak_rss_mb(os.getpid()) + server_rss, 1),
        "peak_rss_mb_by_process": {"bench": round(_peak_rss_mb(os.getpid()), 1), "serving": round(server_rss, 1)},
        "cpus": os.cpu_count(),
    }

"""``racewire bench history --json``: load every race in ``../shared/data/laps_pool`` into PostgreSQL,
then time the history API.

1. **Load**: every lap table (each Grand Prix season and each sprint season, every round in them)
   is turned into a race by :func:`simulator.sources.laptables.build_race`, run through the race flow's own
   pure logic (:func:`flow_outputs`: per-driver state, race state) and written through
   :class:`~dataflows.connectors.pg_sink.PgWriter`, one race (session, laps, lap charts, towers,
   stints, events) per batch. ``rows_per_s`` = laps stored / seconds spent writing (reading the
   CSVs and running the race logic are not counted: ``parse_s``, ``flow_s``).
2. **Standings**: the towers are the flow's own (:class:`~dataflows.race.towers.Tower`, one per
   lap), so order, gaps, statuses and pit stops follow the same rules as a live race.
3. **Serve**: ``python -m infra.serve_cli`` in a subprocess against that schema; one keep-alive
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

from infra.bench.harness import peak_rss_mb, percentile, redis_service

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


def lap_tables(pool: Path) -> list[tuple[str, int, Path]]:
    """(kind, season, path) of every lap table: ``grand_prix/*_YYYY.csv`` and ``sprint/*_YYYY.csv``."""
    found = []
    for path in sorted(pool.glob("*/*.csv")):
        season = path.stem.rsplit("_", 1)[-1]
        if season.isdigit():
            found.append(("gp" if path.parent.name == "grand_prix" else path.parent.name, int(season), path))
    return found


def flow_outputs(race: Any) -> list[Any]:
    """A replayed race through the race flow's own pure logic, in one batch (a flow catching up on
    a backlog): what the PostgreSQL sink gets from the flow (the session, every applied lap, lap
    charts, a tower per lap, stints, events, snapshots). Nothing here has rules of its own."""
    from dataflows.race.driver import DriverState, DriverUpdate
    from dataflows.race.processor import RaceProcessor
    from schemas.model import Lap, Leaderboard
    from schemas.redis_layout import BoardUpdate, SessionDoc

    drivers: dict[int, DriverState] = {}
    records: list[tuple[Any, Any]] = []
    updates: list[DriverUpdate] = []
    for record in race.records():
        if isinstance(record, Lap):
            update = drivers.setdefault(record.driver_number, DriverState()).update(record)
            if not isinstance(update, DriverUpdate):
                continue  # refused by the per-driver state: the flow would dead-letter it
            updates.append(update)
            record = update
        records.append((record, None))
    outputs = RaceProcessor(race.race_id).on_batch(records, 0.0)
    name = race.session.name
    return [SessionDoc(race.session), *updates,
            *(BoardUpdate(o, {}, name) if isinstance(o, Leaderboard) else o for o in outputs)]


def load_pool(pool: Path) -> tuple[list[Any], list[str]]:
    """Every race of every table in ``pool`` (replayed); and the (table, round) pairs skipped."""
    import polars as pl

    from simulator.sources.laptables import RaceMeta, ReplayError, build_race, fastf1_rows

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
    from schemas.settings import load_settings

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

    from dataflows.connectors.pg_sink import PgWriter
    from dataflows.outputs import Tower
    from infra.bench.serving import serving_process
    from infra.migrate import migrate

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
            _postgres(Path(tmp)) as (_server_url, url), redis_service(Path(tmp)) as redis_url:
        migrate(url)
        writer = PgWriter(url)
        rows = towers_n = 0
        tower_laps: dict[str, list[int]] = {}
        write_s = flow_s = 0.0
        try:
            for race in races:
                t = time.perf_counter()
                items = flow_outputs(race)
                flow_s += time.perf_counter() - t
                tower_laps[race.race_id] = sorted({o.lap for o in items if isinstance(o, Tower)})
                t = time.perf_counter()
                writer.write(items)
                write_s += time.perf_counter() - t
                rows += len(race.laps)
                towers_n += len(tower_laps[race.race_id])
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
            server_rss = peak_rss_mb(proc.pid)
    return {
        "benchmark": "history", "races": len(races), "skipped_races": len(skipped),
        "rows": rows, "rows_stored": stored[0] if stored else None, "rows_per_s": round(rows / write_s),
        "write_s": round(write_s, 2), "parse_s": round(parse_s, 2), "flow_s": round(flow_s, 2),
        "standings": stored_towers[0] if stored_towers else None,
        "requests": args.requests,
        "driver_laps_p50_ms": percentile(driver_ms, 50, ndigits=2),
        "driver_laps_p99_ms": percentile(driver_ms, 99, ndigits=2),
        "standings_p50_ms": percentile(standings_ms, 50, ndigits=2),
        "standings_p99_ms": percentile(standings_ms, 99, ndigits=2),
        "peak_rss_mb": round(peak_rss_mb(os.getpid()) + server_rss, 1),
        "peak_rss_mb_by_process": {"bench": round(peak_rss_mb(os.getpid()), 1), "serving": round(server_rss, 1)},
        "cpus": os.cpu_count(),
    }

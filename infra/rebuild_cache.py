"""``racewire rebuild-cache --race ID``: restore a race's live Redis state from PostgreSQL.

Reads the history store (``RACEWIRE_DATABASE_URL``) and writes, through
:class:`~dataflows.connectors.redis_sink.RedisWriter` (so in the layout of :mod:`schemas.redis_layout`
and as idempotently):

- the state document (latest stored standings, status, fastest lap, hero) with its version, the
  leaderboard sorted set and the ``races`` hash entry: skipped when Redis already holds that
  version or a newer one;
- every stored event into the events stream, each once (the writer remembers event ids);
- every stint's latest features and the lap chart (the order at the line of every stored lap);
- the session document (entry list, race metadata; the track outline is not stored), only when
  Redis has none.

(The race dataflow does this by itself for the live races it holds when Redis loses its data; this
command is for the others, e.g. a finished race.)

Running it again changes nothing. Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import orjson
import psycopg
import redis
from psycopg.rows import dict_row

from schemas.settings import load_settings
from serving.fallback import (
    ALL_EVENTS_SQL,
    DRIVERS_SQL,
    HIGHLIGHTS_SQL,
    RACE_SQL,
    STANDING_SQL,
    session_document,
    state_document,
)

#: how long the command waits for an unreachable Redis before it gives up (seconds)
REDIS_WAIT_S = 10.0


class RebuildError(RuntimeError):
    pass


def rebuild(race_id: str, database_url: str, redis_url: str) -> dict[str, Any]:
    """Restore ``race_id``'s Redis state from PostgreSQL; returns what was done."""
    from dataflows.connectors.pg_sink import HistoryReader
    from dataflows.connectors.redis_sink import RedisWriter
    from dataflows.connectors.retry import RetryPolicy
    from dataflows.outputs import LapChart
    from schemas.model import Leaderboard, RaceEvent, Stint
    from schemas.redis_layout import BoardUpdate, events_key, lapchart_key, session_key, stints_key, version_key

    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        races = conn.execute(RACE_SQL, {"race": race_id}).fetchall()
        if not races:
            known = [r["race_id"] for r in conn.execute("SELECT race_id FROM races ORDER BY race_id LIMIT 20")]
            raise RebuildError(f"race {race_id!r} is not stored in PostgreSQL; stored races: "
                               f"{', '.join(known) or 'none'}")
        race = races[0]
        standing = conn.execute(STANDING_SQL, {"race": race_id}).fetchone()
        highlights = conn.execute(HIGHLIGHTS_SQL, {"race": race_id}).fetchall()
        drivers = conn.execute(DRIVERS_SQL, {"race": race_id}).fetchall()
        events = conn.execute(ALL_EVENTS_SQL, {"race": race_id}).fetchall()

    doc = state_document(race, standing, highlights)
    session = session_document(race, drivers)
    # a command, not a flow: give up on an unreachable Redis after a while instead of waiting for ever
    writer = RedisWriter(redis_url, retry=RetryPolicy(max_backoff_s=2.0, give_up_after_s=REDIS_WAIT_S))
    try:
        client = writer.client
        before = client.get(version_key(race_id))
        stream_before = client.xlen(events_key(race_id))
        items: list[Any] = [RaceEvent.from_dict(e["payload"]) for e in events]
        items += [i for i in HistoryReader(database_url)(race_id) if isinstance(i, (Stint, LapChart))]
        if doc is not None:
            items.append(BoardUpdate(Leaderboard.from_dict(doc), None, race.get("name")))
        writer.write(items)
        session_written = bool(session is not None and
                               client.set(session_key(race_id), orjson.dumps(session), nx=True))
        after = client.get(version_key(race_id))
        return {
            "race_id": race_id,
            "version": None if doc is None else doc["version"],
            "lap": None if doc is None else doc["lap"],
            "state_written": after != before,
            "redis_version": None if after is None else int(after),
            "leaderboard": [] if doc is None else [r["driver_number"] for r in doc["rows"]],
            "events_stored": len(events),
            "events_added": client.xlen(events_key(race_id)) - stream_before,
            "session_written": session_written,
            "stints": client.hlen(stints_key(race_id)),
            "lap_chart_laps": client.hlen(lapchart_key(race_id)),
        }
    finally:
        writer.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--race", required=True, metavar="ID", help="race id to restore")
    parser.add_argument("--database-url", help="PostgreSQL URL (default: RACEWIRE_DATABASE_URL)")
    parser.add_argument("--redis-url", help="Redis URL (default: RACEWIRE_REDIS_URL)")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(database_url=args.database_url, redis_url=args.redis_url)
    database_url, redis_url = settings.database_url, settings.redis_url
    missing = [n for n, v in (("RACEWIRE_DATABASE_URL", database_url), ("RACEWIRE_REDIS_URL", redis_url)) if not v]
    if missing:
        print(f"rebuild-cache needs {' and '.join(missing)}", file=sys.stderr)
        return 2
    assert database_url is not None and redis_url is not None
    try:
        summary = rebuild(args.race, database_url, redis_url)
    except (RebuildError, psycopg.Error) as e:
        print(f"rebuild-cache: {e}", file=sys.stderr)
        return 1
    except redis.exceptions.RedisError as e:
        print(f"rebuild-cache: Redis at {redis_url} did not answer ({type(e).__name__}: {e}); start it or fix "
              "RACEWIRE_REDIS_URL (--redis-url), then run the command again", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0

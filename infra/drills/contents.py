"""What a race left behind: the final Redis, PostgreSQL and output-topic contents, as plain JSON.

:func:`collect` reads one race's contents after a run; :class:`OutputTail` reads the output
topics *during* the run, as a downstream consumer would (a memory-only broker that restarts
takes every message it held with it, so reading the topics only at the end would not see what
consumers saw). The result is a :data:`Contents` document of categories (see
:mod:`infra.drills.compare` for the kinds and how they are compared):

``redis``: ``applied`` (the state version: input records applied), ``state`` (the leaderboard
document), ``race_summary`` (its ``races`` hash entry), ``session``, ``leaderboard`` (the sorted
set), ``events`` (the stream, by event id, with the number of entries per id), ``event_ids``
(the event index: event id → stream id), ``lapchart``, ``stints``, ``strategy`` (latest call per car) and
``strategy_history``.

``pg``: ``race`` (the ``races`` row), ``drivers``, ``laps``, ``events``, ``stints`` and
``standings`` rows by primary key, with the number of rows per key.

``outputs``: ``events``, ``commentary`` and ``recommendations`` by event id (copies counted),
``stints`` (the latest message per car and stint), ``leaderboard`` (the highest version seen),
``deadletters`` (one per reason and step; valid input must produce none).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import Counter
from typing import Any

import orjson
import psycopg
import redis
from psycopg.rows import dict_row

from dataflows.race.state import applied_of
from infra.drills.compare import calls, count, keyed, one
from schemas import redis_layout as layout

log = logging.getLogger("racewire.drill")

Contents = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Redis


def _json(raw: Any) -> Any:
    return None if raw is None else orjson.loads(raw)


def redis_contents(client: Any, race_id: str) -> dict[str, Any]:
    # client: redis.Redis without decode_responses (bytes in, bytes out)
    """The race's keys in Redis (see the module docstring)."""
    state = _json(client.get(layout.state_key(race_id)))
    summary = _json(client.hget(layout.RACES_KEY, race_id))
    session = _json(client.get(layout.session_key(race_id)))
    board = {m.decode(): int(s) for m, s in client.zrange(layout.leaderboard_key(race_id), 0, -1, withscores=True)}
    entries = client.xrange(layout.events_key(race_id))
    events: dict[str, Any] = {}
    copies: Counter[str] = Counter()
    for _entry_id, fields in entries:
        event_id = fields[layout.EVENT_ID_FIELD].decode()
        copies[event_id] += 1
        events.setdefault(event_id, {"type": fields[layout.EVENT_TYPE_FIELD].decode(),
                                     "event": _json(fields[layout.EVENT_JSON_FIELD])})
    ids = {m.decode(): True for m in client.hkeys(layout.event_index_key(race_id))}

    def hash_of(key: str) -> dict[str, Any]:
        return {f.decode(): _json(v) for f, v in client.hgetall(key).items()}

    latest = {f"{c.get('lap')}:{driver}": c for driver, c in hash_of(layout.strategy_key(race_id)).items()}
    version = client.get(layout.version_key(race_id))
    return {
        # the state version carries the count of input records the race state applied (session,
        # laps, telemetry, control): what is missing from it was never applied, even where no final
        # result shows it (telemetry moves the map and the live order, not the classification)
        "applied": count(None if version is None else applied_of(int(version)), "input records applied"),
        "state": one(state),
        "race_summary": one(summary),
        "session": one(session),
        "leaderboard": one(board or None),
        "events": keyed(events, copies),
        "event_ids": keyed(ids),
        "lapchart": keyed(hash_of(layout.lapchart_key(race_id))),
        "stints": keyed(hash_of(layout.stints_key(race_id))),
        "strategy": calls(latest),
        "strategy_history": calls(hash_of(layout.strategy_history_key(race_id))),
    }


# --------------------------------------------------------------------------------------------
# PostgreSQL

_PG_TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    # category: (table, key columns after race_id)
    "drivers": ("drivers", ("driver_number",)),
    "laps": ("laps", ("driver_number", "lap")),
    "events": ("events", ("event_id",)),
    "stints": ("stints", ("driver_number", "stint")),
    "standings": ("standings", ("lap",)),
}


def _plain(value: Any) -> Any:
    """A row value as JSON (timestamps as ISO text)."""
    if isinstance(value, dict | list | str | int | float | bool) or value is None:
        return value
    return str(value)


def pg_contents(conninfo: str, race_id: str) -> dict[str, Any]:
    """The race's rows in PostgreSQL, keyed by primary key, with the number of rows per key."""
    out: dict[str, Any] = {}
    with psycopg.connect(conninfo, connect_timeout=5, row_factory=dict_row) as conn:
        row = conn.execute("SELECT * FROM races WHERE race_id = %s", (race_id,)).fetchone()
        out["race"] = one(None if row is None else {c: _plain(v) for c, v in row.items()})
        for category, (table, key_columns) in _PG_TABLES.items():
            rows = conn.execute(f"SELECT * FROM {table} WHERE race_id = %s", (race_id,)).fetchall()
            items: dict[str, Any] = {}
            copies: Counter[str] = Counter()
            for r in rows:
                key = ":".join(str(r[c]) for c in key_columns)
                copies[key] += 1
                items[key] = {c: _plain(v) for c, v in r.items() if c != "race_id"}
            if category == "standings":
                items = {key: _standing(r) for key, r in items.items()}
            out[category] = keyed(items, copies)
    return out


def _standing(row: dict[str, Any]) -> dict[str, Any]:
    """The part of a standings row that two uninterrupted runs agree on: the lap and its track status.

    The row is the latest timing-line snapshot in which every running car had completed the lap:
    the leaders may already be a lap further on, and the order and progress are the live ones
    of whichever telemetry had been applied by then, so which snapshot it is depends on how the
    input was batched, not on the race (two uninterrupted runs of the same race differed in 7 of
    8 laps: order, laps, gaps, progress). So the rows are not compared, only that every lap has one.
    """
    return {"lap": row.get("lap"), "track_status": row.get("track_status")}


# --------------------------------------------------------------------------------------------
# output topics


class OutputTail:
    """Reads every output topic from the beginning, in a thread, for as long as the run lasts.

    :meth:`rewind` starts over from the beginning of every partition: after a memory-only broker
    restarted, the topics it comes back with are new (offsets start at 0 again), and a consumer
    that kept its old positions would skip what was written before it caught up with them.
    """

    def __init__(self, bootstrap: str, registry_url: str) -> None:
        from schemas.codec import OUTPUT_TOPICS, Codec, make_registry_client

        self.bootstrap = bootstrap
        self.topics = tuple(OUTPUT_TOPICS)
        self._codec = Codec(make_registry_client(registry_url))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._rewind = threading.Event()
        self.messages: Counter[str] = Counter()
        self.undecodable = 0
        self.events: dict[str, Any] = {}
        self.event_copies: dict[str, Counter[str]] = {"events": Counter(), "commentary": Counter(),
                                                        "recommendations": Counter()}
        self.records: dict[str, dict[str, Any]] = {"events": {}, "commentary": {}, "recommendations": {}}
        self.stints: dict[str, Any] = {}
        self.leaderboard: dict[str, Any] | None = None
        self.deadletters: Counter[str] = Counter()
        self._thread = threading.Thread(target=self._run, name="drill-output-tail", daemon=True)

    def start(self) -> OutputTail:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def rewind(self) -> None:
        self._rewind.set()

    def _consumer(self) -> Any:
        from confluent_kafka import Consumer

        return Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"racewire-drill-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "enable.partition.eof": False, "log_level": 0,
                         "topic.metadata.refresh.interval.ms": 1000})

    def _assign_new(self, consumer: Any, assigned: set[tuple[str, int]]) -> None:
        """Assign, from the beginning, the partitions of the output topics not yet assigned."""
        from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

        try:
            md = consumer.list_topics(timeout=2)
        except KafkaException:
            return
        new = [TopicPartition(t, p, OFFSET_BEGINNING) for t in self.topics if t in md.topics
               and md.topics[t].error is None for p in md.topics[t].partitions if (t, p) not in assigned]
        if new:
            consumer.incremental_assign(new)
            assigned.update((tp.topic, tp.partition) for tp in new)

    def _run(self) -> None:
        consumer = self._consumer()
        assigned: set[tuple[str, int]] = set()
        checked = 0.0
        try:
            while not self._stop.is_set():
                if self._rewind.is_set():
                    self._rewind.clear()
                    consumer.close()
                    consumer, assigned, checked = self._consumer(), set(), 0.0
                if time.monotonic() - checked > 1.0:
                    self._assign_new(consumer, assigned)
                    checked = time.monotonic()
                if not assigned:
                    self._stop.wait(0.2)
                    continue
                for msg in consumer.consume(1000, 0.2):
                    if msg.error() is None and msg.value() is not None:
                        self._take(msg.topic(), msg.value())
        except Exception:  # the tail must never take the drill down; what it missed shows as lost
            log.exception("output tail stopped")
        finally:
            with contextlib.suppress(Exception):
                consumer.close()

    def _take(self, topic: str, value: bytes) -> None:
        try:
            _schema_topic, rec = self._codec.decode(value)
        except Exception:
            with self._lock:
                self.undecodable += 1
            return
        with self._lock:
            self.messages[topic] += 1
            short = {"f1.race.events": "events", "f1.race.commentary": "commentary",
                     "f1.strategy.recommendations": "recommendations"}.get(topic)
            if short is not None:
                key = str(rec["event_id"])
                if short == "recommendations":  # keyed like the Redis history: lap:driver
                    key = f"{rec['lap']}:{rec['driver_number']}"
                self.event_copies[short][key] += 1
                self.records[short].setdefault(key, _jsonable(rec))
            elif topic == "f1.driver.stints":
                key = f"{rec['driver_number']}:{rec['stint']}"
                order = (rec["end_lap"], not rec["open"])
                cur = self.stints.get(key)
                if cur is None or order >= (cur["end_lap"], not cur["open"]):
                    self.stints[key] = _jsonable(rec)
            elif topic == "f1.race.leaderboard":
                if self.leaderboard is None or rec["version"] > self.leaderboard["version"]:
                    self.leaderboard = _jsonable(rec)
            elif topic == "f1.deadletter":
                self.deadletters[f"{rec.get('step')}: {str(rec.get('reason'))[:80]}"] += 1

    def contents(self, race_id: str) -> dict[str, Any]:
        """What the tail read of ``race_id`` (dead letters of any race: the run has only this one)."""
        with self._lock:
            out: dict[str, Any] = {}
            for short, records in self.records.items():
                mine = {k: r for k, r in records.items() if r.get("race_id") == race_id}
                copies = {k: n for k, n in self.event_copies[short].items() if k in mine}
                out[short] = (calls if short == "recommendations" else keyed)(mine, copies)
            out["stints"] = keyed({k: s for k, s in self.stints.items() if s.get("race_id") == race_id})
            board = self.leaderboard if (self.leaderboard or {}).get("race_id") == race_id else None
            out["leaderboard"] = one(board)
            out["deadletters"] = keyed({reason: n for reason, n in self.deadletters.items()})
            return out

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {**self.messages, "undecodable": self.undecodable}


def _jsonable(rec: dict[str, Any]) -> dict[str, Any]:
    return orjson.loads(orjson.dumps(rec, default=str))


# --------------------------------------------------------------------------------------------


def collect(race_id: str, redis_url: str, database_url: str, tail: OutputTail) -> Contents:
    """Everything the run left for ``race_id``. A store that cannot be read counts as empty
    (``errors`` says why), so what it should have held shows up as lost."""
    contents: Contents = {"race_id": race_id, "errors": {}}
    client = redis.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=5)
    try:
        contents["redis"] = redis_contents(client, race_id)
    except (redis.RedisError, OSError) as exc:
        contents["redis"] = {}
        contents["errors"]["redis"] = str(exc)
    finally:
        client.close()
    try:
        contents["pg"] = pg_contents(database_url, race_id)
    except (psycopg.Error, OSError) as exc:
        contents["pg"] = {}
        contents["errors"]["pg"] = str(exc)
    contents["outputs"] = tail.contents(race_id)
    return contents

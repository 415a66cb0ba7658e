"""What the dataflow knows about its own work: records read and applied per race, input lag per
partition, dead letters by reason, records out per topic.

One :data:`ACCOUNT` per process, fed by the edges of the flow (the source, the decoder, the
per-driver and race steps, the encoder) and read two ways:

- Prometheus metrics in the default registry (``racewire_flow_*``), served on
  ``RACEWIRE_FLOW_METRICS_PORT`` when set;
- the **flow status document** ``racewire:flow:status:<process>`` in Redis
  (:func:`~schemas.redis_layout.flow_status_key`), rewritten every
  :data:`STATUS_EVERY_S` seconds with a time to live of :data:`STATUS_TTL_S` (a process that
  stopped drops out by itself). ``/api/health`` and the drills read it. Its layout
  (:meth:`FlowAccount.document`)::

      {"process": 0, "pid": 4711, "updated_at": "2026-…Z", "workers": 1,
       "records_read": 120, "records_applied": 118, "last_applied_age_s": 0.4,
       "partitions": {"f1.laps/0": {"position": 60, "high": 60, "lag": 0}, …},
       "races": {"sim-1": {"read": 120, "applied": 117, "rejected": 2, "duplicate": 1,
                           "last_applied_age_s": 0.4, "state_items": 1530}}}

Per race, every record read is eventually ``applied``, ``rejected`` (a dead letter) or a
``duplicate`` (an exact redelivery of a record already applied, absorbed): ``read - applied -
rejected - duplicate`` is what the flow still holds. Records are counted where they are read
and where they are applied, which may be different processes of a cluster: sum the documents
of every process (as :func:`serving.routes.health.flow_summary` does).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Gauge

from schemas.redis_layout import flow_status_key

log = logging.getLogger("racewire.flow.status")

STATUS_EVERY_S = 2.0
STATUS_TTL_S = 15

RECORDS_IN = Counter("racewire_flow_records_in_total", "Input records read (offsets the consumer moved past), by topic",
                     ["topic"])
RECORDS_OUT = Counter("racewire_flow_records_out_total", "Output records produced, by topic", ["topic"])
DEAD_LETTERS = Counter("racewire_flow_dead_letters_total", "Input records rejected to the dead-letter topic",
                       ["reason"])
RACE_RECORDS = Counter("racewire_flow_race_records_total",
                       "Input records of a race by outcome: read, applied, rejected, duplicate",
                       ["race", "outcome"])
PARTITION_LAG = Gauge("racewire_flow_partition_lag", "Records in an input partition not yet read",
                      ["partition"])
FETCH_WAIT = Gauge("racewire_flow_fetch_wait_seconds",
                   "The input consumer's fetch wait, when the reader lengthened it (a broker that answered "
                   "fetches with few records while records waited)")
INPUT_RESETS = Counter("racewire_flow_input_resets_total",
                       "Input partitions read again from their start because the broker lost the topic "
                       "(it restarted empty or the topic was recreated)", ["topic"])
STATE_ITEMS = Gauge("racewire_flow_race_state_items",
                    "Size of a race's state: cars, laps kept and events emitted", ["race"])
LAST_APPLIED_AGE = Gauge("racewire_flow_last_applied_age_seconds",
                         "Seconds since this process last applied an input record")


@dataclass
class _Race:
    read: int = 0
    applied: int = 0
    rejected: int = 0
    duplicate: int = 0
    last_applied: float | None = None  # monotonic
    state_items: int | None = None


@dataclass
class FlowAccount:
    """Counters of one flow process (thread-safe: workers may be threads of one process)."""

    races: dict[str, _Race] = field(default_factory=dict)
    partitions: dict[str, dict[str, int | None]] = field(default_factory=dict)
    last_applied: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _race(self, race_id: str) -> _Race:
        race = self.races.get(race_id)
        if race is None:
            race = self.races[race_id] = _Race()
        return race

    def count(self, race_id: str | None, outcome: str, n: int = 1) -> None:
        """``outcome``: ``read``, ``applied``, ``rejected`` or ``duplicate``."""
        if n <= 0 or race_id is None:
            return
        with self._lock:
            race = self._race(race_id)
            setattr(race, outcome, getattr(race, outcome) + n)
            if outcome == "applied":
                race.last_applied = self.last_applied = time.monotonic()
        RACE_RECORDS.labels(race_id, outcome).inc(n)

    def state_size(self, race_id: str, items: int) -> None:
        with self._lock:
            self._race(race_id).state_items = items
        STATE_ITEMS.labels(race_id).set(items)

    def partition(self, name: str, position: int, high: int | None) -> None:
        """Where this process reads partition ``name`` (``topic/partition``), and its end."""
        lag = None if high is None or high < 0 else max(0, high - position)
        with self._lock:
            self.partitions[name] = {"position": position, "high": high, "lag": lag}
        if lag is not None:
            PARTITION_LAG.labels(name).set(lag)

    def document(self, process: int, workers: int = 1) -> dict[str, Any]:
        """The status document (see the module docstring)."""
        now = time.monotonic()

        def age(t: float | None) -> float | None:
            return None if t is None else round(now - t, 3)

        with self._lock:
            races = {race_id: {"read": r.read, "applied": r.applied, "rejected": r.rejected,
                               "duplicate": r.duplicate, "last_applied_age_s": age(r.last_applied),
                               "state_items": r.state_items}
                     for race_id, r in self.races.items()}
            partitions = {k: dict(v) for k, v in self.partitions.items()}
            last = self.last_applied
        if last is not None:
            LAST_APPLIED_AGE.set(now - last)
        return {"process": process, "pid": os.getpid(), "workers": workers,
                "updated_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "records_read": sum(r["read"] for r in races.values()),
                "records_applied": sum(r["applied"] for r in races.values()),
                "last_applied_age_s": age(last), "partitions": partitions, "races": races}


#: this process's account
ACCOUNT = FlowAccount()


def rejected(race_id: str | None, error_type: str) -> None:
    """One input record rejected (it goes to the dead-letter topic)."""
    DEAD_LETTERS.labels(error_type).inc()
    ACCOUNT.count(race_id, "rejected")


class StatusPublisher:
    """Writes this process's status document to Redis every ``every_s`` seconds (a daemon thread;
    Redis being away is logged once per outage and never stops the flow)."""

    def __init__(self, redis_url: str, process: int, workers: int = 1, every_s: float = STATUS_EVERY_S,
                 account: FlowAccount = ACCOUNT) -> None:
        self.redis_url, self.process, self.workers, self.every_s = redis_url, process, workers, every_s
        self.account = account
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="racewire-flow-status", daemon=True)

    def start(self) -> StatusPublisher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def publish(self, client: Any) -> None:
        import orjson

        doc = self.account.document(self.process, self.workers)
        client.set(flow_status_key(self.process), orjson.dumps(doc), ex=STATUS_TTL_S)

    def _run(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url, socket_timeout=2, socket_connect_timeout=2)
        failing = False
        while not self._stop.is_set():
            try:
                self.publish(client)
                if failing:
                    log.info("flow status written again: %s", {"key": flow_status_key(self.process)})
                failing = False
            except Exception as exc:  # Redis away: try again next round
                if not failing:
                    log.warning("cannot write the flow status: %s", {"error": str(exc)})
                failing = True
            self._stop.wait(self.every_s)


def serve_metrics(port: int | None) -> None:
    """Serve the default Prometheus registry on ``port`` (nothing when None)."""
    if not port:
        return
    from prometheus_client import start_http_server

    start_http_server(port)
    log.info("flow metrics served: %s", {"port": port, "path": "/metrics"})

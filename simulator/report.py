"""Run a replayed race through the real pipeline and read back what it computed.

:func:`run_through_pipeline` produces a race's input records to the broker, runs the race
dataflow (``racewire flow race``) as a subprocess, waits until the race is final in Redis and
returns the replay report, read back from Redis (never recomputed here):

```
{"race_id": str,
 "laps": {"1": ["LEC", "VER", ...], ...},        # race:{id}:lapchart
 "classification": [{"position", "driver", "laps", "status"}, ...],   # CLASSIFICATION event
 "fastest_lap": {"driver", "lap", "lap_time_ms"},                      # state document
 "last_lap_hero": {"driver", "lap", "lap_time_ms"},                    # state document
 "pit_stops": [{"driver", "lap"}, ...],            # PIT_STOP events, lap = the in-lap
 "overtakes": [{"lap", "driver", "passed", "kind"}, ...]}              # OVERTAKE events
```

:func:`build_report` is the pure part (Redis contents → report).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from schemas.model import InputRecord

log = logging.getLogger("racewire.replay")

FLOW_TIMEOUT_S = 600.0
"""Give up waiting for the race to be final in Redis after this long (after the last record)."""
SETTLE_S = 1.0
"""After the race is final, wait this long for the last writes (lap chart, events) to land."""


class ReportSource(Protocol):
    race_id: str

    def records(self) -> Iterator[InputRecord]: ...

    def codes(self) -> dict[int, str]: ...


# ------------------------------------------------------------------------------ pure


def build_report(
    race_id: str,
    codes: dict[int, str],
    state: dict[str, Any],
    lapchart: dict[int, list[int]],
    events: list[dict[str, Any]],
) -> dict[str, Any]:
    """The replay report from the race's Redis contents (state doc, lap chart, event stream)."""

    def code(n: int | None) -> str | None:
        return None if n is None else codes.get(n, str(n))

    classification: list[dict[str, Any]] = []
    pits: list[dict[str, Any]] = []
    overtakes: list[dict[str, Any]] = []
    for e in events:
        kind = e.get("type")
        if kind == "CLASSIFICATION" and e.get("classification"):
            classification = [
                {"position": c["position"], "driver": code(c["driver_number"]), "laps": c["laps"],
                 "status": c["status"]}
                for c in e["classification"]
            ]
        elif kind == "PIT_STOP":
            pits.append({"driver": code(e["driver_number"]), "lap": e["lap"]})
        elif kind == "OVERTAKE":
            overtakes.append({"lap": e["lap"], "driver": code(e["driver_number"]),
                              "passed": code(e["other_driver_number"]), "kind": e["overtake_kind"]})
    pits.sort(key=lambda p: (p["lap"], p["driver"] or ""))
    overtakes.sort(key=lambda o: o["lap"])  # the stream interleaves partitions; stable per lap
    fl = state.get("fastest_lap")
    hero = state.get("hero")
    return {
        "race_id": race_id,
        "laps": {str(lap): [code(n) for n in order] for lap, order in sorted(lapchart.items())},
        "classification": classification,
        "fastest_lap": None if not fl else {"driver": code(fl["driver_number"]), "lap": fl["lap"],
                                            "lap_time_ms": fl["lap_time_ms"]},
        "last_lap_hero": None if not hero else {"driver": code(hero["driver_number"]), "lap": hero["lap"],
                                                "lap_time_ms": hero["lap_time_ms"]},
        "pit_stops": pits,
        "overtakes": overtakes,
    }


# ------------------------------------------------------------------------------ Redis


def read_redis(client: Any, race_id: str) -> tuple[dict[str, Any], dict[int, list[int]], list[dict[str, Any]]]:
    """State document, lap chart and events of a race as the dataflow wrote them."""
    from dataflows.connectors.redis_sink import EVENTS_KEY, LAPCHART_KEY, STATE_KEY

    raw = client.get(STATE_KEY.format(race_id))
    state = json.loads(raw) if raw else {}
    chart = {int(k): json.loads(v) for k, v in client.hgetall(LAPCHART_KEY.format(race_id)).items()}
    events = []
    for _id, fields in client.xrange(EVENTS_KEY.format(race_id)):
        kind = fields[b"type"].decode()
        if kind == "COMMENTARY":
            continue
        events.append({**json.loads(fields[b"json"]), "type": kind})
    return state, chart, events


def read_strategy(client: Any, race_id: str) -> dict[str, Any]:
    """Summary of the strategy calls the dataflow made: calls per lap, actions, the models used."""
    from dataflows.connectors.redis_sink import STRATEGY_HISTORY_KEY

    per_lap: dict[int, int] = {}
    actions: dict[str, int] = {}
    models: set[str] = set()
    for raw in client.hvals(STRATEGY_HISTORY_KEY.format(race_id)):
        call = json.loads(raw)
        per_lap[call["lap"]] = per_lap.get(call["lap"], 0) + 1
        actions[call["action"]] = actions.get(call["action"], 0) + 1
        models.add(call["model"])
    return {"calls_per_lap": {str(k): per_lap[k] for k in sorted(per_lap)}, "actions": actions,
            "models": sorted(models)}


def clear_race(client: Any, race_id: str) -> None:
    """Drop this race's keys (a rerun of the same race id starts clean); nothing else."""
    keys = list(client.scan_iter(match=f"race:{race_id}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.hdel("races", race_id)


def _wait_final(client: Any, race_id: str, records: int, proc: subprocess.Popen[bytes],
                timeout_s: float) -> None:
    from dataflows.connectors.redis_sink import STATE_KEY

    deadline = time.monotonic() + timeout_s
    stable_since: float | None = None
    last_version = -1
    while time.monotonic() < deadline:
        raw = client.get(STATE_KEY.format(race_id))
        if raw is not None:
            doc = json.loads(raw)
            if doc.get("final"):
                if doc["version"] >= records:
                    return
                # final, but some records were rejected (see f1.deadletter): wait until quiet
                if doc["version"] != last_version:
                    last_version, stable_since = doc["version"], time.monotonic()
                elif stable_since is not None and time.monotonic() - stable_since > 5:
                    log.warning("race %s final at version %d of %d records: some were rejected "
                                "(see f1.deadletter)", race_id, doc["version"], records)
                    return
        if proc.poll() is not None:
            raise RuntimeError(f"the race dataflow exited with {proc.returncode} before the race was final")
        time.sleep(0.2)
    raise TimeoutError(f"race {race_id} not final in Redis after {timeout_s:.0f} s")


def run_through_pipeline(
    source: ReportSource,
    speed: float | None = None,
    workers: int = 1,
    timeout_s: float = FLOW_TIMEOUT_S,
    services: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Produce the race, run the race dataflow on it, wait until final; the report from Redis.

    ``services`` (``bootstrap``, ``redis_url``, ``registry_url``) defaults to the configured
    ``RACEWIRE_*`` services, or embedded ones started for this run.
    """
    if services is not None:
        return _run(source, speed, workers, timeout_s, services)
    from infra.bench import _services

    with tempfile.TemporaryDirectory(prefix="racewire-replay-") as tmp, _services(Path(tmp)) as svc:
        return _run(source, speed, workers, timeout_s, svc)


def _run(source: ReportSource, speed: float | None, workers: int, timeout_s: float,
         svc: dict[str, str]) -> dict[str, Any]:
    import redis

    from dataflows.cli import flow_process
    from dataflows.connectors.producer import ProducerOptions
    from infra.settings import load_settings
    from infra.topics import create_topics
    from schemas.codec import Codec, make_registry_client
    from simulator.producer import produce_race

    create_topics(svc["bootstrap"], partitions=max(4, 2 * workers))
    # spooled under RACEWIRE_DATA_DIR while the broker is away; the topics were just made
    options = dataclasses.replace(ProducerOptions.from_settings(load_settings()), partitions=None)
    codec = Codec(make_registry_client(svc["registry_url"]))
    codec.register_all()
    client = redis.Redis.from_url(svc["redis_url"])
    clear_race(client, source.race_id)
    count = 0

    def counted(_record: InputRecord) -> None:
        nonlocal count
        count += 1

    started = time.monotonic()
    with flow_process(svc["bootstrap"], svc["redis_url"], svc["registry_url"], workers,
                      os.environ.get("RACEWIRE_DATABASE_URL")) as proc:
        counts = produce_race(source, {"bootstrap.servers": svc["bootstrap"]}, codec, speed,
                              on_record=counted, options=options)
        log.info("race %s: produced %s in %.1f s; waiting for the dataflow", source.race_id, counts,
                 time.monotonic() - started)
        _wait_final(client, source.race_id, count, proc, timeout_s)
        time.sleep(SETTLE_S)
        state, chart, events = read_redis(client, source.race_id)
        calls = read_strategy(client, source.race_id)
    log.info("race %s final in Redis after %.1f s", source.race_id, time.monotonic() - started)
    client.close()
    return {**build_report(source.race_id, source.codes(), state, chart, events), "strategy": calls}


def write_report(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")

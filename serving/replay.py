"""A simulated race (or any session's input records) turned into the race dataflow's Redis output,
without a broker.

The records go through the dataflow's own pure logic (:class:`DriverState` per car,
:class:`RaceProcessor` per race, with session time as its clock) and come out as the objects the
Redis sink receives (:class:`BoardUpdate`, :class:`RaceEvent`), each stamped with its session time.
Tests, the browser test and ``racewire bench sse`` write them with the sink's own
:class:`RedisWriter`, so serving is exercised against exactly what the dataflow writes.

This module is a tool: the web app never imports it (it loads the dataflow and Bytewax).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from dataflows.connectors.redis_sink import RedisWriter
from dataflows.race.driver import DriverState, DriverUpdate
from dataflows.race.processor import RaceProcessor
from schemas.model import InputRecord, Lap, Leaderboard, RaceEvent, Recommendation, Session, Stint
from schemas.redis_layout import BoardUpdate, session_document, session_key
from simulator.sources.base import record_ts

#: session time (ms) between telemetry batches fed to the processor: its clock ticks in these steps
TICK_MS = 250


@dataclass(slots=True, frozen=True)
class Output:
    ts_ms: int  # session time
    item: BoardUpdate | RaceEvent | Stint | Recommendation | DriverUpdate


def race_outputs(race_id: str, seed: int, laps: int, max_rate_hz: float = 4.0, strategy: bool = False,
                 driver_laps: bool = False) -> tuple[Session, list[Output]]:
    """Run a simulated race through the race logic; returns its session and its Redis outputs in order
    (with ``strategy``, stints and strategy calls too; with ``driver_laps``, every applied lap as a
    :class:`DriverUpdate`, which the history store takes)."""
    from simulator.race import RaceSimulator

    sim = RaceSimulator(race_id, seed, laps)
    return sim.session, session_outputs(race_id, sim.records(), max_rate_hz, strategy, driver_laps)


def session_outputs(race_id: str, records: Iterable[InputRecord], max_rate_hz: float = 4.0, strategy: bool = False,
                    driver_laps: bool = False) -> list[Output]:
    """Input records of one session (in the order they go out) through the race logic: its Redis
    outputs in order (see :func:`race_outputs`)."""
    from dataflows.race.strategist import Strategist

    proc = RaceProcessor(race_id, max_rate_hz, strategist=Strategist() if strategy else None)
    drivers: dict[int, DriverState] = {}
    out: list[Output] = []
    batch: list[tuple[Any, Any]] = []
    batch_ts = 0

    def flush(now_ms: int) -> None:
        results = proc.on_batch(batch, now_ms / 1000) if batch else proc.on_notify(now_ms / 1000)
        if driver_laps:
            out.extend(Output(now_ms, u) for u, _ref in batch if isinstance(u, DriverUpdate))
        batch.clear()
        state = proc.state
        for o in results:
            if isinstance(o, Leaderboard) and state is not None:
                out.append(Output(now_ms, BoardUpdate(o, state.positions(), state.session.name)))
            elif isinstance(o, RaceEvent) or (strategy and isinstance(o, (Stint, Recommendation))):
                out.append(Output(now_ms, o))

    for record in records:
        ts = record_ts(record)
        if ts - batch_ts >= TICK_MS:
            flush(batch_ts)
            batch_ts = ts - ts % TICK_MS
        if isinstance(record, Lap):
            update = drivers.setdefault(record.driver_number, DriverState()).update(record)
            if isinstance(update, DriverUpdate):
                batch.append((update, None))
        else:
            batch.append((record, None))
    flush(batch_ts)
    flush(batch_ts + 10_000)  # trailing edge of the throttle
    return out


def write_session(writer: RedisWriter, session: Session) -> None:
    writer.client.set(session_key(session.race_id), orjson.dumps(session_document(session)))


def play(writer: RedisWriter, outputs: list[Output], speed: float | None = None) -> Iterator[Output]:
    """Write outputs to Redis in order; at ``speed`` x real time when given (else as fast as possible).
    Yields each output after it is written (callers time or count them)."""
    if not outputs:
        return
    t0 = time.perf_counter()
    base = outputs[0].ts_ms
    i = 0
    while i < len(outputs):
        j = i
        while j < len(outputs) and outputs[j].ts_ms == outputs[i].ts_ms:
            j += 1
        if speed:
            delay = (outputs[i].ts_ms - base) / 1000 / speed - (time.perf_counter() - t0)
            if delay > 0:
                time.sleep(delay)
        writer.write([o.item for o in outputs[i:j]])
        yield from outputs[i:j]
        i = j

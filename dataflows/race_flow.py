"""The race dataflow: wiring only. Read it top-down, source to sinks.

    input ─ decode ─┬─ laps, keyed race:driver ─ driver-state ─┐
                    ├─ session / control / telemetry, ─────────┴─ race-state (keyed race) ─┐
                    │  as one chunk per race and batch                    └─ commentary ───┤
                    └─ rejected ───────────────────────────────────────────────────────────┤
                                                                 ROUTES ─┬─ Kafka, raw (records)
                                                                         └─ Redis, PostgreSQL (documents)

Every stream carries flow outputs (:mod:`dataflows.outputs`); one routing table (:data:`ROUTES`)
says which sink gets each type, and each sink's records or documents are made at the sink.
``build_race_flow`` takes its source and sinks, so the same flow runs against Kafka in production
and against testing sources in tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeGuard, cast

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.operators import KeyedStream, StatefulBatchLogic
from bytewax.outputs import Sink

from dataflows import metrics
from dataflows.commentary import commentary_for
from dataflows.connectors.kafka import CodecFactory, Decoder, Encoder, RaceChunk, is_lap
from dataflows.connectors.kafka_sink import for_output
from dataflows.connectors.kafka_source import MessageRef, as_ref
from dataflows.metrics import ACCOUNT
from dataflows.outputs import BoardSnapshot, FlowOutput, LapChart, RaceOutput, Rejected, Tower
from dataflows.race.driver import DriverState, DriverUpdate
from dataflows.race.processor import RaceProcessor
from dataflows.race.strategist import Strategist
from schemas.model import Commentary, Lap, Leaderboard, RaceEvent, Recommendation, Session, Stint
from schemas.redis_layout import BoardUpdate, SessionDoc

if TYPE_CHECKING:
    from strategy.models import StrategyModels

KAFKA, REDIS, PG, RAW = "kafka", "redis", "pg", "raw"
_EVERY_SINK = frozenset({KAFKA, REDIS, PG, RAW})

#: The routing table: which sinks get each flow output. ``kafka`` and ``raw`` get the records of
#: the output topics (a board snapshot's leaderboard, a rejection's dead letter); ``redis`` and
#: ``pg`` the documents they store (:func:`document`). PostgreSQL
#: also gets every applied lap (:class:`DriverUpdate`) from the per-driver step.
ROUTES: dict[type, frozenset[str]] = {
    BoardSnapshot: _EVERY_SINK,
    RaceEvent: _EVERY_SINK,
    Commentary: _EVERY_SINK,
    Stint: _EVERY_SINK,
    Recommendation: _EVERY_SINK,
    Rejected: frozenset({KAFKA, RAW}),
    Session: frozenset({REDIS, PG}),
    LapChart: frozenset({REDIS, PG}),
    Tower: frozenset({PG}),
    DriverUpdate: frozenset({PG}),
}


def routed_to(sink: str) -> Callable[[object], bool]:
    """The filter of the items :data:`ROUTES` sends to ``sink``."""
    types = frozenset(t for t, to in ROUTES.items() if sink in to)

    def wanted(item: object) -> bool:
        return type(item) in types

    return wanted


@dataclass(frozen=True)
class RaceSinks:
    """Where the race flow writes (:data:`ROUTES` says what each gets). ``kafka`` gets
    ``(OUTPUT_PART, message)`` pairs, encoded messages for every output topic (dead letters
    included; see :class:`~dataflows.connectors.kafka_sink.KafkaOutputSink`); ``redis`` and ``pg``
    get the documents they store."""

    kafka: Sink[Any] | None = None
    redis: Sink[Any] | None = None
    #: PostgreSQL history: what Redis gets, plus every applied lap and the tower at the end of every lap
    pg: Sink[Any] | None = None
    #: optional: every output record, unencoded (tests and tools)
    raw: Sink[Any] | None = None


def _driver_step(state: DriverState | None, item: tuple[Lap, MessageRef]
                 ) -> tuple[DriverState, list[tuple[str, RaceChunk] | Rejected]]:
    state = state or DriverState()
    lap, msg = item
    result = state.update(lap)
    if result is None:
        ACCOUNT.count(lap.race_id, "duplicate")
        return state, []  # exact retry of a record already applied: idempotent
    if isinstance(result, Rejected):
        metrics.rejected(lap.race_id, result.error_type)
        return state, [result.attach(msg)]
    return state, [(lap.race_id, RaceChunk([(result, msg)]))]


class RaceLogic(StatefulBatchLogic[RaceChunk, FlowOutput, RaceProcessor]):
    """Bytewax glue around :class:`RaceProcessor` (pure); adds the wall clock, and emits flow
    outputs: a leaderboard as a :class:`BoardSnapshot` with the cars' positions at that instant,
    the session whenever it changes (and once after a restart)."""

    def __init__(self, race_id: str, resume: RaceProcessor | None, max_rate_hz: float,
                 strategy: bool = False, models: StrategyModels | None = None) -> None:
        self.proc = resume or RaceProcessor(race_id, max_rate_hz, keep_ref=as_ref,
                                            strategist=Strategist(models=models) if strategy else None)
        self._session_sent: object = None
        self._size_due = 0.0

    def _outputs(self, outputs: list[RaceOutput]) -> list[FlowOutput]:
        state = self.proc.state
        out: list[FlowOutput] = []
        if state is not None and state.session is not self._session_sent:
            self._session_sent = state.session
            out.append(state.session)
        for o in outputs:
            if isinstance(o, Leaderboard):
                if state is not None:
                    out.append(BoardSnapshot(o, state.positions(), state.session.name))
            elif isinstance(o, Rejected):
                metrics.rejected(self.proc.race_id, o.error_type)
                out.append(o)
            else:
                out.append(o)
        return out

    def on_batch(self, values: list[RaceChunk]) -> tuple[list[FlowOutput], bool]:
        items = [pair for chunk in values for pair in chunk]
        proc = self.proc
        if not proc.race_id and items:
            proc.race_id = str(items[0][0].race_id)
        held = len(proc.pending)
        outputs = proc.on_batch(items, time.monotonic())
        refused = sum(1 for o in outputs if isinstance(o, Rejected))
        # applied: what was read now or held for the session, less what is still held or refused
        ACCOUNT.count(proc.race_id, "applied", len(items) + held - len(proc.pending) - refused)
        now = time.monotonic()
        if proc.state is not None and now >= self._size_due:
            self._size_due = now + 1.0
            ACCOUNT.state_size(proc.race_id, proc.state.size())
        return self._outputs(outputs), StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[FlowOutput], bool]:
        return self._outputs(self.proc.on_notify(time.monotonic())), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        deadline = self.proc.notify_at_s()
        if deadline is None:
            return None
        return datetime.now(UTC) + timedelta(seconds=max(0.0, deadline - time.monotonic()))

    def snapshot(self) -> RaceProcessor:
        return self.proc


def _is_rejected(item: object) -> TypeGuard[Rejected]:
    return isinstance(item, Rejected)


def _lap_updates(item: tuple[str, RaceChunk]) -> list[DriverUpdate]:
    return [update for update, _msg in item[1]]


def _commentary(item: FlowOutput) -> list[Commentary]:
    if isinstance(item, RaceEvent):
        line = commentary_for(item)
        return [] if line is None else [line]
    return []


def _record(item: object) -> object:
    """The record of an output topic for a flow output (see :data:`ROUTES`)."""
    if isinstance(item, BoardSnapshot):
        return item.board
    if isinstance(item, Rejected):
        return item.dead_letter()
    return item


def document(item: object) -> object:
    """What the Redis and PostgreSQL sinks store for a flow output: a :class:`BoardUpdate` for a
    board snapshot, a :class:`SessionDoc` for the session, any other output as it is."""
    if type(item) is BoardSnapshot:
        return BoardUpdate(item.board, item.positions, item.name)
    if type(item) is Session:
        return SessionDoc(item)
    return item


def build_race_flow(source: Source[Any], sinks: RaceSinks, codec_factory: CodecFactory,
                    max_rate_hz: float = 4.0, flow_id: str = "racewire-race", strategy: bool = False,
                    models: StrategyModels | None = None) -> Dataflow:
    """``strategy``: publish strategy calls for every car at the end of every lap, with ``models``
    (:func:`strategy.models.load_models`; None: the shipped ones)."""
    flow = Dataflow(flow_id)
    messages: Stream[Any] = op.input("kafka-input", flow, source)
    # the decoder emits items already keyed: laps by race:driver, other records as race chunks
    decoded: Stream[tuple[str, Any] | Rejected] = op.flat_map_batch("decode", messages, Decoder(codec_factory))
    split = op.branch("split-decode-errors", decoded, _is_rejected)
    decode_rejected: Stream[Rejected] = split.trues
    by_topic = op.branch("split-laps", cast("KeyedStream[Any]", split.falses), is_lap)
    laps = cast("KeyedStream[tuple[Lap, MessageRef]]", by_topic.trues)
    chunks = cast("KeyedStream[RaceChunk]", by_topic.falses)

    driver_out = op.key_rm("unkey-driver", op.stateful_flat_map("driver-state", laps, _driver_step))
    driver_split = op.branch("split-driver-errors", driver_out, _is_rejected)
    driver_rejected: Stream[Rejected] = driver_split.trues
    applied_laps = cast("KeyedStream[RaceChunk]", driver_split.falses)

    race_in: KeyedStream[RaceChunk] = op.merge("merge-race-input", applied_laps, chunks)
    race_out: Stream[FlowOutput] = op.key_rm("unkey-race", op.stateful_batch(
        "race-state", race_in, lambda resume: RaceLogic("", resume, max_rate_hz, strategy, models)))
    commentary: Stream[Commentary] = op.flat_map("commentary", race_out, _commentary)

    parts: list[Stream[Any]] = [race_out, commentary, decode_rejected, driver_rejected]
    if sinks.pg is not None:
        parts.append(op.flat_map("lap-updates", applied_laps, _lap_updates))
    outputs: Stream[FlowOutput | DriverUpdate] = op.merge("merge-outputs", *parts)

    # each sink takes what ROUTES sends it, as records (Kafka, raw) or documents (Redis, PostgreSQL)
    if sinks.raw is not None:
        op.output("raw-output", op.map("raw-records", op.filter("for-raw", outputs, routed_to(RAW)), _record),
                  sinks.raw)
    if sinks.kafka is not None:
        records = op.map("kafka-records", op.filter("for-kafka", outputs, routed_to(KAFKA)), _record)
        encoded = op.map("encode", records, Encoder(codec_factory))
        op.output("kafka-output", op.map("route-kafka-output", encoded, for_output), sinks.kafka)
    if sinks.redis is not None:
        op.output("redis-output", op.map("redis-documents", op.filter("for-redis", outputs, routed_to(REDIS)),
                                           document), sinks.redis)
    if sinks.pg is not None:
        op.output("pg-output", op.map("pg-documents", op.filter("for-pg", outputs, routed_to(PG)), document),
                  sinks.pg)
    return flow


__all__ = ["ROUTES", "DriverUpdate", "RaceLogic", "RaceSinks", "build_race_flow", "routed_to"]

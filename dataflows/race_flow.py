"""The race dataflow: wiring only. Read it top-down, source to sinks.

    input ─ decode ─┬─ laps, keyed race:driver ─ driver-state ─┐
                    ├─ session / control / telemetry, ─────────┴─ race-state (keyed race) ─┬─ Redis
                    │  as one chunk per race and batch                    └─ commentary ───┤
                    └─ rejected ──────────────────────────────────────── dead letters ─────┴─ Kafka

``build_race_flow`` takes its source and sinks, so the same flow runs against Kafka in production
and against testing sources in tests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink

from dataflows import metrics
from dataflows.commentary import commentary_for
from dataflows.connectors.kafka import CodecFactory, Decoder, Encoder, RaceChunk, Rejected, dead_letter, is_lap
from dataflows.connectors.kafka_sink import for_output
from dataflows.connectors.kafka_source import as_ref
from dataflows.metrics import ACCOUNT
from dataflows.race.driver import DriverState, DriverUpdate, Rejection
from dataflows.race.processor import LapChart, RaceProcessor
from dataflows.race.processor import Rejected as RaceRejected
from dataflows.race.strategist import Strategist
from dataflows.race.towers import Tower
from schemas.model import Commentary, Leaderboard, RaceEvent, Recommendation, Stint
from schemas.redis_layout import BoardUpdate, SessionDoc

if TYPE_CHECKING:
    from strategy.models import StrategyModels


@dataclass(frozen=True)
class RaceSinks:
    """Where the race flow writes. ``kafka`` gets ``(OUTPUT_PART, message)`` pairs, encoded
    messages for every output topic (dead letters included; see
    :class:`~dataflows.connectors.kafka_sink.KafkaOutputSink`); ``redis`` gets
    :class:`BoardUpdate` and :class:`RaceEvent`."""

    kafka: Sink[Any] | None = None
    redis: Sink[Any] | None = None
    #: PostgreSQL history: gets what Redis gets plus every applied lap (:class:`DriverUpdate`) and
    #: the tower at the end of every lap (:class:`~dataflows.race.towers.Tower`)
    pg: Sink[Any] | None = None
    #: optional: every output object, unencoded (tests and tools)
    raw: Sink[Any] | None = None


def _driver_step(state: DriverState | None, item: tuple[Any, Any]) -> tuple[DriverState, list[Any]]:
    state = state or DriverState()
    lap, msg = item
    result = state.update(lap)
    if result is None:
        ACCOUNT.count(lap.race_id, "duplicate")
        return state, []  # exact retry of a record already applied: idempotent
    if isinstance(result, Rejection):
        metrics.rejected(lap.race_id, result.error_type)
        return state, [Rejected(result.reason, result.error_type, "driver-state", msg, lap.race_id)]
    return state, [(lap.race_id, RaceChunk([(result, msg)]))]


class RaceLogic(StatefulBatchLogic[Any, Any, RaceProcessor]):
    """Bytewax glue around :class:`RaceProcessor` (pure); adds the wall clock."""

    def __init__(self, race_id: str, resume: RaceProcessor | None, max_rate_hz: float,
                 strategy: bool = False, models: StrategyModels | None = None) -> None:
        self.proc = resume or RaceProcessor(race_id, max_rate_hz, keep_ref=as_ref,
                                            strategist=Strategist(models=models) if strategy else None)
        self._session_sent: object = None
        self._size_due = 0.0

    def _wrap(self, outputs: list[Any]) -> list[Any]:
        state = self.proc.state
        out: list[Any] = []
        if state is not None and state.session is not self._session_sent:
            self._session_sent = state.session
            out.append(SessionDoc(state.session))
        for o in outputs:
            if isinstance(o, Leaderboard) and state is not None:
                out.append(BoardUpdate(o, state.positions(), state.session.name))
            elif isinstance(o, RaceRejected):
                metrics.rejected(self.proc.race_id, o.rejection.error_type)
                out.append(Rejected(o.rejection.reason, o.rejection.error_type, "race-state", as_ref(o.ref),
                                    self.proc.race_id))
            else:
                out.append(o)
        return out

    def on_batch(self, values: list[Any]) -> tuple[list[Any], bool]:
        items = [pair for chunk in values for pair in chunk]
        proc = self.proc
        if not proc.race_id and items:
            proc.race_id = str(items[0][0].race_id)
        held = len(proc.pending)
        outputs = proc.on_batch(items, time.monotonic())
        refused = sum(1 for o in outputs if isinstance(o, RaceRejected))
        # applied: what was read now or held for the session, less what is still held or refused
        ACCOUNT.count(proc.race_id, "applied", len(items) + held - len(proc.pending) - refused)
        now = time.monotonic()
        if proc.state is not None and now >= self._size_due:
            self._size_due = now + 1.0
            ACCOUNT.state_size(proc.race_id, proc.state.size())
        return self._wrap(outputs), StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[Any], bool]:
        return self._wrap(self.proc.on_notify(time.monotonic())), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        deadline = self.proc.notify_at_s()
        if deadline is None:
            return None
        return datetime.now(UTC) + timedelta(seconds=max(0.0, deadline - time.monotonic()))

    def snapshot(self) -> RaceProcessor:
        return self.proc


def _is_rejected(item: Any) -> bool:
    return isinstance(item, Rejected)


def _lap_updates(item: tuple[str, RaceChunk]) -> list[Any]:
    return [update for update, _msg in item[1]]


def _commentary(item: Any) -> list[Commentary]:
    if isinstance(item, RaceEvent):
        line = commentary_for(item)
        return [] if line is None else [line]
    return []


def _to_kafka_object(item: Any) -> Any:
    if isinstance(item, BoardUpdate):
        return item.board
    if isinstance(item, Rejected):
        return dead_letter(item)
    return item


def _for_redis(item: Any) -> bool:
    return isinstance(item, (BoardUpdate, RaceEvent, Commentary, SessionDoc, LapChart, Stint, Recommendation))


def _for_pg(item: Any) -> bool:
    return _for_redis(item) or isinstance(item, Tower)


def _for_kafka(item: Any) -> bool:
    return not isinstance(item, (SessionDoc, LapChart, Tower))


def build_race_flow(source: Source[Any], sinks: RaceSinks, codec_factory: CodecFactory,
                    max_rate_hz: float = 4.0, flow_id: str = "racewire-race", strategy: bool = False,
                    models: StrategyModels | None = None) -> Dataflow:
    """``strategy``: publish strategy calls for every car at the end of every lap, with ``models``
    (:func:`strategy.models.load_models`; None: the shipped ones)."""
    flow = Dataflow(flow_id)
    messages = op.input("kafka-input", flow, source)
    decoded = op.flat_map_batch("decode", messages, Decoder(codec_factory))
    bad: Any = op.branch("split-decode-errors", decoded, _is_rejected)
    by_topic: Any = op.branch("split-laps", bad.falses, is_lap)

    # the decoder emits items already keyed: laps by race:driver, other records as race chunks
    laps: Any = by_topic.trues
    driver_out = op.key_rm("unkey-driver", op.stateful_flat_map("driver-state", laps, _driver_step))
    driver_bad: Any = op.branch("split-driver-errors", driver_out, _is_rejected)

    race_in: Any = op.merge("merge-race-input", driver_bad.falses, by_topic.falses)
    race_out = op.key_rm("unkey-race", op.stateful_batch(
        "race-state", race_in, lambda resume: RaceLogic("", resume, max_rate_hz, strategy, models)))

    commentary = op.flat_map("commentary", race_out, _commentary)
    outputs = op.merge("merge-outputs", race_out, commentary, bad.trues, driver_bad.trues)
    if sinks.raw is not None:
        op.output("raw-output", op.map("to-objects", op.filter("raw-records", outputs, _for_kafka),
                                       _to_kafka_object), sinks.raw)
    if sinks.kafka is not None:
        records = op.map("to-records", op.filter("kafka-records", outputs, _for_kafka), _to_kafka_object)
        encoded = op.map("encode", records, Encoder(codec_factory))
        op.output("kafka-output", op.map("route-kafka-output", encoded, for_output), sinks.kafka)
    if sinks.redis is not None:
        op.output("redis-output", op.filter("for-redis", outputs, _for_redis), sinks.redis)
    if sinks.pg is not None:
        laps_out = op.flat_map("lap-updates", driver_bad.falses, _lap_updates)
        op.output("pg-output", op.merge("merge-pg", laps_out, op.filter("for-pg", outputs, _for_pg)), sinks.pg)
    return flow


__all__ = ["DriverUpdate", "RaceLogic", "RaceSinks", "build_race_flow"]

"""The flow's Kafka output sink, on the resilient producer.

The sink has one partition (``out``), held by one worker, with one
:class:`~dataflows.connectors.producer.ResilientProducer` (spool ``flow-<step>-out``, so a
restarted flow delivers what its predecessor spooled); every worker routes its outputs there
(:data:`OUTPUT_PART`, see :func:`for_output`). Batches are handed to the producer without waiting
for the broker (an output reaches Redis and the browser without a round trip to Kafka on its
way); at the end of each epoch, before Bytewax commits the recovery snapshot, the partition's
``snapshot`` waits until every record so far is acknowledged by the broker or committed to the
disk spool (:meth:`~dataflows.connectors.producer.ResilientProducer.settle`), so a snapshot
never covers output that exists only in memory. A broker restart, even one that
loses its data, no longer ends the flow: the producer spools, recreates the topics and its
producer id, and resends; a full spool holds the flow back (back-pressure) instead of growing.
Outputs sent twice (acknowledgements lost with the broker, replays after a restart from
recovery) carry the same ``event_id``; consumers de-duplicate by it.

Each time the producer gives up a connection or a delivery attempt fails,
``racewire_flow_sink_retries_total{sink="kafka"}`` counts one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from dataflows.connectors.producer import ProducerOptions, ResilientProducer
from dataflows.connectors.retry import SINK_RETRIES
from dataflows.connectors.spool import as_headers

OutputMessage = KafkaSinkMessage[bytes | None, bytes | None]

SINK_CONFIG: dict[str, Any] = {"linger.ms": 2}
"""librdkafka settings of the flow's output producer (low latency: outputs go out at once)."""


#: the sink's one partition; items reach it as ``(OUTPUT_PART, message)``
OUTPUT_PART = "out"


def for_output(msg: OutputMessage) -> tuple[str, OutputMessage]:
    """An output message as the sink takes it (routed to its partition)."""
    return OUTPUT_PART, msg


class _OutputPartition(StatefulSinkPartition[OutputMessage, None]):
    def __init__(self, producer: ResilientProducer) -> None:
        self.producer = producer

    def write_batch(self, items: list[OutputMessage]) -> None:
        produce = self.producer.produce
        for msg in items:
            if msg.topic is None:
                raise ValueError(f"no topic to produce to for {msg!r}; the encoder sets one per output")
            produce(msg.topic, msg.value, msg.key, as_headers(msg.headers))

    def snapshot(self) -> None:
        self.producer.settle()  # before the epoch's snapshot commits: nothing only in memory

    def close(self) -> None:
        self.producer.close()


class KafkaOutputSink(FixedPartitionedSink[OutputMessage, None]):
    """Writes ``(OUTPUT_PART, KafkaSinkMessage)`` items (topic set on each) through a resilient producer."""

    def __init__(self, bootstrap: str, options: ProducerOptions, config: Mapping[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.options = options
        self.config = {**SINK_CONFIG, **(config or {}), "bootstrap.servers": bootstrap}

    def list_parts(self) -> list[str]:
        return [OUTPUT_PART]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _OutputPartition:
        retries = SINK_RETRIES.labels(sink="kafka")
        name = "flow-" + re.sub(r"[^A-Za-z0-9_-]+", "-", step_id).strip("-") + f"-{for_part}"
        return _OutputPartition(ResilientProducer(self.config, self.options, name=name, on_retry=retries.inc))

"""racewire's topics on a Kafka-compatible broker: create them with the configured partition count
before anyone produces, and name the ones whose partition count differs.

Input topics (:data:`schemas.codec.INPUT_TOPICS`) and output topics
(:data:`schemas.codec.OUTPUT_TOPICS`) get the same number of partitions, so a ``race_id`` key
lands on the same partition index everywhere. ``f1.race.session`` is compacted
(``cleanup.policy=compact``) where the broker accepts that config.

No racewire client lets the broker create a topic on its own (``allow.auto.create.topics`` is
off in :data:`NO_AUTO_CREATE`; tansu and Kafka both honour it): a topic created that way would
get the broker's default partition count, and keys would land on other partitions than the
dataflow's recovery state expects. Creation here is idempotent: a topic that already exists is
left as it is, and :func:`partition_mismatches` says which ones differ from the configured count.

This module lives at the Kafka edge of ``dataflows`` so that every producer (the flow's sink,
the sources, serving's ingest) can recreate the topics after a broker came back empty.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic

from schemas.codec import INPUT_TOPICS, OUTPUT_TOPICS

log = logging.getLogger("racewire.topics")

ALL_TOPICS: tuple[str, ...] = (*INPUT_TOPICS, *OUTPUT_TOPICS)
#: per-topic configs; dropped (with a warning) when a broker rejects them
TOPIC_CONFIGS: dict[str, dict[str, str]] = {"f1.race.session": {"cleanup.policy": "compact"}}
#: librdkafka setting for every racewire client: never let a metadata request create a topic
NO_AUTO_CREATE: dict[str, bool] = {"allow.auto.create.topics": False}
PARTITIONS_SETTING = "RACEWIRE_INPUT_PARTITIONS"


class TopicError(RuntimeError):
    """Topics could not be created or did not show up in the broker's metadata."""


@dataclass(frozen=True, slots=True)
class TopicMismatch:
    """An existing topic whose partition count is not the configured one."""

    topic: str
    found: int
    expected: int

    def message(self) -> str:
        return (
            f"topic {self.topic} has {self.found} partitions, expected {self.expected} ({PARTITIONS_SETTING}): "
            "keys map to partitions by their count, so the dataflow's recovery state and per-key order do not "
            f"fit it. Either set {PARTITIONS_SETTING}={self.found} to use the topic as it is, or delete it "
            f"(its records are lost) and run `racewire topics` to create it with {self.expected}"
        )

    def to_dict(self) -> dict[str, object]:
        return {"topic": self.topic, "found": self.found, "expected": self.expected, "message": self.message()}


# --------------------------------------------------------------------------------------------
# bootstrap strings


def bootstrap_addresses(bootstrap: str) -> list[tuple[str, int]]:
    """``"h1:9092,h2:9092"`` → ``[("h1", 9092), ("h2", 9092)]``; ValueError when malformed."""
    addresses = []
    for entry in (e.strip() for e in bootstrap.split(",")):
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"bad bootstrap server {entry!r}; expected HOST:PORT[,HOST:PORT]")
        addresses.append((host.strip("[]"), int(port)))
    return addresses


def bootstrap_open(bootstrap: str, timeout: float = 0.5) -> bool:
    """True when at least one bootstrap server accepts a TCP connection (no Kafka request)."""
    for host, port in bootstrap_addresses(bootstrap):
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            continue
    return False


def admin_client(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 3, **NO_AUTO_CREATE})


# --------------------------------------------------------------------------------------------
# creating and checking


def create_topics(
    bootstrap: str,
    partitions: int,
    topics: Iterable[str] | None = None,
    *,
    replication_factor: int = -1,
    timeout: float = 30.0,
) -> list[str]:
    """Create ``topics`` (default: all of racewire's) and wait until the broker lists them.

    ``replication_factor=-1`` uses the broker's default. Returns the topics that were created
    by this call; those that already existed are not in the list (see
    :func:`partition_mismatches` for their partition counts).
    """
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    bootstrap_addresses(bootstrap)  # ValueError early for a malformed list
    wanted = list(dict.fromkeys(ALL_TOPICS if topics is None else topics))
    deadline = time.monotonic() + timeout
    _wait_listening(bootstrap, deadline)
    admin = admin_client(bootstrap)

    existing = _metadata(admin, bootstrap, timeout).topics
    missing = [t for t in wanted if t not in existing]
    created: list[str] = []
    retry_plain: list[str] = []
    if missing:
        new = [NewTopic(t, partitions, replication_factor, config=TOPIC_CONFIGS.get(t, {})) for t in missing]
        for topic, error in _wait_all(admin.create_topics(new, operation_timeout=timeout), timeout):
            if error is None:
                created.append(topic)
            elif error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                pass  # created concurrently: fine
            elif topic in TOPIC_CONFIGS:
                log.warning("broker rejected the config of %s (%s); creating it without config=%s",
                            topic, error.str(), TOPIC_CONFIGS[topic])
                retry_plain.append(topic)
            else:
                raise TopicError(f"could not create topic {topic} on {bootstrap}: {error.str()}")
    if retry_plain:
        new = [NewTopic(t, partitions, replication_factor) for t in retry_plain]
        for topic, error in _wait_all(admin.create_topics(new, operation_timeout=timeout), timeout):
            if error is None:
                created.append(topic)
            elif error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise TopicError(f"could not create topic {topic} on {bootstrap}: {error.str()}")

    _wait_visible(admin, bootstrap, wanted, partitions, set(created), deadline)
    log.info("topics ready bootstrap=%s partitions=%d created=%s existing=%d", bootstrap, partitions,
             ",".join(created) or "-", len(wanted) - len(created))
    return created


def partition_mismatches(
    bootstrap: str, partitions: int, topics: Iterable[str] | None = None, timeout: float = 10.0
) -> list[TopicMismatch]:
    """The existing topics among ``topics`` whose partition count is not ``partitions``."""
    wanted = list(dict.fromkeys(ALL_TOPICS if topics is None else topics))
    metadata = _metadata(admin_client(bootstrap), bootstrap, timeout)
    out = []
    for topic in wanted:
        info = metadata.topics.get(topic)
        if info is not None and info.error is None and len(info.partitions) != partitions:
            out.append(TopicMismatch(topic, len(info.partitions), partitions))
    return out


def _wait_listening(bootstrap: str, deadline: float) -> None:
    """Wait for a TCP listener first: librdkafka would only print connection errors meanwhile."""
    while not bootstrap_open(bootstrap, 0.5):
        if time.monotonic() > deadline:
            raise TopicError(
                f"no Kafka broker listens at {bootstrap}; start one (the embedded stack) "
                "or set RACEWIRE_KAFKA_BOOTSTRAP / --bootstrap"
            )
        time.sleep(0.2)


def _metadata(admin: AdminClient, bootstrap: str, timeout: float) -> ClusterMetadata:
    try:
        return admin.list_topics(timeout=min(timeout, 10.0))
    except KafkaException as exc:
        raise TopicError(
            f"no Kafka broker answers at {bootstrap} ({exc.args[0].str() if exc.args else exc}); "
            "start one (the embedded stack) or set RACEWIRE_KAFKA_BOOTSTRAP / --bootstrap"
        ) from exc


def _wait_all(futures: Mapping[str, Future[None]], timeout: float) -> Iterable[tuple[str, KafkaError | None]]:
    for topic, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            yield topic, exc.args[0]
        else:
            yield topic, None


def _wait_visible(
    admin: AdminClient,
    bootstrap: str,
    wanted: list[str],
    partitions: int,
    created: set[str],
    deadline: float,
) -> None:
    """Poll metadata until every wanted topic is listed (created ones with all partitions)."""
    while True:
        metadata = _metadata(admin, bootstrap, max(1.0, deadline - time.monotonic()))
        pending = []
        for topic in wanted:
            info = metadata.topics.get(topic)
            incomplete = topic in created and len(info.partitions) < partitions if info else True
            if info is None or info.error is not None or incomplete:
                pending.append(topic)
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TopicError(f"topics not visible in the metadata of {bootstrap} in time: {', '.join(pending)}")
        time.sleep(0.1)

"""Create racewire's topics on a Kafka-compatible broker (``racewire topics``).

Input topics (:data:`schemas.codec.INPUT_TOPICS`) and output topics
(:data:`schemas.codec.OUTPUT_TOPICS`) get the same number of partitions, so a ``race_id`` key
lands on the same partition index everywhere. ``f1.race.session`` is compacted
(``cleanup.policy=compact``) where the broker accepts that config.

Creation is idempotent: a topic that already exists is left as it is (a warning says so when
its partition count differs from the one asked for).

    racewire topics --bootstrap 127.0.0.1:19092 --partitions 8
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic

from infra.services import bootstrap_addresses, bootstrap_open
from infra.settings import load_settings
from schemas.codec import INPUT_TOPICS, OUTPUT_TOPICS

log = logging.getLogger(__name__)

ALL_TOPICS: tuple[str, ...] = (*INPUT_TOPICS, *OUTPUT_TOPICS)
#: per-topic configs; dropped (with a warning) when a broker rejects them
TOPIC_CONFIGS: dict[str, dict[str, str]] = {"f1.race.session": {"cleanup.policy": "compact"}}


class TopicError(RuntimeError):
    """Topics could not be created or did not show up in the broker's metadata."""


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
    by this call; those that already existed are not in the list.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    bootstrap_addresses(bootstrap)  # ValueError early for a malformed list
    wanted = list(dict.fromkeys(ALL_TOPICS if topics is None else topics))
    deadline = time.monotonic() + timeout
    _wait_listening(bootstrap, deadline)
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})

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
                log.warning(
                    "broker rejected the config of %s (%s); creating it without config=%s",
                    topic,
                    error.str(),
                    TOPIC_CONFIGS[topic],
                )
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
    log.info(
        "topics ready bootstrap=%s partitions=%d created=%s existing=%d",
        bootstrap,
        partitions,
        ",".join(created) or "-",
        len(wanted) - len(created),
    )
    return created


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
    warned: set[str] = set()
    while True:
        metadata = _metadata(admin, bootstrap, max(1.0, deadline - time.monotonic()))
        pending = []
        for topic in wanted:
            info = metadata.topics.get(topic)
            incomplete = topic in created and len(info.partitions) < partitions if info else True
            if info is None or info.error is not None or incomplete:
                pending.append(topic)
            elif len(info.partitions) != partitions and topic not in warned:
                warned.add(topic)
                log.warning(
                    "topic %s already exists with %d partitions (asked for %d); left as it is",
                    topic,
                    len(info.partitions),
                    partitions,
                )
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TopicError(f"topics not visible in the metadata of {bootstrap} in time: {', '.join(pending)}")
        time.sleep(0.1)


# --------------------------------------------------------------------------------------------
# racewire topics


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        help="Kafka bootstrap servers (default: RACEWIRE_KAFKA_BOOTSTRAP, "
        "else the embedded broker at 127.0.0.1:RACEWIRE_KAFKA_PORT)",
    )
    parser.add_argument(
        "--partitions",
        type=_positive_int,
        metavar="N",
        help="partitions per topic (default: RACEWIRE_INPUT_PARTITIONS, 8)",
    )
    parser.add_argument(
        "--topic",
        action="append",
        dest="topics",
        metavar="NAME",
        help="create only this topic (repeatable); default: all of racewire's topics",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the broker (default 30)")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(kafka_bootstrap=args.bootstrap, input_partitions=args.partitions)
    bootstrap = settings.kafka_bootstrap or f"127.0.0.1:{settings.kafka_port}"
    unknown = sorted(set(args.topics or ()) - set(ALL_TOPICS))
    if unknown:
        log.warning("creating topics racewire does not use: %s", ", ".join(unknown))
    try:
        created = create_topics(bootstrap, settings.input_partitions, args.topics, timeout=args.timeout)
    except (TopicError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    print(
        json.dumps(
            {
                "bootstrap": bootstrap,
                "partitions": settings.input_partitions,
                "topics": list(args.topics or ALL_TOPICS),
                "created": created,
            }
        )
    )
    return 0

"""Shared fixtures: services for integration and flow tests, started lazily, once per session.

Each service fixture uses, in order: an explicit ``RACEWIRE_TEST_*`` variable, the server that
runs on a development machine (Redis 127.0.0.1:6379, PostgreSQL 127.0.0.1:5432 database
``test``), else an embedded server started from a Python package on a free port. The broker is
always embedded unless ``RACEWIRE_TEST_KAFKA_BOOTSTRAP`` names one.

| fixture            | scope    | gives                                                         |
|--------------------|----------|---------------------------------------------------------------|
| ``kafka_bootstrap``| session  | ``"127.0.0.1:PORT"``, racewire's topics created, 4 partitions  |
| ``redis_url``      | session  | ``redis://host:port/db``                                      |
| ``redis_client``   | function | ``redis.Redis`` (bytes); drops the ``unique_race_id`` keys     |
| ``postgres_url``   | session  | ``postgresql://user@host:port/db``                            |
| ``registry_url``   | session  | URL of racewire's schema registry (``infra.registry``)        |
| ``unique_race_id`` | function | ``"t-<8 hex>"``: namespace keys and records by it             |
| ``shared_data``    | session  | ``Path`` of ``../shared/data``, or skip                       |

Servers may be shared with other users (a developer's Redis): never ``FLUSHALL``/``FLUSHDB``;
write under keys that contain ``unique_race_id``.

Tests under ``tests/integration`` are marked ``integration`` and tests under
``tests/acceptance`` are marked ``acceptance`` automatically; ``acceptance`` tests are skipped
when ``../shared/data`` is absent.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import redis

# Service clients and servers are imported inside the fixtures, so unit tests never load them.

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
TEST_PARTITIONS = 4
DEV_REDIS_URL = "redis://127.0.0.1:6379/0"
DEV_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"

_AUTO_MARKS = {"integration": "integration", "acceptance": "acceptance"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_dir = REPO_ROOT / "tests"
    for item in items:
        try:
            top = item.path.relative_to(tests_dir).parts[0]
        except (ValueError, IndexError):
            continue
        mark = _AUTO_MARKS.get(top)
        if mark is not None and item.get_closest_marker(mark) is None:
            item.add_marker(mark)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("acceptance") is not None and not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not present")


# ------------------------------------------------------------------------------------------
# Kafka


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a broker that has racewire's topics (4 partitions each)."""
    from infra.services import EmbeddedKafka, free_port
    from infra.topics import create_topics

    external = os.environ.get("RACEWIRE_TEST_KAFKA_BOOTSTRAP")
    if external:
        create_topics(external, TEST_PARTITIONS)
        yield external
        return
    with EmbeddedKafka(free_port(), tmp_path_factory.mktemp("kafka")) as kafka:
        create_topics(kafka.bootstrap, TEST_PARTITIONS)
        yield kafka.bootstrap


# ------------------------------------------------------------------------------------------
# Redis


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis-compatible server: RACEWIRE_TEST_REDIS_URL, the local one, or an embedded one."""
    from infra.services import EmbeddedRedis, free_port, redis_reachable

    external = os.environ.get("RACEWIRE_TEST_REDIS_URL")
    if external:
        yield external
        return
    if redis_reachable(DEV_REDIS_URL):
        yield DEV_REDIS_URL
        return
    with EmbeddedRedis(free_port(), tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture
def redis_client(redis_url: str, request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """A client (``decode_responses=False``). When the test also uses ``unique_race_id``, the
    keys that contain it are deleted afterwards; nothing else is ever flushed."""
    import redis

    # resolved now (not at teardown) so it is the very id the test got
    race_id: str | None = None
    if "unique_race_id" in request.fixturenames:
        race_id = request.getfixturevalue("unique_race_id")
    client = redis.Redis.from_url(redis_url, decode_responses=False)
    try:
        yield client
    finally:
        if race_id is not None:
            keys = list(client.scan_iter(match=f"*{race_id}*", count=1000))
            if keys:
                client.delete(*keys)
        client.close()


@pytest.fixture
def unique_race_id() -> str:
    """A race id no other test uses: ``"t-<8 hex>"``."""
    return f"t-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------------------------------
# PostgreSQL


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """PostgreSQL: RACEWIRE_TEST_DATABASE_URL, the local one, or an embedded one."""
    from infra.services import EmbeddedPostgres, free_port, postgres_reachable

    external = os.environ.get("RACEWIRE_TEST_DATABASE_URL")
    if external:
        yield external
        return
    if postgres_reachable(DEV_DATABASE_URL):
        yield DEV_DATABASE_URL
        return
    server = EmbeddedPostgres(free_port(), tmp_path_factory.mktemp("postgres"), fsync=False)
    with server:
        yield server.url


# ------------------------------------------------------------------------------------------
# schema registry


@pytest.fixture(scope="session")
def registry_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of racewire's own schema registry, on a free port, data in a temporary folder."""
    from infra.registry import RegistryServer  # lazily: only tests that need it import it

    server = RegistryServer(data_dir=tmp_path_factory.mktemp("registry"), port=0)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------
# data


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real race tables), or skip the test when it is not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not present")
    return SHARED_DATA

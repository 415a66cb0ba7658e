"""Fixtures shared by the history tests (REST and GraphQL)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from dataflows.connectors.pg_sink import PgWriter
from infra.migrate import migrate
from tests.integration.test_pg_sink import _race


@pytest.fixture(scope="module")
def stored(postgres_url: str) -> Iterator[tuple[str, list[Any]]]:
    """A schema of its own holding one race (race id ``r``, 4 cars, 3 laps); its conninfo and outputs."""
    schema = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    conninfo = make_conninfo(postgres_url, options=f"-csearch_path={schema}")
    try:
        migrate(conninfo)
        _r, outputs = _race()
        writer = PgWriter(conninfo)
        writer.write(outputs)
        writer.close()
        yield conninfo, outputs
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")



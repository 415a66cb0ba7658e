"""Versioned schema migrations for the PostgreSQL history store.

Migrations are plain SQL files in ``infra/migrations`` named ``NNNN_what.sql``; they are applied
in version order, each inside its own transaction together with its row in ``schema_migrations``
(version, name, SHA-256 of the file, when). :func:`migrate` is idempotent (applied versions are
skipped) and holds a PostgreSQL advisory lock while it works, so two processes starting at once
apply each migration exactly once. Tables are created unqualified, in the connection's first
``search_path`` schema (tests use a schema of their own).

Run it by hand with ``python -m infra.migrate postgresql://user@host:port/db``.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: advisory lock key (any constant bigint; "racewire" in ASCII)
LOCK_KEY = 0x7261636577697265
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """The migrations folder or the database's record of it is inconsistent."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations in ``directory``, by version; a badly named or duplicate file is an error."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if m is None:
            raise MigrationError(f"{path}: migration files are named NNNN_lower_case_name.sql")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(f"{path}: version {version} also used by {found[version].name}")
        found[version] = Migration(version, path.stem, path.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def migrate(conninfo: str, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply the migrations not yet applied; returns the versions applied now (empty when none).

    Raises :class:`MigrationError` when an applied migration's file has changed since (never edit
    an applied migration: add a new one) or when the database has versions this code does not know.
    """
    migrations = load_migrations(directory)
    applied_now: list[int] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            conn.execute(_CREATE_TABLE)
            done = {int(v): str(c) for v, c in conn.execute("SELECT version, checksum FROM schema_migrations")}
            known = {m.version for m in migrations}
            unknown = sorted(set(done) - known)
            if unknown:
                raise MigrationError(f"the database has migrations {unknown} that {directory} lacks: "
                                     "run a newer racewire against it")
            for m in migrations:
                if m.version in done:
                    if done[m.version] != m.checksum:
                        raise MigrationError(f"migration {m.name} changed after it was applied; "
                                             "restore it and add a new migration instead")
                    continue
                with conn.transaction():
                    conn.execute(m.sql.encode())  # bytes: no client-side placeholder parsing
                    conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                                 (m.version, m.name, m.checksum))
                applied_now.append(m.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    return applied_now


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m infra.migrate POSTGRESQL_URL", file=sys.stderr)
        return 2
    applied = migrate(args[0])
    print(f"applied {applied}" if applied else "schema up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

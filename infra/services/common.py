"""What every embedded server shares: ports, errors, locating its binary, and the lifecycle of a
server process (start in its own process group, wait until it answers, stop the whole group)."""

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

log = logging.getLogger(__name__)

LOCALHOST = "127.0.0.1"
LOG_TAIL_LINES = 40


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


def tcp_open(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_executable(path: Path, what: str) -> Path:
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


def package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # locate without importing the package
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


class EmbeddedServer(ABC):
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
        """Start the server and return once it answers; see :mod:`infra.services`."""
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
                **as_account(self._run_as),
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

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
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


def as_account(account: str | None) -> _AccountKwargs:
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

"""The errors of the schema registry: API errors carry Confluent's HTTP status and error code."""

from __future__ import annotations

import errno


class RegistryError(Exception):
    """An API error: HTTP status, Confluent error code, message."""

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


class InvalidSchemaError(RegistryError):
    """The schema is not valid Avro, or uses what this registry does not support (422, 42201)."""

    def __init__(self, message: str) -> None:
        super().__init__(422, 42201, message)


class PortInUseError(OSError):
    """The port the registry should listen on is taken."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(
            errno.EADDRINUSE,
            f"port {port} on {host} is in use; pass --port or set RACEWIRE_REGISTRY_PORT to a free "
            f"port (or stop whatever listens on {port}) to start the schema registry",
        )
        self.host = host
        self.port = port

    def __str__(self) -> str:
        return str(self.strerror)


class RegistryDataError(RuntimeError):
    """The registry's data directory cannot be used (unreadable state, or in use)."""

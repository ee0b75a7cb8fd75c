"""Errors of the local development services, grouped under ``mesh.errors``."""

from __future__ import annotations

from pathlib import Path

from mesh.errors import PermanentError, ServiceStartError

__all__ = ["DevInstallError", "DevServiceError", "PortInUseError"]


class DevServiceError(ServiceStartError):
    """A local service (Kafka or Redis) failed to start or stop; the message ends with its log tail."""

    def __init__(
        self,
        message: str,
        *,
        service: str,
        log_path: Path | None = None,
        log_tail: str = "",
    ) -> None:
        text = message
        if log_tail:
            text = f"{message}\n--- last lines of {log_path} ---\n{log_tail}"
        super().__init__(text)
        self.service = service
        self.log_path = log_path
        self.log_tail = log_tail


class PortInUseError(DevServiceError):
    """A port the service needs is already taken by a process ``mesh dev`` did not start."""

    def __init__(self, message: str, *, service: str, port: int) -> None:
        super().__init__(message, service=service)
        self.port = port


class DevInstallError(PermanentError):
    """Installing a service's software (Maven resolve, apt-get) failed; the message says how to fix it."""


"""How the Kafka clients authenticate and encrypt: one settings object for producer, consumer, admin.

Every field is named exactly as aiokafka names the client argument, and read from the
environment as ``MESH_KAFKA_<NAME>`` (``MESH_KAFKA_SECURITY_PROTOCOL``,
``MESH_KAFKA_SASL_MECHANISM``, ``MESH_KAFKA_SASL_PLAIN_USERNAME``, ...), so a managed cluster
(Confluent Cloud, MSK, Strimzi with TLS) is reached by setting variables, not by changing code.
Secrets (the SASL password, the key password, an OAuth token) may be given as a file path instead
(``..._FILE``), which is how a mounted Kubernetes Secret arrives.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any, Literal

from aiokafka.abc import AbstractTokenProvider
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError
from aiokafka.helpers import create_ssl_context
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mesh.errors import ConfigError

__all__ = ["FileTokenProvider", "KafkaSecurity"]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]


class FileTokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    """OAUTHBEARER tokens read from a file on every (re)authentication.

    A sidecar or a projected service-account token keeps the file fresh; the client never holds a
    token longer than one connection handshake.
    """

    def __init__(self, path: Path) -> None:
        """Read tokens from ``path``."""
        self.path = path

    async def token(self) -> str:
        """The current token (surrounding whitespace stripped)."""
        try:
            value = self.path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the Kafka OAuth token file {self.path}: {exc.strerror}") from None
        if not value:
            raise ConfigError(f"the Kafka OAuth token file {self.path} is empty")
        return value


class KafkaSecurity(BaseSettings):
    """TLS and SASL settings of every Kafka client of the mesh (``MESH_KAFKA_*``)."""

    model_config = SettingsConfigDict(env_prefix="MESH_KAFKA_", extra="ignore", frozen=True)

    security_protocol: SecurityProtocol = "PLAINTEXT"
    """``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``."""

    sasl_mechanism: SaslMechanism = "PLAIN"
    """``PLAIN``, ``SCRAM-SHA-256``, ``SCRAM-SHA-512`` or ``OAUTHBEARER`` (SASL protocols only)."""

    sasl_plain_username: str | None = None
    """SASL user (PLAIN and SCRAM)."""

    sasl_plain_password: SecretStr | None = None
    """SASL password (PLAIN and SCRAM); or ``sasl_plain_password_file``."""

    sasl_plain_password_file: Path | None = None
    """File holding the SASL password (a mounted Secret); read at start."""

    sasl_oauth_token_file: Path | None = None
    """File holding the OAUTHBEARER token, re-read on every authentication."""

    ssl_cafile: Path | None = None
    """PEM bundle of the CAs that sign the brokers' certificates (the system's CAs when unset)."""

    ssl_certfile: Path | None = None
    """Client certificate (PEM) for mutual TLS."""

    ssl_keyfile: Path | None = None
    """Private key (PEM) of the client certificate."""

    ssl_password: SecretStr | None = None
    """Password of ``ssl_keyfile`` when it is encrypted."""

    ssl_check_hostname: bool = True
    """Check that the broker's certificate names the host dialled (leave on outside tests)."""

    connections_max_idle_ms: int = Field(default=540000, ge=1000)
    """Close idle connections after this long (managed clusters drop them at 10 minutes)."""

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSecurity:
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and self.sasl_mechanism == "OAUTHBEARER":
            if self.sasl_oauth_token_file is None:
                raise ValueError("sasl_mechanism OAUTHBEARER needs MESH_KAFKA_SASL_OAUTH_TOKEN_FILE")
        elif sasl and (not self.sasl_plain_username or (self.sasl_plain_password is None and self.sasl_plain_password_file is None)):
            raise ValueError(
                f"security_protocol {self.security_protocol} with {self.sasl_mechanism} needs "
                "MESH_KAFKA_SASL_PLAIN_USERNAME and MESH_KAFKA_SASL_PLAIN_PASSWORD (or ..._PASSWORD_FILE)"
            )
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "sasl_plain_password_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name} {path} is not a readable file")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together (mutual TLS needs both)")
        return self

    @classmethod
    def from_env(cls) -> KafkaSecurity:
        """Read ``MESH_KAFKA_*``; a bad combination is a ``ConfigError`` that says which variable."""
        try:
            return cls()
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise ConfigError(f"Kafka security settings: {_first_error(exc)}") from None

    @property
    def uses_tls(self) -> bool:
        """Whether connections are encrypted."""
        return self.security_protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for the clients, or None on plaintext protocols."""
        if not self.uses_tls:
            return None
        try:
            context = create_ssl_context(
                cafile=str(self.ssl_cafile) if self.ssl_cafile else None,
                certfile=str(self.ssl_certfile) if self.ssl_certfile else None,
                keyfile=str(self.ssl_keyfile) if self.ssl_keyfile else None,
                password=self.ssl_password.get_secret_value() if self.ssl_password else None,
            )
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"Kafka TLS settings: cannot load certificates or key: {exc}") from None
        context.check_hostname = self.ssl_check_hostname
        return context

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``AIOKafkaProducer``, ``AIOKafkaConsumer`` and the admin client."""
        kwargs: dict[str, Any] = {
            "security_protocol": self.security_protocol,
            "connections_max_idle_ms": self.connections_max_idle_ms,
        }
        context = self.ssl_context()
        if context is not None:
            kwargs["ssl_context"] = context
        if self.security_protocol.startswith("SASL_"):
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            if self.sasl_mechanism == "OAUTHBEARER":
                assert self.sasl_oauth_token_file is not None  # checked by the validator
                kwargs["sasl_oauth_token_provider"] = FileTokenProvider(self.sasl_oauth_token_file)
            else:
                kwargs["sasl_plain_username"] = self.sasl_plain_username
                kwargs["sasl_plain_password"] = self._password()
        return kwargs

    def _password(self) -> str:
        if self.sasl_plain_password is not None:
            return self.sasl_plain_password.get_secret_value()
        assert self.sasl_plain_password_file is not None
        try:
            return self.sasl_plain_password_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read {self.sasl_plain_password_file}: {exc.strerror}") from None

    async def diagnose(self, bootstrap_servers: str, *, timeout_s: float = 10.0) -> str | None:
        """Why connecting to the first bootstrap server fails, in one line; None if it works.

        aiokafka reports any failed bootstrap as "Unable to bootstrap" and logs the cause; one
        direct connection with the same settings surfaces the cause (bad credentials, an untrusted
        certificate, a plaintext client on a TLS port) so the error a user sees names it.
        """
        first = bootstrap_servers.split(",")[0].strip()
        host, _, port = first.rpartition(":")
        kwargs = self.client_kwargs()
        kwargs.pop("connections_max_idle_ms", None)
        try:
            conn = await asyncio.wait_for(
                create_conn(host.strip("[]") or first, int(port or 9092), request_timeout_ms=int(timeout_s * 1000), **kwargs),
                timeout_s,
            )
        except ssl.SSLCertVerificationError as exc:
            return f"the broker's TLS certificate is not trusted ({exc.verify_message}); check MESH_KAFKA_SSL_CAFILE"
        except ssl.SSLError as exc:
            return f"TLS handshake with {first} failed ({exc.reason or exc}); is it a TLS listener?"
        except TimeoutError:
            return f"no answer from {first} within {timeout_s:.0f} s (a TLS client on a plaintext port hangs like this)"
        except (KafkaError, OSError, ValueError) as exc:
            name = type(exc).__name__
            if "Sasl" in name or "Authentication" in name or "authentication" in str(exc).lower():
                who = self.sasl_plain_username or "the OAuth token"
                return f"SASL {self.sasl_mechanism} authentication failed for {who} (wrong user or password?)"
            return f"{name}: {exc}"
        conn.close()
        return None

    def describe(self) -> str:
        """One line for logs: protocol, mechanism, user; never a password."""
        if not self.security_protocol.startswith("SASL_"):
            return self.security_protocol
        who = self.sasl_plain_username or "token file"
        return f"{self.security_protocol} {self.sasl_mechanism} as {who}"


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        loc = ".".join(str(x) for x in first.get("loc", ()))
        msg = str(first.get("msg", exc)).removeprefix("Value error, ")
        return f"MESH_KAFKA_{loc.upper()}: {msg}" if loc else msg
    return str(exc)

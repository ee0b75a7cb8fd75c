"""Kafka TLS + SASL against a real broker with a SASL_SSL listener.

A private broker (``dev_services_factory``) gets a TLS listener whose certificate is signed by a CA
this test generates with ``cryptography``; SCRAM users are written at storage format
(``--add-scram``), PLAIN users in the listener's JAAS line. The clients are configured only
through :class:`mesh.bus.KafkaSecurity`, as ``MESH_KAFKA_*`` variables would.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mesh.bus import KafkaBus, KafkaSecurity, SubscriptionOptions
from mesh.dev import DevServices, free_port
from mesh.errors import BusError, ConfigError
from protocols import Envelope, Topics, WorkflowCompleted

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

USERS = {"alice": "alice-" + uuid.uuid4().hex[:12], "bob": "bob-" + uuid.uuid4().hex[:12]}


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(tmp: Path, cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp / f"{cn}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def _server_pem(tmp: Path, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    path = tmp / "broker.pem"
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM)
    )
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("tls")
    ca_key, ca_cert, ca_path = _ca(tmp, "mesh-test-ca")
    _, _, stranger = _ca(tmp, "somebody-else-ca")
    return {"ca": ca_path, "untrusted_ca": stranger, "keystore": _server_pem(tmp, ca_key, ca_cert)}


@pytest.fixture(scope="module")
def secure_broker(tls_material: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServices]:
    from mesh.dev import DevConfig

    root = tmp_path_factory.mktemp("secure-kafka")
    services = DevServices(DevConfig.isolated(
        root, kafka_sasl_ssl_port=free_port(), kafka_ssl_keystore_pem=tls_material["keystore"],
        kafka_sasl_users=USERS,
    ))
    services.up(services=("kafka",))
    try:
        yield services
    finally:
        services.down()


def _bus(services: DevServices, security: KafkaSecurity, prefix: str) -> KafkaBus:
    bootstrap = services.config.kafka_sasl_ssl_bootstrap
    assert bootstrap
    return KafkaBus(bootstrap, topics=Topics(prefix=prefix), partitions=1, security=security,
                    request_timeout_ms=10_000)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
async def test_a_correct_client_publishes_and_consumes_over_sasl_ssl(
    secure_broker: DevServices, tls_material: dict[str, Path], mechanism: str,
) -> None:
    prefix = f"sec-{uuid.uuid4().hex[:8]}"
    security = KafkaSecurity(security_protocol="SASL_SSL", sasl_mechanism=mechanism,  # type: ignore[arg-type]
                             sasl_plain_username="alice", sasl_plain_password=USERS["alice"],  # type: ignore[arg-type]
                             ssl_cafile=tls_material["ca"])
    async with _bus(secure_broker, security, prefix) as bus:
        sub = await bus.subscribe([bus.topics.workflow_events], group=f"{prefix}.g",
                                  options=SubscriptionOptions(session_timeout_ms=6000))
        env = Envelope.of(WorkflowCompleted(status="succeeded", steps=1), sender="alice", workflow_id="wf-1")
        await bus.publish(bus.topics.workflow_events, env)
        got: list[Envelope] = []
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            got = [d.envelope for d in await sub.poll(timeout_ms=500)]
        assert [e.id for e in got] == [env.id]


async def _fails_fast(make: Callable[[], KafkaBus]) -> tuple[BusError, float]:
    started = time.monotonic()
    bus = make()
    with pytest.raises(BusError) as caught:
        await asyncio.wait_for(bus.start(), 60)
    await bus.aclose()
    return caught.value, time.monotonic() - started


async def test_a_wrong_password_fails_with_a_clear_error_not_a_hang(
    secure_broker: DevServices, tls_material: dict[str, Path],
) -> None:
    security = KafkaSecurity(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                             sasl_plain_username="alice", sasl_plain_password="not-" + USERS["alice"],  # type: ignore[arg-type]
                             ssl_cafile=tls_material["ca"])
    error, took = await _fails_fast(lambda: _bus(secure_broker, security, "sec-wrong"))
    text = str(error).lower()
    assert "authentication" in text and "alice" in text, error
    assert USERS["alice"] not in str(error)
    assert took < 30, f"took {took:.1f} s to fail"


async def test_an_untrusted_certificate_fails_with_a_clear_error_not_a_hang(
    secure_broker: DevServices, tls_material: dict[str, Path],
) -> None:
    security = KafkaSecurity(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                             sasl_plain_username="alice", sasl_plain_password=USERS["alice"],  # type: ignore[arg-type]
                             ssl_cafile=tls_material["untrusted_ca"])
    error, took = await _fails_fast(lambda: _bus(secure_broker, security, "sec-untrusted"))
    assert "certificate" in str(error).lower(), error
    assert took < 30, f"took {took:.1f} s to fail"


async def test_plaintext_client_on_the_tls_listener_fails_fast(secure_broker: DevServices) -> None:
    error, took = await _fails_fast(lambda: _bus(secure_broker, KafkaSecurity(), "sec-plain"))
    assert took < 30, f"took {took:.1f} s to fail: {error}"


def test_settings_come_from_the_environment_and_bad_combinations_say_which_variable(
    monkeypatch: pytest.MonkeyPatch, tls_material: dict[str, Path], tmp_path: Path,
) -> None:
    monkeypatch.setenv("MESH_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("MESH_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("MESH_KAFKA_SASL_PLAIN_USERNAME", "bob")
    password_file = tmp_path / "password"
    password_file.write_text(USERS["bob"] + "\n")
    monkeypatch.setenv("MESH_KAFKA_SASL_PLAIN_PASSWORD_FILE", str(password_file))
    monkeypatch.setenv("MESH_KAFKA_SSL_CAFILE", str(tls_material["ca"]))
    security = KafkaSecurity.from_env()
    kwargs = security.client_kwargs()
    assert kwargs["sasl_plain_password"] == USERS["bob"] and kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    assert kwargs["ssl_context"] is not None
    assert USERS["bob"] not in security.describe() and USERS["bob"] not in repr(security)
    monkeypatch.delenv("MESH_KAFKA_SASL_PLAIN_PASSWORD_FILE")
    with pytest.raises(ConfigError, match="MESH_KAFKA_SASL_PLAIN_PASSWORD"):
        KafkaSecurity.from_env()
    monkeypatch.setenv("MESH_KAFKA_SECURITY_PROTOCOL", "SASL_SSL_TYPO")
    with pytest.raises(ConfigError, match="MESH_KAFKA_SECURITY_PROTOCOL"):
        KafkaSecurity.from_env()

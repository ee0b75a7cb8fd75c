"""Helpers for the replicated-Redis tests: port blocks, private clusters, TLS material."""

from __future__ import annotations

import datetime as dt
import ipaddress
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mesh.dev import DevConfig, LocalRedisCluster, LocalRedisSentinel
from mesh.dev._config import ephemeral_port_range
from mesh.dev._process import port_is_free

__all__ = [
    "TlsFiles",
    "free_port_block",
    "make_redis_cluster",
    "make_redis_sentinel",
    "make_tls_files",
    "redis_cluster",
]


def free_port_block(count: int, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive free ports below the ephemeral range (a cluster's nodes and buses)."""
    low, _ = ephemeral_port_range()
    top = max(low, 21000) - count
    for _ in range(500):
        base = random.randrange(20000, top)
        if all(port_is_free(host, p) for p in range(base, base + count)):
            return base
    raise OSError(f"no {count} consecutive free ports in 20000-{top + count}")


@dataclass(frozen=True)
class TlsFiles:
    """A CA, a server certificate for 127.0.0.1 signed by it, a client certificate, and a stranger CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    untrusted_ca: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def _ca(tmp: Path, cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp / f"{cn}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def _leaf(
    tmp: Path,
    cn: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    *,
    server: bool,
) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    cert_path = tmp / f"{cn}.crt"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, _write_key(key, tmp / f"{cn}.key")


def make_tls_files(tmp: Path) -> TlsFiles:
    """Generate every certificate a TLS test needs under ``tmp`` (with ``cryptography``)."""
    ca_key, ca_cert, ca_path = _ca(tmp, "mesh-redis-test-ca")
    _, _, stranger = _ca(tmp, "somebody-else-ca")
    server_cert, server_key = _leaf(tmp, "redis-server", ca_key, ca_cert, server=True)
    client_cert, client_key = _leaf(tmp, "mesh-agent", ca_key, ca_cert, server=False)
    return TlsFiles(ca_path, server_cert, server_key, client_cert, client_key, stranger)


# -- replicated Redis (mesh.dev._redis_ha), private to this session ------------------------------


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    """A Redis Cluster (3 masters + 3 replicas) on free ports, for this session only; stopped after.

    Tests that kill nodes make their own (``make_redis_cluster``), so this one stays whole.
    """
    cluster = LocalRedisCluster(
        DevConfig.isolated(tmp_path_factory.mktemp("redis-cluster")), base_port=free_port_block(12)
    )
    cluster.up()
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture
def make_redis_cluster(tmp_path: Path) -> Iterator[Callable[..., LocalRedisCluster]]:
    """Make private Redis Clusters (``make(**LocalRedisCluster options)``), started; all stopped after the test."""
    made: list[LocalRedisCluster] = []

    def make(**options: Any) -> LocalRedisCluster:
        cluster = LocalRedisCluster(
            DevConfig.isolated(tmp_path / f"cluster-{len(made)}"),
            base_port=free_port_block(12),
            **options,
        )
        made.append(cluster)
        cluster.up()
        return cluster

    yield make
    for cluster in made:
        cluster.down()


@pytest.fixture
def make_redis_sentinel(tmp_path: Path) -> Iterator[Callable[..., LocalRedisSentinel]]:
    """Make private sentinel sets (master, replica, 3 sentinels), started; all stopped after the test."""
    made: list[LocalRedisSentinel] = []

    def make(**options: Any) -> LocalRedisSentinel:
        sentinel = LocalRedisSentinel(
            DevConfig.isolated(tmp_path / f"sentinel-{len(made)}"),
            base_port=free_port_block(5),
            **options,
        )
        made.append(sentinel)
        sentinel.up()
        return sentinel

    yield make
    for sentinel in made:
        sentinel.down()

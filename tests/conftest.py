"""Fixtures shared by every test: real Kafka and Redis for the session, unique names per test.

* ``kafka_bootstrap`` / ``redis_url`` (session): taken from ``MESH_KAFKA_BOOTSTRAP`` /
  ``MESH_REDIS_URL`` when set; otherwise the local services of :mod:`mesh.dev` are brought up
  (on first use only: a unit run starts nothing). A service the session started is stopped when
  the last concurrent test session using it ends (a lease); one that already ran is left alone.
  ``MESH_TEST_KEEP_SERVICES=1`` leaves started services running for fast re-runs.
* ``topic_prefix`` / ``key_prefix`` (per test): unique names; topics and keys under them are
  deleted after the test when it used Kafka / Redis.
* ``dev_services_factory`` (per test): private services on free ports under ``tmp_path`` for
  tests that stop, kill or restart them, so they never disturb the shared ones.

Tests under ``tests/integration`` and ``tests/chaos`` get the ``integration`` marker (and chaos
tests the ``chaos`` marker) automatically, so ``pytest -m "not integration"`` runs unit tests only.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mesh.dev import DevConfig, DevServices
from mesh.security import DATA_KEY_ENV, generate_data_key

# Secrets at rest are sealed with a data key: one per test session, inherited by agent processes.
os.environ.setdefault(DATA_KEY_ENV, generate_data_key())

_TESTS_DIR = Path(__file__).resolve().parent
_SERVICE_DIRS = {"integration": ("integration",), "chaos": ("integration", "chaos")}
# Fast feedback first: unit tests, then integration, then chaos (stable within each group).
_RUN_ORDER = {"integration": 1, "chaos": 2}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by folder, then run unit tests first."""
    for item in items:
        for marker in _SERVICE_DIRS.get(_top_dir(item), ()):
            item.add_marker(getattr(pytest.mark, marker))
    items.sort(key=lambda item: _RUN_ORDER.get(_top_dir(item), 0))


def _top_dir(item: pytest.Item) -> str:
    try:
        return Path(item.path).resolve().relative_to(_TESTS_DIR).parts[0]
    except (ValueError, IndexError):
        return ""


def pytest_report_header(config: pytest.Config) -> str:
    """Say where the integration tests will find Kafka and Redis."""
    dev = DevConfig()
    kafka = os.environ.get("MESH_KAFKA_BOOTSTRAP") or f"{dev.kafka_bootstrap} (mesh dev)"
    redis = os.environ.get("MESH_REDIS_URL") or f"{dev.redis_url} (mesh dev)"
    return f"mesh services: kafka={kafka} redis={redis}"


# -- shared services ---------------------------------------------------------------------------


def _keep_services() -> bool:
    return os.environ.get("MESH_TEST_KEEP_SERVICES", "") not in ("", "0", "false")


@pytest.fixture(scope="session")
def dev_services() -> DevServices:
    """The shared local services (``MESH_DEV_*`` configuration); not started by this fixture."""
    return DevServices()


@pytest.fixture(scope="session")
def kafka_bootstrap(dev_services: DevServices) -> Iterator[str]:
    """Bootstrap address of a running Kafka: ``MESH_KAFKA_BOOTSTRAP`` or the local broker."""
    external = os.environ.get("MESH_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    with dev_services.lease(services=("kafka",), keep_running=_keep_services()):
        yield dev_services.kafka_bootstrap


@pytest.fixture(scope="session")
def redis_url(dev_services: DevServices) -> Iterator[str]:
    """URL of a running Redis: ``MESH_REDIS_URL`` or the local server."""
    external = os.environ.get("MESH_REDIS_URL")
    if external:
        yield external
        return
    with dev_services.lease(services=("redis",), keep_running=_keep_services()):
        yield dev_services.redis_url


# -- per-test names and cleanup ----------------------------------------------------------------


def _slug(request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    return name[:32].strip("-") or "test"


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A topic-name prefix unique to this test (``t-<test>-<uuid8>``); its topics are deleted after."""
    prefix = f"t-{_slug(request)}-{uuid.uuid4().hex[:8]}"
    yield prefix
    if "kafka_bootstrap" in request.fixturenames:
        _delete_topics(request.getfixturevalue("kafka_bootstrap"), prefix)


@pytest.fixture
def key_prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A Redis key prefix unique to this test (``test:<uuid12>:``); its keys are deleted after."""
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    if "redis_url" in request.fixturenames:
        _delete_keys(request.getfixturevalue("redis_url"), prefix)


def _delete_keys(url: str, prefix: str) -> None:
    import redis

    with redis.Redis.from_url(url) as client:
        batch = list(client.scan_iter(match=f"{prefix}*", count=500))
        for start in range(0, len(batch), 500):
            client.delete(*batch[start : start + 500])


def _delete_topics(bootstrap: str, prefix: str) -> None:
    async def delete() -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
        await admin.start()
        try:
            doomed = [t for t in await admin.list_topics() if t.startswith(prefix)]
            if doomed:
                await admin.delete_topics(doomed)
        finally:
            await admin.close()

    # Its own loop in a worker thread: teardown may run while a test's loop is still set.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, delete()).result()


# -- private services for destructive tests ----------------------------------------------------


@pytest.fixture
def dev_services_factory(tmp_path: Path) -> Iterator[Callable[..., DevServices]]:
    """Make private :class:`DevServices` on free ports under ``tmp_path``; all stopped after the test.

    Call ``make(**DevConfig overrides)`` then ``.up(services=...)``; kill and restart them freely
    (``restart_redis(kill=True)``, ``stop_kafka()``...). The Kafka jar cache is shared.
    """
    made: list[DevServices] = []

    def make(**overrides: object) -> DevServices:
        services = DevServices(DevConfig.isolated(tmp_path / f"services-{len(made)}", **overrides))
        made.append(services)
        return services

    yield make
    for services in made:
        services.down()

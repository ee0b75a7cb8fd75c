"""Fixtures of the telemetry tests: a clean OTEL environment and an in-memory span exporter."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mesh.telemetry import flush_tracing, secret_registry, setup_tracing, shutdown_tracing

_ENV = (
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_TRACES_SAMPLER",
    "OTEL_RESOURCE_ATTRIBUTES",
    "MESH_TRACING",
)

SECRET = "s3cr3t-VALUE-9f2c71d0"
"""A secret value registered for the duration of each test that asks for ``secret``."""


@pytest.fixture(autouse=True)
def clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts without OTEL_* settings and without a configured provider."""
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    shutdown_tracing()
    yield
    shutdown_tracing()


@pytest.fixture
def secret() -> Iterator[str]:
    """``SECRET``, registered in the process-wide registry while the test runs."""
    secret_registry().add(SECRET)
    yield SECRET
    secret_registry().discard(SECRET)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    """Tracing configured for this test, exporting into memory."""
    mem = InMemorySpanExporter()
    setup_tracing("mesh-test", agent_id="agent-1", role="fetch", exporter=mem, set_global=False)
    return mem


@pytest.fixture
def finished(exporter: InMemorySpanExporter) -> Callable[[], dict[str, ReadableSpan]]:
    """Flushes the batch processor and returns the finished spans by name."""

    def get() -> dict[str, ReadableSpan]:
        assert flush_tracing(5_000)
        return {s.name: s for s in exporter.get_finished_spans()}

    return get

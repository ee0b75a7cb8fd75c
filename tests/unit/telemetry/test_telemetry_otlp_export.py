"""Real OTLP/HTTP export to a local receiver, in process and across a real process boundary.

The receiver decodes the protobuf bodies exactly as a collector or Jaeger's OTLP endpoint would,
so these tests prove the wire path, not just the SDK calls.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from mesh.telemetry import (
    Kpis,
    inject_headers,
    reasoner_span,
    setup_metrics,
    setup_tracing,
    shutdown_metrics,
    shutdown_tracing,
    step_span,
    tracing_info,
    workflow_span,
    workflow_trace_id,
)

REPO = Path(__file__).resolve().parents[3]


class OtlpReceiver:
    """A minimal OTLP/HTTP receiver on 127.0.0.1 that keeps every decoded request."""

    def __init__(self) -> None:
        self.traces: list[ExportTraceServiceRequest] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.content_types: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.content_types.append(self.headers.get("Content-Type", ""))
                if self.path == "/v1/traces":
                    receiver.traces.append(ExportTraceServiceRequest.FromString(body))
                    reply = ExportTraceServiceResponse().SerializeToString()
                elif self.path == "/v1/metrics":
                    receiver.metrics.append(ExportMetricsServiceRequest.FromString(body))
                    reply = ExportMetricsServiceResponse().SerializeToString()
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def spans(self) -> dict[str, Any]:
        """Every received span by name, with its resource attributes attached."""
        out: dict[str, Any] = {}
        for request in self.traces:
            for rs in request.resource_spans:
                resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        out[span.name] = (span, resource)
        return out


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(x) for x in v.array_value.values)
    return getattr(v, kind) if kind else None


def _attrs(span: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in span.attributes}


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    """A running receiver, with the standard OTEL variables pointing at it."""
    with OtlpReceiver() as srv:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.endpoint)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        yield srv


def test_telemetry_spans_reach_an_otlp_http_receiver(receiver: OtlpReceiver, secret: str) -> None:
    setup_tracing("mesh-otlp-test", agent_id="agent-otlp", role="fetch", set_global=False)
    info = tracing_info()
    assert info is not None and info.exporters == ("otlp",)
    with (
        workflow_span("wf-otlp"),
        step_span("wf-otlp", "fetch", role="fetch", agent_id="agent-otlp"),
    ):
        with reasoner_span(model="claude-x", temperature=0.2, max_tokens=256) as call:
            call.record_response(input_tokens=11, output_tokens=7, finish_reasons=["end_turn"])
            call.set("mesh.note", f"token={secret}")
    shutdown_tracing()  # flushes the batch processor

    spans = receiver.spans()
    assert set(spans) == {"workflow wf-otlp", "step fetch", "chat claude-x"}
    assert all(ct == "application/x-protobuf" for ct in receiver.content_types)
    chat, resource = spans["chat claude-x"]
    assert int.from_bytes(chat.trace_id, "big") == workflow_trace_id("wf-otlp")
    assert resource["service.name"] == "mesh-otlp-test"
    assert resource["service.instance.id"] == "agent-otlp"
    assert resource["mesh.role"] == "fetch"
    attrs = _attrs(chat)
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "anthropic"
    assert attrs["gen_ai.request.model"] == "claude-x"
    assert attrs["gen_ai.request.temperature"] == pytest.approx(0.2)
    assert attrs["gen_ai.usage.input_tokens"] == 11
    assert attrs["gen_ai.usage.output_tokens"] == 7
    assert attrs["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert attrs["mesh.note"] == "token=[REDACTED]"
    step, _ = spans["step fetch"]
    assert chat.parent_span_id == step.span_id
    raw = b"".join(r.SerializeToString() for r in receiver.traces)
    assert secret.encode() not in raw


_CHILD = textwrap.dedent(
    """
    import sys
    from mesh.telemetry import from_kafka_headers, setup_tracing, shutdown_tracing, step_span, turn_span

    headers = [("traceparent", sys.argv[1].encode())]
    setup_tracing("mesh-child", agent_id="agent-child", role="validate")
    with step_span("wf-proc", "validate", role="validate", agent_id="agent-child",
                   trace_carrier=from_kafka_headers(headers)) as step:
        with turn_span(1):
            pass
    print(step.trace_id)
    shutdown_tracing()
    """
)


@pytest.mark.timeout(60)
def test_telemetry_trace_continues_in_a_real_child_process(receiver: OtlpReceiver) -> None:
    setup_tracing("mesh-parent", agent_id="agent-parent", role="identity", set_global=False)
    with (
        workflow_span("wf-proc"),
        step_span("wf-proc", "identity", role="identity", agent_id="agent-parent") as sender,
    ):
        carrier = inject_headers()
    shutdown_tracing()

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, carrier["traceparent"]],
        capture_output=True,
        text=True,
        timeout=50,
        env=env,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == sender.trace_id

    spans = receiver.spans()
    remote_step, remote_resource = spans["step validate"]
    remote_turn, _ = spans["turn 1"]
    local_step, _ = spans["step identity"]
    assert remote_resource["service.instance.id"] == "agent-child"
    assert remote_step.trace_id == local_step.trace_id
    assert int.from_bytes(remote_step.trace_id, "big") == workflow_trace_id("wf-proc")
    assert remote_step.parent_span_id == local_step.span_id
    assert remote_turn.parent_span_id == remote_step.span_id


def test_telemetry_kpis_reach_an_otlp_http_receiver(receiver: OtlpReceiver) -> None:
    provider = setup_metrics("mesh-kpi-test", agent_id="agent-k", role="fetch", set_global=False)
    try:
        kpis = Kpis(provider, attributes={"mesh.role": "fetch"})
        kpis.record_turn_latency(12.5)
        kpis.record_step_started(resumed=True)
    finally:
        shutdown_metrics()
    names = {
        m.name
        for req in receiver.metrics
        for rm in req.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    assert {"mesh.turn.latency", "mesh.recovery.count", "mesh.step.started"} <= names

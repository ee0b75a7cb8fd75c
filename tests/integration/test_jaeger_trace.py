"""The demo's trace read back from a real Jaeger v2, and its KPIs from a real OTLP metrics receiver.

``mesh demo`` runs as a child process (five agent processes, a real SIGKILL of the fetch owner and
a takeover) with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at Jaeger's OTLP/HTTP receiver. The test
then reads the workflow's trace back over Jaeger's HTTP query API and checks what an operator
relies on: one trace per workflow whose id ``mesh demo`` printed, spans from every agent process
(including the one that took over), parent links intact across the Kafka hops, GenAI attributes on
reasoner spans, messaging attributes on publish/consume spans, and no secret in any attribute.

Jaeger does not store metrics, so the agents' OTLP metrics go to a small OTLP/HTTP receiver here
(``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``) that decodes the protobuf bodies as a collector would.

The Jaeger binary is built by ``.ci/tools.d/30-jaeger.sh``; without it the test skips, or fails
when ``MESH_REQUIRE_JAEGER=1`` (CI).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from agents.mock_ehr import DEFAULT_CLIENT_SECRET
from mesh.dev import free_port
from mesh.telemetry import workflow_trace_id

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
JAEGER_VERSION = "v1.76.0"
AGENT_IDS = {"identity-1", "fetch-1", "fetch-2", "validate-1", "report-1"}
API_KEY = "sk-ant-test-" + hashlib.sha256(b"jaeger-test").hexdigest()[:24]


def _jaeger_bin() -> Path:
    if not os.environ.get("MESH_JAEGER_BIN") and os.environ.get("MESH_REQUIRE_JAEGER") != "1":
        pytest.skip("MESH_JAEGER_BIN is not set (.ci/tools.d/30-jaeger.sh builds Jaeger and exports it)")
    path = Path(os.environ.get("MESH_JAEGER_BIN") or Path.home() / f".cache/agent-mesh/bin/jaeger-{JAEGER_VERSION}")
    if not os.access(path, os.X_OK):
        message = f"no Jaeger binary at {path} (build it: bash .ci/tools.d/30-jaeger.sh)"
        if os.environ.get("MESH_REQUIRE_JAEGER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass
class Jaeger:
    """A running all-in-one Jaeger v2 with in-memory storage, on free ports."""

    otlp_http: str
    query: str


_CONFIG = """
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp_http}
      grpc:
        endpoint: 127.0.0.1:{otlp_grpc}
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


@pytest.fixture
def jaeger(tmp_path: Path) -> Iterator[Jaeger]:
    """Jaeger started from its own config (OTLP and query API on free ports), stopped after."""
    binary = _jaeger_bin()
    ports = {name: free_port() for name in ("query", "query_grpc", "otlp_http", "otlp_grpc")}
    config = tmp_path / "jaeger.yaml"
    config.write_text(_CONFIG.format(**ports))
    log = open(tmp_path / "jaeger.log", "wb")
    proc = subprocess.Popen([str(binary), "--config", str(config)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    query = f"http://127.0.0.1:{ports['query']}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "jaeger.log").read_text()[-3000:]
            try:
                if httpx.get(f"{query}/api/services", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "jaeger query API not up after 60 s"
            time.sleep(0.2)
        yield Jaeger(otlp_http=f"http://127.0.0.1:{ports['otlp_http']}", query=query)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


class MetricsReceiver:
    """OTLP/HTTP ``/v1/metrics`` on a free port, keeping every decoded export request."""

    def __init__(self) -> None:
        self.requests: list[ExportMetricsServiceRequest] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/metrics":
                    self.send_error(404)
                    return
                receiver.requests.append(ExportMetricsServiceRequest.FromString(body))
                reply = ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/metrics"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def metric_names_by_agent(self) -> dict[str, set[str]]:
        """Metric names each ``service.instance.id`` exported."""
        out: dict[str, set[str]] = {}
        for request in self.requests:
            for rm in request.resource_metrics:
                attrs = {a.key: a.value.string_value for a in rm.resource.attributes}
                names = out.setdefault(attrs.get("service.instance.id", "?"), set())
                for sm in rm.scope_metrics:
                    names.update(m.name for m in sm.metrics)
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _tags(span_or_process: dict[str, Any]) -> dict[str, Any]:
    return {t["key"]: t["value"] for t in span_or_process.get("tags", [])}


def _fetch_trace(jaeger: Jaeger, trace_id: str) -> dict[str, Any] | None:
    resp = httpx.get(f"{jaeger.query}/api/traces/{trace_id}", timeout=10)
    if resp.status_code != 200:
        return None
    data = resp.json().get("data") or []
    return data[0] if data else None


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def test_demo_trace_read_back_from_jaeger(tmp_path: Path, jaeger: Jaeger, kafka_bootstrap: str, redis_url: str) -> None:
    metrics = MetricsReceiver()
    fake = subprocess.Popen([sys.executable, "-m", "mesh.testing.fake_anthropic", "--port", str(free_port())],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        line = fake.stdout.readline() if fake.stdout else ""
        match = re.search(r"listening on (http://\S+)", line)
        assert match, line
        env = {
            **os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "220", "NO_COLOR": "1",
            "MESH_KAFKA_BOOTSTRAP": kafka_bootstrap, "MESH_REDIS_URL": redis_url,
            "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_http,
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": metrics.url,
            "OTEL_METRIC_EXPORT_INTERVAL": "1000",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            # Every agent reasons through the real anthropic SDK, against a local Messages API.
            "MESH_DEMO_RULES": "0", "ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": match.group(1),
        }
        for name in ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "MESH_TRACING",
                     "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SERVICE_NAME"):
            env.pop(name, None)
        demo = subprocess.run(
            [sys.executable, "-m", "mesh", "demo", "--patients", "6", "--page-size", "2",
             "--kill-after-turn", "2", "--turn-delay-s", "0.3", "--run-dir", str(tmp_path / "demo")],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=280,
        )
        out = demo.stdout
        assert demo.returncode == 0, out[-4000:] + demo.stderr[-2000:]
        wf = re.search(r"submitted workflow (\S+)", out)
        printed = re.search(r"trace id\W+([0-9a-f]{32})", out)
        killed = re.search(r"SIGKILL\s+(\S+)", out)
        took_over = re.search(r"failover:\s+(\S+) took over fetch", out)
        assert wf and printed and killed and took_over, out[-4000:]
        trace_id = format(workflow_trace_id(wf.group(1)), "032x")
        assert printed.group(1) == trace_id  # the summary prints the workflow's one trace id

        # Read the trace back until every process's spans are in (batch exports lag a little).
        deadline = time.monotonic() + 60
        while True:
            trace = _fetch_trace(jaeger, trace_id)
            instances = set()
            if trace is not None:
                instances = {_tags(p).get("service.instance.id") for p in trace["processes"].values()}
            if AGENT_IDS <= instances or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert trace is not None, "trace not found in Jaeger"
        processes = {pid: _tags(p) for pid, p in trace["processes"].items()}
        instance_of = {s["spanID"]: processes[s["processID"]].get("service.instance.id") for s in trace["spans"]}
        spans = trace["spans"]
        assert AGENT_IDS | {"demo"} <= set(instance_of.values()), set(instance_of.values())
        assert took_over.group(1) in set(instance_of.values())
        assert {s["traceID"] for s in spans} == {trace_id}  # one trace for the whole workflow

        # Parent links: every referenced parent is in the trace, except under the step span the
        # SIGKILLed process never got to end (it is never exported, by construction).
        by_id = {s["spanID"]: s for s in spans}
        roots = [s for s in spans if not s.get("references")]
        assert [r["operationName"] for r in roots] == ["workflow patient-reconciliation"], [r["operationName"] for r in roots]
        dangling = [s for s in spans for r in s.get("references", []) if r["spanID"] not in by_id]
        assert all(instance_of[s["spanID"]] == killed.group(1) for s in dangling), [
            (instance_of[s["spanID"]], s["operationName"]) for s in dangling]
        # Across Kafka hops: each step span's parent is the submit span in the demo process.
        step_spans = [s for s in spans if s["operationName"].startswith("step ")]
        assert {s["operationName"] for s in step_spans} >= {"step identity", "step fetch", "step validate", "step report"}
        for s in step_spans:
            parent = by_id[s["references"][0]["spanID"]]
            assert instance_of[parent["spanID"]] == "demo" and instance_of[s["spanID"]] != "demo"
            tags = _tags(s)
            assert tags["messaging.system"] == "kafka" and tags["messaging.operation.type"] == "process"
            assert tags["messaging.destination.name"].endswith(".workflow.events")
            assert tags["span.kind"] == "consumer"
        resumed = [s for s in step_spans if s["operationName"] == "step fetch" and _tags(s).get("mesh.step.resumed")]
        assert took_over.group(1) in {instance_of[s["spanID"]] for s in resumed}
        root_tags = _tags(roots[0])
        assert root_tags["messaging.operation.type"] == "send" and root_tags["messaging.system"] == "kafka"
        sends = [s for s in spans if s["operationName"].startswith("send ")]
        assert sends and all(_tags(s)["messaging.system"] == "kafka" and _tags(s)["messaging.operation.type"] == "send"
                             and _tags(s)["span.kind"] == "producer" for s in sends)
        assert {instance_of[s["spanID"]] for s in sends} >= AGENT_IDS - {killed.group(1)}

        # GenAI semantic conventions on every reasoner call, with the provider-reported usage.
        # (The anthropic SDK traces its own calls too, as `anthropic.messages.create` children of
        # ours; the checks below are about the runtime's reasoner spans.)
        chats = [s for s in spans if _tags(s).get("gen_ai.operation.name") == "chat"
                 and not s["operationName"].startswith("anthropic.")]
        assert {instance_of[s["spanID"]] for s in chats} >= AGENT_IDS - {killed.group(1)}
        for s in chats:
            tags = _tags(s)
            assert tags["gen_ai.request.model"] and s["operationName"] == f"chat {tags['gen_ai.request.model']}"
            assert tags["gen_ai.provider.name"] == "anthropic" and tags["span.kind"] == "client"
            assert tags["gen_ai.usage.input_tokens"] > 0 and tags["gen_ai.usage.output_tokens"] > 0

        # No secret anywhere: not the API key, not the EHR client secret, not any access token the
        # EHR issued (its audit log names each by a digest; every token-like word is checked).
        issued: set[str] = set()
        audit = re.search(r"audit log (\S+)\)", out)
        assert audit, out[-3000:]
        for raw in Path(audit.group(1)).read_text().splitlines():
            entry = json.loads(raw)
            if entry.get("token_id"):
                issued.add(entry["token_id"])
        assert issued, "the EHR issued no token: nothing to check"
        texts = list(_strings(trace))
        blob = "\n".join(texts)
        assert API_KEY not in blob and DEFAULT_CLIENT_SECRET not in blob
        words = set(re.findall(r"[A-Za-z0-9_-]{20,}", blob))
        leaked = [w for w in words if hashlib.sha256(w.encode()).hexdigest()[:16] in issued]
        assert not leaked, "an access token reached a span"

        # KPIs exported as OTel metrics by the agent processes themselves.
        deadline = time.monotonic() + 30
        while True:
            by_agent = metrics.metric_names_by_agent()
            if AGENT_IDS - {killed.group(1)} <= set(by_agent) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        for agent in AGENT_IDS - {killed.group(1)}:
            assert {"mesh.turn.latency", "mesh.checkpoint.write_time", "mesh.context.utilization",
                    "mesh.step.started", "gen_ai.client.token.usage"} <= by_agent.get(agent, set()), (agent, by_agent)
        assert "mesh.recovery.count" in by_agent[took_over.group(1)]
    finally:
        fake.terminate()
        fake.wait(timeout=10)
        if fake.stdout is not None:
            fake.stdout.close()
        metrics.close()

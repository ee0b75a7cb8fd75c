"""A stand-in OTLP/HTTP trace collector for the ``collector-down`` scenario (``python -m mesh.chaos.otlp_sink``).

It answers 200 to every ``POST /v1/traces`` and ``/v1/metrics`` and counts them, so a campaign can
SIGKILL a real collector process and start it again on the same port while agents export to it.
By default it does not decode what it receives: the scenario is about the exporters when the
collector goes away, not about the spans (the Jaeger test checks those). With ``--decode`` it
also writes one JSON line per metric data point it receives (``{"agent", "metric", "attributes",
"value"}``), which is how a test reads back what agent processes export (Jaeger stores no metrics).
"""

from __future__ import annotations

import argparse
import gzip
import json
import signal
import sys
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM; print ``ready on PORT`` once listening; append one line per export to ``--log``."""
    parser = argparse.ArgumentParser(prog="python -m mesh.chaos.otlp_sink")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument(
        "--decode", action="store_true", help="also log each metric data point as a JSON line"
    )
    args = parser.parse_args(argv)
    lock = threading.Lock()
    log = args.log.open("a", encoding="utf-8")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            points: list[str] = []
            if args.decode and self.path == "/v1/metrics":
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                points = [json.dumps(p, sort_keys=True) for p in _metric_points(body)]
            with lock:
                log.write(f"{self.path} {length}\n")
                log.writelines(f"{p}\n" for p in points)
                log.flush()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    signal.signal(
        signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start()
    )
    print(f"ready on {args.port}", flush=True)
    server.serve_forever()
    log.close()
    return 0


def _metric_points(body: bytes) -> list[dict[str, Any]]:
    """Every data point of an OTLP ``ExportMetricsServiceRequest``, flattened."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    def value(v: Any) -> Any:
        kind = v.WhichOneof("value")
        return getattr(v, kind) if kind else None

    out: list[dict[str, Any]] = []
    for rm in ExportMetricsServiceRequest.FromString(body).resource_metrics:
        resource = {kv.key: value(kv.value) for kv in rm.resource.attributes}
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                for point in getattr(metric, kind).data_points:
                    if kind in ("gauge", "sum"):
                        number: Any = getattr(point, point.WhichOneof("value") or "as_double")
                    else:  # histograms: how many values were recorded
                        number = point.count
                    out.append(
                        {
                            "agent": resource.get("service.instance.id", ""),
                            "metric": metric.name,
                            "attributes": {kv.key: value(kv.value) for kv in point.attributes},
                            "value": number,
                        }
                    )
    return out


if __name__ == "__main__":
    sys.exit(main())

"""A stand-in OTLP/HTTP trace collector for the ``collector-down`` scenario (``python -m mesh.chaos.otlp_sink``).

It answers 200 to every ``POST /v1/traces`` and ``/v1/metrics`` and counts them, so a campaign can
SIGKILL a real collector process and start it again on the same port while agents export to it.
It does not decode what it receives: the scenario is about the exporters when the collector goes
away, not about the spans (the Jaeger test checks those).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM; print ``ready on PORT`` once listening; append one line per export to ``--log``."""
    parser = argparse.ArgumentParser(prog="python -m mesh.chaos.otlp_sink")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args(argv)
    lock = threading.Lock()
    log = args.log.open("a", encoding="utf-8")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            with lock:
                log.write(f"{self.path} {length}\n")
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


if __name__ == "__main__":
    sys.exit(main())

"""A broker outage in a few log lines: the Kafka client's error flood aggregated per outage.

With the broker down, aiokafka logs every failed connect, metadata refresh, fetch and coordinator
request (about 160 ERROR lines per second per agent). ``OutageLog`` is a logging filter on the
aiokafka loggers: the first connection error of an outage becomes one line ("broker unreachable"),
every later warning or error of the client is counted instead of printed, a summary line comes out
every ``summary_every_s`` while it lasts, and ``tick`` (called by the consume loop) prints one line
when the errors have stopped for ``quiet_after_s`` ("reachable again", with the count).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from mesh.security._redaction import redact_text

__all__ = ["OutageLog", "outage_log"]

log = logging.getLogger("mesh.bus.kafka")

# What a Kafka client says when it cannot reach the broker (aiokafka's own messages).
_OUTAGE_MARKERS = (
    "unable connect",
    "connect call failed",
    "connection refused",
    "nodenotready",
    "not ready",
    "unable to update metadata",
    "kafkaconnectionerror",
    "coordinator dead",
    "coordinator request failed",
    "failed fetch messages",
    "requesttimedout",
    "kafkatimeouterror",
    "timed out",
    "unreachable",
)


class OutageLog(logging.Filter):
    """Counts a Kafka client's warnings and errors during an outage instead of printing them."""

    def __init__(
        self,
        *,
        summary_every_s: float = 30.0,
        quiet_after_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.summary_every_s = summary_every_s
        self.quiet_after_s = quiet_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self.down_since: float | None = None
        self._last_error = 0.0
        self._last_summary = 0.0
        self._suppressed: Counter[str] = Counter()
        self._total = 0
        self.outages = 0
        """Outages seen by this process (a state change to "unreachable")."""

    @property
    def down(self) -> bool:
        """Whether the broker is unreachable as far as the client's errors tell."""
        return self.down_since is not None

    def filter(self, record: logging.LogRecord) -> bool:
        """Let the record through unless it is part of an outage's flood."""
        if record.levelno < logging.WARNING:
            return True
        text = record.getMessage()
        now = self._clock()
        with self._lock:
            if self.down_since is None:
                if not any(m in text.lower() for m in _OUTAGE_MARKERS):
                    return True  # a client warning outside an outage (a rebalance): as is
                self.down_since = self._last_error = self._last_summary = now
                self._suppressed.clear()
                self._total = 0
                self.outages += 1
                first = redact_text(" ".join(text.split()))[:300]
            else:
                self._last_error = now
                self._suppressed[f"{record.name}: {record.msg}"[:120]] += 1
                self._total += 1
                first = ""
                summary = self._summary_due(now)
        if first:
            log.error("kafka: broker unreachable (%s); client errors are counted, not printed, until it is back "
                      "(a summary every %.0f s)", first, self.summary_every_s)
        elif summary:
            log.warning("kafka: broker still unreachable after %.0f s; %s", now - (self.down_since or now), summary)
        return False

    def _summary_due(self, now: float) -> str:
        if now - self._last_summary < self.summary_every_s:
            return ""
        self._last_summary = now
        top = ", ".join(f"{n} x {key}" for key, n in self._suppressed.most_common(3))
        return f"{self._total} client error line(s) suppressed so far ({top})"

    def tick(self) -> None:
        """Say when an outage ended (no client error for ``quiet_after_s``), or summarize it."""
        if self.down_since is None:
            return
        now = self._clock()
        with self._lock:
            if self.down_since is None:
                return
            if now - self._last_error >= self.quiet_after_s:
                lasted, total = self._last_error - self.down_since, self._total
                self.down_since = None
                ended = True
                summary = ""
            else:
                ended = False
                summary = self._summary_due(now)
        if ended:
            log.warning("kafka: broker reachable again (errors for %.0f s; %d client error line(s) suppressed)",
                        lasted, total)
        elif summary:
            log.warning("kafka: broker still unreachable after %.0f s; %s", now - (self.down_since or now), summary)


_installed: OutageLog | None = None
_install_lock = threading.Lock()


def outage_log() -> OutageLog:
    """The process's one ``OutageLog``, installed on every aiokafka logger on first call."""
    global _installed
    with _install_lock:
        if _installed is None:
            _installed = OutageLog()
            # A filter on a logger sees only records logged on that logger, not its children:
            # put it on each aiokafka module's logger (they exist once aiokafka is imported).
            names = {"aiokafka"} | {n for n in logging.Logger.manager.loggerDict if n.startswith("aiokafka.")}
            for name in sorted(names):
                logging.getLogger(name).addFilter(_installed)
        return _installed

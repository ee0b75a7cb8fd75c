"""W3C trace context in envelopes and Kafka headers, and the one-trace-per-workflow root.

A step runs in whatever process owns its partition, often long after and far from the process
that submitted the workflow. Two mechanisms keep all of it in one trace:

* the sender injects its span's context into the envelope's ``trace`` field (and the Kafka
  headers); the receiver extracts it and parents its span on it;
* where no context travelled (a client without tracing, an old event replayed), the trace id and
  root span id are derived from the workflow id itself (``workflow_root_context``), so every
  process independently lands in the same trace, under the span ``workflow_span`` opened at submit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, MutableMapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "TRACE_HEADER_NAMES",
    "extract_context",
    "from_kafka_headers",
    "inject_headers",
    "resolve_parent",
    "to_kafka_headers",
    "workflow_root_context",
    "workflow_span_id",
    "workflow_trace_id",
]

_propagator = TraceContextTextMapPropagator()

TRACE_HEADER_NAMES: frozenset[str] = frozenset(_propagator.fields)
"""Carrier keys the propagator reads and writes (``traceparent``, ``tracestate``)."""


def inject_headers(
    carrier: MutableMapping[str, str] | None = None, *, context: Context | None = None
) -> dict[str, str]:
    """Write the current (or given) span context into ``carrier`` and return it.

    With no valid span in the context nothing is written, so an untraced sender leaves the
    receiver free to fall back to the workflow root.
    """
    out: dict[str, str] = {} if carrier is None else carrier  # type: ignore[assignment]
    _propagator.inject(out, context=context)
    return out


def extract_context(
    carrier: Mapping[str, str] | None, *, context: Context | None = None
) -> Context:
    """The context carried by ``carrier`` (an envelope's ``trace`` field or decoded headers).

    A missing or malformed ``traceparent`` yields a context without a valid span.
    """
    normalized = {k.lower(): v for k, v in (carrier or {}).items() if isinstance(v, str)}
    return _propagator.extract(normalized, context=context if context is not None else Context())


def to_kafka_headers(carrier: Mapping[str, str]) -> list[tuple[str, bytes]]:
    """Trace-context entries of ``carrier`` as Kafka header tuples."""
    return [(k, v.encode("utf-8")) for k, v in carrier.items() if k.lower() in TRACE_HEADER_NAMES]


def from_kafka_headers(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """The trace-context entries of Kafka record headers; others and undecodable ones are skipped."""
    out: dict[str, str] = {}
    for key, value in headers or ():
        name = key.lower()
        if name not in TRACE_HEADER_NAMES or value is None:
            continue
        try:
            out[name] = value.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return out


def _derive(workflow_id: str, purpose: bytes, size: int) -> int:
    digest = hashlib.blake2b(workflow_id.encode("utf-8"), digest_size=size, person=purpose).digest()
    value = int.from_bytes(digest, "big")
    # All-zero ids are invalid in W3C trace context; a hash hitting zero is astronomically
    # unlikely, but the fallback keeps the function total.
    return value or 1


def workflow_trace_id(workflow_id: str) -> int:
    """The 128-bit trace id of a workflow, the same in every process."""
    return _derive(workflow_id, b"mesh.trace", 16)


def workflow_span_id(workflow_id: str) -> int:
    """The 64-bit span id of a workflow's root span, the same in every process."""
    return _derive(workflow_id, b"mesh.rootspan", 8)


def workflow_root_context(workflow_id: str) -> Context:
    """A context whose parent is the workflow's root span, usable in any process.

    Spans started under it join the workflow's trace as children of the span ``workflow_span``
    recorded at submit, without any context having travelled.
    """
    span_context = SpanContext(
        trace_id=workflow_trace_id(workflow_id),
        span_id=workflow_span_id(workflow_id),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(NonRecordingSpan(span_context), Context())


def resolve_parent(trace_carrier: Mapping[str, str] | None, *, workflow_id: str) -> Context:
    """The context a step's span should start under.

    The carried context when it is valid (the W3C way); otherwise the span current in this
    task, if any; otherwise the workflow's derived root.
    """
    carried = extract_context(trace_carrier)
    if trace.get_current_span(carried).get_span_context().is_valid:
        return carried
    current = trace.get_current_span()
    if current.get_span_context().is_valid:
        return trace.set_span_in_context(current)
    return workflow_root_context(workflow_id)

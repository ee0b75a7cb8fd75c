"""Turning raw records into deliveries, or into dead letters with the reason."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Mapping, Sequence

from mesh.bus.base import _FETCHED_AT, Delivery, EnvelopeGuard, EnvelopeRejected
from mesh.errors import BusError, DecodeError
from mesh.security._redaction import redact_bytes, redact_text
from protocols import DeadLetter, Envelope, EnvelopeCodec, EnvelopeDecodeError

__all__ = ["RawRecord", "Signer", "decode_record", "encode_for_publish", "trace_headers"]

Signer = Callable[[Envelope], Envelope]
"""Signs an envelope before it is encoded (``mesh.runtime.trust.AgentTrust.sign``)."""

log = logging.getLogger("mesh.bus")

# How much of a refused message the dead letter keeps; the reason matters more than the bytes.
_MAX_DEAD_LETTER_RAW = 64 * 1024
_LOG_ERROR_CHARS = 300

RawRecord = tuple[str, int, int, bytes | None, bytes | None, Sequence[tuple[str, bytes]], int]
"""(topic, partition, offset, key, value, headers, timestamp_ms) as a broker hands it over."""


async def decode_record(
    codec: EnvelopeCodec,
    record: RawRecord,
    *,
    guard: EnvelopeGuard | None,
    consumer: str,
    fetched_at: float | None = None,
) -> Delivery | DeadLetter:
    """Decode and vet one record; a DeadLetter payload says why it cannot be delivered.

    ``fetched_at``: when the record's batch came from the broker (``time.monotonic()``; default
    now), what ``record_fetched_at()`` tells the guard.
    """
    topic, partition, offset, key, value, headers, ts = record
    reason, error = "", ""
    if value is None:
        reason, error = "malformed", "message has no value (tombstone)"
    else:
        try:
            envelope = codec.decode(value)
        except EnvelopeDecodeError as exc:
            reason, error = exc.reason, str(exc)
        except Exception as exc:  # containment: no record may stop a consumer
            # A foreign exception is a decoder bug (the fuzzers hunt these); the record is still
            # only one record. RecursionError and MemoryError are Exceptions too.
            log.error("decoder bug on %s[%d]@%d: %s", topic, partition, offset, type(exc).__name__)
            reason, error = "decoder_error", f"decoder failed: {type(exc).__name__}: {str(exc)[:200]}"
        else:
            try:
                if guard is not None:
                    token = _FETCHED_AT.set(time.monotonic() if fetched_at is None else fetched_at)
                    try:
                        verdict = guard(envelope)
                        if inspect.isawaitable(verdict):
                            await verdict
                    finally:
                        _FETCHED_AT.reset(token)
            except (EnvelopeRejected, DecodeError) as exc:
                # mesh.security raises its own DecodeError subclass; both carry the reason.
                reason, error = exc.reason, str(exc)
            except Exception as exc:  # a guard bug (or a hostile record that trips one)
                log.error("guard failed on %s[%d]@%d: %s", topic, partition, offset, type(exc).__name__)
                reason, error = "guard_error", f"guard failed: {type(exc).__name__}: {str(exc)[:200]}"
            else:
                return Delivery(
                    topic=topic,
                    partition=partition,
                    offset=offset,
                    key=key,
                    headers=tuple(headers),
                    envelope=envelope,
                    timestamp_ms=ts,
                )
    error = redact_text(error)
    # A hostile record chooses the error's length (a 900-step cycle, a thousand unknown names):
    # the log line stays one short line; the dead letter keeps more.
    shown = error if len(error) <= _LOG_ERROR_CHARS else f"{error[:_LOG_ERROR_CHARS]}... ({len(error)} chars)"
    log.warning("dead-lettering %s[%d]@%d: %s: %s", topic, partition, offset, reason, shown)
    return DeadLetter(
        source_topic=topic,
        partition=partition,
        offset=offset,
        reason=reason,
        error=error[:2000],
        key=key,
        # Room for the letter's own fields, so a letter always fits the codec's size limit.
        raw=redact_bytes((value or b"")[: max(0, min(_MAX_DEAD_LETTER_RAW, codec.max_bytes // 2 - 4096))]),
        consumer=consumer,
    )


def encode_for_publish(
    codec: EnvelopeCodec,
    signer: Signer | None,
    envelope: Envelope,
    *,
    key: str | None,
    headers: Mapping[str, bytes] | None,
) -> tuple[bytes, str, list[tuple[str, bytes]]]:
    """What every Bus appends for ``publish``: (value, key, headers), signed and encoded.

    The key defaults to the workflow id (one workflow, one partition); the headers carry the
    kind, the sender and the W3C trace context, then the caller's.
    """
    if signer is not None:
        envelope = signer(envelope)
    try:
        value = codec.encode(envelope)
    except ValueError as exc:
        raise BusError(str(exc)) from None
    all_headers = trace_headers(envelope) + list((headers or {}).items())
    return value, key if key is not None else envelope.workflow_id, all_headers


def trace_headers(envelope: Envelope) -> list[tuple[str, bytes]]:
    """Headers every published envelope carries: its kind, sender and W3C trace context."""
    headers = [("mesh-kind", envelope.kind.encode()), ("mesh-sender", envelope.sender.encode())]
    headers.extend((k, v.encode()) for k, v in envelope.trace.items())
    return headers

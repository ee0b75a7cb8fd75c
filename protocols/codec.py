"""The msgpack codec of envelopes.

Wire layout: a msgpack array ``[schema_version, body, signature]`` where ``body`` is the msgpack
encoding of the envelope's fields (without the signature) as a byte string. Keeping the body as
bytes lets a receiver verify the signature over exactly the bytes the sender signed, with no
canonicalisation step. The codec never mutates the payloads handed to it.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from typing import Any

import msgpack
from pydantic import ValidationError

from protocols.envelope import SCHEMA_VERSION, Envelope
from protocols.hlc import HlcTimestamp
from protocols.limits import LimitExceeded, Limits, check_structure
from protocols.registry import payload_type

__all__ = ["DEFAULT_MAX_ENVELOPE_BYTES", "EnvelopeCodec", "EnvelopeDecodeError", "format_validation_error"]

DEFAULT_MAX_ENVELOPE_BYTES = 1_048_576
"""Default limit on one encoded envelope (1 MiB, Kafka's default max message size)."""


class EnvelopeDecodeError(ValueError):
    """Bytes that are not a valid envelope; ``reason`` is a short code, the message says where.

    Reasons: ``oversize``, ``malformed``, ``too_deep``, ``too_large``, ``version``,
    ``structure``, ``unknown_kind``, ``schema``. protocols/ imports nothing of the runtime, so the runtime translates this into
    ``mesh.errors.DecodeError`` at its boundary.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def format_validation_error(exc: ValidationError, *, prefix: str) -> str:
    """One line per problem: ``prefix: field 'a.b': message``."""
    problems = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        problems.append(f"field {loc!r}: {msg}" if loc else msg)
    return f"{prefix}: " + "; ".join(problems)


_BODY_FIELDS = ("id", "k", "s", "w", "st", "h", "tr", "p")


class EnvelopeCodec:
    """Encodes envelopes to bytes and decodes bytes to validated envelopes."""

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES,
        validate_payload: bool = True,
        limits: Limits | None = None,
    ) -> None:
        """Create a codec; ``max_bytes`` bounds both what it writes and what it accepts.

        ``limits`` bounds the nesting and size of what it decodes (default: ``current_limits()``,
        read from the environment), checked before anything recurses into the value.
        """
        self.max_bytes = max_bytes
        self.validate_payload = validate_payload
        self.limits = limits

    # -- encoding -------------------------------------------------------------------------

    @staticmethod
    def encode_body(envelope: Envelope) -> bytes:
        """The bytes a signature covers: every field but the signature, msgpack-encoded."""
        body = {
            "id": envelope.id,
            "k": envelope.kind,
            "s": envelope.sender,
            "w": envelope.workflow_id,
            "st": envelope.step_id,
            "h": envelope.hlc.pack(),
            "tr": dict(envelope.trace),
            "p": envelope.payload,
        }
        try:
            return msgpack.packb(body, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"envelope {envelope.kind!r} payload is not msgpack-encodable: {exc}") from exc

    def encode(self, envelope: Envelope) -> bytes:
        """Encode an envelope; reuse its ``signed_body`` when it has one, so signatures stay valid."""
        body = envelope.signed_body or self.encode_body(envelope)
        data: bytes = msgpack.packb([envelope.schema_version, body, envelope.signature], use_bin_type=True)
        if len(data) > self.max_bytes:
            raise ValueError(
                f"envelope {envelope.kind!r} is {len(data)} bytes, over the limit of {self.max_bytes} bytes"
            )
        return data

    # -- decoding -------------------------------------------------------------------------

    def decode(self, data: bytes) -> Envelope:
        """Decode and validate; raise ``EnvelopeDecodeError`` saying what is wrong and where."""
        if len(data) > self.max_bytes:
            raise EnvelopeDecodeError(
                f"envelope of {len(data)} bytes exceeds the limit of {self.max_bytes} bytes",
                reason="oversize",
            )
        if not isinstance(data, bytes | bytearray | memoryview):
            raise EnvelopeDecodeError(f"envelope must be bytes, got {type(data).__name__}", reason="structure")
        outer = _unpack(data, what="envelope", limits=self.limits)
        if not isinstance(outer, list) or len(outer) != 3:
            raise EnvelopeDecodeError(
                "envelope must be a msgpack array [schema_version, body, signature], "
                f"got {_describe(outer)}",
                reason="structure",
            )
        version, body_bytes, signature = outer
        if version != SCHEMA_VERSION:
            raise EnvelopeDecodeError(
                f"envelope schema_version {version!r} is not supported (this reader accepts {SCHEMA_VERSION})",
                reason="version",
            )
        if not isinstance(body_bytes, bytes):
            raise EnvelopeDecodeError(
                f"envelope body must be bytes, got {_describe(body_bytes)}", reason="structure"
            )
        if not isinstance(signature, bytes):
            raise EnvelopeDecodeError(
                f"envelope signature must be bytes, got {_describe(signature)}", reason="structure"
            )
        body = _unpack(body_bytes, what="envelope body", limits=self.limits)
        if not isinstance(body, dict):
            raise EnvelopeDecodeError(
                f"envelope body must be a map, got {_describe(body)}", reason="structure"
            )
        missing = [f for f in _BODY_FIELDS if f not in body]
        if missing:
            raise EnvelopeDecodeError(
                f"envelope body is missing field(s) {', '.join(missing)}", reason="structure"
            )
        for key, name in (("id", "id"), ("k", "kind"), ("s", "sender"), ("w", "workflow_id"), ("st", "step_id")):
            if not isinstance(body[key], str):
                raise EnvelopeDecodeError(
                    f"envelope field {name!r} must be a string, got {_describe(body[key])}",
                    reason="structure",
                )
        if not body["k"]:
            raise EnvelopeDecodeError("envelope field 'kind' is empty", reason="structure")
        try:
            hlc = HlcTimestamp.unpack(body["h"])
        except ValueError:
            raise EnvelopeDecodeError(
                f"envelope field 'hlc' must be [wall_ms, logical] of non-negative ints, got {_describe(body['h'])}",
                reason="structure",
            ) from None
        trace = body["tr"]
        if not isinstance(trace, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in trace.items()
        ):
            raise EnvelopeDecodeError(
                "envelope field 'trace' must be a map of strings to strings", reason="structure"
            )
        payload = body["p"]
        if not isinstance(payload, dict):
            raise EnvelopeDecodeError(
                f"envelope field 'payload' must be a map, got {_describe(payload)}", reason="structure"
            )
        kind = body["k"]
        if self.validate_payload:
            _validate_payload(kind, payload)
        return Envelope(
            kind=kind,
            sender=body["s"],
            payload=payload,
            workflow_id=body["w"],
            step_id=body["st"],
            hlc=hlc,
            id=body["id"],
            trace=trace,
            schema_version=version,
            signature=signature,
            signed_body=body_bytes,
        )


def _validate_payload(kind: str, payload: Mapping[str, Any]) -> None:
    model = payload_type(kind)
    if model is None:
        raise EnvelopeDecodeError(f"unknown envelope kind {kind!r}", reason="unknown_kind")
    try:
        model.model_validate(payload)
    except ValidationError as exc:
        raise EnvelopeDecodeError(
            format_validation_error(exc, prefix=f"payload of kind {kind!r}"), reason="schema"
        ) from None
    except (ValueError, TypeError) as exc:
        # A validator that raised outside pydantic's wrapping (e.g. a spec limit): same verdict.
        raise EnvelopeDecodeError(
            f"payload of kind {kind!r}: {str(exc)[:500]}", reason=getattr(exc, "reason", "schema")
        ) from None


def _unpack(data: bytes, *, what: str, limits: Limits | None) -> Any:
    # msgpack's C unpacker is iterative (its own stack of 1024 levels raises StackError); the
    # structure check below bounds depth and size before anything of ours recurses into it.
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except msgpack.ExtraData as exc:
        raise EnvelopeDecodeError(
            f"malformed msgpack in {what}: {len(exc.extra)} trailing byte(s) after a complete value",
            reason="malformed",
        ) from None
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
        # StackError, FormatError, invalid UTF-8, non-str map keys, unhashable keys...
        raise EnvelopeDecodeError(
            f"malformed msgpack in {what} ({len(data)} bytes): {type(exc).__name__}: {str(exc)[:200]}",
            reason="malformed",
        ) from None
    try:
        check_structure(value, what=what, limits=limits)
    except LimitExceeded as exc:
        raise EnvelopeDecodeError(str(exc), reason=exc.reason) from None
    return value


_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = 40
_REPR.maxother = 40


def _describe(value: Any) -> str:
    # reprlib bounds depth and length: a plain repr of a deep value raises RecursionError.
    text = _REPR.repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"

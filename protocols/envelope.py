"""The Envelope: the one wire unit every agent sends and receives."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from protocols.hlc import HlcTimestamp
from protocols.registry import Payload, kind_of, payload_type

__all__ = ["SCHEMA_VERSION", "Envelope", "new_envelope_id"]

SCHEMA_VERSION = 1
"""Version of the envelope layout this code writes; readers accept this version only."""

P = TypeVar("P", bound=Payload)


def new_envelope_id() -> str:
    """A fresh random envelope id (32 hex chars)."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Envelope:
    """An addressed, timestamped, signable message with a typed payload.

    The payload travels as a plain mapping; ``payload_model()`` validates it against the model
    registered for ``kind``. The codec validates it on decode, so handlers only ever see
    payloads that match their schema.
    """

    kind: str
    """Registered kind naming the payload schema, e.g. ``workflow.step_completed``."""

    sender: str
    """Agent id of the sender; the signature is checked against this id's public key."""

    payload: Mapping[str, Any]
    """The payload as plain data (str keys; msgpack-able values)."""

    workflow_id: str = ""
    """Workflow this message belongs to; also the Kafka key, so one workflow is one partition."""

    step_id: str = ""
    """Step within the workflow, when the message is about one step."""

    hlc: HlcTimestamp = HlcTimestamp(0, 0)  # noqa: RUF009 - an immutable NamedTuple
    """Hybrid-logical-clock timestamp of the sender at send time."""

    id: str = field(default_factory=new_envelope_id)
    """Unique id; deterministic for events that must fold to nothing when duplicated."""

    trace: Mapping[str, str] = field(default_factory=dict)
    """W3C trace context (``traceparent``, ``tracestate``) of the span that sent it."""

    schema_version: int = SCHEMA_VERSION
    """Version of the envelope layout."""

    signature: bytes = b""
    """Ed25519 signature of ``signed_body``; empty when unsigned."""

    signed_body: bytes = field(default=b"", compare=False, repr=False)
    """The exact bytes the signature covers, as received or as produced by the codec."""

    @classmethod
    def of(cls, payload: Payload, *, sender: str, **fields: Any) -> Envelope:
        """Wrap a payload model, taking the kind from its registration."""
        return cls(
            kind=kind_of(payload),
            sender=sender,
            payload=payload.model_dump(mode="python"),
            **fields,
        )

    def payload_model(self, expected: type[P] | None = None) -> P:
        """The payload validated into its registered model (or ``expected``)."""
        model = expected if expected is not None else payload_type(self.kind)
        if model is None:
            raise LookupError(f"no payload model registered for kind {self.kind!r}")
        return model.model_validate(self.payload)  # type: ignore[return-value]

    def with_fields(self, **changes: Any) -> Envelope:
        """A copy with some fields replaced (envelopes are immutable)."""
        return replace(self, **changes)

"""Signing envelopes with the sender's Ed25519 key."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mesh.errors import UsageError
from protocols.codec import EnvelopeCodec
from protocols.envelope import Envelope

__all__ = ["EnvelopeSigner"]


class EnvelopeSigner:
    """Signs envelopes as one agent: the signature covers ``EnvelopeCodec.encode_body(env)``."""

    def __init__(self, agent_id: str, private_key: Ed25519PrivateKey) -> None:
        """Sign as ``agent_id`` with ``private_key``."""
        self.agent_id = agent_id
        self._private_key = private_key

    def sign(self, envelope: Envelope) -> Envelope:
        """A copy of ``envelope`` with ``signed_body`` and ``signature`` set.

        An empty sender is filled with this agent's id; another agent's id is a usage error,
        since the receiver would check the signature against that agent's key and reject it.
        """
        if not envelope.sender:
            envelope = envelope.with_fields(sender=self.agent_id)
        elif envelope.sender != self.agent_id:
            raise UsageError(f"signer {self.agent_id!r} cannot sign an envelope sent by {envelope.sender!r}")
        body = EnvelopeCodec.encode_body(envelope)
        return envelope.with_fields(signed_body=body, signature=self._private_key.sign(body))

    def sign_bytes(self, data: bytes) -> bytes:
        """A detached signature of ``data`` (ballots use this)."""
        return self._private_key.sign(data)

    def __call__(self, envelope: Envelope) -> Envelope:
        """Same as ``sign``, so a signer is a transport middleware."""
        return self.sign(envelope)

    def __repr__(self) -> str:
        return f"EnvelopeSigner(agent_id={self.agent_id!r})"

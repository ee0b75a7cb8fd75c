"""Verifying envelopes before any handler sees them: signature, sender, replay, equivocation."""

from __future__ import annotations

import hashlib
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import msgpack
from cryptography.exceptions import InvalidSignature

from mesh.security._errors import EnvelopeRejected, RejectionReason
from mesh.security._keyring import Keyring
from protocols.codec import EnvelopeCodec
from protocols.envelope import Envelope
from protocols.votes import Ballot

__all__ = ["EnvelopeVerifier", "EquivocationRule", "VerifierOptions", "ballot_equivocation_rule"]

EquivocationRule = Callable[[Envelope], tuple[Hashable, bytes] | None]
"""Maps an envelope to ``(slot, fingerprint)``: one sender must not send two fingerprints per slot."""


def ballot_equivocation_rule(envelope: Envelope) -> tuple[Hashable, bytes] | None:
    """One ballot per voter and proposal: a second, different ballot is equivocation."""
    if envelope.kind != Ballot.KIND:
        return None
    payload = envelope.payload
    slot = ("ballot", envelope.sender, str(payload.get("proposal_id", "")))
    fingerprint = msgpack.packb([payload.get("verdict"), payload.get("value_hash")], use_bin_type=True)
    return slot, fingerprint


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class VerifierOptions:
    """How much the verifier remembers and how old an envelope may be."""

    replay_window: int = 100_000
    """Envelope ids (and equivocation slots) remembered at most; older ones are forgotten first.
    With ``max_age_ms`` set, an id is also forgotten once it was remembered that long ago: a
    replay of it would be older than the window and refused as such, so memory stays flat at the
    traffic of one window (gossip digests never stop) instead of growing to this cap."""
    max_age_ms: int | None = 600_000
    """Envelopes whose HLC wall time is older than this (against ``now_ms``) are replays; None = off."""
    now_ms: Callable[[], int] = field(default=_wall_ms)
    """Wall clock in Unix milliseconds (injectable for tests)."""
    accept_redelivery: bool = False
    """For a replayable log (the workflow event log): the same envelope again is accepted, since
    at-least-once delivery and failover replays redeliver it and handlers fold duplicates; a
    different content under a seen id is still rejected as equivocation."""
    equivocation_rules: tuple[EquivocationRule, ...] = (ballot_equivocation_rule,)
    """Rules naming what one sender may say only once."""


class EnvelopeVerifier:
    """Rejects unsigned, forged, replayed and equivocating envelopes, counting each reason.

    Not thread-safe; one verifier per consumer task. Envelopes are remembered only once they
    pass the signature check, so forged copies cannot poison the replay window.
    """

    def __init__(self, keyring: Keyring, *, options: VerifierOptions | None = None) -> None:
        """Verify against the public keys in ``keyring``."""
        self.keyring = keyring
        self.options = options or VerifierOptions()
        self.rejections: Counter[str] = Counter()
        """Rejections by reason, for metrics."""
        self.accepted = 0
        """Envelopes that passed."""
        # key -> (fingerprint, when it was remembered, in ``now_ms`` time); oldest first.
        self._seen_ids: OrderedDict[Hashable, tuple[bytes, int]] = OrderedDict()
        self._slots: OrderedDict[Hashable, tuple[bytes, int]] = OrderedDict()

    def verify(self, envelope: Envelope) -> Envelope:
        """Return ``envelope`` if it is authentic and fresh, else raise ``EnvelopeRejected``."""
        if not envelope.signature:
            self._reject(envelope, "unsigned", "envelope has no signature")
        body = self._check_signature(envelope)
        self._check_fresh(envelope, body)
        slots = self._check_equivocation(envelope)
        self._remember(self._id_key(envelope), hashlib.blake2b(body, digest_size=16).digest(), self._seen_ids)
        for slot, fingerprint in slots:
            self._remember(slot, fingerprint, self._slots)
        self.accepted += 1
        return envelope

    def __call__(self, envelope: Envelope) -> Envelope:
        """Same as ``verify``, so a verifier is a transport middleware."""
        return self.verify(envelope)

    # -- checks ---------------------------------------------------------------------------

    def _check_signature(self, envelope: Envelope) -> bytes:
        key = self.keyring.get(envelope.sender)
        if key is None:
            self._reject(envelope, "forged", f"sender {envelope.sender!r} is not in the keyring")
        expected = EnvelopeCodec.encode_body(envelope)
        body = envelope.signed_body or expected
        # The fields handlers read must be the ones signed: compare structurally, since another
        # encoder may have written equal data with different (but valid) msgpack bytes.
        if body != expected and msgpack.unpackb(body, raw=False) != msgpack.unpackb(expected, raw=False):
            self._reject(envelope, "forged", "envelope fields differ from the signed body")
        try:
            key.verify(envelope.signature, body)  # type: ignore[union-attr]
        except InvalidSignature:
            self._reject(envelope, "forged", f"bad signature for sender {envelope.sender!r}")
        return body

    def _id_key(self, envelope: Envelope) -> Hashable:
        # On a replayable log, deterministic event ids are shared by successive owners of a step
        # (a zombie and its successor may both send "step completed"): only one sender saying two
        # things under one id is equivocation there.
        return (envelope.sender, envelope.id) if self.options.accept_redelivery else envelope.id

    def _check_fresh(self, envelope: Envelope, body: bytes) -> None:
        seen = self._seen_ids.get(self._id_key(envelope))
        if seen is not None:
            if seen[0] == hashlib.blake2b(body, digest_size=16).digest():
                if self.options.accept_redelivery:
                    return
                self._reject(envelope, "replayed", f"envelope id {envelope.id} was already received")
            self._reject(envelope, "equivocation", f"envelope id {envelope.id} was received with other content")
        max_age_ms = self.options.max_age_ms
        if max_age_ms is not None:
            age_ms = self.options.now_ms() - envelope.hlc.wall_ms
            if age_ms > max_age_ms:
                self._reject(
                    envelope, "replayed", f"envelope is {age_ms} ms old, over the window of {max_age_ms} ms"
                )

    def _check_equivocation(self, envelope: Envelope) -> list[tuple[Hashable, bytes]]:
        slots = []
        for rule in self.options.equivocation_rules:
            found = rule(envelope)
            if found is None:
                continue
            slot, fingerprint = found
            previous = self._slots.get(slot)
            if previous is not None and previous[0] != fingerprint:
                self._reject(envelope, "equivocation", f"sender {envelope.sender!r} contradicted itself on {slot!r}")
            slots.append((slot, fingerprint))
        return slots

    def _remember(self, key: Hashable, value: bytes, store: OrderedDict) -> None:  # type: ignore[type-arg]
        # Ids age out with the freshness window; equivocation slots (one ballot per sender and
        # proposal) are kept up to the count cap: a contradiction must not become acceptable later.
        now = self.options.now_ms()
        store[key] = (value, now)
        store.move_to_end(key)
        while len(store) > self.options.replay_window:
            store.popitem(last=False)
        max_age_ms = self.options.max_age_ms
        if max_age_ms is not None and store is self._seen_ids:
            while store:
                _, (_, when) = next(iter(store.items()))
                if now - when <= max_age_ms:
                    break
                store.popitem(last=False)

    def _reject(self, envelope: Envelope, reason: RejectionReason, message: str) -> None:
        self.rejections[reason] += 1
        raise EnvelopeRejected(
            f"{reason}: {message} (kind {envelope.kind!r}, id {envelope.id})",
            reason=reason,
            sender=envelope.sender,
            envelope_id=envelope.id,
        )

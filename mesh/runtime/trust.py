"""Signing what an agent publishes and verifying what it reads on the workflow log.

Every agent (and every CLI client) has an Ed25519 key pair. The private key stays in the agent's
state directory (``<state_dir>/keys/<agent_id>.ed25519``, mode 0600; or ``MESH_AGENT_KEY_FILE``)
so a restarted agent keeps its identity and the envelopes it signed earlier still verify when the
log is replayed; the public key is published in the shared keyring store (``mesh.store.KeyringStore``;
in a deployment the Redis hash ``<prefix>:keyring``) with the operator's certificate for it, where
peers look it up.

Trust root (``mesh.security.TrustPolicy``): Redis carries keys, it does not vouch for them. With an
operator public key configured (``MESH_OPERATOR_PUBLIC_KEY`` or ``..._FILE``, e.g. a Kubernetes
Secret) only keys certified by the operator are admitted, and replaced only by a newer
certificate. The certificate comes from ``MESH_AGENT_CERT_FILE`` or ``<state_dir>/keys/<id>.cert``
(made by ``mesh keys certify``); in dev, an agent that can read the operator PRIVATE key
(``MESH_OPERATOR_KEY_FILE``, or the one ``mesh dev up`` made under the state dir) certifies its own
key. Without any operator key, keys are pinned on first use and replaced only by a rotation
statement signed with the pinned key.

``AgentTrust`` is the agent's one trust object: the only place (with ``mesh.security`` itself) that
builds signers and verifiers, and the one keyring refresh policy (publish this agent's key once;
reload peers' keys every ``refresh_period_s`` while a peer runs, and on demand when a log envelope
comes from an unknown sender or fails to verify, at most every ``reload_interval_s``). The
workflow log's guard, gossip and votes (``mesh.peer.Peer``) all verify against its one ``Keyring``.

The workflow log is replayable by design (at-least-once delivery, failover replays), so its
verifier accepts the same envelope again — handlers fold duplicates — and rejects unsigned and
forged envelopes, and a different content under an id already seen (equivocation). A sender not
yet in the local keyring triggers a reload from the keyring store before the envelope is judged, so an agent
that just started is never mistaken for a forger.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path

from mesh.bus import record_fetched_at
from mesh.errors import ConfigError, StoreUnavailable
from mesh.quorum import BallotSigner
from mesh.security import (
    AgentCertificate,
    EnvelopeRejected,
    EnvelopeSigner,
    EnvelopeVerifier,
    KeyDirectory,
    KeyPair,
    Keyring,
    KeyringError,
    TrustPolicy,
    VerifierOptions,
    certify,
    generate_keypair,
    load_operator_key,
    private_key_from_hex,
    private_key_to_hex,
    public_key_to_hex,
)
from mesh.store import KeyringStore
from protocols import Envelope

__all__ = ["AGENT_CERT_FILE_ENV", "AGENT_KEY_FILE_ENV", "AgentTrust", "load_or_create_keys", "load_or_issue_certificate"]

AGENT_KEY_FILE_ENV = "MESH_AGENT_KEY_FILE"
"""The agent's private key file (hex), e.g. mounted from a Kubernetes Secret; else the state dir."""
AGENT_CERT_FILE_ENV = "MESH_AGENT_CERT_FILE"
"""The agent's certificate file (JSON from ``mesh keys certify``); else ``<state_dir>/keys/<id>.cert``."""

log = logging.getLogger("mesh.runtime.trust")


def _safe(agent_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in agent_id)


def load_or_create_keys(agent_id: str, key_dir: Path) -> KeyPair:
    """The agent's key pair from ``MESH_AGENT_KEY_FILE`` or ``key_dir``, created (mode 0600) on first use."""
    configured = os.environ.get(AGENT_KEY_FILE_ENV, "").strip()
    if configured:
        try:
            private = private_key_from_hex(Path(configured).read_text().strip())
        except OSError as exc:
            raise KeyringError(f"cannot read {AGENT_KEY_FILE_ENV}={configured}: {exc.strerror}") from None
        return KeyPair(agent_id, private, private.public_key())
    path = key_dir / f"{_safe(agent_id)}.ed25519"
    if path.exists():
        private = private_key_from_hex(path.read_text().strip())
        return KeyPair(agent_id, private, private.public_key())
    keys = generate_keypair(agent_id)
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(private_key_to_hex(keys.private_key))
    return keys


def load_or_issue_certificate(keys: KeyPair, key_dir: Path, policy: TrustPolicy, *, state_dir: Path) -> AgentCertificate | None:
    """The operator certificate of ``keys``: from file, or issued now when the operator key is readable (dev).

    None in pinned mode without one. Raises ``ConfigError`` when the policy needs a certificate
    and there is none for this agent id and key.
    """
    configured = os.environ.get(AGENT_CERT_FILE_ENV, "").strip()
    path = Path(configured) if configured else key_dir / f"{_safe(keys.agent_id)}.cert"
    own_key = public_key_to_hex(keys.public_key)
    if path.exists():
        try:
            cert = AgentCertificate.from_json(path.read_text())
        except (OSError, KeyringError) as exc:
            raise ConfigError(f"cannot read the certificate {path}: {exc}") from None
        valid = (cert.agent_id, cert.public_key) == (keys.agent_id, own_key) and (
            policy.operator_key is None or cert.verify(policy.operator_key)
        )
        if valid:
            return cert
        log.warning("certificate %s is not the operator's for %s and this key; ignoring it", path, keys.agent_id)
    operator = load_operator_key(state_dir=state_dir)
    if operator is not None and (policy.operator_key is None or
                                 public_key_to_hex(operator.public_key()) == public_key_to_hex(policy.operator_key)):
        cert = certify(operator, keys.agent_id, keys.public_key)
        if not configured:
            key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(cert.to_json())
        log.info("%s: key certified with the operator key found locally (dev convenience)", keys.agent_id)
        return cert
    if policy.operator_key is not None:
        raise ConfigError(
            f"agent {keys.agent_id!r} has no operator certificate for its key {own_key}: run "
            f"`mesh keys certify {keys.agent_id} {own_key}` where the operator key is and put the output in "
            f"{path} (or {AGENT_CERT_FILE_ENV})"
        )
    return None


class AgentTrust:
    """This agent's trust: its signer, the verifiers of what it reads, and the keyring refresh policy.

    One object per agent process, shared by the workflow log (``sign`` on publish, the object
    itself as the log's bus guard) and the peer (gossip and votes). Without a ``store`` the
    keyring is static (tests, the in-memory mesh) and refreshing is a no-op.
    """

    def __init__(
        self,
        keys: KeyPair,
        store: KeyDirectory | None = None,
        *,
        keyring: Keyring | None = None,
        reload_interval_s: float = 0.2,
        refresh_period_s: float = 2.0,
        policy: TrustPolicy | None = None,
        certificate: AgentCertificate | None = None,
    ) -> None:
        """Sign as ``keys.agent_id``; look peers' keys up in ``store``, admitting them by ``policy``.

        ``keyring``: trust exactly these keys instead of a fresh keyring (with ``policy``) that
        holds this agent's own key.
        """
        self.keys = keys
        self.store = store
        self.certificate = certificate
        """The operator's certificate of this agent's key (None in pinned mode)."""
        if keyring is None:
            keyring = Keyring(policy=policy)
            keyring.add(keys.agent_id, keys.public_key, issued_at_ms=certificate.issued_at_ms if certificate else 0)
        self.keyring = keyring
        """The one keyring every verifier of this agent reads (the policy admits keys into it)."""
        # The log is replayable (failover, at-least-once): the same envelope again is fine there.
        self.verifier = self.envelope_verifier(
            VerifierOptions(accept_redelivery=True, max_age_ms=None, equivocation_rules=(), replay_window=500_000)
        )
        """Verifier of the workflow log (used by the guard ``__call__``)."""
        self.signer = EnvelopeSigner(keys.agent_id, keys.private_key)
        """Signs every envelope this agent publishes (log, gossip, votes, dead letters)."""
        self.registered = False
        """True once this agent's key was published to ``store``."""
        self._reload_interval_s = reload_interval_s
        self._refresh_period_s = refresh_period_s
        self._last_attempt = 0.0  # when the last reload started (reloads are rate-limited)
        self._view_from = 0.0  # when the last successful reload started: the view holds keys published before
        self._failed_from = 0.0  # when the last reload that found the store unreachable started

    @property
    def agent_id(self) -> str:
        """The agent this trust signs for."""
        return self.keys.agent_id

    def envelope_verifier(self, options: VerifierOptions | None = None) -> EnvelopeVerifier:
        """A new verifier over this trust's keyring (default options: replays and old envelopes refused)."""
        return EnvelopeVerifier(self.keyring, options=options)

    def ballot_signer(self) -> BallotSigner:
        """The signer of this agent's ballots (a validator's votes)."""
        return BallotSigner(self.keys.agent_id, self.keys.private_key)

    @classmethod
    async def connect(cls, agent_id: str, keyring: KeyringStore, *, state_dir: Path) -> AgentTrust:
        """Load or create this agent's keys, publish the public key in ``keyring``, load everyone else's."""
        policy = TrustPolicy.from_env(state_dir=state_dir)
        keys = load_or_create_keys(agent_id, state_dir / "keys")
        certificate = load_or_issue_certificate(keys, state_dir / "keys", policy, state_dir=state_dir)
        trust = cls(keys, KeyDirectory(keyring), policy=policy, certificate=certificate)
        await trust.register()
        return trust

    async def register(self) -> None:
        """Publish this agent's public key (once) and load everyone else's; a no-op without a store."""
        if self.store is None:
            return
        if not self.registered:
            known = (await self.store.records()).get(self.keys.agent_id)
            if known is not None and known.public_key != public_key_to_hex(self.keys.public_key):
                log.warning("agent id %s had another key in the keyring; publishing this one (peers admit it only "
                            "with a newer operator certificate, or a rotation signed by the key they pinned)",
                            self.keys.agent_id)
            await self.store.publish(self.keys.agent_id, self.keys.public_key, certificate=self.certificate)
            self.registered = True
        await self.refresh()

    def sign(self, envelope: Envelope) -> Envelope:
        """The envelope signed by this agent (the bus calls it on publish)."""
        return self.signer.sign(envelope)

    async def __call__(self, envelope: Envelope) -> None:
        """Bus guard of the workflow log: raise ``EnvelopeRejected`` (with a reason) unless authentic.

        A sender missing from the keyring, or a known sender whose signature fails (a newer
        certificate, a signed rotation), makes the keyring reload once, unless it was read after
        the record was fetched: keys are published before their owners send, so a view read
        since holds the key if there is one. A batch of a hostile flood costs one reload at most.
        """
        fetched_at = record_fetched_at()
        if fetched_at is None:  # vetted outside a bus: as if fetched now
            fetched_at = time.monotonic()
        if envelope.sender not in self.keyring and envelope.signature:
            await self._reload_for_record(fetched_at)
        try:
            self.verifier.verify(envelope)
        except EnvelopeRejected as exc:
            if exc.reason != "forged" or not await self._reload_for_record(fetched_at):
                raise
            self.verifier.verify(envelope)

    async def _reload_for_record(self, fetched_at: float) -> bool:
        """Reload the keyring unless it was read after the record being vetted was fetched (``fetched_at``).

        Reloads are at least ``reload_interval_s`` apart: this waits out the rest of the interval
        (a record that arrived just after a reload still gets a view that holds its sender's key).
        False when the view was new enough already or the store is unreachable.
        """
        if self.store is None:
            return False
        if self._view_from >= fetched_at or self._failed_from >= fetched_at:
            return False  # read since the record came (or tried to: the store is down, no retry per record)
        wait = self._reload_interval_s - (time.monotonic() - self._last_attempt)
        if wait > 0:
            await asyncio.sleep(wait)
            if self._view_from >= fetched_at:  # another task reloaded meanwhile
                return True
        try:
            await self.refresh()
        except StoreUnavailable as exc:
            log.warning("keyring reload failed: %s", exc)
            return False
        return True

    async def refresh(self) -> None:
        """Reload peers' keys from the store through the keyring's policy; ``StoreUnavailable`` if unreachable."""
        if self.store is None:
            return
        started = self._last_attempt = time.monotonic()
        try:
            records = await self.store.records()
        except StoreUnavailable:
            self._failed_from = started
            raise
        # Through the keyring's one policy: a key Redis offers counts only if certified (or pinned).
        self.keyring.refresh(records)
        self._view_from = max(self._view_from, started)

    async def keep_fresh(self) -> None:
        """Refresh the keyring every ``refresh_period_s`` until cancelled (the peer runs it).

        An unreachable store is skipped until the next period: the keys already trusted stay.
        """
        if self.store is None:
            return
        while True:
            await asyncio.sleep(self._refresh_period_s)
            with contextlib.suppress(StoreUnavailable):
                await self.refresh()

    @property
    def rejections(self) -> dict[str, int]:
        """Rejected envelopes by reason."""
        return dict(self.verifier.rejections)

    async def aclose(self) -> None:
        """Release the keyring store (a store on a shared client leaves it open); nothing without one."""
        if self.store is not None:
            await self.store.store.aclose()

"""Signing and verification of envelopes: every rejection reason, and what passes."""

from __future__ import annotations

import json

import pytest

from mesh.errors import DecodeError, MeshError, UsageError
from mesh.security import (
    EnvelopeRejected,
    EnvelopeSigner,
    EnvelopeVerifier,
    Keyring,
    KeyringError,
    VerifierOptions,
    generate_keypair,
    private_key_from_hex,
    private_key_to_hex,
    public_key_to_hex,
)
from protocols import Ballot, Envelope, EnvelopeCodec, HlcTimestamp, TraceEvent

NOW_MS = 1_700_000_000_000


def _env(sender: str = "alice", **fields: object) -> Envelope:
    payload = TraceEvent(name="hello", attributes={"n": 1})
    return Envelope.of(payload, sender=sender, hlc=HlcTimestamp(NOW_MS, 0), **fields)  # type: ignore[arg-type]


@pytest.fixture
def alice():
    return generate_keypair("alice")


@pytest.fixture
def verifier(alice):
    keyring = Keyring({"alice": alice.public_key})
    return EnvelopeVerifier(keyring, options=VerifierOptions(now_ms=lambda: NOW_MS, max_age_ms=60_000))


def _reason(verifier: EnvelopeVerifier, env: Envelope) -> str:
    with pytest.raises(EnvelopeRejected) as info:
        verifier.verify(env)
    return info.value.reason


def test_signed_envelope_passes_and_survives_the_wire(alice, verifier):
    signed = EnvelopeSigner("alice", alice.private_key).sign(_env())
    assert signed.signed_body == EnvelopeCodec.encode_body(_env().with_fields(id=signed.id))
    decoded = EnvelopeCodec().decode(EnvelopeCodec().encode(signed))
    assert verifier.verify(decoded) is decoded
    assert verifier.accepted == 1
    assert sum(verifier.rejections.values()) == 0


def test_signer_fills_empty_sender_and_refuses_other_senders(alice):
    signer = EnvelopeSigner("alice", alice.private_key)
    assert signer.sign(_env(sender="")).sender == "alice"
    with pytest.raises(UsageError):
        signer.sign(_env(sender="bob"))


def test_unsigned_is_rejected(verifier):
    assert _reason(verifier, _env()) == "unsigned"
    assert verifier.rejections["unsigned"] == 1


def test_unknown_sender_is_forged(verifier):
    mallory = generate_keypair("mallory")
    env = EnvelopeSigner("mallory", mallory.private_key).sign(_env(sender="mallory"))
    assert _reason(verifier, env) == "forged"


def test_wrong_key_is_forged(verifier):
    mallory = generate_keypair("alice")  # claims to be alice with its own key
    env = EnvelopeSigner("alice", mallory.private_key).sign(_env())
    assert _reason(verifier, env) == "forged"


def test_tampered_payload_is_forged_even_with_the_old_signed_body(alice, verifier):
    signed = EnvelopeSigner("alice", alice.private_key).sign(_env())
    # with_fields keeps signed_body and signature: the fields now differ from what was signed.
    tampered = signed.with_fields(payload={"name": "evil", "attributes": {}})
    assert _reason(verifier, tampered) == "forged"


def test_tampered_wire_bytes_are_forged(alice, verifier):
    signed = EnvelopeSigner("alice", alice.private_key).sign(_env())
    data = bytearray(EnvelopeCodec().encode(signed))
    index = data.find(b"hello")
    data[index : index + 5] = b"HELLO"
    decoded = EnvelopeCodec().decode(bytes(data))
    assert _reason(verifier, decoded) == "forged"
    assert verifier.rejections["forged"] == 1


def test_same_envelope_twice_is_replayed(alice, verifier):
    signed = EnvelopeSigner("alice", alice.private_key).sign(_env())
    verifier.verify(signed)
    assert _reason(verifier, signed) == "replayed"


def test_old_hlc_is_replayed(alice, verifier):
    env = _env().with_fields(hlc=HlcTimestamp(NOW_MS - 60_001, 0))
    signed = EnvelopeSigner("alice", alice.private_key).sign(env)
    assert _reason(verifier, signed) == "replayed"


def test_same_id_with_other_content_is_equivocation(alice, verifier):
    signer = EnvelopeSigner("alice", alice.private_key)
    first = signer.sign(_env(id="e1"))
    second = signer.sign(_env(id="e1", step_id="other"))
    verifier.verify(first)
    assert _reason(verifier, second) == "equivocation"


def test_two_different_ballots_for_one_proposal_are_equivocation(alice, verifier):
    signer = EnvelopeSigner("alice", alice.private_key)

    def ballot(verdict: str) -> Envelope:
        payload = Ballot(proposal_id="p1", voter="alice", verdict=verdict, value_hash="h")  # type: ignore[arg-type]
        return signer.sign(Envelope.of(payload, sender="alice", hlc=HlcTimestamp(NOW_MS, 0)))

    verifier.verify(ballot("accept"))
    verifier.verify(ballot("accept"))  # a re-send with a new envelope id is not a contradiction
    assert _reason(verifier, ballot("reject")) == "equivocation"
    assert verifier.rejections == {"equivocation": 1}


def test_forged_copies_do_not_poison_the_replay_window(alice, verifier):
    signed = EnvelopeSigner("alice", alice.private_key).sign(_env())
    forged = signed.with_fields(signature=b"\x00" * 64)
    assert _reason(verifier, forged) == "forged"
    assert verifier.verify(signed) is signed


def test_replay_window_is_bounded(alice):
    keyring = Keyring({"alice": alice.public_key})
    verifier = EnvelopeVerifier(keyring, options=VerifierOptions(replay_window=2, max_age_ms=None))
    signer = EnvelopeSigner("alice", alice.private_key)
    envs = [signer.sign(_env()) for _ in range(3)]
    for env in envs:
        verifier.verify(env)
    assert verifier.verify(envs[0]) is envs[0]  # forgotten: the window holds two ids
    assert _reason(verifier, envs[2]) == "replayed"


def test_rejection_is_a_permanent_decode_error(verifier):
    with pytest.raises(DecodeError) as info:
        verifier.verify(_env())
    assert isinstance(info.value, MeshError)
    assert info.value.retryable is False


def test_keyring_round_trips_through_dict_json_file_and_env(alice, tmp_path):
    bob = generate_keypair("bob")
    keyring = Keyring({"alice": alice.public_key, "bob": bob.public_key})
    as_dict = keyring.to_dict()
    assert as_dict["alice"] == public_key_to_hex(alice.public_key)
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(as_dict))
    for loaded in (
        Keyring.from_dict(as_dict),
        Keyring.from_file(path),
        Keyring.from_env("KEYS", environ={"KEYS": json.dumps(as_dict)}),
    ):
        assert loaded.to_dict() == as_dict
        assert list(loaded) == ["alice", "bob"]
    assert len(Keyring.from_env("UNSET_VAR", environ={})) == 0


@pytest.mark.parametrize(
    "bad",
    ['{"a": "zz"}', '{"a": "00"}', "[1, 2]", "not json", '{"a": 3}'],
)
def test_keyring_rejects_bad_input_with_a_clear_error(bad):
    with pytest.raises(KeyringError):
        Keyring.from_json(bad)


def test_keyring_file_errors_name_the_file(tmp_path):
    with pytest.raises(KeyringError, match=r"missing\.json"):
        Keyring.from_file(tmp_path / "missing.json")


def test_private_key_hex_round_trip_and_errors_do_not_echo_the_key(alice):
    text = private_key_to_hex(alice.private_key)
    assert private_key_to_hex(private_key_from_hex(text)) == text
    with pytest.raises(KeyringError) as info:
        private_key_from_hex(text[:-2])
    assert text[:-2] not in str(info.value)
    assert text not in repr(alice)


def test_remembered_ids_age_out_with_the_freshness_window_and_replays_stay_refused(alice):
    # Gossip digests never stop: a verifier that kept every id up to the count cap grew for
    # hours (bench.memory). With a freshness window, an id older than it is forgotten; a replay
    # of it is then refused as too old instead of as already seen.
    clock = [NOW_MS]
    keyring = Keyring({"alice": alice.public_key})
    v = EnvelopeVerifier(keyring, options=VerifierOptions(now_ms=lambda: clock[0], max_age_ms=60_000))
    signer = EnvelopeSigner("alice", alice.private_key)

    def fresh(i: int) -> Envelope:
        payload = TraceEvent(name=f"digest-{i}", attributes={"n": i})
        return signer.sign(Envelope.of(payload, sender="alice", hlc=HlcTimestamp(clock[0], 0)))

    old = [fresh(i) for i in range(50)]
    for env in old:
        v.verify(env)
    held_early = len(v._seen_ids)
    for step in range(1, 21):  # 20 windows of traffic
        clock[0] += 30_000
        for i in range(50):
            v.verify(fresh(step * 1000 + i))
    assert held_early == 50
    assert len(v._seen_ids) <= 150, len(v._seen_ids)  # about two half-windows, not 1,050
    assert _reason(v, old[0]) == "replayed"

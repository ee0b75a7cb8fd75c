"""The trust policy: only operator-certified keys (or pinned keys rotated by themselves) are admitted."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mesh.cli import app
from mesh.errors import ConfigError
from mesh.runtime.trust import load_or_create_keys, load_or_issue_certificate
from mesh.security import (
    AgentCertificate,
    KeyRecord,
    Keyring,
    TrustPolicy,
    certify,
    ensure_operator_key,
    generate_keypair,
    operator_key_path,
    public_key_from_hex,
    public_key_to_hex,
    rotate,
)

OPERATOR = generate_keypair("operator")
OTHER_OPERATOR = generate_keypair("other")
KEYS = [generate_keypair(f"a{i}") for i in range(3)]


@settings(max_examples=150, deadline=None)
@given(
    subject=st.sampled_from(["k2", "k3", "mallory"]),
    key_index=st.integers(0, 2),
    signer=st.sampled_from(["operator", "other", "none"]),
    issued=st.integers(0, 10),
    tamper=st.sampled_from(["none", "agent_id", "public_key", "issued_at", "signature"]),
)
def test_a_key_counts_only_with_the_operators_certificate_for_that_id_and_key(
    subject: str, key_index: int, signer: str, issued: int, tamper: str
) -> None:
    keyring = Keyring(policy=TrustPolicy(OPERATOR.public_key))
    key = KEYS[key_index].public_key
    cert = None
    if signer != "none":
        operator = OPERATOR if signer == "operator" else OTHER_OPERATOR
        cert = certify(operator.private_key, subject, key, issued_at_ms=issued)
        fields = cert.to_dict()
        if tamper == "agent_id":
            fields["agent_id"] = subject + "x"
        elif tamper == "public_key":
            fields["public_key"] = public_key_to_hex(KEYS[(key_index + 1) % 3].public_key)
        elif tamper == "issued_at":
            fields["issued_at_ms"] = issued + 1
        elif tamper == "signature":
            fields["signature"] = bytes(64).hex()
        cert = AgentCertificate.from_dict(fields)
    admitted = keyring.offer("k2", KeyRecord(public_key_to_hex(key), cert))
    genuine = signer == "operator" and tamper == "none" and subject == "k2"
    assert admitted == genuine
    assert ("k2" in keyring) == genuine


def test_a_trusted_key_is_replaced_only_by_a_newer_certificate() -> None:
    keyring = Keyring(policy=TrustPolicy(OPERATOR.public_key))
    old, new = KEYS[0].public_key, KEYS[1].public_key
    assert keyring.offer("k2", KeyRecord(public_key_to_hex(old), certify(OPERATOR.private_key, "k2", old, issued_at_ms=5)))
    assert not keyring.offer("k2", KeyRecord(public_key_to_hex(new), certify(OPERATOR.private_key, "k2", new, issued_at_ms=5)))
    assert keyring.to_dict()["k2"] == public_key_to_hex(old)
    assert keyring.offer("k2", KeyRecord(public_key_to_hex(new), certify(OPERATOR.private_key, "k2", new, issued_at_ms=6)))
    assert keyring.to_dict()["k2"] == public_key_to_hex(new)
    # Replaying the old (genuine) certificate does not bring the old key back.
    assert not keyring.offer("k2", KeyRecord(public_key_to_hex(old), certify(OPERATOR.private_key, "k2", old, issued_at_ms=5)))


def test_pinned_mode_rotates_only_with_the_pinned_key() -> None:
    keyring = Keyring()
    a, b, c = KEYS
    assert keyring.offer("k2", KeyRecord(public_key_to_hex(a.public_key)))
    assert not keyring.offer("k2", KeyRecord(public_key_to_hex(b.public_key)))
    assert not keyring.offer("k2", KeyRecord(public_key_to_hex(b.public_key), rotation=rotate("k2", c.private_key, b.public_key)))
    assert keyring.offer("k2", KeyRecord(public_key_to_hex(b.public_key), rotation=rotate("k2", a.private_key, b.public_key)))
    assert keyring.to_dict()["k2"] == public_key_to_hex(b.public_key)


def test_records_parse_the_old_bare_hex_form_and_refuse_garbage() -> None:
    bare = public_key_to_hex(KEYS[0].public_key)
    assert KeyRecord.parse(bare) == KeyRecord(bare)
    for junk in ["{", "{}", '{"key": 5}', "zz", '{"key": "' + bare + '", "cert": {"agent_id": 1}}']:
        with pytest.raises(ConfigError):
            KeyRecord.parse(junk)


def test_agents_self_certify_only_with_a_readable_operator_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MESH_OPERATOR_PUBLIC_KEY", "MESH_OPERATOR_PUBLIC_KEY_FILE", "MESH_OPERATOR_KEY_FILE",
                "MESH_AGENT_KEY_FILE", "MESH_AGENT_CERT_FILE"):
        monkeypatch.delenv(var, raising=False)
    state = tmp_path / "state"
    keys = load_or_create_keys("w1", state / "keys")
    assert TrustPolicy.from_env(state_dir=state).mode == "pinned"
    assert load_or_issue_certificate(keys, state / "keys", TrustPolicy(), state_dir=state) is None
    # Operator public key configured, private key not readable here: a clear error, no certificate.
    monkeypatch.setenv("MESH_OPERATOR_PUBLIC_KEY", public_key_to_hex(OPERATOR.public_key))
    policy = TrustPolicy.from_env(state_dir=state)
    with pytest.raises(ConfigError, match="mesh keys certify w1"):
        load_or_issue_certificate(keys, state / "keys", policy, state_dir=state)
    # A certificate file from `mesh keys certify` is used.
    cert_file = tmp_path / "w1.cert"
    cert_file.write_text(certify(OPERATOR.private_key, "w1", keys.public_key).to_json())
    monkeypatch.setenv("MESH_AGENT_CERT_FILE", str(cert_file))
    cert = load_or_issue_certificate(keys, state / "keys", policy, state_dir=state)
    assert cert is not None and cert.verify(OPERATOR.public_key)
    # Dev: the operator key under the state dir (mesh dev up) makes agents certify themselves.
    monkeypatch.delenv("MESH_OPERATOR_PUBLIC_KEY")
    monkeypatch.delenv("MESH_AGENT_CERT_FILE")
    dev_key, created = ensure_operator_key(operator_key_path(state))
    assert created and (operator_key_path(state).stat().st_mode & 0o777) == 0o600
    dev_policy = TrustPolicy.from_env(state_dir=state)
    assert dev_policy.mode == "certified"
    cert = load_or_issue_certificate(keys, state / "keys", dev_policy, state_dir=state)
    assert cert is not None and cert.verify(dev_key.public_key())
    assert ((state / "keys" / "w1.cert").stat().st_mode & 0o777) == 0o600


def test_mesh_keys_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("MESH_OPERATOR_KEY_FILE", raising=False)
    runner = CliRunner()
    init = runner.invoke(app, ["keys", "init-operator"])
    assert init.exit_code == 0 and "MESH_OPERATOR_PUBLIC_KEY=" in init.output
    operator_hex = init.output.split("MESH_OPERATOR_PUBLIC_KEY=")[1].split()[0]
    agent = generate_keypair("w9")
    out = runner.invoke(app, ["keys", "certify", "w9", public_key_to_hex(agent.public_key)])
    assert out.exit_code == 0
    cert = AgentCertificate.from_json(out.output)
    policy = TrustPolicy(public_key_from_hex(operator_hex))
    assert Keyring(policy=policy).offer("w9", KeyRecord(public_key_to_hex(agent.public_key), cert))
    bad = runner.invoke(app, ["keys", "certify", "w9", "not-hex"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    issued = runner.invoke(app, ["keys", "issue", "w10", "--out-dir", str(tmp_path / "secret")])
    assert issued.exit_code == 0 and (tmp_path / "secret" / "agent.cert").exists()
    shown = runner.invoke(app, ["keys", "show", "--json"])
    assert shown.exit_code == 0 and '"mode": "certified"' in shown.output and operator_hex in shown.output

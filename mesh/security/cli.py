"""``mesh keys``: create the operator key, certify agent keys, show what this machine trusts."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mesh.errors import MeshError
from mesh.security._keys import (
    generate_keypair,
    private_key_to_hex,
    public_key_from_hex,
    public_key_to_hex,
)
from mesh.security._trust import (
    OPERATOR_KEY_FILE_ENV,
    TrustPolicy,
    certify,
    ensure_operator_key,
    load_operator_key,
    operator_key_path,
)
from mesh.settings import MeshSettings

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True)
_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)

OperatorKeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--operator-key",
        help=f"Operator private key file [env {OPERATOR_KEY_FILE_ENV}; <state_dir>/operator/operator.ed25519].",
    ),
]


def _fail(message: str) -> typer.Exit:
    _err.print(f"error: {message}")
    return typer.Exit(2)


def _operator_path(path: Path | None) -> Path:
    if path is not None:
        return path
    configured = os.environ.get(OPERATOR_KEY_FILE_ENV, "").strip()
    return Path(configured) if configured else operator_key_path(MeshSettings().state_dir)


@app.command("init-operator")
def init_operator(operator_key: OperatorKeyOpt = None) -> None:
    """Create the operator key pair (kept if it exists); print its public key for MESH_OPERATOR_PUBLIC_KEY."""
    path = _operator_path(operator_key)
    try:
        key, created = ensure_operator_key(path)
    except (MeshError, OSError) as exc:
        raise _fail(f"cannot create the operator key at {path}: {exc}") from None
    _out.print(f"{'created' if created else 'kept the existing'} operator key {path} (private: keep it off agents)")
    _out.print(f"MESH_OPERATOR_PUBLIC_KEY={public_key_to_hex(key.public_key())}")


@app.command("certify")
def certify_cmd(
    agent_id: Annotated[str, typer.Argument(help="The agent id the key belongs to.")],
    public_key: Annotated[str, typer.Argument(help="The agent's Ed25519 public key (64 hex characters).")],
    operator_key: OperatorKeyOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the certificate here (0600) instead of stdout.")] = None,
) -> None:
    """Certify AGENT_ID's PUBLIC_KEY with the operator key; print the certificate (JSON)."""
    path = _operator_path(operator_key)
    try:
        key = public_key_from_hex(public_key)
        operator = load_operator_key(environ={OPERATOR_KEY_FILE_ENV: str(path)})
    except MeshError as exc:
        raise _fail(str(exc)) from None
    assert operator is not None
    cert = certify(operator, agent_id, key)
    if out is None:
        _out.print(cert.to_json())
        return
    _write_private(out, cert.to_json())
    _err.print(f"certificate of {agent_id} written to {out}")


@app.command("issue")
def issue(
    agent_id: Annotated[str, typer.Argument(help="The agent id to make a key for.")],
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Directory for agent.key and agent.cert (0600).")],
    operator_key: OperatorKeyOpt = None,
) -> None:
    """Make a key pair for AGENT_ID and certify it: the two files of a Kubernetes Secret."""
    path = _operator_path(operator_key)
    try:
        operator = load_operator_key(environ={OPERATOR_KEY_FILE_ENV: str(path)})
    except MeshError as exc:
        raise _fail(str(exc)) from None
    assert operator is not None
    keys = generate_keypair(agent_id)
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_private(out_dir / "agent.key", private_key_to_hex(keys.private_key))
    _write_private(out_dir / "agent.cert", certify(operator, agent_id, keys.public_key).to_json())
    _out.print(f"{agent_id}: {out_dir / 'agent.key'} and {out_dir / 'agent.cert'} "
               f"(public key {public_key_to_hex(keys.public_key)})")


@app.command("show")
def show(as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False) -> None:
    """Show the trust policy this machine's agents would use, and the local agent keys."""
    settings = MeshSettings()
    try:
        policy = TrustPolicy.from_env(state_dir=settings.state_dir)
        can_certify = load_operator_key(state_dir=settings.state_dir) is not None
    except MeshError as exc:
        raise _fail(str(exc)) from None
    key_dir = settings.state_dir / "keys"
    agents = sorted(p.stem for p in key_dir.glob("*.ed25519")) if key_dir.is_dir() else []
    info = {
        "mode": policy.mode,
        "operator_public_key": public_key_to_hex(policy.operator_key) if policy.operator_key else None,
        "operator_private_key_readable": can_certify,
        "key_dir": str(key_dir),
        "agents": {a: {"certificate": (key_dir / f"{a}.cert").exists()} for a in agents},
    }
    if as_json:
        _out.print(json.dumps(info, sort_keys=True))
        return
    _out.print(f"trust mode: {policy.mode}")
    if policy.operator_key is not None:
        _out.print(f"operator public key: {info['operator_public_key']}")
        if can_certify:
            _out.print("operator private key is readable here: agents self-certify (dev only)")
    else:
        _out.print("no operator key: keys are pinned on first use (run `mesh keys init-operator`)")
    for agent in agents:
        _out.print(f"  {agent}: certificate {'yes' if info['agents'][agent]['certificate'] else 'no'}")  # type: ignore[index]


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")

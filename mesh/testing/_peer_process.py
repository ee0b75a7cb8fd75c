"""A ``Peer`` in its own OS process, driven over stdin/stdout (tests, chaos runs, benchmarks).

The child (``python -m mesh.testing.peer_process``) runs one peer on a real ``KafkaBus`` with its maps in
Redis and reads one JSON command per line on stdin; it answers with one JSON event per line on
stdout. Its signing key and the keyring come in environment variables, never on the command
line (``ps`` shows arguments). ``PeerProcess`` is the parent's side, ``PeerProcessConfig`` its
settings (both exported by ``mesh.testing``).

Commands: ``{"op": "set", "wf", "name", "value"}``, ``{"op": "propose", "wf", "name", "value"}``,
``{"op": "dump", "wf"}``, ``{"op": "stats"}``, ``{"op": "exit"}``. Events: ``ready`` (with
``restored``), one reply per command (same ``op``), and with ``--watch`` a ``changed`` event
(workflow, names, wall time) whenever a peer's message changes a map.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from mesh.errors import UsageError

__all__ = ["KEY_ENV", "PeerProcess", "PeerProcessConfig", "main"]

KEY_ENV = "MESH_WORKER_PRIVATE_KEY"
"""Environment variable carrying the child's Ed25519 private key as hex."""


@dataclass(frozen=True)
class PeerProcessConfig:
    """How to start one peer process."""

    agent_id: str
    """The node's agent id (must be in the keyring)."""
    private_key_hex: str = field(repr=False)
    """Its signing key (hex); passed in ``MESH_WORKER_PRIVATE_KEY``."""
    keyring_json: str
    """Every trusted public key, ``{agent_id: hex}``; passed in ``MESH_KEYRING``."""
    bootstrap: str
    """Kafka bootstrap address this node dials (a proxy's address puts it behind the proxy)."""
    topic_prefix: str
    """Prefix of the mesh's topics (they must exist)."""
    redis_url: str = ""
    """Where its maps are saved; empty means no persistence."""
    key_prefix: str = "mesh:"
    """Redis key prefix."""
    anti_entropy_period_ms: int = 500
    """Digest period."""
    validators: tuple[str, ...] = ()
    """Validator ids, when the node takes part in votes."""
    watch: bool = False
    """Emit a ``changed`` event per map change made by a peer."""
    session_timeout_ms: int = 30_000
    """Consumer session timeout."""
    request_timeout_ms: int = 30_000
    """Kafka request timeout: a publish cut off longer than this is dropped."""
    truth: dict[str, Any] | None = None
    """Ground truth a validator checks proposed variables against (name -> value; names not in
    it pass as plausible); None keeps the default checker (any value is plausible)."""
    lie: bool = False
    """A Byzantine validator: it votes the opposite of what ``truth`` says (fault campaigns)."""


def _child_argv(config: PeerProcessConfig) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "mesh.testing.peer_process",
        "--agent-id",
        config.agent_id,
        "--bootstrap",
        config.bootstrap,
        "--topic-prefix",
        config.topic_prefix,
        "--key-prefix",
        config.key_prefix,
        "--anti-entropy-ms",
        str(config.anti_entropy_period_ms),
        "--session-timeout-ms",
        str(config.session_timeout_ms),
        "--request-timeout-ms",
        str(config.request_timeout_ms),
    ]
    if config.redis_url:
        argv += ["--redis-url", config.redis_url]
    if config.validators:
        argv += ["--validators", ",".join(config.validators)]
    if config.watch:
        argv.append("--watch")
    if config.truth is not None:
        argv += ["--truth", json.dumps(config.truth)]
    if config.lie:
        argv.append("--lie")
    return argv


class PeerProcess:
    """The parent's handle on one peer process: start, send commands, read events, kill."""

    def __init__(
        self,
        config: PeerProcessConfig,
        *,
        env: Mapping[str, str] | None = None,
        stderr_path: Path | None = None,
    ) -> None:
        """Prepare (not start) a peer process with ``config``; its stderr (logs) goes to ``stderr_path`` if given."""
        self.config = config
        self.stderr_path = stderr_path
        self._env = dict(env if env is not None else os.environ)
        self.proc: asyncio.subprocess.Process | None = None
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        """Every event the child printed, in order (replies are also routed to ``request``)."""
        self.ready: dict[str, Any] = {}
        """The child's ``ready`` event."""
        self._replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self, *, timeout_s: float = 60.0) -> dict[str, Any]:
        """Spawn the child and wait for its ``ready`` event (returned)."""
        env = dict(self._env)
        env[KEY_ENV] = self.config.private_key_hex
        env["MESH_KEYRING"] = self.config.keyring_json
        stderr = self.stderr_path.open("ab") if self.stderr_path is not None else None
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *_child_argv(self.config),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                env=env,
                limit=16 * 1024 * 1024,
            )
        finally:
            if stderr is not None:
                stderr.close()
        self._reader = asyncio.create_task(self._read())
        self.ready = await self._reply(timeout_s, expect="ready")
        return self.ready

    async def request(self, op: str, *, timeout_s: float = 30.0, **fields: Any) -> dict[str, Any]:
        """Send one command and return its reply."""
        if self.proc is None or self.proc.stdin is None:
            raise UsageError("peer process is not started")
        async with self._lock:
            self.proc.stdin.write((json.dumps({"op": op, **fields}) + "\n").encode())
            await self.proc.stdin.drain()
            return await self._reply(timeout_s, expect=op)

    def kill(self) -> None:
        """SIGKILL the child (a crash: nothing is flushed)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)

    async def aclose(self, *, timeout_s: float = 10.0) -> int | None:
        """Ask the child to exit (SIGKILL after ``timeout_s``); return its exit code."""
        if self.proc is None:
            return None
        if self.proc.returncode is None and self.proc.stdin is not None:
            with contextlib.suppress(ConnectionError, BrokenPipeError, RuntimeError):
                self.proc.stdin.write(b'{"op": "exit"}\n')
                await self.proc.stdin.drain()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            self.kill()
            await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        return self.proc.returncode

    async def _reply(self, timeout_s: float, *, expect: str) -> dict[str, Any]:
        try:
            event = await asyncio.wait_for(self._replies.get(), timeout_s)
        except TimeoutError:
            raise TimeoutError(
                f"peer process {self.config.agent_id}: no {expect!r} reply within {timeout_s} s"
            ) from None
        if event.get("op") == "died":
            raise RuntimeError(
                f"peer process {self.config.agent_id} exited (code {self.proc.returncode if self.proc else None})"
            )
        if event.get("op") != expect:
            raise RuntimeError(
                f"peer process {self.config.agent_id}: expected {expect!r}, got {event}"
            )
        return event

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                await self._replies.put({"op": "died"})
                return
            event = json.loads(line)
            if event.get("op") == "changed":
                await self.events.put(event)
            else:
                await self._replies.put(event)


# -- the child -------------------------------------------------------------------------------


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, default=str) + "\n")
    sys.stdout.flush()


async def _child(args: argparse.Namespace) -> None:
    from mesh.bus import Bus, KafkaBus
    from mesh.gossip import ContextMapArchive, GossipNodeOptions, GossipOptions
    from mesh.peer import VARIABLE_FACT, Peer
    from mesh.quorum import CheckerRegistry
    from mesh.runtime.trust import AgentTrust
    from mesh.security import KeyPair, Keyring, private_key_from_hex
    from protocols import Proposal, Topics

    private_key = private_key_from_hex(os.environ.pop(KEY_ENV, ""))
    keys = KeyPair(args.agent_id, private_key, private_key.public_key())
    keyring = Keyring.from_env()
    topics = Topics(args.topic_prefix)
    bus = KafkaBus(
        args.bootstrap,
        topics=topics,
        client_id=args.agent_id,
        create_topics=[],
        request_timeout_ms=args.request_timeout_ms,
    )
    await bus.start()
    stores = None
    if args.redis_url:
        from mesh.settings import MeshSettings
        from mesh.store import RedisConnection, RedisStores

        # The URL from the parent; mode, credentials and TLS from MESH_REDIS_* like every other client.
        connection = RedisConnection.from_settings(MeshSettings(redis_url=args.redis_url))
        stores = RedisStores(connection, prefix=args.key_prefix, socket_timeout_s=2)

    def on_change(workflow_id: str, names: list[str]) -> None:
        _emit({"op": "changed", "wf": workflow_id, "names": names, "t_ms": time.time() * 1000})

    checkers = None
    if args.truth:
        truth = json.loads(args.truth)
        lie = bool(args.lie)

        def check(proposal: Proposal) -> bool:
            name, value = proposal.key, proposal.value
            honest = name not in truth or truth[name] == value
            return honest != lie

        checkers = CheckerRegistry()
        checkers.register(VARIABLE_FACT, check)
    node = Peer(
        AgentTrust(keys, keyring=keyring),
        cast("Bus", bus),
        checkers=checkers,
        topics=topics,
        store=ContextMapArchive(stores.context_maps) if stores else None,
        validators=set(args.validators.split(",")) if args.validators else None,
        # With Redis, a validator's votes survive a SIGKILL of this process (mesh.store.RedisVoteLedger).
        vote_ledger=stores.vote_ledger(keys.agent_id) if stores else None,
        gossip_options=GossipOptions(anti_entropy_period_ms=args.anti_entropy_ms),
        node_options=GossipNodeOptions(session_timeout_ms=args.session_timeout_ms),
        on_change=on_change if args.watch else None,
    )
    await node.start()
    _emit({"op": "ready", "agent_id": node.agent_id, "restored": node.restored, "pid": os.getpid()})

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            cmd = json.loads(line)
            op = cmd.get("op")
            if op == "exit":
                break
            if op == "set":
                entry = await node.set_variable(cmd["wf"], cmd["name"], cmd["value"])
                _emit(
                    {
                        "op": "set",
                        "name": cmd["name"],
                        "t_ms": time.time() * 1000,
                        "hlc": list(entry.hlc),
                    }
                )
            elif op == "propose":
                proposal = await node.propose(cmd["wf"], cmd["name"], cmd["value"])
                _emit({"op": "propose", "id": proposal.id})
            elif op == "decision":
                decision = node.decision(cmd["id"])
                _emit({"op": "decision", "outcome": decision.outcome if decision else "pending"})
            elif op == "dump":
                cmap = node.get(cmd["wf"])
                values = {name: cmap.value(name) for name, _ in cmap.items()}
                statuses = {name: getattr(e, "status", "") for name, e in cmap.items()}
                _emit(
                    {
                        "op": "dump",
                        "values": values,
                        "statuses": statuses,
                        "digest": [b.hex() for b in cmap.digest(16)],
                    }
                )
            elif op == "stats":
                _emit({"op": "stats", **node.summary()})
            else:
                _emit({"op": op or "?", "error": f"unknown op {op!r}"})
    finally:
        await node.aclose()
        await bus.aclose()
        if stores is not None:
            await stores.aclose()


def main(argv: list[str] | None = None) -> None:
    """Run one peer until stdin closes or ``exit`` arrives (the child's side)."""
    parser = argparse.ArgumentParser(
        prog="python -m mesh.testing.peer_process", description=__doc__
    )
    parser.add_argument("--agent-id", required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic-prefix", required=True)
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--key-prefix", default="mesh:")
    parser.add_argument("--anti-entropy-ms", type=int, default=500)
    parser.add_argument("--validators", default="")
    parser.add_argument("--watch", action="store_true")
    parser.add_argument("--session-timeout-ms", type=int, default=30_000)
    parser.add_argument("--request-timeout-ms", type=int, default=30_000)
    parser.add_argument(
        "--truth", default="", help="JSON ground truth validators check variables against"
    )
    parser.add_argument(
        "--lie", action="store_true", help="vote against the truth (a Byzantine validator)"
    )
    args = parser.parse_args(argv)
    asyncio.run(_child(args))

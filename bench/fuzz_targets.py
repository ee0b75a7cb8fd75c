"""Fuzz targets: every decoder and parser of outside input, with the errors it may raise.

The property each target checks: any input yields a valid value or one of the project's own
error types (``allowed``). Anything else (``RecursionError``, ``KeyError``, ``TypeError``, ...)
propagates: it is a finding. Time and memory are bounded by the runner (libFuzzer's
``-timeout`` and ``-rss_limit_mb`` under atheris; hypothesis' deadline in tests/fuzz).

The same targets run under hypothesis in tests/fuzz (short, in CI) and under atheris in
``python -m bench.fuzz`` (coverage-guided, long).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgpack

from mesh.errors import PermanentError
from mesh.gossip import GossipAgent
from mesh.gossip._codec import decode_delta, encode_delta
from mesh.gossip._map import ContextMap
from protocols import (
    Ballot,
    Envelope,
    EnvelopeCodec,
    EnvelopeDecodeError,
    GossipDelta,
    GossipDigest,
    GossipSyncRequest,
    Proposal,
    WorkflowSpec,
    WorkflowSpecError,
    ballot_signing_bytes,
    canonical_hash,
    parse_workflow_spec,
)

__all__ = ["TARGETS", "FuzzTarget", "envelope_with_raw_payload", "seeds"]

_CODEC = EnvelopeCodec()


@dataclass(frozen=True, slots=True)
class FuzzTarget:
    """One decoder under fuzz: ``run(data)`` returns or raises one of ``allowed``."""

    name: str
    run: Callable[[bytes], object]
    allowed: tuple[type[BaseException], ...]
    what: str


def envelope_with_raw_payload(kind: str, payload: bytes, *, sender: str = "peer", hlc_ms: int | None = None) -> bytes:
    """Envelope bytes whose body carries ``payload`` verbatim as the msgpack of its ``p`` field.

    So a fuzzer's bytes reach the codec's payload validation for ``kind`` (and the handler
    behind it) instead of dying in the outer framing.
    """
    wall = int(time.time() * 1000) if hlc_ms is None else hlc_ms
    head = {"id": "fuzz", "k": kind, "s": sender, "w": "wf-fuzz", "st": "", "h": [wall, 0], "tr": {}}
    body = bytes([0x80 | (len(head) + 1)])
    for k, v in head.items():
        body += msgpack.packb(k, use_bin_type=True) + msgpack.packb(v, use_bin_type=True)
    body += msgpack.packb("p", use_bin_type=True) + payload
    return msgpack.packb([1, body, b""], use_bin_type=True)


# -- targets --------------------------------------------------------------------------------


def _envelope(data: bytes) -> object:
    return _CODEC.decode(data)


def _spec(fmt: str) -> Callable[[bytes], object]:
    def run(data: bytes) -> object:
        spec = parse_workflow_spec(data, source="fuzz", fmt=fmt)
        # What the runtime does with a spec next: walk the DAG.
        order = spec.topological_order()
        assert len(order) == len(spec.steps)
        return spec

    return run


_LOOP: asyncio.AbstractEventLoop | None = None


def _run(coro: object) -> object:
    # One loop per process: asyncio.run per input would cost more than the decoding under test.
    global _LOOP
    if _LOOP is None:
        _LOOP = asyncio.new_event_loop()
    return _LOOP.run_until_complete(coro)  # type: ignore[arg-type]


async def _noop_send(_envelope: Envelope) -> None:
    return None


def _gossip_delta(data: bytes) -> object:
    # Both encodings, straight into the decoder and a replica's merge (what a node does).
    for encoding in ("none", "zlib"):
        try:
            delta = decode_delta(GossipDelta(encoding=encoding, data=data))  # type: ignore[arg-type]
        except PermanentError:
            continue
        cmap = ContextMap("wf-fuzz", "me")
        cmap.merge(delta)
        cmap.digest()
        encode_delta(delta)
    return None


_GOSSIP_KINDS = (GossipDigest.KIND, GossipSyncRequest.KIND, GossipDelta.KIND)
_VOTE_KINDS = (Proposal.KIND, Ballot.KIND)


def _gossip_payload(data: bytes) -> object:
    # The first byte picks the kind; the rest is the payload's msgpack, handled as a node does.
    if not data:
        return None
    kind = _GOSSIP_KINDS[data[0] % len(_GOSSIP_KINDS)]
    envelope = _CODEC.decode(envelope_with_raw_payload(kind, data[1:]))
    agent = GossipAgent("me", _noop_send)
    agent.join("wf-fuzz").set("seed", {"a": [1, 2]})
    return _run(agent.handle(envelope))


def _vote_payload(data: bytes) -> object:
    if not data:
        return None
    kind = _VOTE_KINDS[data[0] % len(_VOTE_KINDS)]
    envelope = _CODEC.decode(envelope_with_raw_payload(kind, data[1:]))
    if kind == Proposal.KIND:
        proposal = envelope.payload_model(Proposal)
        return canonical_hash(proposal.value)
    return ballot_signing_bytes(envelope.payload_model(Ballot))


_ENVELOPE_ERRORS: tuple[type[BaseException], ...] = (EnvelopeDecodeError,)
_GOSSIP_ERRORS: tuple[type[BaseException], ...] = (EnvelopeDecodeError, PermanentError)

TARGETS: dict[str, FuzzTarget] = {
    t.name: t
    for t in (
        FuzzTarget("envelope", _envelope, _ENVELOPE_ERRORS, "EnvelopeCodec.decode on raw record bytes"),
        FuzzTarget("spec_yaml", _spec("yaml"), (WorkflowSpecError,), "parse_workflow_spec, YAML"),
        FuzzTarget("spec_json", _spec("json"), (WorkflowSpecError,), "parse_workflow_spec, JSON"),
        FuzzTarget("gossip_delta", _gossip_delta, _GOSSIP_ERRORS, "decode_delta + ContextMap.merge"),
        FuzzTarget("gossip_payload", _gossip_payload, _GOSSIP_ERRORS,
                   "gossip.digest / gossip.sync / gossip.delta payloads: codec + GossipAgent.handle"),
        FuzzTarget("vote_payload", _vote_payload, _ENVELOPE_ERRORS,
                   "vote.proposal / vote.ballot payloads: codec + canonical_hash / ballot signing bytes"),
    )
}


# -- seeds: valid inputs, so mutation starts from deep inside each format ---------------------


def seeds(name: str) -> list[bytes]:
    """A few valid inputs of target ``name`` (the fuzzer mutates from these)."""
    spec = {
        "name": "seed",
        "mission": "m",
        "variables": {"base_url": "http://x"},
        "steps": [
            {"id": "a", "role": "identity", "params": {"k": [1, {"x": None}]}},
            {"id": "b", "role": "fetch", "depends_on": ["a"], "limits": {"max_turns": 3}},
        ],
    }
    if name == "envelope":
        from protocols import StepCompleted, WorkflowSubmitted

        return [
            _CODEC.encode(Envelope.of(StepCompleted(outputs={"r": [1, 2]}, turns=1), sender="s", workflow_id="w")),
            _CODEC.encode(Envelope.of(WorkflowSubmitted(spec=WorkflowSpec.model_validate(spec)), sender="c", workflow_id="w")),
        ]
    if name == "spec_json":
        import json

        return [json.dumps(spec).encode()]
    if name == "spec_yaml":
        import yaml

        return [yaml.safe_dump(spec).encode(), b"name: x\nsteps:\n  - {id: a, role: r}\n  - {id: b, role: r, depends_on: [a]}\n"]
    cmap = ContextMap("wf-fuzz", "peer")
    cmap.set("token", "abc", secret=True)
    cmap.set("ids", [1, 2, 3])
    delta = cmap.delta_since(0)
    if name == "gossip_delta":
        return [delta.to_msgpack(), encode_delta(delta, compress_min_bytes=1).data]
    if name == "gossip_payload":
        regs, sets = cmap.stamps(None, 16)
        sync = GossipSyncRequest(to="me", bucket_count=16, buckets=tuple(range(16)), registers=regs, sets=sets)
        digest = GossipDigest(buckets=tuple(cmap.digest()), entries=2)
        return [
            bytes([0]) + msgpack.packb(digest.model_dump(mode="python"), use_bin_type=True),
            bytes([1]) + msgpack.packb(sync.model_dump(mode="python"), use_bin_type=True),
            bytes([2]) + msgpack.packb(encode_delta(delta).model_dump(mode="python"), use_bin_type=True),
        ]
    if name == "vote_payload":
        p = Proposal(id="p1", workflow_id="w", fact_kind="variable", key="k", value={"drug": "x", "dose": 5},
                     value_hash="h", proposer="a")
        b = Ballot(proposal_id="p1", voter="peer", verdict="accept", value_hash="h", signature=b"s" * 64)
        return [
            bytes([0]) + msgpack.packb(p.model_dump(mode="python"), use_bin_type=True),
            bytes([1]) + msgpack.packb(b.model_dump(mode="python"), use_bin_type=True),
        ]
    return []



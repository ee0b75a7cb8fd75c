"""A generated corpus of hostile records: every one must be refused by the envelope codec or guard.

Shared by the fuzz property tests, the live chaos test and the flood scenario of `mesh chaos`. Each generator draws from a seeded
``random.Random`` so a failing corpus can be replayed from its seed. Classes: deep nesting (as
the record, inside the body, inside a signed payload), long step chains and cycles in a
``WorkflowSubmitted``, truncated msgpack, wrong types in every field, random bytes, bit flips of
valid signed envelopes, empty values and tombstones.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import msgpack

from protocols import Envelope, EnvelopeCodec, StepCompleted

__all__ = ["HostileRecord", "hostile_corpus"]

HostileRecord = tuple[str, bytes | None]
"""(class label, raw record value; None is a tombstone)."""

Signer = Callable[[Envelope], Envelope]


def _deep(depth: int, rng: random.Random) -> bytes:
    # Built as bytes: msgpack.packb itself refuses to nest past 511 levels.
    opener = rng.choice([b"\x91", b"\x81\xa1k", b"\xdc\x00\x01"])
    return opener * depth + rng.choice([b"\xc0", b"\x01", b"\xa1x"])


def _deep_value(depth: int) -> Any:
    value: Any = "bottom"
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


def _body(fields: dict[str, Any]) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


def _frame(body: bytes, signature: bytes = b"") -> bytes:
    return msgpack.packb([1, body, signature], use_bin_type=True)


def hostile_corpus(
    rng: random.Random, *, workflow_id: str, sign: Signer, size: int = 60
) -> list[HostileRecord]:
    """``size`` hostile records (at least one of each class) aimed at ``workflow_id``."""
    codec = EnvelopeCodec()
    good_fields = {
        "id": "x",
        "k": StepCompleted.KIND,
        "s": "chaos-test",
        "w": workflow_id,
        "st": "fetch",
        "h": [1, 0],
        "tr": {},
        "p": {"turns": 1},
    }

    def valid_signed() -> bytes:
        env = Envelope.of(
            StepCompleted(outputs={"n": rng.randrange(10**6)}, turns=1),
            sender="chaos-test",
            workflow_id=workflow_id,
            step_id="fetch",
            id=f"hostile-{rng.getrandbits(64):x}",
        )
        return codec.encode(sign(env))

    def deep_record() -> bytes:
        return _deep(rng.randint(65, 5000), rng)

    def deep_body() -> bytes:
        return _frame(_deep(rng.randint(65, 3000), rng))

    def deep_payload() -> bytes:
        # Validly framed and signed: only the structure limit stops it.
        env = Envelope(
            kind=StepCompleted.KIND,
            sender="chaos-test",
            workflow_id=workflow_id,
            step_id="fetch",
            payload={"outputs": {"x": _deep_value(rng.randint(70, 400))}, "turns": 1},
        )
        return (
            codec.encode(sign(env))
            if rng.random() < 0.5
            else _frame(EnvelopeCodec.encode_body(env))
        )

    def long_chain() -> bytes:
        n = rng.randint(1001, 3000)
        steps = [
            {"id": f"s{i}", "role": "fetch", "depends_on": [f"s{i - 1}"] if i else []}
            for i in range(n)
        ]
        payload = {"spec": {"name": "chain", "steps": steps}}
        env = Envelope(
            kind="workflow.submitted", sender="chaos-test", workflow_id=workflow_id, payload=payload
        )
        return codec.__class__(max_bytes=10**8).encode(sign(env))

    def long_cycle() -> bytes:
        n = rng.randint(500, 1000)
        steps = [
            {"id": f"s{i}", "role": "fetch", "depends_on": [f"s{(i + 1) % n}"]} for i in range(n)
        ]
        env = Envelope(
            kind="workflow.submitted",
            sender="chaos-test",
            workflow_id=workflow_id,
            payload={"spec": {"name": "cycle", "steps": steps}},
        )
        return codec.__class__(max_bytes=10**8).encode(sign(env))

    def wide_fan_in() -> bytes:
        n = rng.randint(300, 600)
        steps: list[dict[str, Any]] = [{"id": f"s{i}", "role": "fetch"} for i in range(n)]
        steps.append({"id": "sink", "role": "fetch", "depends_on": [f"s{i}" for i in range(n)]})
        env = Envelope(
            kind="workflow.submitted",
            sender="chaos-test",
            workflow_id=workflow_id,
            payload={"spec": {"name": "fan", "steps": steps}},
        )
        return codec.__class__(max_bytes=10**8).encode(sign(env))

    def truncated() -> bytes:
        data = valid_signed()
        return data[: rng.randrange(1, len(data))]

    def wrong_type() -> bytes:
        fields: dict[str, Any] = dict(good_fields)
        key = rng.choice(list(fields))
        fields[key] = rng.choice(
            [None, 7, -1, 2.5, True, b"\x00", ["a"], {"a": 1}, "x" * rng.randint(0, 50)]
        )
        if key == "p" and isinstance(fields[key], dict):
            fields[key] = {"turns": "many", "outputs": 3}
        outer = rng.choice(
            [
                lambda b: _frame(b),
                lambda b: msgpack.packb([rng.choice([0, 2, "1", None]), b, b""], use_bin_type=True),
                lambda b: msgpack.packb({"v": 1, "b": b}, use_bin_type=True),
                lambda b: msgpack.packb([1, b.decode("latin-1"), b""], use_bin_type=True),
                lambda b: msgpack.packb([1, b], use_bin_type=True),
            ]
        )
        return outer(_body(fields))

    def random_bytes() -> bytes:
        return rng.randbytes(rng.randint(1, 4000))

    def bit_flip() -> bytes:
        data = bytearray(valid_signed())
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        return bytes(data)

    def huge_length() -> bytes:
        # A header promising far more than the record holds (array, map, str, bin of 2**32-1).
        return (
            rng.choice([b"\xdd", b"\xdf", b"\xdb", b"\xc6"])
            + b"\xff\xff\xff\xff"
            + rng.randbytes(rng.randint(0, 64))
        )

    def empty() -> bytes | None:
        return rng.choice([b"", None])

    classes: list[tuple[str, Callable[[], bytes | None]]] = [
        ("deep_record", deep_record),
        ("deep_body", deep_body),
        ("deep_payload", deep_payload),
        ("long_chain", long_chain),
        ("long_cycle", long_cycle),
        ("wide_fan_in", wide_fan_in),
        ("truncated", truncated),
        ("wrong_type", wrong_type),
        ("random_bytes", random_bytes),
        ("bit_flip", bit_flip),
        ("huge_length", huge_length),
        ("empty", empty),
    ]
    corpus: list[HostileRecord] = [(label, make()) for label, make in classes]
    while len(corpus) < size:
        label, make = rng.choice(classes)
        corpus.append((label, make()))
    rng.shuffle(corpus)
    return corpus

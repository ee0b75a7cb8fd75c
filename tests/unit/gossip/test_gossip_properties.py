"""Property tests: replicas that received the same deltas are equal (invariant 6)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.gossip import ContextMap, Delta, HybridLogicalClock, decode_delta, encode_delta

REPLICAS = ("a", "b", "c")
KEYS = ("k1", "k2", "k3")

op_strategy = st.tuples(
    st.integers(min_value=0, max_value=len(REPLICAS) - 1),
    st.sampled_from(["set", "set", "delete", "add", "discard", "accept", "merge_from"]),
    st.sampled_from(KEYS),
    st.integers(min_value=0, max_value=3),
    st.integers(min_value=0, max_value=2),  # wall-clock advance: 0 makes HLC ties common
)


class Wall:
    def __init__(self) -> None:
        self.ms = 1_000

    def __call__(self) -> int:
        return self.ms


def _run(ops: list[tuple[int, str, str, int, int]]) -> tuple[list[ContextMap], list[Delta]]:
    """Apply ops on replicas; return the replicas and every delta their changes produced."""
    wall = Wall()
    maps = [ContextMap("wf", r, clock=HybridLogicalClock(wall_ms=wall)) for r in REPLICAS]
    deltas: list[Delta] = []
    for index, op, key, value, advance in ops:
        wall.ms += advance
        m = maps[index]
        before = m.version
        if op == "set":
            m.set(key, value, priority=value, secret=value == 3)
        elif op == "delete":
            m.delete(key)
        elif op == "add":
            m.add("s-" + key, value)
        elif op == "discard":
            m.discard("s-" + key, value)
        elif op == "accept":
            entry = m.entry(key)
            if entry is not None:
                m.mark_accepted(key, entry.value_hash)
        elif op == "merge_from" and deltas:
            # Replicas also learn from each other mid-run, so later writes build on merged state.
            m.merge(deltas[value % len(deltas)])
        delta = m.delta_since(before)
        if len(delta):
            deltas.append(delta)
    return maps, deltas


def _fresh() -> ContextMap:
    return ContextMap("wf", "observer", clock=HybridLogicalClock(wall_ms=lambda: 0))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op_strategy, min_size=1, max_size=30), data=st.data())
def test_any_order_with_duplicates_gives_equal_replicas(ops, data):
    _, deltas = _run(ops)
    if not deltas:
        return
    reference = _fresh()
    for delta in deltas:
        reference.merge(delta)
    order = data.draw(st.permutations(deltas))
    duplicates = data.draw(st.lists(st.sampled_from(deltas), max_size=len(deltas)))
    shuffled = list(order) + duplicates
    shuffled = data.draw(st.permutations(shuffled))
    other = _fresh()
    for delta in shuffled:
        other.merge(decode_delta(encode_delta(delta)))  # through the wire format too
    assert other == reference
    assert other.digest(8) == reference.digest(8)
    assert dict(other.items()).keys() == dict(reference.items()).keys()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op_strategy, min_size=1, max_size=30), data=st.data())
def test_dropped_deltas_are_repaired_by_anti_entropy(ops, data):
    maps, deltas = _run(ops)
    # Each replica already holds its own writes; it receives only a random subset of the rest.
    replicas = [_fresh() for _ in REPLICAS]
    for i, replica in enumerate(replicas):
        replica.merge(maps[i].delta_since(0))
        kept = data.draw(st.lists(st.sampled_from(deltas), max_size=len(deltas))) if deltas else []
        for delta in kept:
            replica.merge(delta)
    # Anti-entropy rounds, pairwise, each through digest -> stamps -> missing_for.
    buckets = 4
    for _ in range(2):
        for i, x in enumerate(replicas):
            for y in replicas[i + 1 :]:
                dx, dy = x.digest(buckets), y.digest(buckets)
                differing = {b for b in range(buckets) if dx[b] != dy[b]}
                if not differing:
                    continue
                y.merge(x.missing_for(*y.stamps(differing, buckets), differing, buckets))
                x.merge(y.missing_for(*x.stamps(differing, buckets), differing, buckets))
    union = _fresh()
    for m in maps:
        union.merge(m.delta_since(0))
    for replica in replicas:
        assert replica == union


@settings(max_examples=100, deadline=None)
@given(ops=st.lists(op_strategy, min_size=1, max_size=25))
def test_merge_is_commutative_associative_and_idempotent(ops):
    maps, _ = _run(ops)
    a, b, c = (m.delta_since(0) for m in maps)

    def merged(*parts: Delta) -> ContextMap:
        m = _fresh()
        for part in parts:
            m.merge(part)
        return m

    ab = merged(a, b)
    assert ab == merged(b, a)
    assert merged(a, b, c) == merged(c, b, a) == merged(merged(b, c).delta_since(0), a)
    assert merged(a, a, b, b) == ab

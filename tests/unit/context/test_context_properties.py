"""Property-based tests of assembly and building over random block sets."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.context import (
    AssembledPrompt,
    Block,
    Budget,
    CompressionOptions,
    ContextBudgetError,
    Kind,
    LedgerAction,
    Priority,
    PromptBuilder,
    Region,
    assemble,
    default_counter,
)

# Characters that stress BPE at block joins: whitespace of several kinds, punctuation, digits.
ALPHABET = list("ab xyz.,;:'-!#()[]{}\n\t\r 0123456789éü中\u00a0\u3000")
WORDS = ["agent", "fetched", "page", "error", "retry", "token", " ", "\n", "42", "ok."]

texts = st.one_of(
    st.text(alphabet=st.sampled_from(ALPHABET), min_size=0, max_size=40),
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=60).map(" ".join),
)
block_specs = st.lists(
    st.tuples(
        texts,
        st.sampled_from([Priority.P0, Priority.P1, Priority.P2, Priority.P3]),
        st.sampled_from(list(Region)),
        st.sampled_from(list(Kind)),
        st.sampled_from([None, None, None, "g1", "g2", "g3"]),
        st.integers(min_value=0, max_value=30),
    ),
    min_size=0,
    max_size=30,
)


def make_blocks(specs: list, p0_share_cap: bool = True) -> list[Block]:
    blocks = []
    for i, (text, prio, region, kind, group, turn) in enumerate(specs):
        blocks.append(
            Block(
                f"b{i}",
                text,
                kind=kind,
                priority=prio,
                region=region,
                group=group,
                turn=turn,
                seq=i * 7 % 31 + i * 100,  # creation order differs from list order
            )
        )
    return blocks


def check_prompt(blocks: list[Block], budget: Budget, prompt: AssembledPrompt) -> None:
    counter = default_counter()
    real = counter.count(prompt.text)
    # Never over budget, and the reported figure bounds the real count.
    assert prompt.tokens <= budget.usable
    assert real <= prompt.tokens
    # P0 blocks of the final state are all present, verbatim.
    kept_ids = {b.id for b in prompt.kept}
    for b in prompt.blocks:
        if b.priority is Priority.P0:
            assert b.id in kept_ids
            assert b.text in prompt.text
    # Accounting: kept + dropped + saved == input, and kept matches what is in the prompt.
    ledger = prompt.ledger
    assert ledger.is_balanced()
    assert ledger.kept_tokens == sum(counter.count_block(b) for b in prompt.kept)
    dropped = [e.block_id for e in ledger if e.action is LedgerAction.DROPPED]
    assert len(dropped) == len(set(dropped))
    assert set(dropped).isdisjoint(kept_ids)
    assert set(dropped) | kept_ids == {b.id for b in prompt.blocks}
    # A group (tool call + result) is kept whole and contiguous, or dropped whole.
    positions: dict[str, list[int]] = defaultdict(list)
    for pos, b in enumerate(prompt.kept):
        if b.group is not None:
            positions[b.group].append(pos)
    members: dict[str, set[str]] = defaultdict(set)
    for b in prompt.blocks:
        if b.group is not None:
            members[b.group].add(b.id)
    for group, ids in members.items():
        present = ids & kept_ids
        assert present in (set(), ids), f"group {group} split"
        if present:
            pos = positions[group]
            assert pos == list(range(pos[0], pos[0] + len(pos))), f"group {group} not contiguous"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=block_specs, window=st.integers(min_value=20, max_value=1500))
def test_assemble_properties(specs: list, window: int) -> None:
    blocks = make_blocks(specs)
    budget = Budget(window=window, output_reserve=0)
    try:
        prompt = assemble(blocks, budget)
    except ContextBudgetError as exc:
        # The error names what P0 plus its minimal scaffolding (headings, one marker per
        # evicted run) needs, and that much is indeed enough.
        assert exc.required_tokens > exc.usable_tokens == budget.usable
        roomy = assemble(blocks, Budget(window=exc.required_tokens, output_reserve=0))
        assert {b.id for b in blocks if b.priority is Priority.P0} <= {b.id for b in roomy.kept}
        return
    check_prompt(blocks, budget, prompt)


history_texts = st.lists(
    st.lists(st.sampled_from([*WORDS, "done.", "Fetched", "id=7;"]), min_size=3, max_size=80).map(
        " ".join
    ),
    min_size=0,
    max_size=25,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=block_specs,
    history=history_texts,
    window=st.integers(min_value=40, max_value=1500),
)
def test_build_with_compression_properties(specs: list, history: list[str], window: int) -> None:
    blocks = make_blocks(specs)
    for i, text in enumerate(history):
        kind = Kind.LOG if i % 3 == 0 else Kind.HISTORY
        blocks.append(Block(f"h{i}", text, kind=kind, turn=i, seq=10_000 + i))
    budget = Budget(window=window, output_reserve=0)
    builder = PromptBuilder(
        compression=CompressionOptions(
            trigger_ratio=0.2, rearm_ratio=0.1, noise_min_ratio=0.1, min_blocks=2
        )
    )
    try:
        prompt = asyncio.run(builder.build(blocks, budget))
    except ContextBudgetError as exc:
        assert exc.required_tokens > budget.usable
        return
    check_prompt(blocks, budget, prompt)
    # Input tokens are those of the original blocks, whatever compression did.
    counter = default_counter()
    assert prompt.ledger.input_tokens == sum(counter.count_block(b) for b in blocks)
    compressed = [e for e in prompt.ledger if e.action is LedgerAction.COMPRESSED]
    for e in compressed:
        assert e.priority in (Priority.P2, Priority.P3)
        assert e.tokens_after <= e.tokens_before


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(texts, min_size=1, max_size=8))
def test_join_cost_bounds_real_count(parts: list[str]) -> None:
    counter = default_counter()
    blocks = [Block(f"p{i}", t) for i, t in enumerate(parts)]
    estimate = sum(counter.join_cost(b) + 1 for b in blocks)
    assert counter.count("\n\n".join(parts)) <= estimate

"""A simulated 500-turn agent history stays within its budget, turn after turn."""

import random

from mesh.context import (
    Attempt,
    Block,
    Budget,
    DecayManager,
    Kind,
    LedgerAction,
    Priority,
    PromptBuilder,
    collapse_failures,
    default_counter,
    sanitize_error,
)
from mesh.store import InMemoryBlobStore

TURNS = 500


def turn_blocks(rng: random.Random, turn: int) -> list[Block]:
    page = turn % 37
    out = [
        Block(f"call{turn}", f"call fetch_page(patient=77, page={page})", kind=Kind.TOOL_CALL, group=f"t{turn}", turn=turn),
        Block(
            f"result{turn}",
            f"result: {rng.randint(5, 50)} encounters on page {page}; "
            + " ".join(f"enc-{turn}-{i} {rng.choice(['ok', 'late', 'amended'])}" for i in range(rng.randint(3, 25))),
            kind=Kind.TOOL_RESULT,
            group=f"t{turn}",
            turn=turn,
        ),
    ]
    if rng.random() < 0.3:
        out.append(Block(f"log{turn}", f"DEBUG cache miss for page {page}; retrying with backoff", kind=Kind.LOG, turn=turn))
    if rng.random() < 0.1:
        errors = [Attempt("fetch_page", TimeoutError(f"read timed out after {s}s")) for s in (1, 2, 4)]
        out.append(Block(f"err{turn}", "\n".join(collapse_failures(errors)), kind=Kind.ERROR, turn=turn))
    if rng.random() < 0.05:
        try:
            raise ValueError(f"page {page} has a malformed date")
        except ValueError as exc:
            out.append(Block(f"exc{turn}", sanitize_error(exc), kind=Kind.ERROR, turn=turn))
    return out


async def test_500_turns_stay_within_budget() -> None:
    rng = random.Random(7)
    counter = default_counter()
    store = InMemoryBlobStore()
    builder = PromptBuilder(cold_store=store)
    decay = DecayManager(store, idle_turns=8)
    budget = Budget(window=6_000, output_reserve=1_000)
    fixed = [
        Block("system", "You are the fetch agent of a reconciliation workflow.", kind=Kind.SYSTEM),
        Block("mission", "Mission: fetch every encounter page of patient 77.", kind=Kind.MISSION),
        Block("rules", "Rules: never guess ids; one call per turn; stop on 3 validation errors.", kind=Kind.RULES),
    ]
    state: list[Block] = [
        Block(f"var{i}", f"var{i} = " + " ".join(f"v{i}-{j}" for j in range(20)), kind=Kind.VARIABLE)
        for i in range(6)
    ]
    naive_tokens = 0
    peak = 0
    fired = 0
    for turn in range(TURNS):
        new = turn_blocks(rng, turn)
        naive_tokens += sum(counter.count_block(b) for b in new)
        task = Block("task", f"Task: fetch page {(turn + 1) % 37} next.", kind=Kind.TASK, turn=turn)
        goal = Block("goal", "Goal: all pages fetched and stored.", kind=Kind.GOAL, turn=turn)
        mentioned = f"var{turn % 6}" if turn % 20 == 0 else ""
        decayed = await decay.apply([*state, *new], turn=turn, mentions=[task.text, mentioned])
        prompt = await builder.build([*fixed, *decayed.blocks, task, goal], budget)
        state = [b for b in prompt.blocks if b.id not in {"system", "mission", "rules", "task", "goal"}]
        assert prompt.tokens <= budget.usable
        assert prompt.ledger.is_balanced()
        for b in (*fixed, task, goal):
            assert b.text in prompt.text
        if turn % 25 == 0 or turn == TURNS - 1:
            assert counter.count(prompt.text) <= budget.usable
        fired += any(e.action is LedgerAction.COMPRESSED for e in prompt.ledger)
        peak = max(peak, prompt.tokens)
    assert naive_tokens > 10 * budget.usable  # the naive layout would have overflowed long ago
    assert peak <= budget.usable
    assert fired >= 5  # compression kept firing as history grew, not every turn
    assert fired < TURNS / 2
    assert any(b.priority is Priority.P2 and b.kind is Kind.SUMMARY for b in state)

"""Assembly: layout, eviction order, markers, ledger and the P0 error."""

import pytest

from mesh.context import (
    CURRENT_HEADING,
    HISTORICAL_HEADING,
    Block,
    Budget,
    ContextBudgetError,
    Kind,
    LedgerAction,
    Priority,
    assemble,
    cold_key,
    default_counter,
)


def words(n: int, tag: str) -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


def test_layout_is_top_then_history_then_current() -> None:
    blocks = [
        Block("task", "Fetch page 3 now.", kind=Kind.TASK),
        Block("h1", "Fetched page 1.", kind=Kind.HISTORY, turn=1),
        Block("mission", "You fetch pages.", kind=Kind.MISSION),
        Block("goal", "Goal: all pages fetched.", kind=Kind.GOAL),
        Block("h2", "Fetched page 2.", kind=Kind.HISTORY, turn=2),
        Block("token", "auth_url = https://api", kind=Kind.VARIABLE),
    ]
    prompt = assemble(blocks, Budget(window=1000, output_reserve=0))
    text = prompt.text
    order = [
        "You fetch pages.",
        "auth_url",
        HISTORICAL_HEADING,
        "Fetched page 1.",
        "Fetched page 2.",
        CURRENT_HEADING,
        "Fetch page 3 now.",
        "Goal: all pages fetched.",
    ]
    positions = [text.index(s) for s in order]
    assert positions == sorted(positions)
    assert len(prompt.ledger) == 0
    assert prompt.ledger.is_balanced()
    assert 0 < prompt.utilization <= 1


def test_lowest_priority_and_oldest_go_first_with_a_marker_and_ledger_entry() -> None:
    counter = default_counter()
    mission = Block("mission", "Mission: reconcile.", kind=Kind.MISSION)
    logs = [Block(f"log{i}", words(40, f"l{i}x"), kind=Kind.LOG, turn=i) for i in range(5)]
    hist = [Block(f"h{i}", words(40, f"h{i}x"), kind=Kind.HISTORY, turn=i) for i in range(5)]
    task = Block("task", "Task: compare records.", kind=Kind.TASK)
    blocks = [mission, *logs, *hist, task]
    budget = Budget(window=420, output_reserve=0)
    prompt = assemble(blocks, budget)
    kept = {b.id for b in prompt.kept}
    assert {"mission", "task"} <= kept
    assert not any(b.id in kept for b in logs)  # P3 dropped before any P2
    kept_hist = [b for b in hist if b.id in kept]
    assert kept_hist and kept_hist == hist[-len(kept_hist) :]  # newest history kept
    dropped = [e for e in prompt.ledger if e.action is LedgerAction.DROPPED]
    assert {e.block_id for e in dropped} == {b.id for b in blocks} - kept
    for e in dropped:
        assert e.tokens_after == 0
        assert e.tokens_before == counter.count(next(b.text for b in blocks if b.id == e.block_id))
        assert e.restore_key == cold_key(e.block_id)
        assert e.reason
    assert "[evicted " in prompt.text
    marker_lines = [line for line in prompt.text.splitlines() if line.startswith("[evicted ")]
    n_evicted = sum(int(line.split()[1]) for line in marker_lines)
    assert n_evicted == len(dropped)
    assert prompt.tokens <= budget.usable
    assert prompt.ledger.lines()[0].startswith("- dropped ")
    assert prompt.ledger.as_dict()["entries"] == {"dropped": len(dropped)}


def test_p0_that_does_not_fit_is_an_error_not_a_truncation() -> None:
    blocks = [Block("mission", words(500, "m"), kind=Kind.MISSION), Block("h", "history")]
    with pytest.raises(ContextBudgetError) as info:
        assemble(blocks, Budget(window=200, output_reserve=0))
    assert info.value.usable_tokens == 200
    assert info.value.required_tokens > 200
    assert "P0" in str(info.value)


def test_tool_call_and_result_travel_together() -> None:
    call = Block("call", "call fetch(page=3)", kind=Kind.TOOL_CALL, group="t1", turn=3)
    noise = Block("other", "unrelated note", kind=Kind.HISTORY, turn=3)
    result = Block("result", words(30, "r"), kind=Kind.TOOL_RESULT, group="t1", turn=3)
    mission = Block("mission", "Mission.", kind=Kind.MISSION)
    roomy = assemble([mission, call, noise, result], Budget(window=500, output_reserve=0))
    texts = [b.id for b in roomy.kept]
    assert texts.index("result") == texts.index("call") + 1  # rendered next to each other
    tight = assemble(
        [mission, call, noise, result],
        Budget(window=default_counter().count(result.text) + 40, output_reserve=0),
    )
    kept = {b.id for b in tight.kept}
    assert ("call" in kept) == ("result" in kept)


def test_p1_is_kept_before_p2_even_when_older() -> None:
    var = Block("var", words(30, "v"), kind=Kind.VARIABLE, turn=0, priority=Priority.P1)
    hist = [Block(f"h{i}", words(30, f"h{i}"), turn=10 + i) for i in range(6)]
    prompt = assemble([var, *hist], Budget(window=150, output_reserve=0))
    assert "var" in {b.id for b in prompt.kept}


def test_warm_assembly_does_not_re_encode() -> None:
    counter = default_counter()
    blocks = [Block(f"h{i}", words(20, f"w{i}")) for i in range(200)]
    assemble(blocks, Budget(window=800, output_reserve=0))
    calls = []
    real = counter._encode
    counter._encode = lambda text: calls.append(text) or real(text)  # type: ignore[method-assign]
    try:
        assemble(blocks, Budget(window=800, output_reserve=0))
    finally:
        counter._encode = real  # type: ignore[method-assign]
    assert calls == []


def test_marker_counts_match_real_encoding() -> None:
    from mesh.context.assembly import _marker_text, _markers_for

    counter = default_counter()
    markers = _markers_for(counter)
    for n, tok, t0, t1 in [(1, 5, 0, 0), (12, 3456, 7, 99), (1000, 1234567, 10, 2000), (7, 10, 3, 3)]:
        text, cost = markers.cost(n, tok, t0, t1)
        assert text == _marker_text(n, tok, t0, t1)
        assert cost == counter.count(text)
        assert cost <= markers.bound(n, tok, t1)

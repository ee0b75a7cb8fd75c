"""Compression: trigger at 80%, hysteresis, rejection of non-shrinking summaries, cold copies."""

import pytest

from mesh.context import (
    Block,
    Budget,
    CompressionOptions,
    Compressor,
    ExtractiveSummarizer,
    Kind,
    LedgerAction,
    PromptBuilder,
    Summarizer,
    default_counter,
)
from mesh.store import InMemoryBlobStore


def history(n: int, start: int = 0) -> list[Block]:
    return [
        Block(
            f"h{i}",
            f"Turn {i}: fetched page {i} of encounters for patient 77; stored {i * 3} rows. "
            f"Next step is page {i + 1}.",
            kind=Kind.HISTORY,
            turn=i,
        )
        for i in range(start, start + n)
    ]


class RecordingSummarizer:
    """Returns a fixed text and records what it was asked."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.calls: list[tuple[str, int]] = []

    async def summarize(self, text: str, *, max_tokens: int) -> str:
        self.calls.append((text, max_tokens))
        return self.reply


class FailingSummarizer:
    async def summarize(self, text: str, *, max_tokens: int) -> str:
        raise ConnectionError("model endpoint down")


def test_protocol_shape() -> None:
    assert isinstance(ExtractiveSummarizer(), Summarizer)
    assert isinstance(RecordingSummarizer("x"), Summarizer)


async def test_extractive_summarizer_is_deterministic_short_and_keeps_errors() -> None:
    text = "\n".join(
        [f"DEBUG retry {i} of fetch page 3" for i in range(20)]
        + ["ERROR: ValueError: page 3 has a malformed date 2024-13-01"]
        + [f"Fetched page {i} with {i * 10} rows." for i in range(30)]
    )
    summarizer = ExtractiveSummarizer()
    one = await summarizer.summarize(text, max_tokens=80)
    two = await summarizer.summarize(text, max_tokens=80)
    assert one == two
    assert default_counter().count(one) <= 80
    assert "malformed date" in one
    assert "(x20)" in one  # the retries collapsed into one line with a count
    assert await summarizer.summarize("", max_tokens=10) == ""


async def test_fires_at_trigger_and_not_below() -> None:
    counter = default_counter()
    blocks = [Block("m", "Mission: fetch pages.", kind=Kind.MISSION), *history(20)]
    total = sum(counter.count_block(b) for b in blocks)
    below = Compressor(RecordingSummarizer("short"))
    result = await below.compress(blocks, Budget(window=int(total / 0.7), output_reserve=0))
    assert not result.fired and result.reason == "below trigger"
    above = Compressor(RecordingSummarizer("Pages 0-9 fetched for patient 77."))
    result = await above.compress(blocks, Budget(window=int(total / 0.85), output_reserve=0))
    assert result.fired and result.reason == "utilization"
    compressed = [r for r in result.rows if r[0] is LedgerAction.COMPRESSED]
    assert [r[1].id for r in compressed] == [f"h{i}" for i in range(10)]  # the oldest half
    summary = [b for b in result.blocks if b.kind is Kind.SUMMARY]
    assert len(summary) == 1 and "Pages 0-9 fetched" in summary[0].text
    assert sum(r[3] for r in compressed) == counter.count_block(summary[0])
    assert "m" in {b.id for b in result.blocks}


async def test_hysteresis_keeps_it_from_firing_every_turn() -> None:
    summarizer = RecordingSummarizer("x " * 5000)  # never shrinks: utilization stays high
    compressor = Compressor(summarizer, options=CompressionOptions(cooldown_builds=4))
    blocks = history(20)
    budget = Budget(window=200, output_reserve=0)
    fired = []
    for _ in range(9):
        fired.append((await compressor.compress(blocks, budget)).fired)
    assert fired == [True, False, False, False, True, False, False, False, True]
    assert len(summarizer.calls) == 3


async def test_a_summary_that_does_not_shrink_is_rejected_and_recorded() -> None:
    blocks = history(6)
    compressor = Compressor(RecordingSummarizer("word " * 2000))
    result = await compressor.compress(blocks, Budget(window=100, output_reserve=0))
    assert result.fired
    assert result.blocks == tuple(blocks)  # blocks kept
    assert result.rows and all(r[0] is LedgerAction.COMPRESSION_REJECTED for r in result.rows)
    assert all(r[2] == r[3] for r in result.rows)
    assert "did not shrink" in result.rows[0][4]


async def test_a_failing_summarizer_does_not_fail_the_build() -> None:
    builder = PromptBuilder(summarizer=FailingSummarizer())
    blocks = [Block("m", "Mission.", kind=Kind.MISSION), *history(30)]
    prompt = await builder.build(blocks, Budget(window=300, output_reserve=0))
    reasons = {e.reason for e in prompt.ledger if e.action is LedgerAction.COMPRESSION_REJECTED}
    assert reasons == {"summarizer failed: ConnectionError: model endpoint down"}
    assert prompt.tokens <= 300 and prompt.ledger.is_balanced()


async def test_noise_triggers_compression_below_the_utilization_trigger() -> None:
    logs = [
        Block(f"l{i}", f"DEBUG retrying fetch page 3: TimeoutError: timed out (attempt {i})", kind=Kind.LOG, turn=i)
        for i in range(40)
    ]
    counter = default_counter()
    total = sum(counter.count_block(b) for b in logs)
    roomy = await Compressor().compress(logs, Budget(window=total * 10, output_reserve=0))
    assert not roomy.fired  # plenty of room: noise alone is no reason to lose detail
    compressor = Compressor()
    result = await compressor.compress(logs, Budget(window=int(total / 0.6), output_reserve=0))
    assert result.fired and result.reason == "noise"
    assert any(b.kind is Kind.SUMMARY for b in result.blocks)


async def test_builder_keeps_originals_in_cold_storage_and_accounts_for_everything() -> None:
    store = InMemoryBlobStore()
    counter = default_counter()
    builder = PromptBuilder(cold_store=store)
    blocks = [Block("m", "Mission: fetch.", kind=Kind.MISSION), *history(40), Block("t", "Task: page 40.", kind=Kind.TASK)]
    budget = Budget(window=900, output_reserve=0)
    prompt = await builder.build(blocks, budget)
    ledger = prompt.ledger
    assert ledger.saved_tokens > 0
    assert ledger.input_tokens == sum(counter.count_block(b) for b in blocks)
    assert ledger.kept_tokens + ledger.dropped_tokens + ledger.saved_tokens == ledger.input_tokens
    compressed = [e for e in ledger if e.action is LedgerAction.COMPRESSED]
    for e in compressed:
        original = await builder.restore(e.restore_key)
        assert original is not None and original.id == e.block_id
        assert original == next(b for b in blocks if b.id == e.block_id)
    assert len(store) == len(compressed)
    assert prompt.tokens <= budget.usable
    # The next turn starts from the compressed state, not the original.
    assert len(prompt.blocks) < len(blocks)


def test_options_are_validated() -> None:
    from mesh.context import Priority
    from mesh.errors import UsageError

    with pytest.raises(UsageError):
        CompressionOptions(trigger_ratio=0.5, rearm_ratio=0.6)
    with pytest.raises(UsageError):
        CompressionOptions(priorities=frozenset({Priority.P0}))
    with pytest.raises(UsageError):
        CompressionOptions(noise_min_ratio=0.9)

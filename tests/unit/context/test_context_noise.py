"""Noise score from cheap signals."""

from mesh.context import noise_score, noise_signals

PROSE = (
    "The identity agent resolved the patient record and passed the canonical id to the fetch "
    "agent. The fetch agent downloaded three pages of encounters, normalized the dates and "
    "stored the result. Validation compared totals against the source and found them equal, "
    "so the report agent wrote the summary for the reviewer with links to every source page."
)


def test_prose_is_quiet() -> None:
    assert noise_score(PROSE) < 0.3


def test_repeated_retry_logs_are_noisy() -> None:
    spam = "\n".join(f"DEBUG retrying fetch page {i % 3}: TimeoutError: timed out" for i in range(100))
    signals = noise_signals(spam)
    assert signals.error_share > 0.9
    assert signals.duplicate_ratio > 0.9
    assert signals.compressibility > 0.9
    assert noise_score(spam) > 0.7


def test_stack_trace_is_noisy_and_duplicates_alone_are_noticed() -> None:
    tb = "Traceback (most recent call last):\n" + "".join(
        f'  File "/app/m{i}.py", line {i}, in f{i}\n    x = g{i}(y)\n' for i in range(30)
    )
    assert noise_score(tb + "ValueError: bad\n") > 0.7
    assert noise_score("\n".join([PROSE] * 20)) > noise_score(PROSE) + 0.4


def test_score_is_bounded() -> None:
    for text in ("", "x", PROSE, "error " * 10_000):
        assert 0.0 <= noise_score(text) <= 1.0

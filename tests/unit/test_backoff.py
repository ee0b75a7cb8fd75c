"""One backoff strategy (``mesh.backoff``), and no module computing exponential delays by hand."""

from __future__ import annotations

import ast
import asyncio
import random
import time
from pathlib import Path
from typing import Any

import pytest

from mesh.backoff import Backoff, ExponentialBackoff

ROOT = Path(__file__).resolve().parents[2]

# Loops still hand-rolled in files another helper is restructuring, each with the branch that moves
# it to mesh.backoff. The list can only shrink: an entry whose file no longer hand-rolls fails
# test_the_pending_list_is_current. Empty: every loop of mesh uses mesh.backoff.
PENDING: dict[str, str] = {}


def test_delays_grow_by_the_factor_up_to_the_cap() -> None:
    policy = ExponentialBackoff(base_s=0.1, cap_s=1.0, jitter=0.0)
    assert [policy.delay_s(n) for n in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    slower = ExponentialBackoff(base_s=0.05, cap_s=0.5, jitter=0.0, factor=1.5)
    assert [slower.delay_s(n) for n in range(1, 4)] == pytest.approx([0.05, 0.075, 0.1125])
    # Without a cap the growth stops at 2**62: a finite number of seconds, never an overflow.
    assert ExponentialBackoff(base_s=1.0, cap_s=float("inf"), jitter=0.0).delay_s(10_000) == 2.0**62


def test_jitter_only_shortens_and_is_reproducible_with_a_seed() -> None:
    policy = ExponentialBackoff(base_s=1.0, cap_s=8.0, jitter=0.5, rng=random.Random(7))
    again = ExponentialBackoff(base_s=1.0, cap_s=8.0, jitter=0.5, rng=random.Random(7))
    delays = [policy.delay_s(n) for n in range(1, 30)]
    assert delays == [again.delay_s(n) for n in range(1, 30)]
    for n, d in enumerate(delays, start=1):
        ceiling = min(8.0, 2.0 ** (n - 1))
        assert ceiling * 0.5 <= d <= ceiling


@pytest.mark.parametrize(
    "bad", [{"base_s": -1.0}, {"cap_s": -1.0}, {"jitter": 1.5}, {"factor": 0.5}]
)
def test_nonsense_options_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ExponentialBackoff(**bad)


async def test_a_running_backoff_counts_failures_and_resets() -> None:
    backoff: Backoff = ExponentialBackoff(base_s=0.01, cap_s=0.04, jitter=0.0).start()
    started = time.monotonic()
    waited = [await backoff.sleep() for _ in range(4)]
    assert waited == pytest.approx([0.01, 0.02, 0.04, 0.04])
    assert time.monotonic() - started >= sum(waited) * 0.9
    assert backoff.failures == 4
    backoff.reset()
    assert backoff.next_delay_s() == pytest.approx(0.01)
    assert backoff.sleep_blocking() == pytest.approx(0.02)
    await asyncio.sleep(0)


def test_the_poll_and_replay_loops_keep_their_delays() -> None:
    # The gossip node's and the worker's poll loops and the journal's flusher hand-rolled these
    # delays before they moved to mesh.backoff: 0.1 s doubling to 2 s; 0.5 s doubling to 5 s.
    from mesh.gossip import node
    from mesh.runtime import worker
    from mesh.store import JournalOptions

    for policy in (node._POLL_BACKOFF, worker._POLL_BACKOFF):
        assert [policy.delay_s(n) for n in range(1, 8)] == pytest.approx(
            [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
        )
    replay = JournalOptions().retry_backoff()
    assert [replay.delay_s(n) for n in range(1, 7)] == pytest.approx([0.5, 1.0, 2.0, 4.0, 5.0, 5.0])
    assert (
        JournalOptions(retry_interval_s=0.02, max_retry_interval_s=0.05).retry_backoff().delay_s(3)
        == 0.05
    )


def _hand_rolled(path: Path) -> list[str]:
    """Lines that compute a growing delay themselves: ``x = min(x * k, cap)``, ``x *= k``, or a
    ``**`` inside a sleep's argument."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.AugAssign)
            and isinstance(node.op, ast.Mult | ast.Pow)
            and isinstance(node.target, ast.Name)
        ):
            found.append(f"{node.lineno}: {node.target.id} *= ...")
        elif (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            name = node.targets[0].id
            for sub in ast.walk(node.value):
                if (
                    isinstance(sub, ast.BinOp)
                    and isinstance(sub.op, ast.Mult)
                    and any(
                        isinstance(side, ast.Name) and side.id == name
                        for side in (sub.left, sub.right)
                    )
                ):
                    found.append(f"{node.lineno}: {name} = ...{name} * ...")
                    break
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "sleep"
        ):
            if any(
                isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.Pow)
                for arg in node.args
                for sub in ast.walk(arg)
            ):
                found.append(f"{node.lineno}: sleep(... ** ...)")
    return found


def _offences() -> dict[str, list[str]]:
    out = {}
    for path in sorted((ROOT / "mesh").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "mesh/backoff.py":
            continue
        found = _hand_rolled(path)
        if found:
            out[rel] = found
    return out


def test_no_module_hand_rolls_exponential_sleeps() -> None:
    offences = {rel: lines for rel, lines in _offences().items() if rel not in PENDING}
    assert offences == {}, "use mesh.backoff.ExponentialBackoff(...).start() and Backoff.sleep()"


def test_the_pending_list_is_current() -> None:
    assert set(PENDING) <= set(_offences()), (
        "a pending file uses mesh.backoff now: drop it from PENDING"
    )


def test_the_check_catches_each_form(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import asyncio, time\n"
        "async def a(d):\n    d = min(d * 2, 5)\n    d *= 2\n    await asyncio.sleep(0.1 * (2**d))\n"
        "def b(x):\n    x = x * 1.5\n    time.sleep(x)\n"
    )
    assert sorted(int(line.split(":")[0]) for line in _hand_rolled(probe)) == [3, 4, 5, 7]

"""The reasoner rate limiter is shared through real Redis by separate processes, and a provider's
Retry-After (429) from the fake Messages API holds every process, not just the one that got it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mesh.testing import FakeAnthropicServer, FakeReply

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]


class Recorder:
    """Responder that records (arrival time, caller, status) and can refuse the first call with a 429."""

    def __init__(self, *, first_429_after_s: float | None = None) -> None:
        self.calls: list[tuple[float, str, int]] = []
        self._lock = threading.Lock()
        self._first_429 = first_429_after_s

    def __call__(self, body: dict[str, Any]) -> FakeReply:
        text = str(body["messages"][-1]["content"])
        caller = text.split()[1] if text.startswith("from ") else "?"
        with self._lock:
            if self._first_429 is not None and not self.calls:
                self.calls.append((time.time(), caller, 429))
                return FakeReply.rate_limited(retry_after_s=self._first_429)
            self.calls.append((time.time(), caller, 200))
        return FakeReply.text("ok", usage=(10, 2))


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    name = f"rl{uuid.uuid4().hex[:8]}"
    yield name
    import redis

    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{{{name}:llm}}*"):
        client.delete(key)
    client.close()


def start_callers(
    fake: FakeAnthropicServer,
    redis_url: str,
    prefix: str,
    names: list[str],
    calls: int,
    *,
    rpm: int,
    tpm: int = 0,
    window_s: float = 2.0,
) -> list[subprocess.Popen[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.llm_caller",
                fake.base_url,
                redis_url,
                prefix,
                name,
                str(calls),
                str(rpm),
                str(tpm),
                str(window_s),
            ],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return procs


def finish(procs: list[subprocess.Popen[str]]) -> list[list[float]]:
    """Wait for the callers; each one's grant times (Unix s)."""
    grants = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        lines = out.split()
        assert proc.returncode == 0 and lines[-1] == "done", out
        grants.append(
            [float(v) for k, v in zip(lines[:-1:2], lines[1:-1:2], strict=True) if k == "grant"]
        )
    return grants


def go(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()


def test_two_processes_share_one_request_window(redis_url: str, prefix: str) -> None:
    recorder = Recorder()
    with FakeAnthropicServer(recorder) as fake:
        procs = start_callers(fake, redis_url, prefix, ["a", "b"], calls=5, rpm=4, window_s=2.0)
        for proc in procs:
            go(proc)
        grants = finish(procs)
    assert len(recorder.calls) == 10 and {c for _, c, _ in recorder.calls} == {"a", "b"}
    times = sorted(grants[0] + grants[1])
    assert len(times) == 10 and len(grants[0]) == len(grants[1]) == 5
    # 4 requests per 2 s for both processes together: any 5 consecutive grants span a full window;
    # each process alone (4 per 2 s of its own) would have sent 8 in the first window.
    spans = [times[i + 4] - times[i] for i in range(len(times) - 4)]
    print(
        f"10 calls, 4 per 2 s shared by 2 processes: {times[-1] - times[0]:.2f} s from first to last grant; "
        f"shortest span of 5 consecutive grants {min(spans):.3f} s"
    )
    assert min(spans) >= 1.999, spans  # Redis time, ms resolution
    assert times[-1] - times[0] >= 3.999


def test_retry_after_holds_every_process(redis_url: str, prefix: str) -> None:
    import redis

    recorder = Recorder(first_429_after_s=2.0)
    client = redis.Redis.from_url(redis_url)
    try:
        with FakeAnthropicServer(recorder) as fake:
            a, b = start_callers(fake, redis_url, prefix, ["a", "b"], calls=2, rpm=0)
            go(a)
            deadline = time.monotonic() + 60
            while (
                held := client.get(f"{{{prefix}:llm}}:hold")
            ) is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert held is not None, "a's 429 set no shared hold"
            hold_until = int(held) / 1000
            go(b)  # b starts during the hold that a's 429 set; b never sees a 429 itself
            grants_a, grants_b = finish([a, b])
    finally:
        client.close()
    (refused,) = [(t, c) for t, c, s in recorder.calls if s == 429]
    assert refused[1] == "a" and len([s for _, _, s in recorder.calls if s == 200]) == 4
    assert hold_until - refused[0] >= 1.99  # retry-after: 2 s from when a got the answer
    later = sorted(
        [("a", t - refused[0]) for t in grants_a[1:]] + [("b", t - refused[0]) for t in grants_b]
    )
    print(
        f"429 to a with retry-after 2 s, hold until +{hold_until - refused[0]:.2f}s; later grants: "
        + ", ".join(f"{c} +{dt:.2f}s" for c, dt in later)
    )
    assert len(grants_a) == 3 and len(grants_b) == 2
    # Nobody went before the hold ended: not a (its own retry), not b (another process).
    assert min(t for t in grants_a[1:] + grants_b) >= hold_until, (later, hold_until)

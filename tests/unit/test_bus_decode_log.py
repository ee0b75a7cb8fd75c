"""The dead-letter log line: one short, redacted line whatever the hostile record makes the error say."""

from __future__ import annotations

import asyncio
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.bus._decode import decode_record
from protocols import DeadLetter, Envelope, EnvelopeCodec

SECRET = "sk-ant-api03-" + "Q" * 40


def _spec_record(steps: list[dict[str, object]]) -> bytes:
    env = Envelope(kind="workflow.submitted", sender="x", workflow_id="w", payload={"spec": {"name": "w", "steps": steps}})
    return EnvelopeCodec().encode(env)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(min_value=50, max_value=900))
def test_a_hostile_spec_logs_one_short_redacted_line(n: int) -> None:
    steps = [{"id": f"{SECRET}{i}", "role": "r", "depends_on": [f"{SECRET}{(i + 1) % n}"]} for i in range(n)]
    value = _spec_record(steps)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    log = logging.getLogger("mesh.bus")
    log.addHandler(handler)
    try:
        out = asyncio.run(decode_record(EnvelopeCodec(), ("t", 0, 7, None, value, (), 0), guard=None, consumer="c"))
    finally:
        log.removeHandler(handler)
    assert isinstance(out, DeadLetter)
    lines = [r.getMessage() for r in records if "dead-lettering" in r.getMessage()]
    assert len(lines) == 1
    assert len(lines[0]) < 600, lines[0][:200]
    assert SECRET not in lines[0]
    assert SECRET not in out.error


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])

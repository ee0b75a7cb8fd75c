"""Spinning detection: the same decision again and again, or turns that change nothing."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from mesh.runtime.state import StepState

__all__ = ["decision_signature", "spinning_reason"]


def decision_signature(action: str, params: Mapping[str, Any]) -> str:
    """A short stable fingerprint of an action and its parameters."""
    raw = json.dumps([action, params], sort_keys=True, default=str)
    return hashlib.blake2b(raw.encode(), digest_size=8).hexdigest()


def spinning_reason(state: StepState, window: int) -> str | None:
    """Why the step is spinning, or None. Call after the turn was folded into ``state``."""
    recent = state.recent[-window:]
    if len(recent) == window and len(set(recent)) == 1:
        last = state.history[-1] if state.history else None
        what = f"{last.action} with the same parameters" if last else "the same decision"
        return f"spinning: {what} {window} turns in a row"
    if state.no_progress >= window:
        return f"spinning: no progress for {state.no_progress} turns"
    return None

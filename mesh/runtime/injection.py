"""Parameter injection: values that come from state override or fill what the reasoner said."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from mesh.runtime.state import StepState

__all__ = ["inject_params", "resolve_source"]

log = logging.getLogger("mesh.runtime.injection")

_MISSING = object()


def resolve_source(source: str, state: StepState, step_params: Mapping[str, Any]) -> Any:
    """The value a ``source`` names, or None when state lacks it.

    ``source`` is ``workflow_id``, ``step_id``, ``var:<name>``, ``param:<name>`` or
    ``memory:<name>``, optionally followed by ``|<default>`` (an int when it parses as one).
    """
    source, bar, default_text = source.partition("|")
    default: Any = None
    if bar:
        default = int(default_text) if default_text.lstrip("-").isdigit() else default_text
    value = _resolve(source, state, step_params)
    return default if value is None else value


def _resolve(source: str, state: StepState, step_params: Mapping[str, Any]) -> Any:
    if source == "workflow_id":
        return state.workflow_id
    if source == "step_id":
        return state.step_id
    kind, _, name = source.partition(":")
    if kind == "var":
        entry = state.variables.get(name)
        if entry is None:
            return None
        # Injected into this turn's call: a use, which keeps it in (or brings it back to) the
        # prompt (mesh.runtime.decay).
        entry.last_used_turn = max(entry.last_used_turn, state.turn + 1)
        return entry.value
    if kind == "param":
        return step_params.get(name)
    if kind == "memory":
        return state.memory.get(name)
    raise ValueError(f"unknown injection source {source!r}")


def inject_params(
    action: str,
    params: Mapping[str, Any],
    inject: Mapping[str, str],
    state: StepState,
    step_params: Mapping[str, Any],
) -> tuple[dict[str, Any], list[str]]:
    """Fill missing and correct wrong parameters from state; return (params, notes).

    Each note names the parameter and whether it was ``filled`` (the reasoner left it out) or
    ``corrected`` (the reasoner gave a different value, e.g. a hallucinated token). Every
    injection is logged; values of secret variables are never logged.
    """
    out = dict(params)
    notes: list[str] = []
    for name, source in inject.items():
        value = resolve_source(source, state, step_params)
        if value is None:
            continue
        given = out.get(name, _MISSING)
        if given is _MISSING:
            how = "filled"
        elif given != value:
            how = "corrected"
        else:
            continue
        out[name] = value
        notes.append(f"{name} ({how} from {source})")
        log.info(
            "injected %s.%s (%s from %s) in %s/%s turn %d",
            action, name, how, source, state.workflow_id, state.step_id, state.turn + 1,
        )
    return out, notes

"""The step prompt as a priority stack, built by the context engine within a token budget.

Top: mission, rules, critical variables. Middle: history (compressed or dropped first, oldest
first), dependency summaries, errors. Bottom: the task, working memory, and a one-line recitation
of the goal, where the model attends best.
"""

from __future__ import annotations

import json
from typing import Any

from mesh.context.assembly import assemble
from mesh.context.blocks import Block, Kind, Priority
from mesh.context.budget import Budget
from mesh.context.tokens import TokenCounter, default_counter
from mesh.llm import ActionSpec
from mesh.runtime.state import StepState
from mesh.runtime.step_runner import BuiltPrompt
from protocols import StepSpec, WorkflowSpec

__all__ = ["StackPromptBuilder"]


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


class StackPromptBuilder:
    """Builds each turn's prompt with ``mesh.context.assemble``."""

    def __init__(
        self,
        *,
        window: int = 200_000,
        output_reserve: int = 4096,
        model: str = "rule",
        counter: TokenCounter | None = None,
        history_turns: int = 200,
    ) -> None:
        """Budget ``window - output_reserve - margin`` tokens per prompt."""
        self.counter = counter or default_counter()
        self.budget = Budget.for_model(self.counter, model, window=window, output_reserve=output_reserve)
        self.history_turns = history_turns

    def blocks(self, spec: WorkflowSpec, step: StepSpec, state: StepState) -> list[Block]:
        """The step's blocks, by kind (priority and region follow from the kind)."""
        wf = state.workflow_id
        out: list[Block] = [
            Block("system", f"You are the {step.role} agent of workflow {wf}, step {step.id}. "
                  "Pick exactly one allowed action per turn; code executes it.", kind=Kind.SYSTEM, seq=0),
        ]
        if spec.mission:
            out.append(Block("mission", f"MISSION: {spec.mission}", kind=Kind.MISSION, seq=1))
        if spec.rules:
            out.append(Block("rules", "RULES:\n" + "\n".join(f"- {r}" for r in spec.rules), kind=Kind.RULES, seq=2))
        seq = 10
        for name, entry in sorted(state.variables.items()):
            shown = "[secret: injected by the runtime]" if entry.secret else _fmt(entry.value)
            out.append(
                Block(f"var:{name}", f"{name}: {shown}", kind=Kind.VARIABLE,
                      priority=Priority(min(max(entry.priority, 0), 3)), seq=seq)
            )
            seq += 1
        for dep, summary in sorted(state.summaries.items()):
            out.append(Block(f"summary:{dep}", f"Step {dep} finished: {summary}", kind=Kind.SUMMARY, seq=seq))
            seq += 1
        for rec in state.history[-self.history_turns:]:
            group = f"turn:{rec.turn}"
            call = f"turn {rec.turn}: {rec.action}({_fmt(rec.params)})"
            kind = Kind.TOOL_RESULT if rec.outcome == "ok" else Kind.ERROR
            out.append(Block(f"call:{rec.turn}", call, kind=Kind.TOOL_CALL, group=group, turn=rec.turn, seq=seq))
            out.append(Block(f"result:{rec.turn}", f"-> {rec.outcome}: {rec.summary}", kind=kind, group=group, turn=rec.turn, seq=seq + 1))
            seq += 2
        seq = 1 << 40  # bottom region: after everything else
        out.append(Block("task", f"TASK: {step.task or step.id}", kind=Kind.TASK, seq=seq))
        facts = {**{f"param.{k}": v for k, v in step.params.items()}, **state.memory}
        if facts:
            out.append(Block("memory", "WORKING MEMORY:\n" + "\n".join(f"{k}: {_fmt(v)}" for k, v in sorted(facts.items())),
                             kind=Kind.MEMORY, seq=seq + 1))
        out.append(Block("goal", f"GOAL: finish step {step.id} ({step.role}); turn {state.turn + 1} of at most {step.limits.max_turns}.",
                         kind=Kind.GOAL, seq=seq + 2))
        return out

    def build(self, spec: WorkflowSpec, step: StepSpec, state: StepState, actions: list[ActionSpec]) -> BuiltPrompt:
        """Assemble the next turn's prompt within the budget."""
        assembled = assemble(self.blocks(spec, step, state), self.budget, counter=self.counter)
        system, _, prompt = assembled.text.partition("\n\n")
        return BuiltPrompt(
            system=system,
            prompt=prompt,
            tokens=assembled.tokens,
            budget=self.budget.usable,
            ledger=tuple(assembled.ledger.lines()),
        )

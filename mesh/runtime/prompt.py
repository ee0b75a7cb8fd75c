"""The step prompt as a priority stack, built by the context engine within a token budget.

Top: mission, rules, critical variables. Middle: history (compressed or dropped first, oldest
first), dependency summaries, errors. Bottom: the task, working memory, and a one-line recitation
of the goal, where the model attends best.
"""

from __future__ import annotations

import json
from typing import Any

from mesh.context import (
    REDACTED,
    Block,
    Budget,
    Kind,
    Priority,
    PromptBuilder,
    Redactor,
    Region,
    Summarizer,
    TokenCounter,
    default_counter,
)
from mesh.llm import ActionSpec
from mesh.runtime.decay import VariableDecay
from mesh.runtime.state import StepState
from mesh.runtime.step_runner import BuiltPrompt
from mesh.store import BlobStore
from protocols import StepSpec, WorkflowSpec

__all__ = ["StackPromptBuilder"]


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


class StackPromptBuilder:
    """Builds each turn's prompt with the context engine's ``PromptBuilder``.

    Top and bottom blocks are rebuilt from the step state every turn; the middle (history) is
    carried from the previous turn's result, so compressed summaries persist and only new turns
    are added. After a resume the history is rebuilt from the checkpoint and compressed again
    when due. Secret values of the step are redacted from every block.

    With ``cold_blobs`` and ``decay_idle_turns`` > 0, variables unused for that many turns
    move to the blob store and come back the turn after their next use (``mesh.runtime.decay``).
    """

    def __init__(
        self,
        *,
        window: int = 200_000,
        output_reserve: int = 4096,
        model: str = "rule",
        counter: TokenCounter | None = None,
        summarizer: Summarizer | None = None,
        cold_store: BlobStore | None = None,
        history_turns: int = 10_000,
        cold_blobs: BlobStore | None = None,
        decay_idle_turns: int = 0,
    ) -> None:
        """Budget ``window - output_reserve - margin`` tokens per prompt (margin from calibration).

        ``decay_idle_turns`` (0: off) is how many turns a variable may go unused before its
        block moves to ``cold_blobs``.
        """
        self.counter = counter or default_counter()
        self.window, self.output_reserve, self.model = window, output_reserve, model
        self.summarizer, self.cold_store = summarizer, cold_store
        self.history_turns = history_turns
        self.cold_blobs, self.decay_idle_turns = cold_blobs, decay_idle_turns
        # Per step: its builder (compression hysteresis), last turn built, carried history, secrets.
        self._steps: dict[tuple[str, str], tuple[PromptBuilder, int, list[Block], frozenset[str]]] = {}
        self._decay: dict[tuple[str, str], VariableDecay] = {}

    @property
    def budget(self) -> Budget:
        """The current budget (the margin follows the model's calibration)."""
        return Budget.for_model(self.counter, self.model, window=self.window, output_reserve=self.output_reserve)

    def calibrate(self, estimated_prompt_text: str, actual_input_tokens: int) -> None:
        """Feed a provider-reported input size back into the safety margin."""
        self.counter.calibrate(self.model, self.counter.count(estimated_prompt_text), actual_input_tokens)

    def forget(self, workflow_id: str, step_id: str) -> None:
        """Drop carried blocks of a step (it ended or moved to another agent)."""
        self._steps.pop((workflow_id, step_id), None)
        self._decay.pop((workflow_id, step_id), None)

    def blocks(self, spec: WorkflowSpec, step: StepSpec, state: StepState) -> list[Block]:
        """Every block of the step, its whole history included (archived turns as their digest)."""
        return (
            self._frame(spec, step, state)
            + self._archived(state)
            + [b for pair in self._history(state, after=0) for b in pair]
        )

    def _archived(self, state: StepState) -> list[Block]:
        """One summary block for the turns the checkpoint no longer holds (``mesh.runtime.history``).

        Only a rebuilt history needs it (a resume): a builder that carried the step's blocks from
        turn to turn still holds those turns, compressed or not.
        """
        digest = state.archive
        if not digest.turns:
            return []
        actions = ", ".join(f"{a} x{n}" for a, n in sorted(digest.actions.items()))
        text = f"Turns 1..{digest.through} (archived; {actions}; {digest.failed} failed"
        text += f"; last failure {digest.last_failure})" if digest.last_failure else ")"
        return [Block("archived-turns", text, kind=Kind.SUMMARY, seq=100)]

    def _frame(self, spec: WorkflowSpec, step: StepSpec, state: StepState) -> list[Block]:
        """Top and bottom blocks and dependency summaries (priority and region follow from the kind)."""
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
            shown = f"{REDACTED} (secret, injected by the runtime)" if entry.secret else _fmt(entry.value)
            if entry.origin.startswith("gossip:"):
                # Learned from a peer, not from a dependency's result: say whether a quorum accepted it.
                shown += " (accepted by quorum)" if entry.origin.endswith("(accepted)") else " (tentative, from gossip)"
            out.append(
                Block(f"var:{name}", f"{name}: {shown}", kind=Kind.VARIABLE,
                      priority=Priority(min(max(entry.priority, 0), 3)), seq=seq)
            )
            seq += 1
        for dep, summary in sorted(state.summaries.items()):
            out.append(Block(f"summary:{dep}", f"Step {dep} finished: {summary}", kind=Kind.SUMMARY, seq=seq))
            seq += 1
        seq = 1 << 40  # bottom region: after everything else
        out.extend(self._bottom(step, state, seq))
        return out

    def _history(self, state: StepState, *, after: int) -> list[list[Block]]:
        pairs = []
        for rec in state.history[-self.history_turns:]:
            if rec.turn <= after:
                continue
            seq = 100 + 2 * rec.turn
            group = f"turn:{rec.turn}"
            call = f"turn {rec.turn}: {rec.action}({_fmt(rec.params)})"
            kind = Kind.TOOL_RESULT if rec.outcome == "ok" else Kind.ERROR
            pairs.append([
                Block(f"call:{rec.turn}", call, kind=Kind.TOOL_CALL, group=group, turn=rec.turn, seq=seq),
                Block(f"result:{rec.turn}", f"-> {rec.outcome}: {rec.summary}", kind=kind, group=group,
                      turn=rec.turn, seq=seq + 1),
            ])
        return pairs

    def _bottom(self, step: StepSpec, state: StepState, seq: int) -> list[Block]:
        out = [Block("task", f"TASK: {step.task or step.id}", kind=Kind.TASK, seq=seq)]
        facts = {**{f"param.{k}": v for k, v in step.params.items()}, **state.memory}
        if facts:
            out.append(Block("memory", "WORKING MEMORY:\n" + "\n".join(f"{k}: {_fmt(v)}" for k, v in sorted(facts.items())),
                             kind=Kind.MEMORY, seq=seq + 1))
        out.append(Block("goal", f"GOAL: finish step {step.id} ({step.role}); turn {state.turn + 1} of at most {step.limits.max_turns}.",
                         kind=Kind.GOAL, seq=seq + 2))
        return out

    async def build(self, spec: WorkflowSpec, step: StepSpec, state: StepState, actions: list[ActionSpec]) -> BuiltPrompt:
        """Assemble the next turn's prompt within the budget, compressing old history when due."""
        key = (state.workflow_id, state.step_id)
        carried = self._steps.get(key)
        secrets = frozenset(state.secret_values())
        if carried is None or carried[1] > state.turn:
            builder = PromptBuilder(
                self.counter, summarizer=self.summarizer, cold_store=self.cold_store, redactor=Redactor(secrets),
            )
            blocks = self.blocks(spec, step, state)
            self._decay.pop(key, None)
        else:
            builder, last_turn, middle, known = carried
            if secrets != known:  # the redactor compiles its secrets into one regex: rebuild only on change
                builder.redactor = Redactor(secrets)
            new = [b for pair in self._history(state, after=last_turn) for b in pair]
            blocks = self._frame(spec, step, state) + middle + new
        decay_lines: list[str] = []
        if self.cold_blobs is not None and self.decay_idle_turns > 0:
            blocks, decay_lines = await self._decay_variables(key, blocks, state, builder)
        budget = self.budget
        assembled = await builder.build(blocks, budget)
        middle = [b for b in assembled.blocks if b.region == Region.MIDDLE and not b.id.startswith("summary:")]
        self._steps[key] = (builder, state.turn, middle, secrets)
        system, _, prompt = assembled.text.partition("\n\n")
        return BuiltPrompt(
            system=system,
            prompt=prompt,
            tokens=assembled.tokens,
            budget=budget.usable,
            ledger=tuple(decay_lines + (assembled.ledger.lines() if len(assembled.ledger) else [])),
        )

    async def _decay_variables(
        self, key: tuple[str, str], blocks: list[Block], state: StepState, builder: PromptBuilder
    ) -> tuple[list[Block], list[str]]:
        """Idle variables out to the blob store, used ones back (``mesh.runtime.decay``)."""
        assert self.cold_blobs is not None
        decay = self._decay.get(key)
        if decay is None:
            decay = self._decay[key] = VariableDecay(
                self.cold_blobs, state.workflow_id, state.step_id, idle_turns=self.decay_idle_turns,
                counter=self.counter,
            )
        redactor = builder.redactor

        def redact(block: Block) -> Block:
            text = redactor.redact(block.text) if redactor is not None else block.text
            return block if text == block.text else block.replace(text=text)

        last = state.history[-1] if state.history else None
        return await decay.apply(
            blocks, turn=state.turn + 1, redact=redact,
            last_used={f"var:{name}": entry.last_used_turn for name, entry in state.variables.items()},
            mentions=[f"{last.action} {_fmt(last.params)}"] if last is not None else (),
        )

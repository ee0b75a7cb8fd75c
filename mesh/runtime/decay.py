"""Temporal decay in the turn loop: a step's variables unused for N turns leave its prompt.

The context engine's :class:`~mesh.context.DecayManager` does the work on prompt blocks; this
module feeds it the step's own notion of use and gives it the agent's blob store as cold store.
A variable is *used* in a turn when it is set (discovered, re-hydrated, edited by an operator),
injected into an action's parameters (``var:<name>``), or read by an action (``ctx.variable``);
``ContextVariable.last_used_turn`` records the last such turn and is checkpointed, so a new owner
decays and restores exactly as the old one would have. A use in turn ``t`` puts the variable
in the prompt of turn ``t + 1``: after ``idle_turns`` turns without use its block moves to the
blob store (a one-line digest stays, naming it) and comes back the turn after the next use.
Each move is a line in the turn's eviction ledger (``- decayed ...``, ``- restored ...``).

What goes cold is the block as the prompt shows it, after redaction: a secret variable's block
is ``[REDACTED]`` there, so no secret value ever reaches cold storage (and the step's checkpoint
keeps its value sealed, ``StepState.to_bytes``). Decay does not remove values from the step's
state: actions and injection read them as before; only the prompt sheds them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from mesh.context import Block, DecayManager, Kind, TokenCounter, cold_key
from mesh.store import BlobStore, PrefixedBlobStore

__all__ = ["VariableDecay"]


def cold_prefix(workflow_id: str, step_id: str) -> str:
    """Blob-name prefix of one step's cold variables."""
    return f"cold/{workflow_id}/{step_id}"


class VariableDecay:
    """Decay and restore of one step's variable blocks, turn after turn (one per step, not shared).

    ``apply`` takes the step's freshly built blocks (variables rebuilt from its state every turn)
    and returns them with idle variables replaced by their digests and used ones restored.
    """

    def __init__(
        self,
        blobs: BlobStore,
        workflow_id: str,
        step_id: str,
        *,
        idle_turns: int,
        counter: TokenCounter | None = None,
    ) -> None:
        """Decay variables of ``workflow_id/step_id`` after ``idle_turns`` turns without use."""
        self.cold = PrefixedBlobStore(blobs, cold_prefix(workflow_id, step_id) + "/")
        self.manager = DecayManager(self.cold, counter=counter, idle_turns=idle_turns)
        # block id -> (digest of the original block as the frame builds it, the digest block)
        self._stand_ins: dict[str, tuple[bytes, Block]] = {}

    async def apply(
        self,
        blocks: Sequence[Block],
        *,
        turn: int,
        last_used: Mapping[str, int],
        redact: Callable[[Block], Block],
        mentions: Sequence[str] = (),
    ) -> tuple[list[Block], list[str]]:
        """The blocks for the prompt of ``turn``, and the ledger lines of what moved.

        ``last_used`` maps a variable block's id to the last turn the variable was used;
        ``redact`` is applied to variable blocks first, so cold storage only sees redacted text.
        ``mentions`` (the last decision, say) restore a cold variable whose block id they name,
        as its digest line invites the model to.
        """
        manager = self.manager
        staged: list[Block] = []
        originals: dict[str, Block] = {}
        for b in blocks:
            if b.kind is Kind.VARIABLE:
                b = redact(b)
                originals[b.id] = b
                stand_in = self._stand_ins.get(b.id)
                if stand_in is not None and manager.is_cold(b.id) and stand_in[0] == b.digest:
                    b = stand_in[1]  # unchanged while cold: its digest stands in for it
                manager.touch(b.id, last_used.get(b.id, 0) + 1)
            staged.append(b)
        result = await manager.apply(staged, turn=turn, mentions=mentions)
        lines = result.ledger.lines() if len(result.ledger) else []
        for name in result.decayed:
            out = next(b for b in result.blocks if b.id == name)
            self._stand_ins[name] = (originals[name].digest, out)
        count = manager.counter.count_block
        for name in result.restored:
            _, digest_block = self._stand_ins.pop(name)
            back = next(b for b in result.blocks if b.id == name)
            lines.append(
                f"- restored {name} (P{int(back.priority)} {back.kind.value}, turn {back.turn}): "
                f"{count(digest_block)} -> {count(back)} tokens, used in turn {turn - 1}; "
                f"from {cold_key(name)}"
            )
        for name in [n for n in self._stand_ins if not manager.is_cold(n)]:
            del self._stand_ins[name]  # set anew while cold: the new value is live
        return list(result.blocks), lines

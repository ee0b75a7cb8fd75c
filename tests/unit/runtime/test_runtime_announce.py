"""A step's ownership is announced once per (epoch, turn): never the same id with other content.

The agent's store is a JournalingStateStore; the inner store goes down while the step's last turn
runs, so its completion is journaled and the epoch is kept unfenced. The worker then retries the
step (its result could not be published), and each retry claims the same epoch offline and finds the
same turn. Before the fix every retry re-sent a StepStarted with the same deterministic id but a
new trace context, and every consumer's verifier dead-lettered it as equivocation.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

from mesh.errors import StoreUnavailable
from mesh.llm import ActionSpec, Decision, ReasonerRequest, RuleReasoner
from mesh.runtime import Action, ActionContext, ActionOutcome, RuntimeOptions, StepRunner
from mesh.runtime.prompt import StackPromptBuilder
from mesh.runtime.step_runner import Rehydration
from mesh.security import (
    EnvelopeSigner,
    EnvelopeVerifier,
    Keyring,
    VerifierOptions,
    generate_keypair,
)
from mesh.store import Checkpoint, InMemoryStateStore, JournalingStateStore, JournalOptions
from protocols import Envelope, StepSpec, WorkflowSpec


class Outage(InMemoryStateStore):
    """An in-memory store that answers ``StoreUnavailable`` while ``down``."""

    down = False

    async def claim(self, key: str, owner: str) -> int:
        if self.down:
            raise StoreUnavailable("test outage")
        return await super().claim(key, owner)

    async def read(self, key: str, version: int | None = None) -> Checkpoint:
        if self.down:
            raise StoreUnavailable("test outage")
        return await super().read(key, version)

    async def write(
        self, key: str, data: bytes, *, epoch: int, owner: str = "", workflow_id: str | None = None
    ) -> Checkpoint:
        if self.down:
            raise StoreUnavailable("test outage")
        return await super().write(key, data, epoch=epoch, owner=owner, workflow_id=workflow_id)


async def test_a_retry_while_the_store_is_down_does_not_re_announce_with_other_content(
    tmp_path: Path,
) -> None:
    inner = Outage()
    store = JournalingStateStore(
        inner,
        tmp_path / "journal",
        agent_id="work-1",
        options=JournalOptions(retry_interval_s=30, max_retry_interval_s=30),
    )
    keys = generate_keypair("work-1")
    signer = EnvelopeSigner("work-1", keys.private_key)
    keyring = Keyring()
    keyring.add("work-1", keys.public_key)
    verifier = EnvelopeVerifier(
        keyring,
        options=VerifierOptions(accept_redelivery=True, max_age_ms=None, equivocation_rules=()),
    )
    published: list[Envelope] = []

    async def publish(env: Envelope) -> None:
        # As mesh.runtime.agent's publish: each publish in its own span, whose W3C context the
        # envelope carries (signed), so two publishes of one event differ in ``trace``.
        traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
        signed = signer.sign(env.with_fields(trace={"traceparent": traceparent}))
        verifier.verify(signed)  # raises on equivocation, as a consumer would dead-letter it
        published.append(signed)

    async def work(ctx: ActionContext, params: dict[str, object]) -> ActionOutcome:
        inner.down = ctx.turn == 2  # Redis dies while the last turn runs
        return ActionOutcome(summary=f"turn {ctx.turn}", done=ctx.turn == 2)

    def policy(request: ReasonerRequest) -> Decision:
        return Decision(action="work", params={})

    runner = StepRunner(
        RuleReasoner(policy=policy),
        store,
        StackPromptBuilder(window=8000, output_reserve=512),
        publish,
        agent_id="work-1",
        role="work",
        actions={
            "work": Action(
                ActionSpec(name="work", description="work", params_schema={"type": "object"}), work
            )
        },
        options=RuntimeOptions(),
    )
    step = StepSpec(id="work", role="work")
    spec = WorkflowSpec(name="w", steps=(step,))

    state = await runner.run(spec, step, "wf-1", rehydration=Rehydration())
    assert state.status == "completed" and inner.down and not store.durable
    for _ in range(3):  # the worker's retries of a result it could not publish yet
        await asyncio.sleep(0.01)
        again = await runner.run(spec, step, "wf-1", rehydration=Rehydration())
        assert again.status == "completed" and again.epoch == state.epoch
    started = [e for e in published if e.kind == "workflow.step_started"]
    ids = [e.id for e in started]
    assert len(ids) == len(set(ids)) == 2, [(e.id, e.payload) for e in started]
    await store.aclose()

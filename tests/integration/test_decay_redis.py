"""Temporal decay in the turn loop, over real Redis checkpoints and a real blob store (a directory,
and S3 through s3proxy when its jar is there): a variable unused for N turns leaves the prompt for
the blob store, with a ledger line, and comes back the turn after an action injects it; a new
owner resuming from the Redis checkpoint decays and restores on the same clock; no secret value
reaches cold storage."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from mesh.llm import ActionSpec, Decision, ReasonerRequest, RuleReasoner
from mesh.runtime import (
    Action,
    ActionContext,
    ActionOutcome,
    ContextVariable,
    OwnershipLost,
    Rehydration,
    RuntimeOptions,
    StackPromptBuilder,
    StepRunner,
    StepState,
)
from mesh.store import BlobStore, FileBlobStore, RedisStateStore, step_key
from protocols import Envelope, WorkflowSpec

IDLE = 3
SECRET = "tok-decay-secret-0123456789abcdef"
CATALOG = "catalog-" + "-".join(f"entry{i:03d}" for i in range(40))
"""A long value: its digest line is much shorter, so decay is worth the round trip."""
INJECT_AT = 9
"""The turn whose action injects the catalog (idle from turn 1 to 8)."""


def _spec() -> WorkflowSpec:
    return WorkflowSpec.parse(
        {
            "name": "decay",
            "mission": "Work through a queue, then use the catalog.",
            "steps": [
                {
                    "id": "s",
                    "role": "worker",
                    "task": "work",
                    "limits": {"max_turns": 40, "spin_window": 100},
                },
            ],
        }
    )


@pytest.fixture(params=["file", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    """A directory blob store, or an S3 bucket on s3proxy (skips without its jar, as test_blob_s3)."""
    if request.param == "file":
        yield FileBlobStore(tmp_path / "blobs", fsync=False)
        return
    from mesh.store.s3 import S3BlobStore
    from tests.integration.s3_server import S3Server, s3proxy_jar

    server = S3Server(s3proxy_jar(), tmp_path / "s3proxy")
    server.start()
    try:
        yield S3BlobStore(
            "mesh-test-decay",
            prefix=f"t-{uuid.uuid4().hex[:8]}",
            endpoint_url=server.endpoint,
            access_key_id=server.access_key,
            secret_access_key=server.secret_key,  # type: ignore[arg-type]
            create_bucket=True,
        )
    finally:
        server.stop()


@pytest.fixture
async def store(redis_url: str, key_prefix: str) -> AsyncIterator[RedisStateStore]:
    """Checkpoints in the real Redis."""
    s = RedisStateStore.from_url(redis_url, key_prefix=key_prefix)
    try:
        yield s
    finally:
        await s.aclose()


class _Role:
    """``work`` touches no variable; ``use`` injects the catalog at turn ``INJECT_AT``."""

    def __init__(self, *, stop_after: int | None = None) -> None:
        self.prompts: dict[int, str] = {}
        self.stop_after = stop_after
        self.runner: StepRunner | None = None

    def policy(self, request: ReasonerRequest) -> Decision:
        turn = int(request.prompt.rsplit("turn ", 1)[1].split(" ", 1)[0])
        self.prompts[turn] = request.prompt
        return Decision(action="use" if turn == INJECT_AT else "work")

    async def work(self, ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
        if self.stop_after is not None and ctx.turn >= self.stop_after and self.runner is not None:
            self.runner.request_stop()  # this owner goes away after the turn (checkpointed)
        return ActionOutcome(summary=f"item {ctx.turn}", done=ctx.turn >= INJECT_AT + 3)

    async def use(self, ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
        assert params["catalog"] == CATALOG  # injection reads the state, never the prompt
        return ActionOutcome(summary="used the catalog")

    def actions(self) -> dict[str, Action]:
        schema = {"type": "object", "properties": {"catalog": {"type": "string"}}}
        return {
            "work": Action(ActionSpec(name="work", description="Work."), self.work),
            "use": Action(
                ActionSpec(name="use", description="Use the catalog.", params_schema=schema),
                self.use,
                inject={"catalog": "var:catalog"},
            ),
        }

    def make_runner(self, store: RedisStateStore, blobs: BlobStore, agent: str) -> StepRunner:
        async def publish(env: Envelope) -> None:
            return None

        self.runner = StepRunner(
            RuleReasoner(policy=self.policy),
            store,
            StackPromptBuilder(
                window=8000, output_reserve=500, cold_blobs=blobs, decay_idle_turns=IDLE
            ),
            publish,
            agent_id=agent,
            role="worker",
            actions=self.actions(),
            blobs=blobs,
            options=RuntimeOptions(decay_idle_turns=IDLE),
        )
        return self.runner


def _rehydration() -> Rehydration:
    return Rehydration(
        variables={
            "catalog": ContextVariable("catalog", CATALOG, priority=1),
            "auth_token": ContextVariable("auth_token", SECRET + "-" + "x" * 200, secret=True, priority=1),
        }
    )


async def _cold_blobs(blobs: BlobStore) -> dict[str, bytes]:
    return {name: await blobs.get(name) for name in await blobs.list("cold/wf-decay/s/")}


@pytest.mark.timeout(120)
async def test_an_unused_variable_leaves_the_prompt_and_returns_when_injected(
    store: RedisStateStore, blobs: BlobStore
) -> None:
    role = _Role()
    runner = role.make_runner(store, blobs, "a")
    try:
        state = await runner.run(_spec(), _spec().steps[0], "wf-decay", rehydration=_rehydration())
        await runner.drain()
    finally:
        await blobs.aclose()
    assert state.status == "completed"
    prompts = role.prompts
    # Adopted at turn 0: in the prompts of turns 1..IDLE, then decayed (a digest names it).
    for turn in range(1, IDLE + 1):
        assert CATALOG in prompts[turn], turn
    for turn in range(IDLE + 1, INJECT_AT + 1):
        assert CATALOG not in prompts[turn] and "var:catalog: [in cold storage" in prompts[turn], (
            turn
        )
    # Injected at INJECT_AT: back in the next prompt, then idle again.
    assert CATALOG in prompts[INJECT_AT + 1]
    stored = StepState.from_bytes((await store.read(step_key("wf-decay", "s"))).data)
    ledger = {rec.turn: rec.ledger for rec in stored.history}
    assert any(line.startswith("- decayed var:catalog") for line in ledger[IDLE + 1])
    assert any(line.startswith("- restored var:catalog") for line in ledger[INJECT_AT + 1])
    assert stored.history[IDLE].evicted >= 1  # the console's chart counts decay as eviction
    # The value is still in the state: decay sheds the prompt, not the step's knowledge.
    assert stored.variables["catalog"].value == CATALOG
    assert stored.variables["catalog"].last_used_turn == INJECT_AT


@pytest.mark.timeout(120)
async def test_a_new_owner_resumes_the_decay_clock_from_the_redis_checkpoint(
    store: RedisStateStore, blobs: BlobStore
) -> None:
    first = _Role(stop_after=IDLE + 2)
    try:
        try:
            state = await first.make_runner(store, blobs, "a").run(
                _spec(), _spec().steps[0], "wf-decay", rehydration=_rehydration()
            )
        except OwnershipLost:
            pass
        else:
            assert state.status == "running" and state.turn == IDLE + 2
        assert CATALOG not in first.prompts[IDLE + 2]
        cold = await _cold_blobs(blobs)
        assert any(CATALOG.encode() in raw for raw in cold.values())
        # Another agent takes over from the checkpoint in Redis: same clock, same cold blob.
        second = _Role()
        runner = second.make_runner(store, blobs, "b")
        state = await runner.run(_spec(), _spec().steps[0], "wf-decay", rehydration=_rehydration())
        await runner.drain()
        assert state.status == "completed"
        resumed = min(second.prompts)
        assert resumed == IDLE + 3 and CATALOG not in second.prompts[resumed]
        assert CATALOG in second.prompts[INJECT_AT + 1]
        # No secret in cold storage, whatever went there.
        for raw in (await _cold_blobs(blobs)).values():
            assert SECRET.encode() not in raw
    finally:
        await blobs.aclose()

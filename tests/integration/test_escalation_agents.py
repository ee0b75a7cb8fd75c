"""Durable human decisions and budgets with real agent processes on real Kafka and Redis.

A workflow with a token budget pauses a step (kind ``budget``) before the call that would cross
it; a decision for another pause is refused; the owner is SIGKILLed while paused and the decision
is published while no agent of its role runs: the replacement reads the pause from its checkpoint
and the decision from the log and goes on. A later pause gets a new nonce, and re-sending the
first approval does not release it; ``mesh resume`` (the CLI, nonce from the run index) does.
Token usage is in the step events, the checkpoints' turn records and the run index.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agents.specs import reconciliation_spec
from mesh.runtime import MeshClient, StepState
from mesh.runtime.view import run_summary
from mesh.store import RedisRunIndex, step_key
from tests.chaos.cluster import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
BUDGET_TOKENS = 1600
"""Below what the demo workflow spends with the rule reasoner (about 5,200 tokens counted with
tiktoken: identity ~430, fetch ~1,050, validate ~3,200, report ~510), so some step pauses."""


def paused(cluster: Cluster, wf: str) -> dict[str, str]:
    """Paused steps of ``wf`` and the nonce of their current pause."""
    return {step: esc.nonce for step, esc in cluster.views[wf].escalated.items()}


async def checkpoint(cluster: Cluster, wf: str, step: str) -> StepState:
    return StepState.from_bytes((await cluster.store.read(step_key(wf, step))).data)


async def test_budget_pause_decisions_survive_sigkill_and_stale_ones_are_refused(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str
) -> None:
    cluster = Cluster(tmp_path, kafka_bootstrap, redis_url, patients=4, turn_delay_s=0.0)
    index = RedisRunIndex.from_url(redis_url, key_prefix=f"{cluster.prefix}:")
    try:
        await cluster.start(
            [
                ("identity", "identity-a"),
                ("fetch", "fetch-a"),
                ("validate", "validate-a"),
                ("report", "report-a"),
            ],
            ready_timeout_s=240,
        )
        client = MeshClient(cluster.bus, topics=cluster.topics, client_id="chaos-test")
        spec = reconciliation_spec(patients=4, page_size=2)
        spec = spec.model_validate({**spec.model_dump(), "budget": {"max_tokens": BUDGET_TOKENS}})
        wf = await cluster.submit(spec)
        await cluster.wait_until(
            lambda: bool(paused(cluster, wf)), timeout_s=240, what="a budget pause"
        )
        ((step, nonce_1),) = paused(cluster, wf).items()
        pause = cluster.views[wf].escalated[step]
        assert pause.kind == "budget" and len(nonce_1) == 32, pause
        used = cluster.views[wf].total_usage()
        assert 0 < used.tokens <= BUDGET_TOKENS, used

        # Fail closed: nothing more is asked of the reasoner while paused.
        state = await checkpoint(cluster, wf, step)
        assert (state.status, state.nonce, state.escalation_kind) == ("paused", nonce_1, "budget")
        calls, turns = state.calls, cluster.views[wf].turns_seen.get(step, 0)
        await asyncio.sleep(2.0)
        assert (await checkpoint(cluster, wf, step)).calls == calls
        assert cluster.views[wf].turns_seen.get(step, 0) == turns

        # The run index shows the pause and its nonce (what the console and `mesh resume` read).
        entry = await index.get(wf)
        for _ in range(100):
            if entry is not None and any(s.escalation_nonce == nonce_1 for s in entry.steps):
                break
            await asyncio.sleep(0.1)
            entry = await index.get(wf)
        assert entry is not None and entry.budget_tokens == BUDGET_TOKENS
        (indexed,) = [s for s in entry.steps if s.id == step]
        assert (indexed.status, indexed.escalation_kind, indexed.escalation_nonce) == (
            "paused",
            "budget",
            nonce_1,
        )
        assert entry.input_tokens + entry.output_tokens == used.tokens

        # A decision for another pause is refused by every reader of the log (and by the agent).
        await client.decide_escalation(
            wf, step, nonce="f" * 32, decision="resume", operator="mallory"
        )
        await cluster.wait_until(
            lambda: any("mallory" in line for line in cluster.views[wf].ignored),
            timeout_s=30,
            what="the forged decision to be read",
        )
        await asyncio.sleep(2.0)
        assert paused(cluster, wf) == {step: nonce_1}

        # SIGKILL the owner while paused; the approval lands while no agent of the role runs.
        owner = cluster.owner(wf, step)
        cluster.agents.kill(owner)
        role = cluster.agents.roles[owner]
        approval = await client.decide_escalation(
            wf,
            step,
            nonce=nonce_1,
            decision="resume",
            operator="alice",
            note="approved after review",
        )
        successor = f"{role}-b"
        cluster.agents.start(role, successor)
        await asyncio.to_thread(cluster.agents.wait_ready, successor, timeout_s=240)
        await cluster.wait_until(
            lambda: cluster.owner(wf, step) == successor,
            timeout_s=120,
            what="the successor to take the step",
        )
        applied = (await checkpoint(cluster, wf, step)).decisions
        assert applied[0]["nonce"] == nonce_1 and applied[0]["operator"] == "alice"
        assert applied[0]["applied_by"] == successor and applied[0]["kind"] == "budget"

        # Later pauses: the first approval, sent again, releases none of them; each is decided on
        # its own nonce (the first one with `mesh resume`, which finds it in the run index).
        stale_checked = cli_used = False
        decided = {nonce_1}
        while cluster.views[wf].finished is None:
            await cluster.wait_until(
                lambda: (
                    cluster.views[wf].finished is not None
                    or bool(set(paused(cluster, wf).values()) - decided)
                ),
                timeout_s=240,
                what="the workflow to finish or pause again",
            )
            for later_step, nonce in paused(cluster, wf).items():
                if nonce in decided:
                    continue
                assert nonce != nonce_1
                if not stale_checked:
                    await client.decide_escalation(
                        wf,
                        later_step,
                        nonce=nonce_1,
                        decision="resume",
                        operator=approval.operator,
                        note="replayed",
                    )
                    await asyncio.sleep(3.0)
                    assert paused(cluster, wf).get(later_step) == nonce, (
                        "a stale approval released a later pause"
                    )
                    assert (await checkpoint(cluster, wf, later_step)).nonce == nonce
                    stale_checked = True
                if not cli_used:
                    await asyncio.to_thread(
                        mesh_cli,
                        cluster,
                        tmp_path,
                        "resume",
                        wf,
                        later_step,
                        "--operator",
                        "bob",
                        "--note",
                        "second budget",
                    )
                    cli_used = True
                else:
                    await client.decide_escalation(
                        wf, later_step, nonce=nonce, decision="resume", operator="carol"
                    )
                decided.add(nonce)
        view = cluster.views[wf]
        assert view.finished.status == "succeeded", cluster.describe()
        assert stale_checked and cli_used, "the workflow paused only once: lower BUDGET_TOKENS"

        # Usage: per step in the results, per turn in the checkpoints, per workflow in the index.
        summary = run_summary(view)
        for s in spec.steps:
            done = view.completed[s.id]
            state = await checkpoint(cluster, wf, s.id)
            assert done.usage == state.usage() and done.usage.calls >= done.turns >= 1
            assert (
                sum(h.input_tokens for h in state.history) <= state.input_tokens
            )  # repairs and paused turns
            assert all(h.calls >= 1 and h.input_tokens > 0 for h in state.history)
        assert summary.input_tokens == sum(
            view.completed[s.id].usage.input_tokens for s in spec.steps
        )
        for _ in range(100):
            entry = await index.get(wf)
            if entry is not None and entry.finished:
                break
            await asyncio.sleep(0.1)
        assert entry is not None and (entry.input_tokens, entry.output_tokens) == (
            summary.input_tokens,
            summary.output_tokens,
        )
        print(
            f"{wf}: {summary.input_tokens}+{summary.output_tokens} tokens, budget {BUDGET_TOKENS}, "
            f"decisions on {len(decided)} pause(s)"
        )
    finally:
        await index.aclose()
        await cluster.aclose()
        from bench.common import delete_keys, delete_topics

        await delete_topics(kafka_bootstrap, f"{cluster.prefix}.")
        await delete_keys(redis_url, f"{cluster.prefix}:")


def mesh_cli(cluster: Cluster, tmp: Path, *args: str) -> str:
    env = {
        **os.environ,
        "MESH_KAFKA_BOOTSTRAP": cluster.kafka_bootstrap,
        "MESH_REDIS_URL": cluster.redis_url,
        "MESH_TOPIC_PREFIX": cluster.prefix,
        "PYTHONPATH": str(ROOT),
        "MESH_STATE_DIR": str(tmp / "state"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "mesh", *args], env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout

"""``mesh.testing`` as a user's test would use it: only ``mesh.roles`` and ``mesh.testing``."""

from __future__ import annotations

from typing import Any

import pytest

from mesh.roles import (
    WORKFLOW_ID,
    Action,
    ActionContext,
    ActionOutcome,
    ActionSpec,
    RetryableActionError,
    Role,
    from_memory,
    from_param,
)
from mesh.testing import (
    FakeAnthropicServer,
    FakeReply,
    InMemoryMesh,
    MockService,
    WorkflowTimeout,
    reasoner_for,
)


async def _post_item(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
    http = ctx.resource("http")
    resp = await http.post(
        "/items",
        json={"workflow": params["workflow"], "index": params["index"]},
        headers={"Idempotency-Key": ctx.idempotency_key},
    )
    if resp.status_code == 503:
        raise RetryableActionError("503")
    index = int(params["index"])
    return ActionOutcome(
        summary=f"posted item {index}",
        outputs={"posted": [*ctx.outputs.get("posted", []), resp.json()["id"]]},
        memory={"next": index + 1},
        done=index + 1 >= int(params["count"]),
    )


POSTER = Role.of(
    "poster",
    Action(
        ActionSpec(
            name="post_item",
            description="Post the next item.",
            params_schema={
                "type": "object",
                "properties": {
                    "index": {"type": "integer"},
                    "count": {"type": "integer"},
                    "workflow": {"type": "string"},
                },
                "required": ["index", "count", "workflow"],
            },
        ),
        _post_item,
        inject={
            "index": from_memory("next", 0),
            "count": from_param("count"),
            "workflow": WORKFLOW_ID,
        },
        side_effect=True,
    ),
)

SPEC = {
    "name": "post",
    "mission": "Post items.",
    "steps": [{"id": "post", "role": "poster", "params": {"count": 3}}],
}


async def test_a_workflow_of_user_roles_calls_a_mock_service() -> None:
    service = MockService()
    failures = iter([True, False, False, False])

    def create(call: Any) -> Any:
        if next(failures):  # the first call fails once: retried within the turn
            from httpx import Response

            return Response(503)
        return {"id": f"item-{call.body['index']}"}

    service.route("POST", "/items", create, effect=True)
    async with service.client() as http, InMemoryMesh([POSTER], resources={"http": http}) as mesh:
        view = await mesh.run(SPEC, timeout_s=30)
    assert view.finished is not None and view.finished.status == "succeeded"
    assert view.completed["post"].outputs["posted"] == ["item-0", "item-1", "item-2"]
    calls = service.calls_to("POST", "/items")
    assert [c.body["index"] for c in calls] == [0, 0, 1, 2]
    assert {c.body["workflow"] for c in calls} == {view.workflow_id}
    # The retry inside turn 1 re-sent its key (same turn, same action): one duplicate, no more.
    assert service.duplicate_effects == 1
    assert len({c.idempotency_key for c in calls}) == 3


async def test_a_role_decides_with_the_fake_model_server() -> None:
    service = MockService()
    service.route("POST", "/items", lambda call: {"id": "x"}, effect=True)
    with FakeAnthropicServer() as model:
        # The model names the action; injection supplies every parameter it got wrong or left out.
        model.script(
            FakeReply.tool_use("post_item", {"index": 7, "count": 1, "workflow": "made-up"})
        )
        async with (
            service.client() as http,
            InMemoryMesh([POSTER], resources={"http": http}, reasoner=reasoner_for(model)) as mesh,
        ):
            view = await mesh.run(
                {**SPEC, "steps": [{**SPEC["steps"][0], "params": {"count": 1}}]}, timeout_s=30
            )
    assert view.finished is not None and view.finished.status == "succeeded"
    assert len(model.requests) == 1
    assert [t["name"] for t in model.requests[0].body["tools"]] == ["post_item"]
    [call] = service.calls
    assert call.body == {"workflow": view.workflow_id, "index": 0}


async def test_waiting_for_a_workflow_no_agent_serves_times_out() -> None:
    async with InMemoryMesh([POSTER]) as mesh:
        spec = {**SPEC, "steps": [{"id": "x", "role": "nobody"}]}
        with pytest.raises(WorkflowTimeout, match="did not finish in 1 s"):
            await mesh.run(spec, timeout_s=1)


def test_an_unrouted_call_is_a_404_and_recorded() -> None:
    import asyncio

    service = MockService()

    async def go() -> int:
        async with service.client() as http:
            return (
                await http.get("/nowhere", headers={"Authorization": "Bearer s3cret"})
            ).status_code

    assert asyncio.run(go()) == 404
    [call] = service.calls
    assert call.path == "/nowhere" and "authorization" not in call.headers

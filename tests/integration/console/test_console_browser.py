"""The console in headless Chromium against a real demo-like run (real agents, Kafka and Redis).

Screenshots of the main pages go to ``docs/console/`` (``MESH_CONSOLE_SCREENSHOTS`` elsewhere);
the README links them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.console.scenario import CONSOLE_TOKEN, JAEGER_UI, Scenario

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SHOTS = Path(
    os.environ.get(
        "MESH_CONSOLE_SCREENSHOTS", Path(__file__).resolve().parents[3] / "docs" / "console"
    )
)

playwright_sync = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[object]:
    with playwright_sync.sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=chromium_path,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: object, scenario: Scenario) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1360, "height": 900}, base_url=scenario.url)  # type: ignore[attr-defined]
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield pg
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(pg: object, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def test_the_run_appears_in_the_list(page: object, scenario: Scenario) -> None:
    page.goto("/runs")  # type: ignore[attr-defined]
    row = page.locator(f"tr[data-run='{scenario.run_a}']")  # type: ignore[attr-defined]
    row.wait_for(timeout=30_000)
    assert row.locator("[data-status]").inner_text() == "succeeded"
    assert "4/4" in row.inner_text()
    # search narrows the list to the run
    page.fill("#filter-q", scenario.run_a)  # type: ignore[attr-defined]
    page.keyboard.press("Enter")  # type: ignore[attr-defined]
    playwright_sync.expect(page.locator("#runs tbody tr")).to_have_count(1)  # type: ignore[attr-defined]
    page.locator(f"tr[data-run='{scenario.run_a}']").wait_for()  # type: ignore[attr-defined]
    assert page.locator("#runs tbody tr").count() == 1  # type: ignore[attr-defined]
    page.goto("/runs")  # type: ignore[attr-defined]
    page.locator(f"tr[data-run='{scenario.run_b}']").wait_for()  # type: ignore[attr-defined]
    shot(page, "runs")


def test_the_run_dag_shows_the_kill_and_the_takeover(page: object, scenario: Scenario) -> None:
    page.goto(f"/runs/{scenario.run_a}")  # type: ignore[attr-defined]
    node = page.locator("#dag g[data-step='fetch']")  # type: ignore[attr-defined]
    node.wait_for(timeout=30_000)
    survivor = scenario.cluster.owner(scenario.run_a, "fetch")
    assert node.get_attribute("data-owner") == survivor != scenario.killed
    assert int(node.get_attribute("data-resumes") or 0) >= 1
    assert int(node.get_attribute("data-takeovers") or 0) >= 1
    assert scenario.killed in (node.locator(".dag-kill").text_content() or "")
    assert survivor in (node.locator(".dag-takeover").text_content() or "")
    for step in ("identity", "validate", "report"):
        assert (
            page.locator(f"#dag g[data-step='{step}']").get_attribute("data-status") == "completed"
        )  # type: ignore[attr-defined]
    # the timeline: the killed agent's lane ends with the kill mark, the takeover is on the survivor's
    assert page.locator("#timeline .tl-kill").count() >= 1  # type: ignore[attr-defined]
    assert page.locator("#timeline .tl-takeover").count() >= 1  # type: ignore[attr-defined]
    assert page.locator("#timeline .tl-turn").count() >= 10  # type: ignore[attr-defined]
    href = page.locator("#trace-link").get_attribute("href")  # type: ignore[attr-defined]
    assert (
        href is not None
        and href.startswith(f"{JAEGER_UI}/trace/")
        and len(href.rsplit("/", 1)[1]) == 32
    )
    shot(page, "run")


def test_a_steps_token_chart_has_one_point_per_turn(page: object, scenario: Scenario) -> None:
    api = httpx.get(f"{scenario.url}/api/runs/{scenario.run_a}/steps/fetch", timeout=10).json()
    turns = [t["turn"] for t in api["turns"]]
    assert len(turns) >= 5 and turns == sorted(set(turns))
    assert all(
        t["prompt_tokens"] > 0 and t["prompt_budget"] >= t["prompt_tokens"] for t in api["turns"]
    )
    page.goto(f"/runs/{scenario.run_a}/steps/fetch")  # type: ignore[attr-defined]
    page.locator("#token-chart").wait_for(timeout=30_000)  # type: ignore[attr-defined]
    points = page.locator("#token-chart circle.turn-point")  # type: ignore[attr-defined]
    assert points.count() == len(turns)
    assert [int(points.nth(i).get_attribute("data-turn")) for i in range(points.count())] == turns
    assert page.locator("#turns tbody tr").count() == len(turns)  # type: ignore[attr-defined]
    # the access token the identity step discovered is inherited, masked, and gossiped
    token_row = page.locator("#variables tr[data-var='auth_token']")  # type: ignore[attr-defined]
    assert "secret" in token_row.inner_text()
    assert (
        "Scratchpad" in page.locator("#scratchpad").inner_text()
        or "Turn" in page.locator("#scratchpad").inner_text()
    )  # type: ignore[attr-defined]
    shot(page, "step")


def test_mesh_and_dashboard_pages(page: object, scenario: Scenario) -> None:
    page.goto(f"/mesh?workflow={scenario.run_a}")  # type: ignore[attr-defined]
    page.locator("#agents tbody tr[data-agent]").first.wait_for(timeout=30_000)  # type: ignore[attr-defined]
    agents = {
        page.locator("#agents tbody tr[data-agent]").nth(i).get_attribute("data-agent")  # type: ignore[attr-defined]
        for i in range(page.locator("#agents tbody tr[data-agent]").count())
    }  # type: ignore[attr-defined]
    assert {"identity-1", "validate-1", "report-1"} <= agents and scenario.killed not in agents
    assert page.locator("#gossip tbody tr").count() >= 1  # type: ignore[attr-defined]
    shot(page, "mesh")
    page.goto("/dashboard")  # type: ignore[attr-defined]
    page.locator("#kpis tr[data-kpi='workflow_success_rate']").wait_for(timeout=30_000)  # type: ignore[attr-defined]
    assert page.locator("#kpis tbody tr").count() == 9  # type: ignore[attr-defined]
    # run B is paused for a human: the spinning KPI (threshold 0) is flagged
    assert "violated" in (
        page.locator("#kpis tr[data-kpi='spinning_count']").get_attribute("class") or ""
    )  # type: ignore[attr-defined]
    assert page.locator("svg.spark[data-kpi='turn_latency_p95'] circle").count() >= 1  # type: ignore[attr-defined]
    shot(page, "dashboard")


def test_a_spinning_step_resumed_from_the_browser_completes(
    page: object, scenario: Scenario
) -> None:
    page.goto("/escalations")  # type: ignore[attr-defined]
    row = page.locator(f"tr.esc-row[data-workflow='{scenario.run_b}'][data-step='identity']")  # type: ignore[attr-defined]
    row.wait_for(timeout=30_000)
    assert "spinning" in row.inner_text()
    shot(page, "escalations")
    # without the token the write is refused
    row.locator(".esc-resume").click()
    refused = row.locator(".esc-result.flag")
    refused.wait_for(timeout=10_000)
    assert "401" in refused.inner_text()
    scenario.open_the_ehr()
    page.fill("#token", CONSOLE_TOKEN)  # type: ignore[attr-defined]
    page.dispatch_event("#token", "change")  # type: ignore[attr-defined]
    row = page.locator(f"tr.esc-row[data-workflow='{scenario.run_b}'][data-step='identity']")  # type: ignore[attr-defined]
    row.locator(".esc-note").fill("EHR is back; resuming")
    row.locator(".esc-resume").click()
    # The row says "sent" until the live stream redraws the page without it (the step runs again).
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        run = httpx.get(f"{scenario.url}/api/runs/{scenario.run_b}", timeout=10).json()["run"]
        if run["status"] in ("succeeded", "failed"):
            break
        time.sleep(1)
    assert run["status"] == "succeeded", run
    page.goto(f"/runs/{scenario.run_b}")  # type: ignore[attr-defined]
    decided = page.locator("#events .tl-row-decided").first  # type: ignore[attr-defined]
    decided.wait_for(timeout=30_000)
    assert (
        "resume by test-operator" in decided.inner_text() and "EHR is back" in decided.inner_text()
    )


def test_a_budget_overrun_pauses_the_step_and_a_reject_fails_it(
    page: object, scenario: Scenario
) -> None:
    page.goto(f"/runs/{scenario.run_c}/steps/identity")  # type: ignore[attr-defined]
    box = page.locator("#escalation[data-kind='budget']")  # type: ignore[attr-defined]
    box.wait_for(timeout=30_000)
    assert "budget" in box.inner_text()
    # fail closed: the pause came before any reasoner call of the step was made
    api = httpx.get(f"{scenario.url}/api/runs/{scenario.run_c}/steps/identity", timeout=10).json()
    assert api["step"]["escalation_kind"] == "budget" and len(api["step"]["escalation_nonce"]) >= 16
    assert all(t["calls"] == 0 for t in api["turns"]) and api["step"]["output_tokens"] == 0
    page.goto("/escalations")  # type: ignore[attr-defined]
    row = page.locator(f"tr.esc-row[data-workflow='{scenario.run_c}'][data-step='identity']")  # type: ignore[attr-defined]
    row.wait_for(timeout=30_000)
    assert "budget" in row.inner_text()
    page.fill("#token", CONSOLE_TOKEN)  # type: ignore[attr-defined]
    page.dispatch_event("#token", "change")  # type: ignore[attr-defined]
    row = page.locator(f"tr.esc-row[data-workflow='{scenario.run_c}'][data-step='identity']")  # type: ignore[attr-defined]
    row.locator(".esc-note").fill("over budget: stop")
    row.locator(".esc-reject").click()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        run = httpx.get(f"{scenario.url}/api/runs/{scenario.run_c}", timeout=10).json()["run"]
        if run["status"] == "failed":
            break
        time.sleep(1)
    assert run["status"] == "failed", run

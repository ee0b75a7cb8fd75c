"""A real Kubernetes control plane on loopback, for the Helm tests: no kubelet, no container runtime.

Started as separate processes from binaries that ``.ci/tools.d/40-k8s.sh`` builds once and caches:

* ``etcd`` (Debian's etcd-server) on free loopback ports, data under the test's tmp dir;
* ``kube-apiserver`` with a generated CA, a serving certificate, an admin client certificate
  (``system:masters``) and a service-account signing key pair; RBAC + Node authorization;
* ``kube-controller-manager`` (Deployments, ReplicaSets, StatefulSets, PDB status, EndpointSlices,
  service-account controllers) and ``kube-scheduler``;
* ``kwok`` managing one fake Node: it acts as the kubelet, marking scheduled pods Running and
  Ready. kwok cannot prove that the image runs; the image tests do that.

The API server, admission, validation, schedulers and controllers are the real ones, so
``helm install --wait`` only returns once the real rollout logic reports the workloads ready.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["ControlPlane", "K8sTools", "find_k8s_tools"]

BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
FAKE_NODE = "kwok-node-0"


@dataclass(frozen=True)
class K8sTools:
    """Paths of the control-plane binaries."""

    etcd: str
    kube_apiserver: str
    kube_controller_manager: str
    kube_scheduler: str
    kwok: str


def find_k8s_tools() -> tuple[K8sTools | None, str]:
    """The binaries, or None and what is missing (``MESH_K8S_BIN_DIR``, ~/.cache/agent-mesh/bin)."""
    bin_dir = Path(
        os.environ.get("MESH_K8S_BIN_DIR") or Path.home() / ".cache" / "agent-mesh" / "bin"
    )
    found: dict[str, str] = {}
    missing = []
    for name in BINARIES:
        path = bin_dir / name
        if path.is_file() and os.access(path, os.X_OK):
            found[name] = str(path)
        else:
            missing.append(str(path))
    etcd = (
        os.environ.get("MESH_ETCD")
        or shutil.which("etcd")
        or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)
    )
    if etcd is None:
        missing.append("etcd (apt-get install etcd-server)")
    if missing:
        return None, "missing: " + ", ".join(missing) + " (bash .ci/tools.d/40-k8s.sh builds them)"
    assert etcd is not None
    return (
        K8sTools(
            etcd=etcd,
            kube_apiserver=found["kube-apiserver"],
            kube_controller_manager=found["kube-controller-manager"],
            kube_scheduler=found["kube-scheduler"],
            kwok=found["kwok"],
        ),
        "",
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
    server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        usage = (
            x509.ExtendedKeyUsageOID.SERVER_AUTH if server else x509.ExtendedKeyUsageOID.CLIENT_AUTH
        )
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + controller-manager + scheduler + kwok, started in ``workdir``."""

    tools: K8sTools
    workdir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    server: str = ""
    kubeconfig: Path = field(default_factory=Path)
    timings: dict[str, float] = field(default_factory=dict)

    # -- start / stop ----------------------------------------------------------------------

    def start(self, timeout_s: float = 90.0) -> None:
        """Start every component and wait until the fake node is Ready."""
        began = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_pki()
        etcd_client, etcd_peer, api_port = _free_port(), _free_port(), _free_port()
        self.server = f"https://127.0.0.1:{api_port}"
        self._write_kubeconfig()
        self._spawn(
            "etcd",
            [
                self.tools.etcd,
                "--name=mesh-test",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_client}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_client}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=mesh-test=http://127.0.0.1:{etcd_peer}",
                "--quota-backend-bytes=1073741824",
            ],
            env={"ETCD_UNSUPPORTED_ARCH": "arm64"} if os.uname().machine == "aarch64" else None,
        )
        pki = self.workdir / "pki"
        self._spawn(
            "kube-apiserver",
            [
                self.tools.kube_apiserver,
                f"--etcd-servers=http://127.0.0.1:{etcd_client}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=false",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                "--v=0",
            ],
        )
        self._wait_ready("/readyz", timeout_s)
        self.timings["apiserver_ready_s"] = time.monotonic() - began

        def common(name: str) -> list[str]:
            # Their own health/metrics endpoints on free loopback ports, self-signed in the workdir.
            return [
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={_free_port()}",
                f"--cert-dir={self.workdir / name}",
                "--v=0",
            ]

        self._spawn(
            "kube-controller-manager",
            [
                self.tools.kube_controller_manager,
                *common("controller-manager"),
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--use-service-account-credentials=false",
                "--concurrent-deployment-syncs=5",
            ],
        )
        self._spawn("kube-scheduler", [self.tools.kube_scheduler, *common("scheduler")])
        self._spawn(
            "kwok",
            [
                self.tools.kwok,
                f"--kubeconfig={self.kubeconfig}",
                f"--config={self.workdir / 'kwok.yaml'}",
                "--manage-all-nodes=true",
                # Without a lease the node controller marks the node NotReady and --wait times out.
                "--node-lease-duration-seconds=40",
                "--cidr=10.244.0.1/24",
                "--node-ip=10.0.0.10",
                f"--server-address=127.0.0.1:{_free_port()}",
            ],
        )
        self.apply(self._fake_node())
        self.wait_for(lambda: self._node_ready(), timeout_s, "the kwok node to be Ready")
        self.wait_for(
            lambda: self.get("/api/v1/namespaces/default/serviceaccounts/default") is not None,
            timeout_s,
            "the default ServiceAccount",
        )
        self.timings["node_ready_s"] = time.monotonic() - began

    def stop(self) -> None:
        """SIGTERM every component (reverse order), SIGKILL what lingers."""
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for log in self.workdir.glob("*.log"):
            with contextlib.suppress(OSError):
                log.chmod(0o644)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.workdir / f"{name}.log").open("wb")
        full_env = {**os.environ, **(env or {})}
        full_env.pop("KUBECONFIG", None)
        self.procs[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=self.workdir
        )
        log.close()

    def check_alive(self) -> None:
        """Raise with the tail of its log when a component has exited."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 30) -> str:
        """Last lines of a component's log."""
        path = self.workdir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    # -- PKI and kubeconfig ----------------------------------------------------------------

    def _write_pki(self) -> None:
        pki = self.workdir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mesh-test-ca")])
        ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
        server_key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [
            x509.DNSName(n)
            for n in (
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            )
        ]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", "10.96.0.1")]
        server = _cert(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
            server_key,
            ca_name,
            ca_key,
            sans=sans,
            server=True,
        )
        admin_key = ec.generate_private_key(ec.SECP256R1())
        admin = _cert(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "mesh-test-admin"),
                ]
            ),
            admin_key,
            ca_name,
            ca_key,
        )
        sa_key = ec.generate_private_key(ec.SECP256R1())
        files = {
            "ca.crt": ca.public_bytes(serialization.Encoding.PEM),
            "apiserver.crt": server.public_bytes(serialization.Encoding.PEM),
            "apiserver.key": _pem_key(server_key),
            "admin.crt": admin.public_bytes(serialization.Encoding.PEM),
            "admin.key": _pem_key(admin_key),
            "sa.key": _pem_key(sa_key),
            "sa.pub": sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        }
        for name, data in files.items():
            path = pki / name
            path.write_bytes(data)
            path.chmod(0o600)

    def _write_kubeconfig(self) -> None:
        pki = self.workdir / "pki"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "mesh-test",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority": str(pki / "ca.crt"),
                    },
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate": str(pki / "admin.crt"),
                        "client-key": str(pki / "admin.key"),
                    },
                }
            ],
            "contexts": [
                {"name": "mesh-test", "context": {"cluster": "mesh-test", "user": "admin"}}
            ],
            "current-context": "mesh-test",
        }
        self.kubeconfig = self.workdir / "kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.kubeconfig.chmod(0o600)
        (self.workdir / "kwok.yaml").write_text(
            "apiVersion: config.kwok.x-k8s.io/v1alpha1\nkind: KwokConfiguration\noptions: {}\n",
            encoding="utf-8",
        )

    # -- REST ------------------------------------------------------------------------------

    def client(self) -> httpx.Client:
        """An admin client of the API server (client certificate, verified serving cert)."""
        pki = self.workdir / "pki"
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return httpx.Client(base_url=self.server, verify=context, timeout=15.0)

    def get(self, path: str) -> dict[str, Any] | None:
        """GET a path; None on 404."""
        with self.client() as http:
            response = http.get(path)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create an object by POST to its collection (cluster or namespaced core/group API)."""
        path = collection_path(obj["apiVersion"], obj["kind"], obj["metadata"].get("namespace"))
        with self.client() as http:
            response = http.post(path, json=obj)
        if response.status_code == 409:
            return obj
        if response.status_code >= 400:
            raise RuntimeError(f"POST {path}: {response.status_code} {response.text}")
        data: dict[str, Any] = response.json()
        return data

    def _wait_ready(self, path: str, timeout_s: float) -> None:
        def ready() -> bool:
            self.check_alive()
            try:
                with self.client() as http:
                    return http.get(path).status_code == 200
            except httpx.HTTPError:
                return False

        self.wait_for(ready, timeout_s, f"kube-apiserver {path}")

    def wait_for(
        self, predicate: Any, timeout_s: float, what: str, interval_s: float = 0.5
    ) -> None:
        """Poll until predicate() is true; on timeout raise with every component's log tail."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(interval_s)
        tails = "\n".join(f"--- {name}\n{self.log_tail(name, 10)}" for name in self.procs)
        raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}\n{tails}")

    def _fake_node(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": FAKE_NODE,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "type": "kwok",
                    "kubernetes.io/hostname": FAKE_NODE,
                    "kubernetes.io/os": "linux",
                },
            },
            "spec": {},
            "status": {
                "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                "nodeInfo": {
                    "architecture": "amd64",
                    "operatingSystem": "linux",
                    "kubeletVersion": "fake",
                },
            },
        }

    def _node_ready(self) -> bool:
        self.check_alive()
        node = self.get(f"/api/v1/nodes/{FAKE_NODE}")
        conditions = (node or {}).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


_CORE_PLURALS = {
    "Namespace": "namespaces",
    "Node": "nodes",
    "Secret": "secrets",
    "ConfigMap": "configmaps",
    "Service": "services",
    "ServiceAccount": "serviceaccounts",
    "Pod": "pods",
}


def collection_path(api_version: str, kind: str, namespace: str | None) -> str:
    """REST collection path of a kind (the kinds these tests use: plural = lower + s, or listed)."""
    plural = _CORE_PLURALS.get(kind) or {
        "PodDisruptionBudget": "poddisruptionbudgets",
        "CustomResourceDefinition": "customresourcedefinitions",
    }.get(kind, kind.lower() + "s")
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace and kind not in ("Namespace", "Node", "CustomResourceDefinition"):
        return f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{prefix}/{plural}"


def object_path(obj: dict[str, Any], namespace: str | None = None) -> str:
    """REST path of one object from its apiVersion, kind, name and namespace."""
    meta = obj["metadata"]
    return f"{collection_path(obj['apiVersion'], obj['kind'], meta.get('namespace') or namespace)}/{meta['name']}"


@contextlib.contextmanager
def running_control_plane(tools: K8sTools, workdir: Path) -> Iterator[ControlPlane]:
    """A started control plane, stopped on exit."""
    plane = ControlPlane(tools, workdir)
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()

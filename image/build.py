"""Build the agent-mesh image from image/image.toml: render the Dockerfile, or build without a daemon.

Usage (from the repository root)::

    python image/build.py dockerfile            # print the Dockerfile rendered from image.toml
    python image/build.py dockerfile --check    # exit 1 if ./Dockerfile differs from the rendering
    python image/build.py build                 # daemonless build; prints the image directory
    python image/build.py inputs                # print the cache keys and what they hash

The daemonless build makes the same image as the Dockerfile (same Debian release, user, venv path,
environment, entrypoint, labels, workflow specs) with tools from Debian: ``debootstrap`` for the base
root filesystem (Debian's python3.11 instead of the python:slim image's), a venv holding the
project's dependencies from PyPI (layer 1), the project's wheel (layer 2), packed as an OCI image
with ``umoci`` and unpacked again into a runtime bundle that ``runc`` (or ``crun``) can start.

Everything lands under ``$MESH_IMAGE_CACHE`` (default ``~/.cache/agent-mesh/image``)::

    oci/                  OCI image layout; tags base-<base key> and app-<image key>
    bundle-<image key>/   that image unpacked again (config.json + rootfs/), what tests start
    current               the image key of the last build

The base key hashes image.toml's base/user/layout sections and pyproject's dependencies, so a code
change rebuilds only the small app layer; the image key also hashes the sources the wheel is built
from (pyproject.toml, mesh/, protocols/, agents/) and the runtime config. A second build with the same inputs does nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SPEC_PATH = REPO / "image" / "image.toml"
DOCKERFILE = REPO / "Dockerfile"
# Bump when the build procedure changes in a way the inputs do not show.
BUILDER_VERSION = "1"
_T0 = time.monotonic()


def log(msg: str) -> None:
    """Progress on stderr with the elapsed time (stdout carries only the result)."""
    print(f"[image {time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def load_spec(path: Path = SPEC_PATH) -> dict[str, Any]:
    """The image description (image.toml)."""
    with path.open("rb") as f:
        return tomllib.load(f)


def project_version() -> str:
    """The package version from pyproject.toml (the image's version label)."""
    with (REPO / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def labels(spec: dict[str, Any], *, base_name: str, revision: str, created: str) -> dict[str, str]:
    """OCI annotations/labels of the image (the same for both builders)."""
    out = dict(spec["labels"])
    out["org.opencontainers.image.version"] = project_version()
    out["org.opencontainers.image.base.name"] = base_name
    out["org.opencontainers.image.revision"] = revision
    out["org.opencontainers.image.created"] = created
    return out


# -- Dockerfile ----------------------------------------------------------------------------------


def _q(value: str) -> str:
    return json.dumps(value)


def _user_commands(spec: dict[str, Any]) -> list[str]:
    """Shell commands that create the non-root user and its state directory (both builders)."""
    user, layout = spec["user"], spec["layout"]
    return [
        f"groupadd --system --gid {user['gid']} {user['name']}",
        f"useradd --system --uid {user['uid']} --gid {user['gid']} --home-dir {layout['state_dir']}"
        f" --no-create-home --shell /usr/sbin/nologin {user['name']}",
        f"install -d -o {user['uid']} -g {user['gid']} -m 0750 {layout['state_dir']}",
    ]


def render_dockerfile(spec: dict[str, Any]) -> str:
    """The Dockerfile, rendered from image.toml."""
    base, layout, runtime = spec["base"], spec["layout"], spec["runtime"]
    venv = layout["venv"]
    label_lines = [
        f"      {k}={_q(v)}"
        for k, v in labels(spec, base_name="${PYTHON_IMAGE}", revision="${REVISION}", created="${CREATED}").items()
    ]
    env_lines = [f"    {k}={_q(v)}" for k, v in runtime["env"].items()]
    user_cmds = _user_commands(spec)
    return "\n".join([
        "# syntax=docker/dockerfile:1",
        "# GENERATED from image/image.toml by `python image/build.py dockerfile > Dockerfile`: edit that",
        "# file, not this one (a test fails when they disagree). CI builds the same image without a daemon.",
        "#",
        "#   docker build -t agent-mesh:dev --build-arg REVISION=$(git rev-parse HEAD) \\",
        "#       --build-arg CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ) .",
        "#   docker run --rm --read-only --tmpfs /tmp -v mesh-state:/var/lib/agent-mesh agent-mesh:dev agent run --role fetch",
        f"ARG PYTHON_IMAGE={base['docker_image']}",
        "",
        "# -- build: the project's wheel and a venv with it and its dependencies --------------------",
        "FROM ${PYTHON_IMAGE} AS build",
        "ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1",
        "WORKDIR /src",
        "COPY pyproject.toml README.md ./",
        "COPY protocols ./protocols",
        "COPY mesh ./mesh",
        "COPY agents ./agents",
        "RUN python -m pip wheel --no-deps --wheel-dir /wheels . \\",
        f" && python -m venv {venv} \\",
        f" && {venv}/bin/pip install /wheels/*.whl",
        "",
        "# -- runtime: the venv only, a non-root user, nothing writable but the volume and /tmp -------",
        "FROM ${PYTHON_IMAGE}",
        "ARG PYTHON_IMAGE",
        "ARG REVISION=unknown",
        "ARG CREATED=unknown",
        "LABEL \\",
        " \\\n".join(label_lines),
        "RUN " + " \\\n && ".join(user_cmds),
        f"COPY --from=build {venv} {venv}",
        f"COPY agents/workflows/ {layout['workflow_dir']}/",
        "ENV \\",
        " \\\n".join(env_lines),
        f"USER {spec['user']['uid']}:{spec['user']['gid']}",
        f"WORKDIR {runtime['workdir']}",
        f"VOLUME {json.dumps(runtime['volumes'])}",
        f"ENTRYPOINT {json.dumps(runtime['entrypoint'])}",
        f"CMD {json.dumps(runtime['cmd'])}",
        "",
    ])


# -- inputs and cache keys -----------------------------------------------------------------------


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def build_wheel(out_dir: Path) -> Path:
    """The project's wheel, built from the working tree."""
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(out_dir), str(REPO)],
        check=True, stdout=sys.stderr,
    )
    (wheel,) = out_dir.glob("agent_mesh-*.whl")
    return wheel


def project_requires() -> list[str]:
    """The project's runtime dependencies (pyproject.toml ``[project] dependencies``): layer 1."""
    with (REPO / "pyproject.toml").open("rb") as f:
        return sorted(tomllib.load(f)["project"]["dependencies"])


def source_hash() -> str:
    """A hash of what the wheel installs: pyproject.toml and the packages.

    README.md goes into the wheel only as its long description (metadata nothing reads at run
    time): leaving it out keeps a README edit from rebuilding the image.
    """
    digest = hashlib.sha256()
    files = [REPO / "pyproject.toml"]
    for package in ("mesh", "protocols", "agents"):
        files += [p for p in (REPO / package).rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and p.suffix not in (".pyc", ".pyo")]
    for path in sorted(files):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def cache_keys(spec: dict[str, Any], requires: list[str], src_hash: str) -> tuple[str, str]:
    """(base key, image key)."""
    base_key = _sha([BUILDER_VERSION, spec["base"], spec["user"], spec["layout"], requires])
    workflows = sorted(
        (p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in (REPO / "agents" / "workflows").glob("*.yaml")
    )
    image_key = _sha([base_key, src_hash, spec["runtime"], spec["labels"], workflows])
    return base_key, image_key


def cache_root() -> Path:
    """Where built images live (``MESH_IMAGE_CACHE``)."""
    default = Path.home() / ".cache" / "agent-mesh" / "image"
    return Path(os.environ.get("MESH_IMAGE_CACHE") or default)


# -- daemonless build ----------------------------------------------------------------------------


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
    """Run a command, its output on stderr; fail loudly."""
    return subprocess.run(cmd, check=True, stdout=kw.pop("stdout", sys.stderr), **kw)


# Passed from the build host into the chroot so pip reaches PyPI the way the host does (a proxy, a
# mirror); never written into the image.
_PASS_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
             "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_DEFAULT_TIMEOUT")
_BUILD_CA = "/run/build-ca.pem"


def _host_ca_bundle() -> Path | None:
    """The CA bundle the host's pip trusts (PIP_CERT, SSL_CERT_FILE, REQUESTS_CA_BUNDLE), if any."""
    for var in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        value = os.environ.get(var)
        if value and Path(value).is_file():
            return Path(value)
    return None


def in_root(rootfs: Path, script: str) -> None:
    """Run a shell script chrooted in ``rootfs``, with /proc and /dev mounted in a private namespace.

    The host's CA bundle (a TLS-intercepting proxy's CA, say) is bind-mounted read-only for the
    build only, on a tmpfs /run, so it never lands in a layer.
    """
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root",
           "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env |= {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
    mounts = f"mount -t proc proc {rootfs}/proc; mount --rbind /dev {rootfs}/dev; mount -t tmpfs tmpfs {rootfs}/run; "
    ca = _host_ca_bundle()
    if ca is not None:
        mounts += f"touch {rootfs}{_BUILD_CA}; mount --bind -o ro {json.dumps(str(ca))} {rootfs}{_BUILD_CA}; "
        env["PIP_CERT"] = _BUILD_CA
    wrapper = f"set -e; {mounts}exec chroot {rootfs} /bin/sh -euc {json.dumps(script)}"
    run(["unshare", "--mount", "--propagation", "private", "sh", "-c", wrapper], env=env)


def tags(layout: Path) -> list[str]:
    """Tags of an OCI layout (none if it does not exist)."""
    if not (layout / "index.json").exists():
        return []
    out = subprocess.run(["umoci", "ls", "--layout", str(layout)], check=True, capture_output=True, text=True)
    return out.stdout.split()


def build_base(spec: dict[str, Any], requires: list[str], base_key: str, layout: Path, work: Path) -> None:
    """Layer 1: a Debian root filesystem, the user, and a venv with the project's dependencies."""
    base, venv = spec["base"], spec["layout"]["venv"]
    debootstrapped = debootstrap(base, layout.parent)
    rootfs = work / "base-rootfs"
    log(f"copying {debootstrapped.name}; adding the user and the venv with the project's dependencies (PyPI)")
    run(["cp", "-a", str(debootstrapped), str(rootfs)])
    shutil.copy("/etc/resolv.conf", rootfs / "etc" / "resolv.conf")
    deps = " ".join(json.dumps(r) for r in requires)
    in_root(rootfs, "; ".join([
        *_user_commands(spec),
        f"python3.11 -m venv {venv}",
        f"nice -n 10 {venv}/bin/pip install -q {deps}",
        f"{venv}/bin/pip freeze > {venv}/requirements.lock",
    ]))
    log("cleaning apt caches, docs and the build resolv.conf")
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info"):
        target = rootfs / junk
        if target.exists():
            shutil.rmtree(target)
            target.mkdir()
    (rootfs / "etc" / "resolv.conf").write_text("")
    tag = f"base-{base_key}"
    log(f"packing layer 1 into {layout}:{tag} (umoci insert)")
    if not (layout / "index.json").exists():
        run(["umoci", "init", "--layout", str(layout)])
    run(["umoci", "new", "--image", f"{layout}:{tag}"])
    run(["nice", "-n", "10", "umoci", "insert", "--image", f"{layout}:{tag}", str(rootfs), "/"])
    shutil.rmtree(rootfs)
    shutil.rmtree(debootstrapped)


def debootstrap(base: dict[str, Any], root: Path) -> Path:
    """A minbase Debian tree with ``base['debian_packages']``, kept until layer 1 is packed.

    Kept under its own key so a build that fails later (PyPI, umoci) resumes without running
    debootstrap again; deleted once layer 1 is in the OCI layout (the cache keeps only the image).
    """
    key = _sha([BUILDER_VERSION, base["debian_suite"], base["debian_mirror"], base["debian_packages"]])
    target = root / f"debootstrap-{key}"
    if target.exists():
        log(f"debootstrap tree {target.name} kept from an earlier build")
        return target
    partial = root / f"debootstrap-{key}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    log(f"debootstrap {base['debian_suite']} (minbase + {', '.join(base['debian_packages'])}) from {base['debian_mirror']}")
    run(["nice", "-n", "10", "debootstrap", "--variant=minbase", "--include=" + ",".join(base["debian_packages"]),
         base["debian_suite"], str(partial), base["debian_mirror"]])
    partial.rename(target)
    log("debootstrap done")
    return target


def build_app(spec: dict[str, Any], wheel: Path, base_key: str, image_key: str, layout: Path, work: Path,
              *, revision: str) -> None:
    """Layer 2: the project's wheel and the workflow specs, then the image config (user, entrypoint, labels)."""
    venv, runtime, user = spec["layout"]["venv"], spec["runtime"], spec["user"]
    tag = f"app-{image_key}"
    run(["umoci", "tag", "--image", f"{layout}:base-{base_key}", tag])
    bundle = work / "app-bundle"
    log(f"unpacking {tag} to install the wheel {wheel.name}")
    run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)])
    rootfs = bundle / "rootfs"
    shutil.copy(wheel, rootfs / "tmp" / wheel.name)
    wf_dir = spec["layout"]["workflow_dir"]
    (rootfs / wf_dir.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for f in sorted((REPO / "agents" / "workflows").glob("*.yaml")):
        shutil.copy(f, rootfs / wf_dir.lstrip("/") / f.name)
    in_root(rootfs, f"{venv}/bin/pip install -q --no-deps /tmp/{wheel.name}; rm /tmp/{wheel.name}")
    log("packing layer 2 (umoci repack)")
    run(["umoci", "repack", "--image", f"{layout}:{tag}", str(bundle)])
    shutil.rmtree(bundle)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    cfg = ["umoci", "config", "--image", f"{layout}:{tag}",
           "--config.user", f"{user['uid']}:{user['gid']}",
           "--config.workingdir", runtime["workdir"], "--clear=config.entrypoint", "--clear=config.cmd",
           "--clear=config.env", "--author", "agent-mesh image/build.py", "--created", created]
    cfg += [a for e in runtime["entrypoint"] for a in ("--config.entrypoint", e)]
    cfg += [a for c in runtime["cmd"] for a in ("--config.cmd", c)]
    cfg += [a for k, v in runtime["env"].items() for a in ("--config.env", f"{k}={v}")]
    cfg += [a for v in runtime["volumes"] for a in ("--config.volume", v)]
    base_name = f"debian:{spec['base']['debian_suite']} (debootstrap) + python3.11"
    for k, v in labels(spec, base_name=base_name, revision=revision, created=created).items():
        cfg += ["--config.label", f"{k}={v}", "--manifest.annotation", f"{k}={v}"]
    run(cfg)


def git_revision() -> str:
    """HEAD of the repository (the image's revision label), ``unknown`` outside git."""
    out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def build(*, force: bool = False) -> Path:
    """Build (or find cached) the image; return its unpacked bundle directory."""
    for tool in ("debootstrap", "umoci", "unshare", "chroot"):
        if shutil.which(tool) is None:
            raise SystemExit(f"image build needs {tool!r} on PATH (Debian: apt-get install debootstrap umoci)")
    if os.geteuid() != 0:
        raise SystemExit("image build needs root (debootstrap and chroot); run it as root or in CI")
    spec = load_spec()
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    layout = root / "oci"
    with tempfile.TemporaryDirectory(prefix="image-build-", dir=root) as tmp:
        work = Path(tmp)
        requires = project_requires()
        base_key, image_key = cache_keys(spec, requires, source_hash())
        bundle = root / f"bundle-{image_key}"
        if not force and (bundle / ".complete").exists() and f"app-{image_key}" in tags(layout):
            log(f"cached: image {image_key} (base {base_key}) at {bundle}")
            return bundle
        have = tags(layout)
        if force or f"base-{base_key}" not in have:
            log(f"base layer {base_key} not cached: building (debootstrap + PyPI, a few minutes)")
            build_base(spec, requires, base_key, layout, work)
        else:
            log(f"base layer {base_key} cached")
        log("building the project's wheel")
        wheel = build_wheel(work / "wheel")
        build_app(spec, wheel, base_key, image_key, layout, work, revision=git_revision())
        log(f"unpacking the OCI image again into {bundle.name}")
        if bundle.exists():
            shutil.rmtree(bundle)
        run(["umoci", "unpack", "--image", f"{layout}:app-{image_key}", str(bundle)])
        (bundle / ".complete").write_text(image_key + "\n")
    (root / "current").write_text(image_key + "\n")
    prune(root, layout, keep={f"base-{base_key}", f"app-{image_key}"}, keep_bundle=bundle.name)
    log(f"image {image_key} ready: {bundle}")
    return bundle


def prune(root: Path, layout: Path, *, keep: set[str], keep_bundle: str) -> None:
    """Drop older tags, their blobs and older bundles: the cache holds one image."""
    for tag in tags(layout):
        if tag not in keep:
            run(["umoci", "rm", "--image", f"{layout}:{tag}"])
    run(["umoci", "gc", "--layout", str(layout)])
    for old in root.glob("bundle-*"):
        if old.name != keep_bundle:
            shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    df = sub.add_parser("dockerfile", help="print the Dockerfile rendered from image.toml")
    df.add_argument("--check", action="store_true", help="exit 1 if ./Dockerfile differs")
    b = sub.add_parser("build", help="daemonless build (root, debootstrap, umoci); prints the bundle path")
    b.add_argument("--force", action="store_true", help="rebuild even when cached")
    sub.add_parser("inputs", help="print the cache keys")
    args = parser.parse_args(argv)
    spec = load_spec()
    if args.command == "dockerfile":
        text = render_dockerfile(spec)
        if args.check:
            if not DOCKERFILE.exists() or DOCKERFILE.read_text() != text:
                print("Dockerfile is out of date: python image/build.py dockerfile > Dockerfile", file=sys.stderr)
                return 1
            return 0
        sys.stdout.write(text)
        return 0
    if args.command == "inputs":
        requires = project_requires()
        base_key, image_key = cache_keys(spec, requires, source_hash())
        print(json.dumps({"base_key": base_key, "image_key": image_key, "requires": requires}, indent=2))
        return 0
    print(build(force=args.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())

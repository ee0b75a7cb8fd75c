# syntax=docker/dockerfile:1
# GENERATED from image/image.toml by `python image/build.py dockerfile > Dockerfile`: edit that
# file, not this one (a test fails when they disagree). CI builds the same image without a daemon.
#
#   docker build -t agent-mesh:dev --build-arg REVISION=$(git rev-parse HEAD) \
#       --build-arg CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ) .
#   docker run --rm --read-only --tmpfs /tmp -v mesh-state:/var/lib/agent-mesh agent-mesh:dev agent run --role fetch
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# -- build: the project's wheel and a venv with it and its dependencies --------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protocols ./protocols
COPY mesh ./mesh
COPY agents ./agents
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/agent-mesh/venv \
 && /opt/agent-mesh/venv/bin/pip install /wheels/*.whl

# -- runtime: the venv only, a non-root user, nothing writable but the volume and /tmp -------
FROM ${PYTHON_IMAGE}
ARG PYTHON_IMAGE
ARG REVISION=unknown
ARG CREATED=unknown
LABEL \
      org.opencontainers.image.title="agent-mesh" \
      org.opencontainers.image.description="agent-mesh agents: multi-agent workflows over Kafka and Redis that survive crashes (entrypoint: mesh)." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/agent-mesh/agent-mesh" \
      org.opencontainers.image.url="https://github.com/agent-mesh/agent-mesh" \
      org.opencontainers.image.vendor="agent-mesh" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
RUN groupadd --system --gid 10001 mesh \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/agent-mesh --no-create-home --shell /usr/sbin/nologin mesh \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/agent-mesh
COPY --from=build /opt/agent-mesh/venv /opt/agent-mesh/venv
COPY agents/workflows/ /etc/agent-mesh/workflows/
ENV \
    PATH="/opt/agent-mesh/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    HOME="/var/lib/agent-mesh" \
    MESH_STATE_DIR="/var/lib/agent-mesh" \
    MESH_WORKFLOW_DIR="/etc/agent-mesh/workflows" \
    XDG_CACHE_HOME="/var/lib/agent-mesh/.cache" \
    TIKTOKEN_CACHE_DIR="/var/lib/agent-mesh/.cache/tiktoken" \
    MESH_HEARTBEAT_FILE="/tmp/agent-mesh/heartbeat" \
    PYTHONDONTWRITEBYTECODE="1" \
    PYTHONUNBUFFERED="1" \
    LANG="C.UTF-8"
USER 10001:10001
WORKDIR /var/lib/agent-mesh
VOLUME ["/var/lib/agent-mesh"]
ENTRYPOINT ["mesh"]
CMD ["--help"]

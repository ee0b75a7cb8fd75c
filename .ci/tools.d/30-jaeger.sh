#!/usr/bin/env bash
# Jaeger v2 all-in-one (`jaeger`), pinned, built once from the Go module proxy.
#
# No registry ships a Jaeger binary, and `go install .../cmd/jaeger@vX` fails on a replace directive
# in Jaeger's go.mod, so a throwaway wrapper module pins the sarama replace and builds the command.
# Only the final binary is kept (~/.cache/agent-mesh/bin/jaeger-<version>); the Go build cache and
# module cache used for it are private and deleted afterwards (~2 GB). Cold: ~900 CPU-seconds.
#
# Sourced by .ci/run (exports MESH_JAEGER_BIN and MESH_REQUIRE_JAEGER=1: the Jaeger tests fail,
# not skip, when the binary is missing). Also runnable on its own: bash .ci/tools.d/30-jaeger.sh
JAEGER_VERSION="${JAEGER_VERSION:-v1.76.0}"
JAEGER_SARAMA="github.com/Shopify/sarama=github.com/Shopify/sarama@v1.33.0"
_jaeger_bin_dir="${HOME}/.cache/agent-mesh/bin"
_jaeger_bin="${_jaeger_bin_dir}/jaeger-${JAEGER_VERSION}"

_jaeger_build() (
    set -euo pipefail
    local work
    work="$(mktemp -d "${TMPDIR:-/tmp}/jaeger-build.XXXXXX")"
    trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
    export GOCACHE="$work/gocache" GOMODCACHE="$work/gomod" GOPATH="$work/gopath"
    export GOFLAGS=-mod=mod GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
    mkdir -p "$work/w"
    cd "$work/w"
    echo "jaeger ${JAEGER_VERSION}: building from the Go module proxy (once; cached afterwards)"
    go mod init w >/dev/null 2>&1
    go mod edit -replace "$JAEGER_SARAMA"
    echo "jaeger: resolving modules"
    go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@${JAEGER_VERSION}"
    echo "jaeger: compiling (nice -n 10)"
    nice -n 10 go build -trimpath -ldflags='-s -w' -o "$work/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger
    mkdir -p "$_jaeger_bin_dir"
    install -m 0755 "$work/jaeger" "${_jaeger_bin}.tmp"
    mv -f "${_jaeger_bin}.tmp" "$_jaeger_bin"
    echo "jaeger: cached at $_jaeger_bin"
)

if [[ -x "$_jaeger_bin" ]]; then
    echo "jaeger ${JAEGER_VERSION}: cached at $_jaeger_bin"
else
    _jaeger_build
fi
export MESH_JAEGER_BIN="$_jaeger_bin"
export MESH_REQUIRE_JAEGER=1

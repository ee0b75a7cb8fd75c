# shellcheck shell=bash
# .ci/tools.d/40-k8s.sh: a real Kubernetes control plane for the Helm tests (tests/deploy/test_helm_k8s.py).
#
# Sourced by .ci/run (also runnable as `bash .ci/tools.d/40-k8s.sh`). Idempotent. Builds once, pinned:
#   kube-apiserver, kube-controller-manager, kube-scheduler  v1.34.4  (Go module proxy, wrapper module
#       that replaces every k8s.io/<staging> module with v0.34.4, since k8s.io/kubernetes's own go.mod
#       points them at ./staging and `go install` refuses replace directives)
#   kwok                                                      v0.7.0   (fake nodes and kubelets)
#   etcd                                                      Debian etcd-server
# Only the binaries are kept, in ~/.cache/agent-mesh/bin; the build uses a private GOCACHE/GOMODCACHE
# that is removed afterwards (the cold build is ~20 CPU-minutes and ~3 GB of caches).
# Exports MESH_K8S_BIN_DIR, MESH_ETCD and MESH_REQUIRE_K8S=1 (the tests then fail instead of skipping).

mesh_k8s_build() {
    export GOCACHE="$work/gocache" GOMODCACHE="$work/gomodcache" GOFLAGS=-mod=mod GOTOOLCHAIN=local
    export CGO_ENABLED=0
    mkdir -p "$work/w" && cd "$work/w"
    go mod init mesh-k8s-tools >/dev/null 2>&1
    # The staging modules, read from k8s.io/kubernetes's own go.mod (`k8s.io/x => ./staging/...`).
    local gomod
    gomod="$(go mod download -json "k8s.io/kubernetes@${k8s_version}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')"
    local staging
    staging="$(sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/.*#\1#p' "$gomod" | sort -u)"
    echo "staging modules pinned to ${staging_version}: $(echo "$staging" | wc -l)"
    local m
    for m in $staging; do go mod edit -replace "$m=$m@${staging_version}"; done
    echo "go get -tool k8s.io/kubernetes/cmd/{kube-apiserver,kube-controller-manager,kube-scheduler}@${k8s_version}"
    go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@${k8s_version}" \
        "k8s.io/kubernetes/cmd/kube-controller-manager@${k8s_version}" \
        "k8s.io/kubernetes/cmd/kube-scheduler@${k8s_version}"
    local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=${k8s_version} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34"
    for b in kube-apiserver kube-controller-manager kube-scheduler; do
        echo "go build $b"
        nice -n 10 go build -trimpath -ldflags="$ldflags" -o "$work/out/$b" "k8s.io/kubernetes/cmd/$b"
    done
    echo "go install kwok"
    GOBIN="$work/out" nice -n 10 go install -trimpath -ldflags='-s -w' "sigs.k8s.io/kwok/cmd/kwok@${kwok_version}"
    for b in kube-apiserver kube-controller-manager kube-scheduler kwok; do
        install -m 0755 "$work/out/$b" "$bin_dir/$b"
    done
    touch "$stamp"
}

mesh_k8s_tools() {
    local k8s_version=v1.34.4 staging_version=v0.34.4 kwok_version=v0.7.0
    local bin_dir="${MESH_CACHE_DIR:-$HOME/.cache/agent-mesh}/bin"
    local stamp="$bin_dir/.k8s-${k8s_version}-kwok-${kwok_version}"
    mkdir -p "$bin_dir"

    local b
    local have=1
    for b in kube-apiserver kube-controller-manager kube-scheduler kwok; do
        [[ -x "$bin_dir/$b" ]] || have=0
    done
    if [[ "$have" == 1 && -e "$stamp" ]]; then
        echo "kube-apiserver, kube-controller-manager, kube-scheduler ${k8s_version}, kwok ${kwok_version}: cached in $bin_dir"
    else
        local work
        work="$(mktemp -d "${TMPDIR:-/tmp}/mesh-k8s-build.XXXXXX")"
        echo "building the control plane ${k8s_version} and kwok ${kwok_version} in $work (cold: ~20 CPU-minutes)"
        local rc=0
        # A separate bash so that `set -e` holds inside the build (it is ignored in a `||` list).
        env work="$work" bin_dir="$bin_dir" stamp="$stamp" k8s_version="$k8s_version" \
            staging_version="$staging_version" kwok_version="$kwok_version" \
            bash -c "set -euo pipefail; $(declare -f mesh_k8s_build); mesh_k8s_build" || rc=$?
        GOMODCACHE="$work/gomodcache" go clean -modcache >/dev/null 2>&1 || true
        rm -rf "$work"
        if [[ $rc -ne 0 ]]; then
            echo "control plane build failed (exit $rc)" >&2
            return $rc
        fi
    fi
    # etcd: Debian's etcd-server (3.4 on this release; the API server accepts it with a warning).
    local etcd_bin
    etcd_bin="$(command -v etcd || true)"
    [[ -z "$etcd_bin" && -x /usr/bin/etcd ]] && etcd_bin=/usr/bin/etcd
    if [[ -z "$etcd_bin" ]]; then
        echo "installing etcd-server (Debian)"
        local sudo_cmd=()
        [[ "$(id -u)" == 0 ]] || sudo_cmd=(sudo)
        "${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=900 update -q
        "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends etcd-server
        # The package starts a system etcd on 2379; the tests run their own on free ports.
        "${sudo_cmd[@]}" systemctl disable --now etcd >/dev/null 2>&1 || true
        etcd_bin=/usr/bin/etcd
    fi
    echo "etcd: $etcd_bin ($("$etcd_bin" --version 2>/dev/null | head -1))"

    "$bin_dir/kube-apiserver" --version
    export MESH_K8S_BIN_DIR="$bin_dir" MESH_ETCD="$etcd_bin" MESH_REQUIRE_K8S=1
}

mesh_k8s_tools

#!/usr/bin/env bash
# Builds the control-plane binaries the cluster tests and `pkcs11-issuer dev cluster` run:
# kube-apiserver, kube-controller-manager and kubectl (Kubernetes), etcd, and helm, from Go
# modules, into .cache/<component>/<version>/bin. What is already there is not rebuilt, so a
# second run only checks that the files exist.
#
# Usage: scripts/k8s-binaries.sh [--check]
#   prints one bin directory per line on stdout (kubernetes, etcd, helm); progress on stderr.
#   --check builds nothing and exits 1, naming what is missing, if anything is.
# Environment: K8S_VERSION, ETCD_VERSION, HELM_VERSION override the pins; PKCS11_ISSUER_CACHE
# moves the cache; GO names the go command; GO_BUILD_JOBS caps parallel compiles.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

K8S_VERSION=${K8S_VERSION:-v1.33.13}
ETCD_VERSION=${ETCD_VERSION:-v3.5.35}
HELM_VERSION=${HELM_VERSION:-v3.22.0}
cache=${PKCS11_ISSUER_CACHE:-$repo/.cache}

k8s_bin=$cache/k8s/$K8S_VERSION/bin
etcd_bin=$cache/etcd/$ETCD_VERSION/bin
helm_bin=$cache/helm/$HELM_VERSION/bin

log() { echo "k8s-binaries: $*" >&2; }

missing() {
    local name
    for name in "$k8s_bin/kube-apiserver" "$k8s_bin/kube-controller-manager" "$k8s_bin/kubectl" \
        "$etcd_bin/etcd" "$helm_bin/helm"; do
        [ -x "$name" ] || echo "$name"
    done
}

case ${1-} in
    "") ;;
    --check)
        absent=$(missing)
        if [ -n "$absent" ]; then
            log "missing (run scripts/k8s-binaries.sh or make k8s-binaries to build them):"
            while IFS= read -r path; do echo "  $path"; done <<<"$absent" >&2
            exit 1
        fi
        printf '%s\n' "$k8s_bin" "$etcd_bin" "$helm_bin"
        exit 0
        ;;
    *)
        echo "usage: $0 [--check]" >&2
        exit 2
        ;;
esac

if [ -z "$(missing)" ]; then
    printf '%s\n' "$k8s_bin" "$etcd_bin" "$helm_bin"
    exit 0
fi

GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
if [ ! -x "$GO" ] && ! command -v "$GO" >/dev/null; then
    log "needs Go 1.26 or newer (https://go.dev/dl/); set GO=/path/to/go if it is not on PATH"
    exit 1
fi

# -trimpath keeps the build machine's paths out of the binaries; CGO is off so they are static.
export GOFLAGS="-trimpath -buildvcs=false"
export CGO_ENABLED=0
jobs=${GO_BUILD_JOBS:-$(nproc)}
# Release builds strip symbols too; it also makes linking noticeably cheaper.
strip="-s -w"

# A field of `go mod download -json` for module@version: the path of its go.mod or .info file.
module_file() { # module@version GoMod|Info
    "$GO" mod download -json "$1" | sed -n "s/^[[:space:]]*\"$2\": \"\(.*\)\",\{0,1\}\$/\1/p"
}

# When the proxy first saw the release: the buildDate, so that rebuilding one version yields
# the same /version answer.
release_time() { # module@version
    sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$(module_file "$1" Info)"
}

# Everything is built into a staging directory and renamed at the end, so an interrupted build
# never leaves something that looks complete.
build_kubernetes() {
    [ -x "$k8s_bin/kube-apiserver" ] && [ -x "$k8s_bin/kube-controller-manager" ] &&
        [ -x "$k8s_bin/kubectl" ] && return
    local src=$cache/k8s/$K8S_VERSION/src staging=$cache/k8s/$K8S_VERSION/bin.partial
    local staging_version=v0.${K8S_VERSION#v1.}
    log "building Kubernetes $K8S_VERSION (about 10 minutes on 2 cores)"
    rm -rf "$src" "$staging"
    mkdir -p "$src" "$staging"
    cp "$repo/scripts/k8s-build/kubernetes/go.mod" "$src/go.mod"

    # Follow the chosen release's own go.mod: its go and godebug lines (they decide GODEBUG
    # defaults, and only the main module's count) and its list of staging modules.
    local upstream godebugs modules edits=()
    upstream=$(module_file "k8s.io/kubernetes@$K8S_VERSION" GoMod)
    mapfile -t godebugs < <(awk '/^godebug \(/ { block = 1; next }
                                 block && /^\)/ { block = 0 }
                                 block && NF { print $1 }
                                 /^godebug [^(]/ { print $2 }' "$upstream")
    mapfile -t modules < <(awk '$2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }' "$upstream")
    edits+=("-go=$(awk '$1 == "go" { print $2; exit }' "$upstream")")
    for godebug in "${godebugs[@]}"; do
        edits+=("-godebug=$godebug")
    done
    edits+=("-require=k8s.io/kubernetes@$K8S_VERSION")
    for module in "${modules[@]}"; do
        edits+=("-replace=$module=$module@$staging_version")
    done
    (cd "$src" && "$GO" mod edit "${edits[@]}" && "$GO" mod tidy)

    local minor=${K8S_VERSION#v1.}
    minor=${minor%%.*}
    local built ldflags=$strip
    built=$(release_time "k8s.io/kubernetes@$K8S_VERSION")
    for package in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
        ldflags+=" -X $package.gitVersion=$K8S_VERSION -X $package.gitMajor=1"
        ldflags+=" -X $package.gitMinor=$minor -X $package.buildDate=$built"
    done
    (cd "$src" && "$GO" build -p "$jobs" -ldflags "$ldflags" -o "$staging/" \
        k8s.io/kubernetes/cmd/kube-apiserver \
        k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kubectl)
    rm -rf "$k8s_bin"
    mv "$staging" "$k8s_bin"
}

build_etcd() {
    [ -x "$etcd_bin/etcd" ] && return
    local src=$cache/etcd/$ETCD_VERSION/src staging=$cache/etcd/$ETCD_VERSION/bin.partial
    log "building etcd $ETCD_VERSION"
    rm -rf "$src" "$staging"
    mkdir -p "$src" "$staging"
    cp "$repo/scripts/k8s-build/etcd/go.mod" "$repo/scripts/k8s-build/etcd/main.go" "$src/"
    (cd "$src" && "$GO" mod edit "-require=go.etcd.io/etcd/server/v3@$ETCD_VERSION" &&
        "$GO" mod tidy &&
        "$GO" build -p "$jobs" -ldflags "$strip" -o "$staging/etcd" .)
    rm -rf "$etcd_bin"
    mv "$staging" "$etcd_bin"
}

build_helm() {
    [ -x "$helm_bin/helm" ] && return
    local staging=$cache/helm/$HELM_VERSION/bin.partial
    log "building helm $HELM_VERSION"
    rm -rf "$staging"
    mkdir -p "$staging"
    # The ldflags of Helm's Makefile. Without them `helm version` says only "v3.N", and
    # .Capabilities.KubeVersion outside a cluster (helm template, helm lint) is v1.20, which
    # fails charts that require a newer Kubernetes. Helm takes that version from the client-go
    # it is built with: v0.N.x means Kubernetes 1.N.
    local client_go minor
    client_go=$(awk '$1 == "k8s.io/client-go" { print $2; exit }' \
        "$(module_file "helm.sh/helm/v3@$HELM_VERSION" GoMod)")
    minor=${client_go#v0.}
    minor=${minor%%.*}
    local ldflags="$strip -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    for package in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
        ldflags+=" -X $package.k8sVersionMajor=1 -X $package.k8sVersionMinor=$minor"
    done
    GOBIN=$staging "$GO" install -p "$jobs" -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    rm -rf "$helm_bin"
    mv "$staging" "$helm_bin"
}

start=$SECONDS
build_etcd
build_helm
build_kubernetes
log "done in $((SECONDS - start))s"
printf '%s\n' "$k8s_bin" "$etcd_bin" "$helm_bin"

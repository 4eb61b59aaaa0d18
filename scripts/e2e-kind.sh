#!/usr/bin/env bash
# End-to-end on a real cluster (`make e2e-kind`), for machines with Docker and kind: creates a
# kind cluster, builds both images with `docker build`, loads them into the cluster, installs
# charts/pkcs11-issuer with the SoftHSM sidecar (hsm.mode=softhsm), and runs tests/kind, which
# applies examples/softhsm/quickstart.yaml in namespace demo and makes the same checks as the
# podman test of `make test` (tests/support/e2e_checks.py): every Certificate Ready, every
# chain verified with openssl, no key material in any Secret. The cluster is deleted on exit.
#
# Without a running Docker engine or without kind it prints why and exits 0 (`make test`
# covers the images with podman instead); E2E_KIND_REQUIRED=1 makes that an error.
#
# Environment:
#   KIND_CLUSTER       cluster name (pkcs11-issuer-e2e)
#   KIND_NODE_IMAGE    kindest/node image (kind's default)
#   KEEP_CLUSTER=1     leave the cluster running (its kubeconfig: .dev/kind/kubeconfig)
#   BASE_IMAGE         the Dockerfile's base (default: its python:3.11-slim-bookworm)
#   IMAGE_TAG          tag of both images (e2e)
#   BUILD_CA_BUNDLE    CA bundle for pip inside the build (default: the host's)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

log() { echo "e2e-kind: $*" >&2; }
skip() {
    if [ -n "${E2E_KIND_REQUIRED:-}" ]; then
        log "error: $*"
        exit 1
    fi
    echo "e2e-kind: skipped: $*"
    exit 0
}

needs="needs docker with a running engine and kind"
install="install: Docker Engine, https://docs.docker.com/engine/install/; kind, \
https://kind.sigs.k8s.io/docs/user/quick-start/#installation or \`go install sigs.k8s.io/kind@latest\`"
if ! command -v docker >/dev/null; then
    skip "$needs; docker is not installed ($install)"
fi
if ! docker_info=$(docker info 2>&1); then
    why=$(echo "$docker_info" | grep -m1 -i -E 'error|cannot' || echo "$docker_info" | tail -n1)
    skip "$needs; \`docker info\` failed: ${why# } ($install)"
fi
if ! command -v kind >/dev/null; then
    skip "$needs; kind is not installed ($install)"
fi

# kubectl and helm: from PATH, else the pinned builds of scripts/k8s-binaries.sh.
if ! command -v kubectl >/dev/null || ! command -v helm >/dev/null; then
    log "kubectl or helm not on PATH: using scripts/k8s-binaries.sh (builds them once)"
    for dir in $(scripts/k8s-binaries.sh); do PATH=$dir:$PATH; done
    export PATH
fi
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || { log "no $python: run scripts/bootstrap.sh (or make bootstrap)"; exit 1; }

cluster=${KIND_CLUSTER:-pkcs11-issuer-e2e}
tag=${IMAGE_TAG:-e2e}
operator_repository=localhost/pkcs11-issuer
sidecar_repository=localhost/pkcs11-issuer-softhsm
release=pkcs11-issuer
release_namespace=pkcs11-issuer
workdir=$repo/.dev/kind
kubeconfig=$workdir/kubeconfig
mkdir -p "$workdir"
start=$SECONDS

diagnostics() {
    log "diagnostics:"
    kubectl --kubeconfig "$kubeconfig" get pods -A -o wide >&2 || true
    kubectl --kubeconfig "$kubeconfig" describe pods -n "$release_namespace" >&2 || true
    kubectl --kubeconfig "$kubeconfig" logs -n "$release_namespace" --all-containers --tail=100 \
        -l "app.kubernetes.io/instance=$release" >&2 || true
}
cleanup() {
    local code=$?
    [ "$code" = 0 ] || diagnostics
    if [ -n "${KEEP_CLUSTER:-}" ]; then
        log "kept cluster $cluster: export KUBECONFIG=$kubeconfig"
    else
        log "deleting cluster $cluster"
        kind delete cluster --name "$cluster" >&2 || true
    fi
    log "$([ "$code" = 0 ] && echo passed || echo FAILED) in $((SECONDS - start)) s"
    exit "$code"
}

if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
    log "deleting cluster $cluster left by an earlier run"
    kind delete cluster --name "$cluster" >&2
fi
trap cleanup EXIT
log "creating kind cluster $cluster"
kind create cluster --name "$cluster" --kubeconfig "$kubeconfig" --wait 180s \
    ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} >&2

build_args=()
[ -z "${BASE_IMAGE:-}" ] || build_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
ca_bundle=${BUILD_CA_BUNDLE:-${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}}
[ ! -s "$ca_bundle" ] || build_args+=(--secret "id=ca-certificates,src=$ca_bundle")
for target in softhsm-sidecar operator; do
    image=$operator_repository:$tag
    [ "$target" = operator ] || image=$sidecar_repository:$tag
    log "docker build --target $target -t $image"
    DOCKER_BUILDKIT=1 docker build --target "$target" --tag "$image" "${build_args[@]}" . >&2
    kind load docker-image "$image" --name "$cluster" >&2
done

log "helm install $release (hsm.mode=softhsm)"
helm install "$release" charts/pkcs11-issuer \
    --kubeconfig "$kubeconfig" \
    --namespace "$release_namespace" --create-namespace \
    --set hsm.mode=softhsm \
    --set image.repository="$operator_repository" --set image.tag="$tag" \
    --set softhsm.image.repository="$sidecar_repository" --set softhsm.image.tag="$tag" \
    --set softhsm.tokenLabel=dev-issuer \
    --wait --timeout 5m >&2

log "tests/kind: the quick-start in namespace demo"
PKCS11_ISSUER_E2E_KIND=1 \
E2E_KUBECONFIG=$kubeconfig \
E2E_KUBECTL=$(command -v kubectl) \
E2E_NAMESPACE=demo \
E2E_RELEASE=$release \
E2E_RELEASE_NAMESPACE=$release_namespace \
    "$python" -m pytest -q -p no:cacheprovider tests/kind >&2

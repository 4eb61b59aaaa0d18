#!/usr/bin/env bash
# Builds the two images with podman (`make image`):
#
#   localhost/pkcs11-issuer:dev            the operator (Dockerfile target `operator`)
#   localhost/pkcs11-issuer-softhsm:dev    the SoftHSM sidecar (target `softhsm-sidecar`)
#
# FROM: $BASE_IMAGE when set (e.g. docker.io/library/python:3.11-slim-bookworm, the
# Dockerfile's default, where a registry is reachable); otherwise the Debian image
# scripts/container-base.sh builds with debootstrap, which needs no registry.
#
# podman caches layers, so a rebuild after a source change redoes only the last steps of the
# operator image, and a rebuild without changes takes seconds. RUN steps use the host network
# (apt-get and pip inside the build). Prints the image names on stdout, progress on stderr.
#
# Environment: BASE_IMAGE, IMAGE (operator image name), SIDECAR_IMAGE, CONTAINERS_CONF
# (default scripts/podman/containers.conf: see why there), PODMAN_BUILD_ARGS (extra flags).
set -euo pipefail
cd "$(dirname "$0")/.."

export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/scripts/podman/containers.conf}
image=${IMAGE:-localhost/pkcs11-issuer:dev}
sidecar_image=${SIDECAR_IMAGE:-localhost/pkcs11-issuer-softhsm:dev}

log() { echo "build-image: $*" >&2; }

command -v podman >/dev/null || {
    log "podman is missing: apt-get install podman runc (or run scripts/bootstrap.sh)"
    exit 1
}

start=$SECONDS
base=${BASE_IMAGE:-}
if [ -z "$base" ]; then
    base=$(scripts/container-base.sh)
fi

# The host's trusted CAs for pip's downloads inside the build (a TLS-intercepting proxy, as on
# the CI machines, is trusted there), as a build secret: mounted for RUN steps, never stored.
ca_bundle=${BUILD_CA_BUNDLE:-${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}}
secret=()
if [ -s "$ca_bundle" ]; then
    secret=(--secret "id=ca-certificates,src=$ca_bundle")
fi

build() {
    local target=$1 tag=$2 step=$SECONDS
    log "building $tag (target $target, FROM $base)"
    # shellcheck disable=SC2086 # PODMAN_BUILD_ARGS is a list of flags
    podman build \
        --network host \
        --layers \
        --build-arg "BASE_IMAGE=$base" \
        --target "$target" \
        --tag "$tag" \
        "${secret[@]}" \
        --quiet \
        ${PODMAN_BUILD_ARGS:-} \
        --file Dockerfile \
        . >/dev/null
    log "built $tag in $((SECONDS - step)) s"
}

# The sidecar first: it shares only the base stage with the operator, and is the smaller one.
build softhsm-sidecar "$sidecar_image"
build operator "$image"
log "done in $((SECONDS - start)) s"
for tag in "$image" "$sidecar_image"; do
    log "  $tag $(podman image inspect --format '{{.Size}}' "$tag" | numfmt --to=si)B"
done
echo "$image"
echo "$sidecar_image"

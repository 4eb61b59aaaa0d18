#!/usr/bin/env bash
# Builds a Debian base image with debootstrap and imports it into podman, for machines that
# cannot pull docker.io/library/python:3.11-slim-bookworm (the Dockerfile's default BASE_IMAGE).
# Prints the image name on stdout (progress goes to stderr), e.g.
#
#   localhost/pkcs11-issuer-base:bookworm-1a2b3c4d5e6f
#
# What it holds: Debian minbase plus python3, python3-venv and ca-certificates, i.e. Debian's
# own /usr/bin/python3 (3.11 on bookworm), with apt sources for the suite, its updates and
# security archive. The Dockerfile adds everything else with apt-get and pip.
#
# Cached: the root filesystem tarball is kept as .cache/container-base/<key>.tar, keyed by
# suite, mirror and package list, and imported only when podman lacks the tag, so a second
# run takes well under a second. Needs root (debootstrap) and podman.
#
# Environment: DEBIAN_SUITE (bookworm), DEBIAN_MIRROR (http://deb.debian.org/debian),
# PKCS11_ISSUER_CACHE (.cache), CONTAINERS_CONF (scripts/podman/containers.conf).
set -euo pipefail
cd "$(dirname "$0")/.."

suite=${DEBIAN_SUITE:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
packages=python3,python3-venv,ca-certificates
cache=${PKCS11_ISSUER_CACHE:-.cache}/container-base
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/scripts/podman/containers.conf}

# Bump when what this script puts into the image changes, so old tarballs are not reused.
recipe=3
key="$suite-$(printf '%s\n' "$recipe" "$suite" "$mirror" "$security_mirror" "$packages" \
    | sha256sum | cut -c1-12)"
image="localhost/pkcs11-issuer-base:$key"
tarball="$cache/$key.tar"

log() { echo "container-base: $*" >&2; }

command -v podman >/dev/null || {
    log "podman is missing: apt-get install podman runc (or run scripts/bootstrap.sh)"
    exit 1
}

if podman image exists "$image"; then
    echo "$image"
    exit 0
fi

if [ ! -f "$tarball" ]; then
    command -v debootstrap >/dev/null || {
        log "debootstrap is missing: apt-get install debootstrap (or run scripts/bootstrap.sh)"
        exit 1
    }
    [ "$(id -u)" = 0 ] || { log "debootstrap needs root: run this as root or with sudo"; exit 1; }
    mkdir -p "$cache"
    rootfs="$cache/$key.rootfs"
    rm -rf "$rootfs" "$tarball.partial"
    trap 'rm -rf "$rootfs" "$tarball.partial"' EXIT
    start=$SECONDS
    log "debootstrap $suite (minbase + ${packages//,/ }) from $mirror"
    if ! debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" \
        > "$cache/$key.debootstrap.log" 2>&1; then
        tail -20 "$cache/$key.debootstrap.log" "$rootfs/debootstrap/debootstrap.log" >&2 || true
        log "debootstrap failed (log: $cache/$key.debootstrap.log)"
        exit 1
    fi
    cat > "$rootfs/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security_mirror $suite-security main
EOF
    # What the official slim Debian images leave out, now and in later apt-get installs:
    # documentation, manual pages, translations; and downloaded packages, package lists, logs.
    printf '%s\n' \
        'path-exclude /usr/share/doc/*' \
        'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/man/*' \
        'path-exclude /usr/share/info/*' \
        'path-exclude /usr/share/locale/*' \
        'path-include /usr/share/locale/locale.alias' \
        'path-exclude /usr/share/lintian/*' \
        > "$rootfs/etc/dpkg/dpkg.cfg.d/slim"
    [ -d "$rootfs/usr/share/doc" ] || { log "no $rootfs/usr/share/doc: not a root filesystem?"; exit 1; }
    find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
    find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias \
        -exec rm -rf {} +
    rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/lintian/* \
        "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/debootstrap
    tar --numeric-owner --xattrs -C "$rootfs" -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
    rm -rf "$rootfs"
    trap - EXIT
    log "root filesystem built in $((SECONDS - start)) s: $tarball"
fi

start=$SECONDS
podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase --include=$packages $suite" \
    --quiet "$tarball" "$image" >/dev/null
log "imported $image in $((SECONDS - start)) s"
echo "$image"

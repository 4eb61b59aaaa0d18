#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine: system packages and a virtualenv
# at .venv. Safe to run again: each step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."

# podman, runc (scripts/podman/containers.conf: crun fails on hybrid cgroups), catatonit (the
# infra container of a podman pod; only recommended by podman) and debootstrap (the base image
# where no registry is reachable, scripts/container-base.sh) are for the images and the
# container tier.
APT_PACKAGES=(softhsm2 p11-kit p11-kit-modules libp11-kit-dev opensc openssl gcc libc6-dev
    podman runc catatonit debootstrap)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "bootstrap: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv"
    "$python" -m venv .venv
fi
# Reinstall only when the dependency list changed.
stamp=.venv/.pkcs11-issuer-deps
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "bootstrap: installing Python dependencies"
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[dev]'
    echo "$want" > "$stamp"
fi

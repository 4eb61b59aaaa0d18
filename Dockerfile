# pkcs11-issuer images. Two targets:
#
#   operator         (the default, last stage) the operator: `pkcs11-issuer run`
#   softhsm-sidecar  SoftHSM2 + `p11-kit server`, the development HSM of the Helm chart's
#                    hsm.mode=softhsm (see image/softhsm-sidecar.sh for its environment)
#
#   docker build -t pkcs11-issuer:dev .
#   docker build --target softhsm-sidecar -t pkcs11-issuer-softhsm:dev .
#   scripts/build-image.sh      # both, with podman, also where no registry is reachable
#
# BASE_IMAGE is any Debian bookworm image with Python 3.11 and its venv module: the official
# slim image by default, or the debootstrap image of scripts/container-base.sh (Debian's own
# /usr/bin/python3). Nothing below assumes where python3 lives. Both final images run as
# uid/gid 65532 and work with a read-only root filesystem.
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS base
# 65532 is the conventional non-root user of minimal images (distroless "nonroot"); an entry in
# passwd/group gives `id` and libraries a name and a home that cannot be written.
RUN echo 'nonroot:x:65532:65532:nonroot:/nonexistent:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'nonroot:x:65532:' >> /etc/group
ENV LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# ---------------------------------------------------------------------------------------------
# The virtualenv with the project and its runtime dependencies (no [dev] extras). Every
# dependency has a manylinux wheel for CPython 3.11 (python-pkcs11 and cryptography included),
# so no compiler is needed; --only-binary makes a missing wheel an error rather than a
# surprise compile.
FROM base AS build
ENV VIRTUAL_ENV=/opt/pkcs11-issuer/venv \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# Dependencies first, from pyproject.toml alone: this layer is reused until they change.
#
# The optional build secret `ca-certificates` is a CA bundle for pip's downloads, for builds
# behind a TLS-intercepting proxy (scripts/build-image.sh passes the host's trust store). It
# is mounted for the RUN step only and never stored in the image:
#   docker build --secret id=ca-certificates,src=/etc/ssl/certs/ca-certificates.crt .
COPY pyproject.toml ./
RUN --mount=type=secret,id=ca-certificates \
    if [ -s /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi \
 && python3 -m venv "$VIRTUAL_ENV" \
 && "$VIRTUAL_ENV/bin/pip" install --quiet --upgrade pip \
 && "$VIRTUAL_ENV/bin/python" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > /tmp/requirements.txt \
 && "$VIRTUAL_ENV/bin/pip" install --quiet --only-binary=:all: -r /tmp/requirements.txt
COPY README.md ./
COPY operator/ operator/
# Not editable: the package is copied into site-packages and compiled there; then pip and
# setuptools leave the venv, which the runtime does not need.
RUN --mount=type=secret,id=ca-certificates \
    if [ -s /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi \
 && "$VIRTUAL_ENV/bin/pip" install --quiet --no-deps . \
 && "$VIRTUAL_ENV/bin/pip" check \
 && "$VIRTUAL_ENV/bin/pip" uninstall --quiet --yes pip setuptools \
 && "$VIRTUAL_ENV/bin/pkcs11-issuer" --help > /dev/null

# ---------------------------------------------------------------------------------------------
# SoftHSM2 behind `p11-kit server`. opensc provides pkcs11-tool, which initialises the token
# with PINs passed through its environment rather than on a command line.
FROM base AS softhsm-sidecar
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        softhsm2 p11-kit opensc \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
 && rm -rf /var/lib/softhsm/tokens \
 && chmod 0755 /var/lib/softhsm && chmod g-s /var/lib/softhsm \
 && install -d -o 65532 -g 65532 -m 0700 /var/lib/softhsm/tokens \
 && install -d -o 65532 -g 65532 -m 0755 /run/p11-kit
COPY --chmod=0755 image/softhsm-sidecar.sh /usr/local/bin/softhsm-sidecar
ENV SOFTHSM_TOKEN_DIR=/var/lib/softhsm/tokens \
    P11_KIT_SOCKET=/run/p11-kit/pkcs11.sock
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/softhsm-sidecar"]
LABEL org.opencontainers.image.title="pkcs11-issuer SoftHSM sidecar" \
      org.opencontainers.image.description="SoftHSM2 token served over a unix socket by p11-kit server, for development" \
      org.opencontainers.image.licenses="Apache-2.0"

# ---------------------------------------------------------------------------------------------
# The operator. p11-kit-modules brings p11-kit-client.so, the module that reaches a
# `p11-kit server` (the SoftHSM sidecar) through P11_KIT_SERVER_ADDRESS; its path differs per
# architecture, so /usr/lib/pkcs11-issuer/p11-kit-client.so is a stable name for the
# operator's module allowlist. Vendor modules (CloudHSM, Luna, ...) are added in a derived
# image or mounted.
FROM base AS operator
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends p11-kit-modules \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
 && client=$(find /usr/lib -path '*/pkcs11/p11-kit-client.so' | head -n 1) \
 && test -n "$client" \
 && install -d /usr/lib/pkcs11-issuer /etc/pkcs11-issuer \
 && ln -s "$client" /usr/lib/pkcs11-issuer/p11-kit-client.so
COPY --from=build /opt/pkcs11-issuer/venv /opt/pkcs11-issuer/venv
ENV PATH=/opt/pkcs11-issuer/venv/bin:$PATH
USER 65532:65532
# 9402: /metrics; 8081: /healthz and /readyz (the configuration's defaults).
EXPOSE 9402 8081
ENTRYPOINT ["/opt/pkcs11-issuer/venv/bin/pkcs11-issuer", "run"]
CMD ["--config=/etc/pkcs11-issuer/config.yaml"]
LABEL org.opencontainers.image.title="pkcs11-issuer" \
      org.opencontainers.image.description="cert-manager style Kubernetes issuer whose private keys never leave a PKCS#11 HSM" \
      org.opencontainers.image.licenses="Apache-2.0"

# The container images (Dockerfile) and the kind end-to-end run. Included by the top Makefile,
# which defines VENV and the bootstrap target. See docs/container-image.md.

.PHONY: image e2e-kind

# localhost/pkcs11-issuer:dev and localhost/pkcs11-issuer-softhsm:dev with podman; FROM
# $(BASE_IMAGE) when set, else a debootstrap Debian base (no registry needed).
image: bootstrap
	scripts/build-image.sh

# kind cluster + docker build + helm install + the quick-start checks; prints why and exits 0
# without a running Docker engine or kind.
e2e-kind: bootstrap
	scripts/e2e-kind.sh

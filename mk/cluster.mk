# Local Kubernetes control plane: etcd, kube-apiserver and kube-controller-manager on 127.0.0.1,
# built from Go modules into .cache/ (see docs/development.md). Included by the top Makefile,
# which defines VENV, PY and the bootstrap target.

PKCS11_ISSUER := $(VENV)/bin/pkcs11-issuer

.PHONY: k8s-binaries cluster-up cluster-down cluster-status

# Builds only what .cache/ lacks; with everything cached it returns at once.
k8s-binaries:
	scripts/k8s-binaries.sh

# Starts in the background and prints the `export KUBECONFIG=...` line to paste.
cluster-up: bootstrap k8s-binaries
	$(PKCS11_ISSUER) dev cluster up --no-build

cluster-down:
	$(PKCS11_ISSUER) dev cluster down

cluster-status:
	$(PKCS11_ISSUER) dev cluster status

# The two commands a newcomer runs are `make run` and `make test`; both install what they need
# (Debian packages, .venv, the Kubernetes binaries in .cache/) and are safe to run again.

VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: bootstrap run test lint format bench

include mk/cluster.mk
include mk/image.mk
include mk/chart.mk

bootstrap:
	scripts/bootstrap.sh

# Local control plane + SoftHSM token under .dev/ + the operator, until Ctrl-C.
run: bootstrap k8s-binaries
	$(VENV)/bin/pkcs11-issuer dev run

lint: bootstrap
	$(VENV)/bin/ruff check operator tests bench
	$(VENV)/bin/ruff format --check operator tests bench
	$(VENV)/bin/mypy

format: bootstrap
	$(VENV)/bin/ruff format operator tests bench
	$(VENV)/bin/ruff check --fix operator tests bench

# Every tier: unit, hsm (SoftHSM direct and through p11-kit), cluster (real kube-apiserver),
# container (the images in a podman pod; tests/container builds them with scripts/build-image.sh).
test: bootstrap k8s-binaries lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# Benchmarks, not tests: every figure of issue 7 next to its ceiling from the same run, written
# to bench/results/ (see bench/README.md). A quick smoke run:
#   make bench BENCH_ARGS="--certificates 50 --memory-certificates 100 --spy-certificates 10 --seconds 1"
BENCH_ARGS ?=
bench: bootstrap k8s-binaries
	$(PY) bench/run.py $(BENCH_ARGS)

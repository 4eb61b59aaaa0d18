# The Helm chart (charts/pkcs11-issuer). Included by the top Makefile.

CHART := charts/pkcs11-issuer

.PHONY: chart-crds chart-lint

# Copy crds/ into the chart (the chart's copies must stay byte-identical; a unit test checks).
chart-crds:
	scripts/sync-chart-crds.sh

# helm lint --strict with the default values and with each file under $(CHART)/ci/.
chart-lint: k8s-binaries
	@helm=$$(scripts/k8s-binaries.sh --check | grep /helm/)/helm; \
	set -e; $$helm lint --strict $(CHART); \
	for values in $(CHART)/ci/*-values.yaml; do $$helm lint --strict $(CHART) -f $$values; done

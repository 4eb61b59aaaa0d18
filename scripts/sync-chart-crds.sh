#!/usr/bin/env bash
# Copy the CustomResourceDefinitions from crds/ (the one source of truth) into the Helm chart,
# byte for byte. The chart renders them from charts/pkcs11-issuer/files/crds/ as templates, so
# `helm upgrade` upgrades them too. tests/unit/test_chart_files.py fails when the copies drift.
#
#   scripts/sync-chart-crds.sh            copy (what `make chart-crds` runs)
#   scripts/sync-chart-crds.sh --check    exit 1 and name the files that differ
set -euo pipefail
cd "$(dirname "$0")/.."

source_dir=crds
chart_dir=charts/pkcs11-issuer/files/crds

if [ "${1:-}" = "--check" ]; then
    status=0
    for file in "$source_dir"/*.yaml; do
        copy=$chart_dir/$(basename "$file")
        if ! cmp -s "$file" "$copy"; then
            echo "$copy differs from $file: run \`make chart-crds\`" >&2
            status=1
        fi
    done
    for copy in "$chart_dir"/*.yaml; do
        [ -e "$copy" ] || continue
        if [ ! -e "$source_dir/$(basename "$copy")" ]; then
            echo "$copy has no source in $source_dir/: run \`make chart-crds\`" >&2
            status=1
        fi
    done
    exit "$status"
fi

mkdir -p "$chart_dir"
# Copies of CRDs that no longer exist in crds/ would keep being installed.
for copy in "$chart_dir"/*.yaml; do
    [ -e "$copy" ] || continue
    [ -e "$source_dir/$(basename "$copy")" ] || rm -v "$copy"
done
for file in "$source_dir"/*.yaml; do
    cp "$file" "$chart_dir/"
done
echo "copied $(ls "$source_dir"/*.yaml | wc -l) CRDs from $source_dir/ to $chart_dir/"

"""The Helm chart's files, without helm: CRD copies, versions, values and their schema, docs.

Rendering, linting and installing are in tests/cluster/test_chart*.py (helm is one of the
Kubernetes binaries)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "pkcs11-issuer"
CRDS = REPO / "crds"
CHART_CRDS = CHART / "files" / "crds"


def test_chart_crds_are_byte_identical_copies_of_crds() -> None:
    sources = {path.name: path.read_bytes() for path in sorted(CRDS.glob("*.yaml"))}
    copies = {path.name: path.read_bytes() for path in sorted(CHART_CRDS.glob("*.yaml"))}
    assert sources, "no CRDs in crds/"
    drift = sorted(
        name for name in sources.keys() | copies.keys() if sources.get(name) != copies.get(name)
    )
    assert not drift, (
        f"charts/pkcs11-issuer/files/crds/ differs from crds/ in {', '.join(drift)}: "
        "run `make chart-crds` (scripts/sync-chart-crds.sh) and commit the copies"
    )


def test_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"], (
        "Chart.yaml appVersion (the default image tag) must be pyproject.toml's version"
    )
    assert chart["apiVersion"] == "v2"


def _schema_paths(schema: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}{key}"
        paths.add(path)
        if sub.get("type") == "object" and sub.get("additionalProperties") is False:
            paths |= _schema_paths(sub, f"{path}.")
    return paths


def _value_paths(values: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        paths.add(path)
        sub = (schema.get("properties") or {}).get(key) or {}
        if isinstance(value, dict) and sub.get("additionalProperties") is False:
            paths |= _value_paths(value, sub, f"{path}.")
    return paths


def test_values_and_schema_describe_the_same_keys() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    schema_paths = _schema_paths(schema) - {"global"}
    value_paths = _value_paths(values, schema)
    assert sorted(schema_paths - value_paths) == [], "in the schema, missing from values.yaml"
    assert sorted(value_paths - schema_paths) == [], "in values.yaml, missing from the schema"
    modes = schema["properties"]["hsm"]["properties"]["mode"]["enum"]
    assert modes == ["softhsm", "module", "p11kitRemote"]


def test_every_top_level_value_is_in_the_deploy_docs_reference() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    docs = (REPO / "docs" / "deploy.md").read_text()
    reference = docs.split("## Values reference", 1)[-1]
    missing = [key for key in values if f"`{key}" not in reference]
    assert not missing, f"docs/deploy.md's values reference does not mention {missing}"


@pytest.mark.parametrize("example", ["aws-cloudhsm", "aws-kms"])
def test_each_vendor_example_has_helm_values(example: str) -> None:
    assert (REPO / "examples" / example / "operator-config.yaml").is_file()
    values = REPO / "examples" / "helm" / f"{example}-values.yaml"
    assert values.is_file(), f"{values} is missing: every example needs its Helm values"
    assert yaml.safe_load(values.read_text())["hsm"]["mode"] == "module"


def test_templates_reference_only_defined_helpers() -> None:
    text = "\n".join(path.read_text() for path in (CHART / "templates").glob("*"))
    defined = set(re.findall(r'define "([^"]+)"', text))
    used = set(re.findall(r'include "([^"]+)"', text))
    assert used <= defined, f"undefined helpers: {sorted(used - defined)}"

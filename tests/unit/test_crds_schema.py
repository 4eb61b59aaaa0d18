"""The CRDs in crds/ agree with the code and give kubectl what it needs, read as plain YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pkcs11_issuer.x509 import USAGES

CRDS = Path(__file__).resolve().parents[2] / "crds"
PRINTER_COLUMNS = {
    "Certificate": ["Ready", "Secret", "Issuer", "Expiration", "Status", "Age"],
    "Issuer": ["Ready", "Status", "Age"],
    "ClusterIssuer": ["Ready", "Status", "Age"],
}


def load(kind: str) -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load((CRDS / f"{kind.lower()}s.yaml").read_text())
    assert crd["spec"]["names"]["kind"] == kind
    return crd


def version(crd: dict[str, Any]) -> dict[str, Any]:
    (only,) = crd["spec"]["versions"]
    assert only["name"] == "v1alpha1"
    assert only["served"] and only["storage"]
    return dict(only)


@pytest.mark.parametrize("kind", PRINTER_COLUMNS)
def test_every_crd_has_status_category_and_printer_columns(kind: str) -> None:
    crd = load(kind)
    served = version(crd)
    assert crd["spec"]["group"] == "pkcs11-issuer.io"
    assert crd["spec"]["names"]["categories"] == ["pkcs11-issuer"]
    assert served["subresources"] == {"status": {}}
    columns = [column["name"] for column in served["additionalPrinterColumns"]]
    assert columns == PRINTER_COLUMNS[kind]


def test_usages_enum_is_the_x509_vocabulary() -> None:
    spec = version(load("Certificate"))["schema"]["openAPIV3Schema"]["properties"]["spec"]
    usages = spec["properties"]["usages"]
    assert set(usages["items"]["enum"]) == set(USAGES)
    assert len(usages["items"]["enum"]) == len(USAGES)
    assert usages["x-kubernetes-list-type"] == "set"


def test_issuer_and_cluster_issuer_differ_only_in_descriptions() -> None:
    def without_descriptions(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: without_descriptions(v) for k, v in node.items() if k != "description"}
        if isinstance(node, list):
            return [without_descriptions(item) for item in node]
        return node

    def schema(kind: str) -> Any:
        return without_descriptions(version(load(kind))["schema"])

    assert schema("Issuer") == schema("ClusterIssuer")

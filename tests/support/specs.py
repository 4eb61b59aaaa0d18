"""A Certificate spec that sets every field, shared by the CRD and the spec-parsing tests."""

from __future__ import annotations

from typing import Any

FULL_CERTIFICATE: dict[str, Any] = {
    "secretName": "intermediate-ca",
    "commonName": "Example Intermediate CA",
    "subject": {
        "organizations": ["Example Ltd"],
        "countries": ["GB"],
        "organizationalUnits": ["Platform"],
        "localities": ["London"],
        "provinces": ["England"],
        "streetAddresses": ["1 High Street"],
        "postalCodes": ["EC1A 1AA"],
        "serialNumber": "42",
    },
    "dnsNames": ["ca.example.com"],
    "ipAddresses": ["10.0.0.1", "::1"],
    "uris": ["spiffe://cluster.local/ns/pki/sa/ca"],
    "emailAddresses": ["pki@example.com"],
    "duration": "8760h",
    "renewBefore": "720h",
    "usages": ["cert sign", "crl sign", "digital signature"],
    "isCA": True,
    "nameConstraints": {
        "critical": True,
        "permitted": {
            "dnsDomains": ["example.com"],
            "ipRanges": ["10.0.0.0/8"],
            "emailAddresses": ["example.com"],
            "uriDomains": ["cluster.local"],
        },
        "excluded": {"dnsDomains": ["secret.example.com"]},
    },
    "issuerRef": {"name": "root", "kind": "ClusterIssuer", "group": "pkcs11-issuer.io"},
    "secretTemplate": {"labels": {"app": "pki"}, "annotations": {"owner": "platform"}},
    "privateKey": {
        "algorithm": "ECDSA",
        "size": 384,
        "rotationPolicy": "Never",
        "deletionPolicy": "Retain",
        "pkcs11": "pkcs11:token=issuer;object=intermediate",
    },
}

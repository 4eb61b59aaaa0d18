"""The CRDs in crds/, as a real kube-apiserver enforces them: what is accepted, what is refused
with which message, and what `kubectl get` shows."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pkcs11_issuer.dev.controlplane import ControlPlane
from support.specs import FULL_CERTIFICATE

CRDS = Path(__file__).resolve().parents[2] / "crds"
API_VERSION = "pkcs11-issuer.io/v1alpha1"

NAMED = {"secretName": "web-tls", "dnsNames": ["web.example.com"], "issuerRef": {"name": "ca"}}
ADOPTED_KEY = "pkcs11:token=issuer;object=web;id=%01"
PIN_IN_CR = "pin-value is not allowed here: the PIN belongs in the Secret named by the operator"


def manifest(kind: str, spec: dict[str, Any], name: str = "example") -> str:
    return json.dumps(
        {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec}
    )


def dry_run(plane: ControlPlane, namespace: str, kind: str, spec: dict[str, Any]) -> str:
    """Ask the API server to admit the object without storing it; kubectl's stderr on refusal."""
    result = plane.kubectl(
        "apply",
        "--dry-run=server",
        f"--namespace={namespace}",
        "-f",
        "-",
        input=manifest(kind, spec),
        check=False,
    )
    return "" if result.returncode == 0 else result.stderr


@pytest.fixture(scope="module")
def crds(control_plane: ControlPlane) -> ControlPlane:
    # apply, never create: other modules apply the same CRDs to this session's control plane.
    control_plane.kubectl("apply", "-f", str(CRDS))
    control_plane.kubectl("wait", "--for=condition=established", "--timeout=60s", "-f", str(CRDS))
    return control_plane


@pytest.mark.parametrize(
    ("kind", "spec"),
    [
        pytest.param("Certificate", NAMED, id="minimal-certificate"),
        pytest.param("Certificate", FULL_CERTIFICATE, id="full-certificate"),
        pytest.param(
            "Certificate",
            {**NAMED, "privateKey": {"pkcs11": ADOPTED_KEY, "rotationPolicy": "Never"}},
            id="adopted-key",
        ),
        pytest.param(
            "Certificate",
            {"secretName": "c", "commonName": "c", "issuerRef": {"name": "ca"}, "duration": "1h"},
            id="common-name-only-shortest-duration",
        ),
        pytest.param("Issuer", {"selfSigned": {}}, id="self-signed-issuer"),
        pytest.param(
            "Issuer",
            {"ca": {"pkcs11": "pkcs11:token=issuer;object=spin-value=1;id=%01"}},
            id="pin-value-only-inside-a-value",
        ),
        pytest.param(
            "Issuer",
            {
                "ca": {
                    "pkcs11": "pkcs11:token=issuer;object=ca-key;type=private",
                    "secretName": "ca-key-pair",
                    "crlDistributionPoints": ["http://pki.example.com/ca.crl"],
                    "ocspServers": ["http://ocsp.example.com"],
                    "issuingCertificateURLs": ["http://pki.example.com/ca.crt"],
                }
            },
            id="ca-issuer",
        ),
        pytest.param("Issuer", {"ca": {"secretName": "ca-key-pair"}}, id="ca-issuer-secret-only"),
        pytest.param(
            "ClusterIssuer",
            {"selfSigned": {"crlDistributionPoints": ["http://pki.example.com/root.crl"]}},
            id="cluster-issuer",
        ),
    ],
)
def test_valid_resources_are_accepted(
    crds: ControlPlane, namespace: str, kind: str, spec: dict[str, Any]
) -> None:
    assert dry_run(crds, namespace, kind, spec) == ""


@pytest.mark.parametrize(
    ("kind", "spec", "refusal"),
    [
        pytest.param(
            "Issuer",
            {"selfSigned": {}, "ca": {"secretName": "ca"}},
            "exactly one issuer type: selfSigned or ca",
            id="both-issuer-types",
        ),
        pytest.param(
            "ClusterIssuer", {}, "exactly one issuer type: selfSigned or ca", id="no-issuer-type"
        ),
        pytest.param("Issuer", {"ca": {}}, "ca needs pkcs11", id="ca-without-key-or-secret"),
        pytest.param(
            "Certificate",
            {**NAMED, "duration": "24h", "renewBefore": "24h"},
            "renewBefore must be shorter than duration",
            id="renew-before-equals-duration",
        ),
        pytest.param(
            "Certificate",
            {**NAMED, "renewBefore": "2161h"},
            "renewBefore must be shorter than duration (which defaults to 2160h)",
            id="renew-before-beyond-default-duration",
        ),
        pytest.param(
            "Certificate",
            {**NAMED, "renewBefore": "0s"},
            "renewBefore must be longer than 0s",
            id="renew-before-zero",
        ),
        pytest.param(
            "Certificate",
            {**NAMED, "duration": "59m59s"},
            "duration must be at least 1h",
            id="duration-under-an-hour",
        ),
        pytest.param(
            "Certificate",
            {**NAMED, "duration": "876001h"},
            "duration must be at most 876000h",
            id="duration-over-a-century",
        ),
        pytest.param(
            "Certificate",
            {**NAMED, "duration": "90 days"},
            "spec.duration in body should match",
            id="duration-not-go-syntax",
        ),
        pytest.param(
            "Certificate",
            {**NAMED, "privateKey": {"algorithm": "RSA", "size": 1024}},
            "RSA keys are 2048, 3072 or 4096 bits",
            id="rsa-1024",
        ),
        pytest.param(
            "Certificate",
            {**NAMED, "privateKey": {"size": 256}},
            "RSA keys are 2048, 3072 or 4096 bits",
            id="rsa-by-default-256",
        ),
        pytest.param(
            "Certificate",
            {**NAMED, "privateKey": {"algorithm": "ECDSA", "size": 521}},
            "ECDSA keys are P-256 or P-384",
            id="ecdsa-521",
        ),
        pytest.param(
            "Certificate",
            {**NAMED, "privateKey": {"algorithm": "Ed25519", "size": 256}},
            "Ed25519 keys have a fixed size",
            id="ed25519-with-size",
        ),
        pytest.param(
            "Certificate",
            {**NAMED, "privateKey": {"pkcs11": "token=issuer"}},
            "spec.privateKey.pkcs11 in body should match '^pkcs11:'",
            id="uri-without-scheme",
        ),
        pytest.param(
            "Certificate",
            {**NAMED, "privateKey": {"pkcs11": "pkcs11:token=issuer?pin-value=1234"}},
            PIN_IN_CR,
            id="pin-value-in-private-key",
        ),
        pytest.param(
            "Issuer",
            {"ca": {"pkcs11": "pkcs11:object=ca?module-name=softhsm2&pin-value=1234"}},
            PIN_IN_CR,
            id="pin-value-in-ca",
        ),
        pytest.param(
            "ClusterIssuer",
            {"ca": {"pkcs11": "pkcs11:token=issuer;pin-value=1234;object=ca"}},
            PIN_IN_CR,
            id="pin-value-in-the-path",
        ),
        pytest.param(
            "Certificate",
            {**NAMED, "privateKey": {"pkcs11": "pkcs11:pin-source=file:/run/pin"}},
            "pin-source is not allowed here",
            id="pin-source-first-in-the-path",
        ),
        pytest.param(
            "Issuer",
            {"ca": {"pkcs11": "pkcs11:object=ca?pin-source=file:/run/pin"}},
            "pin-source is not allowed here",
            id="pin-source-in-ca",
        ),
        pytest.param(
            "Certificate",
            {**NAMED, "privateKey": {"pkcs11": ADOPTED_KEY, "rotationPolicy": "Always"}},
            "adopted keys are never rotated: set rotationPolicy: Never",
            id="adopted-key-rotated",
        ),
        pytest.param(
            "Certificate",
            {**NAMED, "privateKey": {"pkcs11": "pkcs11:token=issuer;id=%01"}},
            "adopted keys are never rotated: set rotationPolicy: Never",
            id="adopted-key-rotated-by-default",
        ),
        pytest.param(
            "Certificate",
            {**NAMED, "nameConstraints": {"permitted": {"dnsDomains": ["example.com"]}}},
            "nameConstraints are only allowed when isCA is true",
            id="name-constraints-without-ca",
        ),
        pytest.param(
            "Certificate",
            {"secretName": "web-tls", "issuerRef": {"name": "ca"}, "dnsNames": []},
            "the certificate must name something",
            id="no-names",
        ),
        pytest.param(
            "Certificate",
            {**NAMED, "usages": ["server auth", "world domination"]},
            'Unsupported value: "world domination"',
            id="unknown-usage",
        ),
        pytest.param(
            "Certificate",
            {**NAMED, "secretTemplate": {"labels": {"pkcs11-issuer.io/key": "x"}}},
            "labels under pkcs11-issuer.io/ are reserved for the operator",
            id="reserved-label",
        ),
        pytest.param(
            "Certificate",
            {**NAMED, "issuerRef": {"name": "ca", "kind": "Foo"}},
            'spec.issuerRef.kind: Unsupported value: "Foo"',
            id="unknown-issuer-kind",
        ),
        pytest.param(
            "Certificate",
            {key: value for key, value in NAMED.items() if key != "secretName"},
            "spec.secretName: Required value",
            id="no-secret-name",
        ),
        pytest.param(
            "Certificate",
            {**NAMED, "secretName": "Web_TLS"},
            "spec.secretName in body should match",
            id="secret-name-not-dns-1123",
        ),
    ],
)
def test_invalid_resources_are_refused_with_a_reason(
    crds: ControlPlane, namespace: str, kind: str, spec: dict[str, Any], refusal: str
) -> None:
    assert refusal in dry_run(crds, namespace, kind, spec)


def table(result: subprocess.CompletedProcess[str]) -> list[dict[str, str]]:
    """kubectl's human-readable output as rows keyed by header.

    Cells are sliced at the header's offsets, because an empty cell is only blanks.
    """
    header, *rows = result.stdout.splitlines()
    names = [(match.group(), match.start()) for match in re.finditer(r"\S+", header)]
    ends = [start for _name, start in names[1:]] + [None]
    return [
        {name: row[start:end].strip() for (name, start), end in zip(names, ends, strict=True)}
        for row in rows
    ]


def test_kubectl_get_shows_the_printer_columns(crds: ControlPlane, namespace: str) -> None:
    crds.kubectl(
        "apply", f"--namespace={namespace}", "-f", "-", input=manifest("Certificate", NAMED, "web")
    )
    crds.kubectl(
        "apply",
        f"--namespace={namespace}",
        "-f",
        "-",
        input=manifest("Issuer", {"selfSigned": {}}, "ca"),
    )
    status = {
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Issued",
                "message": "Certificate is up to date and has not expired",
                "lastTransitionTime": "2025-01-01T00:00:00Z",
                "observedGeneration": 1,
            }
        ],
        "notAfter": "2030-01-01T00:00:00Z",
    }
    crds.kubectl(
        "patch",
        "hsmcert",
        "web",
        f"--namespace={namespace}",
        "--subresource=status",
        "--type=merge",
        f"--patch={json.dumps({'status': status})}",
    )

    (row,) = table(crds.kubectl("get", "hsmcert", f"--namespace={namespace}"))
    assert row.keys() == {"NAME", "READY", "SECRET", "ISSUER", "EXPIRATION", "AGE"}
    assert (row["NAME"], row["READY"], row["SECRET"], row["ISSUER"]) == (
        "web",
        "True",
        "web-tls",
        "ca",
    )
    assert row["EXPIRATION"] == "2030-01-01T00:00:00Z"

    (wide,) = table(crds.kubectl("get", "hsmcerts", f"--namespace={namespace}", "-o", "wide"))
    assert wide["STATUS"] == "Certificate is up to date and has not expired"

    (issuer,) = table(crds.kubectl("get", "hsmissuer", f"--namespace={namespace}"))
    assert issuer.keys() == {"NAME", "READY", "AGE"}
    # No operator runs here, so nothing has reported on the Issuer yet.
    assert (issuer["NAME"], issuer["READY"]) == ("ca", "")

    everything = crds.kubectl("get", "pkcs11-issuer", f"--namespace={namespace}").stdout
    assert "certificate.pkcs11-issuer.io/web" in everything
    assert "issuer.pkcs11-issuer.io/ca" in everything

"""Issuers: a CA certificate kept in the token, and each way a CA issuer can be unusable,
with the reason a user sees."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from test_operator_issuance import SELF_SIGNED, certificate, issued, openssl_verify, secret_of

from pkcs11_issuer.uri import Pkcs11Uri
from support.operator_fixtures import MAIN_LABEL, Harness, condition


def ca_issuer(name: str, **ca: Any) -> dict[str, Any]:
    return {
        "apiVersion": "pkcs11-issuer.io/v1alpha1",
        "kind": "Issuer",
        "metadata": {"name": name},
        "spec": {"ca": ca},
    }


def key_uri(label: str) -> str:
    return Pkcs11Uri.build(token=MAIN_LABEL, object=label).format()


def issuer_problem(operator: Harness, namespace: str, name: str, reason: str) -> str:
    body = operator.wait_condition("Issuer", namespace, name, status="False", reason=reason)
    return str(condition(body)["message"])


def test_a_ca_certificate_kept_in_the_token(
    operator: Harness, namespace: str, tmp_path: Path
) -> None:
    label = f"{namespace}/token-ca"
    operator.createca(MAIN_LABEL, label, "--common-name=Token CA", "--store-in-token")
    operator.apply(
        [ca_issuer("token-ca", pkcs11=key_uri(label)), certificate("leaf", "token-ca")], namespace
    )
    body = operator.wait_condition("Issuer", namespace, "token-ca")
    assert condition(body)["reason"] == "KeyPairVerified"
    issued(operator, namespace, "leaf")
    openssl_verify(secret_of(operator, namespace, "leaf-tls"), tmp_path)


def test_a_missing_key(operator: Harness, namespace: str) -> None:
    operator.apply(ca_issuer("nokey", pkcs11=key_uri(f"{namespace}/absent")), namespace)
    assert "absent" in issuer_problem(operator, namespace, "nokey", "KeyNotFound")


def test_a_token_without_the_certificate_points_to_the_secret_route(
    operator: Harness, namespace: str
) -> None:
    label = f"{namespace}/bare"
    operator.createca(
        MAIN_LABEL, label, "--common-name=Bare", f"--out={operator.work / 'bare.pem'}"
    )
    operator.apply(ca_issuer("bare", pkcs11=key_uri(label)), namespace)
    assert "secretName" in issuer_problem(operator, namespace, "bare", "CertificateNotFound")


def test_a_certificate_that_is_not_a_ca(operator: Harness, namespace: str) -> None:
    operator.apply([SELF_SIGNED, certificate("plain", "selfsigned")], namespace)
    issued(operator, namespace, "plain")
    operator.apply(ca_issuer("not-a-ca", secretName="plain-tls"), namespace)
    assert "not a CA" in issuer_problem(operator, namespace, "not-a-ca", "NotACA")


def test_a_ca_certificate_with_another_key(operator: Harness, namespace: str) -> None:
    root = certificate("root", "selfsigned", isCA=True, commonName="Root")
    other = certificate("other-root", "selfsigned", isCA=True, commonName="Other")
    operator.apply([SELF_SIGNED, root, other], namespace)
    issued(operator, namespace, "root")
    issued(operator, namespace, "other-root")
    other_key = secret_of(operator, namespace, "other-root-tls")["data"]["tls.pkcs11-uri"]
    operator.apply(
        ca_issuer("mismatch", secretName="root-tls", pkcs11=base64.b64decode(other_key).decode()),
        namespace,
    )
    issuer_problem(operator, namespace, "mismatch", "CertificateKeyMismatch")


def test_a_certificate_waits_for_its_issuer_and_goes_when_it_appears(
    operator: Harness, namespace: str
) -> None:
    operator.apply(certificate("early", "late"), namespace)
    operator.wait_condition(
        "Certificate", namespace, "early", status="False", reason="IssuerNotFound"
    )
    operator.apply({**SELF_SIGNED, "metadata": {"name": "late"}}, namespace)
    issued(operator, namespace, "early")

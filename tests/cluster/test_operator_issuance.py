"""The operator end to end: real control plane, real SoftHSM, chains checked by OpenSSL.

One operator process serves the whole module (see support/operator_fixtures.py); each test
works in its own namespace."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pkcs11_issuer.dev.controlplane import find_repo_root
from pkcs11_issuer.uri import parse
from support import e2e_checks
from support.operator_fixtures import MAIN_LABEL, Harness, condition, secret_text

EXAMPLES = find_repo_root() / "examples"


def spki(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def example(name: str) -> str:
    """An example with its token label pointed at the test token."""
    return (EXAMPLES / name).read_text().replace("token=dev-issuer", f"token={MAIN_LABEL}")


def certificate(name: str, issuer: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "secretName": f"{name}-tls",
        "commonName": f"{name}.example.com",
        "dnsNames": [f"{name}.example.com"],
        "privateKey": {"algorithm": "ECDSA", "pkcs11": f"pkcs11:token={MAIN_LABEL}"},
        "issuerRef": {"name": issuer},
    }
    body.update(spec)
    return {
        "apiVersion": "pkcs11-issuer.io/v1alpha1",
        "kind": "Certificate",
        "metadata": {"name": name},
        "spec": body,
    }


SELF_SIGNED = {
    "apiVersion": "pkcs11-issuer.io/v1alpha1",
    "kind": "Issuer",
    "metadata": {"name": "selfsigned"},
    "spec": {"selfSigned": {}},
}


def chain_of(secret: dict[str, Any]) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(secret_text(secret, "tls.crt").encode())


def openssl_verify(secret: dict[str, Any], tmp_path: Path) -> None:
    e2e_checks.openssl_verify(chain_of(secret), secret_text(secret, "ca.crt").encode(), tmp_path)


def hsm_key_of(operator: Harness, secret: dict[str, Any]) -> Any:
    uri = parse(secret_text(secret, "tls.pkcs11-uri"))
    assert uri.pin_value is None and "pin" not in str(uri.format())
    assert uri.token == MAIN_LABEL
    return operator.token().find_key(id=uri.id, label=uri.object)


def test_quickstart_issues_a_verified_chain_with_keys_locked_in_the_hsm(
    operator: Harness, namespace: str, tmp_path: Path
) -> None:
    operator.apply(example("softhsm/quickstart.yaml"), namespace)
    for name in ("root-ca", "web"):
        operator.wait_condition("Certificate", namespace, name)
    operator.wait_condition("Issuer", namespace, "demo-ca")

    web = operator.secret(namespace, "web-tls")
    assert web is not None
    assert web["type"] == "pkcs11-issuer.io/key-reference"
    assert set(web["data"]) == {"tls.crt", "ca.crt", "tls.pkcs11-uri"}
    openssl_verify(web, tmp_path)
    leaf, ca = chain_of(web)
    assert leaf.subject.rfc4514_string() == "CN=web.demo.svc"
    root = operator.secret(namespace, "root-ca")
    assert root is not None
    assert spki(ca) == spki(chain_of(root)[0])

    for secret in (web, root):
        key = hsm_key_of(operator, secret)
        assert spki(chain_of(secret)[0]) == key.public_key.public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )
        attributes = operator.token().key_attributes(key)
        assert attributes["sensitive"] is True
        assert attributes["extractable"] is False

    labels = web["metadata"]["labels"]
    assert labels["pkcs11-issuer.io/certificate-name"] == "web"
    assert labels["pkcs11-issuer.io/hsm"] == "true"
    annotations = web["metadata"]["annotations"]
    assert annotations["pkcs11-issuer.io/issuer-name"] == "demo-ca"
    assert annotations["pkcs11-issuer.io/key-id"] == key_id_hex(web)
    owner = web["metadata"]["ownerReferences"][0]
    body = operator.get("Certificate", namespace, "web")
    assert body is not None
    assert (owner["kind"], owner["uid"], owner["controller"]) == (
        "Certificate",
        body["metadata"]["uid"],
        True,
    )
    status = body["status"]
    assert status["revision"] == 1
    assert status["notAfter"] and status["renewalTime"] and status["notBefore"]
    assert condition(body)["observedGeneration"] == body["metadata"]["generation"]
    reasons = {e["reason"] for e in operator.events(namespace)}
    assert "Issued" in reasons
    metrics = operator.process.metrics()
    series = f'condition="True",name="web",namespace="{namespace}"'
    assert f"pkcs11_issuer_certificate_ready_status{{{series}}} 1.0" in metrics
    assert 'pkcs11_issuer_hsm_signing_duration_seconds_count{token="main"}' in metrics


def key_id_hex(secret: dict[str, Any]) -> str:
    uri = parse(secret_text(secret, "tls.pkcs11-uri"))
    assert uri.id is not None
    return uri.id.hex()


def test_no_secret_in_the_cluster_holds_private_key_material(
    operator: Harness, namespace: str
) -> None:
    operator.apply(example("softhsm/quickstart.yaml"), namespace)
    operator.wait_condition("Certificate", namespace, "web")
    status, listing = operator.plane.request("GET", "/api/v1/secrets")
    assert status == 200
    ours = 0
    for secret in listing["items"]:
        e2e_checks.assert_no_key_material(secret)
        if secret.get("type") == "pkcs11-issuer.io/key-reference":
            ours += 1
            assert "pin" not in secret_text(secret, "tls.pkcs11-uri").lower()
    assert ours >= 2


def issued(operator: Harness, namespace: str, name: str, revision: int = 0) -> dict[str, Any]:
    """The Certificate once Ready with a revision above `revision`."""
    return operator.wait_condition("Certificate", namespace, name, since_revision=revision)


def secret_of(operator: Harness, namespace: str, name: str) -> dict[str, Any]:
    secret = operator.secret(namespace, name)
    assert secret is not None
    return secret


def test_renewal_with_rotation_always_replaces_and_destroys_the_key(
    operator: Harness, namespace: str
) -> None:
    operator.apply(
        [SELF_SIGNED, certificate("rotating", "selfsigned", duration="1h", renewBefore="59m52s")],
        namespace,
    )
    first = issued(operator, namespace, "rotating")
    first_key = key_id_hex(secret_of(operator, namespace, "rotating-tls"))
    second = issued(operator, namespace, "rotating", first["status"]["revision"])
    second_key = key_id_hex(secret_of(operator, namespace, "rotating-tls"))
    assert second_key != first_key
    keys = operator.wait_for(
        "the old key to be destroyed",
        lambda: (k := operator.keys(f"{namespace}/rotating/")) and len(k) <= 2 and k,
    )
    key_ids = {key.id.hex() for key in keys}
    assert first_key not in key_ids
    assert second["status"]["renewalTime"] > first["status"]["renewalTime"]


def test_renewal_with_rotation_never_keeps_the_key(operator: Harness, namespace: str) -> None:
    spec = certificate("steady", "selfsigned", duration="1h", renewBefore="59m52s")
    spec["spec"]["privateKey"]["rotationPolicy"] = "Never"
    operator.apply([SELF_SIGNED, spec], namespace)
    first = issued(operator, namespace, "steady")
    first_secret = secret_of(operator, namespace, "steady-tls")
    issued(operator, namespace, "steady", first["status"]["revision"])
    second_secret = secret_of(operator, namespace, "steady-tls")
    assert key_id_hex(second_secret) == key_id_hex(first_secret)
    assert chain_of(second_secret)[0].serial_number != chain_of(first_secret)[0].serial_number
    assert len(operator.keys(f"{namespace}/steady/")) == 1


def test_a_spec_change_reissues(operator: Harness, namespace: str) -> None:
    operator.apply([SELF_SIGNED, certificate("changing", "selfsigned")], namespace)
    first = issued(operator, namespace, "changing")
    operator.apply(
        certificate("changing", "selfsigned", dnsNames=["changing.example.com", "new.example.com"]),
        namespace,
    )
    issued(operator, namespace, "changing", first["status"]["revision"])
    leaf = chain_of(secret_of(operator, namespace, "changing-tls"))[0]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "new.example.com" in names.get_values_for_type(x509.DNSName)


def test_a_secret_template_change_updates_the_secret_without_reissuing(
    operator: Harness, namespace: str
) -> None:
    operator.apply([SELF_SIGNED, certificate("templated", "selfsigned")], namespace)
    first = issued(operator, namespace, "templated")
    operator.apply(
        certificate(
            "templated",
            "selfsigned",
            secretTemplate={"labels": {"team": "blue"}, "annotations": {"owner": "blue-team"}},
        ),
        namespace,
    )
    secret = operator.wait_for(
        "the template's label on the Secret",
        lambda: (
            (s := operator.secret(namespace, "templated-tls"))
            and s["metadata"]["labels"].get("team") == "blue"
            and s
        ),
    )
    assert secret["metadata"]["annotations"]["owner"] == "blue-team"
    body = operator.get("Certificate", namespace, "templated")
    assert body is not None
    assert body["status"]["revision"] == first["status"]["revision"]


def test_a_deleted_secret_is_issued_again(operator: Harness, namespace: str) -> None:
    operator.apply([SELF_SIGNED, certificate("recreated", "selfsigned")], namespace)
    first = issued(operator, namespace, "recreated")
    operator.plane.kubectl("delete", "secret", "recreated-tls", f"--namespace={namespace}")
    issued(operator, namespace, "recreated", first["status"]["revision"])
    assert operator.secret(namespace, "recreated-tls") is not None


def test_a_tampered_secret_is_issued_again(operator: Harness, namespace: str) -> None:
    operator.apply(
        [SELF_SIGNED, certificate("tampered", "selfsigned"), certificate("other", "selfsigned")],
        namespace,
    )
    first = issued(operator, namespace, "tampered")
    issued(operator, namespace, "other")
    foreign = secret_of(operator, namespace, "other-tls")["data"]["tls.crt"]
    operator.plane.kubectl(
        "patch",
        "secret",
        "tampered-tls",
        f"--namespace={namespace}",
        "--type=merge",
        "-p",
        json.dumps({"data": {"tls.crt": foreign}}),
    )
    issued(operator, namespace, "tampered", first["status"]["revision"])
    secret = secret_of(operator, namespace, "tampered-tls")
    assert chain_of(secret)[0].subject.rfc4514_string() == "CN=tampered.example.com"
    reasons = {
        e["reason"] for e in operator.events(namespace) if e["involvedObject"]["name"] == "tampered"
    }
    assert "Issued" in reasons


def test_deleting_a_certificate_destroys_its_key_and_collects_its_secret(
    operator: Harness, namespace: str
) -> None:
    operator.apply([SELF_SIGNED, certificate("doomed", "selfsigned")], namespace)
    issued(operator, namespace, "doomed")
    assert len(operator.keys(f"{namespace}/doomed/")) == 1
    operator.plane.kubectl(
        "delete",
        "certificate.pkcs11-issuer.io",
        "doomed",
        f"--namespace={namespace}",
        "--timeout=60s",
    )
    assert operator.keys(f"{namespace}/doomed/") == []
    operator.wait_for(
        "the Secret to be garbage-collected",
        lambda: operator.secret(namespace, "doomed-tls") is None,
    )


def test_a_foreign_secret_of_the_same_name_is_left_alone(operator: Harness, namespace: str) -> None:
    operator.plane.kubectl(
        "create",
        "secret",
        "generic",
        "taken-tls",
        f"--namespace={namespace}",
        "--from-literal=keep=me",
    )
    operator.apply([SELF_SIGNED, certificate("taken", "selfsigned")], namespace)
    operator.wait_condition(
        "Certificate", namespace, "taken", status="False", reason="SecretConflict"
    )
    secret = secret_of(operator, namespace, "taken-tls")
    assert set(secret["data"]) == {"keep"}
    assert operator.keys(f"{namespace}/taken/") == []
